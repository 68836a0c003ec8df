"""The delivery ledger: which messages were delivered, so that no run sends them again.

A ledger is a directory of JSONL files, one object per delivered message::

    {"ledger": "<endpoint>:<message key>", "destination": "kontagent", "kind": "ins",
     "at": 1750000000}

``<endpoint>`` is a fingerprint of the destination and its API key (never the key itself), so
one ledger can serve several apps without one app's deliveries hiding another's.

Each sender appends to its own journal (``journal-<id>.jsonl.open``), writing every delivery
through to the operating system as soon as the pipeline sees it, so a process killed with
SIGKILL loses at most the messages that were still in flight. A journal is sealed into a
shard (``shard-<id>.jsonl``) by closing, syncing and renaming it, after ``max_entries``
entries and at the end of every bundle. On filesystems without appends (``gs://``,
``s3://``) entries are buffered and each shard is written whole to a temporary name, then
renamed. Readers take both shards and journals, and ignore a torn last line.

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
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from beaconflow.model.errors import BeaconflowError
from beaconflow.model.message import Endpoint, Message

log = logging.getLogger("beaconflow.ledger")

SHARD_SUFFIX = ".jsonl"
#: Seconds between checks that a journal is still in the ledger (and synced): a deleted or
#: unreachable ledger stops the run within about this long.
CHECK_SECONDS = 1.0
JOURNAL_SUFFIX = ".jsonl.open"


class LedgerError(BeaconflowError, OSError):
    """The ledger cannot be written; the text names the directory and the error."""


def _describe(directory: str, error: BaseException) -> str:
    detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"ledger not writable: {directory}: {detail or type(error).__name__}"


def check_writable(directory: str) -> None:
    """Create the ledger directory if needed and write, sync and delete a probe file in it.

    Raises LedgerError when it cannot, before anything is sent.
    """
    probe = f".probe-{uuid.uuid4().hex[:12]}"
    try:
        if _is_local(directory):
            local = _local_path(directory)
            os.makedirs(local, exist_ok=True)
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


def endpoint_fingerprint(endpoint: Endpoint) -> str:
    """12 hex characters standing for a destination and its API key in the ledger."""
    seed = f"{endpoint.destination}\x00{endpoint.api_key}".encode()
    return hashlib.sha256(seed).hexdigest()[:12]


def ledger_key(fingerprint: str, message: Message) -> str:
    """The ledger's key of a message sent to the endpoint with this fingerprint."""
    return f"{fingerprint}:{message.key}"


def message_key(key: str) -> str:
    """The message key inside a ledger key."""
    return key.rpartition(":")[2]


def _is_local(directory: str) -> bool:
    return "://" not in directory or directory.startswith("file://")


def _local_path(directory: str) -> str:
    return directory.removeprefix("file://")


