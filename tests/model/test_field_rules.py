"""The mapping language's field rules (``beaconflow.model.field_rules``): exact values.

Templates, ``unit = "auto"``, ``wall_clock`` epochs, a value map's ``"*"``, ``optional`` and
the errors of a table that cannot be a rule. The time options' properties are tested in
test_field_rules_fuzz.py; their use through a whole mapping in test_mapping.py.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from beaconflow.model.field_rules import FieldRule, RuleError, compile_rule
from beaconflow.model.mapping import MappingError, parse_mapping
from beaconflow.model.records import parse_time

LOS_ANGELES = ZoneInfo("America/Los_Angeles")

# templates ----------------------------------------------------------------------------------


def test_a_template_labels_itself_with_its_text() -> None:
    rule = compile_rule("event", {"template": "Viewed {name} Page"})
    assert rule.label == "event = 'Viewed {name} Page'"
    assert rule.join == (("name",),)
    assert rule.template == ("Viewed ", " Page")


@pytest.mark.parametrize(
    ("template", "record", "expected"),
    [
        ("Viewed {name} Page", {"name": "Home"}, "Viewed Home Page"),
        ("Viewed {name} Page", {"name": ""}, "Viewed  Page"),
        ("{context.page.title}", {"context": {"page": {"title": "Cart"}}}, "Cart"),
        ("{a}-{b}", {"a": "x", "b": 2}, "x-2"),
        ("{a}-{b}", {"a": 1.0, "b": 2.5}, "1-2.5"),  # a whole float without its .0
        ("{items.1.sku}", {"items": [{"sku": "a"}, {"sku": "b"}]}, "b"),
        ("{a}{a}", {"a": "x"}, "xx"),
        # literal braces and percent signs are text: only {path} is a placeholder
        ("100% {a} {}", {"a": "sure"}, "100% sure {}"),
        ("%s {a} %(b)s", {"a": "x"}, "%s x %(b)s"),
        ("{{a}}", {"a": "x"}, "{x}"),
        ("} {a} {", {"a": "x"}, "} x {"),
    ],
)
def test_a_template_fills_its_placeholders(
    template: str, record: dict[str, Any], expected: str
) -> None:
    assert compile_rule("event", {"template": template}).read(record) == expected


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"name": None},
        {"a": "x"},  # b is missing
        {"a": "x", "b": None},
        {"b": "y", "context": {"page": "not an object"}},
    ],
)
def test_a_template_with_a_missing_placeholder_gives_none(record: dict[str, Any]) -> None:
    assert compile_rule("event", {"template": "{a} and {b}"}).read(record) is None
    assert compile_rule("event", {"template": "Viewed {name} Page"}).read(record) is None


def test_a_template_is_mapped_after_it_is_filled() -> None:
    rule = compile_rule("event", {"template": "{kind}:{name}", "map": {"page:Home": "home_viewed"}})
    assert rule.read({"kind": "page", "name": "Home"}) == "home_viewed"
    assert rule.read({"kind": "page", "name": "Cart"}) == "page:Cart"


# unit = "auto" ------------------------------------------------------------------------------

AUTO = compile_rule("time", {"path": "t", "unit": "auto"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_710_144_020, 1_710_144_020),  # seconds
        (1_710_144_020_123, 1_710_144_020),  # milliseconds
        (1_710_144_020_123_456, 1_710_144_020),  # microseconds
        (1_710_144_020_123_456_789, 1_710_144_020),  # nanoseconds
        ("1710144020", 1_710_144_020),  # digits as text
        ("1710144020123", 1_710_144_020),
        (" 1710144020123456 ", 1_710_144_020),
        ("1710144020123456789", 1_710_144_020),
        (1_710_144_020.9, 1_710_144_020),
        (1_710_144_020_123.9, 1_710_144_020),
        ("1710144020123.5", 1_710_144_020),  # a number as text
        # the limits: below 1e11 seconds, below 1e14 milliseconds, below 1e17 microseconds
        (99_999_999_999, 99_999_999_999),
        (10**11, 100_000_000),
        (10**14 - 1, 99_999_999_999),
        (10**14, 100_000_000),
        (10**17 - 1, 99_999_999_999),
        (10**17, 100_000_000),
        (0, 0),
        # what an epoch cannot be is left for validation to refuse
        ("2024-03-11T20:24:00Z", "2024-03-11T20:24:00Z"),
        ("soon", "soon"),
        (True, True),
    ],
)
def test_auto_reads_the_unit_from_the_magnitude(value: object, expected: object) -> None:
    assert AUTO.read({"t": value}) == expected


def test_auto_is_a_unit_that_converts() -> None:
    assert AUTO.unit == 0
    assert AUTO.converts


# wall_clock ---------------------------------------------------------------------------------

#: (the wall clock in Los Angeles, read as if it were UTC; the instant in UTC)
WALL_CLOCK = [
    # 2024-01-15 12:00 PST is 20:00Z: eight hours later
    (1_705_320_000, 1_705_348_800),
    # 2024-07-04 12:00 PDT is 19:00Z: seven hours later
    (1_720_094_400, 1_720_119_600),
    # the day daylight saving time starts, 2024-03-10: 01:30 PST, then 03:30 PDT
    (1_710_034_200, 1_710_063_000),
    (1_710_041_400, 1_710_066_600),
]


@pytest.mark.parametrize(("wall", "utc"), WALL_CLOCK)
def test_a_wall_clock_epoch_is_read_in_the_rules_zone(wall: int, utc: int) -> None:
    rule = compile_rule(
        "time", {"path": "t", "unit": "s", "wall_clock": True, "zone": "America/Los_Angeles"}
    )
    value = rule.read({"t": wall})
    assert value == datetime.fromtimestamp(utc, UTC)
    assert parse_time(value) == utc
    assert utc - wall in (7 * 3600, 8 * 3600)


@pytest.mark.parametrize(("wall", "utc"), WALL_CLOCK)
def test_a_wall_clock_epoch_takes_the_zone_given_to_read(wall: int, utc: int) -> None:
    # --source-timezone: the rule names no zone
    rule = compile_rule("time", {"path": "t", "unit": "ms", "wall_clock": True})
    assert parse_time(rule.read({"t": wall * 1000}, LOS_ANGELES)) == utc
    assert parse_time(rule.read({"t": str(wall * 1000)}, LOS_ANGELES)) == utc


def test_a_wall_clock_epoch_without_a_zone_stays_utc() -> None:
    rule = compile_rule("time", {"path": "t", "unit": "auto", "wall_clock": True})
    assert rule.read({"t": 1_720_094_400}) == 1_720_094_400
    assert rule.read({"t": 1_720_094_400_000}) == 1_720_094_400


def test_the_rules_zone_wins_over_the_zone_given_to_read() -> None:
    rule = compile_rule("time", {"path": "t", "unit": "s", "wall_clock": True, "zone": "+02:00"})
    assert parse_time(rule.read({"t": 1_720_094_400}, LOS_ANGELES)) == 1_720_094_400 - 7200


def test_a_wall_clock_epoch_is_the_naive_time_in_the_zone() -> None:
    rule = compile_rule("time", {"path": "t", "unit": "s", "wall_clock": True})
    assert rule.read({"t": 1_720_094_400}, LOS_ANGELES) == datetime(
        2024, 7, 4, 12, tzinfo=LOS_ANGELES
    )
    offset = timezone(timedelta(hours=-7))
    assert rule.read({"t": 1_720_094_400}, offset) == datetime(2024, 7, 4, 12, tzinfo=offset)


def test_without_wall_clock_an_epoch_is_utc_whatever_the_zone() -> None:
    rule = compile_rule("time", {"path": "t", "unit": "s", "zone": "America/Los_Angeles"})
    assert rule.read({"t": 1_720_094_400}) == 1_720_094_400


# a value map's "*" --------------------------------------------------------------------------

GENDER = compile_rule("gender", {"path": "g", "map": {"female": "f", "male": "m", "*": "u"}})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("female", "f"),
        ("male", "m"),
        ("nonbinary", "u"),
        ("", "u"),
        ("Female", "u"),  # keys are case-sensitive
        (3, "u"),  # a number is looked up as its text
        # not a text nor a whole number: left as it is, for validation to name
        (True, True),
        (1.5, 1.5),
        ({"a": 1}, {"a": 1}),
        (None, None),
    ],
)
def test_a_value_maps_star_is_every_other_value(value: object, expected: object) -> None:
    assert GENDER.read({"g": value}) == expected


def test_a_number_key_is_matched_before_the_star() -> None:
    rule = compile_rule("gender", {"path": "g", "map": {"1": "m", "2": "f", "*": "u"}})
    assert [rule.read({"g": v}) for v in (1, "2", 3)] == ["m", "f", "u"]


# optional -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "optional"),
    [
        ({"path": "c", "optional": True}, True),
        ({"path": "c", "optional": False}, False),
        ({"path": "c"}, False),
        ({"join": ["a", "b"], "optional": True}, True),
        ({"template": "{a}", "optional": True}, True),
        ("c", False),
        (["c", "d"], False),
    ],
)
def test_optional_in_the_table(spec: object, optional: bool) -> None:
    rule = compile_rule("city", spec)
    assert rule.optional is optional


def test_optional_changes_nothing_read() -> None:
    rule = compile_rule("city", {"path": "loc.city", "optional": True})
    assert rule.read({"loc": {"city": "Oslo"}}) == "Oslo"
    assert not rule.converts
    assert rule == FieldRule("city", paths=(("loc", "city"),), optional=True)


# errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canonical", "spec", "message"),
    [
        ("event", {"template": 3}, "template must be a text with {path} placeholders"),
        ("event", {"template": "no placeholder"}, "template must be a text with {path}"),
        ("event", {"template": "{}"}, "template must be a text with {path} placeholders"),
        ("event", {"template": "{a..b}"}, "must be a field name or dotted path"),
        ("event", {"template": "{a}", "path": "a"}, "needs a path, a join or a template"),
        (
            "time",
            {"path": "t", "wall_clock": True},
            "wall_clock applies to an epoch: give its unit",
        ),
        (
            "time",
            {"path": "t", "wall_clock": True, "format": "%Y"},
            "wall_clock applies to an epoch: give its unit",
        ),
        ("time", {"path": "t", "unit": "s", "wall_clock": "yes"}, "wall_clock must be true or"),
        ("value", {"path": "v", "wall_clock": True}, "['wall_clock'] apply to time only"),
        ("city", {"path": "c", "optional": "yes"}, "optional must be true or false"),
        ("city", {"path": "c", "optional": 1}, "optional must be true or false"),
        ("time", {"path": "t", "unit": "Auto"}, "unit must be one of"),
    ],
)
def test_a_rule_that_cannot_be_says_why(canonical: str, spec: object, message: str) -> None:
    with pytest.raises(RuleError) as error:
        compile_rule(canonical, spec)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[fields.event]\ntemplate = 3\n",
            "m.toml: [fields] event template must be a text with {path} placeholders, or a "
            "list of them (the first whose paths all have a value wins): 'Viewed {name} Page'",
        ),
        (
            '[fields.time]\npath = "t"\nwall_clock = true\n',
            "m.toml: [fields] time wall_clock applies to an epoch: give its unit",
        ),
        (
            '[fields.city]\npath = "c"\noptional = "yes"\n',
            "m.toml: [fields] city optional must be true or false",
        ),
    ],
)
def test_a_mappings_rule_error_names_the_file_table_and_key(toml: str, expected: str) -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping(toml, "m.toml")
    assert str(error.value) == expected


def test_a_list_of_templates_takes_the_first_whose_paths_all_have_a_value() -> None:
    rule = compile_rule(
        "event", {"template": ["Viewed {category} {name} Page", "Viewed {name} Page"]}
    )
    assert rule.label == "event = 'Viewed {category} {name} Page' or 'Viewed {name} Page'"
    assert rule.reader({"category": "Docs", "name": "Intro"}, None) == "Viewed Docs Intro Page"
    assert rule.reader({"name": "Intro"}, None) == "Viewed Intro Page"
    assert rule.reader({"category": "Docs"}, None) is None
    assert {".".join(map(str, p)) for p in rule.sources} == {"category", "name"}


def test_a_format_with_a_bad_directive_is_refused_when_the_mapping_is_read() -> None:
    with pytest.raises(RuleError, match="'Q' is a bad directive"):
        compile_rule("time", {"path": "t", "format": "%Q-%m"})


@pytest.mark.parametrize("scale", [math.nan, math.inf])
def test_a_scale_that_is_not_finite_is_refused(scale: float) -> None:
    with pytest.raises(RuleError, match="scale must be a finite number"):
        compile_rule("value", {"path": "v", "scale": scale})
