"""The dedup step (``beaconflow.transforms.dedup``): one element per key, whatever the order."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beaconflow.model import kissmetrics
from beaconflow.model.events import MappedEvent
from beaconflow.transforms.coders import MappedEventCoder
from beaconflow.transforms.dedup import DUPLICATES, DedupByKey

T0 = 1_750_000_000


def test_the_dedup_keeps_the_smallest_order_whatever_the_input_order() -> None:
    def copy(source: str) -> tuple[str, MappedEvent]:
        return ("key", MappedEvent(source, T0, (kissmetrics.record("p", "n", time=T0),)))

    copies = [copy("b.jsonl:1"), copy("a.jsonl:9"), copy("c.jsonl:3")]
    for ordering in (copies, list(reversed(copies))):
        with BeamTestPipeline(runner=FnApiRunner()) as p:
            out = (
                p
                | beam.Create(ordering)
                | DedupByKey(MappedEventCoder(), order=lambda event: event.source)
            )
            assert_that(
                out.unique | beam.Map(lambda kv: kv[1].source),
                equal_to(["a.jsonl:9"]),
                label="kept",
            )
            assert_that(
                out[DUPLICATES] | beam.Map(lambda kept: (kept[0].source, kept[1])),
                equal_to([("a.jsonl:9", 2)]),
                label="dropped",
            )
