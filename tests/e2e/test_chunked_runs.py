"""Chunked runs (``--chunk``): a backfill in chunks of event time adds up to one run.

The same command resumes it after a stop, sending nothing twice.

Dated input (``{date}`` in ``--input`` with ``--since``/``--until``) is read per chunk; the
spill pass for undated input has tests of its own (tests/pipelines/test_spill.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from beaconflow.model.records import parse_time
from beaconflow.pipelines.chunks import WorkDir
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector, Faults
from tests.conftest import (
    assert_group_ends,
    backfill_flags,
    children_of,
    needs_fork,
    run_cli,
    run_json,
)

NOW = int(datetime(2025, 7, 1, tzinfo=UTC).timestamp())
START = datetime(2025, 5, 25, tzinfo=UTC)
DAYS = 14


def _partitioned(root: Path, events: int, *, seed: int = 11) -> Path:
    """Game events of 14 days from 2025-05-25, in partitions by arrival day.

    One event in five lands in the next day's partition (a late upload), and one in fifty
    is uploaded twice, into its own day's partition and the next.
    """
    by_day: dict[date, list[dict[str, Any]]] = {}
    end = START + timedelta(days=DAYS)
    for i, record in enumerate(generate_events(events, seed=seed, start=START, end=end)):
        day = datetime.fromtimestamp(parse_time(record["time"]), UTC).date()
        arrival = day + timedelta(days=1) if i % 5 == 0 else day
        by_day.setdefault(arrival, []).append(record)
        if i % 50 == 7:
            by_day.setdefault(arrival + timedelta(days=1), []).append(record)
    for day, records in by_day.items():
        folder = root / f"dt={day.isoformat()}"
        folder.mkdir(parents=True)
        write_jsonl(records, folder / "events.jsonl")
    return root / "dt={date}" / "*.jsonl"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _partitioned(tmp_path_factory.mktemp("logs"), 1_200)


def _window(*extra: str) -> tuple[str, ...]:
    return ("--since=2025-05-25", f"--until={(START + timedelta(days=DAYS)).date()}",
            "--lookback=1", *extra)  # fmt: skip


_TIMINGS = {"elapsed_seconds", "messages_per_second", "send_timeline", "report", "dead_letter",
            "dry_run", "chunking", "started_at", "ended_at", "command"}  # fmt: skip


def _counts(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in _TIMINGS}


def _dry_run(logs: Path, out: Path, *flags: str) -> dict[str, Any]:
    """A dry run of ``logs`` into ``out`` with ``flags`` (exit 0 checked): its report."""
    status, report = run_json(
        backfill_flags("http://unused.invalid", out, logs,
                       extra=(*flags, f"--dry-run={out / 'dry.jsonl'}")),
        now=NOW,
    )  # fmt: skip
    assert status == 0, report["stopped"]
    return report


@pytest.mark.parametrize("unit", ["day", "week", "auto"])
def test_a_dated_backfill_in_chunks_adds_up_to_one_run(
    logs: Path, tmp_path: Path, unit: str
) -> None:
    """Each record counts once: late events, and copies in two partitions, in one chunk."""
    one, out = tmp_path / "one", tmp_path / unit
    whole = _dry_run(logs, one, *_window("--chunk=none"))
    chunked = _dry_run(logs, out, *_window(f"--chunk={unit}"))
    assert chunked["invariant_errors"] == []
    assert _counts(chunked) == _counts(whole)
    assert whole["events_duplicate"] > 0, "the copies in two partitions are found"
    rows = chunked["chunking"]["chunks"]
    if unit == "day":
        assert len(rows) == DAYS
    if unit == "week":
        assert [r["first_day"] for r in rows] == ["2025-05-25", "2025-05-26", "2025-06-02"]
    assert all(r["status"] == "done" for r in rows)
    assert sum(r["events_read"] for r in rows) == whole["events_read"]
    lines = sorted((out / "dry.jsonl").read_text().splitlines())
    assert lines == sorted((one / "dry.jsonl").read_text().splitlines())
    assert not (out / "report.work").exists(), "a run that ends done removes its work"


def _keys(collector: Collector) -> Counter[str]:
    return Counter(record.key for record in collector.accepted())


def _sigterm_when(flags: list[str], ready: Callable[[], bool]) -> str:
    """Run the command as a scheduler does; SIGTERM it once ``ready()``; it exits 143.

    Its stderr is returned.
    """
    process = subprocess.Popen([sys.executable, "-m", "beaconflow", *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get to where it is stopped"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr.decode()
    return stderr.decode()


def test_a_sigterm_mid_chunk_resumes_at_that_chunk_and_sends_nothing_twice(
    logs: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with Collector(faults=Faults(latency=0.01)) as collector:
        flags = backfill_flags(collector.base_url, tmp_path, logs,
                               extra=_window("--chunk=week", f"--ledger={ledger}",
                                             "--concurrency=4", "--max-rps=300"))  # fmt: skip
        work = tmp_path / "report.work"
        first_chunk: list[int] = []

        def second_chunk_sending() -> bool:
            if not (work / "chunk-0001.done.json").exists():
                return False
            first_chunk[:] = first_chunk or [len(collector.accepted())]
            return len(collector.accepted()) >= first_chunk[0] + 30

        said = _sigterm_when(flags, second_chunk_sending)
        # the chunks not run are in no dead letter: what to do says the same command
        assert (
            f"run the same command with the same --ledger: it goes on at chunk 2 of 3 (its plan is in {work})"
            in said
        )
        first = json.loads((tmp_path / "report.json").read_text())
        assert first["interrupted"] is True
        statuses = [row["status"] for row in first["chunking"]["chunks"]]
        assert statuses[0] == "done" and "stopped" in statuses
        assert (work / "plan.json").exists()
        sent_first = _keys(collector)

        status, report = run_json(flags, now=NOW)
        assert status == 0, report["stopped"]
        assert report["invariant_errors"] == []
        rows = report["chunking"]["chunks"]
        assert rows[0]["status"] == "resumed"
        assert all(r["status"] in ("resumed", "done") for r in rows)
        assert not work.exists()
        keys = _keys(collector)

    expected = _dry_run(logs, tmp_path / "all", *_window("--chunk=none"))["messages_dry_run"]
    assert sum(keys.values()) - len(keys) <= 8, "at most what was in flight at the signal twice"
    assert report["messages_delivered"] + report["messages_skipped"] == expected
    # what the stopped chunk had delivered, the ledger skips when it runs again
    assert report["messages_skipped"] >= sum(sent_first.values()) - first_chunk[0] - 8 > 0


def test_cli_a_second_run_on_a_busy_work_directory_exits_75(logs: Path, tmp_path: Path) -> None:
    flags = backfill_flags("http://unused.invalid", tmp_path, logs,
                           extra=_window("--chunk=week", f"--dry-run={tmp_path / 'dry.jsonl'}"))  # fmt: skip
    with WorkDir(str(tmp_path / "report.work")).locked():
        done = run_cli(*flags)
    assert done.returncode == 75, done.stderr
    assert "another run is using the work directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_dated_input_needs_its_window(logs: Path, tmp_path: Path) -> None:
    done = run_cli(f"--input={logs}", f"--dry-run={tmp_path / 'd.jsonl'}")
    assert done.returncode == 2
    assert "give --date for a nightly run, or --since and --until" in done.stderr
    done = run_cli(f"--input={logs}", f"--input={tmp_path / 'x.jsonl'}", *_window(),
                   f"--dry-run={tmp_path / 'd.jsonl'}")  # fmt: skip
    assert done.returncode == 2
    assert "every --input is partitioned by day" in done.stderr


# ----- undated input: the spill pass -----


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One undated export of 10 days, in two files, with copies of events across days.

    One event in twenty has a copy (its ``event_id``) three days later; for one in forty the
    copy comes first in the files, so the copy, not the original, is the one kept.
    """
    root = tmp_path_factory.mktemp("export")
    end = START + timedelta(days=10)
    records = list(generate_events(1_000, seed=5, start=START, end=end))
    early: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        if i % 20 == 3:
            copy = {**record, "time": parse_time(record["time"]) + 3 * 86_400}
            (early if i % 40 == 3 else late).append(copy)
    write_jsonl(early + records[:500], root / "a.jsonl")
    write_jsonl(records[500:] + late, root / "b.jsonl")
    return root / "*.jsonl"


