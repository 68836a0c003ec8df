"""Where an input record came from: the file, the line or row, and what was read there.

A :class:`RawRecord` is what the read step emits for every non-blank line or row, before
anything is parsed; the dead letter names its place with :func:`location`. No Beam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: File name endings read as JSON lines (Amplitude's exports are ``.json.gz`` JSON lines),
#: and as Parquet.
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
#: The formats --format names, for files whose names say nothing.
FORMATS = ("jsonl", "parquet")


def format_of(path: str, given: str | None = None) -> str | None:
    """``jsonl`` or ``parquet`` for a file: ``given`` (--format) first, else its name's ending."""
    if given is not None:
        return given
    if path.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if path.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return None


@dataclass(frozen=True)
class RawRecord:
    """One input line or row: where it came from, and its text, row, or the problem."""

    file: str
    position: int  # line number for JSONL, row number (1-based) for Parquet
    text: str | None = None
    row: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def source(self) -> str:
        return f"{self.file}:{self.position}"

    def location(self) -> dict[str, Any]:
        """Where the record came from, as the dead letter shows it."""
        return location(self.source)


def location(source: str) -> dict[str, Any]:
    """``{"file": ..., "line": n}`` (``"row"`` for Parquet) of a ``file:position`` source."""
    file, _, position = source.rpartition(":")
    unit = "row" if file.endswith(PARQUET_SUFFIXES) else "line"
    return {"file": file, unit: int(position) if position.isdigit() else position}


def source_of(where: object) -> str | None:
    """The ``file:position`` source of a dead letter's ``source`` object, or None.

    The inverse of :func:`location`, for an entry read back (a replayed send entry keeps its
    original source); None when ``where`` is not such an object.
    """
    if not isinstance(where, dict) or not isinstance(where.get("file"), str):
        return None
    position = where.get("line", where.get("row"))
    if isinstance(position, bool) or not isinstance(position, int | str):
        return None
    return f"{where['file']}:{position}"
