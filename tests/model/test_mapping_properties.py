"""A mapping's ``[properties]``: the event's properties gathered from one or several objects.

Several sources (the first that has a name wins), include/exclude, flatten, what is left
out (objects, lists, nulls, non-finite numbers: counted, never a reason to refuse the
event), timestamps as ISO text, and the rule's label in the matched counts.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from beaconflow.model.mapping import MappingError, PropertySources, parse_mapping
from beaconflow.model.records import validate

NOW = 1_800_000_000
T0 = 1_750_000_000

TWO_SOURCES = parse_mapping('[properties]\nfrom = ["properties", "context.traits"]\n')


def _properties(toml: str, record: dict[str, Any]) -> tuple[Any, Counter[str]]:
    """The properties ``toml``'s mapping gives ``record``, and those it left out."""
    left_out: Counter[str] = Counter()
    canonical, _ = parse_mapping(toml).convert(record, left_out=left_out)
    return canonical.get("properties", "absent"), left_out


def test_properties_from_several_sources_the_first_wins_a_clash() -> None:
    record = {
        "properties": {"plan": "pro", "age": 30},
        "context": {"traits": {"age": 31, "city": "Oslo"}},
    }
    assert TWO_SOURCES.apply(record) == {
        "properties": {"plan": "pro", "age": 30, "city": "Oslo"},
        "context": {"traits": {"age": 31, "city": "Oslo"}},
    }


def test_a_source_that_is_not_an_object_is_skipped() -> None:
    record = {"properties": "text", "context": {"traits": {"city": "Oslo"}}}
    assert TWO_SOURCES.apply(record)["properties"] == {"city": "Oslo"}


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"properties": None},
        {"properties": [{"a": 1}]},
        {"properties": "x", "context": {"traits": 3}},
        {"context": {}},
    ],
)
def test_no_source_object_no_properties_key(record: dict[str, Any]) -> None:
    assert "properties" not in TWO_SOURCES.apply(record)


def test_an_empty_source_object_gives_empty_properties() -> None:
    assert TWO_SOURCES.apply({"properties": {}}) == {"properties": {}}


def test_the_sources_replace_a_canonical_properties_field() -> None:
    mapping = parse_mapping('[properties]\nfrom = ["props"]\n')
    assert mapping.apply({"properties": {"old": 1}, "props": {"new": 2}}) == {
        "props": {"new": 2},
        "properties": {"new": 2},
    }
    # no source object: the source's own properties do not stand in
    assert mapping.apply({"properties": {"old": 1}}) == {}


SCALARS_AND_NOT = {
    "text": "a",
    "number": 3,
    "float": 2.5,
    "zero": 0,
    "flag": False,
    "empty_text": "",
    "object": {"x": 1},
    "list": [1, 2],
    "null": None,
    "nan": math.nan,
    "inf": math.inf,
    "bytes": b"raw",
}


def test_objects_lists_nulls_and_non_finite_numbers_are_left_out_and_counted() -> None:
    properties, left_out = _properties('[properties]\nfrom = ["p"]\n', {"p": SCALARS_AND_NOT})
    assert properties == {
        "text": "a",
        "number": 3,
        "float": 2.5,
        "zero": 0,
        "flag": False,
        "empty_text": "",
    }
    assert left_out == Counter({"object": 1, "list": 1, "null": 1, "nan": 1, "inf": 1, "bytes": 1})


def test_left_out_properties_do_not_refuse_the_event() -> None:
    record = {"time": T0, "user_id": 1, "event": "level_up", "p": SCALARS_AND_NOT}
    event = validate(parse_mapping('[properties]\nfrom = ["p"]\n').apply(record), now=NOW)
    assert event.get("properties")["text"] == "a"


def test_left_out_counts_add_up_over_records() -> None:
    mapping = parse_mapping('[properties]\nfrom = ["p"]\n')
    left_out: Counter[str] = Counter()
    for record in ({"p": {"a": None}}, {"p": {"a": [1], "b": {}}}, {"p": {"a": 1}}):
        mapping.convert(record, left_out=left_out)
    assert left_out == Counter({"a": 2, "b": 1})


def test_timestamps_become_iso_text() -> None:
    utc = datetime(2024, 3, 11, 20, 24, tzinfo=UTC)
    offset = datetime(2024, 3, 11, 13, 24, 0, 500_000, tzinfo=timezone(timedelta(hours=-7)))
    naive = datetime(2024, 3, 11, 20, 24)
    properties, left_out = _properties(
        '[properties]\nfrom = ["p"]\n', {"p": {"utc": utc, "offset": offset, "naive": naive}}
    )
    assert properties == {
        "utc": "2024-03-11T20:24:00+00:00",
        "offset": "2024-03-11T13:24:00.500000-07:00",
        "naive": "2024-03-11T20:24:00",
    }
    assert not left_out


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ("", {"a": 1, "b": 2, "c": 3}),
        ('include = ["a", "c"]', {"a": 1, "c": 3}),
        ('include = ["a", "zzz"]', {"a": 1}),
        ("include = []", {}),
        ('exclude = ["b"]', {"a": 1, "c": 3}),
        ('include = ["a", "b"]\nexclude = ["b"]', {"a": 1}),  # exclude wins
    ],
)
def test_include_and_exclude(filters: str, expected: dict[str, int]) -> None:
    properties, left_out = _properties(
        f'[properties]\nfrom = ["p"]\n{filters}\n', {"p": {"a": 1, "b": 2, "c": 3}}
    )
    assert properties == expected
    assert not left_out


