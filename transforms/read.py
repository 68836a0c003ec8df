"""Reading event logs (JSONL, .jsonl.gz, Parquet), each record with its file and line.

Files are expanded from --input patterns through Beam's ``FileSystems`` (so ``gs://`` and
``s3://`` work where Beam's extras are installed) and read one file per element, which keeps
line numbers exact. Every non-blank line or row becomes a :class:`RawRecord`; a line that
cannot even be decoded, an over-long line, or a file that breaks off (a truncated .gz, a
corrupt Parquet footer) becomes a RawRecord carrying the problem, so that it is counted as
read and lands in the dead letter instead of failing the run. A chunk of a chunked backfill
reads its spill files (:mod:`beaconflow.model.spillfile`) through the same steps.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import itertools
import os
import stat
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PBegin, PCollection

from beaconflow.model.errors import BeaconflowError, os_reason
from beaconflow.model.records import JSON_TEXT_FIELDS, RecordError, parse_json
from beaconflow.model.source import RawRecord, format_of
from beaconflow.model.spillfile import SPILL_SUFFIX, read_spill

#: A line longer than this is refused whole: no log record is that large.
MAX_LINE_BYTES = 1 << 20
#: How much of a refused line the dead letter keeps.
EXCERPT_CHARS = 1000


class InputError(BeaconflowError, ValueError):
    """An --input pattern matched nothing or a file of a kind that cannot be read."""


def matches_nothing(pattern: str) -> bool:
    """Whether ``pattern`` matches no file (False when it cannot be listed: see expand_inputs)."""
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # expand_inputs says why
        return False
    return not any(not m.path.endswith("/") for m in matched)


def expand_inputs(patterns: Sequence[str], file_format: str | None = None) -> list[str]:
    """Every file the patterns match, sorted.

    InputError when one matches nothing, or a local file it matches cannot be read (before
    anything is sent, rather than as a dead-letter entry once the run is under way).
    """
    files: set[str] = set()
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # Beam raises BeamIOError and plain IOErrors here
            raise InputError(f"--input {pattern}: cannot be listed: {os_reason(error)}") from None
        paths = [m.path for m in matched if not m.path.endswith("/")]
        if not paths:
            raise InputError(f"--input {pattern}: no file matches")
        for path in paths:
            if format_of(path, file_format) is None:
                raise InputError(
                    f"--input {pattern}: {path} is neither .jsonl, .ndjson, .json (either also "
                    ".gz) nor .parquet; give --format jsonl or --format parquet to read it anyway"
                )
            problem = _unreadable(path)
            if problem:
                named = "" if path == pattern else f" {path}"
                raise InputError(f"--input {pattern}:{named} cannot be read: {problem}")
        files.update(paths)
    return sorted(files)


def _unreadable(path: str) -> str | None:
    """Why a local file cannot be opened for reading, or None (gs://, s3://: not checked).

    Opened without blocking and closed at once: a named pipe is neither waited for nor read.
    """
    if "://" in path and not path.startswith("file://"):
        return None
    local = path.removeprefix("file://")
    try:
        if stat.S_ISDIR(os.stat(local).st_mode):
            return os.strerror(errno.EISDIR)
        os.close(os.open(local, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as error:
        return os_reason(error)
    return None


@contextlib.contextmanager
def _open_lines(path: str) -> Iterator[IO[bytes] | gzip.GzipFile]:
    # Python's gzip rather than Beam's decompression: Beam returns a truncated .gz's partial
    # data without a word, gzip raises EOFError at the cut.
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            yield raw


#: The UTF-8 byte order mark.
_BOM = b"\xef\xbb\xbf"


def _skip_line(handle: IO[bytes] | gzip.GzipFile, start: bytes) -> int:
    """Read past the rest of the line that began with ``start``; the bytes skipped."""
    skipped = 0
    while not start.endswith(b"\n"):
        start = handle.readline(MAX_LINE_BYTES)
        if not start:
            break
        skipped += len(start)
    return skipped


@dataclass(frozen=True)
class LineRange:
    """A part of a plain JSON-lines file that can be read on its own, as its whole would be.

    The lines that begin at byte ``start`` (a line's first byte, after ``lines`` lines)
    and before byte ``stop``; ``seen_record``: whether a line before ``start`` was a
    record (the JSON-array check looks at the first record only).
    """

    start: int
    stop: int
    lines: int
    seen_record: bool


def line_ranges(path: str, cuts: Sequence[int]) -> list[LineRange] | None:
    """A local plain JSON-lines file cut near the byte offsets ``cuts`` (ascending), or None.

    Each cut moves to the start of the next line. Reading the ranges one after the other
    with :func:`read_lines` gives exactly the records :func:`read_file` gives. None when the
    file is not a local uncompressed file, or when its first record is not found in its
    first 1,000 lines or holds a JSON array (the reader stops there: nothing to share).
    """
    if path.endswith(".gz") or ("://" in path and not path.startswith("file://")):
        return None
    local = path.removeprefix("file://")
    seen_record = False
    try:
        handle = open(local, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return None  # the reader names the problem
    with handle:
        size = os.fstat(handle.fileno()).st_size
        for number in range(1, 1001):
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return None
            if len(raw) > MAX_LINE_BYTES:
                _skip_line(handle, raw)
                continue
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if text.strip():
                if text.lstrip().startswith("["):
                    return None
                seen_record = True
                break
        if not seen_record:
            return None
        # the first record is no JSON array: for any range after byte 0, "a record was
        # seen before" gives what reading the whole file gives
        bounds: list[int] = [0]
        for cut in cuts:
            if cut <= bounds[-1] or cut >= size:
                continue
            handle.seek(cut - 1)
            _skip_line(handle, b"")  # to the end of the line holding byte cut - 1
            bound = handle.tell()
            if bound < size:
                bounds.append(bound)
        bounds.append(size)
        ranges: list[LineRange] = []
        handle.seek(0)
        lines = 0
        for start, stop in itertools.pairwise(bounds):
            ranges.append(LineRange(start, stop, lines, seen_record=start > 0))
            lines += _count_lines(handle, stop - start)
    return ranges


def _count_lines(handle: IO[bytes], size: int, block: int = 1 << 23) -> int:
    """The newlines in the next ``size`` bytes of ``handle``."""
    count = 0
    while size > 0:
        data = handle.read(min(block, size))
        if not data:
            break
        count += data.count(b"\n")
        size -= len(data)
    return count


def read_lines(path: str, part: LineRange) -> Iterator[RawRecord]:
    """The records of a part of a JSON-lines file (:func:`line_ranges`), as read_file gives."""
    return _read_jsonl(path, part)


def _read_jsonl(path: str, part: LineRange | None = None) -> Iterator[RawRecord]:
    number = 0 if part is None else part.lines
    seen_record = part is not None and part.seen_record
    offset = 0 if part is None else part.start
    stop = None if part is None else part.stop
    try:
        with _open_lines(path) as handle:
            if offset:
                handle.seek(offset)
            while stop is None or offset < stop:
                # never more than the limit at once: a line of gigabytes is refused, not held
                raw = handle.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    return
                number += 1
                offset += len(raw)
                if len(raw) > MAX_LINE_BYTES:  # before the BOM is cut: the read was whole
                    skipped = _skip_line(handle, raw)
                    offset += skipped
                    size = len(raw) + skipped
                    excerpt = raw[:EXCERPT_CHARS].decode("utf-8", "replace")
                    yield RawRecord(
                        path, number, text=excerpt,
                        problem=f"line is {size} bytes; the limit is {MAX_LINE_BYTES}",
                    )  # fmt: skip
                    continue
                if number == 1 and raw.startswith(_BOM):
                    # Windows tools begin UTF-8 text with a byte order mark: not part of
                    # the first record
                    raw = raw[len(_BOM) :]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    yield RawRecord(
                        path, number, text=raw[:EXCERPT_CHARS].decode("utf-8", "replace"),
                        problem=f"line is not valid UTF-8 (byte {error.start})",
                    )  # fmt: skip
                    continue
                if not text.strip():
                    continue
                if not seen_record and text.lstrip().startswith("["):
                    # a JSON document (an array of records), not one record per line: one
                    # problem for the file instead of one for each of its lines
                    yield RawRecord(
                        path, number, text=text[:EXCERPT_CHARS],
                        problem="the file holds a JSON array, not JSON lines (one object per "
                        "line); convert it first, e.g. with jq -c '.[]'",
                    )  # fmt: skip
                    return
                seen_record = True
                yield RawRecord(path, number, text=text)
    except OSError as error:
        if number == 0 and error.strerror:  # not a torn file: the system would not read it
            yield RawRecord(path, 1, problem=f"file cannot be read: {error.strerror}")
        else:
            yield RawRecord(path, number + 1, problem=_corrupt(number, error))
    except (EOFError, ValueError, zlib.error) as error:
        yield RawRecord(path, number + 1, problem=_corrupt(number, error))


def _corrupt(number: int, error: BaseException) -> str:
    return f"file is truncated or corrupt after line {number}: {error}"


def _decode_json_columns(row: dict[str, Any]) -> dict[str, Any]:
    for column in JSON_TEXT_FIELDS:
        value = row.get(column)
        if isinstance(value, str):
            # left as text when it is not JSON: validation then names the field and the rule
            with contextlib.suppress(RecordError):
                row[column] = parse_json(value, column)
    return row


def _read_parquet(path: str, batch_rows: int = 8192) -> Iterator[RawRecord]:
    number = 0
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            parquet = pq.ParquetFile(handle)
            for batch in parquet.iter_batches(batch_size=batch_rows):
                for row in batch.to_pylist():
                    number += 1
                    clean = {k: v for k, v in row.items() if v is not None}
                    yield RawRecord(path, number, row=_decode_json_columns(clean))
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ...
        yield RawRecord(
            path, number + 1, problem=f"Parquet file is unreadable after row {number}: {error}"
        )


def read_file(path: str, file_format: str | None = None) -> Iterator[RawRecord]:
    """Every non-blank line or row of one file, in order (``file_format``: --format).

    A spill file (``.spill``, a chunk's share of the input) gives back the records the
    original files gave, whatever ``file_format`` says.
    """
    if path.endswith(SPILL_SUFFIX):
        return read_spill(path)
    if format_of(path, file_format) == "parquet":
        return _read_parquet(path)
    return _read_jsonl(path)


class ReadEvents(beam.PTransform[PBegin, PCollection[RawRecord]]):
    """Files -> RawRecords, the files spread over workers (one file per element).

    ``spread``: reshuffle the files over the workers; a run whose Beam work is one process
    (DirectRunner's in-memory mode) has nothing to spread them over, and saves the shuffle's
    steps and stage.
    """

    def __init__(
        self, files: Sequence[str], file_format: str | None = None, *, spread: bool = True
    ) -> None:
        super().__init__()
        self._files = list(files)
        self._format = file_format
        self._spread = spread

    def expand(self, pbegin: PBegin) -> PCollection[RawRecord]:
        # Create's own reshuffle is left out: SpreadFiles is the one that spreads them
        files = pbegin | "ListFiles" >> beam.Create(self._files, reshuffle=False)
        if self._spread:
            files = files | "SpreadFiles" >> beam.Reshuffle()
        records: PCollection[RawRecord] = files | "ReadFiles" >> beam.FlatMap(
            read_file, self._format
        )
        return records
