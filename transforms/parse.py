"""The parse step: input records -> mapped events, keyed by event identity.

:class:`ParseEvents` parses each :class:`~beaconflow.model.source.RawRecord` once, applies the
mapping, validates the result and builds the event's messages
(:func:`~beaconflow.model.events.map_event`). A valid record leaves as
``(event key, MappedEvent)`` for the event dedup; an event whose messages cannot be built
carries why, so that it is counted and dead-lettered only if it is kept (not a duplicate, in
the window). Records that are not valid events leave through the ``invalid`` output as
:class:`~beaconflow.report.deadletter.DeadLetterEntry` values. A dead-letter file given as
input is replayed: its records are parsed again (for the one destination a ``map`` entry
names, when it names one), and its messages leave through ``replayed`` as
``(ledger key, Message)``.

In a chunked backfill, a record whose kept copy (same event key, first source) is in another
chunk is named in ``elsewhere``: it is parsed and counted as usual, then counted a duplicate,
as the event dedup of one unchunked run would count it. :func:`event_place` is what the
spill pass that makes the chunks needs of this step: a record's event time and identity.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from beaconflow.delivery.ledger import ledger_key
from beaconflow.model.convert import convert_record, identify_record
from beaconflow.model.events import MappedEvent
from beaconflow.model.mapping import RecordMapping
from beaconflow.model.message import DESTINATIONS, Destination, Message, MessageError
from beaconflow.model.records import RecordError, parse_line
from beaconflow.model.source import RawRecord, source_of
from beaconflow.report.counts import MAPPING_RULE, PROPERTY_LEFT_OUT
from beaconflow.report.deadletter import (
    DeadLetterEntry,
    entry_identity,
    is_entry,
    replayed_message,
)
from beaconflow.transforms.tallies import CountsTallies

#: Output tags of the parse step.
INVALID = "invalid"
REPLAYED = "replayed"

KeyedEvent = tuple[str, MappedEvent]
"""(event key, the event's messages)."""
KeyedMessage = tuple[str, Message]
"""(ledger key, the message): what the message dedup groups."""


def replayed_record(entry: dict[str, Any]) -> tuple[dict[str, Any], object]:
    """The record a dead-letter entry given as input replays, and its one destination.

    The destination is None when the entry names none; RecordError when the entry holds
    neither its record nor its line.
    """
    replayed = entry.get("record")
    if isinstance(replayed, dict):
        return replayed, entry.get("destination")
    if "line" not in entry:
        raise RecordError("record", "a dead-letter entry needs its record (an object) or line")
    return parse_line(str(entry["line"])), entry.get("destination")


def event_place(
    raw: RawRecord, mapping: RecordMapping, now: float
) -> tuple[int, str | None] | None:
    """Where :class:`ParseEvents` sends ``raw``, reduced to what places it in time.

    ``(event time, event_id identity or None)`` when it leaves as an event (kept or a
    duplicate; its messages are not built); None when it leaves as an invalid record or as
    a replayed message. The spill pass of a chunked backfill files records by it, so it
    follows ``process`` step for step (tests/transforms/test_parse.py holds them together).
    """
    if raw.problem is not None:
        return None
    try:
        source = raw.row if raw.row is not None else parse_line(raw.text or "")
        if is_entry(source):
            if "message" in source:
                return None
            source, _ = replayed_record(source)
        return identify_record(source, mapping, now=now)
    except RecordError:
        return None


class ParseEvents(CountsTallies, beam.DoFn):
    """RawRecord -> KeyedEvent (main); ``invalid``, ``replayed`` and ``tally`` outputs."""

    def __init__(
        self,
        mapping: RecordMapping,
        now: float,
        fingerprints: Mapping[str, str],
        destinations: tuple[Destination, ...] = DESTINATIONS,
        dead_lettered: frozenset[str] = frozenset(),
        owner: PartitionOwner | None = None,
        elsewhere: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        #: In a chunk of a dated backfill: which records this chunk counts and sends (the
        #: others, read again from a shared partition, belong to another chunk)
        self._owner = owner
        #: The sources (``file:position``) of events whose kept copy another chunk of a
        #: chunked run holds: parsed and counted as usual, then counted duplicates
        self._elsewhere = elsewhere
        #: The identities of the records an earlier run with the same ledger dead-lettered
        #: (:func:`~beaconflow.report.deadletter.entry_identity`): counted, not dead-lettered
        #: again, unless a dead letter is replayed
        self._dead_lettered = dead_lettered
        self._mapping = mapping
        self._now = now
        self._fingerprints = dict(fingerprints)
        self._destinations = destinations

    def start_bundle(self) -> None:
        super().start_bundle()
        # which mapping rules found a value, summed per bundle (the report names the others),
        # and the properties left out
        self._matched: Counter[str] = Counter()
        self._left_out: Counter[str] = Counter()

    def finish_bundle(self) -> Iterator[Any]:
        for label, n in self._matched.items():
            self.count(MAPPING_RULE, n=n, detail=label)
        for name, n in self._left_out.items():
            self.count(PROPERTY_LEFT_OUT, n=n, detail=name)
        self._matched.clear()
        self._left_out.clear()
        yield from super().finish_bundle()

    def process(self, raw: RawRecord) -> Iterator[KeyedEvent | TaggedOutput[str, Any]]:
        owner = self._owner
        if owner is None:
            yield from self._parse(raw, self._matched, self._left_out)
        elif raw.problem is not None:
            if owner.owns_undated(raw.file):  # a read problem is its partition's home chunk's
                yield from self._parse(raw, self._matched, self._left_out)
        else:  # maybe another chunk's: known once its time is
            yield from self._owned(raw, owner)

    def _owned(
        self, raw: RawRecord, owner: PartitionOwner
    ) -> Iterator[KeyedEvent | TaggedOutput[str, Any]]:
        """Parse a record another chunk may own; count and emit it only if this one does."""
        matched: Counter[str] = Counter()
        left_out: Counter[str] = Counter()
        outputs = list(self._parse(raw, matched, left_out, owner=owner))
        if outputs and outputs[0] is _NOT_OURS:
            return
        self._matched.update(matched)
        self._left_out.update(left_out)
        yield from outputs

    def _parse(
        self,
        raw: RawRecord,
        matched: Counter[str],
        left_out: Counter[str],
        *,
        owner: PartitionOwner | None = None,
    ) -> Iterator[Any]:
        """The record's outputs; with ``owner``, first :data:`_NOT_OURS` alone if not ours."""
        if raw.problem is not None:
            self.count("events_read")
            yield from self._invalid("read", raw.problem, raw)
            return
        source: dict[str, Any] | None = raw.row
        only: object = None  # a replayed map entry's one destination
        replaying = False
        try:
            if source is None:
                source = parse_line(raw.text or "")
            if is_entry(source):  # a dead-letter file given as input: replay it
                replaying = True
                if "message" in source:
                    if owner is not None and not owner.owns_undated(raw.file):
                        yield _NOT_OURS  # no time: its partition's home chunk's
                        return
                    self.count("events_read")
                    yield from self._replay_message(source, raw)
                    return
                source, only = replayed_record(source)
            converted = convert_record(
                source,
                self._mapping,
                now=self._now,
                source_name=raw.source,
                destinations=self._destinations,
                only=only,
                matched=matched,
                left_out=left_out,
            )
        except RecordError as error:
            if owner is not None and not owner.owns_undated(raw.file):
                yield _NOT_OURS  # no valid time: its partition's home chunk's
                return
            self.count("events_read")
            yield from self._invalid("parse", str(error), raw, source, replaying=replaying)
            return
        if owner is not None and not owner.owns(raw.file, converted.event.time):
            yield _NOT_OURS
            return
        self.count("events_read")
        if raw.source in self._elsewhere:
            # its kept copy is in another chunk: what dedup would have done with it there
            self.count("events_duplicate")
            return
        mapped = converted.mapped
        if self._dead_lettered and mapped.problems and not replaying:
            mapped = self._known_problems(mapped, raw)
        yield (converted.event.key, mapped)

    def _known_problems(self, mapped: MappedEvent, raw: RawRecord) -> MappedEvent:
        """The event with the problems an earlier run's dead letter holds marked ``known``."""
        problems = tuple(
            problem._replace(known=True)
            if entry_identity(
                DeadLetterEntry(
                    "map", problem.reason, raw.source, record=mapped.record,
                    destination=problem.destination,
                )
            )
            in self._dead_lettered
            else problem
            for problem in mapped.problems
        )  # fmt: skip
        return dataclasses.replace(mapped, problems=problems)

    def _replay_message(
        self, entry: dict[str, Any], raw: RawRecord
    ) -> Iterator[TaggedOutput[str, Any]]:
        try:
            # the source of the event it was built from, when the entry names it (an entry
            # written before sources were kept: the entry's own line)
            origin = source_of(entry.get("source")) or raw.source
            message = replayed_message(entry["message"]).with_source(origin)
            fingerprint = self._fingerprints[message.destination]
        except (MessageError, AttributeError) as error:
            yield from self._invalid(
                "parse", f"dead-letter message: {error}", raw, entry, replaying=True
            )
            return
        except KeyError:
            reason = f"dead-letter message for {message.destination}, which has no key in this run"
            yield from self._invalid("parse", reason, raw, entry, replaying=True)
            return
        self.count("events_mapped")
        self.count("messages_built", message.destination, message.kind)
        yield TaggedOutput(REPLAYED, (ledger_key(fingerprint, message), message))

    def _invalid(
        self,
        stage: str,
        reason: str,
        raw: RawRecord,
        record: object = None,
        *,
        replaying: bool = False,
    ) -> Iterator[TaggedOutput[str, DeadLetterEntry]]:
        entry = DeadLetterEntry.of_record(stage, reason, raw, record)
        if self._dead_lettered and not replaying:
            identity = entry_identity(entry)
            if identity is not None and identity in self._dead_lettered:
                # an earlier night's dead letter holds it already: not news, not an error
                self.count("events_already_dead_lettered")
                return
        self.count("events_invalid", stage=stage)
        yield TaggedOutput(INVALID, entry)


#: What :meth:`ParseEvents._parse` yields alone for a record another chunk owns.
_NOT_OURS: Any = object()


@dataclass(frozen=True)
class PartitionOwner:
    """Which chunk of a dated backfill counts and sends each record it reads.

    A dated backfill (``{date}`` in ``--input``) runs its window in chunks of consecutive
    days. Chunk ``i`` covers days ``starts[i]`` to ``starts[i+1] - 1`` (the last one to
    ``last_day``; days count from 1970-01-01, UTC) and reads the partitions of its days and
    of the ``lookback`` days after them, where its late events landed. A partition may be
    read by two chunks, so a record is owned by exactly one: the chunk of its event's day
    when that chunk reads its partition, else its partition's home chunk (the chunk of the
    partition's day, the last one for partitions after the window), which also owns every
    record without a valid time. ``file_days`` maps each input file to its partition's day.
    """

    chunk: int
    starts: tuple[int, ...]
    last_day: int
    lookback: int
    file_days: Mapping[str, int]

    def _chunk_of(self, day: int) -> int | None:
        if day < self.starts[0] or day > self.last_day:
            return None
        return bisect.bisect_right(self.starts, day) - 1

    def _end(self, chunk: int) -> int:
        return self.starts[chunk + 1] - 1 if chunk + 1 < len(self.starts) else self.last_day

    def _home(self, partition: int) -> int:
        found = self._chunk_of(partition)
        if found is not None:
            return found
        return 0 if partition < self.starts[0] else len(self.starts) - 1

    def owns_undated(self, path: str) -> bool:
        """Whether this chunk owns a record of ``path`` whose time is not known."""
        return self._home(self.file_days[path]) == self.chunk

    def owns(self, path: str, time: float) -> bool:
        """Whether this chunk owns a record of ``path`` whose event is at ``time``."""
        partition = self.file_days[path]
        chunk = self._chunk_of(int(time // 86400))
        reads = chunk is not None and (
            self.starts[chunk] <= partition <= self._end(chunk) + self.lookback
        )
        if reads:
            return chunk == self.chunk
        return self._home(partition) == self.chunk
