"""A message with credentials (``beaconflow.model.render``): build -> URL -> parse, any message."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.message import Endpoint, Message
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
