"""Identity keys, redaction and the build -> URL -> parse round trip for any valid message."""

from __future__ import annotations

import string
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from beaconflow.delivery.redact import Redactor
from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.message import Endpoint, Message, encode_query
from beaconflow.model.render import parse_url, render_url

KEY = "0123456789abcdef0123456789abcdef"
SECRET = "the-secret-value"

# Text with the characters that broke the peer libraries: spaces, & = % + , # and unicode.
tricky = st.text(
    alphabet=st.sampled_from(
        list(" &=%+,#?/;:@'\"~é漢😀\u2010") + list(string.ascii_letters + string.digits)
    ),
    min_size=1,
    max_size=32,
)
uids = st.integers(min_value=1, max_value=10**15)
tags = st.sampled_from([16, 32]).flatmap(
    lambda n: st.text("0123456789abcdef", min_size=n, max_size=n)
)


@st.composite
def kontagent_messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(["ins", "nes", "evt", "mtu", "gci", "ucc", "cpu", "psr", "pgr"]))
    subtypes = {f"st{i}": draw(st.none() | tricky) for i in (1, 2, 3)}
    if kind in ("ins", "nes"):
        params = {
            "s": draw(st.integers(0, 10**12)),
            "r": draw(st.lists(uids, min_size=1, max_size=5)),
            "u": draw(tags),
            **subtypes,
        }
    elif kind == "evt":
        params = {
            "s": draw(uids),
            "n": draw(st.from_regex(r"[A-Za-z0-9_]{1,32}", fullmatch=True)),
            "v": draw(st.none() | st.integers(-(10**9), 10**9)),
            "l": draw(st.none() | st.integers(1, 10**6)),
            **subtypes,
        }
    elif kind == "mtu":
        params = {
            "s": draw(st.lists(uids, min_size=1, max_size=3)),
            "v": draw(st.integers(-(10**7), 10**6)),
        }
    elif kind == "gci":
        params = {
            "s": draw(st.lists(uids, min_size=1, max_size=3)),
            "gc1": draw(st.integers(-16384, 16384)),
            "gc3": draw(st.none() | st.integers(-16384, 16384)),
        }
    elif kind == "ucc":
        params = {
            "tu": draw(tricky.filter(lambda t: len(t) <= 16)),
            "i": draw(st.booleans()),
            "s": draw(st.none() | uids),
            **subtypes,
        }
    elif kind == "cpu":
        params = {
            "s": draw(uids),
            "g": draw(st.sampled_from("mfu")),
            "ly": draw(tricky),
            "lp": draw(tricky),
            "f": draw(st.integers(0, 5000)),
        }
    elif kind == "psr":
        params = {
            "tu": draw(st.sampled_from(sorted(kontagent.POST_CHANNELS))),
            "i": draw(st.booleans()),
            "r": draw(st.none() | uids),
            **subtypes,
        }
    else:
        params = {"s": draw(uids), "ts": "2011-03-04T05:06:07", "u": draw(tricky)}
    return kontagent.build(kind, params)


@st.composite
def kissmetrics_messages(draw: st.DrawFn) -> Message:
    person = draw(tricky)
    properties = draw(
        st.dictionaries(
            tricky.filter(lambda n: not n.startswith("_")),
            st.one_of(
                tricky,
                st.integers(),
                st.booleans(),
                st.floats(allow_nan=False, allow_infinity=False),
            ),
            max_size=4,
        )
    )
    time = draw(st.none() | st.integers(kissmetrics.EARLIEST, 2_000_000_000))
    which = draw(st.sampled_from("esa"))
    if which == "e":
        return kissmetrics.record(person, draw(tricky), time=time, properties=properties)
    if which == "s":
        return kissmetrics.set_properties(person, properties or {"p": "v"}, time=time)
    return kissmetrics.alias(person, draw(tricky))


@settings(max_examples=300, deadline=None)
@given(kontagent_messages(), st.booleans())
def test_any_kontagent_message_survives_build_url_parse(message: Message, signed: bool) -> None:
    endpoint = Endpoint("kontagent", "http://collector.test", KEY, SECRET if signed else None)
    built = render_url(message, endpoint, now=1_600_000_000)
    parsed, key = parse_url(built)
    assert parsed == message
    assert parsed.key == message.key
    assert key == KEY
    assert "#" not in built and " " not in built


@settings(max_examples=300, deadline=None)
@given(kissmetrics_messages())
def test_any_kissmetrics_message_survives_build_url_parse(message: Message) -> None:
    built = render_url(message, Endpoint("kissmetrics", "http://collector.test", KEY), now=0)
    parsed, key = parse_url(built)
    assert parsed == message and parsed.key == message.key and key == KEY


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


def test_redactor_masks_keys_in_urls_and_anywhere_in_text() -> None:
    redact = Redactor.of([KEY, SECRET, None, ""])
    kontagent_url = render_url(
        kontagent.build("apr", {"s": 1}), Endpoint("kontagent", "http://h", KEY, SECRET), 5
    )
    kissmetrics_url = render_url(
        kissmetrics.alias("a", "b"), Endpoint("kissmetrics", "http://h", KEY), 5
    )
    for text in (kontagent_url, kissmetrics_url, f"error talking to {kontagent_url}: {SECRET}"):
        masked = redact(text)
        assert KEY not in masked and SECRET not in masked
        assert "***" in masked
    assert redact("/api/v1/other-key/apr/?s=1") == "/api/v1/***/apr/?s=1"
    long = "a b/c secret"
    assert Redactor.of([long])("x a%20b%2Fc%20secret y a+b%2Fc+secret") == "x *** y ***"
    # a secret shorter than 8 characters is masked where a URL carries it, nowhere else
    assert Redactor.of(["a b/c"])("x a b/c y, user 1a b/c2") == "x a b/c y, user 1a b/c2"


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


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=24)), max_size=6))
def test_query_encoding_is_urllibs_percent_encoding(params: list[tuple[str, str]]) -> None:
    # the fast path (names and values with nothing to escape) must not change a byte
    expected = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in params)
    assert encode_query(params) == expected
    assert encode_query([("a-Z_0.9~", ""), ("é ,", "x&y")]) == "a-Z_0.9~=&%C3%A9%20%2C=x%26y"
