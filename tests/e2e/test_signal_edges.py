"""Signals at the edges of a run: during the command's start-up, and once its status is decided.

Schedulers (systemd, Kubernetes, Airflow) send SIGTERM to the whole process group at any
moment, and people press Ctrl-C. In the middle of a run the first stops it gracefully
(tests/e2e/test_ledger_runs.py, test_chunked_runs.py, test_parse_processes.py); these are
the two edges a trial found wanting. During the second or so of start-up (Beam's import),
Ctrl-C printed a traceback from inside an import and SIGTERM killed the command without a
word. After the run's status was decided, a signal still said "stopping", or killed the
command with 143 under a summary that said it was done.

The command is a real process in a process group of its own. Its start-up is recognised by
its SIGTERM handler being in place (``SigCgt`` in ``/proc/<pid>/status``): Python installs
none by itself, the entry point (beaconflow/command.py) installs it before it imports Beam.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from beaconflow.samples.gamelog import generate_events, write_jsonl
from tests.conftest import june_events

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status (Linux)"
)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return june_events(tmp_path_factory.mktemp("logs"), 300, seed=9, days=2)


def _flags(events: Path, out: Path) -> list[str]:
    return [f"--input={events}", "--sandbox", f"--report={out / 'report.json'}",
            f"--dead-letter={out / 'dead.jsonl'}"]  # fmt: skip


def _start(flags: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "beaconflow", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _in_start_up(process: subprocess.Popen[str]) -> None:
    """Wait until the command handles SIGTERM: its start-up has begun (Beam's import is next)."""
    deadline = time.monotonic() + 60
    while not _catches_sigterm(process.pid):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command never handled SIGTERM"
        time.sleep(0.001)


@pytest.mark.parametrize(("signum", "times"), [(signal.SIGTERM, 1), (signal.SIGINT, 1),
                                               (signal.SIGTERM, 2)])  # fmt: skip
def test_a_signal_during_start_up_ends_the_command_with_one_line_and_nothing_done(
    events: Path, tmp_path: Path, signum: int, times: int
) -> None:
    process = _start(_flags(events, tmp_path))
    _in_start_up(process)
    for _ in range(times):  # a second one ends it at once, in the middle of the import
        os.killpg(process.pid, signum)
        time.sleep(0.01)
    out, err = process.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum, err
    assert err == f"beaconflow: interrupted by {name} before the run started: nothing was done\n"
    assert out == ""
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "dead.jsonl").exists()


def test_a_signal_once_the_run_has_ended_leaves_its_status_alone(
    events: Path, tmp_path: Path
) -> None:
    """SIGTERM as soon as report.json is written: the run's status is decided already."""
    report = tmp_path / "report.json"
    process = _start(_flags(events, tmp_path))
    deadline = time.monotonic() + 120
    while not report.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no report.json"
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    status = json.loads(report.read_text())["exit_status"]
    assert process.returncode == status == 0, err
    assert "stopping" not in err and "Traceback" not in err
    assert "interrupted" not in out
    # the signal came either while the report was written or once the command was exiting
    ended = "beaconflow: SIGTERM: the run has ended; it exits with its own status"
    assert err.count(ended) <= 1


def test_two_signals_at_any_moment_end_the_command_with_143(events: Path, tmp_path: Path) -> None:
    """The second of two quick SIGTERMs stops the run at once, whenever they come.

    Sent from start-up to the run's first steps: before the run it ends with the start-up
    line, in it with the line of a run stopped before its report. A second signal's
    KeyboardInterrupt raised inside CPython's ``exec`` of a string (dataclasses do it) made
    the command die of SIGINT at exit (-2) before beaconflow undid that (stop.py).
    """
    for delay in (0.0, 0.3, 0.6, 0.9, 1.2, 1.5):
        # capped, the run sends for about 12 s: the latest signals still find it sending
        # (uncapped, it could be over before 1.5 s after its start-up)
        flags = [*_flags(events, tmp_path / f"after-{delay}"), "--max-rps=50"]
        process = _start(flags)
        _in_start_up(process)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGTERM)
        time.sleep(0.01)
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 143, (delay, err)
        assert "Traceback" not in err, err
        last = err.splitlines()[-1]
        assert "interrupted by SIGTERM before the run" in last or "stopped early" in last, err


def test_the_entry_point_notes_signals_before_anything_heavy_is_imported() -> None:
    code = (
        "import sys, signal; import beaconflow.command as c; "
        "print(sorted(m for m in ('apache_beam', 'aiohttp', 'pyarrow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.stdout.strip() == "[]", done.stderr


def _lines_of(stream: IO[str]) -> list[str]:
    """The lines ``stream`` gives, read on a thread of their own as they come."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(stream), daemon=True).start()
    return lines


def _wait_for(lines: list[str], text: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not any(text in line for line in lines):
        assert process.poll() is None, lines
        assert time.monotonic() < deadline, lines
        time.sleep(0.005)


def test_a_third_signal_while_metrics_are_pushed_keeps_the_stopped_run_s_word(
    events: Path, tmp_path: Path
) -> None:
    """Two SIGTERMs stop the run at once; a third, while a Pushgateway hangs, changes nothing."""
    with socket.socket() as gateway:  # accepts, and never answers
        gateway.bind(("127.0.0.1", 0))
        gateway.listen(8)
        port = gateway.getsockname()[1]
        # sending slowly: the second signal comes while the first lets requests finish
        flags = [*_flags(events, tmp_path), f"--pushgateway=http://127.0.0.1:{port}",
                 "--max-rps=50"]  # fmt: skip
        process = _start(flags)
        assert process.stderr is not None
        err = _lines_of(process.stderr)
        _wait_for(err, "SANDBOX MODE", process)  # the run has begun
        os.killpg(process.pid, signal.SIGTERM)
        _wait_for(err, "SIGTERM: stopping", process)
        os.killpg(process.pid, signal.SIGTERM)
        _wait_for(err, "before the run could write its report", process)
        os.killpg(process.pid, signal.SIGTERM)  # while the push waits for its timeout
        process.wait(timeout=120)
    said = "".join(err)
    assert process.returncode == 143, said
    assert "before the run started" not in said and "Traceback" not in said
    assert "beaconflow: SIGTERM: the run has ended; it exits with its own status" in said


def test_a_subcommand_stopped_by_sigterm_says_so(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    write_jsonl(generate_events(20_000, seed=4), source)
    process = subprocess.Popen(
        [sys.executable, "-m", "beaconflow", "mapping", "explain", "--mapping=segment",
         f"--input={source}", "--limit=20000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    process.stdout.readline()  # it explains: past its start-up
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.splitlines()[-1] == "beaconflow: interrupted by SIGTERM", err


def test_a_signal_ignored_by_whoever_started_the_command_stays_ignored(
    events: Path, tmp_path: Path
) -> None:
    """A background job of a script (``cmd &``) starts with SIGINT ignored: it keeps it so."""
    command = [sys.executable, "-m", "beaconflow", *_flags(events, tmp_path)]
    process = subprocess.Popen(["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    assert process.stderr is not None
    err = _lines_of(process.stderr)
    _in_start_up(process)
    os.killpg(process.pid, signal.SIGINT)  # in its start-up
    _wait_for(err, "SANDBOX MODE", process)
    os.killpg(process.pid, signal.SIGINT)  # in its run
    process.wait(timeout=120)
    said = "".join(err)
    assert process.returncode == 0, said
    assert "SIGINT" not in said
