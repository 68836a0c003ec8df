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
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
        process = _start(_flags(events, tmp_path / f"after-{delay}"))
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
