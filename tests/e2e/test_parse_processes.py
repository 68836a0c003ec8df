"""Whole runs whose parse step runs in forked processes (``beaconflow.transforms.parse_pool``).

A local run forks one parse process per core for an input of a megabyte or more. These runs
check that it changes nothing a user sees (the same deliveries, report and dead letter, in
the same order, as a run parsing in one process) and that the processes behave as the
run's other processes do under a scheduler: a SIGTERM to the whole process group while
they parse stops the run gracefully (nothing sent, all of it in the dead letter as not
attempted, the next run sends it), and a SIGKILL of the run leaves none of them behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from beaconflow.pipelines import backfill
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector
from beaconflow.transforms import parse_pool
from tests.conftest import (
    assert_group_ends,
    backfill_flags,
    children_of,
    needs_fork,
    read_dead_letter,
    run_json,
)

NOW = 1_800_000_000

pytestmark = needs_fork


def _events(path: Path, n: int, *, bad: bool = True) -> Path:
    """``n`` sample events of June 2025 (with a few bad lines and copies when ``bad``)."""
    start = datetime(2025, 6, 1, tzinfo=UTC)
    events = list(generate_events(n, seed=3, start=start, end=datetime(2025, 6, 5, tzinfo=UTC)))
    write_jsonl(events, path)
    if bad:
        with path.open("a", encoding="utf-8") as out:
            out.write("{not json\n")
            out.write(json.dumps(events[7]) + "\n")  # a copy
            out.write(json.dumps({"time": "soon", "user_id": 1, "event": "apr"}) + "\n")
    return path


def _counted_run(
    collector: Collector, out: Path, source: Path, processes: int, marks: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """A run in this process parsing in ``processes`` processes (0: in the pipeline's own)."""
    work: Callable[..., None] = parse_pool._work

    def marked(number: int, *args: Any) -> None:
        (marks / f"parsed-by-{number}").touch()
        work(number, *args)

    monkeypatch.setattr(parse_pool, "_work", marked)
    monkeypatch.setattr(backfill, "parse_processes", lambda files: processes)
    return run_json(backfill_flags(collector.base_url, out, source), now=NOW)


def test_a_run_parsed_in_processes_is_the_run_parsed_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _events(tmp_path / "events.jsonl", 1500)
    monkeypatch.setattr(parse_pool, "BLOCK", 16)  # many blocks for each process
    outcomes = {}
    for processes in (0, 2):
        marks = tmp_path / f"marks-{processes}"
        marks.mkdir()
        with Collector() as collector:
            out = tmp_path / f"out-{processes}"
            status, report = _counted_run(collector, out, source, processes, marks, monkeypatch)
            assert status == 3, report  # the bad lines are in the dead letter
            assert report["invariant_errors"] == []
            sent = Counter(r.key for r in collector.accepted())
        assert sorted(p.name for p in marks.iterdir()) == [
            f"parsed-by-{n}" for n in range(processes)
        ]
        counts = {
            k: v
            for k, v in report.items()
            if k.startswith(("events_", "messages_")) and k != "messages_per_second"
        }
        outcomes[processes] = (counts, read_dead_letter(out), sent)
    one, many = outcomes[0], outcomes[2]
    assert many[0] == one[0]
    assert many[0]["events_invalid"] == 2 and many[0]["events_duplicate"] == 1
    assert many[1] == one[1], "the same dead letter, in the same order"
    assert many[2] == one[2] and many[0]["messages_delivered"] == many[2].total()


def _parse_processes_of(run: int) -> list[int]:
    """The forked children of process ``run`` (the same command line: the parse processes)."""
    try:
        command = Path(f"/proc/{run}/cmdline").read_bytes()
        children = children_of(run)
    except OSError:
        return []
    found = []
    for child in children:
        with contextlib.suppress(OSError):  # it has just exited
            if Path(f"/proc/{child}/cmdline").read_bytes() == command:
                found.append(child)
    return found


def _start_when_parsing(flags: list[str]) -> subprocess.Popen[str]:
    """The command in a process group of its own, once its parse processes are running."""
    process = subprocess.Popen([sys.executable, "-m", "beaconflow", *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not _parse_processes_of(process.pid):
        assert process.poll() is None, f"the run ended before it parsed: {process.stderr}"
        assert time.monotonic() < deadline, "no parse process started"
        time.sleep(0.01)
    return process


@pytest.fixture(scope="module")
def large_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough events (about 4 MB) for the parse processes to run about a second."""
    path = _events(tmp_path_factory.mktemp("logs") / "events.jsonl", 20_000, bad=False)
    assert path.stat().st_size > 3 * parse_pool.MIN_BYTES
    return path


def test_a_sigterm_while_parsing_stops_the_run_gracefully_and_the_next_run_sends_it_all(
    large_input: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, large_input,
                               extra=(f"--ledger={ledger}",))  # fmt: skip
        process = _start_when_parsing(flags)
        os.killpg(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=300)
        assert process.returncode == 143, err
        assert "Traceback" not in err
        assert "STOPPED EARLY: interrupted by SIGTERM" in out
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["invariant_errors"] == []
        assert report["events_read"] == 20_000
        # nothing can be sent before the parse ends: every message is in the dead letter
        assert collector.accepted() == [] and report["messages_delivered"] == 0
        unique = report["messages_built"] - report["messages_duplicate"]
        assert report["messages_not_attempted"] == unique > 0
        status, again = run_json(flags, now=NOW)
        assert status == 0 and again["invariant_errors"] == []
        assert again["messages_delivered"] == len(collector.accepted()) == unique
    assert_group_ends(process.pid)


def test_a_killed_run_leaves_no_parse_process_behind(large_input: Path, tmp_path: Path) -> None:
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, large_input)
        process = _start_when_parsing(flags)
        process.kill()
        process.communicate(timeout=60)
        assert_group_ends(process.pid, 15)
