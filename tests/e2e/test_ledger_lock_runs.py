"""One run per ledger and endpoint, with real processes: a second run exits 75 and sends nothing.

The first run is held mid-run by a collector whose answers wait at a gate the test opens,
so that it surely holds its locks while the second starts; nothing depends on timing. The
same on an ``s3://`` ledger, whose lock is a lease object, on moto's S3 server on loopback.
The lock's rules themselves are tested in tests/delivery/test_ledger_lock.py and
test_ledger_lease.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from beaconflow.delivery.ledger_identity import endpoint_fingerprint
from beaconflow.delivery.ledger_lease import lease_name
from beaconflow.delivery.ledger_lock import Holder, iso, lock_path
from beaconflow.model.message import Endpoint
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector, Faults
from tests.conftest import (
    KISSMETRICS_KEY,
    KONTAGENT_KEY,
    KONTAGENT_SECRET,
    backfill_flags,
    children_of,
    run_cli,
)
from tests.fakes.s3 import moto_s3

HOST = socket.gethostname()


class Gate:
    """The collector's "latency": every answer waits until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    async def sleep(self, seconds: float) -> None:
        while not self.opened.is_set():
            await asyncio.sleep(0.01)


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.opened.set()


def _gated_collector(gate: Gate) -> Collector:
    return Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
        faults=Faults(latency=0.001),
        sleep=gate.sleep,
    )


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datetime import UTC, datetime

    path = tmp_path_factory.mktemp("logs") / "events.jsonl"
    start = datetime(2025, 6, 1, tzinfo=UTC)
    write_jsonl(
        generate_events(60, seed=3, start=start, end=datetime(2025, 6, 2, tzinfo=UTC)), path
    )
    return path


def _flags(
    url: str, out: Path, events: Path, ledger: Path | str, *extra: str, only: str = ""
) -> list[str]:
    """A run to ``url`` with its outputs under ``out``; ``only``: that destination alone."""
    flags = backfill_flags(url, out, events, extra=(f"--ledger={ledger}", *extra))
    if only == "kontagent":
        flags = [f for f in flags if not f.startswith("--kissmetrics-api-key=")]
    elif only == "kissmetrics":
        flags = [
            f for f in flags if not f.startswith(("--kontagent-api-key=", "--kontagent-secret="))
        ]
    return flags


def _fingerprints(url: str) -> list[str]:
    return sorted(
        endpoint_fingerprint(e)
        for e in (
            Endpoint("kontagent", url, KONTAGENT_KEY, KONTAGENT_SECRET),
            Endpoint("kissmetrics", url, KISSMETRICS_KEY),
        )
    )


def _start(flags: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "beaconflow", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_mid_run(process: subprocess.Popen[str], collector: Collector) -> None:
    """Until the run's first request waits at the gate: it holds its locks then."""
    deadline = time.monotonic() + 120
    while not collector.counts().get("arrived"):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.02)


def _holders_of(path: str) -> set[int]:
    """The processes that have ``path`` open (any of their file descriptors)."""
    pids = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        if path in links:
            pids.add(int(fd_dir.parent.name))
    return pids


def _named(path: str) -> int | None:
    """The process id the lock file at ``path`` names, None when there is none (yet)."""
    try:
        holder = Holder.from_bytes(Path(path).read_bytes())
    except FileNotFoundError:
        return None
    return holder.pid if holder else None


