"""Batch deduplication by an explicit string key, keeping one element and counting the rest.

Beam's ``Deduplicate`` declares a processing-time timer, which forces the single-threaded
BundleBasedDirectRunner; ``CombinePerKey`` on an explicit key parallelises on every runner
and tells how many copies each key had. The element kept is the one with the smallest
``order`` value, so which copy survives does not depend on bundle order.

With a delivery ledger, the ledger's keys join the same combine as the marker
:data:`DELIVERED_BEFORE`: a key that has it is not sent again but counted as skipped, in the
same shuffle as the dedup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import DoOutputsTuple, PCollection, TaggedOutput

#: The tag of the output holding (kept, number of dropped copies), for keys with copies.
DUPLICATES = "duplicates"
#: The tag of the output holding (kept, copies) for keys the ledger says were delivered.
SKIPPED = "skipped"
#: Among a key's elements, stands for "the ledger has this key".
DELIVERED_BEFORE = "\x00beaconflow:delivered-before"

# (the element kept or None, how many copies, whether the ledger has the key)
_Accumulator = tuple[Any, int, bool]


class KeepFirst(beam.CombineFn):
    """Combine a key's copies into (the copy with the smallest order, copies, in ledger)."""

    def __init__(self, order: Callable[[Any], Any]) -> None:
        super().__init__()
        self._order = order

    def create_accumulator(self) -> _Accumulator:
        return (None, 0, False)

    def _pick(self, a: _Accumulator, b: _Accumulator) -> _Accumulator:
        if a[0] is None:
            kept = b[0]
        elif b[0] is None:
            kept = a[0]
        else:
            kept = a[0] if self._order(a[0]) <= self._order(b[0]) else b[0]
        return (kept, a[1] + b[1], a[2] or b[2])

    def add_input(self, accumulator: _Accumulator, element: Any) -> _Accumulator:
        if isinstance(element, str) and element == DELIVERED_BEFORE:
            return (accumulator[0], accumulator[1], True)
        return self._pick(accumulator, (element, 1, False))

    def merge_accumulators(self, accumulators: Any) -> _Accumulator:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged = self._pick(merged, accumulator)
        return merged

    def extract_output(self, accumulator: _Accumulator) -> _Accumulator:
        return accumulator


def _split(item: tuple[str, _Accumulator]) -> Iterator[Any]:
    key, (kept, copies, delivered_before) = item
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
        order = self._order

        def keep_first(item: tuple[str, Any]) -> tuple[str, _Accumulator]:
            key, values = item
            kept, copies, delivered_before = None, 0, False
            for value in values:
                if isinstance(value, str) and value == DELIVERED_BEFORE:
                    delivered_before = True
                elif kept is None or order(value) < order(kept):
                    kept, copies = value, copies + 1
                else:
                    copies += 1
            return key, (kept, copies, delivered_before)

        outputs: DoOutputsTuple = (
            keyed
            | "Group" >> beam.GroupByKey()
            | "KeepFirst" >> beam.Map(keep_first)
            | "Split" >> beam.FlatMap(_split).with_outputs(DUPLICATES, SKIPPED, main="unique")
        )
        return outputs
