"""The coders of messages and mapped events: exact round trips, determinism, registration."""

from __future__ import annotations

import subprocess
import sys

from apache_beam.coders.typecoders import registry
from hypothesis import given
from hypothesis import strategies as st

from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.events import MappedEvent, Problem
from beaconflow.model.message import Message
from beaconflow.transforms.coders import MappedEventCoder, MessageCoder, register

T0 = 1_750_000_000

_text = st.text(st.characters(codec="utf-8"), max_size=20)  # no lone surrogates


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
        MappedEvent(
            "b.parquet:1",
            T0,
            (km,),
            (Problem("kontagent", "apr", "apr: parameter 's': must be numeric"),),
            {"user_id": "x"},
        ),
        MappedEvent("c.jsonl:2", T0, ()),
    ):
        restored = coder.decode(coder.encode(event))
        assert restored == event
        assert [m.key for m in restored.messages] == [m.key for m in event.messages]
        assert coder.encode(restored) == coder.encode(event)


def test_a_message_keeps_its_source_and_an_events_messages_take_the_events() -> None:
    message = kissmetrics.record("p", "n", time=T0).with_source("logs/a.jsonl:12")
    restored = MessageCoder().decode(MessageCoder().encode(message))
    assert restored.source == "logs/a.jsonl:12" and restored.key == message.key
    # an event's messages come from it: their source is written once, as the event's
    event = MappedEvent("logs/b.parquet:3", T0, (message,))
    (inside,) = MappedEventCoder().decode(MappedEventCoder().encode(event)).messages
    assert inside.source == "logs/b.parquet:3"


def test_both_coders_are_registered_and_deterministic() -> None:
    register()
    assert isinstance(registry.get_coder(Message), MessageCoder)
    assert isinstance(registry.get_coder(MappedEvent), MappedEventCoder)
    assert MessageCoder().is_deterministic() and MappedEventCoder().is_deterministic()


def test_importing_the_coders_registers_nothing() -> None:
    # a host application that imports beaconflow keeps Beam's registry as it was
    code = (
        "import beaconflow.transforms.coders\n"
        "from apache_beam.coders.typecoders import registry\n"
        "from beaconflow.model.message import Message\n"
        "print(type(registry.get_coder(Message)).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() != "MessageCoder"


def test_a_messages_day_round_trips_and_an_events_messages_take_its_day() -> None:
    message = kissmetrics.record("p", "n", time=T0).with_source("a.jsonl:1")
    assert message.day == T0 // 86_400
    coder = MessageCoder()
    for day in (message.day, None, 7):
        each = message.with_origin("a.jsonl:1", day)
        assert coder.decode(coder.encode(each)).day == day
    # an event's messages have its day: written once, as its time
    ins = kontagent.build("ins", {"s": 1, "r": [2], "u": "0" * 16}, occurrence="ev1")
    same = MappedEvent("b.jsonl:3", T0, (ins.with_origin("b.jsonl:3", T0 // 86_400), message))
    events = MappedEventCoder()
    assert [m.day for m in events.decode(events.encode(same)).messages] == [T0 // 86_400] * 2
    # one of another day (or none) is written as it is
    mixed = MappedEvent("b.jsonl:3", T0, (ins, message))
    assert [m.day for m in events.decode(events.encode(mixed)).messages] == [None, T0 // 86_400]
    assert len(events.encode(mixed)) > len(events.encode(same))