@pytest.mark.parametrize("processes", [0, 2])
def test_a_second_run_for_the_same_endpoint_exits_75_at_once_and_sends_nothing(
    events_file: Path, tmp_path: Path, gate: Gate, processes: int
) -> None:
    ledger = tmp_path / "ledger"
    second_events = tmp_path / "second.jsonl"
    second_events.write_text(
        "".join(
            json.dumps({"time": 1_749_000_000 + i, "user_id": 777_000 + i, "event": "second"})
            + "\n"
            for i in range(5)
        )
    )
    with _gated_collector(gate) as collector:
        url = collector.base_url
        first = _start(
            _flags(url, tmp_path / "first", events_file, ledger,
                   "--timeout=300", f"--send-processes={processes}")
        )  # fmt: skip
        try:
            _wait_mid_run(first, collector)
            fingerprints = _fingerprints(url)
            lock = lock_path(str(ledger), fingerprints[0])
            holder = Holder.from_bytes(Path(lock).read_bytes())
            assert holder is not None and (holder.host, holder.pid) == (HOST, first.pid)
            # the run's own process holds the lock file; its sender processes do not
            assert _holders_of(lock) == {first.pid}
            if processes:
                assert len(children_of(first.pid)) >= processes

            second = run_cli(*_flags(url, tmp_path / "second", second_events, ledger))
            assert second.returncode == 75, second.stderr
            assert second.stderr == (
                f"beaconflow: the ledger {ledger} is in use for endpoint {fingerprints[0]} by "
                f"host {HOST} pid {first.pid} since {iso(holder.since)}; nothing was done, try "
                "again later\n"
            )
            assert second.stdout == ""
            assert not (tmp_path / "second").exists(), "no report, no dead letter"
        finally:
            gate.opened.set()
            _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        report = json.loads((tmp_path / "first" / "report.json").read_text())
        # everything that reached the collector is the first run's
        assert collector.counts()["arrived"] == len(collector.accepted())
        assert len(collector.accepted()) == report["messages_delivered"] > 0
        assert not any(r.param_map().get("_n") == "second" for r in collector.accepted())
    # released at the end: no lock file is left, and the ledger is free again
    assert not list(ledger.glob("lock-*"))


def test_runs_for_two_endpoints_of_one_ledger_both_proceed(
    events_file: Path, tmp_path: Path, gate: Gate
) -> None:
    ledger = tmp_path / "ledger"
    with _gated_collector(gate) as held, Collector(kissmetrics_key=KISSMETRICS_KEY) as free:
        first = _start(
            _flags(held.base_url, tmp_path / "a", events_file, ledger, "--timeout=300",
                   only="kontagent")
        )  # fmt: skip
        try:
            _wait_mid_run(first, held)
            second = run_cli(
                *_flags(free.base_url, tmp_path / "b", events_file, ledger, only="kissmetrics")
            )
            assert second.returncode == 0, second.stderr
            assert "in use" not in second.stderr and "taking over" not in second.stderr
            report = json.loads((tmp_path / "b" / "report.json").read_text())
            assert report["messages_delivered"] == len(free.accepted()) > 0
            assert first.poll() is None, "the first run was still held at the gate"
        finally:
            gate.opened.set()
            _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert {r.destination for r in held.accepted()} == {"kontagent"}


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_lock_naming_a_dead_process_is_taken_over_saying_so(
    collector: Collector, events_file: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    pid = _dead_pid()
    now = time.time()
    for fingerprint in _fingerprints(collector.base_url):
        Path(lock_path(str(ledger), fingerprint)).write_bytes(
            Holder(HOST, pid, now - 60, now).to_bytes()
        )
    done = run_cli(*_flags(collector.base_url, tmp_path, events_file, ledger))
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "taking over" in line]
    assert len(notes) == 2
    for note in notes:
        assert note.startswith("beaconflow: taking over the ledger's lock of endpoint ")
        assert note.endswith(
            f" from host {HOST} pid {pid} since {iso(now - 60)}: its process no longer exists"
        )
    assert len(collector.accepted()) > 0
    assert not list(ledger.glob("lock-*"))


_FROZEN_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, sys.argv[2].encode())
print("held", flush=True)
time.sleep(300)
"""


def test_a_lock_with_an_old_heartbeat_is_taken_over_while_its_holder_still_holds_it(
    collector: Collector, events_file: Path, tmp_path: Path
) -> None:
    """A frozen holder (or a host gone while its NFS lock lingers) keeps its OS lock."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    fingerprint = _fingerprints(collector.base_url)[0]
    path = lock_path(str(ledger), fingerprint)
    old = time.time() - 600
    stale = Holder("elsewhere", 4242, old - 3600, old).to_bytes().decode()
    frozen = subprocess.Popen(
        [sys.executable, "-c", _FROZEN_HOLDER, path, stale], stdout=subprocess.PIPE, text=True
    )
    try:
        assert frozen.stdout is not None and frozen.stdout.readline() == "held\n"
        # the OS lock is really held
        with open(path, "rb") as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = run_cli(*_flags(collector.base_url, tmp_path, events_file, ledger))
    finally:
        frozen.kill()
        frozen.wait()
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if "taking over" in line]
    assert notes == [
        f"beaconflow: taking over the ledger's lock of endpoint {fingerprint} from host "
        f"elsewhere pid 4242 since {iso(old - 3600)}: its heartbeat is "
        f"{notes[0].split('heartbeat is ')[1].split(' ')[0]} s old (limit 300 s)"
    ]
    assert 600 <= int(notes[0].split("heartbeat is ")[1].split(" ")[0]) < 900
    assert len(collector.accepted()) > 0