def _filesystems() -> Any:
    """Beam's FileSystems, imported on first use (a sender process pays no Beam import)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def ledger_files(directory: str) -> list[str]:
    """Every shard and journal in the ledger directory (none when it does not exist yet)."""
    filesystems = _filesystems()
    pattern = filesystems.join(directory, "*.jsonl*")
    try:
        matched = filesystems.match([pattern])[0].metadata_list
    except Exception:  # Beam raises when the directory itself does not exist
        return []
    return sorted(m.path for m in matched if m.path.endswith((SHARD_SUFFIX, JOURNAL_SUFFIX)))


def read_ledger_file(path: str) -> Iterator[str]:
    """The ledger keys in one shard or journal; a torn or garbled line is skipped."""
    with _filesystems().open(path) as handle:
        data = handle.read()
    skipped = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            key = json.loads(line)["ledger"]
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        if isinstance(key, str):
            yield key
    if skipped:
        log.warning("ledger %s: %d unreadable line(s) skipped (a torn write)", path, skipped)


class LedgerWriter:
    """Records delivered messages of one sender; see the module docstring for the format."""

    def __init__(
        self,
        directory: str,
        fingerprints: dict[str, str],
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._clock = clock
        self._checked_at = clock()
        self._fingerprints = fingerprints
        self._max_entries = max_entries
        self._local = _is_local(directory)
        self._id = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._count = 0
        self._journal: IO[bytes] | None = None
        self._journal_path = ""
        self._buffer: list[bytes] = []
        # record() runs on the sender's thread, seal() on the worker's
        self._lock = threading.Lock()
        self._failed: LedgerError | None = None
        try:
            if self._local:
                os.makedirs(_local_path(directory), exist_ok=True)
            elif not _filesystems().exists(directory):
                _filesystems().mkdirs(directory)
        except Exception as error:
            raise LedgerError(_describe(directory, error)) from None

    def _name(self, suffix: str) -> str:
        return f"{self._id}-{self._sequence:06d}{suffix}"

    def record(self, messages: Iterable[Message]) -> None:
        """Add delivered messages; on a local disk they reach the OS before this returns."""
        with self._lock:
            self._record(messages)

    def record_one(self, message: Message) -> None:
        """Add one delivered message (the sender calls this as each answer comes in)."""
        self.record((message,))

    def record_keyed(self, key: str, destination: str, kind: str) -> None:
        """Add one delivery by its ledger key (a sender process gets keys, not messages)."""
        with self._lock:
            self._write([self._line(key, destination, kind, int(time.time()))])

    def _record(self, messages: Iterable[Message]) -> None:
        now = int(time.time())
        fingerprints = self._fingerprints
        self._write(
            [
                self._line(ledger_key(fingerprints[m.destination], m), m.destination, m.kind, now)
                for m in messages
            ]
        )

    @staticmethod
    def _line(key: str, destination: str, kind: str, at: int) -> bytes:
        entry = {"ledger": key, "destination": destination, "kind": kind, "at": at}
        return json.dumps(entry, separators=(",", ":")).encode() + b"\n"

    def _fail(self, error: BaseException) -> LedgerError:
        """Remember the first failure; close the journal without writing to it again."""
        if self._failed is None:
            self._failed = LedgerError(_describe(self._directory, error))
            journal, self._journal = self._journal, None
            if journal is not None:
                # what the buffer held is lost; the journal's lines before it are kept
                with contextlib.suppress(OSError):
                    journal.close()
        return self._failed

    def _write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if self._failed is not None:
            raise self._failed
        try:
            self._write_lines(lines)
        except LedgerError:
            raise
        except Exception as error:
            raise self._fail(error) from None

    def _write_lines(self, lines: list[bytes]) -> None:
        if self._local:
            if self._journal is None:
                self._journal_path = os.path.join(
                    _local_path(self._directory), "journal-" + self._name(JOURNAL_SUFFIX)
                )
                self._journal = open(self._journal_path, "ab")  # noqa: SIM115 - held open on purpose
            self._journal.write(b"".join(lines))
            self._journal.flush()
            now = self._clock()
            if now - self._checked_at >= CHECK_SECONDS:
                self._checked_at = now
                self._check_journal(self._journal)
        else:
            self._buffer.extend(lines)
        self._count += len(lines)
        if self._count >= self._max_entries:
            self._seal()

    def _check_journal(self, journal: IO[bytes]) -> None:
        """Sync the journal and make sure it is still in the ledger (raises OSError if not).

        A write can succeed into a journal whose directory was deleted or moved, or on a
        filesystem that reports errors only when syncing (NFS): without this the run would
        find out when it seals, at the end of a bundle, after sending everything.
        """
        os.fsync(journal.fileno())
        if os.fstat(journal.fileno()).st_nlink == 0 or not os.path.exists(self._journal_path):
            raise FileNotFoundError(
                errno.ENOENT, f"the journal {os.path.basename(self._journal_path)} was removed"
            )

    def seal(self) -> None:
        """Turn what was recorded so far into a durable shard (write, sync, rename).

        Raises LedgerError when it cannot (the entries stay in the journal, if anywhere).
        """
        with self._lock:
            if self._failed is not None:
                raise self._failed
            try:
                self._seal()
            except LedgerError:
                raise
            except Exception as error:
                raise self._fail(error) from None

    @property
    def failed(self) -> LedgerError | None:
        """The error that made this writer fail, or None while it works."""
        return self._failed

    def _seal(self) -> None:
        if self._count == 0:
            return
        shard = "shard-" + self._name(SHARD_SUFFIX)
        if self._local and self._journal is not None:
            self._journal.flush()
            os.fsync(self._journal.fileno())
            self._journal.close()
            self._journal = None
            directory = _local_path(self._directory)
            os.replace(self._journal_path, os.path.join(directory, shard))
        elif self._buffer:
            filesystems = _filesystems()
            temporary = filesystems.join(self._directory, f".{shard}.tmp")
            with filesystems.create(temporary) as handle:
                handle.write(b"".join(self._buffer))
            filesystems.rename([temporary], [filesystems.join(self._directory, shard)])
            self._buffer = []
        self._sequence += 1
        self._count = 0

    def close(self) -> None:
        """Seal what is left; a writer that failed only lets go of its journal."""
        if self._failed is None:
            self.seal()
