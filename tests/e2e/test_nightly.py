"""Nightly runs: --date, {date} in paths, --lookback, and the ledger across nights.

With the ledger, running a night twice, or windows that overlap, sends nothing twice, and
--lookback catches events that reached a later day's logs. How --date expands {date} and
sets the day's window is tested in tests/pipelines/test_options.py.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from beaconflow.model.records import parse_time
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector
from tests.conftest import backfill_flags, run_cli, run_json

# 2025-06-05T12:00:00Z: "yesterday" is 2025-06-04
NOW = int(datetime(2025, 6, 5, 12, tzinfo=UTC).timestamp())


# ----- flags -----


def test_cli_the_days_missing_partition_has_not_landed_exit_75(tmp_path: Path) -> None:
    """The night's logs are late: nothing done, the scheduler tries again later."""
    pattern = str(tmp_path / "dt={date}" / "*.jsonl")
    (tmp_path / "dt=2025-06-03").mkdir()
    (tmp_path / "dt=2025-06-03" / "a.jsonl").write_text("")  # the day before has landed
    report = tmp_path / "out" / "report.json"
    done = run_cli(f"--input={pattern}", "--date=2025-06-04", "--lookback=1",
                   f"--ledger={tmp_path / 'ledger'}", f"--report={report}", "--sandbox")  # fmt: skip
    assert done.returncode == 75, done.stderr
    assert done.stderr == (
        f"beaconflow: the input of 2025-06-04 has not landed: --input "
        f"{tmp_path}/dt=2025-06-04/*.jsonl matches nothing; nothing was done, try again later\n"
    )
    assert done.stdout == "" and not report.parent.exists()


def test_cli_a_missing_plain_input_stays_exit_2_with_date(tmp_path: Path) -> None:
    """A pattern without {date} does not depend on the day: matching nothing is a mistake."""
    done = run_cli(f"--input={tmp_path / 'nowhere' / '*.jsonl'}", "--date=2025-06-04",
                   f"--dry-run={tmp_path / 'd'}")  # fmt: skip
    assert done.returncode == 2
    assert f"--input {tmp_path}/nowhere/*.jsonl: no file matches" in done.stderr
    assert "Traceback" not in done.stderr


# ----- nightly runs against the collector -----


@pytest.fixture(scope="module")
def partitions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Counter[str]]]:
    """Logs partitioned by arrival day, dt=2025-06-01 .. dt=2025-06-04.

    Each day's partition holds that day's events, except that the last 10 events of each day
    arrive late, in the next day's partition. Returns the root and, per partition, how many
    events of each event day it holds.
    """
    root = tmp_path_factory.mktemp("partitioned")
    events = list(
        generate_events(
            480,
            seed=5,
            start=datetime(2025, 6, 1, tzinfo=UTC),
            end=datetime(2025, 6, 5, tzinfo=UTC),
        )
    )

    def day_of(event: dict[str, Any]) -> str:
        return datetime.fromtimestamp(parse_time(event["time"]), UTC).date().isoformat()

    by_day: dict[str, list[dict[str, Any]]] = {}
    for event in sorted(events, key=lambda e: parse_time(e["time"])):
        by_day.setdefault(day_of(event), []).append(event)
    files: dict[str, list[dict[str, Any]]] = {day: [] for day in by_day}
    days = sorted(by_day)
    for i, day in enumerate(days):
        on_time, late = by_day[day][:-10], by_day[day][-10:]
        files[day].extend(on_time)
        files[days[min(i + 1, len(days) - 1)]].extend(late)
    contents: dict[str, Counter[str]] = {}
    for day, records in files.items():
        (root / f"dt={day}").mkdir()
        write_jsonl(records, root / f"dt={day}" / "events.jsonl")
        contents[day] = Counter(day_of(r) for r in records)
    return root, contents


def _night(collector: Collector, root: Path, out: Path, *extra: str) -> dict[str, Any]:
    flags = backfill_flags(
        collector.base_url,
        out,
        extra=(f"--input={root}/dt={{date}}/*.jsonl", f"--ledger={out / 'ledger'}", *extra),
    )
    status, report = run_json(flags, now=NOW)
    assert status == 0
    assert report["invariant_errors"] == []
    return report


