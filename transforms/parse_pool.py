"""The read and parse steps on every core, for a local run whose Beam work is one process.

In DirectRunner's in-memory mode one Python process does all of Beam's work, and before the
event dedup's grouping is complete nothing can be sent: reading, parsing, mapping and
building every event's messages ran on one core while the others waited (about 3 s for
50,000 events of the heavy shape, ``benchmarks/throughput.py``). :class:`ParseInProcesses`
does what ``ReadEvents`` followed by :class:`~beaconflow.transforms.parse.ParseEvents` do,
with the same outputs, in ``processes`` forked processes.

The records of all the files, in order, are cut into blocks of :data:`BLOCK` records; block
``b`` is parsed by process ``b % processes``. Each process reads every record (reading is a
small part of the work) and parses only its blocks' records, with its own copy of the parse
step, each event leaving already encoded for the event dedup (``(key, bytes)``, as
:class:`~beaconflow.transforms.dedup.DedupByKey` groups it). The parent takes the blocks back
in block order: the outputs come in the order one process gives them, so the dead letter's
entries keep the input's order. Each process's queue holds a few blocks: memory stays
bounded whatever the input's size.

Forked, not spawned: a mapping may hold functions pickle cannot carry, and a forked process
needs no second import of Beam. The processes ignore Ctrl-C and SIGTERM, which the parent
handles (its first signal lets the run finish without sending; its second stops it, and the
processes are killed); one whose parent is killed ends with it (Linux's parent-death
signal; elsewhere it exits once its queue is full). Used by ``pipelines/backfill.py`` on
DirectRunner's in-memory mode only: on every other runner the workers parallelise the parse
step themselves. Check it with::

    python -m pytest tests/transforms/test_parse_pool.py
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import pickle
import queue
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import DoOutputsTuple, PBegin, TaggedOutput

from beaconflow.delivery.stop import end_with_parent, ignore_stop_signals, signals_held
from beaconflow.model.errors import BeaconflowError
from beaconflow.model.source import RawRecord
from beaconflow.report.counts import TallyKey
from beaconflow.report.deadletter import DeadLetterEntry
from beaconflow.transforms.coders import MappedEventCoder, MessageCoder
from beaconflow.transforms.parse import INVALID, REPLAYED, KeyedMessage, ParseEvents
from beaconflow.transforms.read import read_file
from beaconflow.transforms.tallies import CountsTallies

#: Records per block: what a process parses before handing its outputs over at once.
BLOCK = 256
#: Blocks a process may have ready before it waits for the parent to take one.
QUEUED_BLOCKS = 8
#: The least input worth forking for (about 0.1 s of parsing): less is parsed sooner here.
MIN_BYTES = 1 << 20
#: How long the parent waits for a block before it checks the process is alive, in seconds.
_POLL = 1.0

TALLY = CountsTallies.tally_tag

#: An output as it crosses from a process to the parent: an event (key, encoded event), an
#: invalid record's dead-letter entry, a replayed message (ledger key, encoded message).
_EVENT, _INVALID, _REPLAYED = 0, 1, 2
_Output = tuple[int, Any, Any]


def parse_processes(files: Sequence[str]) -> int:
    """How many processes should parse ``files`` (0: parse them in the pipeline's process).

    One per core this process may run on, when there are several, every file is local and
    the input is at least :data:`MIN_BYTES` (a gs:// file would be read once per process).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cores or cores < 2 or not files:
        return 0
    total = 0
    for path in files:
        if "://" in path and not path.startswith("file://"):
            return 0
        try:
            total += os.stat(path.removeprefix("file://")).st_size
        except OSError:
            return 0  # the reader names the problem
    return cores if total >= MIN_BYTES else 0


class ParseProcessError(BeaconflowError, RuntimeError):
    """A parse process ended without its outputs (killed, out of memory) or with a bug."""


class ParseInProcesses(beam.PTransform[PBegin, DoOutputsTuple]):
    """Files -> what ``ReadEvents | ParseEvents`` gives, the events encoded for the dedup.

    Outputs: ``events`` (main, ``(event key, MappedEventCoder bytes)``), ``invalid``
    (DeadLetterEntry), ``replayed`` (KeyedMessage) and ``tally``.
    """

    def __init__(
        self,
        files: Sequence[str],
        file_format: str | None,
        parse: ParseEvents,
        processes: int,
    ) -> None:
        super().__init__()
        self._files = list(files)
        self._format = file_format
        self._parse = parse
        self._processes = processes

    def expand(self, pbegin: PBegin) -> DoOutputsTuple:
        outputs: DoOutputsTuple = (
            pbegin
            | "Start" >> beam.Create([None])
            | "ReadAndParse"
            >> beam.ParDo(_ParsePool(self._files, self._format, self._parse, self._processes))
            .with_output_types(
                tuple[str, bytes], invalid=DeadLetterEntry, replayed=KeyedMessage, tally=Any
            )
            .with_outputs(INVALID, TALLY, REPLAYED, main="events")
        )
        return outputs


class _ParsePool(beam.DoFn):
    """One element (None) -> every output of the files, parsed in forked processes."""

    def __init__(
        self, files: list[str], file_format: str | None, parse: ParseEvents, processes: int
    ) -> None:
        super().__init__()
        self._files = files
        self._format = file_format
        self._parse = parse
        self._processes = max(1, processes)

    def process(self, _: object) -> Iterator[Any]:
        count = self._processes
        context = multiprocessing.get_context("fork")
        queues: list[multiprocessing.queues.Queue[Any]] = [
            context.Queue(QUEUED_BLOCKS) for _ in range(count)
        ]
        parent = os.getpid()
        work = (self._files, self._format, self._parse)
        workers = [
            context.Process(
                target=_work,
                args=(number, count, *work, queues[number], parent),
                name=f"beaconflow-parse-{number}",
                daemon=True,
            )
            for number in range(count)
        ]
        tallies: Counter[tuple[str, ...]] = Counter()
        decode_message = MessageCoder().decode
        try:
            with signals_held():
                for worker in workers:
                    worker.start()
            block = 0
            finished: set[int] = set()
            while len(finished) < count:
                number = block % count
                if number in finished:  # the blocks ended at an earlier process's turn
                    number = next(n for n in range(count) if n not in finished)
                kind, value = _take(queues[number], workers[number], number)
                if kind == "done":
                    finished.add(number)
                    tallies.update(value)
                    continue
                block += 1
                for tag, first, second in value:
                    if tag == _EVENT:
                        yield (first, second)
                    elif tag == _INVALID:
                        yield TaggedOutput(INVALID, first)
                    else:
                        yield TaggedOutput(REPLAYED, (first, decode_message(second)))
        finally:
            for worker in workers:
                if worker.is_alive():
                    worker.kill()
                worker.join()
            for each in queues:
                each.close()
                each.cancel_join_thread()
        for key, n in tallies.items():
            yield TaggedOutput(TALLY, (TallyKey._make(key), n))


def _take(source: multiprocessing.queues.Queue[Any], worker: Any, number: int) -> tuple[str, Any]:
    """The next message of process ``number``: a block, its tallies at the end, or its error."""
    while True:
        try:
            kind, value = source.get(timeout=_POLL)
        except queue.Empty:
            if not worker.is_alive():
                raise ParseProcessError(
                    f"parse process {number} ended with status {worker.exitcode} before its "
                    "outputs were all read (killed, or out of memory?)"
                ) from None
            continue
        if kind == "error":
            raise value
        return kind, value


def _work(
    number: int,
    count: int,
    files: list[str],
    file_format: str | None,
    parse: ParseEvents,
    out: multiprocessing.queues.Queue[Any],
    parent: int,
) -> None:
    """A parse process: the outputs of blocks ``number``, ``number + count``, ... in order."""
    # the parent handles Ctrl-C and SIGTERM (sent to the whole process group): its first
    # lets the run go on, its second kills these processes
    ignore_stop_signals()
    end_with_parent(parent)

    def put(message: tuple[str, Any]) -> None:
        while True:
            try:
                out.put(message, timeout=_POLL)
                return
            except queue.Full:
                if os.getppid() != parent:  # the parent is gone: nobody will read this
                    os._exit(1)

    try:
        tallies = _parse_blocks(number, count, files, file_format, parse, put)
    except BaseException as error:  # handed to the parent, which raises it
        put(("error", _portable(error, number)))
        return
    put(("done", tallies))


def _parse_blocks(
    number: int,
    count: int,
    files: list[str],
    file_format: str | None,
    parse: ParseEvents,
    put: Any,
) -> Counter[tuple[str, ...]]:
    """Parse this process's blocks, handing each over with ``put``; the tallies counted."""
    encode_event = MappedEventCoder().encode
    encode_message = MessageCoder().encode
    parse.start_bundle()
    records: Iterator[RawRecord] = chain.from_iterable(
        read_file(path, file_format) for path in files
    )
    outputs: list[_Output] = []
    mine = False
    for index, raw in enumerate(records):
        if index % BLOCK == 0:
            if mine:
                put(("block", outputs))
                outputs = []
            mine = (index // BLOCK) % count == number
        if not mine:
            continue
        for output in parse.process(raw):
            if isinstance(output, TaggedOutput):
                if output.tag == INVALID:
                    outputs.append((_INVALID, output.value, None))
                else:
                    key, message = output.value
                    outputs.append((_REPLAYED, key, encode_message(message)))
            else:
                key, event = output
                outputs.append((_EVENT, key, encode_event(event)))
    if mine:
        put(("block", outputs))
    tallies: Counter[tuple[str, ...]] = Counter()
    for output in parse.finish_bundle():  # the tallies, once for all this process's blocks
        key, n = output.value.value
        tallies[tuple(key)] += n
    return tallies


def _portable(error: BaseException, number: int) -> BaseException:
    """``error`` if it crosses to the parent intact, else a ParseProcessError saying it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return ParseProcessError(f"parse process {number}: {type(error).__name__}: {error}")
    return error
