"""Services that misbehave, and the run's time bounded: the circuit breaker and --deadline.

Whole runs against real local servers: the sandbox collector hung (it reads each request and
never answers: a latency longer than the test), answering 5xx to everything, or slow. A
destination that gives nothing but timeouts, connection errors and 5xx for
``--breaker-window`` is declared down: the rest of its messages go to the dead letter as "not
attempted: destination down: ..." (and a replay sends them), the other destination
completes, and the run exits 4. At ``--deadline`` no new request starts, what is in flight
finishes, the rest is "not attempted: deadline", and the run exits 4. The windows are small
(by flag) so that the tests are quick; nothing here measures time: the one comparison of
instants, the requests' arrivals against the deadline, has the slack of what was in flight.

The parts are tested where they live: the breaker in tests/delivery/test_breaker.py, the
sender's and the sender processes' halting in tests/delivery/test_sender.py and
test_sendproc.py, the flags in tests/pipelines/test_options.py.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from beaconflow.sandbox.collector import Collector, Faults
from tests.conftest import backfill_flags, read_dead_letter, run_cli, run_json

NOW = 1_800_000_000
#: Reads every request and answers none while a test lasts.
HUNG = Faults(latency=3600.0)
#: Answers 500 or 503 to everything.
FAILING = Faults(error_rate=1.0)
#: A breaker window and timeout small enough for a quick test.
QUICK = ("--timeout=0.5", "--breaker-window=1s", "--max-attempts=3", "--backoff=0.05")


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datetime import UTC

    from beaconflow.samples.gamelog import generate_events, write_jsonl

    path = tmp_path_factory.mktemp("logs") / "events.jsonl"
    events = generate_events(
        200, seed=7, start=datetime(2025, 6, 1, tzinfo=UTC), end=datetime(2025, 6, 3, tzinfo=UTC)
    )
    write_jsonl(events, path)
    return path


def _down(destination: str, window: str = "1s") -> str:
    return (
        f"destination down: {destination} (only timeouts, connection errors and 5xx for {window})"
    )


def _split(kontagent: str, kissmetrics: str, out: Path, events: Path) -> list[str]:
    """A run's flags with each destination sent to its own server."""
    flags = [
        f for f in backfill_flags(kissmetrics, out, events) if not f.startswith("--kontagent-url=")
    ]
    return [*flags, f"--kontagent-url={kontagent}"]


def test_a_hung_service_is_declared_down_instead_of_crawling(
    events_file: Path, tmp_path: Path
) -> None:
    with Collector(faults=HUNG) as hung:
        flags = backfill_flags(hung.base_url, tmp_path, events_file)
        done = run_cli(*flags, *QUICK, "--progress-interval=0.2")
        arrived = hung.counts()["arrived"]
    assert done.returncode == 4, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stopped"] == f"{_down('kissmetrics')}; {_down('kontagent')}"
    assert report["exit_status"] == 4 and report["invariant_errors"] == []
    assert report["messages_delivered"] == 0
    built = report["messages_built"] - report["messages_duplicate"]
    assert report["messages_failed"] == built
    assert 0 < report["messages_not_attempted"] < built
    assert arrived < built, "most messages were never sent"
    for destination in ("kontagent", "kissmetrics"):
        # said once, however many sender processes found it down
        said = f"beaconflow: {_down(destination)}: no more requests go to it"
        assert done.stderr.count(said) == 1, done.stderr
    assert "; down: " in done.stderr, "the progress lines name what is down"
    assert "stopped early: destination down: " in done.stderr
    reasons = Counter(entry["reason"] for entry in read_dead_letter(tmp_path))
    assert reasons[f"not attempted: {_down('kontagent')}"] > 0
    assert reasons[f"not attempted: {_down('kissmetrics')}"] > 0


