"""The canonical record: parsing a log line, reading its time, validating it, its identity.

Pure unit tests of ``beaconflow.model.records``; the clock is injected as a fixed epoch.
Run with ``.venv/bin/python -m pytest tests/model/test_records.py -q``.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from beaconflow.model import records
from beaconflow.model.records import (
    EARLIEST,
    FIELDS,
    MAX_DEPTH,
    Event,
    RecordError,
    identity,
    parse_line,
    parse_time,
    validate,
)

#: The injected "current time" of every validation: 2027-01-15T08:00:00Z.
NOW = 1_800_000_000
#: 2025-06-01T12:00:00Z.
JUNE_FIRST = 1_748_779_200

#: The schema's own definitions, in a stable order for parametrized tests.
STRING_FIELDS = sorted(records.STRING_FIELDS)
INT_FIELDS = sorted(records.INT_FIELDS)


def _record(**fields: Any) -> dict[str, Any]:
    """A valid canonical record, with ``fields`` added or replacing the defaults."""
    record: dict[str, Any] = {
        "event_id": "oq-1",
        "time": "2025-06-01T12:00:00Z",
        "user_id": 100000001,
        "event": "application_installed",
    }
    record.update(fields)
    return record


def _refused(error: pytest.ExceptionInfo[RecordError], field: str | None, fragment: str) -> None:
    assert error.value.field == field
    assert fragment in error.value.rule
    assert fragment in str(error.value)


def _nested(depth: int, kind: str) -> str:
    """A JSON object whose ``"a"`` holds ``depth - 1`` more levels of objects or arrays."""
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return '{"a":' + "[" * (depth - 1) + "1" + "]" * (depth - 1) + "}"


# parse_line -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "{",
        '{"a": 1',
        '{"a": 1,}',
        "{'a': 1}",
        '{"a": 01}',
        "{a: 1}",
        "not json",
        '{"a": 1} {"b": 2}',
        '{"a": 1} trailing',
        '{"a": "unterminated}',
        '{"a": tru}',
        '{"a": undefined}',
        '\ufeff{"a": 1}',
    ],
)
def test_parse_line_refuses_malformed_json(line: str) -> None:
    with pytest.raises(RecordError) as error:
        parse_line(line)
    _refused(error, None, "malformed JSON")


@pytest.mark.parametrize(
    "line",
    [
        '{"time": NaN}',
        '{"time": Infinity}',
        '{"time": -Infinity}',
        '{"properties": {"score": NaN}}',
        '{"recipients": [1, Infinity]}',
        "NaN",
        "[-Infinity]",
    ],
)
def test_parse_line_refuses_nan_and_infinity_literals(line: str) -> None:
    with pytest.raises(RecordError) as error:
        parse_line(line)
    _refused(error, None, "is not a number JSON allows")


def test_parse_line_keeps_nan_and_infinity_as_strings() -> None:
    assert parse_line('{"a": "NaN", "b": "Infinity"}') == {"a": "NaN", "b": "Infinity"}


@pytest.mark.parametrize(
    ("line", "type_name"),
    [
        ("[]", "list"),
        ('[{"event": "apa"}]', "list"),
        ("1", "int"),
        ("1.5", "float"),
        ("-0", "int"),
        ('"{}"', "str"),
        ("true", "bool"),
        ("false", "bool"),
        ("null", "NoneType"),
    ],
)
def test_parse_line_refuses_anything_but_an_object(line: str, type_name: str) -> None:
    with pytest.raises(RecordError) as error:
        parse_line(line)
    _refused(error, None, f"a record must be a JSON object, got {type_name}")


@pytest.mark.parametrize("kind", ["object", "array"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 2, 100, 500, 10_000])
def test_parse_line_refuses_deep_nesting_without_recursion_error(kind: str, depth: int) -> None:
    # 10,000 levels exceed the interpreter's recursion limit inside json itself: the
    # RecursionError must come out as a RecordError, like any other bad line.
    with pytest.raises(RecordError) as error:
        parse_line(_nested(depth, kind))
    _refused(error, None, f"nested deeper than {MAX_DEPTH} levels")


@pytest.mark.parametrize("kind", ["array", "object"])
def test_parse_line_refuses_a_bare_deep_array_or_object(kind: str) -> None:
    opening, closing = ("[", "]") if kind == "array" else ('{"a":', "}")
    line = opening * 10_000 + ("" if kind == "array" else "1") + closing * 10_000
    with pytest.raises(RecordError):
        parse_line(line)


@pytest.mark.parametrize("kind", ["object", "array"])
def test_parse_line_accepts_moderate_nesting(kind: str) -> None:
    parsed = parse_line(_nested(10, kind))
    assert isinstance(parsed, dict)
    assert set(parsed) == {"a"}


def test_parse_line_accepts_a_canonical_record() -> None:
    line = json.dumps(_record(properties={"plot": 3, "crop": "pear"}, recipients=[1, 2]))
    assert parse_line(line) == _record(properties={"plot": 3, "crop": "pear"}, recipients=[1, 2])


def test_parse_line_ignores_surrounding_whitespace() -> None:
    assert parse_line('  \t{"a": 1}\r\n') == {"a": 1}


@pytest.mark.parametrize(
    "line",
    [
        '{"a": "x\x00y"}',  # a raw NUL inside a string is a control character
        '{"a": 1}\x00',
        '\x00{"a": 1}',
        '{"a"\x00: 1}',
    ],
)
def test_parse_line_refuses_raw_nul_bytes(line: str) -> None:
    with pytest.raises(RecordError) as error:
        parse_line(line)
    _refused(error, None, "malformed JSON")


@pytest.mark.parametrize("line", ['{"name": "\\ud800"}', '{"\\udfff": 1}', '{"a": ["x\\uDC00"]}'])
def test_parse_line_refuses_lone_surrogate_escapes(line: str) -> None:
    # legal JSON, but not text: no service can be sent it, and Beam's coders refuse it
    with pytest.raises(RecordError, match="lone surrogate"):
        parse_line(line)


def test_parse_line_accepts_an_escaped_nul() -> None:
    assert parse_line('{"city": "x\\u0000y"}') == {"city": "x\x00y"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"city": "Zürich"}', {"city": "Zürich"}),
        ('{"city": "東京", "name": "😀"}', {"city": "東京", "name": "😀"}),
        ('{"city": "\\u00e9t\\u00e9"}', {"city": "été"}),
        ('{"name": "\\ud83d\\ude00"}', {"name": "😀"}),
        ('{"名前": "value"}', {"名前": "value"}),
        ('{"name": "\\u2028\\u2029"}', {"name": "\u2028\u2029"}),
    ],
)
def test_parse_line_decodes_unicode(line: str, expected: dict[str, Any]) -> None:
    assert parse_line(line) == expected


def test_a_lone_surrogate_still_has_an_identity() -> None:
    # parse_line refuses such text, but identity() must not fail on any dict it is given
    record = {"time": 1700000000, "user_id": 1, "event": "e", "city": "\ud800"}
    assert re.fullmatch(r"[0-9a-f]{32}", identity(record))


# parse_time -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01T00:00:00Z", 1_704_067_200),
        ("2024-01-01T00:00:00+00:00", 1_704_067_200),
        ("2024-01-01T02:00:00+02:00", 1_704_067_200),
        ("2023-12-31T19:00:00-05:00", 1_704_067_200),
        ("2024-01-01T05:30:00+05:30", 1_704_067_200),
        ("2024-01-01T00:00:00.999Z", 1_704_067_200),
        ("2024-01-01T00:00:00.999999+00:00", 1_704_067_200),
        ("2024-01-01 00:00:00Z", 1_704_067_200),
        ("2025-06-01T12:00:00Z", JUNE_FIRST),
    ],
)
def test_parse_time_reads_iso_8601_with_an_offset(value: str, expected: int) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    "value",
    ["2024-01-01T00:00:00", "2024-01-01T00:00:00.5", "2024-01-01", "20240101", "2024-01-01 12:00"],
)
def test_parse_time_refuses_naive_iso(value: str) -> None:
    with pytest.raises(RecordError) as error:
        parse_time(value)
    _refused(error, "time", "offset or Z")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_700_000_000, 1_700_000_000),
        (0, 0),
        (-1, -1),
        (1_700_000_000.0, 1_700_000_000),
        (1_700_000_000.9, 1_700_000_000),
        (1_700_000_000.1, 1_700_000_000),
        (1_747_702_457.133, 1_747_702_457),
        # truncation is towards zero, not down: -1700000000.9 is -1700000000
        (-1_700_000_000.9, -1_700_000_000),
        (-0.5, 0),
        (1e12, 1_000_000_000_000),
    ],
)
def test_parse_time_reads_epoch_seconds_truncated(value: float, expected: int) -> None:
    seconds = parse_time(value)
    assert seconds == expected
    assert type(seconds) is int


@pytest.mark.parametrize("value", [True, False])
def test_parse_time_refuses_bools(value: bool) -> None:
    with pytest.raises(RecordError) as error:
        parse_time(value)
    _refused(error, "time", "not a bool")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_parse_time_refuses_non_finite_numbers(value: float) -> None:
    with pytest.raises(RecordError) as error:
        parse_time(value)
    _refused(error, "time", "must be a finite number of seconds")


@pytest.mark.parametrize(
    "value",
    ["1700000000", "1700000000.9", "-1700000000", "0", "17000000001", " 1700000000"],
)
def test_parse_time_refuses_digit_strings(value: str) -> None:
    with pytest.raises(RecordError) as error:
        parse_time(value)
    _refused(error, "time", "offset or Z")


@pytest.mark.parametrize(
    "value",
    ["", "yesterday", "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z", "NaN", "now", "\x00"],
)
def test_parse_time_refuses_other_text(value: str) -> None:
    with pytest.raises(RecordError) as error:
        parse_time(value)
    _refused(error, "time", "offset or Z")


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(None, "NoneType"), ([], "list"), ({}, "dict"), (b"1700000000", "bytes")],
)
def test_parse_time_refuses_other_types(value: object, type_name: str) -> None:
    with pytest.raises(RecordError) as error:
        parse_time(value)
    _refused(error, "time", f"not {type_name}")


def test_parse_time_reads_aware_datetimes() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert parse_time(datetime(2024, 1, 1, 2, 0, 0, 999_999, tzinfo=plus_two)) == 1_704_067_200


def test_parse_time_refuses_naive_datetimes() -> None:
    with pytest.raises(RecordError) as error:
        parse_time(datetime(2024, 1, 1))
    _refused(error, "time", "needs a time zone")


# validate: required fields ----------------------------------------------------------------------


def test_validate_builds_the_event() -> None:
    record = _record(value=120, properties={"crop": "pear"}, unknown_field="ignored", city=None)
    event = validate(record, now=NOW, source="game_events.jsonl:7")
    assert event == Event(
        key=identity(record),
        time=JUNE_FIRST,
        user_id=100000001,
        name="application_installed",
        fields={"value": 120, "properties": {"crop": "pear"}},
        source="game_events.jsonl:7",
    )
    assert event.get("value") == 120
    assert event.get("city") is None
    assert event.get("unknown_field") is None


def test_validate_keeps_every_canonical_field() -> None:
    optional = {
        **{name: f"text-{name}" for name in STRING_FIELDS},
        **{name: 7 for name in INT_FIELDS},
        "installed": False,
        "recipients": [1, "2"],
        "goal_counts": {"gc1": 1},
        "properties": {"a": 1},
    }
    assert set(optional) | set(records.CORE_FIELDS) == FIELDS
    assert sorted(optional) == list(records.OPTIONAL_FIELDS)
    event = validate(_record(**optional), now=NOW)
    assert dict(event.fields) == optional


@pytest.mark.parametrize("field", ["time", "user_id", "event"])
@pytest.mark.parametrize("how", ["missing", "None"])
def test_validate_requires_time_user_and_event(field: str, how: str) -> None:
    record = _record()
    if how == "missing":
        del record[field]
    else:
        record[field] = None
    with pytest.raises(RecordError) as error:
        validate(record, now=NOW)
    _refused(error, field, "is required")


@pytest.mark.parametrize("user_id", ["", True, False, 1.5, 100.0, [1], {"id": 1}])
def test_validate_refuses_bad_user_ids(user_id: object) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(user_id=user_id), now=NOW)
    _refused(error, "user_id", "must be a non-empty string or an integer")


@pytest.mark.parametrize("user_id", [0, 1, -5, "100000001", "bob@example.com"])
def test_validate_accepts_string_and_integer_user_ids(user_id: str | int) -> None:
    assert validate(_record(user_id=user_id), now=NOW).user_id == user_id


@pytest.mark.parametrize("name", ["", 1, True, ["apa"], {"n": "apa"}, 1.5])
def test_validate_refuses_bad_event_names(name: object) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(event=name), now=NOW)
    _refused(error, "event", "must be a non-empty string")


@pytest.mark.parametrize(
    ("event_id", "type_name"),
    [(True, "bool"), (False, "bool"), (1.5, "float"), ([1], "list"), ({"id": 1}, "dict")],
)
def test_validate_refuses_bad_event_ids(event_id: object, type_name: str) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(event_id=event_id), now=NOW)
    _refused(error, "event_id", f"must be a string, not {type_name}")


@pytest.mark.parametrize("event_id", ["oq-7-0000001", "", 0, 42, -1, None])
def test_validate_accepts_string_integer_and_absent_event_ids(event_id: object) -> None:
    validate(_record(event_id=event_id), now=NOW)


# validate: time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "time",
    ["2008-12-31T23:59:59Z", "2009-01-01T00:59:59+01:00", EARLIEST - 1, 0, -1, EARLIEST - 0.5],
)
def test_validate_refuses_times_before_2009(time: object) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(time=time), now=NOW)
    _refused(error, "time", "is before 2009-01-01")


@pytest.mark.parametrize(
    "time", ["2009-01-01T00:00:00Z", "2009-01-01T01:00:00+01:00", EARLIEST, EARLIEST + 0.9]
)
def test_validate_accepts_the_first_second_of_2009(time: object) -> None:
    assert validate(_record(time=time), now=NOW).time == EARLIEST


@pytest.mark.parametrize(
    ("time", "seconds"),
    [
        (NOW + 1, NOW + 1),
        (NOW + 1.0, NOW + 1),
        ("2027-01-15T08:00:01Z", NOW + 1),
        ("2027-01-15T09:00:01+01:00", NOW + 1),
        (4_000_000_000, 4_000_000_000),
    ],
)
def test_validate_refuses_future_times(time: object, seconds: int) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(time=time), now=NOW)
    _refused(error, "time", f"is in the future: {seconds} > now ({NOW})")


@pytest.mark.parametrize("time", [NOW, NOW + 0.9, "2027-01-15T08:00:00Z"])
def test_validate_accepts_now(time: object) -> None:
    assert validate(_record(time=time), now=NOW).time == NOW


def test_validate_compares_with_the_injected_clock() -> None:
    record = _record(time=JUNE_FIRST)
    assert validate(record, now=JUNE_FIRST).time == JUNE_FIRST
    with pytest.raises(RecordError):
        validate(record, now=JUNE_FIRST - 1)


@pytest.mark.parametrize(
    ("time", "fragment"),
    [
        (True, "not a bool"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        ("1700000000", "offset or Z"),
        ("2025-06-01T12:00:00", "offset or Z"),
        ([JUNE_FIRST], "not list"),
    ],
)
def test_validate_refuses_unreadable_times(time: object, fragment: str) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(time=time), now=NOW)
    _refused(error, "time", fragment)


# validate: optional fields ----------------------------------------------------------------------


@pytest.mark.parametrize("field", STRING_FIELDS)
@pytest.mark.parametrize(
    ("value", "type_name"),
    [(1, "int"), (1.5, "float"), (True, "bool"), (["x"], "list"), ({"x": 1}, "dict")],
)
def test_validate_refuses_non_strings_in_string_fields(
    field: str, value: object, type_name: str
) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(**{field: value}), now=NOW)
    _refused(error, field, f"must be a string, not {type_name}")


@pytest.mark.parametrize("field", STRING_FIELDS)
@pytest.mark.parametrize("value", ["", "x", "with space & = % + , #", "東京"])
def test_validate_accepts_strings_in_string_fields(field: str, value: str) -> None:
    assert validate(_record(**{field: value}), now=NOW).get(field) == value


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (True, "bool"),
        (False, "bool"),
        ("1", "str"),
        (1.0, "float"),
        (1.5, "float"),
        ([1], "list"),
        ({"n": 1}, "dict"),
    ],
)
def test_validate_refuses_non_integers_in_integer_fields(
    field: str, value: object, type_name: str
) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(**{field: value}), now=NOW)
    _refused(error, field, f"must be an integer, not {type_name}")


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("value", [0, 1, -1, 10**20])
def test_validate_accepts_integers_in_integer_fields(field: str, value: int) -> None:
    assert validate(_record(**{field: value}), now=NOW).get(field) == value


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(1, "int"), (0, "int"), ("true", "str"), ("1", "str"), (1.0, "float"), ([True], "list")],
)
def test_validate_refuses_non_bool_installed(value: object, type_name: str) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(installed=value), now=NOW)
    _refused(error, "installed", f"must be true or false, not {type_name}")


@pytest.mark.parametrize("value", [True, False])
def test_validate_keeps_installed_false(value: bool) -> None:
    assert validate(_record(installed=value), now=NOW).get("installed") is value


@pytest.mark.parametrize(
    "value",
    ["1,2", 1, {"1": 2}, [True], [1.5], [None], [[1]], [{"id": 1}], [1, False]],
)
def test_validate_refuses_bad_recipients(value: object) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(recipients=value), now=NOW)
    _refused(error, "recipients", "must be a list of user ids")


@pytest.mark.parametrize("value", [[], [1], ["1"], [1, "2", 3]])
def test_validate_accepts_lists_of_user_ids(value: list[int | str]) -> None:
    assert validate(_record(recipients=value), now=NOW).get("recipients") == value


@pytest.mark.parametrize(
    "value",
    [
        [],
        [["gc1", 1]],
        "gc1=1",
        1,
        {"gc1": "1"},
        {"gc1": True},
        {"gc1": 1.5},
        {"gc1": 1.0},
        {"gc1": None},
        {"gc1": [1]},
        {"gc1": 1, "gc2": {"n": 1}},
    ],
)
def test_validate_refuses_bad_goal_counts(value: object) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(goal_counts=value), now=NOW)
    _refused(error, "goal_counts", "must be an object of goal name -> integer count")


@pytest.mark.parametrize("value", [{}, {"gc1": 1}, {"gc1": 0, "gc4": -3}])
def test_validate_accepts_goal_counts(value: dict[str, int]) -> None:
    assert validate(_record(goal_counts=value), now=NOW).get("goal_counts") == value


@pytest.mark.parametrize(
    "value",
    [
        [],
        [["a", 1]],
        "a=1",
        1,
        {"a": {"b": 1}},
        {"a": {}},
        {"a": []},
        {"a": [1]},
        {"a": None},
        {"a": math.nan},
        {"a": math.inf},
        {"a": -math.inf},
        {"ok": 1, "bad": None},
    ],
)
def test_validate_refuses_bad_properties(value: object) -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(properties=value), now=NOW)
    _refused(error, "properties", "must be an object of name -> string, number or bool")


def test_validate_accepts_scalar_properties() -> None:
    properties = {"s": "x", "empty": "", "i": 0, "f": 1.5, "t": True, "b": False}
    assert validate(_record(properties=properties), now=NOW).get("properties") == properties


# identity ---------------------------------------------------------------------------------------


def test_identity_is_32_hex() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", identity(_record()))
    assert re.fullmatch(r"[0-9a-f]{32}", identity(_record(event_id=None)))


@pytest.mark.parametrize("event_id", ["oq-7-0000001", 42, "東京-1"])
@pytest.mark.parametrize(
    "other",
    [
        {"time": "2025-06-02T00:00:00Z"},
        {"user_id": 2},
        {"event": "application_removed", "value": 5},
        {"properties": {"a": 1}},
    ],
)
def test_identity_is_the_event_id_whatever_the_content(
    event_id: str | int, other: dict[str, Any]
) -> None:
    first = _record(event_id=event_id)
    second = _record(event_id=event_id, **other)
    assert identity(first) == identity(second)
    assert validate(first, now=NOW).key == validate(second, now=NOW).key


def test_different_event_ids_are_different_events() -> None:
    assert identity(_record(event_id="a")) != identity(_record(event_id="b"))


@pytest.mark.parametrize("absent", ["missing", None, ""])
def test_without_event_id_the_same_content_in_any_order_is_the_same_event(absent: str) -> None:
    record = _record(
        time=1_748_779_200.5, properties={"crop": "pear", "plot": 3}, recipients=[2, 1]
    )
    if absent == "missing":
        del record["event_id"]
    else:
        record["event_id"] = absent
    reordered = {key: record[key] for key in reversed(list(record))}
    reordered["properties"] = {"plot": 3, "crop": "pear"}
    assert list(reordered) != list(record)
    assert identity(reordered) == identity(record)
    assert validate(reordered, now=NOW).key == validate(record, now=NOW).key


@pytest.mark.parametrize("absent", ["missing", None, ""])
@pytest.mark.parametrize(
    "change",
    [
        {"time": "2025-06-01T12:00:01Z"},
        {"time": 1_748_779_200},  # the same second written differently is other content
        {"user_id": "100000001"},
        {"user_id": 100000002},
        {"event": "application_removed"},
        {"value": 0},
        {"recipients": [1, 2]},
        {"properties": {"crop": "apple"}},
        {"unknown_field": 1},
    ],
)
def test_without_event_id_different_content_is_a_different_event(
    absent: str, change: dict[str, Any]
) -> None:
    record = _record(properties={"crop": "pear"}, recipients=[2, 1])
    if absent == "missing":
        del record["event_id"]
    else:
        record["event_id"] = absent
    changed = {**record, **change}
    assert identity(changed) != identity(record)


def test_an_empty_event_id_is_not_an_id() -> None:
    # If "" were an id, every record with an empty id would be one event.
    first = _record(event_id="", user_id=1)
    second = _record(event_id="", user_id=2)
    assert identity(first) != identity(second)
    assert identity(first) != identity(_record(event_id="x", user_id=1))


def test_identity_does_not_depend_on_the_source() -> None:
    record = _record(event_id=None)
    assert (
        validate(record, now=NOW, source="a.jsonl:1").key
        == validate(record, now=NOW, source="b.parquet:9").key
    )


def test_validate_accepts_an_aware_datetime_without_event_id() -> None:
    record = {"time": datetime(2025, 6, 1, 12, tzinfo=UTC), "user_id": 1, "event": "apa"}
    assert validate(record, now=NOW).time == JUNE_FIRST


def test_validate_accepts_an_aware_datetime_with_event_id() -> None:
    record = _record(time=datetime(2025, 6, 1, 12, tzinfo=UTC))
    assert validate(record, now=NOW).time == JUNE_FIRST


def test_a_byte_order_mark_is_named() -> None:
    with pytest.raises(RecordError, match="Unexpected UTF-8 BOM"):
        parse_line('\ufeff{"a": 1}')


def test_deep_nesting_is_refused_however_the_brackets_are_spread() -> None:
    # the depth walk runs only for texts with more than MAX_DEPTH brackets: at the edge
    assert parse_line('{"a": ' + "[" * 31 + "]" * 31 + "}")["a"]
    with pytest.raises(RecordError, match="nested deeper than 32"):
        parse_line('{"a": ' + "[" * 32 + "]" * 32 + "}")
    # brackets inside strings only make the walk run; they nest nothing
    assert parse_line(json.dumps({"a": "[" * 40, "b": {"c": [1]}}))["b"] == {"c": [1]}


def test_every_field_has_one_rule() -> None:
    kinds = (
        records.STRING_FIELDS,
        records.INT_FIELDS,
        {"installed"},
        set(records.OBJECT_FIELDS),
        set(records.LIST_FIELDS),
        set(records.CORE_FIELDS),
    )
    assert set().union(*kinds) == records.FIELDS
    assert sum(len(kind) for kind in kinds) == len(records.FIELDS), "a field with two rules"


@pytest.mark.parametrize(
    ("time", "unit"),
    [(1_710_144_020_123, "ms"), (1_710_144_020_123_456, "us"), (1_710_144_020_123_456_789, "ns")],
)
def test_an_epoch_in_a_smaller_unit_gets_a_hint(time: int, unit: str) -> None:
    with pytest.raises(RecordError, match=f'is in the future.*as {unit}.*unit = "{unit}"'):
        validate(_record(time=time), now=NOW)


def test_a_time_merely_in_the_future_gets_no_hint() -> None:
    with pytest.raises(RecordError) as error:
        validate(_record(time=NOW + 60), now=NOW)
    assert "unit" not in str(error.value)


def test_a_bad_property_names_its_key() -> None:
    with pytest.raises(RecordError, match="'product' is dict"):
        validate(_record(properties={"sku": "a", "product": {"id": 1}}), now=NOW)
    with pytest.raises(RecordError, match="'coupon' is null"):
        validate(_record(properties={"coupon": None}), now=NOW)
