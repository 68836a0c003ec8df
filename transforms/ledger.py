"""The ledger's side of the message dedup: the keys of earlier deliveries a run's messages may have.

:class:`ReadDelivered` takes the days of the messages that reach the message dedup and gives
the ledger keys to join with them (:mod:`beaconflow.transforms.dedup`). It does not read every
file of the ledger: the distinct event days of the messages (counted where the messages are
made, a :class:`~beaconflow.delivery.ledger_days.DaysSeen` per bundle, merged by
:class:`MergeDays` into one value per run) choose the files that may hold their entries
(:meth:`~beaconflow.delivery.ledger_days.LedgerDays.reads`: shards whose range of days meets
them, and every file without a range), and of those only the entries of the run's own
endpoints are kept (another app sharing the ledger's folder has entries of the same days), so
that the join holds the run's deliveries of its days, not every delivery ever recorded. How
many files were read and passed over is counted
(``ledger_files_read``, ``ledger_files_skipped``). Tested with::

    python -m pytest tests/transforms/test_ledger.py
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsSingleton, PCollection

from beaconflow.delivery.ledger import LedgerKeys
from beaconflow.delivery.ledger_days import DaysSeen, LedgerDays
from beaconflow.model.message import Message
from beaconflow.transforms.tallies import CountsTallies

#: The output of :class:`ReadDelivered` holding its tallies (files read and passed over).
TALLY = "tally"
#: Its main output: the ledger keys of the files read.
KEYS = "keys"


def days_seen(message: Message) -> DaysSeen:
    """The days of one message, as :class:`ReadDelivered` takes them."""
    seen = DaysSeen()
    seen.add(message)
    return seen


class MergeDays(beam.CombineFn):
    """DaysSeen of parts of a run -> the :class:`LedgerDays` of all its messages."""

    def create_accumulator(self) -> DaysSeen:
        return DaysSeen()

    def add_input(self, accumulator: DaysSeen, element: DaysSeen) -> DaysSeen:
        accumulator.merge(element)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[DaysSeen]) -> DaysSeen:
        merged = DaysSeen()
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: DaysSeen) -> LedgerDays:
        return accumulator.result()


class ChooseFiles(CountsTallies, beam.DoFn):
    """A ledger file's path -> the path, when the run's messages may have entries in it."""

    def process(self, path: str, days: LedgerDays) -> Iterator[str]:
        if days.reads(path):
            self.count("ledger_files_read")
            yield path
        else:
            self.count("ledger_files_skipped")


class ReadDelivered(beam.PTransform[PCollection[DaysSeen], dict[str, PCollection[Any]]]):
    """The days of a run's messages -> the ledger keys that may match them, read from ``files``.

    Its input: the days of every message that reaches the message dedup, in parts
    (:class:`~beaconflow.delivery.ledger_days.DaysSeen`; :func:`days_seen` makes one of a
    message).

    ``files``: every shard and journal of the ledger
    (:func:`~beaconflow.delivery.ledger.ledger_files`); ``legacy``: the run's format-1
    fingerprints (:class:`~beaconflow.delivery.ledger.LedgerKeys`); ``fingerprints``: the
    run's own, whose keys alone are kept (None: every key). Outputs ``keys`` and ``tally``,
    a dict.
    """

    def __init__(
        self,
        files: Sequence[str],
        legacy: Mapping[str, str],
        fingerprints: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        self._files = list(files)
        self._legacy = dict(legacy)
        self._fingerprints = None if fingerprints is None else sorted(set(fingerprints))

    def expand(self, seen: PCollection[DaysSeen]) -> dict[str, PCollection[Any]]:
        days = seen | "Days" >> beam.CombineGlobally(MergeDays())
        chosen = (
            seen.pipeline
            | "List" >> beam.Create(self._files)
            | "Choose"
            >> beam.ParDo(ChooseFiles(), AsSingleton(days))
            .with_output_types(str, tally=Any)
            .with_outputs(TALLY, main=KEYS)
        )
        keys = (
            chosen[KEYS]
            | "Spread" >> beam.Reshuffle()
            | "Read"
            >> beam.FlatMap(LedgerKeys(self._legacy, self._fingerprints)).with_output_types(str)
        )
        return {KEYS: keys, TALLY: chosen[TALLY]}
