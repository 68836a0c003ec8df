"""The window step (``beaconflow.transforms.window.InWindow``): [since, until), the rest counted."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beaconflow.model.events import MappedEvent
from beaconflow.report.counts import TallyKey
from beaconflow.transforms.tallies import CountsTallies
from beaconflow.transforms.window import InWindow

T0 = 1_750_000_000


def _event(time: int) -> tuple[str, MappedEvent]:
    return (f"key-{time}", MappedEvent(f"f.jsonl:{time - T0}", time, ()))


@pytest.mark.parametrize(
    ("since", "until", "kept"),
    [
        (None, None, [T0 - 1, T0, T0 + 1]),
        (T0, None, [T0, T0 + 1]),  # since is inclusive
        (None, T0, [T0 - 1]),  # until is exclusive
        (T0, T0 + 1, [T0]),
    ],
)
def test_events_in_the_window_pass_and_the_others_are_counted(
    since: int | None, until: int | None, kept: list[int]
) -> None:
    times = [T0 - 1, T0, T0 + 1]
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        out = (
            p
            | beam.Create([_event(t) for t in times])
            | beam.ParDo(InWindow(since, until)).with_outputs(
                CountsTallies.tally_tag, main="events"
            )
        )
        assert_that(out.events | beam.Map(lambda e: e[1].time), equal_to(kept), label="kept")
        dropped = len(times) - len(kept)
        expected = [(TallyKey("events_out_of_range"), dropped)] if dropped else []
        assert_that(out[CountsTallies.tally_tag], equal_to(expected), label="counted")
