"""A mapping's ``[lists.X]``: key/value lists read as one object (GA4's ``event_params``)."""

from __future__ import annotations

from typing import Any

import pytest

from beaconflow.model.mapping import KeyValueList, MappingError, parse_mapping

GA4 = parse_mapping(
    """
[lists.event_params]
key = "key"
value = ["value.string_value", "value.int_value", "value.double_value", "value.float_value"]
"""
)

GA4_PARAMS = [
    {"key": "page_title", "value": {"string_value": "Home", "int_value": None}},
    {"key": "value", "value": {"double_value": 19.99}},
]


def test_a_ga4_key_value_list_becomes_an_object() -> None:
    record = {"event_name": "purchase", "event_params": GA4_PARAMS}
    assert GA4.apply(record) == {
        "event_name": "purchase",
        "event_params": {"page_title": "Home", "value": 19.99},
    }
    # the source record is not changed
    assert record["event_params"] == GA4_PARAMS


def test_the_object_is_what_field_rules_read() -> None:
    mapping = parse_mapping(
        """
[lists.event_params]
key = "key"
value = ["value.string_value", "value.double_value"]
[fields]
value = { path = "event_params.value", scale = 100 }
name = "event_params.page_title"
"""
    )
    assert mapping.apply({"event_params": GA4_PARAMS}) == {"value": 1999, "name": "Home"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # the first typed value that is not null wins, in the order the mapping lists them
        ([{"key": "n", "value": {"string_value": None, "int_value": 5}}], {"n": 5}),
        ([{"key": "n", "value": {"string_value": "5", "int_value": 5}}], {"n": "5"}),
        ([{"key": "n", "value": {"float_value": 1.5, "double_value": 2.5}}], {"n": 2.5}),
        ([{"key": "n", "value": {"int_value": 0, "double_value": 2.5}}], {"n": 0}),
        # no typed value: the key is kept with null ([properties] leaves it out, counted)
        ([{"key": "n", "value": {"string_value": None}}], {"n": None}),
        ([{"key": "n"}], {"n": None}),
        # a duplicate key: the first wins, even when its value is null
        (
            [
                {"key": "a", "value": {"int_value": 1}},
                {"key": "a", "value": {"int_value": 2}},
            ],
            {"a": 1},
        ),
        (
            [
                {"key": "a", "value": {"int_value": None}},
                {"key": "a", "value": {"int_value": 2}},
            ],
            {"a": None},
        ),
        # items that are not objects, or have no key, are skipped
        (["junk", 3, None, {"value": {"int_value": 1}}, {"key": None}], {}),
        ([{"key": 7, "value": {"int_value": 1}}], {"7": 1}),  # a key is text
        ([], {}),
    ],
)
def test_key_value_items(params: list[Any], expected: dict[str, Any]) -> None:
    assert GA4.apply({"event_params": params}) == {"event_params": expected}


@pytest.mark.parametrize(
    "record",
    [
        {"event_params": {"already": "an object"}},
        {"event_params": "text"},
        {"event_params": None},
        {"other": [1]},
        {},
    ],
)
def test_what_is_not_a_list_is_left_alone(record: dict[str, Any]) -> None:
    assert GA4.apply(record) == record


def test_a_nested_list_path() -> None:
    mapping = parse_mapping('[lists."a.b"]\nkey = "k"\nvalue = "v"\n')
    record: dict[str, Any] = {"a": {"b": [{"k": "x", "v": 1}, {"k": "y", "v": 2}], "c": 3}, "d": 4}
    assert mapping.apply(record) == {"a": {"b": {"x": 1, "y": 2}, "c": 3}, "d": 4}
    # the containers on the way are copies
    assert record["a"]["b"] == [{"k": "x", "v": 1}, {"k": "y", "v": 2}]
    assert mapping.lists == (KeyValueList(("a", "b"), ("k",), (("v",),)),)
    assert mapping.apply({"a": "not an object"}) == {"a": "not an object"}


def test_several_lists() -> None:
    mapping = parse_mapping(
        '[lists.p]\nkey = "k"\nvalue = "v"\n[lists.q]\nkey = "name"\nvalue = "val.x"\n'
    )
    record = {"p": [{"k": "a", "v": 1}], "q": [{"name": "b", "val": {"x": 2}}]}
    assert mapping.apply(record) == {"p": {"a": 1}, "q": {"b": 2}}


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[lists.p]\nkey = "k"\n',
            "m.toml: [lists.p] takes key (the path of each item's name) and value (the path or "
            "paths of its value, the first not null wins)",
        ),
        (
            '[lists.p]\nkey = "k"\nvalue = "v"\nextra = 1\n',
            "m.toml: [lists.p] takes key (the path of each item's name) and value (the path or "
            "paths of its value, the first not null wins)",
        ),
        ('[lists.p]\nkey = "k"\nvalue = []\n', "m.toml: [lists.p] value needs at least one path"),
        (
            '[lists.p]\nkey = 3\nvalue = "v"\n',
            "m.toml: [lists.p] key must be a field name or dotted path",
        ),
        (
            '[lists."p..q"]\nkey = "k"\nvalue = "v"\n',
            "m.toml: [lists.p..q] must be a field name or dotted path",
        ),
        ("lists = 1\n", "m.toml: [lists] must be a table"),
    ],
)
def test_list_errors(toml: str, expected: str) -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping(toml, "m.toml")
    assert str(error.value) == expected
