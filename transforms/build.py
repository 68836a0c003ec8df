"""The build step: deduplicated events -> their messages, keyed for the message dedup.

:class:`BuildMessages` takes the parse step's ``(event key, source + NUL + text)``, parses the text
again and applies the mapping (both deterministic, so the result is the event the parse step
validated: it is not checked again), drops events outside ``[since, until)`` (counted as out
of range) and maps the rest to messages. Messages leave as ``(ledger key, message wire)``
for the message dedup, or, for the ``direct`` destinations, as messages through the
``direct`` output; an event whose messages cannot be built leaves whole through ``invalid``
as a dead-letter entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from beaconflow.delivery.ledger import ledger_key
from beaconflow.model.events import messages_for
from beaconflow.model.mapping import RecordMapping
from beaconflow.model.message import Destination, MessageError
from beaconflow.model.records import validated_before
from beaconflow.model.source import location
from beaconflow.report.counts import BY_DAY
from beaconflow.transforms.parse import INVALID, EventLine
from beaconflow.transforms.tallies import CountsTallies

#: The output of messages that need no message dedup, as Message objects (see ``direct``).
DIRECT = "direct"

MessageLine = tuple[str, str]
"""(ledger key, :meth:`~beaconflow.model.message.Message.to_wire`)."""


class BuildMessages(CountsTallies, beam.DoFn):
    """EventLine -> MessageLine (main); ``invalid`` and ``tally`` outputs."""

    def __init__(
        self,
        mapping: RecordMapping,
        destinations: tuple[Destination, ...],
        fingerprints: Mapping[str, str],
        *,
        since: int | None,
        until: int | None,
        direct: tuple[Destination, ...] = (),
    ) -> None:
        super().__init__()
        self._mapping = mapping
        self._destinations = destinations
        self._fingerprints = dict(fingerprints)
        self._since = since
        self._until = until
        self._direct = frozenset(direct)

    def process(self, element: EventLine) -> Iterator[MessageLine | TaggedOutput[str, Any]]:
        source, _, text = element[1].partition("\x00")
        # the parse step accepted this text and its event: no checks twice
        record = json.loads(text)
        event = validated_before(self._mapping.apply(record), key=element[0], source=source)
        if (self._since is not None and event.time < self._since) or (
            self._until is not None and event.time >= self._until
        ):
            self.count("events_out_of_range")
            return
        destinations = self._mapping.destinations(event.name, self._destinations)
        try:
            messages = messages_for(event, destinations)
        except MessageError as error:
            self.count("events_invalid", "map")
            entry = {"stage": "map", "reason": str(error), "source": location(source)}
            yield TaggedOutput(INVALID, {**entry, "record": record})
            return
        self.count("events_mapped")
        if not messages:
            self.count("events_unrouted")
        day = datetime.fromtimestamp(event.time, UTC).date().isoformat()
        for message in messages:
            self.count("messages_built", message.destination, message.kind)
            self.count(BY_DAY, message.destination, f"{message.kind}|{day}")
            if message.destination in self._direct:
                yield TaggedOutput(DIRECT, message)
            else:
                key = ledger_key(self._fingerprints[message.destination], message)
                yield (key, message.to_wire())
