"""Whole runs with a ledger of many days: a run reads only the shards of its own days.

The ledger holds a previous run's deliveries of 20 old days (a shard each, as the ledger's
writer leaves them). A run of one day's events against the collector delivers them and
files them under that day; the same run again skips every one, reading only that day's
shards and the files without a range (the report's ``ledger_files_read`` and
``ledger_files_skipped`` count them); a replayed Kontagent message, whose day is unknown,
makes the run read every file and is still skipped.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from beaconflow.delivery.ledger import LedgerWriter, ledger_files
from beaconflow.delivery.ledger_days import file_days
from beaconflow.delivery.ledger_identity import LedgerIdentity
from beaconflow.model.message import Message
from beaconflow.pipelines.options import configure
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector
from tests.conftest import backfill_flags, run_json

NOW = 1_800_000_000
RUN_DAY = (date(2025, 6, 5) - date(1970, 1, 1)).days
OLD_DAYS = range(RUN_DAY - 30, RUN_DAY - 10)


@pytest.fixture
def day_events(tmp_path: Path) -> Path:
    """300 events of 2025-06-05."""
    path = tmp_path / "logs" / "events.jsonl"
    path.parent.mkdir()
    start = datetime(2025, 6, 5, tzinfo=UTC)
    write_jsonl(generate_events(300, seed=5, start=start, end=start.replace(hour=23)), path)
    return path


def _old_ledger(directory: Path, flags: list[str]) -> None:
    """The deliveries of a previous run of 20 other days, 50 a day, a shard a day."""
    config = configure(flags, now=NOW)
    fingerprints = dict(LedgerIdentity.of(config.endpoints).fingerprints)
    writer = LedgerWriter(str(directory), fingerprints, sync_seconds=None)
    for day in OLD_DAYS:
        writer.record(
            [
                Message("kontagent", "apa", (("s", str(n)),), occurrence=f"{day}-{n}", day=day)
                for n in range(50)
            ]
        )
        writer.seal()
    writer.close()


def test_a_run_reads_only_the_shards_of_its_days_and_skips_what_it_delivered_before(
    collector: Collector, day_events: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    flags = backfill_flags(collector.base_url, tmp_path, day_events, extra=(f"--ledger={ledger}",))
    _old_ledger(ledger, flags)
    old = set(ledger_files(str(ledger)))
    assert len(old) == len(OLD_DAYS)

    status, first = run_json(flags, now=NOW)
    assert status == 0 and first["invariant_errors"] == []
    assert first["messages_delivered"] == first["messages_built"] > 300
    assert (first["ledger_files_read"], first["ledger_files_skipped"]) == (0, len(OLD_DAYS))
    sent = len(collector.accepted())
    # the run's deliveries are filed under its day, or under none (its aliases)
    new = set(ledger_files(str(ledger))) - old
    ranged = [path for path in new if file_days(path) is not None]
    assert ranged and all(file_days(path) == (RUN_DAY, RUN_DAY) for path in ranged)

    status, second = run_json(flags, now=NOW)
    assert status == 0 and second["invariant_errors"] == []
    assert second["messages_delivered"] == 0
    assert second["messages_skipped"] == second["messages_built"] == first["messages_built"]
    assert len(collector.accepted()) == sent, "nothing sent again"
    assert second["ledger_files_read"] == len(new)
    assert second["ledger_files_skipped"] == len(OLD_DAYS)


def test_a_replayed_kontagent_message_of_unknown_day_reads_every_file_and_is_skipped(
    collector: Collector, day_events: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    flags = backfill_flags(collector.base_url, tmp_path, day_events, extra=(f"--ledger={ledger}",))
    _old_ledger(ledger, flags)
    dry = tmp_path / "dry.jsonl"
    dry_flags = backfill_flags(collector.base_url, tmp_path / "dry", day_events)
    assert run_json([*dry_flags, f"--dry-run={dry}"], now=NOW)[0] == 0
    view = next(
        v
        for v in (json.loads(line) for line in dry.read_text().splitlines())
        if v["destination"] == "kontagent"
    )
    assert run_json(flags, now=NOW)[0] == 0
    sent = len(collector.accepted())
    # the message as a send failure's dead-letter entry: replayed, it has no event day
    del view["url"]
    replay = tmp_path / "replay.jsonl"
    entry = {"stage": "send", "reason": "HTTP 500", "status": 500, "attempts": 1, "message": view}
    replay.write_text(json.dumps(entry) + "\n")
    out = tmp_path / "replayed"
    replay_flags = backfill_flags(collector.base_url, out, replay, extra=(f"--ledger={ledger}",))
    status, report = run_json(replay_flags, now=NOW)
    assert status == 0 and report["invariant_errors"] == []
    assert (report["messages_built"], report["messages_skipped"]) == (1, 1)
    assert report["ledger_files_skipped"] == 0
    assert report["ledger_files_read"] == len(ledger_files(str(ledger)))
    assert len(collector.accepted()) == sent
