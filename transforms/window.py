"""The window step: keep the events of ``[since, until)``, count the others as out of range.

``--date`` and ``--since``/``--until`` choose which events a run sends; the input may hold
others (a nightly job's files often begin or end in the neighbouring day). The step runs after
the event dedup, so a duplicate is a duplicate whichever day it is of.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam

from beaconflow.transforms.parse import KeyedEvent
from beaconflow.transforms.tallies import CountsTallies


class InWindow(CountsTallies, beam.DoFn):
    """KeyedEvent -> KeyedEvent when its time is in ``[since, until)`` (None: unbounded)."""

    def __init__(self, since: int | None, until: int | None) -> None:
        super().__init__()
        self._since = since
        self._until = until

    def process(self, element: KeyedEvent) -> Iterator[KeyedEvent]:
        time = element[1].time
        if (self._since is not None and time < self._since) or (
            self._until is not None and time >= self._until
        ):
            self.count("events_out_of_range")
            return
        yield element
