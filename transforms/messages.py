"""The messages step: each kept event -> its messages, keyed for the message dedup.

:class:`SplitMessages` takes the events the event dedup kept and the window let through, and
releases what the parse step built: messages leave as ``(ledger key, encoded message)`` for
the message dedup (its :class:`~beaconflow.transforms.coders.MessageCoder` bytes, the form
the dedup groups them in: encoded once, here, not decoded and encoded again on the way), or,
for the ``direct`` destinations, as messages through the ``direct`` output. With ``days``,
each bundle also gives the days of the messages it let through
(:class:`~beaconflow.delivery.ledger_days.DaysSeen`, output ``days``): the ledger files a run
reads are chosen by them.
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
from apache_beam.transforms.window import GlobalWindows

from beaconflow.delivery.ledger import ledger_key
from beaconflow.delivery.ledger_days import DaysSeen
from beaconflow.model.kontagent_age import KontagentAge
from beaconflow.model.message import Destination
from beaconflow.report.counts import BY_DAY
from beaconflow.report.deadletter import DeadLetterEntry
from beaconflow.transforms.coders import MessageCoder
from beaconflow.transforms.parse import INVALID, KeyedEvent
from beaconflow.transforms.tallies import CountsTallies

#: The output of messages that need no message dedup, as Message objects (see ``direct``).
DIRECT = "direct"
#: The output of the days of the messages each bundle let through (a DaysSeen), with ``days``.
DAYS = "days"
#: The counter of Kontagent messages not sent because of --kontagent-max-age.
TOO_OLD = "messages_too_old"
#: A message as it leaves for the message dedup: (ledger key, MessageCoder bytes).
EncodedMessage = tuple[str, bytes]


class SplitMessages(CountsTallies, beam.DoFn):
    """KeyedEvent -> EncodedMessage (main); ``direct``, ``invalid``, ``days`` and ``tally``."""

    def __init__(
        self,
        fingerprints: Mapping[str, str],
        *,
        direct: tuple[Destination, ...] = (),
        age: KontagentAge | None = None,
        days: bool = False,
    ) -> None:
        super().__init__()
        self._fingerprints = dict(fingerprints)
        self._direct = frozenset(direct)
        # only a --kontagent-max-age drops anything here
        self._age = age if age is not None and age.max_age_days is not None else None
        self._days = days

    def start_bundle(self) -> None:
        super().start_bundle()
        self._encode = MessageCoder().encode
        self._seen = DaysSeen() if self._days else None

    def finish_bundle(self) -> Iterator[Any]:
        seen = self._seen  # start_bundle gives the next bundle its own
        if seen is not None and (seen.days or seen.unknown):
            yield TaggedOutput(DAYS, GlobalWindows.windowed_value(seen))
        yield from super().finish_bundle()

    def process(self, element: KeyedEvent) -> Iterator[EncodedMessage | TaggedOutput[str, Any]]:
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
                continue
            if self._seen is not None:
                self._seen.add(message)
            key = ledger_key(self._fingerprints[message.destination], message)
            yield (key, self._encode(message))
