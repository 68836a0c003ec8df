"""Nothing lost, nothing sent twice: the ledger, replays, faults, and a SIGKILL mid-run.

Each run is compared with what the collector recorded, and the report's invariants are
checked every time.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from beaconflow.model.message import Message
from beaconflow.sandbox.collector import Collector, Faults, down_url
from tests.conftest import (
    assert_group_ends,
    backfill_flags,
    june_events,
    read_dead_letter,
    run_json,
)

NOW = 1_800_000_000
START = 1_749_000_000  # 2025-06-04T01:20:00Z


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return june_events(tmp_path_factory.mktemp("logs"), 400, seed=11, days=7)


def _keys(collector: Collector) -> Counter[str]:
    return Counter(record.key for record in collector.accepted())


def _expected(events_file: Path, out: Path) -> Counter[str]:
    """What a complete run must deliver, as the collector sees it: content keys with counts.

    The collector computes a message's key from the request, which cannot carry the event
    identity that tells two equal Kontagent messages of different events apart; so two such
    messages count twice under one key here.
    """
    dry = out / "all.jsonl"
    flags = backfill_flags("http://unused.invalid", out, events_file, extra=(f"--dry-run={dry}",))
    assert run_json(flags, now=NOW)[0] == 0
    views = [json.loads(line) for line in dry.read_text().splitlines()]
    return Counter(
        Message(v["destination"], v["kind"], tuple(v["params"].items())).key for v in views
    )


def test_rerun_with_ledger_sends_nothing_again(
    collector: Collector, events_file: Path, tmp_path: Path
) -> None:
    ledger = f"--ledger={tmp_path / 'ledger'}"
    status, first = run_json(
        backfill_flags(collector.base_url, tmp_path, events_file, extra=(ledger,)), now=NOW
    )
    assert status == 0 and first["messages_delivered"] == first["messages_built"] > 600
    accepted_after_first = len(collector.accepted())
    status, second = run_json(
        backfill_flags(collector.base_url, tmp_path, events_file, extra=(ledger,)), now=NOW
    )
    assert status == 0
    assert second["messages_delivered"] == 0
    assert second["messages_skipped"] == second["messages_built"] == first["messages_built"]
    assert second["invariant_errors"] == []
    assert len(collector.accepted()) == accepted_after_first
    files = list((tmp_path / "ledger").iterdir())
    shards = [p for p in files if p.name.startswith("shard-")]
    assert shards and all(p.name.endswith(".v2.jsonl") for p in shards)
    others = {p.name.split("-")[0] for p in files if p not in shards}
    assert others == {"ledger.json", "manifest", "endpoint"}
    lines = [json.loads(line) for p in shards for line in p.read_text().splitlines()]
    entries = [line for line in lines if "ledger" in line]
    assert len(entries) == first["messages_delivered"]
    assert len(lines) - len(entries) == len(shards), "one seal record per shard"
    assert {"ledger", "destination", "kind", "at", "crc"} <= set(entries[0])


def test_overlapping_nightly_windows_never_resend(
    collector: Collector, events_file: Path, tmp_path: Path
) -> None:
    ledger = f"--ledger={tmp_path / 'ledger'}"
    windows = [
        ("2025-06-01", "2025-06-04"),
        ("2025-06-03", "2025-06-06"),
        ("2025-06-01", "2025-06-08"),
    ]
    for since, until in windows:
        flags = backfill_flags(
            collector.base_url,
            tmp_path,
            events_file,
            extra=(ledger, f"--since={since}", f"--until={until}"),
        )
        status, report = run_json(flags, now=NOW)
        assert status == 0 and report["invariant_errors"] == []
    assert _keys(collector) == _expected(events_file, tmp_path), "lost or sent twice"


def test_a_users_permanent_400s_go_to_the_dead_letter_and_replay_after_the_fix(
    events_file: Path, tmp_path: Path
) -> None:
    user = json.loads(events_file.read_text().splitlines()[0])["user_id"]
    ledger = f"--ledger={tmp_path / 'ledger'}"
    with Collector(faults=Faults(reject_users=frozenset({str(user)}))) as collector:
        status, report = run_json(
            backfill_flags(collector.base_url, tmp_path, events_file, extra=(ledger,)), now=NOW
        )
        dead = read_dead_letter(tmp_path)
        assert status == 3
        assert report["messages_failed"] == len(dead) > 0
        assert all(d["stage"] == "send" and d["status"] == 400 and d["attempts"] == 1 for d in dead)
        rejected = [r for r in collector.rejected() if r.status == 400]
        assert len(rejected) == len(dead)
        assert report["messages_delivered"] + report["messages_failed"] == report["messages_built"]
        assert report["invariant_errors"] == []

        # the cause is fixed; the dead letter goes back in as input
        collector.set_faults(Faults())
        replay = tmp_path / "replay.jsonl"
        replay.write_text((tmp_path / "dead.jsonl").read_text())
        status, again = run_json(
            backfill_flags(collector.base_url, tmp_path, replay, extra=(ledger,)), now=NOW
        )
        assert status == 0
        assert again["messages_delivered"] == len(dead)
        assert again["events_read"] == len(dead) and again["invariant_errors"] == []
        assert _keys(collector) == _expected(events_file, tmp_path)


def test_invalid_records_stay_invalid_with_the_same_reason_on_replay(
    collector: Collector, tmp_path: Path
) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"time": 1750000000, "user_id": 1, "event": "has space"}\n{oops\n')
    _, report = run_json(backfill_flags(collector.base_url, tmp_path, source), now=NOW)
    # a name with a space is Kontagent's problem only: KISSmetrics took its message
    assert (report["events_invalid"], report["messages_invalid"]) == (1, 1)
    assert [r.destination for r in collector.accepted()] == ["kissmetrics"]
    first = sorted((d["reason"], d.get("destination")) for d in read_dead_letter(tmp_path))
    assert [destination for _, destination in first].count("kontagent") == 1
    replay = tmp_path / "replay.jsonl"
    replay.write_text((tmp_path / "dead.jsonl").read_text())
    status, report = run_json(backfill_flags(collector.base_url, tmp_path, replay), now=NOW)
    assert status == 3 and (report["events_invalid"], report["messages_invalid"]) == (1, 1)
    again = sorted((d["reason"], d.get("destination")) for d in read_dead_letter(tmp_path))
    assert again == first
    # the replay tried Kontagent only: KISSmetrics' message was not sent twice
    assert [r.destination for r in collector.accepted()] == ["kissmetrics"]
    assert report["messages_built"] == 0


def test_faults_everything_delivered_exactly_once(events_file: Path, tmp_path: Path) -> None:
    faults = Faults(
        error_rate=0.25,
        too_many_rate=0.05,
        retry_after=1,
        drop_rate=0.05,
        latency_spike_rate=0.02,
        latency_spike=0.3,
        seed=3,
    )
    with Collector(faults=faults) as collector:
        extra = (
            f"--ledger={tmp_path / 'ledger'}",
            "--max-attempts=25",
            "--backoff=0.01",
            "--concurrency=32",
        )
        status, report = run_json(
            backfill_flags(collector.base_url, tmp_path, events_file, extra=extra), now=NOW
        )
        assert status == 0, read_dead_letter(tmp_path)[:3]
        assert report["messages_failed"] == 0 and report["invariant_errors"] == []
        assert report["messages_delivered"] == report["messages_built"]
        assert _keys(collector) == _expected(events_file, tmp_path)
        counts = collector.counts()
        assert counts["faulted"] > 100  # the faults really happened
        assert counts.get("faulted/429", 0) > 0 and counts.get("faulted/drop", 0) > 0


def test_server_down_everything_in_the_dead_letter(events_file: Path, tmp_path: Path) -> None:
    extra = ("--max-attempts=2", "--backoff=0", f"--ledger={tmp_path / 'ledger'}")
    status, report = run_json(
        backfill_flags(down_url(), tmp_path, events_file, extra=extra), now=NOW
    )
    assert status == 3
    assert report["messages_delivered"] == 0
    assert report["messages_failed"] == report["messages_built"] > 0
    dead = read_dead_letter(tmp_path)
    assert len(dead) == report["messages_failed"]
    assert all(d["stage"] == "send" and d["status"] is None and d["attempts"] == 2 for d in dead)
    assert not list((tmp_path / "ledger").glob("*.jsonl*")), "nothing may be claimed delivered"


def _start_quiet(flags: list[str]) -> subprocess.Popen[bytes]:
    """The command in a process group of its own (as a scheduler starts it), output ignored."""
    return subprocess.Popen([sys.executable, "-m", "beaconflow", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


def _kill_after(
    process: subprocess.Popen[bytes], collector: Collector, accepted: int, *, group: bool = False
) -> None:
    """SIGKILL the run (``group``: and its sender processes) once ``accepted`` are in."""
    deadline = time.monotonic() + 120
    while len(collector.accepted()) < accepted:
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)
    if group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize(
    ("processes", "group"),
    [(0, False), (2, False), (2, True)],
    ids=["in-process sender", "run killed, sender processes left", "all killed"],
)
def test_sigkill_mid_run_then_resume(
    events_file: Path, tmp_path: Path, processes: int, group: bool
) -> None:
    concurrency = 4
    ledger = tmp_path / "ledger"
    extra = (f"--ledger={ledger}", f"--concurrency={concurrency}", f"--send-processes={processes}")
    with Collector(faults=Faults(latency=0.02)) as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file, extra=extra)
        process = _start_quiet(flags)
        _kill_after(process, collector, accepted=150, group=group)
        if processes and not group:
            # the sender processes see their pipe close, stop, and seal their journals
            deadline = time.monotonic() + 30
            while list(ledger.glob("journal-*")) or not list(ledger.glob("shard-*")):
                assert time.monotonic() < deadline, "the sender processes did not stop"
                time.sleep(0.05)
        else:
            journals = list(ledger.glob("journal-*.jsonl.open"))
            assert journals, "the killed run's journal must be on disk"
        first = _keys(collector)
        expected = _expected(events_file, tmp_path)
        assert 150 <= first.total() < expected.total()

        status, report = run_json(flags, now=NOW)
        assert status == 0 and report["invariant_errors"] == []
        keys = _keys(collector)
        assert set(keys) == set(expected), "a message was lost"
        resent = (keys - expected).total()
        assert (expected - keys).total() == 0
        # at most the messages in flight at the kill are sent twice (see README)
        assert resent <= concurrency
        assert report["messages_skipped"] >= first.total() - concurrency


@pytest.mark.parametrize("processes", [0, 2])
@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_mid_run_stops_it_gracefully_and_the_next_run_finishes(
    events_file: Path, tmp_path: Path, processes: int, signum: int, status: int
) -> None:
    """A signal to the whole process group stops the run gracefully; the next run finishes.

    Ctrl-C in a terminal, or SIGTERM from systemd, Kubernetes or Airflow, reaches the run and
    its sender processes. The senders finish what is in flight, the run writes its report
    and dead letter, and the same command finishes the job.
    """
    concurrency = 4
    ledger = tmp_path / "ledger"
    extra = (f"--send-processes={processes}", f"--concurrency={concurrency}", f"--ledger={ledger}")
    with Collector(faults=Faults(latency=0.02)) as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file, extra=extra)
        process = subprocess.Popen([sys.executable, "-m", "beaconflow", *flags],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while len(collector.accepted()) < 100:
            assert process.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "the run did not get going"
            time.sleep(0.05)
        os.killpg(process.pid, signum)
        out, err = process.communicate(timeout=120)
        assert f"STOPPED EARLY: interrupted by {signal.Signals(signum).name}" in out
        assert process.returncode == status, err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        assert "done:" not in err  # the senders' totals say "stopped", never "done"
        name = signal.Signals(signum).name
        assert f"stopped early: interrupted by {name}" in err
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["interrupted"] is True and report["exit_status"] == status
        assert report["stopped"] == f"interrupted by {name}"
        assert report["invariant_errors"] == []
        # what was not sent is in the dead letter as not attempted: nothing lost
        delivered = report["messages_delivered"]
        assert 100 <= delivered < report["messages_built"]
        assert report["messages_failed"] == report["messages_not_attempted"] > 0
        assert len(read_dead_letter(tmp_path)) >= report["messages_not_attempted"]
        first = _keys(collector)
        # the same command with the same ledger sends the rest, and nothing twice but what
        # was in flight
        status_again, again = run_json(flags, now=NOW)
        assert status_again == 0 and again["invariant_errors"] == []
        keys = _keys(collector)
        expected = _expected(events_file, tmp_path)
        assert set(keys) == set(expected), "a message was lost"
        assert (keys - expected).total() <= concurrency * max(processes, 1)
        assert again["messages_skipped"] >= first.total() - concurrency * max(processes, 1)
    # no process of the group is left
    assert_group_ends(process.pid)


def test_a_killed_runs_dead_letter_entries_are_kept_by_the_next_run(
    events_file: Path, tmp_path: Path
) -> None:
    # the invalid lines are dead-lettered by the parse step, long before the kill
    source = tmp_path / "events.jsonl"
    source.write_text(events_file.read_text() + "{oops\n[1]\n")
    ledger = tmp_path / "ledger"
    extra = (f"--ledger={ledger}", "--concurrency=4", "--max-errors=10")
    with Collector(faults=Faults(latency=0.02)) as collector:
        flags = backfill_flags(collector.base_url, tmp_path, source, extra=extra)
        process = _start_quiet(flags)
        _kill_after(process, collector, accepted=100, group=True)
        pieces = list((tmp_path / ".dead.jsonl.beaconflow").glob("dead.jsonl.*"))
        assert pieces, "the killed run left no piece of its dead letter"
        status, report = run_json(flags, now=NOW)
    assert status == 0 and report["invariant_errors"] == []
    # this run's own two entries, and the killed run's two, kept: never deleted
    assert report["events_invalid"] == 2 and report["dead_letter_salvaged"] == 2
    entries = read_dead_letter(tmp_path)
    assert len(entries) == 4
    assert sorted(e["reason"] for e in entries)[::2] == sorted(e["reason"] for e in entries)[1::2]
    assert not (tmp_path / ".dead.jsonl.beaconflow").exists(), "its pieces, then its folder, go"


def test_a_dead_letters_pieces_left_by_the_release_before_are_kept_by_the_next_run(
    events_file: Path, tmp_path: Path, collector: Collector
) -> None:
    # a run of a release before issue 17 was killed: its pieces are beside the dead letter
    # (finished and not), and the user upgraded before the next run
    old = {"reason": "invalid JSON", "stage": "read", "source": "old.jsonl:1", "record": "{x"}
    line = json.dumps(old).encode()
    (tmp_path / "dead.jsonl.partsParse-0a1b").write_bytes(line + b"\n")
    (tmp_path / "dead.jsonl.tmpParse-2c3d").write_bytes(line + b"\n" + line[:9])  # torn
    (tmp_path / "dry.jsonl.tmp-4e5f").write_bytes(b"a dry run's piece\n")
    flags = backfill_flags(collector.base_url, tmp_path, events_file)
    status, report = run_json(flags, now=NOW)
    assert status == 0 and report["invariant_errors"] == []
    assert report["dead_letter_salvaged"] == 2
    assert read_dead_letter(tmp_path) == [old, old]
    assert not list(tmp_path.glob("dead.jsonl.*")), "salvaged, then removed"
    # a dry run's pieces are removed, wherever they are
    dry = backfill_flags(collector.base_url, tmp_path, events_file, extra=(
        f"--dry-run={tmp_path / 'dry.jsonl'}",))  # fmt: skip
    assert run_json(dry, now=NOW)[0] == 0
    assert not list(tmp_path.glob("dry.jsonl.*")) and not list(tmp_path.glob(".*.beaconflow"))


def test_the_ledgers_files_are_readable_by_their_owner_only(
    events_file: Path, tmp_path: Path, collector: Collector
) -> None:
    ledger = tmp_path / "ledger"
    flags = backfill_flags(collector.base_url, tmp_path, events_file, extra=(f"--ledger={ledger}",))
    previous = os.umask(0)
    try:
        status, _ = run_json(flags, now=NOW)
    finally:
        os.umask(previous)
    assert status == 0
    files = [path for path in ledger.iterdir() if path.is_file()]
    assert any(path.name.startswith("shard-") for path in files)
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in files} == {
        path.name: 0o600 for path in files
    }
