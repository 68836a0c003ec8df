"""Messages (``beaconflow.model.message``): identity keys, endpoints, refusals.

The build -> URL -> parse round trip is in tests/model/test_render.py, the query's
percent-encoding in tests/model/test_urlencode.py.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.message import Endpoint, Message, epoch_day, identity_key
from beaconflow.model.render import parse_url, render_url

KEY = "0123456789abcdef0123456789abcdef"
SECRET = "the-secret-value"


def test_identity_ignores_parameter_order_and_signing_noise() -> None:
    a = kontagent.build("ins", {"s": 1, "r": [2, 3], "u": "0" * 16, "st1": "x"})
    b = kontagent.build("ins", {"st1": "x", "u": "0" * 16, "r": "2,3", "s": "1"})
    assert a.key == b.key
    endpoint = Endpoint("kontagent", "http://h", KEY, SECRET)
    first, _ = parse_url(render_url(a, endpoint, now=1))
    second, _ = parse_url(render_url(a, endpoint, now=99999))
    assert first.key == second.key == a.key


def test_identity_distinguishes_content_destination_and_occurrence() -> None:
    base = kontagent.build("evt", {"s": 1, "n": "level_up"})
    assert base.key != kontagent.build("evt", {"s": 1, "n": "level_up", "l": 2}).key
    assert base.key != kontagent.build("evt", {"s": 1, "n": "level_up"}, occurrence="event-2").key
    km = kissmetrics.record("1", "level_up")
    assert km.key != base.key
    # parts are length-prefixed: moving text between a name and a value changes the key
    assert (
        kissmetrics.record("a", "b", properties={"cd": "e"}).key
        != kissmetrics.record("a", "b", properties={"c": "de"}).key
    )


def test_endpoint_repr_hides_credentials() -> None:
    endpoint = Endpoint("kontagent", "http://h", KEY, SECRET)
    assert KEY not in repr(endpoint) and SECRET not in repr(endpoint)


def test_lone_surrogates_are_refused_not_sent() -> None:
    import pytest

    from beaconflow.model.message import MessageError

    with pytest.raises(MessageError, match="lone surrogate"):
        kissmetrics.record("\ud800", "x")
    with pytest.raises(MessageError, match="lone surrogate"):
        kontagent.build("evt", {"s": 1, "n": "x", "st1": "a\udfffb"})


def test_from_parts_restores_a_message_with_its_key() -> None:
    message = kontagent.build(
        "ins", {"s": 1, "r": [2, 3], "u": "0" * 16, "st1": "a,b \u00e9"}, occurrence="ev"
    )
    parts = (message.destination, message.kind, message.params, message.occurrence, message.key)
    restored = Message.from_parts(*parts)
    assert restored == message and restored.key == message.key


def test_a_source_is_not_part_of_a_messages_identity() -> None:
    message = kontagent.build("apr", {"s": 1}, occurrence="ev")
    here, there = message.with_source("a.jsonl:1"), message.with_source("b.jsonl:9")
    assert (here.source, there.source, message.source) == ("a.jsonl:1", "b.jsonl:9", "")
    assert here == there == message and hash(here) == hash(there)
    assert here.key == there.key == message.key
    assert message.with_source("") is message
    restored = Message.from_parts(
        here.destination, here.kind, here.params, here.occurrence, here.key, source=here.source
    )
    assert restored.source == "a.jsonl:1" and restored.key == here.key


def test_message_keys_never_change_between_versions() -> None:
    # Ledgers written by earlier versions hold these keys: a different key for the same
    # message would send it again.
    kontagent = Message(
        "kontagent", "ins", (("s", "123"), ("su", "x"), ("b", "é☃")), occurrence="ev1"
    )
    assert kontagent.key == "7b85c7e8700be457fb86601c19f0f1c6"
    kissmetrics = Message(
        "kissmetrics", "e", (("_p", "u1"), ("_n", "level up"), ("_t", "1750000000"), ("_d", "1"))
    )
    assert kissmetrics.key == "0a9b80e19eaaaeed6babea26104dfbd9"


def test_a_day_is_not_part_of_a_messages_identity() -> None:
    message = kontagent.build("apr", {"s": 1}, occurrence="ev")
    monday, tuesday = message.with_origin("a:1", 20_240), message.with_origin("a:1", 20_241)
    assert (message.day, monday.day, tuesday.day) == (None, 20_240, 20_241)
    assert monday == tuesday == message and hash(monday) == hash(message)
    assert monday.key == message.key and monday.with_source("b:2").day == 20_240
    assert monday.with_origin("a:1", 20_240) is monday
    restored = Message.from_parts(
        monday.destination, monday.kind, monday.params, monday.occurrence, monday.key, day=20_240
    )
    assert restored.day == 20_240 and epoch_day(1_748_822_399) == 20_240


def test_kissmetrics_builders_give_the_day_of_t() -> None:
    assert kissmetrics.record("p", "n", time=1_748_736_000).day == 20_240
    assert kissmetrics.set_properties("p", {"a": 1}, time=1_748_736_000).day == 20_240
    assert kissmetrics.record("p", "n").day is None, "not backdated: no day"
    assert kissmetrics.alias("p", "q").day is None


def test_a_key_computed_late_is_the_key_computed_at_once() -> None:
    # a message restored from a coder's parts hashes its parameters only when asked
    built = kissmetrics.record("u1", "Level Up", time=1750000000, properties={"ü": "a&b"})
    key = identity_key(built)
    restored = Message.from_parts(
        built.destination, built.kind, built.params, built.occurrence, source="f:1"
    )
    assert "key" not in restored.__dict__
    assert restored == built and hash(restored) == hash(built)
    moved = restored.with_source("f:2")
    assert "key" not in moved.__dict__  # nothing hashed on the way
    assert restored.key == moved.key == built.key == key
    assert restored.with_source("f:3").__dict__["key"] == key  # a known key travels along


def _key_by_definition(message: Message) -> str:
    """The identity key as first written: each part's UTF-8 length (4 bytes), its bytes."""
    parts = [message.destination, message.kind, message.occurrence]
    for name, value in sorted(message.params):
        parts.extend((name, value))
    chunks = [len(raw).to_bytes(4, "big") + raw for raw in (p.encode("utf-8") for p in parts)]
    return hashlib.sha256(b"".join(chunks)).hexdigest()[:32]


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40) | st.text(
    st.sampled_from("aé☃\U0001f34e& "), min_size=1000, max_size=1100
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["kontagent", "kissmetrics"]),
    st.text(max_size=5),
    st.text(max_size=40),
    st.dictionaries(_TEXT, _TEXT, max_size=12),
)
def test_the_identity_key_is_its_definition(
    destination: str, kind: str, occurrence: str, params: dict[str, str]
) -> None:
    # the key is assembled by a faster route: it must hash exactly the defined bytes
    message = Message(destination, kind, tuple(params.items()), occurrence)  # type: ignore[arg-type]
    assert identity_key(message) == _key_by_definition(message) == message.key
