"""Ambiguous outcomes in whole runs: what a service that counts on receipt saw, and what the run said.

Each run sends a few sample events to a raw socket server on loopback
(tests/hostile_servers.py) that records every request it read: one that logs each request
and never answers, one that closes a kept-alive connection on reading its second request,
and a closed port. By default a request that went out without an answer is retried (the
service saw it ``--max-attempts`` times: the report's ``messages_ambiguous`` counts such
messages and the dead letter and the ledger mark them); with ``--no-retry-ambiguous`` it is
sent once, and its dead-letter entry says it may have been received; a request that never
left is retried and is not ambiguous. The breaker is off so that every message is tried to
the end; nothing here measures time. The sender's part is tested in
tests/delivery/test_ambiguity.py.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from beaconflow.delivery.ambiguity import MAY_HAVE_BEEN_RECEIVED, NOT_RETRIED
from beaconflow.sandbox.collector import Collector, unused_port
from tests.conftest import (
    KISSMETRICS_KEY,
    KONTAGENT_KEY,
    KONTAGENT_SECRET,
    backfill_flags,
    june_events,
    read_dead_letter,
    run_cli,
    run_json,
)
from tests.hostile_servers import KeepAliveCloser, LogThenHang

NOW = 1_800_000_000
#: Three tries each, at once, every message in flight together, no breaker.
QUICK = (
    "--timeout=0.3",
    "--max-attempts=3",
    "--backoff=0",
    "--breaker-window=0",
    "--fixed-concurrency",
)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return june_events(tmp_path_factory.mktemp("logs"), 12, seed=16, days=1)


def _sent(report: dict[str, Any]) -> int:
    """The messages the run sent (built, less the duplicates)."""
    return int(report["messages_built"]) - int(report["messages_duplicate"])


def test_a_server_that_logs_and_hangs_sees_each_message_max_attempts_times(
    events: Path, tmp_path: Path
) -> None:
    with LogThenHang() as hung:
        status, report = run_json(
            [*backfill_flags(hung.base_url, tmp_path, events), *QUICK], now=NOW
        )
        seen = hung.seen()
    assert status == 3 and report["invariant_errors"] == []
    sent = _sent(report)
    assert sent > 0 and report["messages_failed"] == sent
    # every message went out three times: the service may have counted each three times
    assert len(seen) == sent and set(seen.values()) == {3}
    assert report["messages_ambiguous"] == sent
    by = report["by_destination"]
    for counts in by.values():
        assert counts["ambiguous"] == counts["failed"]
    dead = read_dead_letter(tmp_path)
    assert len(dead) == sent
    for entry in dead:
        assert (entry["attempts"], entry["ambiguous_attempts"]) == (3, 3)
        assert (
            entry["reason"] == f"TimeoutError: no response within 0.3 s; {MAY_HAVE_BEEN_RECEIVED}"
        )


def test_with_no_retry_ambiguous_the_server_sees_each_message_once(
    events: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    with LogThenHang() as hung:
        flags = [*backfill_flags(hung.base_url, first, events), *QUICK, "--no-retry-ambiguous"]
        done = run_cli(*flags)
        seen = hung.seen()
    assert done.returncode == 3, done.stderr
    report = json.loads((first / "report.json").read_text())
    sent = _sent(report)
    assert len(seen) == sent and set(seen.values()) == {1}
    assert report["messages_ambiguous"] == 0, "nothing was sent again"
    assert "ambiguous" not in json.dumps(report["by_destination"])
    dead = read_dead_letter(first)
    assert len(dead) == sent
    for entry in dead:
        assert (entry["attempts"], entry["ambiguous_attempts"]) == (1, 1)
        assert entry["reason"] == (
            f"TimeoutError: no response within 0.3 s; {MAY_HAVE_BEEN_RECEIVED}; {NOT_RETRIED}"
        )
    assert report["dead_letter_reasons"][0]["count"] == sent
    assert "ambiguous: " not in done.stdout

    # giving the dead letter back as --input is the user's choice: it sends them again
    replay = tmp_path / "replay"
    replay.mkdir()
    (replay / "in.jsonl").write_text((first / "dead.jsonl").read_text())
    with Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
    ) as healthy:
        flags = backfill_flags(healthy.base_url, replay, replay / "in.jsonl")
        status, again = run_json(flags, now=NOW)
        assert status == 0 and again["messages_delivered"] == sent
        assert len(healthy.accepted()) == sent


def test_a_refused_connection_is_retried_and_not_ambiguous(events: Path, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{unused_port()}"
    flags = [*backfill_flags(closed, tmp_path, events), *QUICK, "--no-retry-ambiguous"]
    status, report = run_json(flags, now=NOW)
    assert status == 3 and report["messages_failed"] == _sent(report)
    assert report["messages_ambiguous"] == 0
    for entry in read_dead_letter(tmp_path):
        assert entry["attempts"] == 3 and "ambiguous_attempts" not in entry
        assert entry["reason"].startswith("never reached the service: connection refused by ")


def test_a_keep_alive_connection_closed_before_the_answer_is_resent_counted_and_marked(
    events: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with KeepAliveCloser() as closer:
        flags = [*backfill_flags(closer.base_url, tmp_path, events), f"--ledger={ledger}"]
        # two requests at a time per sender: the next goes out on a kept-alive connection.
        # A request sent again may land on another kept-alive connection and be left
        # unanswered again: each does so at most a few times, far fewer than 20
        flags += ["--concurrency=2", "--breaker-window=0", "--max-attempts=20", "--backoff=0"]
        status, report = run_json(flags, now=NOW)
        seen, unanswered = closer.seen(), Counter(closer.unanswered)
        # the next run with the ledger sends none of them again, marked or not
        again = [*backfill_flags(closer.base_url, tmp_path / "again", events), f"--ledger={ledger}"]
        second_status, second = run_json(again, now=NOW)
        assert closer.seen() == seen
    assert status == 0 and report["invariant_errors"] == []
    sent = _sent(report)
    assert report["messages_delivered"] == sent
    assert second_status == 0 and second["messages_skipped"] == sent
    # each request read and left unanswered was sent again, until one was answered
    assert unanswered, "some request went out on a kept-alive connection"
    assert report["messages_ambiguous"] == len(unanswered)
    assert sum(seen.values()) == sent + unanswered.total()
    entries = [
        json.loads(line)
        for path in ledger.glob("*.jsonl*")
        for line in path.read_text().splitlines()
        if '"sealed"' not in line
    ]
    assert len(entries) == sent
    # each entry is marked with the times its message was left unanswered
    marks = Counter(entry.get("ambiguous") for entry in entries)
    expected: Counter[int | None] = Counter(unanswered.values())
    expected[None] = sent - len(unanswered)
    assert marks == expected
    verified = run_cli("ledger", "verify", str(ledger))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact" in verified.stdout
