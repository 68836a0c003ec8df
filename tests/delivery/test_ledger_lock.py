"""The ledger's lock files (``beaconflow.delivery.ledger_lock``): who holds, who takes over.

Real files and real OS locks; clocks, host names and process checks injected. Whole runs
that meet a held lock are in tests/e2e/test_ledger_lock_runs.py. A lock file that cannot be
opened or written is named with the system's reason. The limits from the environment; the
lease a run's senders check before each request is in test_lease_watch.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beaconflow.delivery.ledger import LedgerError
from beaconflow.delivery.ledger_lock import (
    HEARTBEAT_ENV,
    HEARTBEAT_SECONDS,
    STALE_ENV,
    STALE_SECONDS,
    Holder,
    LedgerBusy,
    LedgerLocks,
    LockLimits,
    Verdict,
    iso,
    judge,
    lock_path,
)
from beaconflow.model.errors import TryLaterError
from tests.fs_faults import unwritable

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
HOST = "here"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _locks(directory: Path, *fingerprints: str, **kwargs: object) -> LedgerLocks:
    kwargs.setdefault("host", HOST)
    kwargs.setdefault("heartbeat_every", 0)
    kwargs.setdefault("clock", Clock())
    return LedgerLocks(str(directory), fingerprints, **kwargs)


def _write_holder(directory: Path, fingerprint: str, holder: Holder) -> Path:
    directory.mkdir(exist_ok=True)
    path = Path(lock_path(str(directory), fingerprint))
    path.write_bytes(holder.to_bytes())
    return path


def _gone(pid: int) -> bool:
    return False


def _alive(pid: int) -> bool:
    return True


@pytest.mark.parametrize(
    ("holder", "free", "exists", "verdict", "why"),
    [
        (None, True, _alive, Verdict.FREE, ""),
        (None, False, _alive, Verdict.HELD, ""),
        (Holder(HOST, 7, T0, T0), False, _alive, Verdict.HELD, ""),
        (Holder(HOST, 7, T0, T0), False, _gone, Verdict.TAKE_OVER, "its process no longer exists"),
        (Holder(HOST, 7, T0, T0), True, _gone, Verdict.TAKE_OVER, "its process no longer exists"),
        (Holder(HOST, 7, T0, T0), True, _alive, Verdict.TAKE_OVER, "it no longer holds the lock"),
        # another host: this host's OS lock may not see its lock, the heartbeat decides
        (Holder("there", 7, T0, T0), True, _gone, Verdict.HELD, ""),
        (Holder("there", 7, T0, T0), False, _gone, Verdict.HELD, ""),
        (
            Holder("there", 7, T0, T0 - 301),
            True,
            _alive,
            Verdict.TAKE_OVER,
            "heartbeat is 301 s old",
        ),
        (Holder(HOST, 7, T0, T0 - 301), False, _alive, Verdict.TAKE_OVER, "(limit 300 s)"),
        (Holder(HOST, 7, T0, T0 - 300), False, _alive, Verdict.HELD, ""),
    ],
)
def test_judge(holder, free, exists, verdict, why) -> None:
    got, reason = judge(holder, os_lock_free=free, now=T0, host=HOST, exists=exists)
    assert got is verdict
    assert why in reason and (reason == "") == (why == "")


def test_a_holder_reads_back_and_unreadable_files_name_none() -> None:
    holder = Holder("etl-1", 4242, T0, T0 + 10)
    data = json.loads(holder.to_bytes())
    assert data == {
        "host": "etl-1",
        "pid": 4242,
        "since": "2025-06-15T15:06:40Z",
        "heartbeat": "2025-06-15T15:06:50Z",
    }
    assert Holder.from_bytes(holder.to_bytes()) == holder
    leased = Holder("etl-1", 4242, T0, T0 + 10, lease="0123456789abcdef")
    assert json.loads(leased.to_bytes())["lease"] == "0123456789abcdef"
    assert Holder.from_bytes(leased.to_bytes()) == leased
    assert not holder.same_run(leased) and leased.same_run(Holder.from_bytes(leased.to_bytes()))
    for bad in (
        b"",
        b"{",
        b"[]",
        b'{"host": "x"}',
        b'{"host":"x","pid":1,"since":"x","heartbeat":"y"}',
    ):
        assert Holder.from_bytes(bad) is None


def test_the_holder_writes_its_file_and_removes_it_at_the_end(tmp_path: Path) -> None:
    locks = _locks(tmp_path, "aaaaaaaaaaaa", "bbbbbbbbbbbb", pid=os.getpid())
    assert locks.acquire() == []
    for fingerprint in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
        path = Path(lock_path(str(tmp_path), fingerprint))
        assert json.loads(path.read_text())["since"] == iso(T0)
        assert path.stat().st_mode & 0o777 == 0o600
    locks.release()
    assert list(tmp_path.iterdir()) == []


def test_a_second_run_for_the_same_endpoint_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = _locks(tmp_path, "aaaaaaaaaaaa", pid=os.getpid())
    first.acquire()
    second = _locks(tmp_path, "bbbbbbbbbbbb", "aaaaaaaaaaaa", pid=os.getpid())
    with pytest.raises(LedgerBusy) as raised:
        second.acquire()
    assert isinstance(raised.value, TryLaterError)
    assert str(raised.value) == (
        f"the ledger {tmp_path} is in use for endpoint aaaaaaaaaaaa by host {HOST} "
        f"pid {os.getpid()} since 2025-06-15T15:06:40Z; nothing was done, try again later"
    )
    # it let go of the endpoint it had taken before meeting the held one
    assert not Path(lock_path(str(tmp_path), "bbbbbbbbbbbb")).exists()
    third = _locks(tmp_path, "bbbbbbbbbbbb", pid=os.getpid())
    third.acquire()  # another endpoint of the same ledger: not blocked
    first.release()
    third.release()


def test_a_dead_holders_lock_is_taken_over_saying_so(tmp_path: Path) -> None:
    _write_holder(tmp_path, "aaaaaaaaaaaa", Holder(HOST, 999_999, T0 - 60, T0 - 5))
    locks = _locks(tmp_path, "aaaaaaaaaaaa", exists=_gone)
    assert locks.acquire() == [
        "taking over the ledger's lock of endpoint aaaaaaaaaaaa from host here pid 999999 "
        "since 2025-06-15T15:05:40Z: its process no longer exists"
    ]
    path = Path(lock_path(str(tmp_path), "aaaaaaaaaaaa"))
    assert Holder.from_bytes(path.read_bytes()) == locks.holder
    locks.release()


def test_another_hosts_fresh_lock_is_held_and_its_stale_one_taken_over(tmp_path: Path) -> None:
    _write_holder(tmp_path, "aaaaaaaaaaaa", Holder("there", 1, T0 - 600, T0 - STALE_SECONDS))
    with pytest.raises(LedgerBusy, match="by host there pid 1 since"):
        _locks(tmp_path, "aaaaaaaaaaaa").acquire()
    locks = _locks(tmp_path, "aaaaaaaaaaaa", clock=Clock(T0 + 1))
    assert locks.acquire()[0].endswith("its heartbeat is 301 s old (limit 300 s)")
    locks.release()


def test_a_frozen_holder_is_taken_over_and_its_heartbeat_finds_out(tmp_path: Path) -> None:
    """The OS lock is still held (the process lives, frozen): the file is replaced."""
    clock = Clock()
    frozen = _locks(tmp_path, "aaaaaaaaaaaa", clock=clock, pid=os.getpid())
    frozen.acquire()
    clock.now += 200
    assert frozen.heartbeat() is None  # a live holder's heartbeat keeps it
    later = Clock(T0 + 200 + STALE_SECONDS)
    with pytest.raises(LedgerBusy):
        _locks(tmp_path, "aaaaaaaaaaaa", clock=later, pid=1).acquire()
    later.now += 1
    taker = _locks(tmp_path, "aaaaaaaaaaaa", clock=later, pid=1)
    notes = taker.acquire()
    assert notes[0].endswith("its heartbeat is 301 s old (limit 300 s)")
    # a third run meets the new holder, not the frozen one
    with pytest.raises(LedgerBusy, match=f"by host {HOST} pid 1 since"):
        _locks(tmp_path, "aaaaaaaaaaaa", clock=later, pid=os.getpid(), exists=_alive).acquire()
    clock.now = later.now  # the frozen run wakes up
    assert frozen.heartbeat() == (
        f"the ledger's lock of endpoint aaaaaaaaaaaa was taken over by host {HOST} pid 1 "
        f"since {iso(later.now)}"
    )
    frozen.release()  # leaves the new holder's file alone
    assert Holder.from_bytes(Path(lock_path(str(tmp_path), "aaaaaaaaaaaa")).read_bytes())
    taker.release()


def test_the_heartbeat_thread_refreshes_the_file(tmp_path: Path) -> None:
    clock = Clock()
    locks = _locks(tmp_path, "aaaaaaaaaaaa", clock=clock, heartbeat_every=0.01)
    locks.acquire()
    clock.now += 42
    path = Path(lock_path(str(tmp_path), "aaaaaaaaaaaa"))
    import time

    deadline = time.monotonic() + 10
    while json.loads(path.read_text())["heartbeat"] != iso(T0 + 42):
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.01)
    locks.release()


_FORKING_HOLDER = """
import os, sys, time
from beaconflow.delivery.ledger_lock import LedgerLocks
locks = LedgerLocks(sys.argv[1], ["aaaaaaaaaaaa"], heartbeat_every=0)
locks.acquire()
child = os.fork()
if child == 0:  # a forked helper that outlives its parent (killed by the test)
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    time.sleep(120)
    os._exit(0)
