"""The lease of a remote ledger (``beaconflow.delivery.ledger_lease``) on an in-memory store.

The store honours the preconditions as GCS and S3 do (tests/fakes/lease_store.py); clocks,
host names and process checks are injected, nothing sleeps. The stores themselves are
tested against real servers on loopback in test_lease_gcs.py and test_lease_s3.py.
"""

from __future__ import annotations

import json
import threading

import pytest

from beaconflow.delivery.lease_store import LeaseStoreError
from beaconflow.delivery.ledger import LedgerError
from beaconflow.delivery.ledger_lease import RemoteLedgerLocks, lease_name
from beaconflow.delivery.ledger_lock import STALE_SECONDS, Holder, LedgerBusy, iso
from beaconflow.model.errors import TryLaterError
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


def _alive(pid: int) -> bool:
    return True


def _gone(pid: int) -> bool:
    return False


def _locks(store: MemoryLeaseStore, *fingerprints: str, **kwargs: object) -> RemoteLedgerLocks:
    kwargs.setdefault("host", HOST)
    kwargs.setdefault("pid", 100)
    kwargs.setdefault("heartbeat_every", 0)
    kwargs.setdefault("clock", Clock())
    kwargs.setdefault("exists", _alive)
    return RemoteLedgerLocks(LEDGER, fingerprints, store, **kwargs)  # type: ignore[arg-type]


def _holder(store: MemoryLeaseStore, fingerprint: str) -> Holder | None:
    data, _ = store.objects[lease_name(fingerprint)]
    return Holder.from_bytes(data)


def _put(store: MemoryLeaseStore, fingerprint: str, holder: Holder) -> None:
    assert store.create(lease_name(fingerprint), holder.to_bytes()) is not None


def test_the_holder_creates_its_lease_objects_and_deletes_them_at_the_end() -> None:
    store = MemoryLeaseStore()
    locks = _locks(store, B, A)
    assert locks.acquire() == []
    assert sorted(store.objects) == [f"lock-{A}.json", f"lock-{B}.json"]
    written = json.loads(store.objects[lease_name(A)][0])
    assert locks.holder is not None and len(locks.holder.lease) == 16
    assert written == {
        "host": HOST,
        "pid": 100,
        "since": iso(T0),
        "heartbeat": iso(T0),
        "lease": locks.holder.lease,
    }
    assert _holder(store, A) == locks.holder
    locks.release()
    assert store.objects == {}


def test_a_second_run_for_the_same_endpoint_is_refused_naming_the_holder() -> None:
    store = MemoryLeaseStore()
    first = _locks(store, B)
    first.acquire()
    second = _locks(store, A, B, pid=200, clock=Clock(T0 + 60))
    with pytest.raises(LedgerBusy) as raised:
        second.acquire()
    assert isinstance(raised.value, TryLaterError)
    assert str(raised.value) == (
        f"the ledger {LEDGER} is in use for endpoint {B} by host {HOST} pid 100 since "
        "2025-06-15T15:06:40Z; nothing was done, try again later"
    )
    # it let go of the endpoint it had taken before meeting the held one
    assert sorted(store.objects) == [lease_name(B)]
    third = _locks(store, A, pid=300)
    third.acquire()  # another endpoint of the same ledger: not blocked
    assert _holder(store, B) == first.holder  # the holder's lease is untouched
    first.release()
    third.release()
    assert store.objects == {}


def test_two_runs_with_the_same_host_pid_and_second_are_told_apart() -> None:
    """Containers on the host's network, each its own pid 1, started by the same cron."""
    store = MemoryLeaseStore()
    first = _locks(store, A, pid=1)
    first.acquire()
    with pytest.raises(LedgerBusy, match=f"by host {HOST} pid 1 since"):
        _locks(store, A, pid=1).acquire()
    assert _holder(store, A) == first.holder
    first.release()


def test_a_holder_on_another_host_is_held_however_its_process_looks_from_here() -> None:
    store = MemoryLeaseStore()
    _put(store, A, Holder("there", 100, T0 - 600, T0 - STALE_SECONDS))
    with pytest.raises(LedgerBusy, match="by host there pid 100 since"):
        _locks(store, A, exists=_gone).acquire()


def test_a_dead_holders_lease_on_this_host_is_taken_over_saying_so() -> None:
    store = MemoryLeaseStore()
    _put(store, A, Holder(HOST, 999_999, T0 - 60, T0 - 5))
    locks = _locks(store, A, exists=_gone)
    assert locks.acquire() == [
        f"taking over the ledger's lock of endpoint {A} from host {HOST} pid 999999 "
        "since 2025-06-15T15:05:40Z: its process no longer exists"
    ]
    assert _holder(store, A) == locks.holder
    locks.release()
    assert store.objects == {}


