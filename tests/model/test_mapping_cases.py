"""A mapping's ``[[when]]`` cases: other rules for records of another type (Segment's ``type``).

Matching (a value, a list, a regular expression, a bool), the first matching case winning,
what a case overrides (fields per canonical field, constants, properties, destinations),
the labels the report counts, and the errors naming ``[[when]] #N``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from beaconflow.model.mapping import MappingError, RecordMapping, parse_mapping
from beaconflow.model.message import DESTINATIONS, Destination

CASES = parse_mapping(
    """
[fields]
user_id = "uid"
event = "action"
city = { path = "loc.city", optional = true }

[constants]
country = "US"
state = "CA"

[properties]
from = ["props"]

[[when]]
field = "type"
is = "identify"
destinations = ["kissmetrics"]
[when.fields]
event = false
city = "traits.city"
[when.constants]
event = "user_information"
country = "FR"
[when.properties]
from = ["traits"]
optional = true

[[when]]
field = "type"
is = ["page", "screen"]
destinations = []

[[when]]
field = "meta.kind"
matches = "ord(er)?_[0-9]+"
[when.constants]
level = 3

[[when]]
field = "flag"
is = true
[when.constants]
subtype1 = "flagged"

[[when]]
field = "type"
is = "identify"
[when.constants]
subtype1 = "never: the first matching case wins"
"""
)


def _case(record: dict[str, Any]) -> int | None:
    """The number (from 1) of the case that converts ``record``, None for the top level."""
    _, chosen = CASES.select(record)
    numbers = [n for n, case in enumerate(CASES.cases, 1) if case.mapping is chosen]
    assert len(numbers) <= 1
    return numbers[0] if numbers else None


@pytest.mark.parametrize(
    ("record", "case"),
    [
        ({"type": "identify"}, 1),
        ({"type": "page"}, 2),
        ({"type": "screen"}, 2),
        ({"type": "track"}, None),
        ({"type": "Identify"}, None),  # case-sensitive
        ({"type": ["identify"]}, None),  # a list is no value
        ({"type": {"v": "identify"}}, None),
        ({"type": None}, None),
        ({}, None),
        # a regular expression the whole value must match
        ({"meta": {"kind": "order_12"}}, 3),
        ({"meta": {"kind": "ord_1"}}, 3),
        ({"meta": {"kind": "xorder_12"}}, None),
        ({"meta": {"kind": "order_12x"}}, None),
        ({"meta": {"kind": "order_"}}, None),
        ({"meta": {"kind": 5}}, None),
        # a bool value true matches is = true (the text "true"), and so does the text
        ({"flag": True}, 4),
        ({"flag": "true"}, 4),
        ({"flag": False}, None),
        ({"flag": "True"}, None),
        ({"flag": 1}, None),
        # the first matching case wins
        ({"type": "identify", "flag": True}, 1),
        ({"flag": True, "meta": {"kind": "order_1"}}, 3),
    ],
)
def test_which_case_converts_a_record(record: dict[str, Any], case: int | None) -> None:
    assert _case(record) == case


@pytest.mark.parametrize(
    ("is_", "value", "matches"),
    [
        ("1", 1, True),
        ("1", "1", True),
        ("1", 1.0, False),  # a float's text is 1.0
        ('"7"', 7, True),
        ("false", False, True),
        ("false", "false", True),
        ('"true"', True, True),  # a bool field value true is the text "true"
        ('"true"', "true", True),
        ('"True"', True, False),
        ('["a", 2]', 2, True),
        ('["a", 2]', "a", True),
        ('["a", 2]', "b", False),
    ],
)
def test_is_compares_texts(is_: str, value: object, matches: bool) -> None:
    mapping = parse_mapping(f'[[when]]\nfield = "f"\nis = {is_}\n[when.constants]\nlevel = 1\n')
    assert ("level" in mapping.apply({"f": value})) is matches


def test_the_case_fields_override_the_top_level_per_canonical_field() -> None:
    record = {
        "type": "identify",
        "uid": 7,
        "action": "ignored",
        "loc": {"city": "LA"},
        "traits": {"city": "Paris", "age": 30},
        "props": {"plan": "pro"},
    }
    canonical, chosen = CASES.convert(record)
    assert canonical["user_id"] == 7  # the top level's rule, not overridden
    assert canonical["city"] == "Paris"  # the case's rule
    assert canonical["event"] == "user_information"  # event = false, then the case constant
    assert canonical["country"] == "FR"  # the case's constant
    assert canonical["state"] == "CA"  # the top level's constant
    assert canonical["properties"] == {"city": "Paris", "age": 30}  # the case's properties
    assert [rule.label for rule in chosen.fields] == [
        "user_id = uid",
        "event = ",
        "city = traits.city",
    ]


def test_a_case_without_its_own_tables_takes_the_top_levels() -> None:
    record = {"type": "page", "uid": 7, "action": "view", "props": {"plan": "pro"}}
    assert CASES.apply(record) == {
        "type": "page",
        "props": {"plan": "pro"},  # not a canonical field: passes through, ignored
        "user_id": 7,
        "event": "view",
        "properties": {"plan": "pro"},
        "country": "US",
        "state": "CA",
    }


def test_a_record_no_case_matches_takes_the_top_level() -> None:
    record = {"type": "track", "uid": 7, "action": "buy", "traits": {"city": "Paris"}}
    canonical, chosen = CASES.convert(record)
    assert chosen is CASES
    assert canonical == {
        "type": "track",
        "traits": {"city": "Paris"},
        "user_id": 7,
        "event": "buy",
        "country": "US",
        "state": "CA",
    }


def test_case_constants_fill_only_absent_fields() -> None:
    mapping = parse_mapping(
        '[[when]]\nfield = "t"\nis = "x"\n[when.constants]\nlevel = 3\nchannel = "feedpub"\n'
    )
    assert mapping.apply({"t": "x", "level": 9}) == {"t": "x", "level": 9, "channel": "feedpub"}


BOTH: tuple[Destination, ...] = ("kontagent", "kissmetrics")


@pytest.mark.parametrize(
    ("record", "destinations"),
    [
        ({"type": "identify"}, ("kissmetrics",)),
        ({"type": "page"}, ()),
        ({"type": "track"}, BOTH),
        ({"flag": True}, BOTH),  # a case without destinations: every destination
    ],
)
def test_a_cases_destinations(record: dict[str, Any], destinations: tuple[str, ...]) -> None:
    _, chosen = CASES.select(record)
    assert chosen.destinations("user_information", DESTINATIONS) == destinations


def test_a_cases_destinations_are_among_those_enabled_and_routed() -> None:
    mapping = parse_mapping(
        '[destinations.kissmetrics]\nexclude = ["level_up"]\n'
        '[[when]]\nfield = "t"\nis = "x"\ndestinations = ["kissmetrics"]\n'
    )
    _, chosen = mapping.select({"t": "x"})
    assert chosen.only == ("kissmetrics",)
    assert chosen.destinations("apa", BOTH) == ("kissmetrics",)
    assert chosen.destinations("apa", ("kontagent",)) == ()
    assert chosen.destinations("level_up", BOTH) == ()  # the top level's routes still apply
    assert mapping.destinations("level_up", BOTH) == ("kontagent",)


def test_labels_include_the_case_rules_once() -> None:
    assert CASES.labels() == (
        "user_id = uid",
        "event = action",
        "city = loc.city",
        "properties from props",
        "city = traits.city",
        "properties from traits",
    )


def test_a_rule_several_cases_share_is_one_label() -> None:
    mapping = parse_mapping(
        '[fields]\nuser_id = "uid"\n'
        '[[when]]\nfield = "t"\nis = "a"\n[when.fields]\ncity = "c"\nuser_id = "uid"\n'
        '[[when]]\nfield = "t"\nis = "b"\n[when.fields]\ncity = "c"\n'
    )
    assert mapping.labels() == ("user_id = uid", "city = c")
    matched: Counter[str] = Counter()
    for t in ("a", "b", "c"):
        mapping.convert({"t": t, "uid": 1, "c": "Oslo"}, matched)
    assert matched == Counter({"user_id = uid": 3, "city = c": 2})


def test_required_labels_leave_out_the_optional_rules() -> None:
    assert CASES.required_labels() == (
        "user_id = uid",
        "event = action",
        "properties from props",
        "city = traits.city",
    )


def test_matched_counts_the_rules_of_the_case_that_converted() -> None:
    matched: Counter[str] = Counter()
    for record in (
        {"type": "identify", "uid": 1, "traits": {"city": "Paris"}},
        {"type": "track", "uid": 2, "action": "buy", "props": {}},
        {"type": "page", "uid": 3, "loc": {"city": "LA"}},
    ):
        CASES.convert(record, matched)
    assert matched == Counter(
        {
            "user_id = uid": 3,
            "city = traits.city": 1,
            "properties from traits": 1,
            "event = action": 1,
            "properties from props": 1,
            "city = loc.city": 1,
        }
    )


def test_case_labels() -> None:
    assert [case.label for case in CASES.cases] == [
        "type is identify",
        "type is page or screen",
        "meta.kind matches ord(er)?_[0-9]+",
        "flag is true",
        "type is identify",
    ]


def test_a_case_mapping_has_no_cases_nor_lists_of_its_own() -> None:
    mapping = parse_mapping(
        '[lists.p]\nkey = "k"\nvalue = "v"\n[[when]]\nfield = "p.t"\nis = "x"\n'
        "[when.constants]\nlevel = 1\n"
    )
    case = mapping.cases[0].mapping
    assert isinstance(case, RecordMapping)
    assert case.cases == () and case.lists == ()
    # the lists are objects before a case is chosen: a case may test a list's key
    assert mapping.apply({"p": [{"k": "t", "v": "x"}]}) == {"p": {"t": "x"}, "level": 1}


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("when = 3\n", "m.toml: when must be an array of tables ([[when]])"),
        ("when = [3]\n", "m.toml: [[when]] #1 must be a table"),
        (
            '[[when]]\nis = "a"\n',
            "m.toml: [[when]] #1 needs field (a path) and either is (a value or a list) or "
            "matches (a regular expression the whole value must match)",
        ),
        (
            '[[when]]\nfield = "t"\n',
            "m.toml: [[when]] #1 needs field (a path) and either is (a value or a list) or "
            "matches (a regular expression the whole value must match)",
        ),
        (
            '[[when]]\nfield = "t"\nis = "a"\nmatches = "a"\n',
            "m.toml: [[when]] #1 needs field (a path) and either is (a value or a list) or "
            "matches (a regular expression the whole value must match)",
        ),
        (
            '[[when]]\nfield = "t"\nis = "a"\n[[when]]\nfield = "t"\nis = 1.5\n',
            "m.toml: [[when]] #2 is must be a text, a whole number or a list of them",
        ),
        (
            '[[when]]\nfield = "t"\nis = []\n',
            "m.toml: [[when]] #1 is must be a text, a whole number or a list of them",
        ),
        (
            '[[when]]\nfield = "t"\nis = [["a"]]\n',
            "m.toml: [[when]] #1 is must be a text, a whole number or a list of them",
        ),
        (
            '[[when]]\nfield = "t"\nmatches = 3\n',
            "m.toml: [[when]] #1 matches must be a regular expression (a text)",
        ),
        (
            '[[when]]\nfield = "t"\nmatches = "("\n',
            "m.toml: [[when]] #1 matches is not a regular expression: missing ), "
            "unterminated subpattern at position 0",
        ),
        (
            '[[when]]\nfield = "a..b"\nis = "x"\n',
            "m.toml: [[when]] #1 field must be a field name or dotted path",
        ),
        (
            '[[when]]\nfield = "t"\nis = "a"\nwhen = 1\n',
            "m.toml: [[when]] #1 has unknown key(s) ['when']; expected some of ['constants', "
            "'destinations', 'field', 'fields', 'is', 'matches', 'properties']",
        ),
        (
            '[[when]]\nfield = "t"\nis = "a"\ndestinations = ["mixpanel"]\n',
            "m.toml: [[when]] #1 destinations must be a list of destinations from "
            "['kontagent', 'kissmetrics']",
        ),
        (
            '[[when]]\nfield = "t"\nis = "a"\ndestinations = "kissmetrics"\n',
            "m.toml: [[when]] #1 destinations must be a list of destinations from "
            "['kontagent', 'kissmetrics']",
        ),
        (
            '[[when]]\nfield = "t"\nis = "a"\n[when.constants]\nsource = "x"\n',
            "m.toml: [[when]] #1: [when.constants] 'source' is not a canonical field",
        ),
        (
            '[[when]]\nfield = "t"\nis = "a"\n[when.fields.time]\npath = "t"\nwall_clock = true\n',
            "m.toml: [[when]] #1: [when.fields] time wall_clock applies to an epoch: give its unit",
        ),
        (
            '[[when]]\nfield = "t"\nis = "a"\n[when.properties]\nflatten = true\n',
            "m.toml: [[when]] #1 properties needs from: the path(s) of the objects holding "
            "properties",
        ),
        (
            '[[when]]\nfield = "t"\nis = "a"\n[[when]]\nfield = "t"\nis = "b"\n'
            '[[when]]\nfield = "t"\nis = "c"\n[when.properties]\nfrom = "p"\nflatten = 1\n',
            "m.toml: [[when]] #3 properties.flatten must be true or false",
        ),
    ],
)
def test_case_errors_name_the_case(toml: str, expected: str) -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping(toml, "m.toml")
    assert str(error.value) == expected


def test_a_case_field_error_lists_the_canonical_fields() -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping('[[when]]\nfield = "t"\nis = "a"\n[when.fields]\nuser = "u"\n', "m.toml")
    assert str(error.value).startswith(
        "m.toml: [[when]] #1: [when.fields] 'user' is not a canonical field; expected one of "
        "['alias', 'birth_year', "
    )