def test_same_night_twice_sends_nothing_twice(
    collector: Collector, partitions: tuple[Path, dict[str, Counter[str]]], tmp_path: Path
) -> None:
    root, contents = partitions
    first = _night(collector, root, tmp_path, "--date=2025-06-03")
    assert first["date"] == "2025-06-03"
    # the partition's own day is kept; the late events of the day before are out of range
    assert first["events_mapped"] == contents["2025-06-03"]["2025-06-03"]
    assert first["events_out_of_range"] == contents["2025-06-03"]["2025-06-02"] == 10
    sent = len(collector.accepted())
    assert sent == first["messages_delivered"] > 0
    second = _night(collector, root, tmp_path, "--date=2025-06-03")
    assert len(collector.accepted()) == sent
    assert second["messages_delivered"] == 0
    assert second["messages_skipped"] == first["messages_delivered"]


def test_overlapping_windows_and_lookback_send_each_message_once(
    collector: Collector, partitions: tuple[Path, dict[str, Counter[str]]], tmp_path: Path
) -> None:
    root, contents = partitions
    # a manual backfill of the 2nd and 3rd, then the nightly jobs of the 3rd and 4th with
    # a day of lookback: the 3rd is covered twice, the late events of the 3rd (in the 4th's
    # logs) are caught by the 4th's lookback
    backfill = backfill_flags(
        collector.base_url,
        tmp_path,
        root / "dt=2025-06-02" / "events.jsonl",
        root / "dt=2025-06-03" / "events.jsonl",
        extra=(f"--ledger={tmp_path / 'ledger'}", "--since=2025-06-02", "--until=2025-06-04"),
    )
    status, manual = run_json(backfill, now=NOW)
    assert status == 0
    third = _night(collector, root, tmp_path, "--date=2025-06-03", "--lookback=1")
    assert third["messages_delivered"] == 0
    fourth = _night(collector, root, tmp_path, "--date=2025-06-04", "--lookback=1")
    # the 4th's run delivers the 4th's events and the 3rd's late ones, nothing else
    late_third = contents["2025-06-04"]["2025-06-03"]
    assert fourth["events_mapped"] == (
        contents["2025-06-03"]["2025-06-03"] + late_third + contents["2025-06-04"]["2025-06-04"]
    )
    keys = Counter(record.key for record in collector.accepted())
    delivered = manual["messages_delivered"] + fourth["messages_delivered"]
    assert sum(keys.values()) == delivered
    # every message of the three days went out exactly once: as many as a dry run builds
    dry = run_json(
        backfill_flags(
            "http://unused.invalid",
            tmp_path / "dry",
            extra=(
                f"--input={root}/dt=*/events.jsonl",
                "--since=2025-06-02",
                "--until=2025-06-05",
                f"--dry-run={tmp_path / 'dry' / 'all.jsonl'}",
            ),
        ),
        now=NOW,
    )[1]
    assert dry["messages_dry_run"] == delivered


def test_a_missing_lookback_day_is_skipped_and_reported(
    collector: Collector, partitions: tuple[Path, dict[str, Counter[str]]], tmp_path: Path
) -> None:
    """The first night after deployment, or a quiet day: no partition for a day before."""
    root, contents = partitions
    # 2025-06-01 is the first partition: its lookback days 2025-05-30 and -31 have none
    report = _night(collector, root, tmp_path, "--date=2025-06-01", "--lookback=2")
    assert report["lookback_days_missing"] == ["2025-05-30", "2025-05-31"]
    assert report["files"] == 1
    assert report["events_mapped"] == contents["2025-06-01"]["2025-06-01"]
    assert report["messages_delivered"] == len(collector.accepted()) > 0
    flags = backfill_flags(
        collector.base_url,
        tmp_path,
        extra=(f"--input={root}/dt={{date}}/*.jsonl", f"--ledger={tmp_path / 'ledger'}",
               "--date=2025-06-02", "--lookback=1"),
    )  # fmt: skip
    done = run_cli(*flags)
    assert done.returncode == 0, done.stderr
    assert "lookback: no input" not in done.stdout
    assert json.loads((tmp_path / "report.json").read_text())["lookback_days_missing"] == []
    done = run_cli(*[f.replace("2025-06-02", "2025-06-01") for f in flags])
    assert done.returncode == 0, done.stderr
    assert "lookback: no input for 2025-05-31 (skipped)" in done.stdout.splitlines()


