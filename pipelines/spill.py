"""The spill pass of a chunked backfill: the input cut into one file per event day.

A backfill of years runs in chunks of event time, each chunk a pipeline run of its own
events only, so that memory stays flat (Beam's in-memory runner holds every shuffle). An
input not already partitioned by day is read once by :func:`spill`, in a streaming pass
with bounded memory, which appends every record whole to the file of its event's UTC day,
``<work dir>/spill/<YYYYMMDD>.spill``, or to ``undated.spill`` when it has no valid time
(a read problem, an invalid record, a replayed dead-letter message). Each chunk's run then
reads its days' files (``transforms/read.py`` reads spill files as it reads the input).

The event dedup stays exact. Copies of one event share its key; a key made from the
content covers the time, so its copies share a day and a chunk. A key given by an
``event_id`` may be shared by copies of different times: for those, the pass also appends
``key day input position`` to one of :data:`KEY_BUCKETS` key files, and :func:`resolve`,
once the days are grouped into chunks, names in ``<work dir>/elsewhere-<chunk>.txt`` every
copy whose kept copy (the first source, as the pipeline's dedup keeps) is in another chunk;
the parse step counts those as duplicates (``ParseEvents(elsewhere=...)``). Each chunk's
run must use the pass's ``now`` (:attr:`Spilled.now`): a record's validity, hence its day,
depends on it.

The message dedup is exact across chunks for messages that carry their event's time
(KISSmetrics ``_t``) or identity (Kontagent's occurrence). Two kinds carry neither: a
KISSmetrics alias (``/a``) and a send-stage dead-letter message replayed as input (undated).
Equal ones in two chunks are both sent without a ledger, and the second is counted skipped
with one, where a single run counts a duplicate.

The pass is complete when ``spill/spill.json`` exists: it is written last, atomically, and
:meth:`Spilled.load` reads it back (None for a pass that did not finish). Files are private
(0600, the folder 0700). Measure it with ``python -m benchmarks.spill --events 1000000``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from beaconflow.delivery.ledger import write_atomically
from beaconflow.model.errors import io_problem
from beaconflow.model.mapping import RecordMapping
from beaconflow.model.message import Destination
from beaconflow.model.spillfile import SPILL_SUFFIX, SpillError, SpillStopped, encode
from beaconflow.pipelines.appendfiles import AppendFiles
from beaconflow.pipelines.spill_shares import (
    Share,
    SharePart,
    plan_shares,
    remove_parts,
    run_shares,
)
from beaconflow.transforms.parse import event_place
from beaconflow.transforms.read import read_file, read_lines

#: The spill pass's folder in the work directory, and its record of a finished pass.
SPILL_FOLDER = "spill"
MANIFEST = "spill.json"
UNDATED = "undated" + SPILL_SUFFIX
#: How many files the keys of ``event_id`` records are spread over: :func:`resolve` holds
#: one file's keys at a time.
KEY_BUCKETS = 256
_KEY_FILE = "keys-{:03d}.txt"
#: How often the pass calls its ``on_progress``, in seconds.
PROGRESS_INTERVAL = 1.0
#: spill.json's format.
FORMAT = 1

_EPOCH = date(1970, 1, 1)
_SECONDS_PER_DAY = 86_400


def day_name(day: int) -> str:
    """``YYYYMMDD`` of a day number (days since 1970-01-01, UTC)."""
    return (_EPOCH + timedelta(days=day)).strftime("%Y%m%d")


@dataclass(frozen=True)
class SpillFile:
    """One file the spill pass wrote: its path, its records and its size in bytes."""

    path: str
    records: int
    size: int


@dataclass(frozen=True)
class Spilled:
    """A finished spill pass: every day's file, the undated file and what made them.

    ``days`` maps a day number (days since 1970-01-01, UTC: ``event time // 86400``) to
    its file; ``undated`` holds the records with no valid event time. ``key_files`` are
    :func:`resolve`'s input. ``inputs``, ``file_format``, ``now`` and ``destinations``
    are what the pass was made with (a record's day depends on ``now``: an event after it is
    invalid, hence undated).
    """

    days: Mapping[int, SpillFile]
    undated: SpillFile
    key_files: tuple[SpillFile, ...]
    records: int
    seconds: float
    inputs: tuple[str, ...]
    file_format: str | None
    now: float
    destinations: tuple[str, ...]

    def files(self, days: Sequence[int | None]) -> list[str]:
        """The spill files of ``days`` (None: the undated file) that hold records."""
        chosen = (self.undated if day is None else self.days.get(day) for day in days)
        return [spill.path for spill in chosen if spill is not None and spill.records]

    def to_json(self) -> dict[str, Any]:
        def entry(spill: SpillFile) -> dict[str, Any]:
            name = os.path.basename(spill.path)
            return {"file": name, "records": spill.records, "bytes": spill.size}

        return {
            "format": FORMAT,
            "inputs": list(self.inputs),
            "file_format": self.file_format,
            "now": self.now,
            "destinations": list(self.destinations),
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "days": {str(day): entry(spill) for day, spill in sorted(self.days.items())},
            "undated": entry(self.undated),
            "key_files": [entry(spill) for spill in self.key_files],
        }

    @classmethod
    def load(cls, work_dir: str) -> Spilled | None:
        """The spill pass finished in ``work_dir``, or None when none finished there.

        None too when a file it lists is missing or not its size (a pass whose files were
        touched since): the pass is then to be done again.
        """
        folder = os.path.join(work_dir, SPILL_FOLDER)
        try:
            with open(os.path.join(folder, MANIFEST), encoding="utf-8") as handle:
                data = json.load(handle)
            spilled = cls._of_json(data, folder)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        every = (*spilled.days.values(), spilled.undated, *spilled.key_files)
        for spill in every:
            try:
                if os.stat(spill.path).st_size != spill.size:
                    return None
            except OSError:
                return None
        return spilled

    @classmethod
    def _of_json(cls, data: dict[str, Any], folder: str) -> Spilled:
        if data["format"] != FORMAT:
            raise ValueError(f"spill.json format {data['format']}")

        def spill(entry: dict[str, Any]) -> SpillFile:
            name = str(entry["file"])
            if os.path.basename(name) != name:
                raise ValueError(f"not a file of the spill folder: {name!r}")
            return SpillFile(os.path.join(folder, name), int(entry["records"]), int(entry["bytes"]))

        return cls(
            days={int(day): spill(entry) for day, entry in data["days"].items()},
            undated=spill(data["undated"]),
            key_files=tuple(spill(entry) for entry in data["key_files"]),
            records=int(data["records"]),
            seconds=float(data["seconds"]),
            inputs=tuple(data["inputs"]),
            file_format=data["file_format"],
            now=float(data["now"]),
            destinations=tuple(data["destinations"]),
        )


def spill(
    files: Sequence[str],
    file_format: str | None,
    mapping: RecordMapping,
    *,
    now: float,
    destinations: Sequence[Destination],
    work_dir: str,
    on_progress: Callable[[int], None] | None = None,
    processes: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    stopped: Callable[[], str | None] = lambda: None,
) -> Spilled:
    """Read ``files`` in order once; append each record to its day's spill file.

    A record's day is that of the event the parse step makes of it with ``mapping`` and
    ``now`` (:func:`~beaconflow.transforms.parse.event_place`); a record that makes none is
    undated. ``processes`` read consecutive shares of the input (whole files, or line
    ranges of a plain JSON-lines file) and their files are joined in order: the result is
    the same byte for byte whatever their number (None: one per core, for an input large
    enough to share: :func:`~beaconflow.pipelines.spill_shares.plan_shares`). ``on_progress`` is
    called with the records read so far about once a second (``clock``). Whatever an
    earlier pass left in ``<work_dir>/spill`` is removed first; spill.json is written last.
    SpillError (or AppendError) names a file that cannot be read or written. Once
    ``stopped()`` gives a reason (the run was stopped: Ctrl-C, SIGTERM), the pass ends within
    about a thousand records or a fifth of a second, with :class:`SpillStopped` and no
    spill.json.
    """
    started = clock()
    if any(path.endswith(SPILL_SUFFIX) for path in files):
        raise SpillError("the spill pass reads input files, not spill files")
    folder = _prepare(work_dir)
    shares = plan_shares(files, file_format, processes)
    progress = _Progress(on_progress, clock)

    def spill_share(share: Share, into: str, said: Callable[[int], None]) -> SharePart:
        return _spill_share(share, files, file_format, mapping, now, into, said)

    if len(shares) == 1:

        def said(records: int) -> None:
            reason = stopped()
            if reason is not None:
                raise SpillStopped(reason, records)
            progress(records)

        part = spill_share(shares[0], folder, said)
    else:
        part = run_shares(shares, folder, spill_share, progress, stopped)
    _sync(folder, part.sizes)

    def spilled_file(name: str, records: int) -> SpillFile:
        return SpillFile(os.path.join(folder, name), records, part.sizes[name])

    result = Spilled(
        days={day: spilled_file(_day_file(day), n) for day, n in sorted(part.days.items())},
        undated=spilled_file(UNDATED, part.undated),
        key_files=tuple(
            spilled_file(_KEY_FILE.format(n), part.keyed[n]) for n in sorted(part.keyed)
        ),
        records=part.records,
        seconds=clock() - started,
        inputs=tuple(files),
        file_format=file_format,
        now=now,
        destinations=tuple(destinations),
    )
    _write_manifest(folder, result)
    return result


class _Progress:
    """Calls ``on_progress`` with the records read so far, at most once per interval."""

    def __init__(self, on_progress: Callable[[int], None] | None, clock: Callable[[], float]):
        self._on_progress = on_progress
        self._clock = clock
        self._last = clock()

    def __call__(self, records: int) -> None:
        if self._on_progress is None:
            return
        moment = self._clock()
        if moment - self._last >= PROGRESS_INTERVAL:
            self._last = moment
            self._on_progress(records)


def _day_file(day: int) -> str:
    return day_name(day) + SPILL_SUFFIX


def _spill_share(
    share: Share,
    files: Sequence[str],
    file_format: str | None,
    mapping: RecordMapping,
    now: float,
    folder: str,
    progress: Callable[[int], None],
) -> SharePart:
    """Spill one share of the input into ``folder`` (its files written, not made durable)."""
    part = SharePart()
    days, keyed = part.days, part.keyed
    undated_path = os.path.join(folder, UNDATED)
    key_paths = [os.path.join(folder, _KEY_FILE.format(n)) for n in range(KEY_BUCKETS)]
    day_paths: dict[int, str] = {}
    undated = records = 0
    with AppendFiles(what="spill file") as out:
        append = out.append
        append(undated_path, b"")  # there even when empty
        for index, line_range in share:
            path = files[index]
            if line_range is None:
                reader = read_file(path, file_format)
            else:
                reader = read_lines(path, line_range)
            for raw in reader:
                place = event_place(raw, mapping, now)
                if place is None:
                    append(undated_path, encode(raw))
                    undated += 1
                else:
                    seconds, key = place
                    day = seconds // _SECONDS_PER_DAY
                    target = day_paths.get(day)
                    if target is None:
                        target = day_paths[day] = os.path.join(folder, _day_file(day))
                    append(target, encode(raw))
                    days[day] += 1
                    if key is not None:
                        bucket = int(key[:8], 16) % KEY_BUCKETS
                        # the source as (input, position): what RawRecord.source says
                        line = f"{key} {day} {index} {raw.position}\n"
                        append(key_paths[bucket], line.encode())
                        keyed[bucket] += 1
                records += 1
                if not records & 1023:
                    progress(records)
        sizes = out.close(sync=False)
    part.undated, part.records = undated, records
    part.sizes = {os.path.basename(path): size for path, size in sizes.items()}
    return part


def _sync(folder: str, names: Mapping[str, int]) -> None:
    """Every file of the pass, and the folder, made durable (before spill.json says so)."""
    path = folder
    try:
        for name in (*names, ""):
            path = os.path.join(folder, name) if name else folder
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    except OSError as error:
        raise SpillError(io_problem("spill file", path, error)) from None


def resolve(
    spilled: Spilled, chunk_of_day: Callable[[int | None], int], work_dir: str
) -> dict[int, str]:
    """Name, per chunk, the copies of events whose kept copy another chunk holds.

    ``chunk_of_day`` gives the chunk of a day number (None: the undated file). For each key
    of an ``event_id`` whose copies fall in more than one chunk, the copy the pipeline's
    dedup keeps is the one with the first source (``file:position``, compared as strings);
    every copy in another chunk than that one is named in ``<work_dir>/elsewhere-<chunk>.txt``
    of its own chunk, one JSON string a line (:func:`read_elsewhere`). Returns chunk -> file,
    for the chunks with such copies. Reads one key file at a time.
    """
    for stale in _elsewhere_files(work_dir):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    found: dict[int, str] = {}
    with AppendFiles(what="elsewhere file") as out:
        for key_file in spilled.key_files:
            copies: dict[str, list[tuple[str, int]]] = {}
            for key, day, source in _key_lines(key_file.path, spilled.inputs):
                copies.setdefault(key, []).append((source, day))
            for sources in copies.values():
                if len(sources) < 2:
                    continue
                chunks = [chunk_of_day(day) for _, day in sources]
                if len(set(chunks)) < 2:
                    continue
                first = min(range(len(sources)), key=lambda n: sources[n][0])
                kept = chunks[first]
                for (source, _), chunk in zip(sources, chunks, strict=True):
                    if chunk != kept:
                        path = found.setdefault(
                            chunk, os.path.join(work_dir, f"elsewhere-{chunk}.txt")
                        )
                        line = json.dumps(source, ensure_ascii=False) + "\n"
                        out.append(path, line.encode("utf-8", "surrogatepass"))
    return found


def read_elsewhere(path: str) -> frozenset[str]:
    """The sources an elsewhere file of :func:`resolve` names: ParseEvents' ``elsewhere``."""
    try:
        with open(path, encoding="utf-8", errors="surrogatepass") as handle:
            return frozenset(json.loads(line) for line in handle)
    except OSError as error:
        raise SpillError(io_problem("elsewhere file", path, error, "not readable")) from None


def _key_lines(path: str, inputs: Sequence[str]) -> Iterator[tuple[str, int, str]]:
    """A key file's (key, day, source) entries; a line holds ``key day input position``."""
    number = 0
    try:
        with open(path, encoding="ascii") as handle:
            for number, line in enumerate(handle, 1):  # noqa: B007 - named in the error
                key, day, index, position = line.split()
                yield key, int(day), f"{inputs[int(index)]}:{position}"
    except OSError as error:
        raise SpillError(io_problem("spill key file", path, error, "not readable")) from None
    except (ValueError, IndexError) as error:
        raise SpillError(f"spill key file {path} is damaged at line {number}: {error}") from None


def _elsewhere_files(work_dir: str) -> list[str]:
    try:
        names = os.listdir(work_dir)
    except FileNotFoundError:
        return []
    return [
        os.path.join(work_dir, name)
        for name in names
        if name.startswith("elsewhere-") and name.endswith(".txt")
    ]


def _prepare(work_dir: str) -> str:
    """The spill folder, private and empty of an earlier pass's files (spill.json first)."""
    folder = os.path.join(work_dir, SPILL_FOLDER)
    try:
        os.makedirs(work_dir, mode=0o700, exist_ok=True)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        with contextlib.suppress(FileNotFoundError):
            # first: from here on the folder holds no finished pass
            os.remove(os.path.join(folder, MANIFEST))
        for entry in os.scandir(folder):
            leftover = entry.name.endswith((SPILL_SUFFIX, ".txt", ".tmp"))
            # a manifest's temporary name left by a killed write (write_atomically's)
            leftover = leftover or entry.name.startswith(f".{MANIFEST}.tmp-")
            if leftover and entry.is_file():
                os.remove(entry.path)
        remove_parts(folder)
    except OSError as error:
        raise SpillError(io_problem("spill folder", folder, error)) from None
    return folder


def _write_manifest(folder: str, spilled: Spilled) -> None:
    """spill.json, whole or not at all (the ledger's own atomic write: aside, synced, renamed)."""
    data = json.dumps(spilled.to_json(), ensure_ascii=False, indent=1).encode("utf-8")
    try:
        write_atomically(folder, MANIFEST, data)
    except OSError as error:
        raise SpillError(io_problem("spill.json", os.path.join(folder, MANIFEST), error)) from None
