"""The backfill pipeline: read event logs, map, deduplicate, send in throttled batches, report.

Steps (one composite transform, :class:`Backfill`): read -> parse, map, validate and build
each event's messages -> event dedup -> window (out of range) -> messages -> message dedup
(identity key) -> send -> report. Every record or message that cannot go on leaves
through a tagged output into the dead letter; the report is computed from the pipeline's
outputs. Run the sandbox backfill on the sample data with::

    python -m beaconflow --sandbox --input 'sample_data/game_events*'

:func:`run` returns the exit status with the report (see :mod:`beaconflow.pipelines.cli` for
the command); runner sizing is in :mod:`beaconflow.pipelines.runners`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    S3Options,
)
from apache_beam.pvalue import PBegin, PCollection

from beaconflow import __version__
from beaconflow.delivery.lease_store import LeaseStoreMissing, StoreOptions, has_store, open_store
from beaconflow.delivery.ledger import (
    LedgerError,
    check_writable,
    ledger_files,
    make_directories,
)
from beaconflow.delivery.ledger_check import LedgerDamaged, LedgerUnreadable, prepare
from beaconflow.delivery.ledger_days import DaysSeen
from beaconflow.delivery.ledger_identity import LedgerIdentity
from beaconflow.delivery.ledger_lease import RemoteLedgerLocks
from beaconflow.delivery.ledger_lock import Lease, LedgerLocks, LockLimits, is_lockable
from beaconflow.delivery.redact import Redactor, redact_library_logs
from beaconflow.delivery.sender import Delivery
from beaconflow.delivery.sendproc import PoolClient, discard_spares, prestart
from beaconflow.delivery.stop import RunStop, forget_run, interrupted_by, mark_over, run_stop
from beaconflow.model.duration import format_duration
from beaconflow.model.errors import io_problem
from beaconflow.model.events import MappedEvent
from beaconflow.model.kontagent_age import KontagentAge
from beaconflow.model.message import Destination, Endpoint, Message
from beaconflow.model.render import render_url
from beaconflow.pipelines.options import BackfillConfig, InputNotLanded, UsageError, configure
from beaconflow.pipelines.runners import (
    LOCAL_RUNNERS,
    local_runner,
    quiet_workers,
    rate_split_warning,
    runner_name,
    runs_in_memory,
    runs_in_process,
    send_processes,
    worker_processes,
)
from beaconflow.report import dead_lettered
from beaconflow.report.counts import (
    DEAD_LETTER_REASON,
    Tally,
    TallyKey,
    build_report,
    reason_group,
    tally,
)
from beaconflow.report.deadletter import DeadLetterEntry, message_view
from beaconflow.report.html import html_path, render_html
from beaconflow.report.run import RunReport
from beaconflow.transforms.coders import MappedEventCoder, MessageCoder
from beaconflow.transforms.coders import register as register_coders
from beaconflow.transforms.dedup import DUPLICATES, SKIPPED, DedupByKey, encode_keyed
from beaconflow.transforms.ledger import KEYS as LEDGER_KEYS
from beaconflow.transforms.ledger import TALLY as LEDGER_TALLY
from beaconflow.transforms.ledger import ReadDelivered, days_seen
from beaconflow.transforms.linefile import (
    WriteLines,
    merge_parts,
    remove_leftovers,
    salvage_leftovers,
)
from beaconflow.transforms.messages import DAYS, DIRECT, EncodedMessage, SplitMessages
from beaconflow.transforms.old_messages import FROM_OLD_DAYS, forget_warned, warn_first_old
from beaconflow.transforms.parse import (
    INVALID,
    REPLAYED,
    KeyedEvent,
    KeyedMessage,
    ParseEvents,
    PartitionOwner,
)
from beaconflow.transforms.parse_pool import ParseInProcesses, parse_processes
from beaconflow.transforms.read import InputError, ReadEvents, expand_inputs, matches_nothing
from beaconflow.transforms.send import FAILED, SendConfig, SendMessages, start_senders
from beaconflow.transforms.send import TALLY as SEND_TALLY
from beaconflow.transforms.staging import (
    Listed,
    make_staging,
    remove_staging,
    staging_dir,
    temporary,
)
from beaconflow.transforms.tallies import SumTallies, TallyEach, read_sums
from beaconflow.transforms.window import InWindow

log = logging.getLogger("beaconflow")

TALLY = "tally"


def _event_copies_tallies(kept_copies: tuple[MappedEvent, int]) -> Iterator[Tally]:
    yield tally("events_duplicate", kept_copies[1])


def _message_copies_tallies(kept_copies: tuple[Message, int]) -> Iterator[Tally]:
    message, copies = kept_copies
    yield tally("messages_duplicate", copies, message.destination, message.kind)


class _DryRunTallies:
    """A message written to the dry-run file -> its tallies; old Kontagent ones are said.

    As the send step counts them (``messages_from_old_days``), so that a dry run shows what
    the run would do.
    """

    def __init__(self, age: KontagentAge, run_id: str) -> None:
        self._age = age
        self._run_id = run_id

    def __call__(self, message: Message) -> Iterator[Tally]:
        yield tally("messages_dry_run", 1, message.destination, message.kind)
        if self._age.is_old(message):
            yield tally(FROM_OLD_DAYS, 1, message.destination, message.kind)
            warn_first_old(self._run_id, message, dry_run=True)


def _skipped_tallies(kept_copies: tuple[Message, int]) -> Iterator[Tally]:
    message, copies = kept_copies
    yield tally("messages_skipped", 1, message.destination, message.kind)
    if copies > 1:
        yield tally("messages_duplicate", copies - 1, message.destination, message.kind)


def _failure_entry(delivery: Delivery) -> DeadLetterEntry:
    reason = delivery.error or f"HTTP {delivery.status}"
    return DeadLetterEntry.of_message(
        delivery.message, reason, delivery.status, delivery.attempts, delivery.ambiguous
    )


class _DeadLetterLine:
    """A dead-letter entry (or what ``entry_of`` makes one of) -> its line and reason's tally.

    The line is the entry's JSON, secrets masked; the tally counts its reason, redacted and
    grouped.
    """

    def __init__(
        self, redact: Redactor, entry_of: Callable[[Any], DeadLetterEntry] | None = None
    ) -> None:
        self._redact = redact
        self._entry_of = entry_of

    def __call__(self, element: Any) -> tuple[str, list[Tally]]:
        entry = element if self._entry_of is None else self._entry_of(element)
        detail = reason_group(self._redact(entry.reason))
        line = entry.to_json(self._redact)
        return line, [tally(DEAD_LETTER_REASON, stage=entry.stage, detail=detail)]


class _DryRun:
    """A message -> its dry-run line and its tallies."""

    def __init__(self, line: _DryRunLine, tallies: _DryRunTallies) -> None:
        self._line = line
        self._tallies = tallies

    def __call__(self, message: Message) -> tuple[str, list[Tally]]:
        return self._line(message), list(self._tallies(message))


class _DryRunLine:
    """A message -> its dry-run line: the message and its URL, secrets masked."""

    def __init__(self, endpoints: Mapping[Destination, Endpoint]) -> None:
        self._endpoints = dict(endpoints)
        # one redactor per destination, not one per line
        self._redact = {d: Redactor.of(e.secrets()) for d, e in self._endpoints.items()}

    def __call__(self, message: Message) -> str:
        endpoint = self._endpoints[message.destination]
        redact = self._redact[message.destination]
        view = redact.value(message_view(message), data=True)
        assert isinstance(view, dict)
        view["url"] = redact(render_url(message, endpoint, 0))
        return json.dumps(view, ensure_ascii=False, sort_keys=True)


class Backfill(beam.PTransform[PBegin, None]):
    """Every step of the backfill, from the input files to the run's dead letter and tallies.

    ``tallies_path`` receives the summed tallies the report is made of; ``now`` is the time
    events may not be after; ``workers`` and ``processes`` size the sending; ``run_id`` names
    the run's stop flag; ``deadline`` is the wall-clock instant (epoch seconds) of the run's
    --deadline, None without one. ``elsewhere``: in one chunk of a chunked run, the sources
    of events whose kept copy is in another chunk (:func:`beaconflow.pipelines.spill.resolve`).
    ``start_senders``: the send steps run in this process, and their sender processes start
    as the pipeline is built (:func:`start_senders`); call :meth:`close_senders` after the run.
    ``parse_processes``: read and parse in that many forked processes
    (:mod:`beaconflow.transforms.parse_pool`; DirectRunner's in-memory mode only), 0: in the
    pipeline's own steps. ``spread_files``: spread the files over the workers before they
    are read (in the pipeline's own steps); pointless when one process does Beam's work.
    """

    def __init__(
        self,
        config: BackfillConfig,
        files: Sequence[str],
        tallies_path: str,
        *,
        now: float,
        workers: int,
        processes: int = 0,
        run_id: str = "",
        dead_lettered: frozenset[str] = frozenset(),
        deadline: float | None = None,
        lease: Lease | None = None,
        owner: PartitionOwner | None = None,
        elsewhere: frozenset[str] = frozenset(),
        start_senders: bool = False,
        parse_processes: int = 0,
        spread_files: bool = True,
    ) -> None:
        super().__init__()
        self._parse_processes = parse_processes
        self._spread_files = spread_files
        self._owner = owner
        self._start_senders = start_senders
        self._senders: PoolClient | None = None
        self._lease = lease
        self._elsewhere = elsewhere
        self._dead_lettered = dead_lettered
        self._deadline = deadline
        self._config = config
        self._files = list(files)
        self._tallies_path = tallies_path
        self._now = now
        self._workers = workers
        self._processes = processes
        self._run_id = run_id

    def expand(self, pipeline: PBegin) -> None:
        config, run_id = self._config, self._run_id
        register_coders()
        redact = Redactor.of(config.secrets())
        identity = _identity(config)
        fingerprints = identity.fingerprints
        # A Kontagent message's identity includes its event's, and events are deduplicated
        # already: without a ledger to join, Kontagent messages skip the message dedup and
        # are sent as they leave the messages step.
        direct: tuple[Destination, ...] = () if config.ledger else ("kontagent",)
        parse = ParseEvents(
            config.mapping,
            self._now,
            fingerprints,
            config.destinations,
            self._dead_lettered,
            owner=self._owner,
            elsewhere=self._elsewhere,
        )
        if self._parse_processes:
            # one process does Beam's work here: the parse step runs on every core
            parsed = pipeline | "ReadAndParse" >> ParseInProcesses(
                self._files, config.file_format, parse, self._parse_processes
            )
        else:
            raw = pipeline | "Read" >> ReadEvents(
                self._files, config.file_format, spread=self._spread_files
            )
            # typed outputs: Beam encodes them with their registered coders, never by pickling
            parsed = raw | "Parse" >> beam.ParDo(parse).with_output_types(
                KeyedEvent, invalid=DeadLetterEntry, replayed=KeyedMessage, tally=Any
            ).with_outputs(INVALID, TALLY, REPLAYED, main="events")
        events = parsed.events | "DedupEvents" >> DedupByKey(
            MappedEventCoder(),
            order=lambda event: event.source,
            encoded=bool(self._parse_processes),
        )
        window = events.unique | "Window" >> beam.ParDo(
            InWindow(config.since, config.until)
        ).with_output_types(KeyedEvent, tally=Any).with_outputs(TALLY, main="events")
        age = KontagentAge(self._now, config.kontagent_max_age)
        ledger_days = bool(config.ledger)
        built = window.events | "Messages" >> beam.ParDo(
            SplitMessages(fingerprints, direct=direct, age=age, days=ledger_days)
        ).with_output_types(
            EncodedMessage, invalid=DeadLetterEntry, direct=Message, days=DaysSeen, tally=Any
        ).with_outputs(INVALID, TALLY, DIRECT, DAYS, main="messages")
        # the messages reach the dedup encoded as it groups them: the Flatten's own stage
        # (Beam runs every Flatten of two stages' outputs as one) only copies bytes
        replayed = parsed[REPLAYED] | "EncodeReplayed" >> beam.Map(
            encode_keyed, MessageCoder()
        ).with_output_types(EncodedMessage)
        all_messages = (built.messages, replayed) | "AllMessages" >> beam.Flatten()
        delivered_before = None
        ledger_tallies = []
        if config.ledger:
            # only the files that may hold these messages' entries: those of their days
            seen = (
                built[DAYS],
                parsed[REPLAYED] | "ReplayedDays" >> beam.Map(lambda kv: days_seen(kv[1])),
            ) | "AllDays" >> beam.Flatten()
            # only this run's endpoints' entries: another app's cannot match its messages
            ledger = seen | "Ledger" >> ReadDelivered(
                ledger_files(config.ledger), identity.legacy, fingerprints.values()
            )
            delivered_before = ledger[LEDGER_KEYS]
            ledger_tallies.append(ledger[LEDGER_TALLY])
        messages = all_messages | "DedupMessages" >> DedupByKey(
            MessageCoder(), delivered=delivered_before, encoded=True
        )
        streams = {"": messages.unique | "Unique" >> beam.Values()}
        if direct:
            streams["Direct"] = built[DIRECT]
        tallies = [
            parsed[TALLY],
            window[TALLY],
            built[TALLY],
            *ledger_tallies,
            events[DUPLICATES] | "CountEventCopies" >> beam.ParDo(TallyEach(_event_copies_tallies)),
            messages[DUPLICATES]
            | "CountMessageCopies" >> beam.ParDo(TallyEach(_message_copies_tallies)),
            messages[SKIPPED] | "CountSkipped" >> beam.ParDo(TallyEach(_skipped_tallies)),
        ]
        dead_letters = {"Parse": parsed[INVALID], "Map": built[INVALID]}
        # the send steps' failures: deliveries, made into dead-letter entries as written
        failed: dict[str, PCollection[Delivery]] = {}
        if config.dry_run:
            endpoints = config.endpoints
            render = _DryRun(_DryRunLine(endpoints), _DryRunTallies(age, run_id))
            for name, stream in streams.items():
                tallies.append(
                    stream
                    | f"WriteDryRun{name}"
                    >> WriteLines(
                        config.dry_run,
                        part=name,
                        what="dry-run file",
                        run_id=run_id,
                        render=render,
                    )
                )
        else:
            send_config = SendConfig(
                endpoints=config.endpoints,
                concurrency=config.concurrency,
                timeout=config.timeout,
                retry=config.retry,
                max_rps={d: config.max_rps for d in config.endpoints},
                workers=self._workers,
                progress_interval=config.progress_interval,
                ledger=config.ledger,
                adaptive=config.adaptive,
                emit_delivered=False,
                processes=self._processes,
                run_id=run_id,
                fingerprints=fingerprints,
                deadline=self._deadline,
                breaker_window=config.breaker_window,
                lease=self._lease,
                network=config.network,
                # the sandbox's collector is not Kontagent: nothing there counts by day
                old_before_day=None if config.sandbox else age.old_before_day,
            )
            if self._start_senders and self._senders is None:
                self._senders = start_senders(send_config)
            for name, stream in streams.items():
                # grouped by key just before (dedup), or coming out of the messages step
                # that reads grouped events: spread over workers already
                sent = stream | f"Send{name}" >> SendMessages(send_config, reshuffle=False)
                tallies.append(sent[SEND_TALLY])
                failed[f"Send{name}"] = sent[FAILED]
        entry_lines = _DeadLetterLine(redact)
        delivery_lines = _DeadLetterLine(redact, _failure_entry)
        for name, entries in [*dead_letters.items(), *failed.items()]:
            # each step writes and counts its own entries where it runs, as they come: a
            # Flatten would hold them until every step before it is done, after the sending,
            # and make them cross a stage boundary (a DeadLetterEntry has no coder of its own)
            tallies.append(
                entries
                | f"WriteDeadLetter{name}"
                >> WriteLines(
                    config.dead_letter,
                    part=name,
                    what="dead letter",
                    run_id=run_id,
                    render=delivery_lines if name in failed else entry_lines,
                )
            )
        _ = (
            tuple(tallies)
            | "AllTallies" >> beam.Flatten()
            | "Sum" >> beam.CombineGlobally(SumTallies())
            | "WriteTallies"
            >> WriteLines(self._tallies_path, what="report", shown=config.report, run_id=run_id)
        )

    def close_senders(self) -> None:
        """Let go of the sender processes started with the pipeline (none: nothing to do)."""
        if self._senders is not None:
            self._senders.close()
            self._senders = None


def _identity(config: BackfillConfig) -> LedgerIdentity:
    """The ledger fingerprints of the run's endpoints (the sandbox's URL by one name)."""
    return LedgerIdentity.of(config.endpoints, app=config.ledger_app, sandbox=config.sandbox)


def _check_ledger(config: BackfillConfig) -> None:
    """Check the ledger before anything is sent (UsageError naming its damage).

    A ledger holding a destination's deliveries under other fingerprints only is a warning.
    """
    assert config.ledger is not None
    try:
        warnings = prepare(config.ledger, _identity(config), write=not config.dry_run)
    except (LedgerDamaged, LedgerUnreadable, LedgerError) as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(io_problem("ledger", config.ledger, error)) from None
    for warning in warnings:
        log.warning("ledger %s: %s", config.ledger, warning)


def _dead_lettered(config: BackfillConfig) -> frozenset[str]:
    """The records earlier runs with this ledger dead-lettered (none for a dry run)."""
    if not config.ledger or config.dry_run:
        return frozenset()
    days = config.input_days.values()
    return dead_lettered.recall(
        config.ledger, config.dead_letter, min(days) if config.day and days else None
    )


def _read_tallies(path: str) -> Counter[TallyKey]:
    """The run's summed tallies; ValueError when they were not written whole.

    Every run writes exactly one line (an empty run writes ``{}``): an empty file means its
    shard could not be written, and the counts are unknown.
    """
    try:
        merge_parts(path)
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8").strip()
    finally:
        _discard_tallies(path)
    if not text:
        raise ValueError("the run's counts could not be written")
    return read_sums(text)


def _discard_tallies(path: str) -> None:
    """Remove the tallies file and its shards, whatever state a run left them in."""
    with contextlib.suppress(Exception):
        remove_leftovers(path)
        if FileSystems.exists(path):
            FileSystems.delete([path])


def _write_report(path: str, report: RunReport) -> tuple[str | None, bool]:
    """report.html, then report.json, each written whole under a temporary name and renamed.

    A disk that fills leaves the earlier report as it was, never a torn one; report.json,
    which tools read, is written last, so that it never says less than the page. Returns
    None when both were written, else the problem naming the file that was not; and
    whether report.html was written.
    """
    text = json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"
    pages = (
        (html_path(path), "report.html", "html", render_html(report)),
        (path, "report", "json", text),
    )
    try:
        for target, what, label, data in pages:
            # in the report's private folder (staging.py), renamed out of it once whole
            written = temporary(path, label)
            try:
                make_staging(path)
                with FileSystems.create(written) as handle:
                    handle.write(data.encode("utf-8"))
                FileSystems.rename([written], [target])
            except BaseException as error:
                with contextlib.suppress(Exception):
                    FileSystems.delete([written])
                if not isinstance(error, Exception):
                    raise
                return io_problem(what, target, error), target != html_path(path)
        return None, True
    finally:
        remove_staging(path)


def _write_json(path: str, report: RunReport) -> bool:
    """report.json alone, whole or not at all; whether it was written."""
    written = temporary(path, "json")
    try:
        make_staging(path)
        with FileSystems.create(written) as handle:
            text = json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"
            handle.write(text.encode("utf-8"))
        FileSystems.rename([written], [path])
    except Exception:
        with contextlib.suppress(Exception):
            FileSystems.delete([written])
        return False
    finally:
        remove_staging(path)
    return True


def _distinct_outputs(outputs: Sequence[tuple[str, str]]) -> None:
    """UsageError when two outputs are one file, or an output is a folder."""
    seen: dict[str, str] = {}
    for path, what in outputs:
        if not path:
            continue
        local = "://" not in path or path.startswith("file://")
        key = os.path.realpath(path.removeprefix("file://")) if local else path
        if key in seen:
            raise UsageError(f"the {seen[key]} and the {what} would be one file: {path}")
        seen[key] = what
        if local and os.path.isdir(key):
            raise UsageError(f"the {what} is a folder, not a file: {path}")


def _prepare_output(path: str, what: str, listed: Listed | None = None) -> int:
    """Make the output's folder and prove it writable before anything is sent (UsageError).

    Its private folder too (staging.py), where its pieces go; ``listed``: the output
    folders listed already for the pieces an earlier release left (each is listed once).
    Returns the dead-letter entries salvaged from a killed run.
    """
    directory = path.rpartition("/")[0]
    # beside the output: the folder the finished file is renamed into is the one to prove
    probe = f"{path}.probe-{uuid.uuid4().hex[:12]}"
    try:
        if directory and "://" not in path:
            make_directories(directory)
        with FileSystems.create(probe) as handle:
            handle.write(b"\n")
        make_staging(path)
    except Exception as error:  # OSError locally, the filesystem's own error elsewhere
        raise UsageError(io_problem(what, path, error)) from None
    finally:
        with contextlib.suppress(Exception):
            FileSystems.delete([probe])
    if FileSystems.exists(path):
        log.info("replacing %s from an earlier run", path)
    if what == "dead letter":
        # a killed run's dead-letter entries are records nothing else holds: keep them
        try:
            salvaged = salvage_leftovers(path, listed)
        except Exception as error:
            raise UsageError(io_problem(what, path, error)) from None
        if salvaged:
            log.warning(
                "kept %d dead-letter entries that an earlier run of %s left unfinished (it was "
                "killed): they are in this run's dead letter",
                salvaged,
                path,
            )
        return salvaged
    try:
        leftovers = remove_leftovers(path, listed)
    except Exception as error:
        raise UsageError(io_problem(what, path, error)) from None
    if leftovers:
        log.info("removed %d unfinished pieces of %s left by an earlier run", leftovers, path)
    return 0


def _one_per_output(reasons: Sequence[str]) -> list[str]:
    """The stop reasons, one per output that could not be written (the one saying most).

    The writer that fails and the merge after it may both name the same file.
    """
    kept: dict[str, str] = {}
    for reason in reasons:
        what, colon, rest = reason.partition(" not writable: ")
        key = f"{what}{colon}{rest.split(': ')[0]}" if colon else reason
        if len(reason) > len(kept.get(key, "")):
            kept[key] = reason
    return list(kept.values())


def _may_have_sent(stop: RunStop, options: PipelineOptions, config: BackfillConfig) -> bool:
    """Whether a failed run may have sent something (then it never exits 2).

    Known in the process that sends (DirectRunner in memory or in threads); elsewhere the
    workers are other processes, and a run is taken to have sent once it started.
    """
    if config.dry_run:
        return False
    if stop.sending_began:
        return True
    return not runs_in_process(options)


def _landed_inputs(config: BackfillConfig) -> tuple[list[str], tuple[str, ...]]:
    """The --input patterns to read, and the --lookback days that have no input (skipped).

    InputNotLanded (exit 75) when a pattern of the --date day itself matches nothing: its
    logs have not landed yet. Patterns without {date} are left to expand_inputs (exit 2).
    """
    patterns: list[str] = []
    missing: set[str] = set()
    for pattern in config.inputs:
        day = config.input_days.get(pattern)
        if day is not None and matches_nothing(pattern):
            if day == config.day:
                raise InputNotLanded(
                    f"the input of {day.isoformat()} has not landed: --input {pattern} matches "
                    "nothing; nothing was done, try again later"
                )
            missing.add(day.isoformat())
            continue
        patterns.append(pattern)
    return patterns, tuple(sorted(missing))


def _ledger_locks(config: BackfillConfig, stop: RunStop) -> contextlib.AbstractContextManager[Any]:
    """The locks of the endpoints this run sends to, or nothing to hold.

    A dry run sends nothing and takes none. A local or mounted ledger holds lock files; a
    ``gs://`` or ``s3://`` one, lease objects on the store (reached as Beam's ``--s3_*``
    options say, else as its client's own configuration does); another scheme has no lock,
    and the run says so (docs/ledger.md). The locks' limits come from the environment
    (``BEACONFLOW_LEDGER_LOCK_STALE_SECONDS``, ``..._HEARTBEAT_SECONDS``), for lock files and
    lease objects alike; a bad value is a UsageError naming the variable, whatever the run.
    """
    try:
        limits = LockLimits.from_environment(os.environ)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if not config.ledger or config.dry_run:
        return contextlib.nullcontext()
    fingerprints = _identity(config).fingerprints.values()
    if is_lockable(config.ledger):
        return LedgerLocks(
            config.ledger,
            fingerprints,
            on_lost=stop.trip,
            stale_after=limits.stale_after,
            heartbeat_every=limits.heartbeat_every,
        )
    if has_store(config.ledger):
        options = _store_options(config.beam_args)
        try:
            store = open_store(config.ledger, options)
        except (LeaseStoreMissing, LedgerError) as error:
            raise UsageError(str(error)) from None
        return RemoteLedgerLocks(
            config.ledger,
            fingerprints,
            store,
            on_lost=stop.trip,
            stale_after=limits.stale_after,
            heartbeat_every=limits.heartbeat_every,
            options=options,
        )
    log.warning(
        "the ledger %s is not locked (no lock on %s:// paths): two runs at once for the same "
        "endpoint may both send; see docs/ledger.md",
        config.ledger,
        config.ledger.partition("://")[0],
    )
    return contextlib.nullcontext()


def _store_options(beam_args: Sequence[str]) -> StoreOptions:
    """How the lease reaches the ledger's store: Beam's own options for it, if given."""
    s3 = PipelineOptions(list(beam_args)).view_as(S3Options)
    return StoreOptions(
        s3_endpoint_url=s3.s3_endpoint_url,
        s3_region_name=s3.s3_region_name,
        s3_access_key_id=s3.s3_access_key_id,
        s3_secret_access_key=s3.s3_secret_access_key,
        s3_session_token=s3.s3_session_token,
        s3_verify=s3.s3_verify,
        s3_disable_ssl=bool(s3.s3_disable_ssl),
    )


@contextlib.contextmanager
def _holding(locks: contextlib.AbstractContextManager[Any]) -> Iterator[Any]:
    """Hold ``locks``, and give them (exit 75 when another run holds one).

    A store that fails them, or a lock file that cannot be opened or written, is exit 2.
    """
    try:
        held = locks.__enter__()
    except LedgerError as error:
        raise UsageError(str(error)) from None
    try:
        yield held
    finally:
        locks.__exit__(None, None, None)


def _lease(locks: object, options: PipelineOptions) -> Lease | None:
    """What the run's senders check before each request: that its locks are still its own.

    Lock files or lease objects, for DirectRunner's workers, in this process or in processes
    of this host, which see the lock files and have the store's client and credentials;
    other runners' workers may be on hosts that have neither (docs/ledger.md).
    """
    if not isinstance(locks, (LedgerLocks, RemoteLedgerLocks)):
        return None
    if runner_name(options) not in LOCAL_RUNNERS:
        return None
    return locks.lease()


def run(argv: Sequence[str], *, now: float | None = None) -> tuple[int, RunReport]:
    """Run the backfill; return the exit status and the report. UsageError for bad input.

    A run that stops early on purpose (see :mod:`beaconflow.delivery.stop`: its --deadline,
    a destination down, a ledger that cannot be written), or fails after it may have sent
    something, returns 4 with a report whose ``stopped`` says why. The --deadline counts
    from the moment this function is called. Raises
    :class:`~beaconflow.model.errors.TryLaterError` (exit 75) when nothing was done because
    another run holds the ledger, or the --date day's input has not landed; no report then.
    """
    began = time.time()  # the --deadline counts from here, whatever ``now`` says
    now = began if now is None else now
    config = replace(configure(argv, now), started_at=began)
    deadline = None if config.deadline is None else began + config.deadline
    started = time.monotonic()
    options = PipelineOptions(quiet_workers(config.beam_args))
    # Beam's filesystems see the run's options (--s3_endpoint_url, ...) from the first path
    # they reach, not only once the pipeline is built
    FileSystems.set_options(options)
    patterns, lookback_missing = _landed_inputs(config)
    try:
        files = expand_inputs(patterns, config.file_format)
    except InputError as error:
        raise UsageError(str(error)) from None
    redact_library_logs(config.secrets())
    outputs = (
        (config.dead_letter, "dead letter"),
        (config.report, "report"),
        (config.dry_run or "", "dry-run file"),
    )
    _distinct_outputs((*outputs, (html_path(config.report), "report.html")))
    if config.ledger and not config.dry_run:
        try:
            check_writable(config.ledger)
        except LedgerError as error:
            raise UsageError(str(error)) from None
    run_id = uuid.uuid4().hex
    stop = run_stop(run_id)
    try:
        # before the outputs are prepared (which removes an earlier run's leftovers) and the
        # ledger is read, held until the report is written
        with _holding(_ledger_locks(config, stop)) as locks:
            lease = _lease(locks, options)
            if config.ledger:
                # before the outputs are touched: a damaged ledger leaves them as they were
                _check_ledger(config)
            if not config.dry_run and runs_in_process(options):
                # once the usage errors are ruled out: the sender processes import their
                # libraries while the run is planned and its pipeline built
                prestart(send_processes(options, config.send_processes))
            listed: Listed = {}  # the outputs' folders are listed once, not once per output
            try:
                salvaged = sum(
                    _prepare_output(path, what, listed) for path, what in outputs if path
                )
                # the chunk driver builds on this module's passes: imported where it is used
                from beaconflow.pipelines import chunks

                if chunks.chunked(config, files, options):
                    return chunks.run_chunked(
                        config,
                        files,
                        options,
                        stop,
                        run_id,
                        now,
                        started,
                        salvaged=salvaged,
                        deadline=deadline,
                        lease=lease,
                        dead_lettered=_dead_lettered(config),
                    )
                return _run_pipeline(
                    config,
                    files,
                    options,
                    stop,
                    run_id,
                    now,
                    started,
                    lookback_missing,
                    salvaged,
                    deadline=deadline,
                    lease=lease,
                )
            finally:
                # emptied by the merges; what a failed merge kept stays, with its folder
                for path, _ in outputs:
                    if path:
                        remove_staging(path)
    finally:
        discard_spares()  # those no pool took (the run failed before it sent)
        forget_run(run_id)
        forget_warned(run_id)


@dataclass
class Pass:
    """What one pipeline of a run leaves: its summed tallies, why it stopped, if it did.

    ``partial``: the pipeline failed after it may have sent something, or its counts could
    not be read: ``sums`` is then empty and the counts are unknown.
    """

    sums: Counter[TallyKey] = field(default_factory=Counter)
    stopped: list[str] = field(default_factory=list)
    partial: bool = False


def run_pass(
    config: BackfillConfig,
    files: Sequence[str],
    options: PipelineOptions,
    stop: RunStop,
    run_id: str,
    now: float,
    *,
    deadline: float | None = None,
    lease: Lease | None = None,
    dead_lettered: frozenset[str] = frozenset(),
    remember: bool = True,
    tallies_path: str | None = None,
    **backfill: Any,
) -> Pass:
    """Build and run one pipeline over ``files``; merge its dead letter and dry-run file.

    ``remember``: record the merged dead letter in the ledger's memory (a chunked run does
    it once, for the run's whole dead letter). ``backfill``: further arguments of
    :class:`Backfill` (a chunk's ``elsewhere`` and ``owner``).
    """
    outcome = Pass()
    redact = Redactor.of(config.secrets())
    # in the report's private folder, named as one of its pieces: a killed run's are removed
    tallies_path = tallies_path or temporary(config.report, f"tallies-{uuid.uuid4().hex[:8]}.json")
    pipeline = beam.Pipeline(runner=local_runner(options), options=options)
    steps = Backfill(
        config,
        files,
        tallies_path,
        now=now,
        workers=worker_processes(options),
        processes=send_processes(options, config.send_processes),
        run_id=run_id,
        dead_lettered=dead_lettered,
        deadline=None if config.dry_run else deadline,
        lease=lease,
        # the send steps run here: their processes start while the pipeline reads
        start_senders=runs_in_process(options),
        parse_processes=parse_processes(files) if runs_in_memory(options) else 0,
        spread_files=not runs_in_memory(options),
        **backfill,
    )
    try:
        _ = pipeline | "Backfill" >> steps
        try:
            with _deadline_said(deadline, config):
                result = pipeline.run()
                result.wait_until_finish()
        except Exception as error:
            if interrupted(error) or not _may_have_sent(stop, options, config):
                raise
            first_line = f"{type(error).__name__}: {error}".splitlines()[0]
            outcome.stopped.append(f"the run failed: {redact(first_line)}")
            outcome.partial = True
    finally:
        # the sender processes stop once the pass is over, however it ends (a chunked
        # run keeps them for its next chunk: pools_kept)
        steps.close_senders()
        # Beam makes this folder when the pipeline is made and removes it only at the end
        # of run(): a pass that fails before (a step's expand) would leave it in /tmp
        shutil.rmtree(pipeline.local_tempdir, ignore_errors=True)
    for wanted, what in ((config.dead_letter, "dead letter"),
                         (config.dry_run, "dry-run file")):  # fmt: skip
        if wanted:
            try:
                merge_parts(wanted)
            except Exception as error:
                kept = f"what was written is kept in {staging_dir(wanted)}/"
                outcome.stopped.append(f"{io_problem(what, wanted, error)} ({kept})")
            else:
                if what == "dead letter" and remember:
                    remember_dead_letter(config, wanted, run_id)
    if not outcome.partial:
        try:
            outcome.sums = _read_tallies(tallies_path)
        except Exception as error:
            # the counts' own write failing said why already (the system's reason):
            # that is the one to keep; partial says the counts are unknown
            named = f"report not writable: {config.report}: "
            if not any(reason.startswith(named) for reason in stop.reasons):
                outcome.stopped.append(io_problem("report", config.report, error))
            outcome.partial = True
    else:
        _discard_tallies(tallies_path)
    return outcome


def remember_dead_letter(config: BackfillConfig, path: str, run_id: str) -> None:
    """Record a committed dead letter in the ledger's memory (runs with a ledger that send)."""
    if config.ledger and not config.dry_run:
        # committed: a later run reading the same records counts them only
        days = config.input_days.values() if config.day else ()
        dead_lettered.remember(config.ledger, path, run_id, days)


@contextlib.contextmanager
def sandboxed(config: BackfillConfig) -> Iterator[tuple[BackfillConfig, Any]]:
    """The run's configuration, and the sandbox collector it sends to (None: not a sandbox).

    The collector runs until the block ends; the configuration's endpoints point at it.
    """
    if not config.sandbox:
        yield config, None
        return
    from beaconflow.pipelines.options import SANDBOX_KISSMETRICS_KEY, SANDBOX_KONTAGENT_KEY
    from beaconflow.sandbox.collector import Collector

    with Collector(
        kontagent_key=SANDBOX_KONTAGENT_KEY,
        kissmetrics_key=SANDBOX_KISSMETRICS_KEY,
        kontagent_secret=config.endpoints["kontagent"].secret,
    ) as collector:
        base = collector.base_url
        endpoints = {d: replace(e, base_url=base) for d, e in config.endpoints.items()}
        log.warning(
            "SANDBOX MODE: sending to the local collector at %s; "
            "nothing reaches Kontagent or KISSmetrics.",
            base,
        )
        yield replace(config, endpoints=endpoints), collector


def collector_counts(collector: Any) -> dict[str, int] | None:
    """What the sandbox collector accepted, rejected and faulted (None: no sandbox)."""
    if collector is None:
        return None
    counts = collector.counts()
    return {
        "accepted": counts.get("accepted", 0),
        "rejected": counts.get("rejected", 0),
        "faulted": counts.get("faulted", 0),
    }


def _run_pipeline(
    config: BackfillConfig,
    files: Sequence[str],
    options: PipelineOptions,
    stop: RunStop,
    run_id: str,
    now: float,
    started: float,
    lookback_missing: tuple[str, ...],
    salvaged: int = 0,
    *,
    deadline: float | None = None,
    lease: Lease | None = None,
) -> tuple[int, RunReport]:
    """The run itself, once its inputs, outputs and ledger are ready: status and report.

    ``salvaged``: the dead-letter entries of a killed earlier run kept in this run's.
    ``deadline``: the --deadline's wall-clock instant (epoch seconds), or None.
    """
    with sandboxed(config) as (config, collector):
        warning = rate_split_warning(options) if config.max_rps else None
        if warning:
            log.warning("--max-rps may be exceeded: %s", warning)
        outcome = run_pass(
            config,
            files,
            options,
            stop,
            run_id,
            now,
            deadline=deadline,
            lease=lease,
            dead_lettered=_dead_lettered(config),
        )
        sandbox_counts = collector_counts(collector)
    return finish_run(
        config,
        outcome,
        stop,
        started,
        files=len(files),
        lookback_missing=lookback_missing,
        salvaged=salvaged,
        deadline=deadline,
        sandbox_counts=sandbox_counts,
    )


def finish_run(
    config: BackfillConfig,
    outcome: Pass,
    stop: RunStop,
    started: float,
    *,
    files: int,
    lookback_missing: tuple[str, ...] = (),
    salvaged: int = 0,
    deadline: float | None = None,
    sandbox_counts: dict[str, int] | None = None,
    **more: Any,
) -> tuple[int, RunReport]:
    """The run's report from its summed outcome, its exit status, and report.json/.html.

    ``more``: further report fields (a chunked run's ``inputs`` and ``chunking``).
    """
    stopped = list(outcome.stopped)
    partial = outcome.partial
    # every output that failed, not only the first: the tallies saying so may be lost with
    # the counts, when they were the report's
    stopped.extend(stop.reasons)
    # a destination down in this process (the tallies say so too, also from other processes)
    stopped.extend(stop.down.values())
    counted = build_report(outcome.sums, time.monotonic() - started, _one_per_output(stopped))
    report = replace(
        counted,
        inputs=tuple(config.inputs),
        files=files,
        report=config.report,
        dead_letter=config.dead_letter,
        dry_run=config.dry_run,
        sandbox=config.sandbox,
        ledger=config.ledger,
        date=config.day.isoformat() if config.day else None,
        since=None if config.since is None else _iso_second(config.since),
        until=None if config.until is None else _iso_second(config.until),
        deadline=None if deadline is None else _iso_instant(deadline),
        lookback_days_missing=lookback_missing,
        dead_letter_salvaged=salvaged,
        destinations=tuple(config.destinations),
        sandbox_collector=sandbox_counts,
        # only a run whose counts are known can say a rule never matched
        mapping_rules_unmatched=()
        if partial
        else tuple(
            label
            for label in config.mapping.required_labels()
            if not counted.mapping_rules_matched.get(label)
        ),
        # the counts come from the pipeline's outputs, which a failed run did not finish
        partial=partial,
        started_at=None if config.started_at is None else _iso_instant(config.started_at),
        ended_at=_iso_instant(time.time()),
        version=__version__,
        command=config.command,
        network=None if config.dry_run else config.network.report(),
        **more,
    )
    signum = interrupted_by()
    if signum is not None and report.stopped:
        # Ctrl-C or SIGTERM: the shell's convention, 128 + the signal's number
        status = 128 + signum
        report = replace(report, interrupted=True)
    elif report.stopped:
        status = 2 if config.dry_run else 4
    else:
        status = 0 if report.errors <= config.max_errors else 3
    report = replace(report, exit_status=status)
    mark_over()  # a signal from now on stops nothing: the status stands
    reason, html_written = _write_report(config.report, report)
    if reason is not None:
        log.error("%s", reason)
        report = replace(
            report,
            stopped="; ".join(filter(None, (report.stopped, reason))),
            exit_status=report.exit_status if report.interrupted else 2 if config.dry_run else 4,
        )
        # report.json alone is small: say at least that much on disk, if it fits now
        written = _write_json(config.report, report)
        report = replace(report, report_written=written, report_html_written=html_written)
    else:
        report = replace(report, report_written=True, report_html_written=True)
    return report.exit_status or 0, report


@contextlib.contextmanager
def _deadline_said(deadline: float | None, config: BackfillConfig) -> Iterator[None]:
    """Say on stderr when the --deadline is reached while the pipeline runs (not a dry run).

    The senders keep the deadline themselves, each on its own clock (a sender process, a
    worker on another machine): this is only the one line that says it, from the driver.
    """
    if deadline is None or config.dry_run:
        yield
        return

    def say() -> None:
        assert config.deadline is not None
        log.warning(
            "the --deadline is reached (%s after the run's start): no new request starts, "
            "what is in flight finishes, the rest goes to the dead letter as not attempted",
            format_duration(config.deadline),
        )

    timer = threading.Timer(max(0.0, deadline - time.time()), say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _iso_instant(epoch: float) -> str:
    """An instant as ISO-8601 UTC to the millisecond: ``2025-06-01T06:00:00.250Z``."""
    moment = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _iso_second(epoch: int) -> str:
    """An instant of the window as ISO-8601 UTC to the second: ``2025-06-01T00:00:00Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def interrupted(error: BaseException) -> bool:
    """True for a Ctrl-C that Beam re-raised as another exception naming its step."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
