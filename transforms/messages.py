"""The messages step: each kept event -> its messages, keyed for the message dedup.

:class:`SplitMessages` takes the events the event dedup kept and the window let through, and
releases what the parse step built: messages leave as ``(ledger key, Message)`` for the
message dedup, or, for the ``direct`` destinations, as messages through the ``direct`` output.
Each destination stands on its own: a destination whose message could not be built gets a
:class:`~beaconflow.report.deadletter.DeadLetterEntry` of the ``map`` stage naming it (and
counts as ``messages_invalid``), while the event's other messages go on; a problem an earlier
run with the same ledger dead-lettered already (``Problem.known``, marked by the parse step)
counts as ``messages_already_dead_lettered`` instead, with no new entry. Counting here, not in
the parse step, makes each count one of a kept event.

With ``--kontagent-max-age`` (``age``, :class:`~beaconflow.model.kontagent_age.KontagentAge`),
a Kontagent message whose event is that old or older is built and counted
(``messages_built``, then ``messages_too_old``), but goes no further: not deduplicated, not
sent, not written to a dry-run file, never recorded in the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput

from beaconflow.delivery.ledger import ledger_key
from beaconflow.model.kontagent_age import KontagentAge
from beaconflow.model.message import Destination
from beaconflow.report.counts import BY_DAY
from beaconflow.report.deadletter import DeadLetterEntry
from beaconflow.transforms.parse import INVALID, KeyedEvent, KeyedMessage
from beaconflow.transforms.tallies import CountsTallies

#: The output of messages that need no message dedup, as Message objects (see ``direct``).
DIRECT = "direct"
#: The counter of Kontagent messages not sent because of --kontagent-max-age.
TOO_OLD = "messages_too_old"


class SplitMessages(CountsTallies, beam.DoFn):
    """KeyedEvent -> KeyedMessage (main); ``direct``, ``invalid`` and ``tally`` outputs."""

    def __init__(
        self,
        fingerprints: Mapping[str, str],
        *,
        direct: tuple[Destination, ...] = (),
        age: KontagentAge | None = None,
    ) -> None:
        super().__init__()
        self._fingerprints = dict(fingerprints)
        self._direct = frozenset(direct)
        # only a --kontagent-max-age drops anything here
        self._age = age if age is not None and age.max_age_days is not None else None

    def process(self, element: KeyedEvent) -> Iterator[KeyedMessage | TaggedOutput[str, Any]]:
        event = element[1]
        self.count("events_mapped")
        for problem in event.problems:
            # this destination's message only: the others go on
            if problem.known:
                # an earlier night's dead letter holds it already: not news, not an error
                self.count("messages_already_dead_lettered", problem.destination, problem.kind)
                continue
            self.count("messages_invalid", problem.destination, problem.kind)
            yield TaggedOutput(
                INVALID,
                DeadLetterEntry(
                    "map",
                    problem.reason,
                    event.source,
                    record=event.record,
                    destination=problem.destination,
                ),
            )
        if not event.messages:
            if not event.problems:
                self.count("events_unrouted")
            return
        day = event.day
        too_old = self._age is not None and self._age.too_old(event.time)
        for message in event.messages:
            self.count("messages_built", message.destination, message.kind)
            self.count(BY_DAY, message.destination, message.kind, detail=day)
            if too_old and message.destination == "kontagent":
                # Kontagent would count it today, not on its event's day: not sent at all
                self.count(TOO_OLD, message.destination, message.kind)
                continue
            if message.destination in self._direct:
                yield TaggedOutput(DIRECT, message)
            else:
                yield (ledger_key(self._fingerprints[message.destination], message), message)
