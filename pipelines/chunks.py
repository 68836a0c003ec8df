"""Chunked runs: a backfill of years cut into chunks of event time, run one after the other.

Beam's in-memory runner holds each shuffle's contents, so one pipeline over years of logs
needs memory in proportion to them (about 0.85 KB per event) and sends nothing before every
event is read. With ``--chunk`` (``auto`` by default) the run's window is cut into chunks
of consecutive days, and each chunk is a pipeline of its own events only; one ``--ledger``,
one report and one dead letter cover the whole run.

- **Dated input** (``{date}`` in ``--input``, with ``--since``/``--until``): each chunk reads
  the partitions of its own days and of the ``--lookback`` days after them, where late
  events land; :class:`~beaconflow.transforms.parse.PartitionOwner` makes each record count
  in one chunk only.
- **Undated input**: read once by the spill pass (:mod:`beaconflow.pipelines.spill`), which
  writes each record into its day's file under the work directory; the days are then grouped
  into chunks. Copies of an event (one ``event_id``) whose times fall in different chunks
  are sent from the chunk of the copy the pipeline keeps; the others are counted as
  duplicates where they are (the chunk's ``elsewhere`` sources).

The work directory (``--work-dir``, default ``REPORT.work`` beside the report) holds the
plan (``plan.json``) and each finished chunk's counts, dead letter and dry-run lines
(``chunk-NNNN.*``). The same command, run again after a crash, a SIGTERM or a stop, finds
the plan, skips the finished chunks and runs the rest; the ledger covers what the unfinished
chunk had delivered. A different command starts a new plan. A run that ends done removes the
work directory.

``auto`` runs small inputs as one pipeline, as ``--chunk none`` does (estimating the input's
events costs a few file reads); bigger ones in chunks of consecutive days of at most
:func:`chunk_budget` events.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import gc
import gzip
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beaconflow.delivery.ledger import write_atomically
from beaconflow.delivery.ledger_lock import Lease
from beaconflow.delivery.sender import set_progress_note
from beaconflow.delivery.sendproc import pools_kept
from beaconflow.delivery.stop import DEADLINE, RunStop
from beaconflow.model.duration import format_duration
from beaconflow.model.errors import TryLaterError, io_problem, os_reason
from beaconflow.model.pace import eta_seconds, percent
from beaconflow.model.source import format_of
from beaconflow.model.spillfile import SpillError, SpillStopped
from beaconflow.model.words import plural
from beaconflow.pipelines.appendfiles import AppendError
from beaconflow.pipelines.backfill import (
    Pass,
    collector_counts,
    finish_run,
    remember_dead_letter,
    run_pass,
    sandboxed,
)
from beaconflow.pipelines.options import BackfillConfig, UsageError, expand_date
from beaconflow.pipelines.runners import LOCAL_RUNNERS, rate_split_warning, runner_name
from beaconflow.pipelines.spill import read_elsewhere, resolve, spill
from beaconflow.report.counts import STOPPED, TallyKey, build_report
from beaconflow.report.run import RunReport
from beaconflow.transforms.linefile import create_private, merge_parts, remove_leftovers
from beaconflow.transforms.parse import PartitionOwner
from beaconflow.transforms.staging import remove_staging
from beaconflow.transforms.tallies import read_sums

log = logging.getLogger("beaconflow")

#: The work directory's format; a plan of another format is started over.
PLAN_FORMAT = 1
#: The most events ``auto`` puts in one chunk (fewer when memory is short): about 0.85 KB
#: each in Beam's in-memory runner, plus its ~200 MB.
AUTO_EVENTS = 400_000
#: Input files whose lines ``auto`` samples to estimate the input's events.
_SAMPLED_FILES = 24
#: Decompressed bytes read from each sampled file.
_SAMPLE_BYTES = 1 << 20
_DAY = 86_400


def chunk_budget() -> int:
    """The most events ``auto`` puts in one chunk.

    :data:`AUTO_EVENTS`, or what a quarter of the available memory holds at 1.2 KB an event
    when that is less (at least 50,000).
    """
    available = _available_memory()
    if available is None:
        return AUTO_EVENTS
    return max(50_000, min(AUTO_EVENTS, available // 4 // 1200))


def _available_memory() -> int | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as info:
        for line in info:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


# -- estimating the input's size ----------------------------------------------------------


def _size(path: str, sizes: Mapping[str, int]) -> int:
    if path in sizes:
        return sizes[path]
    if "://" not in path or path.startswith("file://"):
        return os.path.getsize(path.removeprefix("file://"))
    return int(FileSystems.match([path])[0].metadata_list[0].size_in_bytes)


def _lines_per_byte(path: str) -> float | None:
    """Lines per stored byte of a JSONL file (.gz: per compressed byte), from its start."""
    # the stored bytes, whatever the name says: gzip is undone here, to count what it read
    stored = CompressionTypes.UNCOMPRESSED
    with (
        FileSystems.open(path, compression_type=stored)
        if "://" in path
        else open(path, "rb") as raw
    ):
        stream: IO[bytes] | gzip.GzipFile = (
            gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        )
        data = stream.read(_SAMPLE_BYTES)
        consumed = raw.tell() if path.endswith(".gz") else len(data)
    if not data or not consumed:
        return None
    return max(data.count(b"\n"), 1) / consumed


#: Lines per stored byte of typical JSON events, gzip'd (True) or plain (False).
_TYPICAL_DENSITY = {True: 1 / 40, False: 1 / 250}


def sample_density(files: Sequence[str], file_format: str | None) -> dict[bool, float]:
    """Lines per stored byte of ``files``' JSON lines, gzip'd (True) or not (False).

    At most :data:`_SAMPLED_FILES` files, spread over the list, are read (their first MB):
    the input's others are taken to be like them.
    """
    jsonl = [f for f in files if format_of(f, file_format) != "parquet"]
    step = max(1, len(jsonl) // _SAMPLED_FILES)
    seen: dict[bool, list[float]] = {True: [], False: []}
    for path in jsonl[::step]:
        with contextlib.suppress(OSError, EOFError, ValueError):
            found = _lines_per_byte(path)
            if found is not None:
                seen[path.endswith(".gz")].append(found)
    return {
        kind: sum(values) / len(values) if values else _TYPICAL_DENSITY[kind]
        for kind, values in seen.items()
    }


def estimate_events(
    files: Sequence[str],
    file_format: str | None,
    *,
    density: Mapping[bool, float] | None = None,
    sizes: Mapping[str, int] | None = None,
) -> int:
    """About how many records ``files`` hold: Parquet's row counts, JSONL's sampled lines.

    ``density``: lines per byte sampled already for the whole input (:func:`sample_density`),
    else sampled from ``files``; ``sizes``: the files' sizes listed already.
    """
    total = sum(_parquet_rows(f) for f in files if format_of(f, file_format) == "parquet")
    jsonl = [f for f in files if format_of(f, file_format) != "parquet"]
    if not jsonl:
        return total
    per_byte = density if density is not None else sample_density(jsonl, file_format)
    for path in jsonl:
        with contextlib.suppress(OSError):
            total += int(_size(path, sizes or {}) * per_byte[path.endswith(".gz")])
    return total


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    try:
        with FileSystems.open(path) as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)
    except Exception:  # read as a bad file by the run itself, which says why
        return 0


# -- the plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """Days ``first`` to ``last`` (UTC, both included) and its events (estimated when dated)."""

    index: int
    first: date
    last: date
    events: int

    def label(self) -> str:
        if self.first == self.last:
            return self.first.isoformat()
        return f"{self.first.isoformat()}..{self.last.isoformat()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "first_day": self.first.isoformat(),
            "last_day": self.last.isoformat(),
            "events": self.events,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Chunk:
        return cls(
            int(data["index"]),
            date.fromisoformat(data["first_day"]),
            date.fromisoformat(data["last_day"]),
            int(data["events"]),
        )


def group_days(days: Sequence[tuple[date, int]], unit: str, budget: int) -> list[Chunk]:
    """Consecutive days with their events -> chunks, in order.

    ``day``/``week`` (ISO, from Monday)/``month``: one chunk per calendar unit that has days;
    ``auto``: as many consecutive days as stay within the budget (a day over it is a chunk
    alone), which starts at an eighth of ``budget`` and doubles with each chunk up to
    ``budget``, so that the first messages go out after a small first chunk is read. Each
    chunk covers from its first day up to the day before the next one's.
    """
    groups: list[list[tuple[date, int]]] = []
    for day, events in days:
        if not groups:
            groups.append([(day, events)])
            continue
        previous = groups[-1][0][0]
        if unit == "auto":
            allowed = min(budget, (budget // 8) << (len(groups) - 1)) if budget else 0
            same = sum(n for _, n in groups[-1]) + events <= allowed
        elif unit == "day":
            same = False
        elif unit == "week":
            same = day.isocalendar()[:2] == previous.isocalendar()[:2]
        else:  # month
            same = (day.year, day.month) == (previous.year, previous.month)
        if same:
            groups[-1].append((day, events))
        else:
            groups.append([(day, events)])
    chunks: list[Chunk] = []
    for i, group in enumerate(groups):
        last = groups[i + 1][0][0] - timedelta(days=1) if i + 1 < len(groups) else group[-1][0]
        chunks.append(Chunk(i, group[0][0], last, sum(n for _, n in group)))
    return chunks


def _day(epoch: float) -> date:
    return datetime.fromtimestamp(epoch, UTC).date()


def _ordinal(day: date) -> int:
    return (day - date(1970, 1, 1)).days


@dataclass
class Plan:
    """A chunked run's plan, as ``plan.json`` keeps it."""

    fingerprint: str
    mode: str  # "dated" or "spilled"
    unit: str
    chunks: list[Chunk]
    #: dated: every partition day -> its files
    partitions: dict[str, list[str]] = field(default_factory=dict)
    #: spilled: chunk index -> its files (the days' spill files); "elsewhere" -> files
    spill_files: dict[str, list[str]] = field(default_factory=dict)
    elsewhere: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "fingerprint": self.fingerprint,
            "mode": self.mode,
            "unit": self.unit,
            "chunks": [c.to_json() for c in self.chunks],
            "partitions": self.partitions,
            "spill_files": self.spill_files,
            "elsewhere": self.elsewhere,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            fingerprint=str(data["fingerprint"]),
            mode=str(data["mode"]),
            unit=str(data["unit"]),
            chunks=[Chunk.from_json(c) for c in data["chunks"]],
            partitions={str(k): list(v) for k, v in data.get("partitions", {}).items()},
            spill_files={str(k): list(v) for k, v in data.get("spill_files", {}).items()},
            elsewhere={str(k): str(v) for k, v in data.get("elsewhere", {}).items()},
        )


