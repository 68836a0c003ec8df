"""The delivery ledger: which messages were delivered, so that no run sends them again.

A ledger is a directory of JSONL files, one object per delivered message::

    {"ledger": "<endpoint>:<message key>", "destination": "kontagent", "kind": "ins",
     "at": 1750000000, "day": 20240, "crc": "1c291ca3"}

``day`` is the UTC day of the message's event, in days since 1970-01-01, the day its entry
is filed under (:mod:`beaconflow.delivery.ledger_days`); an entry of no day (a timeless
message such as a KISSmetrics alias, or an unknown day) has no such key. An entry of a
message delivered after ambiguous attempts (requests that went out and got no answer: the
service may have counted it more than once) carries their count, ``"ambiguous": 2``, before
its ``crc``. A reader that does not know these keys ignores them.

``<endpoint>`` is a fingerprint of the destination, its base URL and its API key or
``--ledger-app`` name (never the key itself; :mod:`beaconflow.delivery.ledger_identity`), so
one ledger can serve several apps without one app's deliveries hiding another's. ``crc`` is
the CRC-32 of the line's bytes before ``,"crc":``, so that a damaged line is known as such.

Each sender appends to its own journal (``journal-<id>-<n>.v2.jsonl.open``), writing every
delivery through to the operating system as soon as the pipeline sees it, so a process
killed with SIGKILL loses at most the messages that were still in flight; the journal is
synced at least every :data:`SYNC_SECONDS` (a power loss loses at most that much more).
Entries with a day and entries of no day go into two journals of a sender. A journal is
sealed into a shard after ``max_entries`` entries and at the end of every bundle: a seal
record (:mod:`beaconflow.delivery.ledger_check`) giving the entries' count, length and
SHA-256, their count per endpoint fingerprint and destination, and the first and last of
their days, is appended, the file synced and renamed, the directory synced, and the writer's
manifest (``manifest-<id>.json``, every shard it sealed) replaced the same way. A shard of
dated entries is named with their range of days (``shard-<id>-<n>.d20250601-20250603.v2.jsonl``,
first and last day, ``YYYYMMDD``), one of entries of no day without
(``shard-<id>-<n>.v2.jsonl``): a run reads only the shards whose range meets its messages'
days, and every file without a range (:class:`~beaconflow.delivery.ledger_days.LedgerDays`).
On filesystems without appends (``gs://``, ``s3://``) entries are buffered and each shard is
written whole to a temporary name, then renamed.

Files whose names lack ``.v2`` were written by releases before ledger format 2 (no seal,
no CRC, fingerprints of the destination and key only); they are read as they always were,
by every run, as are journals and the shards of releases before days were filed (no range
in their names).

A write that fails (a full disk, a read-only mount) raises :class:`LedgerError` naming the
directory and the system's error, and the writer stays failed: every later record raises
the same error at once, so the sender stops instead of sending what it cannot record.
:func:`check_writable` makes the same test before a run sends anything.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

from beaconflow.delivery.ledger_days import days_mark, entry_day
from beaconflow.model.errors import BeaconflowError, io_problem
from beaconflow.model.message import Message
from beaconflow.model.words import plural

log = logging.getLogger("beaconflow.ledger")

SHARD_SUFFIX = ".jsonl"
JOURNAL_SUFFIX = ".jsonl.open"
#: What marks a file of ledger format 2 in its name (``shard-<id>-<n>.v2.jsonl``).
FORMAT2_MARK = ".v2."
#: The ledger format this release writes (``ledger.json``'s ``format``).
FORMAT = 2
#: Seconds between checks that a journal is still in the ledger (and synced): a deleted or
#: unreachable ledger stops the run within about this long.
CHECK_SECONDS = 1.0
#: The most seconds a recorded delivery stays unsynced in a journal (local ledgers): what a
#: power loss can make the ledger forget, besides the requests in flight.
SYNC_SECONDS = 1.0
#: Starts every seal record: the last line of a sealed shard of format 2.
SEAL_PREFIX = b'{"sealed":'
_CRC_MARK = b',"crc":"'


class LedgerError(BeaconflowError, OSError):
    """The ledger cannot be written; the text names the directory and the error."""


def _describe(directory: str, error: BaseException) -> str:
    return io_problem("ledger", directory, error)


def make_directories(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, but a file in the way is ``Not a directory``.

    ``os.makedirs`` says ``File exists`` when ``path`` itself is a file, which reads as if
    the folder were there already: the folder cannot be made because a file has its name.
    """
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path) from None


