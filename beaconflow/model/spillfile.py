"""The spill file: input records as the reader gave them, kept on disk for one chunk's run.

A chunked backfill first reads every input once and appends each
:class:`~beaconflow.model.source.RawRecord` to the file of its event's day
(``beaconflow.pipelines.spill``); each chunk's run then reads its days' files back
(``transforms/read.py`` reads a ``.spill`` file like any input) and must see exactly what
the original input gave: the same file and line or row, the same text, the same Parquet
row with the same types, the same problem. So the dead letter and the event dedup's choice
of copy do not change.

The encoding is one pickle per record, ``(file, position, text, row, problem)``, appended.
Pickle, because it is the fastest encoding Python has for this (about 1 us a record each
way, measured in benchmarks/spill.py) and round-trips every type a Parquet row holds
(timestamps with their zone, dates, times, durations, ``Decimal``, ``bytes``, UUIDs, nested
lists, dicts and the tuples of map columns), which JSON would not without a tag for each. Spill
files live in a folder only the user may enter (mode 0700, files 0600) and are written by
the spill pass itself; reading them still refuses any class but those few types
(:class:`SpillFileError`), so a file put there by someone else runs no code.
"""

from __future__ import annotations

import datetime
import decimal
import io
import os
import pickle
import uuid
import zoneinfo
from collections.abc import Iterator
from typing import Any

from beaconflow.model.errors import BeaconflowError
from beaconflow.model.source import RawRecord

#: The ending of a spill file's name.
SPILL_SUFFIX = ".spill"

_PROTOCOL = 5

#: The only classes a spill file may name: the values of Parquet rows.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("zoneinfo", "ZoneInfo"): zoneinfo.ZoneInfo,
    ("uuid", "UUID"): uuid.UUID,
}


class SpillError(BeaconflowError, OSError):
    """The spill pass of a chunked backfill failed: names the file, or the process, and why."""


class SpillStopped(BeaconflowError):
    """The run was stopped (Ctrl-C, SIGTERM) during its spill pass, which did not finish."""

    def __init__(self, reason: str, records: int) -> None:
        super().__init__(f"the spill pass stopped after {records} records: {reason}")
        self.reason = reason
        self.records = records


class SpillFileError(SpillError, ValueError):
    """A spill file cannot be written or read back: names the file and the record."""


def _zone_getattr(owner: object, name: str) -> Any:
    # a ZoneInfo pickles as getattr(ZoneInfo, "_unpickle")(key, ...): that one lookup only
    if owner is zoneinfo.ZoneInfo and name == "_unpickle":
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not allowed in a spill file")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _zone_getattr
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a spill file")
        return allowed


def encode(raw: RawRecord) -> bytes:
    """The bytes that stand for ``raw`` in a spill file.

    SpillFileError, naming the record, when its row holds a value no spill file may (a
    Parquet interval, say).
    """
    try:
        data = pickle.dumps((raw.file, raw.position, raw.text, raw.row, raw.problem), _PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        raise SpillFileError(f"{raw.source}: cannot be spilled: {error}") from None
    if raw.row is not None and b"\x93" in data:
        # a row naming a class (STACK_GLOBAL, or these bytes in its text): one the reader
        # would refuse fails now, naming its record, not in a chunk's run later
        try:
            _Unpickler(io.BytesIO(data)).load()
        except pickle.UnpicklingError as error:
            raise SpillFileError(f"{raw.source}: cannot be spilled: {error}") from None
    return data


def read_spill(path: str) -> Iterator[RawRecord]:
    """The records of a spill file, in the order they were appended.

    SpillFileError names the file and the record when it is torn or holds anything but
    records (a spill pass that did not finish leaves no spill.json: its files are not read).
    """
    number = 0
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            unpickler = _Unpickler(handle)
            # the unpickler consumes exactly one record's bytes per load
            while handle.tell() < size:
                file, position, text, row, problem = unpickler.load()
                number += 1
                yield RawRecord(file, position, text, row, problem)
    except OSError as error:
        raise SpillFileError(f"spill file {path}: cannot be read: {error.strerror}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise SpillFileError(
            f"spill file {path} is damaged after record {number}: {error}"
        ) from None