@pytest.mark.parametrize("host", [HOST, "there"])
def test_a_stale_lease_is_taken_over_after_the_limit_and_not_before(host: str) -> None:
    store = MemoryLeaseStore()
    _put(store, A, Holder(host, 7, T0 - 600, T0 - STALE_SECONDS))
    with pytest.raises(LedgerBusy, match=f"by host {host} pid 7 since"):
        _locks(store, A).acquire()
    locks = _locks(store, A, clock=Clock(T0 + 1))
    assert locks.acquire() == [
        f"taking over the ledger's lock of endpoint {A} from host {host} pid 7 since "
        f"{iso(T0 - 600)}: its heartbeat is 301 s old (limit 300 s)"
    ]
    locks.release()


class RacingStore(MemoryLeaseStore):
    """Runs ``meanwhile`` once, after the first read of a lease and before it is answered."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: list[RemoteLedgerLocks] = []

    def read(self, name: str) -> tuple[bytes, str] | None:
        seen = super().read(name)
        while self.meanwhile:
            self.meanwhile.pop().acquire()
        return seen


def test_of_two_runs_taking_a_stale_lease_over_one_wins_and_the_other_is_refused() -> None:
    store = RacingStore()
    _put(store, A, Holder("there", 7, T0 - 600, T0 - 400))
    winner = _locks(store, A, pid=2)
    loser = _locks(store, A, pid=1)
    # the winner reads and replaces the stale lease while the loser holds what it read
    store.meanwhile.append(winner)
    with pytest.raises(LedgerBusy, match=f"by host {HOST} pid 2 since"):
        loser.acquire()
    assert _holder(store, A) == winner.holder
    winner.release()


def test_of_many_runs_taking_a_stale_lease_over_at_once_exactly_one_wins() -> None:
    store = MemoryLeaseStore()
    _put(store, A, Holder("there", 7, T0 - 600, T0 - 400))
    takers = [_locks(store, A, pid=pid) for pid in range(1, 9)]
    start = threading.Barrier(len(takers))
    won: list[RemoteLedgerLocks] = []
    refused: list[str] = []

    def take(locks: RemoteLedgerLocks) -> None:
        start.wait()
        try:
            notes = locks.acquire()
        except LedgerBusy as busy:
            refused.append(str(busy))
        else:
            assert notes[0].endswith("its heartbeat is 400 s old (limit 300 s)")
            won.append(locks)

    threads = [threading.Thread(target=take, args=(locks,)) for locks in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == len(takers) - 1
    assert _holder(store, A) == won[0].holder
    assert all(f"by host {HOST} pid {won[0].holder.pid} since" in r for r in refused)  # type: ignore[union-attr]
    won[0].release()


def test_a_heartbeat_renews_the_lease_at_its_version() -> None:
    store = MemoryLeaseStore()
    clock = Clock()
    locks = _locks(store, A, clock=clock)
    locks.acquire()
    clock.now += 42
    assert locks.heartbeat() is None
    assert json.loads(store.objects[lease_name(A)][0])["heartbeat"] == iso(T0 + 42)
    # a run starting now sees a fresh heartbeat
    with pytest.raises(LedgerBusy):
        _locks(store, A, pid=200, clock=Clock(T0 + 42 + STALE_SECONDS)).acquire()
    locks.release()
    assert store.objects == {}


def test_a_frozen_holder_is_taken_over_and_its_heartbeat_finds_out() -> None:
    store = MemoryLeaseStore()
    clock = Clock()
    frozen = _locks(store, A, clock=clock)
    frozen.acquire()
    later = Clock(T0 + STALE_SECONDS + 1)
    taker = _locks(store, A, pid=1, clock=later)
    assert taker.acquire()[0].endswith("its heartbeat is 301 s old (limit 300 s)")
    clock.now = later.now  # the frozen run wakes up
    assert frozen.heartbeat() == (
        f"the ledger's lock of endpoint {A} was taken over by host {HOST} pid 1 "
        f"since {iso(later.now)}"
    )
    frozen.release()  # leaves the new holder's lease alone
    assert _holder(store, A) == taker.holder
    taker.release()
    assert store.objects == {}


def test_a_lease_removed_under_its_holder_is_lost() -> None:
    store = MemoryLeaseStore()
    locks = _locks(store, A)
    locks.acquire()
    store.objects.clear()
    assert locks.heartbeat() == f"the ledger's lock of endpoint {A} was removed by another run"
    store.create(lease_name(A), Holder("there", 9, T0, T0).to_bytes())
    locks.release()  # the lease is no longer the run's: release leaves what is there now
    assert "delete" not in store.calls


def test_the_heartbeat_thread_stops_the_run_when_the_lease_was_taken_over() -> None:
    store = MemoryLeaseStore()
    lost = threading.Event()
    reasons: list[str] = []

    def on_lost(reason: str) -> None:
        reasons.append(reason)
        lost.set()

    locks = _locks(store, A, heartbeat_every=0.01, on_lost=on_lost)
    locks.acquire()
    _, version = store.objects[lease_name(A)]
    assert store.replace(lease_name(A), Holder("there", 9, T0, T0).to_bytes(), version)
    assert lost.wait(30), "the heartbeat did not find out"
    assert reasons == [
        f"the ledger's lock of endpoint {A} was taken over by host there pid 9 since {iso(T0)}"
    ]
    locks.release()
    assert lease_name(A) in store.objects  # the new holder's


def test_a_holder_that_cannot_reach_the_store_warns_then_stops_before_it_may_be_taken_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryLeaseStore()
    clock = Clock()
    locks = _locks(store, A, clock=clock)
    locks.acquire()
    store.failing = True
    clock.now += STALE_SECONDS / 2
    assert locks.heartbeat() is None  # not renewed for 150 s: still within half the limit
    # naming the lease object, as a lock file's heartbeat names the file
    assert (
        f"ledger lock heartbeat not written: {LEDGER}/{lease_name(A)}: unreachable" in caplog.text
    )
    clock.now += 1
    assert locks.heartbeat() == (
        "the ledger's lock could not be renewed for 151 s (another run may take it over "
        "after 300 s)"
    )
    store.failing = False
    clock.now += 1
    assert locks.heartbeat() is None  # back: renewed, and the count starts again
    locks.release()
    assert store.objects == {}


def test_a_write_the_client_sent_again_after_it_succeeded_is_recognised_as_ours() -> None:
    store = MemoryLeaseStore()
    clock = Clock()
    locks = _locks(store, A, clock=clock)
    store.retry_after_success = True  # the create succeeds, its retry is refused
    assert locks.acquire() == []
    store.retry_after_success = True  # the same for a heartbeat
    clock.now += 10
    assert locks.heartbeat() is None
    assert json.loads(store.objects[lease_name(A)][0])["heartbeat"] == iso(T0 + 10)
    locks.release()
    assert store.objects == {}


def test_a_takeover_the_client_sent_again_after_it_succeeded_is_still_said() -> None:
    store = MemoryLeaseStore()
    _put(store, A, Holder(HOST, 999_999, T0 - 60, T0 - 5))
    store.retry_after_success = True
    locks = _locks(store, A, exists=_gone)
    assert locks.acquire() == [
        f"taking over the ledger's lock of endpoint {A} from host {HOST} pid 999999 "
        "since 2025-06-15T15:05:40Z: its process no longer exists"
    ]
    assert _holder(store, A) == locks.holder
    locks.release()
    assert store.objects == {}


def test_a_store_that_ignores_the_preconditions_is_refused_and_left_clean() -> None:
    store = MemoryLeaseStore(ignores_preconditions=True)
    with pytest.raises(LedgerError) as raised:
        _locks(store, A, B).acquire()
    assert str(raised.value) == (
        f"the store of the ledger {LEDGER} does not honour conditional writes (create only "
        "if absent, replace only if unchanged), so it cannot hold the ledger's lock; nothing "
        "was done (see docs/ledger.md)"
    )
    assert store.objects == {}


def test_an_unreadable_lease_object_stops_the_run_naming_it() -> None:
    store = MemoryLeaseStore()
    store.create(lease_name(A), b"not json")
    with pytest.raises(LedgerError, match=f"has a lock object lock-{A}.json that names no holder"):
        _locks(store, A).acquire()
    assert store.objects[lease_name(A)][0] == b"not json"


def test_a_store_that_cannot_be_reached_stops_the_run_before_it_holds_anything() -> None:
    store = MemoryLeaseStore()
    store.failing = True
    with pytest.raises(LeaseStoreError, match="mem://test failed: unreachable"):
        _locks(store, A).acquire()
    assert isinstance(LeaseStoreError("x"), LedgerError)


def test_release_deletes_only_a_lease_still_at_its_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryLeaseStore()
    locks = _locks(store, A, B)
    locks.acquire()
    # B changed behind the run's back (its heartbeat did not beat yet)
    _, version = store.objects[lease_name(B)]
    store.replace(lease_name(B), Holder("there", 9, T0, T0).to_bytes(), version)
    locks.release()
    assert sorted(store.objects) == [lease_name(B)]
    assert _holder(store, B) == Holder("there", 9, T0, T0)
    # a failing store at the end: the run warns and ends
    again = _locks(store, A)
    again.acquire()
    store.failing = True
    again.release()
    assert "was not removed" in caplog.text
