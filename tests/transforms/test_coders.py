"""The coders of messages and mapped events: exact round trips, determinism, registration."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders.typecoders import registry
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given
from hypothesis import strategies as st

from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.events import MappedEvent
from beaconflow.model.message import Message
from beaconflow.transforms.coders import MappedEventCoder, MessageCoder
from beaconflow.transforms.dedup import DUPLICATES, DedupByKey

T0 = 1_750_000_000

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@given(
    params=st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=5), _text, max_size=6),
    occurrence=_text,
)
def test_a_message_round_trips_with_its_key_and_equal_messages_encode_equal(
    params: dict[str, str], occurrence: str
) -> None:
    message = Message("kissmetrics", "e", tuple(params.items()), occurrence)
    coder = MessageCoder()
    encoded = coder.encode(message)
    restored = coder.decode(encoded)
    assert restored == message and restored.key == message.key
    # the same logical message given in another order has the same bytes
    again = Message("kissmetrics", "e", tuple(reversed(params.items())), occurrence)
    assert coder.encode(again) == encoded


def test_a_mapped_event_round_trips_with_its_messages_problem_and_record() -> None:
    ins = kontagent.build("ins", {"s": 1, "r": [2, 3], "u": "0" * 16}, occurrence="ev1")
    km = kissmetrics.record("p", "n", time=T0, properties={"x": '"q" \\ é'})
    coder = MappedEventCoder()
    for event in (
        MappedEvent("a.jsonl:7", T0, (ins, km)),
        MappedEvent("b.parquet:1", T0, (), "kontagent: s must be numeric", {"user_id": "x"}),
        MappedEvent("c.jsonl:2", T0, ()),
    ):
        restored = coder.decode(coder.encode(event))
        assert restored == event
        assert [m.key for m in restored.messages] == [m.key for m in event.messages]
        assert coder.encode(restored) == coder.encode(event)


def test_both_coders_are_registered_and_deterministic() -> None:
    assert isinstance(registry.get_coder(Message), MessageCoder)
    assert isinstance(registry.get_coder(MappedEvent), MappedEventCoder)
    assert MessageCoder().is_deterministic() and MappedEventCoder().is_deterministic()


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