@pytest.mark.parametrize("processes", [0, 2])
def test_a_run_killed_with_sigkill_leaves_a_lock_the_next_run_takes_over(
    events_file: Path, tmp_path: Path, gate: Gate, processes: int
) -> None:
    ledger = tmp_path / "ledger"
    with _gated_collector(gate) as collector:
        flags = _flags(
            collector.base_url, tmp_path, events_file, ledger, f"--send-processes={processes}"
        )
        first = _start([*flags, "--timeout=300"])
        _wait_mid_run(first, collector)
        senders = children_of(first.pid)
        assert len(senders) == processes
        # frozen, the senders cannot end when their pipe closes (they would, after a grace):
        # whatever they inherited stays open while the next run takes the locks
        for pid in senders:
            os.kill(pid, signal.SIGSTOP)
        os.kill(first.pid, signal.SIGKILL)  # the run's process alone: its senders live on
        # waited for, not read: the frozen senders inherited its stdout and stderr, which
        # would give no end of file while they live (communicate() waited forever)
        first.wait()
        fingerprints = _fingerprints(collector.base_url)
        locks = [lock_path(str(ledger), f) for f in fingerprints]
        assert all(os.path.exists(path) for path in locks)
        second = _start(flags)
        try:
            # the next run holds both locks while the killed run's senders still wait at the
            # gate, their requests in flight
            deadline = time.monotonic() + 120
            while not all(_named(path) == second.pid for path in locks):
                assert second.poll() is None, second.communicate()
                assert time.monotonic() < deadline, "the next run did not take the locks"
                time.sleep(0.02)
            assert all(Path(f"/proc/{pid}").exists() for pid in senders)
        finally:
            for pid in senders:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            gate.opened.set()
            _, err = second.communicate(timeout=120)
            for pipe in (first.stdout, first.stderr):
                if pipe is not None:
                    pipe.close()
        assert second.returncode == 0, err
        notes = [line for line in err.splitlines() if "taking over" in line]
        assert len(notes) == 2
        assert all(n.endswith(f"pid {first.pid} since {n.split(' since ')[1]}") for n in notes)
        assert all(n.endswith(": its process no longer exists") for n in notes)
        # taken with the OS lock, which the killed run's sender processes never held
        assert not list(ledger.glob("*.break"))
    assert not list(ledger.glob("lock-*"))


class HoldFirst:
    """The collector's "latency": the first ``held`` requests wait, then are refused (503).

    They wait until :meth:`release`, and are never accepted; every later request is answered
    at once. The held ones are a run's requests in flight when it is frozen; refused, they cannot be
    delivered twice, and every message the collector accepts twice was sent twice.
    """

    def __init__(self, held: int) -> None:
        self.held = held
        self.arrived = 0
        self.refused = 0
        self.released = threading.Event()

    async def sleep(self, seconds: float) -> None:
        self.arrived += 1  # on the collector's loop: one request at a time
        if self.arrived > self.held:
            return
        while not self.released.is_set():
            await asyncio.sleep(0.01)
        self.refused += 1
        raise web.HTTPServiceUnavailable(text="held while the sender was frozen")

    def release(self) -> None:
        self.released.set()


def _until(what: str, done: Callable[[], bool], *runs: subprocess.Popen[str]) -> None:
    """Poll ``done`` (generously); fail naming ``what`` when it never is, or a run ended."""
    deadline = time.monotonic() + 120
    while not done():
        for run in runs:
            assert run.poll() is None, (what, run.communicate())
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def _holder(path: str) -> Holder | None:
    try:
        return Holder.from_bytes(Path(path).read_bytes())
    except FileNotFoundError:
        return None


