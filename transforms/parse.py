"""The parse step: input records -> validated event candidates, keyed by event identity.

:class:`ParseEvents` parses each :class:`~beaconflow.transforms.read.RawRecord`, applies the
mapping and validates the result. A valid record leaves as ``(event key, source + NUL + text)``:
the record's own JSON text travels through the event dedup instead of a parsed object, because
Beam encodes strings with its compiled coders but pickles objects at every stage boundary; the
build step parses the text again. Invalid records leave through the ``invalid`` output as
dead-letter entries. A dead-letter file given as input is replayed: its records are parsed
again, and its messages leave through ``replayed`` as ``(ledger key, message wire)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from beaconflow.delivery.ledger import ledger_key
from beaconflow.model.mapping import RecordMapping
from beaconflow.model.message import MessageError
from beaconflow.model.records import RecordError, parse_line, plain, validate
from beaconflow.model.source import RawRecord
from beaconflow.report.deadletter import is_entry, record_entry, replayed_message
from beaconflow.transforms.tallies import CountsTallies

#: Output tags of the parse step.
INVALID = "invalid"
REPLAYED = "replayed"

EventLine = tuple[str, str]
"""(event key, source "file:line" + NUL + the record's JSON text): one string, because Beam's
in-memory runner holds shuffled values as Python objects. Paths and JSON text hold no NUL."""


class ParseEvents(CountsTallies, beam.DoFn):
    """RawRecord -> EventLine (main); ``invalid``, ``replayed`` and ``tally`` outputs."""

    def __init__(self, mapping: RecordMapping, now: float, fingerprints: Mapping[str, str]) -> None:
        super().__init__()
        self._mapping = mapping
        self._now = now
        self._fingerprints = dict(fingerprints)

    def process(self, raw: RawRecord) -> Iterator[EventLine | TaggedOutput[str, Any]]:
        self.count("events_read")
        if raw.problem is not None:
            yield self._invalid("read", raw.problem, raw)
            return
        source: dict[str, Any] | None = raw.row
        try:
            if source is None:
                source = parse_line(raw.text or "")
                text = raw.text or ""
            else:
                text = json.dumps(source, ensure_ascii=False, default=plain)
            if is_entry(source):  # a dead-letter file given as input: replay it
                if "message" in source:
                    yield from self._replay_message(source, raw)
                    return
                replayed = source.get("record")
                source = replayed if isinstance(replayed, dict) else parse_line(str(source["line"]))
                text = json.dumps(source, ensure_ascii=False, default=plain)
            event = validate(self._mapping.apply(source), now=self._now, source=raw.source)
        except RecordError as error:
            yield self._invalid("parse", str(error), raw, source)
            return
        yield (event.key, f"{raw.source}\x00{text}")

    def _replay_message(
        self, entry: dict[str, Any], raw: RawRecord
    ) -> Iterator[TaggedOutput[str, Any]]:
        try:
            message = replayed_message(entry["message"])
            fingerprint = self._fingerprints[message.destination]
        except (MessageError, AttributeError) as error:
            yield self._invalid("parse", f"dead-letter message: {error}", raw, entry)
            return
        except KeyError:
            reason = f"dead-letter message for {message.destination}, which has no key in this run"
            yield self._invalid("parse", reason, raw, entry)
            return
        self.count("events_mapped")
        self.count("messages_built", message.destination, message.kind)
        yield TaggedOutput(REPLAYED, (ledger_key(fingerprint, message), message.to_wire()))

    def _invalid(
        self, stage: str, reason: str, raw: RawRecord, record: object = None
    ) -> TaggedOutput[str, Any]:
        self.count("events_invalid", stage)
        return TaggedOutput(INVALID, record_entry(stage, reason, raw, record))