NESTED = {
    "plan": "pro",
    "cart": {"total": 9.5, "items": [1, 2], "coupon": {"code": "X", "note": None}},
    "device": {"os": "ios", "secret": {"token": "t"}},
    "empty": {},
}


def test_flatten_turns_nested_objects_into_dotted_names() -> None:
    properties, left_out = _properties(
        '[properties]\nfrom = ["p"]\nflatten = true\n', {"p": NESTED}
    )
    assert properties == {
        "plan": "pro",
        "cart.total": 9.5,
        "cart.coupon.code": "X",
        "device.os": "ios",
        "device.secret.token": "t",
    }
    assert left_out == Counter({"cart.items": 1, "cart.coupon.note": 1, "empty": 1})


def test_without_flatten_a_nested_object_is_left_out_whole() -> None:
    properties, left_out = _properties('[properties]\nfrom = ["p"]\n', {"p": NESTED})
    assert properties == {"plan": "pro"}
    assert left_out == Counter({"cart": 1, "device": 1, "empty": 1})


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        # an excluded parent excludes its dotted children, none of them counted as left out
        (
            'exclude = ["device"]',
            {"plan": "pro", "cart.total": 9.5, "cart.coupon.code": "X"},
        ),
        (
            'exclude = ["device.secret", "cart.coupon"]',
            {"plan": "pro", "cart.total": 9.5, "device.os": "ios"},
        ),
        (
            'exclude = ["device.secret.token"]',
            {"plan": "pro", "cart.total": 9.5, "cart.coupon.code": "X", "device.os": "ios"},
        ),
        # an included parent includes its dotted children
        ('include = ["cart"]', {"cart.total": 9.5, "cart.coupon.code": "X"}),
        ('include = ["cart.coupon", "plan"]', {"plan": "pro", "cart.coupon.code": "X"}),
        # an excluded child of an included parent stays out, and so do its own children
        ('include = ["cart"]\nexclude = ["cart.total"]', {"cart.coupon.code": "X"}),
        ('include = ["cart"]\nexclude = ["cart.coupon"]', {"cart.total": 9.5}),
        ('include = ["device"]\nexclude = ["device.secret"]', {"device.os": "ios"}),
        # a prefix that is not a whole name does not exclude
        (
            'exclude = ["dev", "car", "plan.x"]',
            {
                "plan": "pro",
                "cart.total": 9.5,
                "cart.coupon.code": "X",
                "device.os": "ios",
                "device.secret.token": "t",
            },
        ),
    ],
)
def test_include_and_exclude_with_flatten(filters: str, expected: dict[str, Any]) -> None:
    properties, left_out = _properties(
        f'[properties]\nfrom = ["p"]\nflatten = true\n{filters}\n', {"p": NESTED}
    )
    assert properties == expected
    # what is filtered out is not "left out": that is for values that are not scalars
    assert set(left_out) <= {"cart.items", "cart.coupon.note", "empty"}


def test_the_rules_label_is_counted_in_matched() -> None:
    matched: Counter[str] = Counter()
    records: list[dict[str, Any]] = [
        {"properties": {"a": 1}},
        {"context": {"traits": {}}},
        {"other": 1},
    ]
    for record in records:
        TWO_SOURCES.convert(record, matched)
    assert matched == Counter({"properties from properties, context.traits": 2})
    assert TWO_SOURCES.labels() == ("properties from properties, context.traits",)
    assert TWO_SOURCES.required_labels() == ("properties from properties, context.traits",)


def test_optional_properties_are_not_required() -> None:
    mapping = parse_mapping('[properties]\nfrom = "p"\noptional = true\n')
    assert mapping.properties == PropertySources((("p",),), optional=True)
    assert mapping.labels() == ("properties from p",)
    assert mapping.required_labels() == ()


def test_parsed_properties() -> None:
    mapping = parse_mapping(
        '[properties]\nfrom = ["a", "b.c"]\ninclude = ["x"]\nexclude = ["y"]\nflatten = true\n'
    )
    assert mapping.properties == PropertySources(
        (("a",), ("b", "c")),
        include=frozenset({"x"}),
        exclude=frozenset({"y"}),
        flatten=True,
    )
    assert mapping.properties.label == "properties from a, b.c"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("properties = 1\n", "m.toml: [properties] must be a table"),
        (
            "[properties]\nflatten = true\n",
            "m.toml: [properties] needs from: the path(s) of the objects holding properties",
        ),
        (
            '[properties]\nfrom = "p"\nincludes = ["a"]\n',
            "m.toml: [properties] has unknown key(s) ['includes']; expected some of "
            "['exclude', 'flatten', 'from', 'include', 'optional']",
        ),
        ("[properties]\nfrom = []\n", "m.toml: [properties].from needs at least one path"),
        (
            '[properties]\nfrom = "a..b"\n',
            "m.toml: [properties].from must be a field name or dotted path",
        ),
        (
            '[properties]\nfrom = "p"\ninclude = "a"\n',
            "m.toml: [properties].include must be a list of names",
        ),
        (
            '[properties]\nfrom = "p"\nexclude = [1]\n',
            "m.toml: [properties].exclude must be a list of names",
        ),
        (
            '[properties]\nfrom = "p"\nflatten = "yes"\n',
            "m.toml: [properties].flatten must be true or false",
        ),
        (
            '[properties]\nfrom = "p"\noptional = 1\n',
            "m.toml: [properties].optional must be true or false",
        ),
    ],
)
def test_properties_errors(toml: str, expected: str) -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping(toml, "m.toml")
    assert str(error.value) == expected
