"""Appending to many files at once with bounded memory and a bounded number of descriptors.

The spill pass of a chunked backfill appends each record to the file of its day: a
three-year input has some 1,100 of them, and an input out of time order touches them all
in turn. :class:`AppendFiles` buffers each file's bytes, writes a file's buffer when it is
full, writes them all when their total passes a budget, and keeps the descriptors of the
files it writes most in a small LRU: memory and open files stay bounded whatever the input,
and an input in time order writes each buffer in one call on a descriptor kept open.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict

from beaconflow.model.errors import BeaconflowError, io_problem


class AppendError(BeaconflowError, OSError):
    """A file cannot be appended to: names the file and the system's reason."""


class AppendFiles:
    """Append-only writers of many files, created with ``mode`` (0600: private).

    ``max_open``: the most descriptors held open at once. ``flush_bytes``: a file's buffer
    is written once it holds that much. ``budget``: every buffer is written once all of
    them hold that much together. ``what`` names the files in errors ("spill file").
    Use as a context manager, or call :meth:`close` (on success) or :meth:`abandon`.
    """

    def __init__(
        self,
        *,
        what: str,
        max_open: int = 64,
        flush_bytes: int = 1 << 16,
        budget: int = 16 << 20,
        mode: int = 0o600,
    ) -> None:
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open}")
        self._what = what
        self._max_open = max_open
        self._flush_bytes = flush_bytes
        self._budget = budget
        self._mode = mode
        self._pending: dict[str, bytearray] = {}
        self._pending_bytes = 0
        self._open: OrderedDict[str, int] = OrderedDict()
        self._created: set[str] = set()
        self._closed = False
        #: bytes written so far, per file (every file appended to has an entry)
        self.sizes: dict[str, int] = {}
        #: the most descriptors that were open at once
        self.peak_open = 0

    def __enter__(self) -> AppendFiles:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None and not self._closed:
            self.close()
        else:
            self.abandon()

    def append(self, path: str, data: bytes) -> None:
        """Append ``data`` to ``path`` (created at its first append)."""
        buffer = self._pending.get(path)
        if buffer is None:
            buffer = self._pending[path] = bytearray()
            self.sizes.setdefault(path, 0)
        buffer += data
        self._pending_bytes += len(data)
        if len(buffer) >= self._flush_bytes:
            self._write(path, buffer)
        elif self._pending_bytes > self._budget:
            self.flush()

    def flush(self) -> None:
        """Write every buffer."""
        for path, buffer in self._pending.items():
            if buffer:
                self._write(path, buffer)

    def close(self, *, sync: bool = True) -> dict[str, int]:
        """Write every buffer, make every file durable (``sync``), close: the files' sizes."""
        self._closed = True
        try:
            for path, buffer in self._pending.items():
                if buffer or path not in self._created:  # every file appended to exists
                    self._write(path, buffer)
            if sync:
                self._sync()
        finally:
            self.abandon()
        return dict(self.sizes)

    def _sync(self) -> None:
        path = ""
        try:
            for path in self.sizes:
                descriptor = self._open.get(path)
                if descriptor is not None:
                    os.fsync(descriptor)
                else:
                    _sync_path(path)
            for path in {os.path.dirname(p) or "." for p in self.sizes}:
                _sync_path(path)
        except OSError as error:
            raise AppendError(io_problem(self._what, path, error)) from None

    def abandon(self) -> None:
        """Close every descriptor; what was not written yet is dropped."""
        while self._open:
            _, descriptor = self._open.popitem(last=False)
            with contextlib.suppress(OSError):
                os.close(descriptor)
        self._pending.clear()
        self._pending_bytes = 0

    def _write(self, path: str, buffer: bytearray) -> None:
        descriptor = self._descriptor(path)
        try:
            written = os.write(descriptor, buffer)
            while written < len(buffer):  # a regular file takes it all but on a full disk
                written += os.write(descriptor, memoryview(buffer)[written:])
        except OSError as error:
            raise AppendError(io_problem(self._what, path, error)) from None
        self.sizes[path] += len(buffer)
        self._pending_bytes -= len(buffer)
        buffer.clear()

    def _descriptor(self, path: str) -> int:
        descriptor = self._open.get(path)
        if descriptor is not None:
            self._open.move_to_end(path)
            return descriptor
        if len(self._open) >= self._max_open:
            _, oldest = self._open.popitem(last=False)
            os.close(oldest)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        first = path not in self._created
        try:
            # the first time: whatever an earlier writer left there is not this one's
            descriptor = os.open(path, flags | (os.O_TRUNC if first else 0), self._mode)
        except OSError as error:
            raise AppendError(io_problem(self._what, path, error)) from None
        self._open[path] = descriptor
        if first:
            try:
                os.fchmod(descriptor, self._mode)  # the mode of a file that was there
            except OSError as error:
                raise AppendError(io_problem(self._what, path, error)) from None
        self._created.add(path)
        self.peak_open = max(self.peak_open, len(self._open))
        return descriptor


def _sync_path(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
