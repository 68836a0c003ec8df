"""Shared fixtures: a sandbox collector on loopback, started by the tests themselves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from beaconflow.pipelines.backfill import run
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector
from tests.fs_faults import read_only_dir, small_disk  # noqa: F401 - fixtures for every module

KONTAGENT_KEY = "feedfacefeedfacefeedfacefeedface"
KONTAGENT_SECRET = "kontagent-secret-for-tests"
KISSMETRICS_KEY = "kissmetrics-key-for-tests"
#: The API key in every URL sent to the ``server`` fixture: it must never come out of a sender.
KEY = "SECRETKEY123"


@pytest.fixture
def server() -> Iterator[Collector]:
    """The sender tests' service: a collector playing scripted answers, one per test.

    A request's kind in its path chooses the answer (``ok``, ``flaky``, ``throttle``, ...:
    see beaconflow/sandbox/collector.py); :func:`kontagent_url` and :func:`kissmetrics_url`
    build such requests.
    """
    with Collector(scripted=True) as running:
        yield running


def kontagent_url(server: Collector, kind: str, token: str, **params: str | int) -> str:
    """A Kontagent-style URL of the scripted ``kind``, named ``token``, carrying :data:`KEY`."""
    query = urlencode({"token": token, **params})
    return f"{server.base_url}/api/v1/{KEY}/{kind}/?{query}"


def kissmetrics_url(server: Collector, kind: str, token: str, **params: str | int) -> str:
    """A KISSmetrics-style URL of the scripted ``kind``, named ``token``, carrying :data:`KEY`."""
    query = urlencode({"_k": KEY, "token": token, **params})
    return f"{server.base_url}/{kind}?{query}"


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A collector that knows the test keys and verifies Kontagent signatures."""
    with Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
    ) as running:
        yield running


def backfill_flags(
    base_url: str, out: Path, *inputs: Path, extra: tuple[str, ...] = ()
) -> list[str]:
    """Flags of a run sending both destinations to ``base_url``, its outputs under ``out``."""
    return [
        *(f"--input={p}" for p in inputs),
        f"--kontagent-api-key={KONTAGENT_KEY}",
        f"--kontagent-secret={KONTAGENT_SECRET}",
        f"--kontagent-url={base_url}",
        f"--kissmetrics-api-key={KISSMETRICS_KEY}",
        f"--kissmetrics-url={base_url}",
        f"--report={out / 'report.json'}",
        f"--dead-letter={out / 'dead.jsonl'}",
        *extra,
    ]


def read_dead_letter(out: Path) -> list[dict[str, Any]]:
    """The entries of the dead letter written under ``out``."""
    text = (out / "dead.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The backfill run as a user runs it: a separate process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "beaconflow", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )


def run_json(argv: list[str], *, now: float) -> tuple[int, dict[str, Any]]:
    """Run the backfill in this process: its status, and its report as report.json holds it.

    The tests read the report's public keys, as a tool reading report.json does.
    """
    status, report = run(argv, now=now)
    return status, report.to_json()


def june_events(directory: Path, events: int, *, seed: int, days: int) -> Path:
    """``events.jsonl`` in ``directory``: sample game events of the first ``days`` of June 2025."""
    from datetime import UTC, datetime, timedelta

    start = datetime(2025, 6, 1, tzinfo=UTC)
    path = directory / "events.jsonl"
    write_jsonl(
        generate_events(events, seed=seed, start=start, end=start + timedelta(days=days)), path
    )
    return path


def debian_program(path: Path, package: str, variable: str) -> Path:
    """A program some tests run, from a Debian package: its path.

    Skips the test without it, or fails it when CI requires it (``variable=1``, set by
    .ci/run, which installs ``package``).
    """
    if os.access(path, os.X_OK):
        return path
    missing = f"{path} is missing (apt-get install {package})"
    if os.environ.get(variable) == "1":
        pytest.fail(f"{missing} but {variable}=1")
    pytest.skip(missing)


def _has_ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 (some containers have no IPv6 on lo)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


#: Marks a test that listens on ::1: skipped, with the reason, where the machine cannot.
needs_ipv6 = pytest.mark.skipif(
    not _has_ipv6_loopback(), reason="this machine cannot bind ::1 (no IPv6 loopback on lo)"
)

#: Marks a test of processes beaconflow forks (the parse processes, the spill pass).
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="this system cannot fork")


def children_of(pid: int) -> set[int]:
    """The child processes of process ``pid`` (Linux's ``/proc``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children}


def group_alive(group: int) -> bool:
    """Whether any process of process group ``group`` still runs (zombies do not count)."""
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it has just exited
        if fields[0] != "Z" and int(fields[2]) == group:
            return True
    return False


def assert_group_ends(group: int, seconds: float = 10.0) -> None:
    """Wait until no process of ``group`` runs; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while group_alive(group):
        assert time.monotonic() < deadline, f"a process of group {group} is still alive"
        time.sleep(0.05)


#: The prologue of :func:`run_signalled_at_birth`'s script.
_SIGNALLED_AT_BIRTH = """
import os, signal
_PARENT = os.getpid()
def _handled(signum, frame):
    os.write(2, b"handled in the parent\\n" if os.getpid() == _PARENT else b"handled in a child\\n")
signal.signal(signal.SIGTERM, _handled)
os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
"""


def run_signalled_at_birth(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python where every forked child gets a SIGTERM as it is born.

    The SIGTERM comes in the fork's own bookkeeping, before the child's code runs: the moment
    a process group's signal can catch a child its run has just started. The script's
    process handles SIGTERM by writing "handled in the parent" (or "handled in a child",
    when a child ran its parent's handler) on stderr.
    """
    return subprocess.run([sys.executable, "-c", _SIGNALLED_AT_BIRTH + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
