"""What senders check before each request (``beaconflow.delivery.lease_watch``).

That the run's locks are still its own: lock files (real files, injected clock) and the
lease objects of a remote ledger (an in-memory store that honours the preconditions as GCS
and S3 do, its looks run at once or when the test says). The engine's and the sender
processes' side: test_sender.py, test_sendproc.py; whole runs frozen while another takes
over: tests/e2e/test_ledger_lock_runs.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from beaconflow.delivery.lease_store import StoreOptions
from beaconflow.delivery.lease_watch import REMOTE_LOOK_SECONDS, LeaseWatch, Standing
from beaconflow.delivery.ledger_lease import RemoteLedgerLocks, lease_name
from beaconflow.delivery.ledger_lock import LedgerLocks, iso, lock_path
from tests.fakes.lease_store import MemoryLeaseStore

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
HOST = "here"
LEDGER = "gs://bucket/ledger"
A, B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


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


def _lease(tmp_path: Path, clock: Clock, *fingerprints: str) -> tuple[LedgerLocks, LeaseWatch]:
    locks = _locks(tmp_path, *fingerprints, clock=clock, pid=os.getpid(), stale_after=100)
    locks.acquire()
    return locks, LeaseWatch(locks.lease(), clock)


def test_a_lease_is_known_held_from_the_clock_alone_while_the_heartbeat_seen_is_fresh(
    tmp_path: Path,
) -> None:
    clock = Clock()
    locks, watch = _lease(tmp_path, clock, "aaaaaaaaaaaa")
    assert watch.check() is Standing.HELD  # read once
    path = Path(lock_path(str(tmp_path), "aaaaaaaaaaaa"))
    path.rename(tmp_path / "elsewhere")  # not looked at again ...
    clock.now += 49
    assert watch.check() is Standing.HELD
    clock.now += 2  # ... until half the limit has passed since the heartbeat it saw
    assert watch.check() is Standing.LOST
    assert watch.reason == (
        "the ledger's lock of endpoint aaaaaaaaaaaa was taken over by another run"
    )
    (tmp_path / "elsewhere").rename(path)
    locks.release()


def test_a_lease_taken_over_names_the_new_holder(tmp_path: Path) -> None:
    clock = Clock()
    frozen, watch = _lease(tmp_path, clock, "aaaaaaaaaaaa", "bbbbbbbbbbbb")
    clock.now += 101
    taker = _locks(tmp_path, "bbbbbbbbbbbb", clock=clock, pid=1, stale_after=100)
    taker.acquire()
    assert watch.check() is Standing.LOST
    assert watch.reason == (
        f"the ledger's lock of endpoint bbbbbbbbbbbb was taken over by host {HOST} pid 1 "
        f"since {iso(clock.now)}"
    )
    taker.release()
    frozen.release()


def test_a_lease_whose_heartbeat_is_behind_waits_for_it_then_gives_up(tmp_path: Path) -> None:
    """Woken from a freeze: its own heartbeat thread has not beaten yet."""
    clock = Clock()
    locks, watch = _lease(tmp_path, clock, "aaaaaaaaaaaa")
    clock.now += 70  # frozen longer than half the limit: nobody may have taken it yet
    assert watch.check() is Standing.BEHIND
    assert locks.heartbeat() is None  # the heartbeat thread wakes and beats
    assert watch.check() is Standing.HELD
    clock.now += 60
    assert watch.check() is Standing.BEHIND  # and now it does not beat (a disk that fails)
    clock.now += 50
    assert watch.check() is Standing.BEHIND
    clock.now += 1
    assert watch.check() is Standing.LOST
    assert watch.reason == (
        f"the ledger's lock of {tmp_path}: this run's heartbeat is 111 s old and is not being "
        "written (limit 100 s): another run may take the lock over"
    )
    locks.release()


def test_a_lease_whose_lock_file_cannot_be_read_is_lost_naming_it(tmp_path: Path) -> None:
    clock = Clock()
    locks, watch = _lease(tmp_path, clock, "aaaaaaaaaaaa")
    path = Path(lock_path(str(tmp_path), "aaaaaaaaaaaa"))
    path.unlink()
    path.mkdir()
    assert watch.check() is Standing.LOST
    assert watch.reason == (
        f"the ledger's lock of endpoint aaaaaaaaaaaa cannot be read: {path}: Is a directory"
    )
    locks.release()


# A remote ledger: the lease objects, read through the store.


def _at_once(look: Callable[[], None]) -> None:
    look()


class Later:
    """Looks that run when the test says: a store that takes its time."""

    def __init__(self) -> None:
        self.looks: list[Callable[[], None]] = []

    def __call__(self, look: Callable[[], None]) -> None:
        self.looks.append(look)

    def finish(self) -> None:
        looks, self.looks = self.looks, []
        for look in looks:
            look()


def _remote(
    store: MemoryLeaseStore, clock: Clock, *fingerprints: str, start: object = _at_once
) -> tuple[RemoteLedgerLocks, LeaseWatch]:
    locks = RemoteLedgerLocks(
        LEDGER, fingerprints, store, host=HOST, pid=100, clock=clock, heartbeat_every=10,
        stale_after=100,
    )  # fmt: skip
    locks.acquire()
    return locks, LeaseWatch(locks.lease(), clock, store=store, start=start)  # type: ignore[arg-type]


def _reads(store: MemoryLeaseStore) -> int:
    return store.calls.count("read")


def test_a_remote_lease_is_known_held_from_the_clock_and_looked_at_before_it_goes_old() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    locks, watch = _remote(store, clock, A, B)
    assert watch.check() is Standing.HELD
    assert _reads(store) == 2  # one look: both objects
    clock.now += 39
    assert watch.check() is Standing.HELD
    assert _reads(store) == 2, "the clock alone while the heartbeat seen is fresh"
    assert locks.heartbeat() is None  # the heartbeat thread beats at T0 + 39
    clock.now += 1  # within a heartbeat of half the limit: looked at ahead of time
    assert watch.check() is Standing.HELD
    assert _reads(store) == 4
    clock.now += 30  # past T0 + 50: sure from the heartbeat the look saw (T0 + 39)
    assert watch.check() is Standing.HELD
    assert _reads(store) == 4
    clock.now += 10  # within a heartbeat of T0 + 89: the next look
    assert watch.check() is Standing.HELD
    assert _reads(store) == 6
    locks.release()


def test_a_remote_lease_taken_over_stops_the_senders_naming_the_new_holder() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    frozen, watch = _remote(store, clock, A, B)
    clock.now += 101  # frozen past the limit
    taker = RemoteLedgerLocks(
        LEDGER, [B], store, host=HOST, pid=1, clock=clock, heartbeat_every=0, stale_after=100
    )
    assert taker.acquire()
    assert watch.check() is Standing.LOST
    assert watch.reason == (
        f"the ledger's lock of endpoint {B} was taken over by host {HOST} pid 1 "
        f"since {iso(clock.now)}"
    )
    taker.release()
    frozen.release()


def test_a_remote_lease_removed_by_a_run_that_took_it_over_and_finished_is_lost() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    locks, watch = _remote(store, clock, A)
    store.objects.clear()
    clock.now += 51
    assert watch.check() is Standing.LOST
    assert watch.reason == f"the ledger's lock of endpoint {A} was taken over by another run"
    locks.release()


def test_a_remote_lease_whose_heartbeat_is_behind_waits_for_it() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    locks, watch = _remote(store, clock, A)
    clock.now += 70  # woken from a freeze: the heartbeat thread has not beaten yet
    assert watch.check() is Standing.BEHIND
    assert locks.heartbeat() is None
    assert watch.check() is Standing.BEHIND, "the store is asked at most once a second"
    clock.now += REMOTE_LOOK_SECONDS
    assert watch.check() is Standing.HELD
    locks.release()


def test_a_store_that_does_not_answer_holds_the_senders_then_stops_them_naming_the_object() -> None:
    store, clock = MemoryLeaseStore(), Clock()
    locks, watch = _remote(store, clock, A)
    clock.now += 51
    store.failing = True
    assert watch.check() is Standing.BEHIND  # not sure: nothing is sent meanwhile
    reads = _reads(store)
    clock.now += 0.5
    assert watch.check() is Standing.BEHIND
    assert _reads(store) == reads, "asked at most once a second"
    clock.now += 40
    assert watch.check() is Standing.BEHIND
    assert _reads(store) == reads + 1
    store.failing = False
    assert locks.heartbeat() is None  # the store is back: the heartbeat is written
    clock.now += 1
    assert watch.check() is Standing.HELD
    store.failing = True
    clock.now += 50
    assert watch.check() is Standing.BEHIND
    clock.now += 51
    assert watch.check() is Standing.LOST
    assert watch.reason == (
        f"the ledger's lock cannot be read: {LEDGER}/{lease_name(A)}: unreachable (for 51 s; "
        "another run may take it over after 100 s)"
    )
    store.failing = False
    locks.release()


def test_a_sender_waits_while_a_look_at_the_store_is_under_way() -> None:
    store, clock, later = MemoryLeaseStore(), Clock(), Later()
    locks, watch = _remote(store, clock, A, start=later)
    assert watch.check() is Standing.BEHIND  # the first look has not answered yet
    assert watch.check() is Standing.BEHIND
    assert len(later.looks) == 1, "one look at a time"
    later.finish()
    assert watch.check() is Standing.HELD
    clock.now += 40  # looked at ahead of time, while still sure: the sender does not wait
    assert watch.check() is Standing.HELD
    assert len(later.looks) == 1
    assert watch.check() is Standing.HELD
    locks.release()


def test_the_senders_open_the_store_as_the_run_reached_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from beaconflow.delivery import lease_store

    store, clock = MemoryLeaseStore(), Clock()
    opened: list[tuple[str, str, StoreOptions]] = []

    def open_memory(bucket: str, prefix: str, options: StoreOptions) -> MemoryLeaseStore:
        opened.append((bucket, prefix, options))
        return store

    monkeypatch.setitem(lease_store.FACTORIES, "s3", open_memory)
    options = StoreOptions(s3_endpoint_url="http://127.0.0.1:9000", s3_access_key_id="id")
    locks = RemoteLedgerLocks(
        "s3://bucket/nightly/ledger", [A], store, host=HOST, pid=100, clock=clock,
        heartbeat_every=0, options=options,
    )  # fmt: skip
    locks.acquire()
    lease = locks.lease()
    assert lease.store == options and lease.holder == locks.holder
    watch = LeaseWatch(lease, clock, start=_at_once)
    assert watch.check() is Standing.HELD
    assert watch.check() is Standing.HELD
    assert opened == [("bucket", "nightly/ledger", options)], "once, with the run's options"
    locks.release()


def test_a_store_whose_client_is_missing_is_not_sure_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    store, clock = MemoryLeaseStore(), Clock()
    locks = RemoteLedgerLocks(
        "s3://bucket/ledger", [A], store, host=HOST, pid=100, clock=clock, heartbeat_every=0,
        stale_after=100,
    )  # fmt: skip
    locks.acquire()
    monkeypatch.setitem(sys.modules, "boto3", None)
    watch = LeaseWatch(locks.lease(), clock, start=_at_once)
    assert watch.check() is Standing.BEHIND
    clock.now += 51
    assert watch.check() is Standing.LOST
    assert watch.reason == (
        "the ledger's lock cannot be read: s3://bucket/ledger: a s3:// --ledger needs boto3, "
        "which is not installed: pip install 'beaconflow[s3]' (for 51 s; another run may "
        "take it over after 100 s)"
    )
    locks.release()


def test_a_run_frozen_while_a_look_was_under_way_is_told_by_that_look_not_by_the_clock() -> None:
    store, clock, later = MemoryLeaseStore(), Clock(), Later()
    frozen, watch = _remote(store, clock, A, start=later)
    assert watch.check() is Standing.BEHIND
    later.finish()
    assert watch.check() is Standing.HELD
    clock.now += 60
    assert watch.check() is Standing.BEHIND  # a look starts, and the run is frozen
    clock.now += 100
    taker = RemoteLedgerLocks(
        LEDGER, [A], store, host=HOST, pid=1, clock=clock, heartbeat_every=0, stale_after=100
    )
    assert taker.acquire()
    # woken: 100 s behind by the clock, but the look has not answered yet
    assert watch.check() is Standing.BEHIND
    later.finish()
    assert watch.check() is Standing.LOST
    assert watch.reason == (
        f"the ledger's lock of endpoint {A} was taken over by host {HOST} pid 1 "
        f"since {iso(clock.now)}"
    )
    taker.release()
    frozen.release()