@pytest.mark.parametrize(
    ("faults", "processes"), [(HUNG, "0"), (FAILING, "2")], ids=["hung-in-process", "5xx-2-procs"]
)
def test_one_destination_down_the_other_completes_and_a_replay_sends_the_rest(
    events_file: Path, tmp_path: Path, faults: Faults, processes: str
) -> None:
    with Collector(faults=faults) as down, Collector() as healthy:
        flags = _split(down.base_url, healthy.base_url, tmp_path, events_file)
        # retried long enough that the failures outlast the window
        flags += ["--timeout=0.5", "--breaker-window=1s", "--max-attempts=50", "--backoff=0.05"]
        status, report = run_json([*flags, f"--send-processes={processes}"], now=NOW)
        assert status == 4
        assert report["stopped"] == _down("kontagent")
        assert report["invariant_errors"] == []
        by = report["by_destination"]
        assert by["kissmetrics"]["delivered"] == by["kissmetrics"]["built"]
        assert "failed" not in by["kissmetrics"], "the healthy destination delivers everything"
        assert len(healthy.accepted()) == by["kissmetrics"]["built"]
        assert "delivered" not in by["kontagent"] and not down.accepted()
        assert by["kontagent"]["failed"] == by["kontagent"]["built"]
        dead = read_dead_letter(tmp_path)
        assert {entry["message"]["destination"] for entry in dead} == {"kontagent"}
        # each ended by the breaker: never sent, or not retried, or the answer that declared it
        not_attempted = [e for e in dead if e["reason"] == f"not attempted: {_down('kontagent')}"]
        assert len(not_attempted) == report["messages_not_attempted"]
        assert all(e["attempts"] == 0 for e in not_attempted)
        stopped = [e for e in dead if e["reason"].endswith(f"not retried: {_down('kontagent')}")]
        assert len(dead) - len(not_attempted) - len(stopped) <= 1
        if faults is HUNG:
            # a hung service answers one request per --timeout: most were never sent
            assert len(not_attempted) > len(dead) / 2

        # the service is back: the dead letter as --input sends every Kontagent message
        replay = tmp_path / "replay.jsonl"
        replay.write_text((tmp_path / "dead.jsonl").read_text())
        again = _split(healthy.base_url, healthy.base_url, tmp_path / "again", replay)
        status, report = run_json(again, now=NOW)
        assert status == 0, report
        assert report["messages_delivered"] == by["kontagent"]["built"]
        kontagent = [r for r in healthy.accepted() if r.destination == "kontagent"]
        assert len(kontagent) == by["kontagent"]["built"]


def test_breaker_window_0_keeps_trying_a_failing_service(events_file: Path, tmp_path: Path) -> None:
    with Collector(faults=FAILING) as failing:
        flags = backfill_flags(failing.base_url, tmp_path, events_file)
        flags += ["--breaker-window=0", "--max-attempts=2", "--backoff=0", "--fixed-concurrency"]
        status, report = run_json(flags, now=NOW)
    assert status == 3, "failed messages, no stop"
    assert report["stopped"] is None and report["messages_not_attempted"] == 0
    built = report["messages_built"] - report["messages_duplicate"]
    assert failing.counts()["faulted"] == 2 * built, "every message tried twice"


def test_at_the_deadline_no_request_starts_and_what_is_in_flight_finishes(
    events_file: Path, tmp_path: Path
) -> None:
    # 2 requests in flight at a time, each answered after 0.25 s: about 8 a second, so the
    # ~400 messages would take most of a minute; the deadline falls well within it
    with Collector(faults=Faults(latency=0.25)) as slow:
        flags = backfill_flags(slow.base_url, tmp_path, events_file)
        flags += ["--deadline=10s", "--fixed-concurrency", "--concurrency=2", "--timeout=5"]
        done = run_cli(*flags, "--progress-interval=1")
        # the collector's clock is this process's monotonic one; the report's is the wall
        offset = time.time() - time.monotonic()
        arrivals = [record.monotonic + offset for record in slow.accepted()]
        arrived = slow.counts()["arrived"]
    assert done.returncode == 4, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["stopped"] == "deadline" and report["exit_status"] == 4
    assert report["invariant_errors"] == []
    deadline = datetime.fromisoformat(report["deadline"]).timestamp()
    # the deadline fell mid-send: some were delivered, the rest never started
    assert 0 < report["messages_delivered"] < report["messages_built"]
    assert report["messages_not_attempted"] == report["messages_failed"] > 0
    # what was in flight finished: every request that arrived was answered and delivered
    assert arrived == len(arrivals) == report["messages_delivered"]
    # no request started after the deadline: an arrival after it can only be one of the two
    # in flight, sent just before it
    late = [at for at in arrivals if at > deadline]
    assert len(late) <= 2, (late, deadline)
    assert all(at < deadline + 5 for at in late), "within their --timeout of it"
    reasons = {entry["reason"] for entry in read_dead_letter(tmp_path)}
    assert reasons == {"not attempted: deadline"}
    assert "the --deadline is reached (10s after the run's start)" in done.stderr
    assert "; deadline in " in done.stderr, "the progress lines count down"
    assert "stopped early: deadline." in done.stderr


def test_a_deadline_that_passes_before_sending_sends_nothing(
    events_file: Path, tmp_path: Path
) -> None:
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        # reading, parsing and deduplicating take longer than 10 ms
        status, report = run_json([*flags, "--deadline=0.01s"], now=NOW)
        assert status == 4
        assert report["stopped"] == "deadline"
        assert collector.counts()["arrived"] == 0, "no request after the deadline"
        assert (
            report["messages_not_attempted"]
            == report["messages_built"] - report["messages_duplicate"]
        )
        assert {e["reason"] for e in read_dead_letter(tmp_path)} == {"not attempted: deadline"}

        replay = tmp_path / "replay.jsonl"
        replay.write_text((tmp_path / "dead.jsonl").read_text())
        status, again = run_json(
            backfill_flags(collector.base_url, tmp_path / "r", replay), now=NOW
        )
        assert status == 0 and again["deadline"] is None
        assert again["messages_delivered"] == report["messages_not_attempted"]
