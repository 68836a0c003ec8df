"""Kontagent and old events (issue 18): the warning, ``--kontagent-max-age`` and the report.

Kontagent counts every message on the day it receives it (only ``pgr`` carries a time), so a
run warns when it sends Kontagent messages of old events, and ``--kontagent-max-age DAYS``
keeps the older ones from Kontagent (``messages_too_old``) while KISSmetrics, backdated, gets
every event. Whole runs against the collector: the command in a process of its own (its now
is the clock's: the events are placed relative to it), and in-process dry runs with their
now injected, one of them in chunks. The age rules themselves are tested in
tests/model/test_kontagent_age.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from beaconflow import __version__
from beaconflow.sandbox.collector import Collector
from tests.conftest import (
    KISSMETRICS_KEY,
    KONTAGENT_KEY,
    KONTAGENT_SECRET,
    backfill_flags,
    run_cli,
    run_json,
)

DAY = 86_400
#: How many events of each age: too old for --kontagent-max-age 5 (10 days), old but kept
#: (3.5 days: their day ended more than two days before now), new (an hour).
TOO_OLD, OLD, NEW = 4, 3, 5


def _events(path: Path, now: float) -> Path:
    """Level-ups (one Kontagent and one KISSmetrics message each) of three ages."""
    records: list[dict[str, Any]] = []
    for n, (count, age) in enumerate(((TOO_OLD, 10 * DAY), (OLD, 3.5 * DAY), (NEW, 3_600))):
        for i in range(count):
            records.append(
                {
                    "event_id": f"e{n}-{i}",
                    "time": int(now - age) + i,
                    "user_id": 100 * n + i + 1,
                    "event": "level_up",
                    "level": i + 1,
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _sent(collector: Collector) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in collector.accepted():
        counts[record.destination] = counts.get(record.destination, 0) + 1
    return counts


def test_kontagent_gets_only_newer_events_with_a_max_age_and_kissmetrics_gets_all(
    collector: Collector, tmp_path: Path
) -> None:
    events = _events(tmp_path / "events.jsonl", time.time())
    out, ledger = tmp_path / "out", tmp_path / "ledger"
    flags = backfill_flags(
        collector.base_url, out, events, extra=(f"--ledger={ledger}", "--kontagent-max-age=5")
    )
    done = run_cli(*flags)
    assert done.returncode == 0, done.stderr
    assert collector.rejected() == []
    total = TOO_OLD + OLD + NEW
    assert _sent(collector) == {"kissmetrics": total, "kontagent": OLD + NEW}
    report = json.loads((out / "report.json").read_text())
    assert report["invariant_errors"] == []
    assert report["messages_built"] == 2 * total
    assert report["messages_too_old"] == TOO_OLD and report["messages_skipped"] == 0
    assert report["messages_delivered"] == 2 * total - TOO_OLD
    assert report["by_destination"]["kontagent"]["too_old"] == TOO_OLD
    assert report["by_type"]["kontagent/evt"]["too_old"] == TOO_OLD
    assert "too_old" not in report["by_destination"]["kissmetrics"]
    # the kept old ones went to Kontagent: warned as the first was met, and in the summary
    assert report["messages_from_old_days"] == OLD
    assert report["by_destination"]["kontagent"]["from_old_days"] == OLD
    warnings = [line for line in done.stderr.splitlines() if "older than 2 days" in line]
    assert len(warnings) == 1, done.stderr
    assert warnings[0].startswith("beaconflow: kontagent: sending messages of events older")
    assert f"WARNING: {OLD} messages of events older than 2 days went to Kontagent" in done.stdout
    assert f"{TOO_OLD} too old for Kontagent (--kontagent-max-age)" in done.stdout

    # dropped for age, never recorded as delivered: without the flag, the same command with
    # the same ledger sends Kontagent exactly those, and nothing else again
    again = [flag for flag in flags if not flag.startswith("--kontagent-max-age")]
    done = run_cli(*again)
    assert done.returncode == 0, done.stderr
    assert _sent(collector) == {"kissmetrics": total, "kontagent": total}
    report = json.loads((out / "report.json").read_text())
    assert (report["messages_delivered"], report["messages_too_old"]) == (TOO_OLD, 0)
    assert report["messages_skipped"] == 2 * total - TOO_OLD
    assert report["messages_from_old_days"] == TOO_OLD
    assert report["invariant_errors"] == []


def test_the_report_says_when_what_and_how_without_the_secrets(
    collector: Collector, tmp_path: Path
) -> None:
    events = _events(tmp_path / "events.jsonl", time.time())
    out = tmp_path / "out"
    before = time.time()
    done = run_cli(*backfill_flags(collector.base_url, out, events))
    after = time.time()
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    for text in (json.dumps(report), page):
        for secret in (KONTAGENT_KEY, KONTAGENT_SECRET, KISSMETRICS_KEY):
            assert secret not in text
    assert report["command"][0] == "beaconflow"
    assert "--kontagent-api-key=***" in report["command"]
    assert "--kontagent-secret=***" in report["command"]
    assert f"--input={events}" in report["command"]
    assert report["version"] == __version__
    started = _epoch(report["started_at"])
    ended = _epoch(report["ended_at"])
    assert before - 1 <= started <= ended <= after + 1
    assert (report["since"], report["until"], report["date"]) == (None, None, None)
    assert f'<dd data-fact="version">beaconflow {__version__}</dd>' in page
    assert report["started_at"][:10] in page and "--kissmetrics-api-key=***" in page
    # every Kontagent message of the 3.5- and 10-day-old events went, and was warned about
    assert report["messages_from_old_days"] == TOO_OLD + OLD


def _epoch(iso: str) -> float:
    from datetime import datetime

    assert iso.endswith("Z") and len(iso) == len("2025-06-01T00:00:00.000Z"), iso
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_dry_run_in_chunks_counts_them_the_same_way(tmp_path: Path) -> None:
    now = 1_750_000_000.0  # 2025-06-15T15:06:40Z, injected
    events = _events(tmp_path / "events.jsonl", now)
    out = tmp_path / "out"
    status, report = run_json(
        [
            f"--input={events}",
            f"--report={out / 'report.json'}",
            f"--dead-letter={out / 'dead.jsonl'}",
            f"--dry-run={out / 'dry.jsonl'}",
            "--kontagent-max-age=5",
            "--chunk=day",
            f"--kontagent-api-key={KONTAGENT_KEY}",
            f"--kissmetrics-api-key={KISSMETRICS_KEY}",
        ],
        now=now,
    )
    assert status == 0
    total = TOO_OLD + OLD + NEW
    assert report["invariant_errors"] == []
    assert (report["messages_too_old"], report["messages_dry_run"]) == (
        TOO_OLD,
        2 * total - TOO_OLD,
    )
    assert report["messages_from_old_days"] == OLD
    rows = report["chunking"]["chunks"]
    assert len(rows) >= 3, "one chunk per event day"
    assert sum(row["messages_too_old"] for row in rows) == TOO_OLD
    lines = [json.loads(line) for line in (out / "dry.jsonl").read_text().splitlines()]
    kinds = [line["destination"] for line in lines]
    assert kinds.count("kissmetrics") == total and kinds.count("kontagent") == OLD + NEW
    assert (report["since"], report["until"]) == (None, None)
