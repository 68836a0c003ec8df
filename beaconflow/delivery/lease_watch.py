"""What a run's senders check before each request: that its ledger locks are still its own.

A frozen holder wakes all at once: its senders' answers are waiting in their sockets, and a
sender would start its next request before the heartbeat thread had looked. So a run's
senders, in its own process and in its sender processes, check its
:class:`~beaconflow.delivery.ledger_lock.Lease` before every request (:class:`LeaseWatch`):
at the cost of reading the clock while the last heartbeat they saw is fresh, and of looking
at the locks when it is not, as after a freeze. A lock that is no longer the run's stops
them before they send (exit 4).

A look at lock files (a local or mounted ledger) reads them at once. A look at lease objects
(a ``gs://`` or ``s3://`` ledger, :mod:`beaconflow.delivery.ledger_lease`) reads them
through the store, in a thread of its own: a store may take seconds to answer (its client
retries), and the sender's loop must go on taking answers meanwhile. The sender waits while
a look it needs is under way; a look starts a little before the heartbeat seen goes old, so
that a run whose heartbeat thread keeps up never waits for the store. No Beam, no HTTP of
its own::

    python -m pytest tests/delivery/test_lease_watch.py
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from beaconflow.delivery.lease_store import (
    LeaseStore,
    LeaseStoreError,
    LeaseStoreMissing,
    object_url,
    open_store,
)
from beaconflow.delivery.ledger_lock import (
    Holder,
    Lease,
    lock_name,
    lock_path,
    taken_over_message,
)
from beaconflow.model.errors import io_problem

#: Seconds between two looks at lease objects while the run cannot be sure of them (a store
#: that does not answer): a sender checks every 0.1 s, the store is asked at most this often
#: (or once a heartbeat, when the run beats more often).
REMOTE_LOOK_SECONDS = 1.0

#: How a look at lease objects is run: in a thread of its own; tests run it at once.
Start = Callable[[Callable[[], None]], None]


class Standing(Enum):
    """Whether a run may send now: its lock held, its heartbeat behind, or the lock lost."""

    HELD = "held"
    BEHIND = "behind"
    LOST = "lost"


@dataclass(frozen=True)
class _Seen:
    """What one look found: the youngest heartbeat of the run's own locks, or why not."""

    youngest: float = math.nan
    #: why a lock is no longer the run's (another's, or none)
    lost: str = ""
    #: why the locks could not be read (a store that does not answer): not sure either way
    unsure: str = ""


class _Look:
    """One look at lease objects, finished (:attr:`seen` set) by the thread that runs it."""

    def __init__(self) -> None:
        self.seen: _Seen | None = None


def _in_a_thread(look: Callable[[], None]) -> None:
    threading.Thread(target=look, name="beaconflow-lease-look", daemon=True).start()


def _read_holder(path: str, tries: int = 3) -> Holder | None:
    """The holder the lock file names; read again when torn by a heartbeat being written."""
    for _ in range(tries):
        with open(path, "rb") as current:
            found = Holder.from_bytes(current.read())
        if found is not None:
            return found
    return None