def test_an_undated_export_in_chunks_adds_up_to_one_run(export: Path, tmp_path: Path) -> None:
    """Copies of one event_id at different times are decided together: one is sent."""
    one, out = tmp_path / "one", tmp_path / "day"
    whole = _dry_run(export, one, "--chunk=none")
    assert whole["events_duplicate"] == 50
    chunked = _dry_run(export, out, "--chunk=day")
    assert chunked["invariant_errors"] == []
    assert chunked["chunking"]["mode"] == "spilled"
    assert len(chunked["chunking"]["chunks"]) == 13, "10 days, and copies 3 days later"
    assert _counts(chunked) == _counts(whole)
    lines = sorted((out / "dry.jsonl").read_text().splitlines())
    assert lines == sorted((one / "dry.jsonl").read_text().splitlines())
    assert sorted((out / "dead.jsonl").read_text().splitlines()) == sorted(
        (one / "dead.jsonl").read_text().splitlines()
    )
    assert not (out / "report.work").exists()


def test_a_stopped_spilled_run_resumes_without_reading_its_input_again(
    export: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with Collector(faults=Faults(latency=0.01)) as collector:
        flags = backfill_flags(collector.base_url, tmp_path, export,
                               extra=("--chunk=day", f"--ledger={ledger}", "--concurrency=4",
                                      "--max-rps=300"))  # fmt: skip
        work = tmp_path / "report.work"
        _sigterm_when(flags, (work / "chunk-0002.done.json").exists)
        spilled = sorted(p.name for p in (work / "spill").iterdir())
        assert spilled, "the spill files are kept for the next run"
        done = run_cli(*flags)
        assert done.returncode == 0, done.stderr
        assert "resuming from" in done.stderr
        assert "reading 2 input files once" not in done.stderr, "the spill is not done again"
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["invariant_errors"] == []
        assert [r["status"] for r in report["chunking"]["chunks"]][:2] == ["resumed", "resumed"]
        keys = _keys(collector)
    assert sum(keys.values()) - len(keys) <= 8, "at most what was in flight at the signal twice"
    assert report["messages_delivered"] + report["messages_skipped"] == report["messages_built"] - (
        report["messages_duplicate"] + report["messages_invalid"]
    )


def test_no_chunk_starts_after_the_deadline_and_the_same_command_goes_on(
    logs: Path, tmp_path: Path
) -> None:
    """A --deadline stops the run at the chunk it falls in; the others are not read.

    Before, a deadline met in the sender processes did not reach the chunk driver, and
    every later chunk was read, parsed and deduplicated only to dead-letter its messages
    (a 3,000,000-event send ran for 630 s past a 150 s deadline).
    """
    ledger = tmp_path / "ledger"
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, logs,
                               extra=_window("--chunk=day", f"--ledger={ledger}"))  # fmt: skip
        # planning and the first chunk's reading take longer than 10 ms
        status, report = run_json([*flags, "--deadline=0.01s"], now=NOW)
        assert status == 4
        assert report["stopped"] == "deadline"
        assert report["invariant_errors"] == []
        assert collector.counts()["arrived"] == 0, "no request after the deadline"
        statuses = [row["status"] for row in report["chunking"]["chunks"]]
        assert len(statuses) == DAYS
        # the chunk the deadline fell in (if it had started) stopped; none after it started
        assert statuses[0] in ("stopped", "not run")
        assert statuses[1:] == ["not run"] * (DAYS - 1)
        assert (tmp_path / "report.work" / "plan.json").exists()

        status, again = run_json(flags, now=NOW)
        assert status == 0, again["stopped"]
        assert again["invariant_errors"] == []
        assert all(row["status"] == "done" for row in again["chunking"]["chunks"])
        expected = _dry_run(logs, tmp_path / "dry", *_window("--chunk=none"))
        assert again["messages_delivered"] == expected["messages_dry_run"]
        assert collector.counts()["accepted"] == expected["messages_dry_run"]


