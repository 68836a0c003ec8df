"""One source record to its event and messages (``beaconflow.model.convert.convert_record``).

Errors name the source path a mapping read the field from; a Kontagent-only problem names
it too while the KISSmetrics message is still built; ``only`` restricts the destinations.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from beaconflow.model.convert import convert_record
from beaconflow.model.events import Problem
from beaconflow.model.mapping import RecordMapping, parse_mapping
from beaconflow.model.message import DESTINATIONS, Destination
from beaconflow.model.records import RecordError

NOW = 1_800_000_000
T0 = 1_750_000_000

SEGMENT_LIKE = parse_mapping(
    """
[fields]
user_id = ["userId", "anonymousId"]
time = "ts"
event = "event"
[properties]
from = ["properties"]
"""
)


def _convert(
    record: dict[str, Any],
    mapping: RecordMapping = SEGMENT_LIKE,
    destinations: tuple[Destination, ...] = DESTINATIONS,
    only: object = None,
) -> Any:
    return convert_record(
        record, mapping, now=NOW, source_name="s.jsonl:3", destinations=destinations, only=only
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"ts": T0, "event": "level_up"},
            "field 'user_id': is required (read from userId or anonymousId)",
        ),
        (
            {"ts": T0, "event": "level_up", "userId": True},
            "field 'user_id': must be a non-empty string or an integer "
            "(read from userId or anonymousId)",
        ),
        ({"userId": 1, "event": "level_up"}, "field 'time': is required (read from ts)"),
        ({"userId": 1, "ts": T0}, "field 'event': is required (read from event)"),
        (
            {"userId": 1, "ts": "yesterday", "event": "level_up"},
            "field 'time': must be ISO-8601 with an offset or Z, or epoch seconds, got "
            "'yesterday' (read from ts)",
        ),
        # a field no rule reads is named as it is
        (
            {"userId": 1, "ts": T0, "event": "level_up", "level": "3"},
            "field 'level': must be an integer, not str",
        ),
    ],
)
def test_a_record_error_names_the_source_path(record: dict[str, Any], message: str) -> None:
    with pytest.raises(RecordError) as error:
        _convert(record)
    assert str(error.value) == message
    assert error.value.field == message.split("'")[1]


def test_a_conversion_error_names_the_source_path() -> None:
    mapping = parse_mapping(
        '[fields.time]\npath = "event_time"\nformat = "%Y-%m-%d %H:%M:%S"\nzone = "UTC"\n'
    )
    with pytest.raises(RecordError) as error:
        _convert({"event_time": "11/03/2024", "user_id": 1, "event": "apa"}, mapping)
    assert str(error.value) == (
        "field 'time': '11/03/2024' does not match the format '%Y-%m-%d %H:%M:%S' "
        "(read from event_time)"
    )


def test_a_properties_error_names_its_sources() -> None:
    # a [properties] table leaves bad values out; a constant's are validated as they are
    mapping = parse_mapping("[constants]\nproperties = { a = [1] }\n")
    with pytest.raises(RecordError) as error:
        _convert({"user_id": 1, "time": T0, "event": "apa"}, mapping)
    assert str(error.value) == (
        "field 'properties': must be an object of name -> string, number or bool; 'a' is list"
    )


def test_a_case_names_its_own_source_path() -> None:
    mapping = parse_mapping(
        '[fields]\nuser_id = "userId"\ntime = "ts"\n'
        '[[when]]\nfield = "type"\nis = "alias"\n[when.fields]\nuser_id = "previousId"\n'
        '[when.constants]\nevent = "alias"\n'
    )
    with pytest.raises(RecordError) as error:
        _convert({"type": "alias", "ts": T0, "userId": 1}, mapping)
    assert str(error.value) == "field 'user_id': is required (read from previousId)"


def test_a_kontagent_only_problem_names_the_source_path_and_kissmetrics_still_goes() -> None:
    record = {"ts": T0, "anonymousId": "anon-1", "event": "level_up", "properties": {"a": 1}}
    converted = _convert(record)
    assert converted.mapped.problems == (
        Problem(
            "kontagent",
            "evt",
            "evt: parameter 's' (user_id, read from userId or anonymousId): must be a numeric "
            "user id, got 'anon-1'",
        ),
    )
    assert [(m.destination, m.kind) for m in converted.mapped.messages] == [("kissmetrics", "e")]
    assert dict(converted.mapped.messages[0].params) == {
        "_d": "1",
        "_n": "level_up",
        "_p": "anon-1",
        "_t": str(T0),
        "a": "1",
    }
    # the record is kept for the dead letter and a replay
    assert converted.mapped.record is record
    # the source fields the rules read whole are renamed away
    assert converted.canonical == {
        "user_id": "anon-1",
        "time": T0,
        "event": "level_up",
        "properties": {"a": 1},
    }


def test_without_a_mapping_a_problem_names_no_source_path() -> None:
    converted = _convert({"time": T0, "user_id": "anon-1", "event": "level_up"}, RecordMapping())
    assert [p.reason for p in converted.mapped.problems] == [
        "evt: parameter 's': must be a numeric user id, got 'anon-1'"
    ]


def test_a_hashing_mapping_has_no_problem() -> None:
    mapping = parse_mapping(
        '[fields]\nuser_id = "anonymousId"\n[options]\nkontagent_user_ids = "hash"\n'
    )
    converted = _convert({"time": T0, "anonymousId": "anon-1", "event": "level_up"}, mapping)
    assert converted.mapped.problems == ()
    assert [m.destination for m in converted.mapped.messages] == ["kontagent", "kissmetrics"]


@pytest.mark.parametrize(
    ("destinations", "only", "expected"),
    [
        (DESTINATIONS, None, ["kontagent", "kissmetrics"]),
        (DESTINATIONS, "kissmetrics", ["kissmetrics"]),
        (DESTINATIONS, "kontagent", ["kontagent"]),
        (("kontagent",), "kissmetrics", []),  # not enabled in this run
        (("kissmetrics",), None, ["kissmetrics"]),
    ],
)
def test_only_restricts_the_destinations(
    destinations: tuple[Destination, ...], only: object, expected: list[str]
) -> None:
    record = {"ts": T0, "userId": 7, "event": "level_up"}
    converted = _convert(record, destinations=destinations, only=only)
    assert [m.destination for m in converted.mapped.messages] == expected
    assert converted.mapped.problems == ()


def test_only_keeps_a_problem_of_its_destination_alone() -> None:
    record = {"ts": T0, "anonymousId": "anon-1", "event": "level_up"}
    kissmetrics = _convert(record, only="kissmetrics").mapped
    assert (kissmetrics.problems, len(kissmetrics.messages)) == ((), 1)
    kontagent = _convert(record, only="kontagent").mapped
    assert ([p.destination for p in kontagent.problems], kontagent.messages) == (["kontagent"], ())


def test_a_cases_destinations_apply() -> None:
    mapping = parse_mapping(
        '[[when]]\nfield = "type"\nis = "group"\ndestinations = []\n'
        '[[when]]\nfield = "type"\nis = "identify"\ndestinations = ["kissmetrics"]\n'
    )
    base = {"time": T0, "user_id": 7, "event": "level_up"}
    group = _convert({**base, "type": "group"}, mapping).mapped
    assert (group.messages, group.problems) == ((), ())  # counted as unrouted
    identify = _convert({**base, "type": "identify"}, mapping).mapped
    assert [(m.destination, m.kind) for m in identify.messages] == [("kissmetrics", "e")]
    other = _convert({**base, "type": "track"}, mapping).mapped
    assert [m.destination for m in other.messages] == ["kontagent", "kissmetrics"]


def test_matched_and_left_out_are_counted() -> None:
    matched: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
    record = {"ts": T0, "userId": 7, "event": "level_up", "properties": {"a": 1, "b": None}}
    converted = convert_record(
        record,
        SEGMENT_LIKE,
        now=NOW,
        source_name="s.jsonl:1",
        destinations=DESTINATIONS,
        matched=matched,
        left_out=left_out,
    )
    assert converted.event.source == "s.jsonl:1"
    assert matched == Counter(
        {
            "user_id = userId or anonymousId": 1,
            "time = ts": 1,
            "event = event": 1,
            "properties from properties": 1,
        }
    )
    assert left_out == Counter({"b": 1})


@pytest.mark.parametrize(
    "record",
    [
        {"ts": T0, "userId": 1, "event": "apr", "event_id": "e1"},
        {"ts": T0 + 1, "anonymousId": "a", "event": "apr"},
        {"ts": "noon", "userId": 1, "event": "apr"},
        {"ts": T0, "event": "apr"},
        {"ts": NOW + 1, "userId": 1, "event": "apr", "event_id": 3},
        {"ts": T0, "userId": 1, "event": "apr", "level": "high"},
    ],
)
def test_identify_record_gives_the_time_identity_and_errors_of_convert_record(
    record: dict[str, Any],
) -> None:
    from beaconflow.model.convert import identify_record

    try:
        event = _convert(record).event
    except RecordError as error:
        with pytest.raises(RecordError) as identified:
            identify_record(record, SEGMENT_LIKE, now=NOW)
        assert str(identified.value) == str(error)
        return
    explicit = event.key if record.get("event_id") is not None else None
    assert identify_record(record, SEGMENT_LIKE, now=NOW) == (event.time, explicit)
