"""Kontagent messages against the reference: its examples, its tables and its limits."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from beaconflow.model import kontagent
from beaconflow.model.message import MessageError

BASE = "http://api.geo.kontagent.net"

# Every example URL of the Kontagent reference that agrees with its own tables.
REFERENCE_EXAMPLES = [
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/ins/?s=123&r=456%2C789&u=0123456789abcdef",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/ins/?s=123&r=456%2C789&u=9a3d9332b31632a0",
    "api.geo.kontagent.net/api/v1/b7d1c5a521984d308c3ad979a5b6e8f7/inr/?r=456&i=1&u=0123456789abcdef",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/nts/?s=123&r=456%2C789&u=9a3d9332b31632a0",
    "api.geo.kontagent.net/api/v1/b7d1c5a521984d308c3ad979a5b6e8f7/ntr/?r=456&i=1&u=0123456789abcdef",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/nes/?s=123&r=456%2C789&u=9a3d9332b31632a0",
    "api.geo.kontagent.net/api/v1/b7d1c5a521984d308c3ad979a5b6e8f7/nei/?r=456&i=1&u=9a3d9332b31632a0",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/mes/?s=12345678&r=23456789&tu=dashboard&u=0123456789abcdef",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/mes/?s=0&r=23456789&tu=dashboard&u=0123456789abcdef",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/mes/?s=12345678&r=23456789%2C34567890&tu=dashboard&u=0123456789abcdef",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/mes/?s=12345678&r=23456789&tu=dashboard&u=0123456789abcdef&st1=game&st2=challenge",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/mer/?r=23456789&tu=dashboard&u=0123456789abcdef&i=0",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/mer/?r=23456789&tu=dashboard&u=0123456789abcdef&i=0&st1=game&st2=challenge",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/pst/?s=456&tu=feedstory&u=0123456789abcdef",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/pst/?s=456&tu=feedstory&st1=game&st2=start&u=0123456789abcdef",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/psr/?tu=feedpub&u=0123456789abcdef&i=0",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/psr/?tu=feedpub&st1=game&st2=start&u=0123456789abcdef&i=0",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/psr/?r=23456789&tu=feedpub&u=0123456789abcdef&i=1",
    "api.geo.kontagent.net/api/v1/YOUR_API_KEY/evt/?s=123&n=plow&st1=purchase&st2=accessory",
    "api.geo.kontagent.net/api/v1/YOUR_API_KEY/evt/?s=123&n=shovel&st1=purchase&st2=accessory",
    "api.geo.kontagent.net/api/v1/YOUR_API_KEY/evt/?s=123&n=rake&st1=purchase&st2=accessory",
    "api.geo.kontagent.net/api/v1/YOUR_API_KEY/evt/?s=123&n=event1",
    "api.geo.kontagent.net/api/v1/YOUR_API_KEY/evt/?s=123&n=event1&st1=label1",
    "api.geo.kontagent.net/api/v1/YOUR_API_KEY/evt/?s=123&n=event1&st1=label2",
    "api.geo.kontagent.net/api/v1/YOUR_API_KEY/evt/?s=123&n=event1&st1=label1&st2=label2",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/apa/?s=456&su=84a942ad",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/apr/?s=456",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/ucc/?tu=ad&st1=abc&st2=123&i=0&su=84a94add&s=456734",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/pgr/?s=456&ts=2009-4-22T04:08:35",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/cpu/?s=142345&f=142&g=m&b=1980&lc=US",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/gci/?s=12345&gc1=12",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/gci/?s=12345%2C67890&gc1=12",
    "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/gci/?s=12345%2C67890&gc1=12&gc4=3",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/mtu/?s=12345&v=120",
    "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/mtu/?s=12345%2C67890&v=120",
]

# Examples that break the reference's own tables, with the refusal each gets.
BROKEN_EXAMPLES = [
    # the unique-tracking-tags section: a 15-character tag
    (
        "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/inr/?r=456&i=1&u=9a3d9332b31632a",
        "u",
        "16 or 32 hexadecimal characters",
    ),
    # "gc2=-4" written with a Unicode hyphen (U+2010) in place of "-", not an integer
    (
        "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/gci/?s=12345%2C67890&gc2=\u20104",
        "gc2",
        "must be an integer",
    ),
    # the deprecated Feed Post message
    (
        "api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/fdp/?s=456&t=12&y=3",
        None,
        "deprecated",
    ),
    # a Post Response with a sender s, which the psr table does not have (the responder is r)
    (
        "api.geo.kontagent.net/api/v1/01234567890123456789012345678901/psr/?s=23456789&tu=stream&u=0123456789abcdef&i=1",
        "s",
        "is not a parameter of psr",
    ),
]


def _split(example: str) -> tuple[str, str, dict[str, str]]:
    parts = urlsplit("http://" + example)
    _, _, _, key, code, _ = parts.path.split("/")
    return key, code, dict(parse_qsl(parts.query))


@pytest.mark.parametrize("example", REFERENCE_EXAMPLES)
def test_builder_reproduces_every_reference_example(example: str) -> None:
    key, code, params = _split(example)
    built = kontagent.url(kontagent.build(code, params), BASE, key)
    expected, actual = urlsplit("http://" + example), urlsplit(built)
    assert actual.path == expected.path
    assert sorted(parse_qsl(actual.query)) == sorted(parse_qsl(expected.query))
    # and the percent-encoding of lists is the reference's: r=456%2C789
    for name, value in parse_qsl(expected.query):
        if "," in value:
            assert f"{name}={value.replace(',', '%2C')}" in actual.query


@pytest.mark.parametrize("example", REFERENCE_EXAMPLES)
def test_parser_accepts_every_reference_example(example: str) -> None:
    key, code, params = _split(example)
    message, parsed_key = kontagent.parse_url("http://" + example)
    assert (parsed_key, message.kind, message.param_map()) == (key, code, params)


@pytest.mark.parametrize(("example", "param", "rule"), BROKEN_EXAMPLES)
def test_examples_that_break_their_own_table_are_refused(
    example: str, param: str | None, rule: str
) -> None:
    with pytest.raises(MessageError, match=rule) as caught:
        kontagent.parse_url("http://" + example)
    assert caught.value.param == param


def test_typed_values_build_the_reference_example() -> None:
    message = kontagent.build("invite_sent", {"s": 123, "r": [456, 789], "u": "9a3d9332b31632a0"})
    assert kontagent.url(message, BASE, "0123456789abcdef0123456789abcdef") == (
        BASE + "/api/v1/0123456789abcdef0123456789abcdef/ins/?r=456%2C789&s=123&u=9a3d9332b31632a0"
    )


def test_falsy_values_are_sent_not_dropped() -> None:
    mer = kontagent.build("message_response", {"r": 5, "tu": "dashboard", "i": False})
    assert mer.param("i") == "0"
    mes = kontagent.build("mes", {"s": 0, "r": [7], "tu": "dashboard", "u": "0" * 16})
    assert mes.param("s") == "0"
    evt = kontagent.build("evt", {"s": 3, "n": "x", "v": 0})
    assert evt.param("v") == "0"
    gci = kontagent.build("gci", {"s": [3], "gc1": 0})
    assert gci.param("gc1") == "0"
    mtu = kontagent.build("mtu", {"s": 3, "v": 0})
    assert mtu.param("v") == "0"


def test_none_means_absent() -> None:
    assert kontagent.build("apa", {"s": 1, "u": None}).param_map() == {"s": "1"}


@pytest.mark.parametrize(
    ("name", "code"),
    sorted(kontagent.EVENT_NAMES.items()) + [(code, code) for code in kontagent.MESSAGE_TYPES],
)
def test_event_names_and_codes_resolve(name: str, code: str) -> None:
    assert kontagent.resolve_type(name) == code


def test_every_active_type_of_the_reference_is_known() -> None:
    assert set(kontagent.MESSAGE_TYPES) == {
        "ins", "inr", "nts", "ntr", "nes", "nei", "mes", "mer", "pst",
        "psr", "evt", "apa", "apr", "ucc", "pgr", "cpu", "gci", "mtu",
    }  # fmt: skip


TAG16 = "0123456789abcdef"

# (type, params, the parameter named in the error, a fragment of the rule)
INVALID = [
    ("ins", {"r": [1], "u": TAG16}, "s", "is required"),
    ("ins", {"s": 1, "u": TAG16}, "r", "is required"),
    ("ins", {"s": 1, "r": [1]}, "u", "is required"),
    ("ins", {"s": -1, "r": [1], "u": TAG16}, "s", "0 (the application) or a positive user id"),
    ("ins", {"s": "abc", "r": [1], "u": TAG16}, "s", "numeric user id"),
    ("ins", {"s": 1.5, "r": [1], "u": TAG16}, "s", "must be an integer"),
    ("ins", {"s": True, "r": [1], "u": TAG16}, "s", "must be an integer"),
    ("ins", {"s": 1, "r": [], "u": TAG16}, "r", "at least one user id"),
    ("ins", {"s": 1, "r": [1, "x"], "u": TAG16}, "r", "numeric user id"),
    ("ins", {"s": 1, "r": [0], "u": TAG16}, "r", "positive user id"),
    ("ins", {"s": 1, "r": [1], "u": "0123456789abcdeg"}, "u", "hexadecimal"),
    ("ins", {"s": 1, "r": [1], "u": "0123456789abcde"}, "u", "16 or 32"),
    ("ins", {"s": 1, "r": [1], "u": TAG16, "st1": "x" * 33}, "st1", "at most 32 characters"),
    ("ins", {"s": 1, "r": [1], "u": TAG16, "st1": ""}, "st1", "must not be empty"),
    ("ins", {"s": 1, "r": [1], "u": TAG16, "zz": "1"}, "zz", "is not a parameter of ins"),
    ("nts", {"s": 1, "r": [1], "u": TAG16, "st3": "a"}, "st3", "is not a parameter of nts"),
    ("ntr", {"i": 1, "u": TAG16, "st3": "a"}, "st3", "is not a parameter of ntr"),
    ("inr", {"u": TAG16}, "i", "is required"),
    ("inr", {"i": 2, "u": TAG16}, "i", "must be 0 or 1"),
    ("inr", {"i": "yes", "u": TAG16}, "i", "must be 0 or 1"),
    ("inr", {"r": 0, "i": 1, "u": TAG16}, "r", "positive user id"),
    ("apa", {"s": 0}, "s", "positive user id"),
    ("mes", {"s": 1, "r": [2], "tu": "stream", "u": TAG16}, "tu", "must be one of dashboard"),
    ("mer", {"tu": "feedpub", "i": 1}, "tu", "must be one of dashboard"),
    ("pst", {"s": 1, "tu": "dashboard", "u": TAG16}, "tu", "must be one of"),
    ("psr", {"tu": "email", "i": 0}, "tu", "must be one of"),
    ("evt", {"s": 1, "n": "has space"}, "n", "[a-zA-Z0-9_]"),
    ("evt", {"s": 1, "n": "x" * 33}, "n", "1 to 32 characters"),
    ("evt", {"s": 1, "n": "ok", "l": 0}, "l", "at least 1"),
    ("evt", {"s": 1, "n": "ok", "l": -3}, "l", "at least 1"),
    ("evt", {"s": 1, "n": "ok", "v": "1.5"}, "v", "must be an integer"),
    ("apa", {"s": 1, "su": "84a942a"}, "su", "8 or 16 or 32"),
    ("apa", {"s": 1, "su": "84a942adx"}, "su", "8 or 16 or 32"),
    ("ucc", {"tu": "ad"}, "i", "is required"),
    ("ucc", {"tu": "a" * 17, "i": 0}, "tu", "at most 16 characters"),
    ("pgr", {"s": 1}, "ts", "is required"),
    ("pgr", {"s": 1, "ts": "yesterday"}, "ts", "YYYY-MM-DDTHH:MM:SS"),
    ("pgr", {"s": 1, "ts": "2009-4-22T04:08:35", "ip": "300.1.1.1"}, "ip", "IPv4"),
    ("pgr", {"s": 1, "ts": "2009-4-22T04:08:35", "u": "x" * 257}, "u", "at most 256 characters"),
    ("cpu", {"s": 1, "g": "x"}, "g", "must be one of f, m, u"),
    ("cpu", {"s": 1, "f": -1}, "f", "at least 0"),
    ("cpu", {"s": 1, "b": "19x0"}, "b", "must be an integer"),
    ("gci", {"s": [1]}, None, "at least one of gc1, gc2, gc3, gc4"),
    ("gci", {"s": [1], "gc1": 16385}, "gc1", "between -16384 and 16384"),
    ("gci", {"s": [1], "gc2": -16385}, "gc2", "between -16384 and 16384"),
    ("gci", {"s": [1], "gc5": 1}, "gc5", "is not a parameter of gci"),
    ("mtu", {"s": [1], "v": 1_000_001}, "v", "at most 1000000"),
    ("mtu", {"s": [1], "v": "1,000"}, "v", "must be an integer"),
    ("mtu", {"s": [1], "v": 12.5}, "v", "must be an integer"),
    ("mtu", {"s": [1]}, "v", "is required"),
]


@pytest.mark.parametrize(("kind", "params", "param", "rule"), INVALID)
def test_each_rule_refuses_a_bad_value(
    kind: str, params: dict[str, object], param: str | None, rule: str
) -> None:
    with pytest.raises(MessageError) as caught:
        kontagent.build(kind, params)
    assert caught.value.param == param
    assert rule in str(caught.value)
    assert kind in str(caught.value)


def test_limits_that_hold_at_their_edges() -> None:
    assert kontagent.build("gci", {"s": [1], "gc1": -16384, "gc4": 16384}).param("gc4") == "16384"
    assert kontagent.build("mtu", {"s": [1], "v": 1_000_000}).param("v") == "1000000"
    assert kontagent.build("mtu", {"s": [1], "v": -5_000_000}).param("v") == "-5000000"
    assert kontagent.build("evt", {"s": 1, "n": "x" * 32, "l": 1}).param("n") == "x" * 32
    assert kontagent.build("ins", {"s": 1, "r": [2], "u": "A" * 32}).param("u") == "A" * 32
    assert kontagent.build("apa", {"s": 1, "su": "f" * 16}).param("su") == "f" * 16


def test_deprecated_fdp_is_refused_with_a_reason() -> None:
    with pytest.raises(MessageError, match="deprecated"):
        kontagent.build("fdp", {"s": 456, "t": 12})


def test_unknown_message_type() -> None:
    with pytest.raises(MessageError, match="unknown message type"):
        kontagent.build("xyz", {"s": 1})


def test_signing_matches_kontagents_scheme() -> None:
    message = kontagent.build("apr", {"s": 456})
    built = kontagent.url(message, BASE, "key", secret="s3cret", now=1_300_000_000.7)
    params = dict(parse_qsl(urlsplit(built).query))
    assert params["ts"] == "1300000000"
    import hashlib

    expected = hashlib.md5(b"s=456ts=1300000000s3cret").hexdigest()
    assert params["an_sig"] == expected
    assert "s3cret" not in built


def test_signing_keeps_pgr_own_timestamp() -> None:
    message = kontagent.build("pgr", {"s": 456, "ts": "2009-04-22T04:08:35"})
    built = kontagent.url(message, BASE, "key", secret="s3cret", now=1_300_000_000)
    pairs = parse_qsl(urlsplit(built).query)
    assert [value for name, value in pairs if name == "ts"] == ["2009-04-22T04:08:35"]
    parsed, _ = kontagent.parse_url(built)
    assert parsed == message


def test_signing_needs_a_clock() -> None:
    with pytest.raises(ValueError, match="current time"):
        kontagent.url(kontagent.build("apr", {"s": 1}), BASE, "key", secret="x")


def test_parse_refuses_repeated_parameters_and_bad_paths() -> None:
    with pytest.raises(MessageError, match="more than once"):
        kontagent.parse_url("/api/v1/k/apr/?s=1&s=2")
    with pytest.raises(MessageError, match="path is not"):
        kontagent.parse_url("/api/v2/k/apr/?s=1")
    with pytest.raises(MessageError, match="unknown message type"):
        kontagent.parse_url("/api/v1/k/zzz/?s=1")
