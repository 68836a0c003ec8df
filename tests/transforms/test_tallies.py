"""Tallies on Beam's side (``beaconflow.transforms.tallies``): per bundle, summed, read back."""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beaconflow.report.counts import STOPPED, Tally, TallyKey, tally
from beaconflow.transforms.tallies import SumTallies, TallyEach, read_sums


def _per_letter(word: str) -> Iterator[Tally]:
    for letter in word:
        yield tally("messages_built", 1, "kissmetrics", letter)


def test_tally_each_counts_every_element_and_the_sum_reads_back_typed() -> None:
    words = ["ab", "b", "", "bb"]
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        summed = (
            p
            | beam.Create(words)
            | beam.ParDo(TallyEach(_per_letter))
            | beam.CombineGlobally(SumTallies())
            | beam.Map(lambda line: sorted(read_sums(line).items()))
        )
        assert_that(
            summed,
            equal_to(
                [
                    [
                        (TallyKey("messages_built", "kissmetrics", "a"), 1),
                        (TallyKey("messages_built", "kissmetrics", "b"), 4),
                    ]
                ]
            ),
        )


def test_a_sum_line_keeps_every_part_of_a_key() -> None:
    combine = SumTallies()
    accumulator = combine.create_accumulator()
    for each in (
        tally(STOPPED, detail="disk full; ledger gone | twice"),
        tally("events_invalid", 2, stage="parse"),
        tally("events_invalid", 3, stage="parse"),
    ):
        accumulator = combine.add_input(accumulator, each)
    line = combine.extract_output(accumulator)
    assert read_sums(line) == {
        TallyKey(STOPPED, detail="disk full; ledger gone | twice"): 1,
        TallyKey("events_invalid", stage="parse"): 5,
    }