def open_private(path: str, *, append: bool) -> IO[bytes]:
    """A local ledger file opened for writing, readable by its owner only (0600).

    The ledger says which of a user's messages were delivered, and when: like the dead
    letter, it is nobody else's to read, whatever the umask.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    return os.fdopen(descriptor, "ab" if append else "wb")


def check_writable(directory: str) -> None:
    """Create the ledger directory if needed and write, sync and delete a probe file in it.

    Raises LedgerError when it cannot, before anything is sent.
    """
    probe = f".probe-{uuid.uuid4().hex[:12]}"
    try:
        if _is_local(directory):
            local = _local_path(directory)
            make_directories(local)
            path = os.path.join(local, probe)
            with open(path, "wb") as handle:
                handle.write(b"{}\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.remove(path)
            return
        filesystems = _filesystems()
        if not filesystems.exists(directory):
            filesystems.mkdirs(directory)
        path = filesystems.join(directory, probe)
        with filesystems.create(path) as handle:
            handle.write(b"{}\n")
        filesystems.delete([path])
    except Exception as error:  # Beam's filesystems raise their own errors for remote paths
        raise LedgerError(_describe(directory, error)) from None


def ledger_key(fingerprint: str, message: Message) -> str:
    """The ledger's key of a message sent to the endpoint with this fingerprint."""
    return f"{fingerprint}:{message.key}"


def message_key(key: str) -> str:
    """The message key inside a ledger key."""
    return key.rpartition(":")[2]


def is_local(directory: str) -> bool:
    """Whether the ledger is on a local or mounted filesystem (appends, directory syncs)."""
    return "://" not in directory or directory.startswith("file://")


_is_local = is_local


def local_path(directory: str) -> str:
    """The operating system's path of a local ledger."""
    return directory.removeprefix("file://")


_local_path = local_path


def beam_filesystems() -> Any:
    """Beam's FileSystems, imported on first use (a sender process pays no Beam import)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


_filesystems = beam_filesystems


def sync_directory(directory: str) -> None:
    """Make the renames in a local directory durable (a no-op for other filesystems).

    A rename is a change to the directory: until the directory itself is synced, a power
    loss can undo it, leaving the journal where the shard should be, or no manifest.
    """
    if not is_local(directory):
        return
    descriptor = os.open(local_path(directory), os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def is_format2(path: str) -> bool:
    """Whether a shard or journal was written in ledger format 2 (seal record, CRCs)."""
    return FORMAT2_MARK in path.rpartition("/")[2]


def is_journal(path: str) -> bool:
    """Whether a ledger file is an unsealed journal (of a running or a killed run)."""
    return path.endswith(JOURNAL_SUFFIX)


def ledger_files(directory: str) -> list[str]:
    """Every shard and journal in the ledger directory (none when it does not exist yet)."""
    filesystems = _filesystems()
    pattern = filesystems.join(directory, "*.jsonl*")
    try:
        matched = filesystems.match([pattern])[0].metadata_list
    except Exception:  # Beam raises when the directory itself does not exist
        return []
    return sorted(m.path for m in matched if m.path.endswith((SHARD_SUFFIX, JOURNAL_SUFFIX)))


def entry_line(
    key: str, destination: str, kind: str, at: int, ambiguous: int = 0, day: int | None = None
) -> bytes:
    """One ledger line of format 2, its CRC included, newline-terminated.

    ``ambiguous``: the message's ambiguous attempts before it was delivered, written only
    when there were some. ``day``: the event day it is filed under (:func:`entry_day`),
    written only when it has one.
    """
    entry: dict[str, object] = {"ledger": key, "destination": destination, "kind": kind, "at": at}
    if day is not None:
        entry["day"] = day
    if ambiguous:
        entry["ambiguous"] = ambiguous
    body = json.dumps(entry, separators=(",", ":")).encode()[:-1]
    return body + _CRC_MARK + b"%08x" % zlib.crc32(body) + b'"}\n'


def checked_entry(line: bytes) -> dict[str, Any] | None:
    """The entry of a format-2 line (without its newline) whose CRC holds, else None."""
    body, mark, tail = line.rpartition(_CRC_MARK)
    if not mark or len(tail) != 10 or not tail.endswith(b'"}'):
        return None
    try:
        if int(tail[:8], 16) != zlib.crc32(body):
            return None
        entry = json.loads(body + b"}")
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("ledger"), str):
        return None
    return entry


def legacy_entry(line: bytes) -> dict[str, Any] | None:
    """The entry of a line of format 1 (no CRC), or None when it does not parse."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("ledger"), str):
        return None
    return entry


