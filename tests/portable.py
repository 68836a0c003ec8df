"""Beam's portable deployment shape on one machine, for tests: a job service and a worker pool.

:func:`portable_services` starts ``local_job_service_main`` (the Job API, running jobs with
FnApiRunner) and ``worker_pool_main`` (an external SDK worker pool that starts one ``python``
process per SDK worker) as separate processes, waits until both listen, and always stops
them: each runs in its own session and its whole process group is ended and reaped at exit,
even when the test fails. Pipelines reach them with::

    --runner=PortableRunner --job_endpoint=<job_endpoint>
    --environment_type=EXTERNAL --environment_config=<environment_config>

:class:`ChildWatch` records which processes a process starts while a run is going on (Linux
``/proc``), to see how many SDK workers a runner really used.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from beaconflow.sandbox.collector import unused_port

#: The directory of the Python running the tests (the venv's bin): first on the services' PATH,
#: since the worker pool starts its SDK workers as plain ``python``.
PYTHON_BIN = str(Path(sys.executable).parent)


free_port = unused_port


def service_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the tests with the venv's bin first on PATH, plus ``extra``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([PYTHON_BIN, env.get("PATH", "")])
    env.update(extra or {})
    return env


@dataclass
class PortableServices:
    """A running job service and worker pool, and where their logs go."""

    job_endpoint: str
    environment_config: str
    staging_dir: Path
    job_service: subprocess.Popen[bytes]
    worker_pool: subprocess.Popen[bytes]
    logs: Path

    def log_tail(self, lines: int = 40) -> str:
        """The end of both services' logs, for assertion messages."""
        parts = []
        for name in ("job-service.log", "worker-pool.log"):
            path = self.logs / name
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)


def _start(args: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group: its SDK workers end with it
        )


def _wait_listening(
    process: subprocess.Popen[bytes], port: int, log: Path, deadline: float
) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode} before listening:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{process.args!r} is not listening on port {port}")
        time.sleep(0.1)


def _exited(pid: int, grace: float) -> bool:
    """Whether ``pid`` (a child) exits within ``grace`` seconds; it is left unreaped."""
    deadline = time.monotonic() + grace
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the process and its process group, then reap it.

    SIGINT first: the worker pool then stops its SDK workers and reaps them itself; SIGTERM,
    then SIGKILL, if it does not exit. The leader stays a zombie until the end, so its group
    id cannot be reused by another process when what is left of the group is killed.
    """
    if process.returncode is not None:
        return  # reaped already (it died while starting, before any SDK worker)
    if not _exited(process.pid, 0):
        for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            if _exited(process.pid, grace):
                break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def portable_services(
    workdir: Path, *, worker_env: dict[str, str] | None = None, timeout: float = 90.0
) -> Iterator[PortableServices]:
    """Start a job service and an external worker pool with ``workdir`` as their cwd.

    ``worker_env`` is added to the worker pool's environment, which its SDK workers inherit
    (e.g. ``PYTHONPATH``). Both are stopped, with their SDK workers, when the block ends.
    """
    logs = workdir / "logs"
    staging = workdir / "staging"
    logs.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    job_port, pool_port = free_port(), free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        job_service = _start(
            [
                "apache_beam.runners.portability.local_job_service_main",
                f"--port={job_port}",
                f"--staging_dir={staging}",
            ],
            logs / "job-service.log",
            workdir,
            service_env(),
        )
        started.append(job_service)
        worker_pool = _start(
            ["apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"],
            logs / "worker-pool.log",
            workdir,
            service_env(worker_env),
        )
        started.append(worker_pool)
        deadline = time.monotonic() + timeout
        _wait_listening(job_service, job_port, logs / "job-service.log", deadline)
        _wait_listening(worker_pool, pool_port, logs / "worker-pool.log", deadline)
        yield PortableServices(
            job_endpoint=f"localhost:{job_port}",
            environment_config=f"localhost:{pool_port}",
            staging_dir=staging,
            job_service=job_service,
            worker_pool=worker_pool,
            logs=logs,
        )
    finally:
        for process in reversed(started):
            _stop(process)


class ChildWatch:
    """Records the children of ``parent`` whose command line contains ``marker``, while open.

    Polls ``/proc`` every ``interval`` seconds on a thread; :attr:`pids` holds every one seen.
    """

    def __init__(self, parent: int, marker: str, interval: float = 0.05) -> None:
        self.parent = parent
        self.marker = marker.encode()
        self.interval = interval
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="child-watch", daemon=True)

    def __enter__(self) -> ChildWatch:
        self._scan()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._scan()

    def _scan(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self.pids:
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses
                ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
                if (
                    ppid == self.parent
                    and self.marker in Path(f"/proc/{entry}/cmdline").read_bytes()
                ):
                    self.pids.add(int(entry))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