def fingerprint(config: BackfillConfig, files: Sequence[str]) -> str:
    """What makes two commands the same run for the work directory (no secrets in it)."""
    listed = []
    for path in files:
        try:
            status = os.stat(path) if "://" not in path else None
        except OSError:
            status = None
        listed.append([path, status.st_size if status else 0, status.st_mtime if status else 0])
    described = {
        "format": PLAN_FORMAT,
        "inputs": list(config.inputs),
        "dated_inputs": list(config.dated_inputs),
        "files": listed,
        "file_format": config.file_format,
        "since": config.since,
        "until": config.until,
        "lookback": config.lookback,
        "chunk": config.chunk,
        "mapping": config.mapping_digest,
        "destinations": list(config.destinations),
        "dry_run": config.dry_run,
        "ledger": config.ledger,
    }
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class WorkDir:
    """A chunked run's work directory: its lock, plan, and each chunk's results."""

    def __init__(self, path: str) -> None:
        self.path = path

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the work directory (TryLaterError, exit 75, when another run holds it)."""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            handle = open(os.path.join(self.path, "lock"), "a+b")  # noqa: SIM115
        except OSError as error:
            raise UsageError(io_problem("work directory", self.path, error)) from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TryLaterError(
                    f"another run is using the work directory {self.path}: nothing was done, "
                    "try again when it has ended"
                ) from None
            yield

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def chunk_file(self, index: int, what: str) -> str:
        return self.file(f"chunk-{index + 1:04d}.{what}")

    def load_plan(self, wanted: str) -> Plan | None:
        """The plan of the same command, or None (another command's is cleared away)."""
        path = self.file("plan.json")
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            plan = Plan.from_json(data) if data.get("format") == PLAN_FORMAT else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("starting a new plan: %s could not be read (%s)", path, error)
            plan = None
        if plan is not None and plan.fingerprint == wanted:
            return plan
        log.warning(
            "the work directory %s holds the plan of another command: starting a new one",
            self.path,
        )
        self.clear(keep_lock=True)
        return None

    def save(self, name: str, data: Mapping[str, Any]) -> None:
        """Write ``name`` whole: a temporary name, synced, renamed, the directory synced."""
        write_atomically(self.path, name, (json.dumps(data, sort_keys=True) + "\n").encode())

    def done(self, index: int) -> dict[str, Any] | None:
        """A finished chunk's record, or None."""
        try:
            with open(self.chunk_file(index, "done.json"), encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def clear(self, *, keep_lock: bool = False) -> None:
        """Remove everything in the work directory (and the directory, unless locked)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.path):
                if keep_lock and name == "lock":
                    continue
                target = self.file(name)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(target)
        if not keep_lock:
            with contextlib.suppress(OSError):
                os.rmdir(self.path)


# -- deciding -----------------------------------------------------------------------------


def chunked(config: BackfillConfig, files: Sequence[str], options: PipelineOptions) -> bool:
    """Whether this run goes in chunks (a UsageError where it cannot and was asked to)."""
    if config.chunk == "none" or config.day is not None:
        return bool(config.dated_inputs)  # a dated window is read per partition, whatever
    if config.dated_inputs:
        return True
    local = runner_name(options) in LOCAL_RUNNERS
    if not local:
        if config.chunk != "auto":
            raise UsageError(
                f"--chunk {config.chunk} with undated input needs DirectRunner: the spill "
                "files are local to this machine; partition the input by day ({date} in "
                "--input) or use --chunk none"
            )
        return False
    if config.chunk != "auto":
        return True
    return estimate_events(files, config.file_format) > chunk_budget()


# -- running ------------------------------------------------------------------------------


@dataclass
class _Progress:
    """The run-wide progress a chunked run adds to the senders' progress lines.

    ``clock`` (monotonic seconds) times the run's pace for its ETA.
    """

    total_events: int
    chunks: int
    clock: Callable[[], float] = time.monotonic
    started: float = -1.0
    index: int = 0
    events_done: int = 0
    chunk_events: int = 0
    sent_at_chunk: int = 0
    last_sent: int = 0
    messages_per_event: float = 2.0

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def start(self, chunk: Chunk) -> None:
        """A chunk begins: the messages it sends are counted from here."""
        self.index, self.chunk_events, self.sent_at_chunk = (
            chunk.index,
            chunk.events,
            self.last_sent,
        )

    def note(self, sent: int) -> tuple[str, dict[str, object]]:
        """What a progress line of the senders adds (``sent``: their count so far)."""
        self.last_sent = sent
        expected = max(1.0, self.chunk_events * self.messages_per_event)
        part = min(0.99, (sent - self.sent_at_chunk) / expected)
        done = self.events_done + part * self.chunk_events
        return f"; {self.where(done)}", self.numbers(done)

    def numbers(self, done: float) -> dict[str, object]:
        """The run-wide numbers of a progress line (its JSON fields) at ``done`` events."""
        total = max(self.total_events, 1)
        eta = eta_seconds(done, total, self.clock() - self.started)
        return {
            "chunk": self.index + 1,
            "chunks": self.chunks,
            "events_done": int(done),
            "events_total": self.total_events,
            "run_percent": round(percent(done, total) or 0.0, 1),
            "run_eta_seconds": None if eta is None else round(eta, 1),
        }

    def where(self, done: float) -> str:
        """``chunk 2 of 5, events 1,000 of ~5,000 (20%), ETA 4m``."""
        numbers = self.numbers(done)
        total = max(self.total_events, 1)
        said = f"chunk {self.index + 1} of {self.chunks}, events {int(done):,} of ~{total:,}"
        said += f" ({numbers['run_percent']:.0f}%)"
        eta = numbers["run_eta_seconds"]
        if isinstance(eta, float):
            said += f", ETA {format_duration(eta)}"
        return said


def run_chunked(
    config: BackfillConfig,
    files: Sequence[str],
    options: PipelineOptions,
    stop: RunStop,
    run_id: str,
    now: float,
    started: float,
    *,
    salvaged: int = 0,
    deadline: float | None = None,
    lease: Lease | None = None,
    dead_lettered: frozenset[str] = frozenset(),
) -> tuple[int, RunReport]:
    """Run the backfill in chunks (see the module docstring): exit status and report."""
    work = WorkDir(config.work_dir)
    with work.locked():
        try:
            plan = _plan(config, files, work, stop)
        except SpillStopped as stopped:
            # nothing was sent: the next run of the command reads the input again
            log.warning(
                "%s; nothing was sent, and the same command reads the input again",
                stopped,
                extra={"event": "spill_stopped", "fields": {"records": stopped.records}},
            )
            plan = Plan(fingerprint(config, files), "spilled", config.chunk, [])
        return _run_plan(
            config,
            plan,
            work,
            options,
            stop,
            run_id,
            now,
            started,
            salvaged=salvaged,
            deadline=deadline,
            lease=lease,
            dead_lettered=dead_lettered,
            files=files,
        )


def _plan(config: BackfillConfig, files: Sequence[str], work: WorkDir, stop: RunStop) -> Plan:
    """The plan in the work directory for this command, or a new one (saved).

    SpillStopped: the run was stopped during the spill pass (no plan is saved).
    """
    wanted = fingerprint(config, files)
    plan = work.load_plan(wanted)
    if plan is not None:
        finished = sum(work.done(c.index) is not None for c in plan.chunks)
        log.warning(
            "resuming from %s: %d of %d chunks were finished by an earlier run of this command",
            work.path,
            finished,
            len(plan.chunks),
        )
        return plan
    plan = (
        _dated_plan(config, wanted)
        if config.dated_inputs
        else _spilled_plan(config, files, work, wanted, stop)
    )
    work.save("plan.json", plan.to_json())
    return plan


def _dated_plan(config: BackfillConfig, wanted: str) -> Plan:
    """Chunks of the window's days, each day's events estimated from its partitions' files."""
    assert config.since is not None and config.until is not None
    first, last = _day(config.since), _day(config.until - 1)
    partitions: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    day = first
    while day <= last + timedelta(days=config.lookback):
        found: set[str] = set()
        for pattern in config.dated_inputs:
            expanded = expand_date(pattern, day, "--input")
            try:
                matched = FileSystems.match([expanded])[0].metadata_list
            except Exception as error:
                raise UsageError(
                    f"--input {expanded}: cannot be listed: {os_reason(error)}"
                ) from None
            for meta in matched:
                if not meta.path.endswith("/"):
                    found.add(meta.path)
                    sizes[meta.path] = int(meta.size_in_bytes)
        for path in sorted(found):
            if format_of(path, config.file_format) is None:
                raise UsageError(
                    f"--input {path} is neither .jsonl, .ndjson, .json (either also .gz) nor "
                    ".parquet; give --format jsonl or --format parquet to read it anyway"
                )
        if found:
            partitions[day.isoformat()] = sorted(found)
        day += timedelta(days=1)
    if not partitions:
        raise UsageError(
            f"--input matches no file on any day from {first.isoformat()} to "
            f"{(last + timedelta(days=config.lookback)).isoformat()}"
        )
    # the input's lines per byte sampled once, from files spread over the whole window
    density = sample_density(sorted(sizes), config.file_format)
    days = []
    day = first
    while day <= last:
        listed = partitions.get(day.isoformat(), [])
        estimated = estimate_events(listed, config.file_format, density=density, sizes=sizes)
        days.append((day, estimated))
        day += timedelta(days=1)
    if config.chunk == "none":
        chunks = [Chunk(0, first, last, sum(n for _, n in days))]
    else:
        chunks = group_days(days, config.chunk, chunk_budget())
    missing = sum(1 for d, _ in days if d.isoformat() not in partitions)
    if missing:
        log.warning("%d of the window's %d days have no input partition", missing, len(days))
    return Plan(wanted, "dated", config.chunk, chunks, partitions=partitions)


def _spilled_plan(
    config: BackfillConfig, files: Sequence[str], work: WorkDir, wanted: str, stop: RunStop
) -> Plan:
    """Spill the undated input by day, group the days into chunks, place the copies."""
    log.warning(
        "reading %s once to cut them by day into %s (--chunk %s)",
        plural(len(files), "input file"),
        work.path,
        config.chunk,
    )
    began = time.monotonic()
    said = [began]

    def on_progress(records: int) -> None:
        now = time.monotonic()
        if now - said[0] >= config.progress_interval:
            said[0] = now
            rate = records / (now - began)
            log.info(
                "read %d records so far (%.0f/s)",
                records,
                rate,
                extra={"event": "spill_progress", "fields": {"records": records, "rate": rate}},
            )

    try:
        spilled = spill(
            files,
            config.file_format,
            config.mapping,
            now=time.time(),
            destinations=config.destinations,
            work_dir=work.path,
            on_progress=on_progress,
            stopped=lambda: stop.reason,
        )
    except (SpillError, AppendError) as error:  # nothing was sent: the run stops here
        raise UsageError(f"the spill pass stopped: {error}") from None
    seconds = time.monotonic() - began
    log.warning(
        "read %d records in %s (%.0f/s)",
        spilled.records,
        format_duration(seconds),
        spilled.records / seconds if seconds else 0.0,
    )
    dated = sorted(spilled.days.items())
    days = [(date(1970, 1, 1) + timedelta(days=ordinal), each.records) for ordinal, each in dated]
    if not days:  # nothing with a valid time: one chunk of the undated records
        today = _day(time.time())
        days = [(today, 0)]
    unit = "auto" if config.chunk == "none" else config.chunk
    chunks = group_days(days, unit, chunk_budget() if config.chunk != "none" else 1 << 62)
    undated = spilled.undated.records
    if undated:
        first = chunks[0]
        chunks[0] = replace(first, events=first.events + undated)
    starts = [_ordinal(c.first) for c in chunks]

    def chunk_of_day(ordinal: int | None) -> int:
        if ordinal is None:
            return 0
        return max(0, bisect.bisect_right(starts, ordinal) - 1)

    spill_files: dict[str, list[str]] = {str(c.index): [] for c in chunks}
    if spilled.undated.records:
        spill_files["0"].append(spilled.undated.path)
    for ordinal, each in dated:
        spill_files[str(chunk_of_day(ordinal))].append(each.path)
    try:
        elsewhere = resolve(spilled, chunk_of_day, work.path)
    except (SpillError, AppendError) as error:
        raise UsageError(f"the spill pass stopped: {error}") from None
    return Plan(
        wanted,
        "spilled",
        config.chunk,
        chunks,
        spill_files=spill_files,
        elsewhere={str(k): v for k, v in elsewhere.items()},
    )


def _chunk_inputs(
    config: BackfillConfig, plan: Plan, chunk: Chunk
) -> tuple[list[str], dict[str, Any]]:
    """A chunk's files, and what its pipeline needs besides (its owner or elsewhere)."""
    if plan.mode == "spilled":
        files = plan.spill_files.get(str(chunk.index), [])
        extra: dict[str, Any] = {}
        listed = plan.elsewhere.get(str(chunk.index))
        if listed:
            extra["elsewhere"] = read_elsewhere(listed)
        return files, extra
    starts = tuple(_ordinal(c.first) for c in plan.chunks)
    last = _ordinal(plan.chunks[-1].last)
    file_days: dict[str, int] = {}
    reads_to = chunk.last + timedelta(days=config.lookback)
    day = chunk.first
    while day <= reads_to:
        for path in plan.partitions.get(day.isoformat(), []):
            file_days.setdefault(path, _ordinal(day))
        day += timedelta(days=1)
    owner = PartitionOwner(chunk.index, starts, last, config.lookback, file_days)
    return sorted(file_days), {"owner": owner}


def _sums_text(sums: Counter[TallyKey]) -> str:
    return json.dumps([[*key, n] for key, n in sorted(sums.items())])


def _chunk_row(
    chunk: Chunk, sums: Counter[TallyKey], seconds: float, status: str
) -> dict[str, Any]:
    counted = build_report(sums, seconds)
    return {
        "chunk": chunk.index + 1,
        "first_day": chunk.first.isoformat(),
        "last_day": chunk.last.isoformat(),
        "status": status,
        "seconds": round(seconds, 3),
        "events_read": counted.events_read,
        "messages_built": counted.messages_built,
        "messages_delivered": counted.messages_delivered,
        "messages_skipped": counted.messages_skipped,
        "messages_too_old": counted.messages_too_old,
        "messages_failed": counted.messages_failed,
        "messages_dry_run": counted.messages_dry_run,
    }


def _run_plan(
    config: BackfillConfig,
    plan: Plan,
    work: WorkDir,
    options: PipelineOptions,
    stop: RunStop,
    run_id: str,
    now: float,
    started: float,
    *,
    salvaged: int,
    deadline: float | None,
    lease: Lease | None,
    dead_lettered: frozenset[str],
    files: Sequence[str],
) -> tuple[int, RunReport]:
    total = Pass()
    rows: list[dict[str, Any]] = []
    ran: list[int] = []  # chunks whose results are in the work directory
    progress = _Progress(sum(c.events for c in plan.chunks), len(plan.chunks))
    warning = rate_split_warning(options) if config.max_rps and not config.dry_run else None
    if warning:
        log.warning("--max-rps may be exceeded: %s", warning)
    with sandboxed(config) as (config, collector), pools_kept():
        set_progress_note(progress.note)
        try:
            for chunk in plan.chunks:
                record = work.done(chunk.index)
                if record is not None:
                    sums = read_sums(record["tallies"])
                    total.sums.update(sums)
                    rows.append(_chunk_row(chunk, sums, float(record["seconds"]), "resumed"))
                    progress.events_done += chunk.events
                    ran.append(chunk.index)
                    continue
                if stop.reason is not None:
                    # stopped between two chunks (or while planning): the next is not read
                    break
                if deadline is not None and not config.dry_run and time.time() >= deadline:
                    # no chunk starts after the --deadline: it would read its events only to
                    # dead-letter them; the same command goes on with it
                    total.stopped.append(DEADLINE)
                    break
                outcome, seconds = _run_chunk(
                    config, plan, chunk, work, options, stop, run_id, now, progress,
                    deadline=deadline, lease=lease, dead_lettered=dead_lettered,
                )  # fmt: skip
                ran.append(chunk.index)
                total.sums.update(outcome.sums)
                total.stopped.extend(outcome.stopped)
                finished = not outcome.partial and not outcome.stopped and not stop.reasons
                # a stop in a sender process (the --deadline, a destination down, the ledger)
                # reaches this process through the chunk's tallies only
                finished = finished and not stop.down and not _stopped_in(outcome.sums)
                rows.append(
                    _chunk_row(chunk, outcome.sums, seconds, "done" if finished else "stopped")
                )
                if outcome.partial:
                    total.partial = True
                if not finished:
                    break
                work.save(
                    f"chunk-{chunk.index + 1:04d}.done.json",
                    {"tallies": _sums_text(outcome.sums), "seconds": seconds},
                )
                progress.events_done += chunk.events
                # the chunk's pipeline is garbage now, much of it in reference cycles that the
                # command's raised collection thresholds (cli._tune_gc) leave for long
                gc.collect()
                built = sum(n for key, n in total.sums.items() if key[0] == "messages_built")
                if progress.events_done:
                    progress.messages_per_event = max(0.1, built / progress.events_done)
                log.warning(
                    "chunk %d of %d (%s) done in %s; %s",
                    chunk.index + 1,
                    len(plan.chunks),
                    chunk.label(),
                    format_duration(seconds),
                    progress.where(progress.events_done),
                    extra={
                        "event": "chunk_done",
                        "fields": {
                            **progress.numbers(progress.events_done),
                            "seconds": round(seconds, 3),
                        },
                    },
                )
        finally:
            set_progress_note(None)
        sandbox_counts = collector_counts(collector)
    total.stopped.extend(_gather(config, work, ran, run_id))
    not_run = [c for c in plan.chunks if c.index not in ran]
    for chunk in not_run:
        rows.append(_chunk_row(chunk, Counter(), 0.0, "not run"))
    chunking = {
        "unit": plan.unit,
        "mode": plan.mode,
        "work_dir": work.path,
        "chunks": rows,
    }
    shown = replace(config, inputs=config.inputs or config.dated_inputs)
    status, report = finish_run(
        shown,
        total,
        stop,
        started,
        files=len(files)
        if plan.mode == "spilled"
        else sum(len(v) for v in plan.partitions.values()),
        salvaged=salvaged,
        deadline=deadline,
        sandbox_counts=sandbox_counts,
        chunking=chunking,
    )
    done = status in (0, 3) and not not_run and all(r["status"] != "stopped" for r in rows)
    if done or not plan.chunks:  # no chunks: the spill pass stopped, leaving only scratch
        work.clear()
    else:
        log.warning(
            "the run's plan and finished chunks are kept in %s: run the same command again to "
            "go on from where it stopped",
            work.path,
        )
    return status, report


def _stopped_in(sums: Mapping[TallyKey, int]) -> bool:
    """Whether a chunk's tallies say its run stopped early (in any of its processes)."""
    return any(key.counter == STOPPED for key in sums)


def _run_chunk(
    config: BackfillConfig,
    plan: Plan,
    chunk: Chunk,
    work: WorkDir,
    options: PipelineOptions,
    stop: RunStop,
    run_id: str,
    now: float,
    progress: _Progress,
    *,
    deadline: float | None,
    lease: Lease | None,
    dead_lettered: frozenset[str],
) -> tuple[Pass, float]:
    """One chunk's pipeline, its outputs in the work directory; its outcome and seconds."""
    files, extra = _chunk_inputs(config, plan, chunk)
    progress.start(chunk)
    log.warning(
        "chunk %d of %d (%s): %s%s, ~%s",
        chunk.index + 1,
        len(plan.chunks),
        chunk.label(),
        "" if plan.mode == "dated" else "spilled ",
        plural(len(files), "file"),
        plural(chunk.events, "event"),
    )
    began = time.monotonic()
    dead_letter = work.chunk_file(chunk.index, "dead-letter.jsonl")
    dry_run = work.chunk_file(chunk.index, "dry-run.jsonl") if config.dry_run else None
    for path in (dead_letter, dry_run):
        if path:
            # an earlier try of this chunk: it runs again whole, its lines with it
            remove_leftovers(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    if not files:
        return Pass(), 0.0
    chunk_config = replace(config, dead_letter=dead_letter, dry_run=dry_run)
    tallies = work.chunk_file(chunk.index, "tallies.json")
    try:
        outcome = run_pass(
            chunk_config, files, options, stop, run_id, now,
            deadline=deadline, lease=lease, dead_lettered=dead_lettered,
            remember=False, tallies_path=tallies, **extra,
        )  # fmt: skip
    finally:
        for path in (dead_letter, dry_run, tallies):
            if path:  # their private folders, emptied by the merges
                remove_staging(path)
    # a chunk with no lines in an output writes no file
    for path in (dead_letter, dry_run):
        if path and not os.path.exists(path):
            with create_private(path):
                pass
    return outcome, time.monotonic() - began


def _gather(config: BackfillConfig, work: WorkDir, chunks: Sequence[int], run_id: str) -> list[str]:
    """Concatenate the chunks' dead letters and dry-run files into the run's own, in order.

    A dead letter's lines salvaged from an earlier, killed run come first. Each output is
    written whole under a temporary name and renamed; returns the problems.
    """
    problems: list[str] = []
    targets = [(config.dead_letter, "dead-letter.jsonl", "dead letter")]
    if config.dry_run:
        targets.append((config.dry_run, "dry-run.jsonl", "dry-run file"))
    for target, name, what in targets:
        temporary = f"{target}.tmp-chunks"
        try:
            merge_parts(target)  # the salvaged lines, if any, into the target first
            with create_private(temporary) as out:
                with FileSystems.open(target) as earlier:
                    shutil.copyfileobj(earlier, out, 1 << 20)
                for index in chunks:
                    part_path = work.chunk_file(index, name)
                    if os.path.exists(part_path):
                        with open(part_path, "rb") as part:
                            shutil.copyfileobj(part, out, 1 << 20)
            FileSystems.rename([temporary], [target])
        except Exception as error:  # OSError locally, the filesystem's own error elsewhere
            with contextlib.suppress(Exception):
                FileSystems.delete([temporary])
            problems.append(io_problem(what, target, error))
            continue
        if what == "dead letter":
            remember_dead_letter(config, target, run_id)
    return problems
