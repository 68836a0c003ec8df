"""Stopping early instead of corrupting silently: redirects, an unwritable ledger or dead letter.

Whole runs, through ``run()`` or the command, against real failing filesystems (a read-only
mount, a tmpfs that fills: tests/fs_faults.py), a collector that redirects, a worker that
fails, and a full stdout or stderr. The parts are tested where they live: the stop flag in
tests/delivery/test_stop.py, the sender's and the pool's judging of redirects in
tests/delivery/test_sender.py and test_sendproc.py, the ledger's writer in
tests/delivery/test_ledger.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from beaconflow.delivery.ledger import ledger_files, read_ledger_file
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector, Faults
from tests.conftest import KONTAGENT_KEY, backfill_flags, read_dead_letter, run_cli, run_json
from tests.fs_faults import SmallDisk

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datetime import UTC, datetime

    path = tmp_path_factory.mktemp("logs") / "events.jsonl"
    events = generate_events(
        300, seed=5, start=datetime(2025, 6, 1, tzinfo=UTC), end=datetime(2025, 6, 3, tzinfo=UTC)
    )
    write_jsonl(events, path)
    return path


def _two_collectors(redirect: str) -> tuple[Collector, Collector]:
    faults = Faults(redirect_destinations=frozenset({"kontagent"}), redirect=redirect)
    return Collector(faults=faults), Collector()


@pytest.mark.parametrize(("redirect", "processes"), [("login", "0"), ("loop", "2")])
def test_a_redirecting_destination_stops_it_and_nothing_is_counted_delivered(
    events_file: Path, tmp_path: Path, redirect: str, processes: str
) -> None:
    wrong, right = _two_collectors(redirect)
    ledger = tmp_path / "ledger"
    with wrong, right:
        flags = backfill_flags(right.base_url, tmp_path, events_file)
        flags = [f for f in flags if not f.startswith("--kontagent-url=")]
        flags += [
            f"--kontagent-url={wrong.base_url}",
            f"--ledger={ledger}",
            f"--send-processes={processes}",
        ]
        status, report = run_json(flags, now=NOW)
        assert status == 4
        assert report["stopped"].startswith("kontagent is misconfigured: its last")
        assert report["invariant_errors"] == []
        by = report["by_destination"]
        assert "delivered" not in by["kontagent"] and by["kontagent"]["failed"] > 0
        assert by["kissmetrics"]["delivered"] > 0 and "failed" not in by["kissmetrics"]
        assert wrong.counts().get("faulted/login_page", 0) == 0, "the login page never fetched"
        assert len(wrong.accepted()) == 0
        # the ledger holds KISSmetrics deliveries only
        kinds = Counter(
            json.loads(line)["destination"]
            for path in ledger_files(str(ledger))
            for line in Path(path).read_text().splitlines()
            if not line.startswith('{"sealed"')
        )
        assert set(kinds) == {"kissmetrics"}
        dead = read_dead_letter(tmp_path)  # every line parses
        reasons = Counter(d["reason"].split(":")[0] for d in dead)
        assert reasons["not attempted"] > 0 and reasons["HTTP 302"] >= 1
        assert report["messages_not_attempted"] == reasons["not attempted"]
        assert all(KONTAGENT_KEY not in json.dumps(d) for d in dead)

        # the URL is mended; the dead letter goes back in and every Kontagent message goes
        replay = tmp_path / "replay.jsonl"
        replay.write_text((tmp_path / "dead.jsonl").read_text())
        again_flags = backfill_flags(right.base_url, tmp_path / "again", replay)
        status, again = run_json([*again_flags, f"--ledger={ledger}"], now=NOW)
        assert status == 0, again
        assert again["messages_delivered"] == by["kontagent"]["failed"]
        assert (
            len([r for r in right.accepted() if r.destination == "kontagent"])
            == by["kontagent"]["failed"]
        )


def test_a_read_only_ledger_stops_the_run_before_anything_is_sent(
    events_file: Path, tmp_path: Path, read_only_dir: Path
) -> None:
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        done = run_cli(*flags, f"--ledger={read_only_dir / 'ledger'}")
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            f"beaconflow: error: ledger not writable: {read_only_dir / 'ledger'}: "
            "Read-only file system"
        )
        assert collector.counts().get("arrived", 0) == 0 and not collector.accepted()


def test_a_read_only_dead_letter_stops_the_run_before_anything_is_sent(
    events_file: Path, tmp_path: Path, read_only_dir: Path
) -> None:
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        flags = [f for f in flags if not f.startswith("--dead-letter=")]
        done = run_cli(*flags, f"--dead-letter={read_only_dir / 'dead.jsonl'}")
        assert done.returncode == 2, done.stderr
        assert "dead letter not writable" in done.stderr and "Read-only file system" in done.stderr
        assert not collector.accepted()


@pytest.mark.parametrize("processes", ["0", "2"])
def test_a_ledger_disk_that_fills_stops_sending_and_the_next_run_finishes(
    events_file: Path, tmp_path: Path, small_disk: SmallDisk, processes: str
) -> None:
    ledger = small_disk.path / "ledger"
    # ledger.json and the two endpoint descriptors take a page each before sending; then
    # two pages: some deliveries are recorded, then it is full
    small_disk.fill(free=8192 + 3 * 4096)
    with Collector() as collector:
        flags = [*backfill_flags(collector.base_url, tmp_path, events_file), f"--ledger={ledger}"]
        flags += ["--concurrency=4", f"--send-processes={processes}"]
        done = run_cli(*flags)
        assert done.returncode == 4, done.stderr
        assert "Traceback" not in done.stderr
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["stopped"] == f"ledger not writable: {ledger}: No space left on device"
        assert report["exit_status"] == 4 and report["invariant_errors"] == []
        first = len(collector.accepted())
        assert 0 < first < report["messages_built"], "it stopped early"
        assert "stopped early" in done.stderr
        recorded = sum(1 for p in ledger_files(str(ledger)) for _ in read_ledger_file(p))

        small_disk.free_up()  # the operator makes room; the same command again
        done = run_cli(*flags)
        assert done.returncode == 0, done.stderr
        total = len(collector.accepted())
        again = json.loads((tmp_path / "report.json").read_text())
        assert again["stopped"] is None
        # sent again: what was delivered but not recorded, at most what was in flight
        resent = first - recorded
        assert 0 <= resent <= 4
        assert again["messages_skipped"] == recorded
        unique = report["messages_built"] - report["messages_duplicate"]
        assert total == unique + resent, "nothing lost, and sent twice only what was in flight"


def test_a_dead_letter_disk_that_fills_stops_sending(
    events_file: Path, tmp_path: Path, small_disk: SmallDisk
) -> None:
    small_disk.fill(free=8192)
    dead = small_disk.path / "dead.jsonl"
    with Collector(faults=Faults(reject_users=_all_users(events_file))) as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        flags = [f for f in flags if not f.startswith("--dead-letter=")]
        flags += [f"--dead-letter={dead}", f"--ledger={tmp_path / 'ledger'}", "--concurrency=4"]
        done = run_cli(*flags)
        assert done.returncode == 4, done.stderr
        assert "Traceback" not in done.stderr
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["stopped"].startswith(f"dead letter not writable: {dead}: ")
        assert "No space left on device" in report["stopped"]
        assert len(collector.rejected()) < report["messages_built"], "it stopped early"


def _all_users(events_file: Path) -> frozenset[str]:
    users = set()
    for line in events_file.read_text().splitlines():
        users.add(str(json.loads(line)["user_id"]))
    return frozenset(users)


def test_a_run_that_fails_after_sending_began_exits_4_with_a_partial_report(
    events_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beaconflow.transforms import send

    original = send._SendDoFn.finish_bundle

    def failing(self: send._SendDoFn) -> object:
        yield from original(self)
        raise RuntimeError("the worker fell over")

    monkeypatch.setattr(send._SendDoFn, "finish_bundle", failing)
    with Collector() as collector:
        flags = [*backfill_flags(collector.base_url, tmp_path, events_file), "--send-processes=0"]
        status, report = run_json(flags, now=NOW)
        assert collector.accepted(), "it sent something before it failed"
    assert status == 4
    assert report["stopped"].startswith("the run failed: RuntimeError: the worker fell over")
    assert report["partial"] is True and report["exit_status"] == 4
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["stopped"] == report["stopped"]
    assert "Stopped early" in (tmp_path / "report.html").read_text()


def test_a_run_that_fails_before_sending_is_still_a_whole_run_error(
    events_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beaconflow.transforms import parse

    def failing(self: parse.ParseEvents, raw: object) -> object:
        raise RuntimeError("the reader fell over")

    monkeypatch.setattr(parse.ParseEvents, "process", failing)
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        with pytest.raises(Exception, match="the reader fell over"):
            run_json(flags, now=NOW)  # the command turns this into one line and exit 2
        assert not collector.accepted()


def test_a_report_disk_that_fills_leaves_a_whole_report_and_no_litter(
    events_file: Path, tmp_path: Path, small_disk: SmallDisk
) -> None:
    out = small_disk.path
    earlier = '{"exit_status": 0, "note": "the earlier run"}\n'
    (out / "report.json").write_text(earlier)
    small_disk.fill(free=4096)  # the probe fits, the run's report does not
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        flags = [f for f in flags if not f.startswith("--report=")]
        done = run_cli(*flags, f"--report={out / 'report.json'}", f"--ledger={tmp_path / 'l'}")
        assert collector.accepted(), "it sent"
    assert done.returncode == 4, done.stderr
    assert "report not writable" in done.stderr and "Traceback" not in done.stderr
    written = json.loads((out / "report.json").read_text())  # never a torn report
    if written != json.loads(earlier):
        # the counts could not be written, but once their file was gone the report fit
        assert written["partial"] is True and written["exit_status"] == 4
        assert written["stopped"].startswith(f"report not writable: {out / 'report.json'}: ")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["filler", "report.json"], "no probe, tallies or temporary file is left"


def test_a_full_stdout_does_not_turn_a_good_run_into_a_traceback(
    events_file: Path, tmp_path: Path
) -> None:
    with Collector() as collector, open("/dev/full", "w") as full:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        done = subprocess.run(
            [sys.executable, "-m", "beaconflow", *flags],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads((tmp_path / "report.json").read_text())["exit_status"] == 0


def test_an_unwritable_stderr_keeps_the_runs_status(events_file: Path, tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "beaconflow", "--input=nothing-here-*.jsonl", "--sandbox"],
            stdout=subprocess.PIPE, stderr=full, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, "a usage error stays 2 when stderr cannot be written"
        out = tmp_path / "out"
        done = subprocess.run(
            [sys.executable, "-m", "beaconflow", f"--input={events_file}", "--sandbox",
             f"--report={out / 'report.json'}", f"--dead-letter={out / 'dead.jsonl'}"],
            stdout=subprocess.PIPE, stderr=full, text=True, timeout=300,
        )  # fmt: skip
    assert done.returncode == 0
    assert json.loads((out / "report.json").read_text())["exit_status"] == 0
