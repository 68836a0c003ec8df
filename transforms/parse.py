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

import dataclasses
from collections import Counter
from collections.abc import Iterator, Mapping
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
        elsewhere: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
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
        self.count("events_read")
        if raw.problem is not None:
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
                matched=self._matched,
                left_out=self._left_out,
            )
        except RecordError as error:
            yield from self._invalid("parse", str(error), raw, source, replaying=replaying)
            return
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