def file_entries(path: str, data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The readable entries of one ledger file's bytes, and how many lines were not.

    A seal record is neither. A format-2 line counts only when its CRC holds.
    """
    entries: list[dict[str, Any]] = []
    unreadable = 0
    read = checked_entry if is_format2(path) else legacy_entry
    for line in data.split(b"\n"):
        if not line.strip(b" \t\r\x00") or line.startswith(SEAL_PREFIX):
            if line.strip(b" \t\r") and not line.startswith(SEAL_PREFIX):
                unreadable += 1  # zeros where a power loss left the disk unwritten
            continue
        entry = read(line)
        if entry is None:
            unreadable += 1
        else:
            entries.append(entry)
    return entries, unreadable


def read_ledger_file(path: str, legacy: Mapping[str, str] | None = None) -> Iterator[str]:
    """The ledger keys in one shard or journal; a torn or garbled line is skipped.

    ``legacy`` maps fingerprints of ledger format 1 to this run's: an entry of a format-1
    file made for one of this run's endpoints is given the endpoint's fingerprint of today.
    """
    with _filesystems().open(path) as handle:
        data = handle.read()
    entries, unreadable = file_entries(path, data)
    renamed = legacy if legacy and not is_format2(path) else None
    for entry in entries:
        key: str = entry["ledger"]
        if renamed:
            fingerprint, colon, rest = key.partition(":")
            if colon and fingerprint in renamed:
                key = f"{renamed[fingerprint]}:{rest}"
        yield key
    if unreadable:
        lines = plural(unreadable, "unreadable line")
        log.warning("ledger %s: %s skipped (a torn write)", path, lines)


class LedgerKeys:
    """``read_ledger_file`` with the run's format-1 fingerprints, for Beam (picklable).

    ``wanted``: the run's fingerprints; the keys of other endpoints (another app, another
    URL sharing the ledger's folder) can match none of the run's messages and are left out,
    so that the join holds the run's own deliveries only. None: every key.
    """

    def __init__(self, legacy: Mapping[str, str], wanted: Iterable[str] | None = None) -> None:
        self._legacy = dict(legacy)
        self._wanted = None if wanted is None else frozenset(wanted)

    def __call__(self, path: str) -> Iterator[str]:
        keys = read_ledger_file(path, self._legacy)
        wanted = self._wanted
        if wanted is None:
            return keys
        return (key for key in keys if key.partition(":")[0] in wanted)


def seal_line(
    entries: int,
    length: int,
    sha256: str,
    endpoints: Mapping[tuple[str, str], int] | None = None,
    days: tuple[int, int] | None = None,
) -> bytes:
    """The line that seals a shard of ``entries`` entry lines, ``length`` bytes in all.

    ``endpoints``: its entries per (fingerprint, destination), written as ``"endpoints":
    {fingerprint: {destination: n}}`` so that a run's check before sending learns whose
    deliveries the shard holds without parsing its entries (None: not written). ``days``:
    the first and last event day of its entries, which its name gives too, written as
    ``"days": [first, last]`` (None, a shard of entries of no day: not written).
    """
    seal: dict[str, Any] = {"entries": entries, "bytes": length, "sha256": sha256}
    if endpoints is not None:
        nested: dict[str, dict[str, int]] = {}
        for (fingerprint, destination), count in sorted(endpoints.items()):
            nested.setdefault(fingerprint, {})[destination] = count
        seal["endpoints"] = nested
    if days is not None:
        seal["days"] = list(days)
    return SEAL_PREFIX + json.dumps(seal, separators=(",", ":")).encode() + b"}\n"


def entry_endpoint(key: str, destination: str) -> tuple[str, str]:
    """An entry's endpoint as a seal record counts it: the key's fingerprint, the destination."""
    return key.partition(":")[0], destination


def write_atomically(directory: str, name: str, data: bytes) -> None:
    """Write a file of the ledger whole: a temporary name, synced, renamed, directory synced.

    On ``gs://`` and ``s3://`` an object appears whole when it is closed; it is still
    written under a temporary name first, so that a reader never sees a partial one.
    """
    if is_local(directory):
        local = local_path(directory)
        temporary = os.path.join(local, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open_private(temporary, append=False) as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, os.path.join(local, name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise
        sync_directory(directory)
        return
    filesystems = _filesystems()
    temporary = filesystems.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    target = filesystems.join(directory, name)
    with filesystems.create(temporary) as handle:
        handle.write(data)
    if filesystems.exists(target):
        filesystems.delete([target])
    filesystems.rename([temporary], [target])


def manifest_name(writer: str) -> str:
    """The manifest of one writer: every shard it sealed."""
    return f"manifest-{writer}.json"


def manifest_bytes(writer: str, shards: Iterable[tuple[str, int]]) -> bytes:
    """A manifest's content: the writer and its shards, with their entries' counts."""
    listed = [{"name": name, "entries": entries} for name, entries in shards]
    manifest = {"format": FORMAT, "writer": writer, "shards": listed}
    return json.dumps(manifest, indent=1).encode() + b"\n"


class _Journal:
    """One journal of a writer (dated entries, or entries of no day) since its last seal.

    What it holds is its seal record's input: entries, bytes, their SHA-256 and endpoints,
    and the range of their event days (``first``, ``last``; None for a journal of no day).
    """

    def __init__(self, sequence: int) -> None:
        self.sequence = sequence
        self.handle: IO[bytes] | None = None
        self.path = ""
        self.hash = hashlib.sha256()
        self.length = 0
        self.count = 0
        self.endpoints: Counter[tuple[str, str]] = Counter()
        self.buffer: list[bytes] = []
        self.dirty = False
        self.first: int | None = None
        self.last: int | None = None

    def add_days(self, days: Iterable[int]) -> None:
        for day in days:
            if self.first is None or day < self.first:
                self.first = day
            if self.last is None or day > self.last:
                self.last = day

    def days(self) -> tuple[int, int] | None:
        if self.first is None or self.last is None:
            return None
        return self.first, self.last


class LedgerWriter:
    """Records delivered messages of one sender; see the module docstring for the format.

    Entries with an event day and entries of no day go into two journals of their own
    (sealed into shards with and without a range of days), so that an entry of no day
    never makes a shard of dated entries one that every run reads.
    """

    def __init__(
        self,
        directory: str,
        fingerprints: dict[str, str],
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        sync_seconds: float | None = SYNC_SECONDS,
    ) -> None:
        self._directory = directory
        self._clock = clock
        self._checked_at = clock()
        self._fingerprints = fingerprints
        self._max_entries = max_entries
        self._local = _is_local(directory)
        self._id = uuid.uuid4().hex[:12]
        #: the number the next journal's name takes
        self._sequence = 0
        #: the open journals: True for dated entries, False for entries of no day
        self._journals: dict[bool, _Journal] = {}
        self._sealed: list[tuple[str, int]] = []
        # record() runs on the sender's thread, seal() on the worker's, the syncer on its own
        self._lock = threading.Lock()
        self._failed: LedgerError | None = None
        self._closing = threading.Event()
        self._syncer: threading.Thread | None = None
        self._sync_seconds = sync_seconds
        try:
            if self._local:
                make_directories(_local_path(directory))
            elif not _filesystems().exists(directory):
                _filesystems().mkdirs(directory)
        except Exception as error:
            raise LedgerError(_describe(directory, error)) from None

    def _name(self, sequence: int, suffix: str) -> str:
        return f"{self._id}-{sequence:06d}.v2{suffix}"

    def record(self, messages: Iterable[Message]) -> None:
        """Add delivered messages; on a local disk they reach the OS before this returns."""
        with self._lock:
            self._record(messages)

    def record_one(self, message: Message, ambiguous: int = 0) -> None:
        """Add one delivered message (the sender calls this as each answer comes in).

        ``ambiguous``: its ambiguous attempts before the delivery (marked in its entry).
        """
        if not ambiguous:
            self.record((message,))
            return
        key = ledger_key(self._fingerprints[message.destination], message)
        self.record_keyed(
            key, message.destination, message.kind, ambiguous=ambiguous, day=message.day
        )

    def record_keyed(
        self,
        key: str,
        destination: str,
        kind: str,
        at: int | None = None,
        *,
        ambiguous: int = 0,
        day: int | None = None,
    ) -> None:
        """Add one delivery by its ledger key (a sender process gets keys, not messages).

        ``day``: the message's event day (:attr:`Message.day`), None when unknown.
        """
        when = int(time.time()) if at is None else at
        filed = entry_day(destination, kind, day)
        with self._lock:
            self._write(
                filed is not None,
                [entry_line(key, destination, kind, when, ambiguous, filed)],
                [entry_endpoint(key, destination)],
                () if filed is None else (filed,),
            )

    def _record(self, messages: Iterable[Message]) -> None:
        now = int(time.time())
        fingerprints = self._fingerprints
        lanes: dict[bool, tuple[list[bytes], list[tuple[str, str]], list[int]]] = {}
        for m in messages:
            day = entry_day(m.destination, m.kind, m.day)
            lines, endpoints, days = lanes.setdefault(day is not None, ([], [], []))
            fingerprint = fingerprints[m.destination]
            lines.append(entry_line(ledger_key(fingerprint, m), m.destination, m.kind, now, 0, day))
            endpoints.append((fingerprint, m.destination))
            if day is not None:
                days.append(day)
        for dated, (lines, endpoints, days) in lanes.items():
            self._write(dated, lines, endpoints, days)

    def _fail(self, error: BaseException) -> LedgerError:
        """Remember the first failure; close the journals without writing to them again."""
        if self._failed is None:
            self._failed = LedgerError(_describe(self._directory, error))
            for journal in self._journals.values():
                handle, journal.handle = journal.handle, None
                if handle is not None:
                    # what the buffer held is lost; the journal's lines before it are kept
                    with contextlib.suppress(OSError):
                        handle.close()
        return self._failed

    def _write(
        self,
        dated: bool,
        lines: list[bytes],
        endpoints: list[tuple[str, str]],
        days: Iterable[int],
    ) -> None:
        """Write entry lines into the dated journal or the one of no day.

        ``endpoints``: each line's (fingerprint, destination); ``days``: the lines' days.
        """
        if not lines:
            return
        if self._failed is not None:
            raise self._failed
        try:
            self._write_lines(dated, lines, endpoints, days)
        except LedgerError:
            raise
        except Exception as error:
            raise self._fail(error) from None

    def _write_lines(
        self,
        dated: bool,
        lines: list[bytes],
        endpoints: list[tuple[str, str]],
        days: Iterable[int],
    ) -> None:
        journal = self._journals.get(dated)
        if journal is None:
            journal = self._journals[dated] = _Journal(self._sequence)
            self._sequence += 1
        data = b"".join(lines)
        if self._local:
            if journal.handle is None:
                journal.path = os.path.join(
                    _local_path(self._directory),
                    "journal-" + self._name(journal.sequence, JOURNAL_SUFFIX),
                )
                journal.handle = open_private(journal.path, append=True)
                self._start_syncer()
            journal.handle.write(data)
            journal.handle.flush()
            journal.dirty = True
            now = self._clock()
            if now - self._checked_at >= CHECK_SECONDS:
                self._checked_at = now
                for each in self._journals.values():
                    self._check_journal(each)
        else:
            journal.buffer.append(data)
        journal.hash.update(data)
        journal.length += len(data)
        journal.count += len(lines)
        journal.endpoints.update(endpoints)
        journal.add_days(days)
        if journal.count >= self._max_entries:
            self._seal_journal(dated)
            self._write_manifest()

    def _check_journal(self, journal: _Journal) -> None:
        """Sync a journal and make sure it is still in the ledger (raises OSError if not).

        A write can succeed into a journal whose directory was deleted or moved, or on a
        filesystem that reports errors only when syncing (NFS): without this the run would
        find out when it seals, at the end of a bundle, after sending everything.
        """
        if journal.handle is None:
            return
        os.fsync(journal.handle.fileno())
        journal.dirty = False
        if os.fstat(journal.handle.fileno()).st_nlink == 0 or not os.path.exists(journal.path):
            raise FileNotFoundError(
                errno.ENOENT, f"the journal {os.path.basename(journal.path)} was removed"
            )

    def _start_syncer(self) -> None:
        """Sync the journals every ``sync_seconds`` while entries are waiting (local only).

        Writes between checks reach the OS but not the disk; without this, deliveries
        recorded just before the sender went quiet could wait for the seal, at the end of
        the bundle, and a power loss in between would forget them.
        """
        if self._syncer is not None or self._sync_seconds is None:
            return
        self._syncer = threading.Thread(target=self._sync_loop, name="ledger-sync", daemon=True)
        self._syncer.start()

    def _sync_loop(self) -> None:
        assert self._sync_seconds is not None
        while not self._closing.wait(self._sync_seconds):
            with self._lock:
                if self._failed is not None:
                    continue
                for journal in self._journals.values():
                    if journal.handle is None or not journal.dirty:
                        continue
                    try:
                        os.fsync(journal.handle.fileno())
                        journal.dirty = False
                    except OSError as error:
                        self._fail(error)  # the next record raises it
                        break

    def seal(self) -> None:
        """Turn what was recorded so far into durable shards (write, sync, rename).

        Raises LedgerError when it cannot (the entries stay in the journal, if anywhere).
        """
        with self._lock:
            if self._failed is not None:
                raise self._failed
            try:
                sealed = False
                for dated in sorted(self._journals):
                    sealed = self._seal_journal(dated) or sealed
                if sealed:
                    self._write_manifest()
            except LedgerError:
                raise
            except Exception as error:
                raise self._fail(error) from None

    @property
    def failed(self) -> LedgerError | None:
        """The error that made this writer fail, or None while it works."""
        return self._failed

    def _seal_journal(self, dated: bool) -> bool:
        """Seal one journal into its shard (the manifest is the caller's); whether it had any."""
        journal = self._journals.get(dated)
        if journal is None or journal.count == 0:
            return False
        days = journal.days()
        mark = "" if days is None else days_mark(*days)
        shard = f"shard-{self._id}-{journal.sequence:06d}{mark}.v2{SHARD_SUFFIX}"
        seal = seal_line(
            journal.count, journal.length, journal.hash.hexdigest(), journal.endpoints, days
        )
        if self._local and journal.handle is not None:
            handle = journal.handle
            handle.write(seal)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            journal.handle = None
            journal.dirty = False
            directory = _local_path(self._directory)
            os.replace(journal.path, os.path.join(directory, shard))
            sync_directory(self._directory)
        elif journal.buffer:
            filesystems = _filesystems()
            temporary = filesystems.join(self._directory, f".{shard}.tmp")
            with filesystems.create(temporary) as target:
                target.write(b"".join(journal.buffer) + seal)
            filesystems.rename([temporary], [filesystems.join(self._directory, shard)])
            journal.buffer = []
        del self._journals[dated]
        self._sealed.append((shard, journal.count))
        return True

    def _write_manifest(self) -> None:
        write_atomically(
            self._directory, manifest_name(self._id), manifest_bytes(self._id, self._sealed)
        )

    def close(self) -> None:
        """Seal what is left; a writer that failed only lets go of its journals."""
        self._closing.set()
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None
        if self._failed is None:
            self.seal()