def _undated_copies(folder: Path) -> Path:
    """60,000 records, 15 copies of each of 4,000 events, in 3 files: 12 MB, 2 spill processes."""
    folder.mkdir()
    events = [json.dumps(e) + "\n" for e in generate_events(4000, seed=5, start=START,
                                                          end=START + timedelta(days=DAYS))]  # fmt: skip
    for n in range(3):
        (folder / f"events-{n}.jsonl").write_text("".join(events * 5))
    return folder / "*.jsonl"


def _start_spilling(flags: list[str], spill_folder: Path) -> subprocess.Popen[str]:
    """The command in a process group of its own, once its spill pass has begun."""
    process = subprocess.Popen([sys.executable, "-m", "beaconflow", *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not spill_folder.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the spill pass did not start"
        time.sleep(0.005)
    return process


def test_a_sigterm_in_the_spill_pass_stops_it_at_once_and_the_next_run_does_it_all(
    tmp_path: Path,
) -> None:
    """Systemd's SIGTERM to the whole process group while undated input is spilled by day.

    The pass's processes leave the signal to the run's process, which stops the pass (it
    would otherwise read the whole input first), sends nothing and says so once; the same
    command then reads the input again and sends every message once.
    """
    logs = _undated_copies(tmp_path / "logs")
    ledger = tmp_path / "ledger"
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, logs,
                               extra=("--chunk=week", f"--ledger={ledger}"))  # fmt: skip
        process = _start_spilling(flags, tmp_path / "report.work" / "spill")
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 143, err
        assert "Traceback" not in err
        assert err.count("SIGTERM: stopping") == 1, err
        assert "the spill pass stopped after" in err
        assert "Nothing was sent: run the same command again" in err
        assert collector.accepted() == []
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["interrupted"] is True and report["events_read"] == 0
        assert report["chunking"]["chunks"] == []
        assert not (tmp_path / "report.work").exists(), "the pass's scratch is removed"

        status, again = run_json(flags, now=NOW)
        assert status == 0, again["stopped"]
        assert again["events_read"] == 60_000 and again["invariant_errors"] == []
        unique = again["messages_built"] - again["messages_duplicate"]
        assert again["messages_delivered"] == unique > 4000 and again["messages_skipped"] == 0
        assert sum(_keys(collector).values()) == unique, "each message once, all by this run"


@needs_fork
def test_a_run_killed_in_the_spill_pass_takes_the_pass_s_processes_with_it(
    tmp_path: Path,
) -> None:
    """The OOM killer's SIGKILL to the run's process alone, while it spills with two more.

    They end with it, as soon as it does: they do not read their shares to the end, writing
    scratch files and holding the work directory's lock (the next run would exit 75).
    """
    logs = _undated_copies(tmp_path / "logs")
    flags = backfill_flags("http://unused.invalid", tmp_path, logs,
                           extra=("--chunk=week", f"--dry-run={tmp_path / 'dry.jsonl'}"))  # fmt: skip
    spill_folder = tmp_path / "report.work" / "spill"
    process = _start_spilling(flags, spill_folder)
    deadline = time.monotonic() + 60
    while len(children_of(process.pid)) < 2:  # the pass's processes have started
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.002)
    process.kill()
    process.communicate(timeout=60)
    assert_group_ends(process.pid, 15)
    # a spill file holds its records' bytes as read: whole shares would be 12 MB or more
    spilled = sum(p.stat().st_size for p in spill_folder.glob("part-*/*.spill"))
    read = sum(p.stat().st_size for p in logs.parent.iterdir())
    assert spilled < read / 2, "they stopped with the run, not at the end of their shares"
    status, report = run_json(flags, now=NOW)
    assert status == 0, report["stopped"]
    assert report["events_read"] == 60_000
