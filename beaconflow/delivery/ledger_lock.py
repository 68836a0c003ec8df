"""One run at a time per ledger and endpoint: the ledger's lock files.

Two runs that send to the same endpoint (destination, URL and API key or --ledger-app, as
:func:`~beaconflow.delivery.ledger_identity.endpoint_fingerprint` names it) with the same
ledger would both read the ledger before either records anything, and send everything
twice. So a run
takes the lock of each endpoint it sends to before it reads the ledger, and holds it to its
end; runs for other endpoints (another app's key) sharing the ledger are not blocked.

A lock is the file ``lock-<fingerprint>.json`` in the ledger directory, held with an OS lock
(``flock``, exclusive, never waiting) and holding its holder as JSON::

    {"host": "etl-1", "pid": 4242, "since": "2025-06-14T02:00:03Z",
     "heartbeat": "2025-06-14T02:10:13Z"}

The holder rewrites ``heartbeat`` every :data:`HEARTBEAT_SECONDS` from a thread and removes
the file when the run ends. A run that finds the lock held raises :class:`LedgerBusy`
(exit 75) naming the holder. A lock whose holder is gone is taken over, with a warning
saying whose and why (:func:`judge` decides):

- the OS lock is free (the kernel lets go of it when its process dies, even by SIGKILL), and
  the holder was on this host, or its heartbeat is old;
- its process no longer exists on this host;
- its heartbeat is older than :data:`STALE_SECONDS` (a frozen process, or a host that is
  gone while its NFS lock lingers). The OS lock is then still held: the file is replaced by
  a new one under ``lock-<fingerprint>.json.break`` (held while replacing, so that two runs
  cannot both take it over), and the old holder's heartbeat thread, which checks that the
  file is still its own, stops its run as soon as it wakes (exit 4).

A frozen holder wakes all at once, and its senders would send before its heartbeat thread
had looked: so they check the run's :class:`Lease` before every request
(:mod:`beaconflow.delivery.lease_watch`).

Both limits are settable from the environment (:class:`LockLimits`).

The OS lock's file is opened close-on-exec and closed in forked children, so sender
processes never hold it: a run killed with SIGKILL releases it at once.

Local and mounted paths are locked here (see :func:`is_lockable`); a ``gs://`` or ``s3://``
ledger holds a lease object instead, with the same holder and the same rules
(:mod:`beaconflow.delivery.ledger_lease`). No Beam, no HTTP::

    python -m pytest tests/delivery/test_ledger_lock.py
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Self

from beaconflow.delivery.lease_store import StoreOptions
from beaconflow.delivery.ledger import LedgerError
from beaconflow.model.errors import TryLaterError, io_problem, os_reason

log = logging.getLogger("beaconflow")

#: Seconds between two heartbeats of a holder.
HEARTBEAT_SECONDS = 10.0
#: A holder whose heartbeat is older than this (seconds) is taken to be gone.
STALE_SECONDS = 300.0
#: The environment settings of those two limits (:meth:`LockLimits.from_environment`).
STALE_ENV = "BEACONFLOW_LEDGER_LOCK_STALE_SECONDS"
HEARTBEAT_ENV = "BEACONFLOW_LEDGER_LOCK_HEARTBEAT_SECONDS"

LOCK_PREFIX = "lock-"
LOCK_SUFFIX = ".json"
BREAK_SUFFIX = ".break"


class LedgerBusy(TryLaterError):
    """Another run holds the ledger's lock of an endpoint this run sends to (exit 75)."""


def is_lockable(directory: str) -> bool:
    """Whether the ledger is a local or mounted path, which has OS locks (gs:// has none)."""
    return "://" not in directory or directory.startswith("file://")


def lock_name(fingerprint: str) -> str:
    """The name of the lock of the endpoint with this fingerprint: a file, or a lease object."""
    return LOCK_PREFIX + fingerprint + LOCK_SUFFIX


def lock_path(directory: str, fingerprint: str) -> str:
    """The lock file of the endpoint with this fingerprint in the ledger ``directory``."""
    return os.path.join(directory.removeprefix("file://"), lock_name(fingerprint))


