"""The ledger's side of the message dedup: the keys of earlier deliveries a run's messages may have.

:class:`ReadDelivered` takes the messages that reach the message dedup and gives the ledger
keys to join with them (:mod:`beaconflow.transforms.dedup`). It does not read every file of
the ledger: the distinct event days of the messages (:class:`MessageDays`, a small combine,
one value per run) choose the files that may hold their entries
(:meth:`~beaconflow.delivery.ledger_days.LedgerDays.reads`: shards whose range of days meets
them, and every file without a range), so that the join holds the entries of the run's days,
not every delivery ever recorded. How many files were read and passed over is counted
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
from beaconflow.transforms.parse import KeyedMessage
from beaconflow.transforms.tallies import CountsTallies

#: The output of :class:`ReadDelivered` holding its tallies (files read and passed over).
TALLY = "tally"
#: Its main output: the ledger keys of the files read.
KEYS = "keys"


class MessageDays(beam.CombineFn):
    """KeyedMessage -> the :class:`LedgerDays` of every message (their distinct days)."""

    def create_accumulator(self) -> DaysSeen:
        return DaysSeen()

    def add_input(self, accumulator: DaysSeen, element: KeyedMessage) -> DaysSeen:
        accumulator.add(element[1])
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


class ReadDelivered(beam.PTransform[PCollection[KeyedMessage], dict[str, PCollection[Any]]]):
    """The messages of a run -> the ledger keys that may match them, read from ``files``.

    ``files``: every shard and journal of the ledger
    (:func:`~beaconflow.delivery.ledger.ledger_files`); ``legacy``: the run's format-1
    fingerprints (:class:`~beaconflow.delivery.ledger.LedgerKeys`). Outputs ``keys`` and
    ``tally``, a dict.
    """

    def __init__(self, files: Sequence[str], legacy: Mapping[str, str]) -> None:
        super().__init__()
        self._files = list(files)
        self._legacy = dict(legacy)

    def expand(self, messages: PCollection[KeyedMessage]) -> dict[str, PCollection[Any]]:
        days = messages | "Days" >> beam.CombineGlobally(MessageDays())
        chosen = (
            messages.pipeline
            | "List" >> beam.Create(self._files)
            | "Choose"
            >> beam.ParDo(ChooseFiles(), AsSingleton(days))
            .with_output_types(str, tally=Any)
            .with_outputs(TALLY, main=KEYS)
        )
        keys = (
            chosen[KEYS]
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(LedgerKeys(self._legacy)).with_output_types(str)
        )
        return {KEYS: keys, TALLY: chosen[TALLY]}
