"""Batch deduplication by an explicit string key, keeping one element and counting the rest.

Beam's ``Deduplicate`` declares a processing-time timer, which forces the single-threaded
BundleBasedDirectRunner; a ``GroupByKey`` on an explicit key parallelises on every runner
and tells how many copies each key had. (A lifted ``CombinePerKey`` was measured slower here:
nearly every key is unique, so pre-combining only adds work.) The element kept is the one
with the smallest ``order`` value, so which copy survives does not depend on bundle order.

With a delivery ledger, the ledger's keys join the same grouping as the marker
:data:`DELIVERED_BEFORE`: a key that has it is not sent again but counted as skipped, in the
same shuffle as the dedup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import DoOutputsTuple, PCollection, TaggedOutput

#: The tag of the output holding (kept, number of dropped copies), for keys with copies.
DUPLICATES = "duplicates"
#: The tag of the output holding (kept, copies) for keys the ledger says were delivered.
SKIPPED = "skipped"
#: Among a key's elements, stands for "the ledger has this key".
DELIVERED_BEFORE = "\x00beaconflow:delivered-before"


def _keep_first(item: tuple[str, Iterable[Any]], order: Callable[[Any], Any]) -> Iterator[Any]:
    """One key's values -> the value with the smallest order, or a duplicates/skipped record."""
    key, values = item
    kept, copies, delivered_before = None, 0, False
    for value in values:
        if isinstance(value, str) and value == DELIVERED_BEFORE:
            delivered_before = True
            continue
        copies += 1
        if kept is None or order(value) < order(kept):
            kept = value
    if kept is None:  # a ledger entry with no message in this run
        return
    if delivered_before:
        yield TaggedOutput(SKIPPED, (kept, copies))
        return
    yield (key, kept)
    if copies > 1:
        yield TaggedOutput(DUPLICATES, (kept, copies - 1))


class DedupByKey(beam.PTransform[PCollection[Any], DoOutputsTuple]):
    """Keep one value per key of a ``(key, value)`` PCollection.

    Outputs ``unique`` (main, ``(key, kept value)``), ``duplicates`` (``(kept, copies
    dropped)``) and ``skipped``. ``delivered``: optional PCollection of keys already delivered
    (the ledger); values with such a key go to ``skipped`` as (kept, copies) instead.
    """

    def __init__(
        self, order: Callable[[Any], Any], delivered: PCollection[str] | None = None
    ) -> None:
        super().__init__()
        self._order = order
        self._delivered = delivered

    def expand(self, keyed: PCollection[Any]) -> DoOutputsTuple:
        if self._delivered is not None:
            marks = self._delivered | "MarkDelivered" >> beam.Map(lambda k: (k, DELIVERED_BEFORE))
            keyed = (keyed, marks) | "WithLedger" >> beam.Flatten()
        outputs: DoOutputsTuple = (
            keyed
            | "Group" >> beam.GroupByKey()
            | "KeepFirst"
            >> beam.FlatMap(_keep_first, self._order).with_outputs(
                DUPLICATES, SKIPPED, main="unique"
            )
        )
        return outputs
