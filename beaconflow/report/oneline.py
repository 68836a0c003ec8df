"""The run's report in one JSON line: the last line of stdout with ``--log-format json``.

Airflow's BashOperator hands the last line of stdout to the next task (XCom), and a shell
pipeline reads it with ``tail -n 1 | jq``. The line holds the main counts, the exit status,
whether and why the run stopped, and where the report and the dead letter are; report.json
has everything else, under the same names::

    beaconflow --sandbox --input sample_data/events.jsonl --log-format json | tail -n 1 | jq .
"""

from __future__ import annotations

import json

from beaconflow.report.run import EVENT_COUNTERS, MESSAGE_COUNTERS, RunReport

#: The report's keys the line carries, besides the counters; their values are report.json's.
KEYS = (
    "messages_not_attempted",
    "messages_invalid",
    "stopped",
    "interrupted",
    "partial",
    "elapsed_seconds",
    "date",
    "report",
    "dead_letter",
)


def summary_line(report: RunReport, status: int, dead_letter_entries: int | None) -> str:
    """The one JSON line: ``event`` ``summary``, ``exit_status``, the counts, the paths.

    ``report_written`` says whether report.json is on disk; ``dead_letter_entries`` is how
    many lines the dead letter holds (None: it could not be read).
    """
    data = report.to_json()
    line: dict[str, object] = {"event": "summary", "exit_status": status}
    for key in (*EVENT_COUNTERS, *MESSAGE_COUNTERS, *KEYS):
        line[key] = data[key] if key in data else getattr(report, key)
    line["report_written"] = report.report_written is True
    line["dead_letter_entries"] = dead_letter_entries
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))