def test_a_bad_line_of_the_day_before_alerts_once_not_at_every_lookback(
    collector: Collector, partitions: tuple[Path, dict[str, Counter[str]]], tmp_path: Path
) -> None:
    root = tmp_path / "logs"
    for day in ("2025-06-03", "2025-06-04"):
        (root / f"dt={day}").mkdir(parents=True)
        source = partitions[0] / f"dt={day}" / "events.jsonl"
        (root / f"dt={day}" / "events.jsonl").write_text(source.read_text())
    noon = int(datetime(2025, 6, 3, 12, tzinfo=UTC).timestamp())
    with (root / "dt=2025-06-03" / "events.jsonl").open("a") as handle:
        handle.write("{oops\n")  # unreadable: parse stage
        # Kontagent cannot take the name (map stage, per destination); KISSmetrics can
        handle.write(json.dumps({"time": noon, "user_id": 7, "event": "level up"}) + "\n")
    out = tmp_path / "out"

    def night(*extra: str, dead_letter: str = f"{out}/{{date}}/dead.jsonl") -> dict[str, Any]:
        flags = backfill_flags(
            collector.base_url,
            out,
            extra=(f"--input={root}/dt={{date}}/*.jsonl", f"--ledger={out / 'ledger'}",
                   f"--dead-letter={dead_letter}", *extra),
        )  # fmt: skip
        status, report = run_json(flags, now=NOW)
        assert report["invariant_errors"] == []
        report["status"] = status
        return report

    third = night("--date=2025-06-03", "--max-errors=2")
    assert (third["status"], third["events_invalid"], third["messages_invalid"]) == (0, 1, 1)
    stages = [json.loads(line)["stage"] for line in (out / "2025-06-03" / "dead.jsonl").open()]
    assert sorted(stages) == ["map", "parse"]
    # the next night reads the 3rd again (--lookback): the lines are in the 3rd's dead letter
    fourth = night("--date=2025-06-04", "--lookback=1")
    assert fourth["status"] == 0  # not errors again, not against --max-errors 0
    assert (fourth["events_invalid"], fourth["events_already_dead_lettered"]) == (0, 1)
    assert (fourth["messages_invalid"], fourth["messages_already_dead_lettered"]) == (0, 1)
    assert fourth["by_destination"]["kontagent"]["already_dead_lettered"] == 1
    assert (out / "2025-06-04" / "dead.jsonl").read_text() == ""
    # replaying the 3rd's dead letter still reports the line
    flags = backfill_flags(
        collector.base_url,
        out / "replay",
        out / "2025-06-03" / "dead.jsonl",
        extra=(f"--ledger={out / 'ledger'}", "--max-errors=2"),
    )
    status, replayed = run_json(flags, now=NOW)
    assert (status, replayed["events_invalid"], replayed["events_already_dead_lettered"]) == (
        0,
        1,
        0,
    )
    assert (replayed["messages_invalid"], replayed["messages_already_dead_lettered"]) == (1, 0)
    # the same night again writes its dead letter at the same path, replacing the one that
    # held the line: the line is dead-lettered again, never lost
    again = night("--date=2025-06-03", "--max-errors=2")
    assert (again["events_invalid"], again["events_already_dead_lettered"]) == (1, 0)
    # the map entry is in the replay's dead letter too (another path, still there)
    assert (again["messages_invalid"], again["messages_already_dead_lettered"]) == (0, 1)
    # once that one is gone, the night dead-letters it again
    for replay_output in (out / "replay").glob("dead*"):
        replay_output.unlink()
    again = night("--date=2025-06-03", "--max-errors=2")
    assert (again["messages_invalid"], again["messages_already_dead_lettered"]) == (1, 0)
