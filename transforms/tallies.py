"""Tallies on Beam's side: count per bundle in a DoFn, sum every tally of a run into one.

The tallies and what they count are defined in :mod:`beaconflow.report.counts`; this module
only moves them through a pipeline: :class:`CountsTallies` is a DoFn mixin that emits one
tally per counter at the end of each bundle, :class:`TallyEach` counts the elements of any
PCollection the same way, and :class:`SumTallies` is the ``CombineFn`` that adds them up.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from beaconflow.report.counts import Tally, TallyKey

#: A tally's key as counted: TallyKey's fields in a plain tuple.
_Key = tuple[str, str, str, str, str]


class CountsTallies:
    """A DoFn mixin: count in memory, emit one tally per counter at the end of each bundle.

    One element per bundle and counter instead of one per record keeps the tallies off
    Beam's hot path. Tallies go to the tagged output named by :attr:`tally_tag`.
    """

    tally_tag = "tally"

    def start_bundle(self) -> None:
        # plain tuples as keys: a TallyKey is made once per counter and bundle, at its end,
        # not once per element counted (a TallyKey is a tuple, equal to its plain copy)
        self._tallies: Counter[_Key] = Counter()

    def count(
        self,
        counter: str,
        destination: str = "",
        kind: str = "",
        n: int = 1,
        *,
        stage: str = "",
        detail: str = "",
    ) -> None:
        self._tallies[(counter, destination, kind, stage, detail)] += n

    def finish_bundle(self) -> Iterator[Any]:
        for key, n in self._tallies.items():
            tally = (TallyKey._make(key), n)
            yield TaggedOutput(self.tally_tag, GlobalWindows.windowed_value(tally))
        self._tallies.clear()


class SumTallies(beam.CombineFn):
    """Sum tallies into one line of JSON: ``[[counter, destination, kind, stage, detail, n]]``."""

    def create_accumulator(self) -> Counter[TallyKey]:
        return Counter()

    def add_input(self, accumulator: Counter[TallyKey], element: Tally) -> Counter[TallyKey]:
        key, n = element
        accumulator[TallyKey(*key)] += n
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Counter[TallyKey]]) -> Counter[TallyKey]:
        merged: Counter[TallyKey] = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator: Counter[TallyKey]) -> str:
        return json.dumps([[*key, n] for key, n in sorted(accumulator.items())])


def read_sums(line: str) -> Counter[TallyKey]:
    """The sums of one :meth:`SumTallies.extract_output` line (ValueError if it is not one)."""
    sums: Counter[TallyKey] = Counter()
    for row in json.loads(line):
        if not isinstance(row, list) or len(row) != len(TallyKey._fields) + 1:
            raise ValueError(f"not a tally row: {row!r}")
        *key, n = row
        sums[TallyKey(*key)] += int(n)
    return sums


class TallyEach(CountsTallies, beam.DoFn):
    """Each element -> the tallies ``tallies_of`` gives for it, summed per bundle.

    The counting steps of outputs that are not DoFns of ours (the dedup's copies, dead
    letters, dry-run lines) emit their tallies once per bundle too, not once per element.
    """

    def __init__(self, tallies_of: Callable[[Any], Iterable[Tally]]) -> None:
        super().__init__()
        self._tallies_of = tallies_of

    def process(self, element: Any) -> Iterator[Any]:
        for key, n in self._tallies_of(element):
            self._tallies[key] += n
        return iter(())

    def finish_bundle(self) -> Iterator[Any]:
        for key, n in self._tallies.items():
            yield GlobalWindows.windowed_value((TallyKey._make(key), n))
        self._tallies.clear()