print(child, flush=True)
os._exit(0)  # dies without releasing, as a SIGKILL would
"""


def test_a_forked_child_does_not_keep_the_lock_of_its_dead_parent(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FORKING_HOLDER, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    child = int(done.stdout)
    try:
        assert Path(f"/proc/{child}/stat").read_text().split()[2] != "Z"
        locks = LedgerLocks(str(tmp_path), ["aaaaaaaaaaaa"], heartbeat_every=0)
        notes = locks.acquire()
        assert notes and notes[0].endswith("its process no longer exists")
        # taken with the OS lock, which the child would have kept: no file was replaced
        assert not Path(lock_path(str(tmp_path), "aaaaaaaaaaaa") + ".break").exists()
        locks.release()
    finally:
        os.kill(child, 9)


def test_a_lock_file_that_cannot_be_opened_is_named_and_nothing_is_held(tmp_path: Path) -> None:
    Path(lock_path(str(tmp_path), "bbbbbbbbbbbb")).mkdir()  # a directory in its place
    locks = _locks(tmp_path, "aaaaaaaaaaaa", "bbbbbbbbbbbb", pid=os.getpid())
    with pytest.raises(LedgerError) as raised:
        locks.acquire()
    path = lock_path(str(tmp_path), "bbbbbbbbbbbb")
    assert str(raised.value) == f"ledger lock not writable: {path}: Is a directory"
    assert not Path(lock_path(str(tmp_path), "aaaaaaaaaaaa")).exists(), "the first let go"


def test_a_lock_in_an_unwritable_ledger_is_named(tmp_path: Path) -> None:
    with unwritable(tmp_path) as reason, pytest.raises(LedgerError) as raised:
        _locks(tmp_path, "aaaaaaaaaaaa").acquire()
    path = lock_path(str(tmp_path), "aaaaaaaaaaaa")
    assert str(raised.value) == f"ledger lock not writable: {path}: {reason}"


def test_a_heartbeat_that_cannot_be_written_names_the_file_and_keeps_the_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    locks = _locks(tmp_path, "aaaaaaaaaaaa", pid=os.getpid())
    locks.acquire()
    path = lock_path(str(tmp_path), "aaaaaaaaaaaa")
    # the same file, opened for reading only: the heartbeat's write fails as on a bad disk
    held = locks._held["aaaaaaaaaaaa"]
    read_only = os.open(path, os.O_RDONLY)
    locks._held["aaaaaaaaaaaa"] = read_only
    try:
        assert locks.heartbeat() is None, "not taken over: the OS lock still holds"
    finally:
        locks._held["aaaaaaaaaaaa"] = held
        os.close(read_only)
    assert [r.getMessage() for r in caplog.records] == [
        f"ledger lock heartbeat not written: {path}: Bad file descriptor"
    ]
    locks.release()


def test_a_lock_file_replaced_by_something_unreadable_is_lost(tmp_path: Path) -> None:
    locks = _locks(tmp_path, "aaaaaaaaaaaa", pid=os.getpid())
    locks.acquire()
    path = Path(lock_path(str(tmp_path), "aaaaaaaaaaaa"))
    path.unlink()
    path.mkdir()
    assert locks.heartbeat() == (
        "the ledger's lock of endpoint aaaaaaaaaaaa was taken over by another run"
    )
    locks.release()
    assert path.is_dir(), "what is not its own is left alone"


@pytest.mark.parametrize(
    ("environ", "limits"),
    [
        ({}, (STALE_SECONDS, HEARTBEAT_SECONDS)),
        ({STALE_ENV: "2", HEARTBEAT_ENV: "0.2"}, (2.0, 0.2)),
        ({STALE_ENV: " 600 "}, (600.0, HEARTBEAT_SECONDS)),
        ({STALE_ENV: "", HEARTBEAT_ENV: ""}, (STALE_SECONDS, HEARTBEAT_SECONDS)),
    ],
)
def test_the_limits_come_from_the_environment(
    environ: dict[str, str], limits: tuple[float, float]
) -> None:
    got = LockLimits.from_environment(environ)
    assert (got.stale_after, got.heartbeat_every) == limits


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({STALE_ENV: "soon"}, f"{STALE_ENV} must be a number of seconds above 0, got 'soon'"),
        ({STALE_ENV: "0"}, f"{STALE_ENV} must be a number of seconds above 0, got '0'"),
        ({HEARTBEAT_ENV: "-1"}, f"{HEARTBEAT_ENV} must be a number of seconds above 0, got '-1'"),
        ({HEARTBEAT_ENV: "nan"}, f"{HEARTBEAT_ENV} must be a number of seconds above 0, got 'nan'"),
        ({STALE_ENV: "inf"}, f"{STALE_ENV} must be a number of seconds above 0, got 'inf'"),
        (
            {STALE_ENV: "30", HEARTBEAT_ENV: "20"},
            f"{HEARTBEAT_ENV} (20) must be at most half of {STALE_ENV} (30): a live holder "
            "would look gone between two heartbeats",
        ),
    ],
)
def test_a_bad_limit_names_its_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        LockLimits.from_environment(environ)
    assert str(raised.value) == message