#: The locks' limits of the runs below: a heartbeat older than 2 s is stale (not 300 s).
STALE = 2
_LIMITS = {
    "BEACONFLOW_LEDGER_LOCK_STALE_SECONDS": str(STALE),
    "BEACONFLOW_LEDGER_LOCK_HEARTBEAT_SECONDS": "0.2",
}


@pytest.mark.parametrize("processes", [0, 2])
def test_a_frozen_run_whose_lock_was_taken_over_stops_when_it_wakes_and_sends_nothing_twice(
    events_file: Path, tmp_path: Path, processes: int
) -> None:
    """A frozen run that wakes to find its lock taken over stops, and sends nothing more.

    Run A is frozen mid-send (SIGSTOP to its process group: a paused VM, a suspended
    laptop) while its requests are in flight; its heartbeat goes stale; run B takes the lock
    over and sends everything; the collector answers A's requests while A is still frozen,
    so that A wakes to free sending slots and a queue of messages B has sent. A must send
    none of them: it stops (exit 4, its report says the lock was taken over), and the ledger
    holds every message once.
    """
    concurrency = 3
    # --fixed-concurrency: A keeps exactly that many requests in flight (shared among its
    # sender processes), so when they all wait at the gate none of A's is on its way
    gate = HoldFirst(held=concurrency)
    env = {**os.environ, **_LIMITS}
    ledger = tmp_path / "ledger"
    with Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
        faults=Faults(latency=0.001),
        sleep=gate.sleep,
    ) as collector:
        url = collector.base_url
        locks = [lock_path(str(ledger), f) for f in _fingerprints(url)]

        def flags(out: str) -> list[str]:
            return _flags(url, tmp_path / out, events_file, ledger, "--timeout=300",
                          f"--concurrency={concurrency}", "--fixed-concurrency",
                          f"--send-processes={processes}")  # fmt: skip

        first = subprocess.Popen(
            [sys.executable, "-m", "beaconflow", *flags("a")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True,
        )  # fmt: skip
        try:
            # every sending slot of A holds a request at the gate: A is mid-send
            _until("A's requests wait at the gate", lambda: gate.arrived == gate.held, first)
            assert all(_named(path) == first.pid for path in locks)
            os.killpg(first.pid, signal.SIGSTOP)  # A and its sender processes freeze
            held = [_holder(path) for path in locks]
            assert all(h is not None for h in held)
            _until(
                "A's heartbeat is stale",
                lambda: all(
                    time.time() - h.heartbeat > STALE + 1 for h in map(_holder, locks) if h
                ),
            )
            second = subprocess.run(
                [sys.executable, "-m", "beaconflow", *flags("b")],
                capture_output=True, text=True, env=env, timeout=300,
            )  # fmt: skip
            assert second.returncode == 0, second.stderr
            notes = [line for line in second.stderr.splitlines() if "taking over" in line]
            assert len(notes) == len(locks)
            for note in notes:
                assert f" from host {HOST} pid {first.pid} since " in note
                assert f"(limit {STALE} s)" in note
            b_report = json.loads((tmp_path / "b" / "report.json").read_text())
            # the collector answers A's requests while A is frozen: 503, waiting in its
            # sockets for when it wakes
            gate.release()
            _until("A's requests are answered", lambda: gate.refused == gate.held)
            arrived = collector.counts()["arrived"]
            os.killpg(first.pid, signal.SIGCONT)
            _, err = first.communicate(timeout=300)
        finally:
            gate.release()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGCONT)
            if first.poll() is None:
                first.kill()
                first.communicate()
        assert first.returncode == 4, err
        assert collector.counts()["arrived"] == arrived, "A sent after it lost the lock"
        a_report = json.loads((tmp_path / "a" / "report.json").read_text())
        assert a_report["exit_status"] == 4 and a_report["invariant_errors"] == []
        # B has finished and let go: A finds no lock file of its own, nobody's
        lost = {
            f"the ledger's lock of endpoint {f} was taken over by another run"
            for f in _fingerprints(url)
        }
        assert set(a_report["stopped"].split("; ")) <= lost, a_report["stopped"]
        assert any(f"beaconflow: stopping: {r}; no new request starts" in err for r in lost)
        assert "Traceback" not in err
        assert a_report["messages_delivered"] == 0
        assert a_report["messages_not_attempted"] > 0
        # nothing was accepted twice: B delivered every message, once
        keys = Counter(record.key for record in collector.accepted())
        assert set(keys.values()) == {1}
        assert len(keys) == b_report["messages_delivered"] == b_report["messages_built"]

        # the ledger holds them all: the same command again sends nothing
        again = run_cli(*flags("c"), env=env)
        assert again.returncode == 0, again.stderr
        c_report = json.loads((tmp_path / "c" / "report.json").read_text())
        assert c_report["messages_delivered"] == 0
        assert c_report["messages_skipped"] == len(keys)
    assert not list(ledger.glob("lock-*.json")), "no lock is left held"