class LeaseWatch:
    """Whether the run's locks are still its own, known as cheaply as it can be known.

    No other run may take a lock over while its heartbeat is younger than ``stale_after``:
    while the youngest heartbeat seen in the locks is younger than half of that (the other
    half for the hosts' clocks), :meth:`check` reads the clock and nothing else. Then it
    looks at the locks: another run's, or none, is LOST (:attr:`reason` says why); the run's
    own with a fresh heartbeat is HELD again; the run's own with an old heartbeat is BEHIND
    (the run was frozen, its heartbeat thread has not beaten yet): the sender waits and
    checks again, and when the heartbeat is still behind after ``stale_after / 2`` of
    waiting (it cannot be written), it is LOST too.

    On lease objects a look is BEHIND until it is done (the look that began when a frozen
    run woke decides, not the time it was frozen), and a store that cannot be read is BEHIND
    too (asked again every :data:`REMOTE_LOOK_SECONDS`), LOST once that has lasted
    ``stale_after / 2``; a lock file that cannot be read is LOST at once. ``store``: the
    lease objects' store (default: opened from the lease, in the first look); ``start``
    runs a look (default: in a thread of its own). Not thread-safe: one per sender loop.
    """

    def __init__(
        self,
        lease: Lease,
        clock: Callable[[], float] = time.time,
        *,
        store: LeaseStore | None = None,
        start: Start = _in_a_thread,
    ) -> None:
        self._lease = lease
        self._clock = clock
        self._margin = lease.stale_after / 2
        self._remote = lease.store is not None
        self._store = store
        self._start = start
        # a look at lease objects starts this long before the heartbeat seen goes old
        self._lead = min(lease.heartbeat_every, self._margin / 2)
        self._look_every = min(REMOTE_LOOK_SECONDS, lease.heartbeat_every)
        self._sure_until = -math.inf
        self._youngest = -math.inf
        self._behind_since: float | None = None
        self._unsure = ""
        self._looking: _Look | None = None
        self._next_look = -math.inf
        self.reason = ""

    def check(self) -> Standing:
        """HELD, BEHIND (wait, then check again) or LOST (:attr:`reason`)."""
        now = self._clock()
        if self._collect(now):
            return Standing.LOST
        if now < self._sure_until:
            if self._remote and now >= self._sure_until - self._lead and self._look(now):
                return Standing.LOST
            return Standing.HELD
        lost = self._look(now) if self._remote else self._take(self._read_files(), now)
        if lost:
            return Standing.LOST
        if now < self._sure_until:
            return Standing.HELD
        return self._behind(now)

    def _take(self, seen: _Seen, now: float) -> bool:
        """Learn what a look found; whether a lock is lost (:attr:`reason` set)."""
        if seen.lost:
            self.reason = seen.lost
            return True
        if seen.unsure:
            self._unsure = seen.unsure
            return False
        self._unsure = ""
        self._youngest = seen.youngest
        self._sure_until = seen.youngest + self._margin
        if now < self._sure_until:
            self._behind_since = None
        return False

    def _behind(self, now: float) -> Standing:
        if self._behind_since is None:
            self._behind_since = now
        waited = now - self._behind_since
        if waited <= self._margin or self._looking is not None:
            # a look under way decides: after a freeze, what the store has now is the answer
            return Standing.BEHIND
        lease = self._lease
        if self._unsure or self._youngest == -math.inf:
            why = self._unsure or f"{lease.directory}: no answer from the store"
            self.reason = (
                f"the ledger's lock cannot be read: {why} (for {waited:.0f} s; another run "
                f"may take it over after {lease.stale_after:g} s)"
            )
        else:
            self.reason = (
                f"the ledger's lock of {lease.directory}: this run's heartbeat is "
                f"{now - self._youngest:.0f} s old and is not being written (limit "
                f"{lease.stale_after:g} s): another run may take the lock over"
            )
        return Standing.LOST

    def _read_files(self) -> _Seen:
        lease = self._lease
        youngest = math.inf
        for fingerprint in lease.fingerprints:
            path = lock_path(lease.directory, fingerprint)
            try:
                found = _read_holder(path)
            except FileNotFoundError:
                found = None
            except OSError as error:
                what = f"the ledger's lock of endpoint {fingerprint}"
                return _Seen(lost=io_problem(what, path, error, "cannot be read"))
            if found is None or not lease.holder.same_run(found):
                return _Seen(lost=taken_over_message(fingerprint, found))
            youngest = min(youngest, found.heartbeat)
        return _Seen(youngest)

    def _look(self, now: float) -> bool:
        """Start a look at the lease objects unless one is under way or was just made.

        Whether a lock is lost, when the look is done already (run at once).
        """
        if self._looking is None and now >= self._next_look:
            self._next_look = now + self._look_every
            look = self._looking = _Look()

            def run() -> None:
                look.seen = self._read_objects()

            self._start(run)
        return self._collect(now)

    def _collect(self, now: float) -> bool:
        """Learn what a finished look found; whether a lock is lost."""
        look = self._looking
        if look is None or look.seen is None:
            return False
        self._looking = None
        return self._take(look.seen, now)

    def _read_objects(self) -> _Seen:
        """The lease objects as the store has them (in the look's thread: it always ends)."""
        lease = self._lease
        try:
            store = self._store
            if store is None:
                store = self._store = open_store(lease.directory, lease.store)
            youngest = math.inf
            for fingerprint in lease.fingerprints:
                name = lock_name(fingerprint)
                try:
                    seen = store.read(name)
                except LeaseStoreError as error:
                    return _Seen(unsure=f"{object_url(lease.directory, name)}: {error.reason}")
                found = Holder.from_bytes(seen[0]) if seen is not None else None
                if found is None or not lease.holder.same_run(found):
                    return _Seen(lost=taken_over_message(fingerprint, found))
                youngest = min(youngest, found.heartbeat)
            return _Seen(youngest)
        except (LeaseStoreError, LeaseStoreMissing) as error:  # the store cannot be opened
            reason = error.reason if isinstance(error, LeaseStoreError) else str(error)
            return _Seen(unsure=f"{lease.directory}: {reason}")
        except Exception as error:  # a client's own failure: a look must end, and say so
            return _Seen(unsure=f"{lease.directory}: {type(error).__name__}: {error}")
