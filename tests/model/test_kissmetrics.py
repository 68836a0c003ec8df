"""KISSmetrics messages: the reference's examples, backdating and what the service would drop."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest

from beaconflow.model import kissmetrics
from beaconflow.model.message import MessageError

BASE = "http://trk.kissmetrics.com"


def _same_url(actual: str, expected: str) -> None:
    a, e = urlsplit(actual), urlsplit(expected)
    assert (a.scheme, a.netloc, a.path) == (e.scheme, e.netloc, e.path)
    assert sorted(parse_qsl(a.query)) == sorted(parse_qsl(e.query))


def test_reference_record_example() -> None:
    message = kissmetrics.record("bob", "Signed Up", time=1262304000, properties={"gender": "male"})
    _same_url(
        kissmetrics.url(message, BASE, "api-key"),
        "http://trk.kissmetrics.com/e?_k=api-key&_p=bob&_n=Signed+Up&gender=male&_t=1262304000&_d=1",
    )


def test_reference_set_example() -> None:
    message = kissmetrics.set_properties("bob", {"gender": "male"}, time=1262304000)
    _same_url(
        kissmetrics.url(message, BASE, "api-key"),
        "http://trk.kissmetrics.com/s?_k=api-key&_p=bob&gender=male&_t=1262304000&_d=1",
    )


def test_reference_alias_example() -> None:
    built = kissmetrics.url(kissmetrics.alias("bob", "bob@bob.com"), BASE, "api-key")
    _same_url(built, "http://trk.kissmetrics.com/a?_k=api-key&_p=bob&_n=bob%40bob.com")
    assert "_n=bob%40bob.com" in built


@pytest.mark.parametrize(
    "example",
    [
        "http://trk.kissmetrics.com/e?_k=api-key&_p=bob&_n=Signed+Up&gender=male&_t=1262304000&_d=1",
        "http://trk.kissmetrics.com/s?_k=api-key&_p=bob&gender=male&_t=1262304000&_d=1",
        "http://trk.kissmetrics.com/a?_k=api-key&_p=bob&_n=bob%40bob.com",
    ],
)
def test_parser_accepts_reference_examples(example: str) -> None:
    message, key = kissmetrics.parse_url(example)
    assert key == "api-key"
    assert message.param_map() == {k: v for k, v in parse_qsl(urlsplit(example).query) if k != "_k"}


def test_backdating_sets_t_and_d() -> None:
    when = datetime(2010, 1, 1, tzinfo=UTC)
    message = kissmetrics.record(42, "Bought", time=when)
    assert message.param("_t") == "1262304000"
    assert message.param("_d") == "1"
    assert message.param("_p") == "42"


def test_without_time_no_backdating() -> None:
    message = kissmetrics.record("bob", "Visited")
    assert message.param("_t") is None and message.param("_d") is None


def test_falsy_property_values_are_sent() -> None:
    message = kissmetrics.record("bob", "x", properties={"count": 0, "vip": False, "note": ""})
    assert message.param_map()["count"] == "0"
    assert message.param_map()["vip"] == "false"
    assert message.param_map()["note"] == ""


def test_special_characters_are_percent_encoded() -> None:
    message = kissmetrics.record("a b&c", "Won #1", properties={"item": "50% off+tax=1,2"})
    built = kissmetrics.url(message, BASE, "k")
    assert " " not in built and "+" not in urlsplit(built).query
    assert kissmetrics.parse_url(built)[0] == message


INVALID = [
    (lambda: kissmetrics.record("bob", "x", time=1230767999), "_t", "before 2009"),
    (lambda: kissmetrics.record("bob", "x", time=12.5), "_t", "integer seconds"),  # type: ignore[arg-type]
    (lambda: kissmetrics.record("bob", "x", time=datetime(2010, 1, 1)), "_t", "time zone"),
    (lambda: kissmetrics.record("bob", "x" * 255), "_n", "shorter than 255"),
    (lambda: kissmetrics.record("bob", ""), "_n", "must not be empty"),
    (lambda: kissmetrics.record("p" * 256, "x"), "_p", "at most 255"),
    (lambda: kissmetrics.record("", "x"), "_p", "must not be empty"),
    (lambda: kissmetrics.record(True, "x"), "_p", "string or an integer"),
    (lambda: kissmetrics.record("bob", "x", properties={"_n": "y"}), "_n", "reserved"),
    (lambda: kissmetrics.record("bob", "x", properties={"_source": "y"}), "_source", "reserved"),
    (
        lambda: kissmetrics.record("bob", "x", properties={"n" * 255: "y"}),
        "n" * 255,
        "shorter than 255",
    ),
    (lambda: kissmetrics.record("bob", "x", properties={"a": None}), "a", "no value"),
    (lambda: kissmetrics.record("bob", "x", properties={"a": [1]}), "a", "string, number or bool"),
    (lambda: kissmetrics.record("bob", "x", properties={"a": float("nan")}), "a", "finite"),
    (lambda: kissmetrics.set_properties("bob", {}), None, "at least one property"),
    (lambda: kissmetrics.alias("bob", "n" * 256), "_n", "at most 255"),
]


@pytest.mark.parametrize(("make", "param", "rule"), INVALID)
def test_each_rule_refuses_a_bad_value(make, param, rule) -> None:
    with pytest.raises(MessageError) as caught:
        make()
    assert caught.value.param == param
    assert rule in str(caught.value)


def test_identities_of_255_characters_are_allowed() -> None:
    assert kissmetrics.record("p" * 255, "x" * 254).param("_p") == "p" * 255
    assert kissmetrics.alias("a", "n" * 255).param("_n") == "n" * 255


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/e?_p=bob&_n=x", "_k"),
        ("/e?_k=k&_n=x", "_p"),
        ("/e?_k=k&_p=bob", "_n"),
        ("/e?_k=k&_p=bob&_n=x&_t=1262304000", "go together"),
        ("/e?_k=k&_p=bob&_n=x&_t=1262304000&_d=0", "must be 1"),
        ("/a?_k=k&_p=bob&_n=x&extra=1", "alias takes only"),
        ("/x?_k=k&_p=bob", "not /e, /s or /a"),
        ("/e?_k=k&_p=bob&_p=eve&_n=x", "more than once"),
    ],
)
def test_parser_refuses_malformed_requests(path: str, rule: str) -> None:
    with pytest.raises(MessageError, match=rule):
        kissmetrics.parse_url(path)