# An s3:// ledger: moto's S3 server on loopback holds it. The runs reach the ledger through
# Beam's S3 filesystem and its lease through boto3, both sent there by --s3_endpoint_url.
# Sender processes are off: they open the ledger without the run's Beam options, which an
# s3:// path needs (docs/ledger.md).


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Moto's S3 server on loopback and a new bucket in it: (endpoint, bucket)."""
    with moto_s3(monkeypatch, tmp_path) as found:
        yield found


def _objects(endpoint: str, bucket: str, prefix: str) -> dict[str, bytes]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        o["Key"].removeprefix(prefix): client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listed
    }


def test_a_second_run_on_an_s3_ledger_exits_75_at_once_and_sends_nothing(
    s3: tuple[str, str], events_file: Path, tmp_path: Path, gate: Gate
) -> None:
    endpoint, bucket = s3
    ledger = f"s3://{bucket}/nightly/ledger"
    beam = (f"--s3_endpoint_url={endpoint}", "--send-processes=0")
    second_events = tmp_path / "second.jsonl"
    second_events.write_text(
        json.dumps({"time": 1_749_000_000, "user_id": 777_000, "event": "second"}) + "\n"
    )
    with _gated_collector(gate) as collector:
        url = collector.base_url
        fingerprints = _fingerprints(url)
        first = _start(_flags(url, tmp_path / "first", events_file, ledger, "--timeout=300", *beam))
        try:
            _wait_mid_run(first, collector)
            leases = _objects(endpoint, bucket, "nightly/ledger/")
            holder = Holder.from_bytes(leases[lease_name(fingerprints[0])])
            assert holder is not None and (holder.host, holder.pid) == (HOST, first.pid)
            assert Holder.from_bytes(leases[lease_name(fingerprints[1])]) == holder

            started = time.monotonic()
            second = run_cli(*_flags(url, tmp_path / "second", second_events, ledger, *beam))
            assert second.returncode == 75, second.stderr
            assert second.stderr == (
                f"beaconflow: the ledger {ledger} is in use for endpoint {fingerprints[0]} by "
                f"host {HOST} pid {first.pid} since {iso(holder.since)}; nothing was done, try "
                "again later\n"
            )
            assert time.monotonic() - started < 60, "at once, not after a wait"
            assert not (tmp_path / "second").exists(), "no report, no dead letter"
        finally:
            gate.opened.set()
            _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        report = json.loads((tmp_path / "first" / "report.json").read_text())
        assert len(collector.accepted()) == report["messages_delivered"] > 0
        assert not any(r.param_map().get("_n") == "second" for r in collector.accepted())
    # released at the end; the ledger itself is on S3 too
    left = _objects(endpoint, bucket, "nightly/ledger/")
    assert not [name for name in left if name.startswith("lock-")]
    assert left, "the ledger's own files"


