"""One run at a time per ledger and endpoint on ``gs://`` and ``s3://``: a lease object.

The same lock as :mod:`beaconflow.delivery.ledger_lock` (the same holder JSON, the same
``lock-<fingerprint>.json`` name, the same verdicts of
:func:`~beaconflow.delivery.ledger_lock.judge`), held on an object store that has no OS
lock, with the store's own preconditions (:mod:`beaconflow.delivery.lease_store`):

- **take**: create the object only if it is absent. If it exists, read it with its version
  and judge its holder: held (exit 75), or gone (its process no longer exists on this host,
  or its heartbeat is older than :data:`~beaconflow.delivery.ledger_lock.STALE_SECONDS`).
  A gone holder is taken over by replacing the object *only if it is still at the version
  read*: of two runs taking it over at once, one wins and the other meets the winner
  (exit 75).
- **heartbeat**: every :data:`~beaconflow.delivery.ledger_lock.HEARTBEAT_SECONDS`, replace
  the object only if it is still at our last version. Refused: another run took it over,
  and the run stops (``on_lost``, exit 4). A holder that cannot reach the store stops
  itself once it has not renewed its lease for half the stale limit, before another run
  may take it over.
- **release**: delete the object only if it is still at our version.

Both limits are the run's :class:`~beaconflow.delivery.ledger_lock.LockLimits` (settable
from the environment), as for lock files. The run's senders check its lease before each
request (:meth:`RemoteLedgerLocks.lease`, :mod:`beaconflow.delivery.lease_watch`): a run
frozen while another took its lease over sends nothing more when it wakes.

A lock is never taken from a live holder without saying so, nor lost without the run
knowing: every write is conditioned on the version last seen, and a write that the
store's client retried after it had in fact succeeded is recognised by its holder. No Beam,
no HTTP of its own::

    python -m pytest tests/delivery/test_ledger_lease.py
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from beaconflow.delivery.lease_store import (
    NO_SUCH_VERSION,
    LeaseStore,
    LeaseStoreError,
    StoreOptions,
    object_url,
)
from beaconflow.delivery.ledger import LedgerError
from beaconflow.delivery.ledger_lock import (
    EndpointLocks,
    Holder,
    LedgerBusy,
    Verdict,
    busy_message,
    judge,
    lock_name,
    taken_over_message,
    takeover_note,
)

log = logging.getLogger("beaconflow")

#: Times a take is tried again when the lock changes between two calls.
_ATTEMPTS = 10


def lease_name(fingerprint: str) -> str:
    """The lease object of the endpoint with this fingerprint, in the ledger directory."""
    return lock_name(fingerprint)


class RemoteLedgerLocks(EndpointLocks):
    """The leases of the endpoints a run sends to, held from :meth:`acquire` to :meth:`release`.

    The same interface as :class:`~beaconflow.delivery.ledger_lock.LedgerLocks`, on
    ``store`` (the ledger ``directory``'s, which is only named in messages). ``on_lost``
    is called from the heartbeat thread when a lease was taken over, or could not be
    renewed for half of ``stale_after``. ``options``: how the store was reached, for the
    run's senders, which read the lease objects through a store of their own
    (:meth:`lease`). ``clock`` (epoch seconds), ``host``, ``pid`` and ``exists`` are
    injectable for tests; ``heartbeat_every`` 0 starts no heartbeat thread.
    """

    def __init__(
        self,
        directory: str,
        fingerprints: Iterable[str],
        store: LeaseStore,
        *,
        options: StoreOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(directory, fingerprints, **kwargs)
        self._store = store
        self._options = options or StoreOptions()
        self._held: dict[str, str] = {}  # fingerprint -> the version of our lease object
        self._renewed = 0.0  # when every lease was last written (clock)
        self._store_checked = False

    def _store_options(self) -> StoreOptions | None:
        return self._options

    def _new_holder(self, now: float) -> Holder:
        # a run id too: two containers that are both pid 1 on one host are two holders
        self._renewed = now
        return Holder(self._host, self._pid, now, now, uuid.uuid4().hex[:16])

    def _acquire_one(self, fingerprint: str) -> str:
        assert self._holder is not None
        name = lease_name(fingerprint)
        data = self._holder.to_bytes()
        note = ""  # the takeover last tried, said if a retry of it is what we then find
        for _ in range(_ATTEMPTS):
            version = self._store.create(name, data)
            if version is not None:
                self._held[fingerprint] = version
                self._check_store(fingerprint, data)
                return ""
            seen = self._store.read(name)
            if seen is None:  # released meanwhile: create it again
                continue
            found = Holder.from_bytes(seen[0])
            if found is None:
                # nothing of beaconflow's writes a lease but whole: not a run that is starting
                raise LedgerError(
                    f"the ledger {self._directory} has a lock object {name} that names no "
                    "holder; nothing was done: remove it if no run is using the ledger"
                )
            if self._holder.same_run(found):
                # our own write, sent again by the store's client after it had succeeded
                self._held[fingerprint] = seen[1]
                return note
            verdict, why = judge(
                found,
                os_lock_free=False,  # a store has no OS lock: the holder and its age decide
                now=self._clock(),
                host=self._host,
                exists=self._exists,
                stale_after=self._stale_after,
            )
            if verdict is Verdict.HELD:
                raise LedgerBusy(busy_message(self._directory, fingerprint, found))
            note = takeover_note(fingerprint, found, why)
            version = self._store.replace(name, data, seen[1])
            if version is None:  # another run changed it first: judge what it wrote
                continue
            self._held[fingerprint] = version
            return note
        raise LedgerBusy(busy_message(self._directory, fingerprint, None))

    def _check_store(self, fingerprint: str, data: bytes) -> None:
        """Refuse a store that ignores the preconditions: it would let two runs hold a lease.

        Once per run, on the first lease created: creating it again and replacing it at a
        version it does not have must both be refused. (S3-compatible stores are not all
        S3: one that ignored If-None-Match would let every run "create" the same lease.)
        """
        if self._store_checked:
            return
        self._store_checked = True
        name = lease_name(fingerprint)
        if (
            self._store.create(name, data) is None
            and self._store.replace(name, data, NO_SUCH_VERSION) is None
        ):
            return
        # the probe may have written the object again: what release must delete is there now
        seen = self._store.read(name)
        if seen is not None:
            self._held[fingerprint] = seen[1]
        raise LedgerError(
            f"the store of the ledger {self._directory} does not honour conditional writes "
            "(create only if absent, replace only if unchanged), so it cannot hold the "
            "ledger's lock; nothing was done (see docs/ledger.md)"
        )

    def heartbeat(self) -> str | None:
        """Renew every lease; why the run must stop (taken over, or not renewed), else None."""
        with self._guard:
            if self._holder is None or not self._held:
                return None
            now = self._clock()
            self._holder = replace(self._holder, heartbeat=now)
            data = self._holder.to_bytes()
            renewed = True
            for fingerprint, version in list(self._held.items()):
                try:
                    lost = self._renew(fingerprint, version, data)
                except LeaseStoreError as error:
                    # the store unreachable: the next beat tries again, and the run stops
                    # itself below before another run may take the lease over
                    where = object_url(self._directory, lease_name(fingerprint))
                    log.warning("ledger lock heartbeat not written: %s: %s", where, error.reason)
                    renewed = False
                    continue
                if lost:
                    return lost
            if renewed:
                self._renewed = now
            elif now - self._renewed > self._stale_after / 2:
                return (
                    f"the ledger's lock could not be renewed for {now - self._renewed:.0f} s "
                    f"(another run may take it over after {self._stale_after:.0f} s)"
                )
        return None

    def _renew(self, fingerprint: str, version: str, data: bytes) -> str | None:
        """Rewrite one lease at our version; why it is lost, or None."""
        assert self._holder is not None
        name = lease_name(fingerprint)
        new = self._store.replace(name, data, version)
        if new is not None:
            self._held[fingerprint] = new
            return None
        seen = self._store.read(name)
        found = Holder.from_bytes(seen[0]) if seen else None
        if seen is not None and self._holder.same_run(found):
            # our own write, sent again by the store's client after it had succeeded
            self._held[fingerprint] = seen[1]
            return None
        del self._held[fingerprint]  # not ours: release must leave it alone
        if seen is None:
            return f"the ledger's lock of endpoint {fingerprint} was removed by another run"
        return taken_over_message(fingerprint, found)

    def release(self) -> None:
        """Delete the lease objects that are still ours (at our version)."""
        beater, self._beater = self._beater, None
        if beater is not None:
            beater.stop()
        with self._guard:
            for fingerprint, version in self._held.items():
                name = lease_name(fingerprint)
                try:
                    # read first: a store that ignored If-Match on a delete would otherwise
                    # remove the lease of a run that took it over since our last heartbeat
                    seen = self._store.read(name)
                    if seen is not None and seen[1] == version:
                        self._store.delete(name, version)
                except LeaseStoreError as error:
                    log.warning(
                        "the ledger's lock %s was not removed (%s): the next run takes it over, "
                        "at once on this host, else once its heartbeat is %.0f s old",
                        name,
                        error,
                        self._stale_after,
                    )
            self._held.clear()
