"""Batch deduplication by an explicit string key, keeping one element and counting the rest.

Beam's ``Deduplicate`` declares a processing-time timer, which forces the single-threaded
BundleBasedDirectRunner; ``CombinePerKey`` on an explicit key parallelises on every runner
and tells how many copies each key had. The element kept is the one with the smallest
``order`` value, so which copy survives does not depend on bundle order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import apache_beam as beam
from apache_beam.pvalue import DoOutputsTuple, PCollection, TaggedOutput

T = TypeVar("T")

#: The tag of the output holding the number of dropped copies per key (only keys with copies).
DUPLICATES = "duplicates"

_Accumulator = tuple[Any, int] | None


class KeepFirst(beam.CombineFn, Generic[T]):
    """Combine copies into (the copy with the smallest order value, number of copies)."""

    def __init__(self, order: Callable[[T], Any]) -> None:
        super().__init__()
        self._order = order

    def create_accumulator(self) -> _Accumulator:
        return None

    def _pick(self, a: _Accumulator, b: _Accumulator) -> _Accumulator:
        if a is None:
            return b
        if b is None:
            return a
        kept = a[0] if self._order(a[0]) <= self._order(b[0]) else b[0]
        return (kept, a[1] + b[1])

    def add_input(self, accumulator: _Accumulator, element: T) -> _Accumulator:
        return self._pick(accumulator, (element, 1))

    def merge_accumulators(self, accumulators: Any) -> _Accumulator:
        merged: _Accumulator = None
        for accumulator in accumulators:
            merged = self._pick(merged, accumulator)
        return merged

    def extract_output(self, accumulator: _Accumulator) -> _Accumulator:
        return accumulator


def _split(item: tuple[str, tuple[T, int]]) -> Iterator[T | TaggedOutput[str, Any]]:
    _, (kept, copies) = item
    yield kept
    if copies > 1:
        yield TaggedOutput(DUPLICATES, (kept, copies - 1))


class DedupByKey(beam.PTransform[PCollection[Any], DoOutputsTuple]):
    """Keep one element per key; tagged output ``duplicates`` has (kept, copies dropped)."""

    def __init__(self, key: Callable[[Any], str], order: Callable[[Any], Any]) -> None:
        super().__init__()
        self._key = key
        self._order = order

    def expand(self, elements: PCollection[Any]) -> DoOutputsTuple:
        key = self._key
        outputs: DoOutputsTuple = (
            elements
            | "Key" >> beam.Map(lambda element: (key(element), element))
            | "KeepFirst" >> beam.CombinePerKey(KeepFirst(self._order))
            | "Split" >> beam.FlatMap(_split).with_outputs(DUPLICATES, main="unique")
        )
        return outputs