def test_a_stale_lease_on_an_s3_ledger_is_taken_over_saying_so(
    s3: tuple[str, str], events_file: Path, tmp_path: Path
) -> None:
    import boto3

    endpoint, bucket = s3

    ledger = f"s3://{bucket}/ledger"
    with Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
    ) as collector:
        fingerprint = _fingerprints(collector.base_url)[0]
        old = time.time() - 600
        boto3.client("s3", endpoint_url=endpoint).put_object(
            Bucket=bucket,
            Key=f"ledger/{lease_name(fingerprint)}",
            Body=Holder("elsewhere", 4242, old - 3600, old).to_bytes(),
        )
        done = run_cli(
            *_flags(collector.base_url, tmp_path, events_file, ledger,
                    f"--s3_endpoint_url={endpoint}", "--send-processes=0")
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        notes = [line for line in done.stderr.splitlines() if "taking over" in line]
        assert len(notes) == 1
        assert notes[0].startswith(
            f"beaconflow: taking over the ledger's lock of endpoint {fingerprint} from host "
            f"elsewhere pid 4242 since {iso(old - 3600)}: its heartbeat is "
        )
        assert notes[0].endswith(" s old (limit 300 s)")
        assert len(collector.accepted()) > 0
    assert not [n for n in _objects(endpoint, bucket, "ledger/") if n.startswith("lock-")]


def test_a_frozen_run_whose_s3_lease_was_taken_over_stops_when_it_wakes_and_sends_nothing_twice(
    s3: tuple[str, str], events_file: Path, tmp_path: Path
) -> None:
    """The frozen run above, on an ``s3://`` ledger: its senders read the lease object.

    Through boto3 on moto's S3 server, as the run reached it (``--s3_endpoint_url``).
    """
    endpoint, bucket = s3
    concurrency = 3
    gate = HoldFirst(held=concurrency)
    env = {**os.environ, **_LIMITS}
    ledger = f"s3://{bucket}/ledger"
    with Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
        faults=Faults(latency=0.001),
        sleep=gate.sleep,
    ) as collector:
        url = collector.base_url
        names = [lease_name(f) for f in _fingerprints(url)]

        def leases() -> list[Holder | None]:
            held = _objects(endpoint, bucket, "ledger/")
            return [Holder.from_bytes(held[n]) if n in held else None for n in names]

        def flags(out: str) -> list[str]:
            return _flags(url, tmp_path / out, events_file, ledger, "--timeout=300",
                          f"--concurrency={concurrency}", "--fixed-concurrency",
                          "--send-processes=0", f"--s3_endpoint_url={endpoint}")  # fmt: skip

        first = subprocess.Popen(
            [sys.executable, "-m", "beaconflow", *flags("a")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True,
        )  # fmt: skip
        try:
            _until("A's requests wait at the gate", lambda: gate.arrived == gate.held, first)
            assert all(h is not None and h.pid == first.pid for h in leases())
            os.killpg(first.pid, signal.SIGSTOP)
            _until(
                "A's heartbeat is stale",
                lambda: all(h and time.time() - h.heartbeat > STALE + 1 for h in leases()),
            )
            second = subprocess.run(
                [sys.executable, "-m", "beaconflow", *flags("b")],
                capture_output=True, text=True, env=env, timeout=300,
            )  # fmt: skip
            assert second.returncode == 0, second.stderr
            notes = [line for line in second.stderr.splitlines() if "taking over" in line]
            assert len(notes) == len(names)
            assert all(f" from host {HOST} pid {first.pid} since " in note for note in notes)
            b_report = json.loads((tmp_path / "b" / "report.json").read_text())
            gate.release()
            _until("A's requests are answered", lambda: gate.refused == gate.held)
            arrived = collector.counts()["arrived"]
            os.killpg(first.pid, signal.SIGCONT)
            _, err = first.communicate(timeout=300)
        finally:
            gate.release()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGCONT)
            if first.poll() is None:
                first.kill()
                first.communicate()
        assert first.returncode == 4, err
        assert collector.counts()["arrived"] == arrived, "A sent after it lost the lease"
        a_report = json.loads((tmp_path / "a" / "report.json").read_text())
        assert a_report["exit_status"] == 4 and a_report["invariant_errors"] == []
        # B has finished and deleted the leases: A's senders find none, its heartbeat none
        lost = {
            f"the ledger's lock of endpoint {f} was {how} by another run"
            for f in _fingerprints(url)
            for how in ("taken over", "removed")
        }
        assert set(a_report["stopped"].split("; ")) <= lost, a_report["stopped"]
        assert "Traceback" not in err
        assert a_report["messages_delivered"] == 0
        keys = Counter(record.key for record in collector.accepted())
        assert set(keys.values()) == {1}
        assert len(keys) == b_report["messages_delivered"] == b_report["messages_built"]
    assert not [n for n in _objects(endpoint, bucket, "ledger/") if n.startswith("lock-")]