def iso(moment: float) -> str:
    """An instant as ISO-8601 UTC to the second: ``2025-06-14T02:00:03Z``."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _instant(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: host, process id, since when and its last heartbeat (epoch seconds).

    ``lease`` is a random id of the holding run, written in a lease object of a remote
    ledger (:mod:`beaconflow.delivery.ledger_lease`): there no OS lock tells two runs
    apart that share a host name and a process id (containers on the host's network,
    each its own pid 1), or two holders in one process. Empty in lock files.
    """

    host: str
    pid: int
    since: float
    heartbeat: float
    lease: str = ""

    def describe(self) -> str:
        return f"host {self.host} pid {self.pid} since {iso(self.since)}"

    def to_bytes(self) -> bytes:
        data: dict[str, object] = {
            "host": self.host,
            "pid": self.pid,
            "since": iso(self.since),
            "heartbeat": iso(self.heartbeat),
        }
        if self.lease:
            data["lease"] = self.lease
        return json.dumps(data).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> Holder | None:
        """The holder a lock file names; None when it is empty or not readable as one."""
        try:
            raw = json.loads(data)
            return cls(
                str(raw["host"]),
                int(raw["pid"]),
                _instant(raw["since"]),
                _instant(raw["heartbeat"]),
                str(raw.get("lease", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def same_run(self, other: Holder | None) -> bool:
        """Whether ``other`` is the same holder, whatever its heartbeat says."""
        return other is not None and (self.host, self.pid, int(self.since), self.lease) == (
            other.host,
            other.pid,
            int(other.since),
            other.lease,
        )


@dataclass(frozen=True)
class LockLimits:
    """How often a holder beats, and how old a heartbeat may be before its lock is taken over.

    Settable from the environment (:data:`STALE_ENV`, :data:`HEARTBEAT_ENV`, in seconds):
    for tests that freeze a holder for seconds rather than minutes, and for hosts whose
    freezes (a VM snapshot, a suspended laptop) outlast the default. A heartbeat must come
    at least twice per limit, so that one late beat does not make a live holder look gone.
    """

    stale_after: float = STALE_SECONDS
    heartbeat_every: float = HEARTBEAT_SECONDS

    def __post_init__(self) -> None:
        if not self.heartbeat_every * 2 <= self.stale_after:
            raise ValueError(
                f"{HEARTBEAT_ENV} ({self.heartbeat_every:g}) must be at most half of "
                f"{STALE_ENV} ({self.stale_after:g}): a live holder would look gone between "
                "two heartbeats"
            )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> LockLimits:
        """The limits the environment sets, the defaults where it sets none.

        ValueError, naming the variable, for a value that is not a number of seconds above 0.
        """
        return cls(
            _seconds(environ, STALE_ENV, STALE_SECONDS),
            _seconds(environ, HEARTBEAT_ENV, HEARTBEAT_SECONDS),
        )


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a number of seconds above 0, got {text!r}")
    return value


def busy_message(directory: str, fingerprint: str, holder: Holder | None) -> str:
    """What a run that finds the lock of ``fingerprint`` held says (exit 75)."""
    who = holder.describe() if holder else "a run that is starting"
    return (
        f"the ledger {directory} is in use for endpoint {fingerprint} by {who}; "
        "nothing was done, try again later"
    )


def takeover_note(fingerprint: str, holder: Holder, why: str) -> str:
    """What a run that takes the lock of ``fingerprint`` over from ``holder`` says."""
    return (
        f"taking over the ledger's lock of endpoint {fingerprint} from {holder.describe()}: {why}"
    )


def taken_over_message(fingerprint: str, holder: Holder | None) -> str:
    """Why a run whose lock of ``fingerprint`` was taken over stops (exit 4)."""
    who = holder.describe() if holder else "another run"
    return f"the ledger's lock of endpoint {fingerprint} was taken over by {who}"


class HeartbeatThread:
    """Calls ``beat`` every ``every`` seconds until stopped, or until it names a loss.

    ``beat`` returns None while every lock is still the run's, else why it lost one, which
    goes to ``on_lost`` (the thread then ends: the run is stopping).
    """

    def __init__(
        self,
        beat: Callable[[], str | None],
        every: float,
        on_lost: Callable[[str], object] | None,
    ) -> None:
        self._beat = beat
        self._every = every
        self._on_lost = on_lost
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="beaconflow-ledger-lock", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop beating; wait for a beat in progress unless called from the thread itself."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._every):
            lost = self._beat()
            if lost:
                if self._on_lost is not None:
                    self._on_lost(lost)
                return


class Verdict(Enum):
    """What a run does with a lock it finds: take it, take it over, or leave it (exit 75)."""

    FREE = "free"
    TAKE_OVER = "take over"
    HELD = "held"


def process_exists(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def judge(
    holder: Holder | None,
    *,
    os_lock_free: bool,
    now: float,
    host: str,
    exists: Callable[[int], bool] = process_exists,
    stale_after: float = STALE_SECONDS,
) -> tuple[Verdict, str]:
    """What to do with a lock: the verdict and why (the why is shown on a takeover).

    ``holder`` is what the lock file names (None: nothing readable); ``os_lock_free`` whether
    this process got the OS lock. A holder on another host is not seen by this host's OS
    lock on a filesystem that does not share locks between hosts, so there the heartbeat
    decides alone.
    """
    if holder is None:
        # held but not written yet: a run that is just taking it
        return (Verdict.FREE, "") if os_lock_free else (Verdict.HELD, "")
    age = now - holder.heartbeat
    if age > stale_after:
        return Verdict.TAKE_OVER, f"its heartbeat is {age:.0f} s old (limit {stale_after:.0f} s)"
    if holder.host == host:
        if not exists(holder.pid):
            return Verdict.TAKE_OVER, "its process no longer exists"
        if os_lock_free:
            # the process id was reused by another process after the holder died
            return Verdict.TAKE_OVER, "it no longer holds the lock"
    return Verdict.HELD, ""


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` still names the open file ``fd`` (not removed or replaced)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _holder_at(path: str) -> Holder | None:
    """The holder the lock file at ``path`` names; None when none can be read there."""
    try:
        with open(path, "rb") as current:
            return Holder.from_bytes(current.read())
    except OSError:
        return None


@dataclass(frozen=True)
class Lease:
    """A run's hold on its ledger locks, as its senders check it.

    (:class:`~beaconflow.delivery.lease_watch.LeaseWatch`.) ``holder``: the run, as its
    locks name it; ``stale_after``: the limit other runs judge its heartbeat by;
    ``heartbeat_every``: how often the run beats; ``store``: None for lock files, else how
    to reach the store of a ``gs://`` or ``s3://`` ledger, whose locks are lease objects.
    A value: it goes to the run's sender processes with their configuration.
    """

    directory: str
    fingerprints: tuple[str, ...]
    holder: Holder
    stale_after: float = STALE_SECONDS
    heartbeat_every: float = HEARTBEAT_SECONDS
    store: StoreOptions | None = None


def _read(fd: int) -> bytes:
    return os.pread(fd, 4096, 0)


def _write(fd: int, data: bytes) -> None:
    # same length every time but for the host: a reader sees the old or the new JSON
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    os.fsync(fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def _sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Lock files open in this process, closed in a forked child (which must not hold them).
_open_fds: weakref.WeakSet[LedgerLocks] = weakref.WeakSet()


def _close_in_child() -> None:
    for locks in list(_open_fds):
        locks.forget_in_child()


os.register_at_fork(after_in_child=_close_in_child)


class EndpointLocks(abc.ABC):
    """What both kinds of ledger locks share: the run's holder, taking, beating, releasing.

    Held from :meth:`acquire` to :meth:`release`. ``on_lost(reason)`` is called (from the
    heartbeat thread) when another run took a lock over: the run must stop sending.
    ``clock`` (epoch seconds), ``host``, ``pid`` and ``exists`` are injectable for tests;
    ``heartbeat_every`` 0 starts no heartbeat thread. A kind says how it takes one endpoint's
    lock (:meth:`_acquire_one`), beats (:meth:`heartbeat`) and lets go (:meth:`release`).
    """

    def __init__(
        self,
        directory: str,
        fingerprints: Iterable[str],
        *,
        on_lost: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
        pid: int | None = None,
        exists: Callable[[int], bool] = process_exists,
        stale_after: float = STALE_SECONDS,
        heartbeat_every: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._directory = directory
        self._fingerprints = sorted(set(fingerprints))
        self._on_lost = on_lost
        self._clock = clock
        self._host = host or socket.gethostname()
        self._pid = os.getpid() if pid is None else pid
        self._exists = exists
        self._stale_after = stale_after
        self._heartbeat_every = heartbeat_every
        self._holder: Holder | None = None
        self._guard = threading.Lock()
        self._beater: HeartbeatThread | None = None

    @property
    def holder(self) -> Holder | None:
        """The holder its locks name, this run (None before :meth:`acquire`)."""
        return self._holder

    def _store_options(self) -> StoreOptions | None:
        """How the run's senders reach the locks: None for lock files."""
        return None

    def lease(self) -> Lease:
        """What the run's senders check before each request (after :meth:`acquire`)."""
        assert self._holder is not None, "acquire() first"
        return Lease(
            self._directory,
            tuple(self._fingerprints),
            self._holder,
            self._stale_after,
            self._heartbeat_every,
            self._store_options(),
        )

    def _new_holder(self, now: float) -> Holder:
        """The run as its locks name it, from ``now`` on."""
        return Holder(self._host, self._pid, now, now)

    def acquire(self) -> list[str]:
        """Take every endpoint's lock; the takeovers it made, as lines to show.

        Raises :class:`LedgerBusy` (holding none of them) when one is held by another run,
        and :class:`~beaconflow.delivery.ledger.LedgerError` naming the lock when it cannot
        be taken for another reason (a directory in its place, a read-only ledger, a store
        that cannot hold a lease).
        """
        self._holder = self._new_holder(self._clock())
        notes: list[str] = []
        try:
            for fingerprint in self._fingerprints:
                note = self._acquire_one(fingerprint)
                if note:
                    notes.append(note)
        except BaseException:
            self.release()
            raise
        if self._heartbeat_every > 0:
            self._beater = HeartbeatThread(self.heartbeat, self._heartbeat_every, self._on_lost)
            self._beater.start()
        return notes

    @abc.abstractmethod
    def _acquire_one(self, fingerprint: str) -> str:
        """Take one endpoint's lock; the takeover note, or ""."""

    @abc.abstractmethod
    def heartbeat(self) -> str | None:
        """Refresh every lock's heartbeat; the reason when one was taken over, else None."""

    @abc.abstractmethod
    def release(self) -> None:
        """Let go of the locks that are still ours."""

    def __enter__(self) -> Self:
        for note in self.acquire():
            log.warning("%s", note)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LedgerLocks(EndpointLocks):
    """The lock files of the endpoints a run sends to (see :class:`EndpointLocks`)."""

    def __init__(self, directory: str, fingerprints: Iterable[str], **kwargs: Any) -> None:
        super().__init__(directory.removeprefix("file://"), fingerprints, **kwargs)
        self._held: dict[str, int] = {}  # fingerprint -> open lock file

    def _new_holder(self, now: float) -> Holder:
        _open_fds.add(self)
        return super()._new_holder(now)

    def _acquire_one(self, fingerprint: str) -> str:
        path = lock_path(self._directory, fingerprint)
        try:
            return self._try_acquire(path, fingerprint)
        except OSError as error:
            where = error.filename if isinstance(error.filename, str) else path
            raise LedgerError(io_problem("ledger lock", where, error)) from None

    def _try_acquire(self, path: str, fingerprint: str) -> str:
        assert self._holder is not None
        for _ in range(10):  # a file replaced or removed between open and lock: again
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                got = _try_flock(fd)
                if got and not _same_file(fd, path):
                    continue
                found = Holder.from_bytes(_read(fd))
                verdict, why = judge(
                    found,
                    os_lock_free=got,
                    now=self._clock(),
                    host=self._host,
                    exists=self._exists,
                    stale_after=self._stale_after,
                )
                if verdict is Verdict.HELD:
                    raise LedgerBusy(self._busy(fingerprint, found))
                if got:
                    _write(fd, self._holder.to_bytes())
                    self._held[fingerprint], fd = fd, -1
                elif not self._replace(path, found, fingerprint):
                    continue
                if verdict is Verdict.TAKE_OVER and found is not None:
                    return takeover_note(fingerprint, found, why)
                return ""
            finally:
                if fd >= 0:
                    os.close(fd)
        raise LedgerBusy(self._busy(fingerprint, None))

    def _busy(self, fingerprint: str, holder: Holder | None) -> str:
        return busy_message(self._directory, fingerprint, holder)

    def _replace(self, path: str, found: Holder | None, fingerprint: str) -> bool:
        """Take over a lock whose OS lock is still held: put a new file of ours in its place.

        False when the lock changed meanwhile (judge it again). Under the break lock, so
        that of two runs taking it over, the second sees the first's fresh file.
        """
        assert self._holder is not None
        breaker = os.open(path + BREAK_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not _try_flock(breaker):
                raise LedgerBusy(self._busy(fingerprint, found))
            try:
                with open(path, "rb") as current:
                    now_found = Holder.from_bytes(current.read())
            except FileNotFoundError:
                return False
            if found is None or not found.same_run(now_found):
                return False
            temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _try_flock(fd)
                _write(fd, self._holder.to_bytes())
                os.replace(temporary, path)
                _sync_directory(os.path.dirname(path))
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.remove(temporary)
                raise
            self._held[fingerprint] = fd
            return True
        finally:
            os.close(breaker)

    def heartbeat(self) -> str | None:
        """Refresh every lock's heartbeat; the reason when one was taken over, else None."""
        with self._guard:
            if self._holder is None:
                return None
            self._holder = Holder(
                self._holder.host, self._holder.pid, self._holder.since, self._clock()
            )
            for fingerprint, fd in self._held.items():
                path = lock_path(self._directory, fingerprint)
                try:
                    lost = self._beat_one(fingerprint, fd, path)
                except OSError as error:
                    # a full disk, an I/O error: the lock stays ours while the OS lock holds,
                    # and the next beat tries again (an exception here would end the thread
                    # and let the lock go stale while this run sends)
                    log.warning("ledger lock heartbeat not written: %s: %s", path, os_reason(error))
                    continue
                if lost is not None:
                    return lost
        return None

    def _beat_one(self, fingerprint: str, fd: int, path: str) -> str | None:
        """One lock's heartbeat; the reason when it was taken over, else None.

        Read and written through the open lock file: while ``path`` is still that file,
        nothing else needs opening, so only a failing write or disk can fail it.
        """
        assert self._holder is not None
        if _same_file(fd, path):
            found = Holder.from_bytes(_read(fd))
            if self._holder.same_run(found):
                _write(fd, self._holder.to_bytes())
                return None
        else:
            found = _holder_at(path)
        return taken_over_message(fingerprint, found)

    def release(self) -> None:
        """Remove the lock files that are still ours, and let go of them."""
        beater, self._beater = self._beater, None
        if beater is not None:
            beater.stop()
        with self._guard:
            for fingerprint, fd in self._held.items():
                path = lock_path(self._directory, fingerprint)
                # removed while the OS lock holds: a run that opened it meanwhile sees that
                # its file is gone once it has the OS lock, and opens the new one
                with contextlib.suppress(OSError):  # left behind, it is taken over: its
                    if _same_file(fd, path):  # process is gone and its OS lock free
                        os.remove(path)
                os.close(fd)
            self._held.clear()
        _open_fds.discard(self)

    def forget_in_child(self) -> None:
        """In a forked child: close the lock files without letting go of the OS locks."""
        for fd in self._held.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held = {}
        self._holder = None
