"""A mapping's ``[options]``, ``--source-timezone`` (``with_source_zone``) and ``origin()``.

``event_names = "custom"`` (a name read from the record is the product's own, never a Ruby
type), ``kontagent_names = "safe"``, ``kontagent_user_ids = "hash"``, ``pass_through =
false``, and the errors naming ``[options]``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from beaconflow.model.events import kissmetrics_message, kontagent_message
from beaconflow.model.mapping import OPTIONS, MappingError, Options, RecordMapping, parse_mapping
from beaconflow.model.message import Message
from beaconflow.model.records import Event, validate

NOW = 1_800_000_000
T0 = 1_750_000_000
LOS_ANGELES = ZoneInfo("America/Los_Angeles")

CUSTOM = parse_mapping(
    """
[options]
event_names = "custom"
[fields]
event = "action"
[events]
sent = "invite_sent"
join = "application_installed"
"""
)


def _kissmetrics(event: Event) -> Message:
    """The event's KISSmetrics message, which these events all have."""
    message = kissmetrics_message(event)
    assert message is not None
    return message


def _kinds(mapping: RecordMapping, record: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The Kontagent message kind and parameters of ``record`` through ``mapping``."""
    canonical, chosen = mapping.convert({"time": T0, "user_id": 5, **record})
    message = kontagent_message(validate(canonical, now=NOW), chosen.options)
    assert message is not None
    return message.kind, dict(message.params)


# event_names = "custom" ---------------------------------------------------------------------


def test_a_name_read_from_the_record_is_a_custom_event() -> None:
    canonical = CUSTOM.apply({"action": "invite_sent"})
    assert canonical == {"event": "custom_event", "name": "invite_sent"}
    # invite_sent is the product's name, not Kontagent's ins
    assert _kinds(CUSTOM, {"action": "invite_sent"}) == ("evt", {"n": "invite_sent", "s": "5"})
    event = validate({"time": T0, "user_id": 5, **canonical}, now=NOW)
    assert dict(_kissmetrics(event).params)["_n"] == "invite_sent"


def test_a_name_renamed_through_events_keeps_selecting_the_type() -> None:
    assert CUSTOM.apply({"action": "sent"}) == {"event": "invite_sent"}
    assert CUSTOM.apply({"action": "join"}) == {"event": "application_installed"}
    assert _kinds(CUSTOM, {"action": "join"}) == ("apa", {"s": "5"})
    kind, params = _kinds(CUSTOM, {"action": "sent", "recipients": [6]})
    assert (kind, params["r"], params["s"]) == ("ins", "6", "5")


def test_a_constant_name_keeps_selecting_the_type() -> None:
    mapping = parse_mapping(
        '[options]\nevent_names = "custom"\n[constants]\nevent = "invite_sent"\n'
    )
    assert mapping.apply({}) == {"event": "invite_sent"}
    kind, _ = _kinds(mapping, {"recipients": [6]})
    assert kind == "ins"


def test_a_name_passed_through_is_read_from_the_record_too() -> None:
    mapping = parse_mapping('[options]\nevent_names = "custom"\n')
    assert mapping.apply({"event": "invite_sent", "name": "x"}) == {
        "event": "custom_event",
        "name": "invite_sent",
    }


def test_without_the_option_a_name_read_selects_the_type() -> None:
    mapping = parse_mapping('[fields]\nevent = "action"\n')
    assert mapping.apply({"action": "invite_sent"}) == {"event": "invite_sent"}
    kind, _ = _kinds(mapping, {"action": "invite_sent", "recipients": [6]})
    assert kind == "ins"


# kontagent_names = "safe" -------------------------------------------------------------------


def test_safe_kontagent_names() -> None:
    mapping = parse_mapping('[options]\nevent_names = "custom"\nkontagent_names = "safe"\n')
    assert _kinds(mapping, {"event": "Product Added to Cart!"}) == (
        "evt",
        {"n": "Product_Added_to_Cart_", "s": "5"},
    )
    # KISSmetrics keeps the name as it is
    canonical = mapping.apply({"time": T0, "user_id": 5, "event": "Product Added to Cart!"})
    event = validate(canonical, now=NOW)
    assert dict(_kissmetrics(event).params)["_n"] == "Product Added to Cart!"


# kontagent_user_ids = "hash" ----------------------------------------------------------------


def _hash(text: str) -> str:
    return str(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & (2**63 - 1))


def test_hashed_kontagent_user_ids() -> None:
    mapping = parse_mapping('[options]\nkontagent_user_ids = "hash"\n')
    kind, params = _kinds(
        mapping, {"user_id": "anon-1", "event": "invite_sent", "recipients": ["bob", 7]}
    )
    assert kind == "ins"
    assert params["s"] == _hash("anon-1")
    assert params["r"] == f"{_hash('bob')},7"
    # a numeric id is sent as it is
    assert _kinds(mapping, {"user_id": 42, "event": "apa"}) == ("apa", {"s": "42"})


# pass_through = false -----------------------------------------------------------------------


def test_pass_through_false_drops_canonical_named_source_fields_no_rule_reads() -> None:
    mapping = parse_mapping(
        '[options]\npass_through = false\n[fields]\nuser_id = "uid"\ntime = "ts"\nevent = "e"\n'
    )
    record = {
        "uid": 5,
        "ts": T0,
        "e": "level_up",
        "channel": "web",
        "value": 3,
        "city": "Paris",
        "properties": {"a": 1},
        "context": {"ip": "1.2.3.4"},
    }
    assert mapping.apply(record) == {
        "user_id": 5,
        "time": T0,
        "event": "level_up",
        "context": {"ip": "1.2.3.4"},  # not canonical: ignored by validation
    }
    assert mapping.hidden >= {"channel", "value", "city", "properties", "time", "event"}


def test_pass_through_false_keeps_what_a_rule_or_constant_sets() -> None:
    mapping = parse_mapping(
        '[options]\npass_through = false\n[fields]\ncity = "loc.city"\n[constants]\nvalue = 1\n'
    )
    assert mapping.apply({"loc": {"city": "Oslo"}, "city": "Paris", "value": 3}) == {
        "city": "Oslo",
        "value": 1,
    }


def test_pass_through_true_is_the_default() -> None:
    mapping = parse_mapping('[fields]\nuser_id = "uid"\n')
    assert mapping.apply({"uid": 5, "channel": "web", "value": 3, "city": "Paris"}) == {
        "user_id": 5,
        "channel": "web",
        "value": 3,
        "city": "Paris",
    }


# the options table --------------------------------------------------------------------------


def test_parsed_options_and_their_defaults() -> None:
    assert parse_mapping("").options == Options("types", "strict", "numeric", True)
    assert parse_mapping(
        '[options]\nevent_names = "custom"\nkontagent_names = "safe"\n'
        'kontagent_user_ids = "hash"\npass_through = false\n'
    ).options == Options("custom", "safe", "hash", False)
    assert {key: values[0] for key, values in OPTIONS.items()} == {
        "event_names": "types",
        "kontagent_names": "strict",
        "kontagent_user_ids": "numeric",
        "pass_through": True,
    }


def test_options_alone_make_a_mapping_that_is_not_plain() -> None:
    assert parse_mapping("").plain
    assert parse_mapping("[options]\n").plain
    assert not parse_mapping("[options]\npass_through = false\n").plain


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("options = 1\n", "m.toml: [options] must be a table"),
        (
            "[options]\nevent_name = 'custom'\n",
            "m.toml: [options] has no 'event_name'; expected some of ['event_names', "
            "'kontagent_names', 'kontagent_user_ids', 'pass_through']",
        ),
        (
            "[options]\nevent_names = 'Custom'\n",
            "m.toml: [options] event_names must be one of ['types', 'custom'], got 'Custom'",
        ),
        (
            "[options]\nkontagent_names = true\n",
            "m.toml: [options] kontagent_names must be one of ['strict', 'safe'], got True",
        ),
        (
            "[options]\nkontagent_user_ids = ['hash']\n",
            "m.toml: [options] kontagent_user_ids must be one of ['numeric', 'hash'], got ['hash']",
        ),
        (
            "[options]\npass_through = 'false'\n",
            "m.toml: [options] pass_through must be one of [True, False], got 'false'",
        ),
        (
            "[options]\npass_through = 0\n",
            "m.toml: [options] pass_through must be one of [True, False], got 0",
        ),
    ],
)
def test_option_errors_name_the_table(toml: str, expected: str) -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping(toml, "m.toml")
    assert str(error.value) == expected


# with_source_zone ---------------------------------------------------------------------------


def test_a_naive_time_without_a_time_rule_is_placed_in_the_source_zone() -> None:
    mapping = parse_mapping('[fields]\nuser_id = "uid"\n').with_source_zone(LOS_ANGELES)
    canonical = mapping.apply({"time": "2024-07-04T12:00:00", "uid": 1, "event": "apa"})
    assert canonical["time"] == datetime(2024, 7, 4, 12, tzinfo=LOS_ANGELES)
    assert validate(canonical, now=NOW).time == 1_720_119_600  # 19:00Z
    # a time with an offset, and an epoch, are left as they are
    assert mapping.apply({"time": "2024-07-04T12:00:00Z"})["time"] == "2024-07-04T12:00:00Z"
    assert mapping.apply({"time": 1_720_094_400})["time"] == 1_720_094_400


def test_an_empty_mapping_with_a_source_zone() -> None:
    mapping = RecordMapping().with_source_zone(LOS_ANGELES)
    assert not mapping.plain
    canonical = mapping.apply({"time": "2024-01-15T12:00:00", "user_id": 1, "event": "apa"})
    assert validate(canonical, now=NOW).time == 1_705_348_800  # 20:00Z, PST


def test_no_source_zone_is_the_mapping_itself() -> None:
    assert CUSTOM.with_source_zone(None) is CUSTOM


def test_a_time_rule_without_a_zone_takes_the_source_zone() -> None:
    mapping = parse_mapping('[fields]\ntime = "ts"\n').with_source_zone(LOS_ANGELES)
    assert mapping.apply({"ts": "2024-07-04T12:00:00"}) == {
        "time": datetime(2024, 7, 4, 12, tzinfo=LOS_ANGELES)
    }


def test_a_rules_own_zone_wins() -> None:
    mapping = parse_mapping('[fields.time]\npath = "ts"\nzone = "+02:00"\n').with_source_zone(
        LOS_ANGELES
    )
    plus_two = timezone(timedelta(hours=2))
    assert mapping.apply({"ts": "2024-07-04T12:00:00"}) == {
        "time": datetime(2024, 7, 4, 12, tzinfo=plus_two)
    }


def test_a_wall_clock_rule_takes_the_source_zone() -> None:
    mapping = parse_mapping(
        '[fields.time]\npath = "ts"\nunit = "auto"\nwall_clock = true\n'
    ).with_source_zone(LOS_ANGELES)
    canonical = mapping.apply({"ts": 1_720_094_400_000, "user_id": 1, "event": "apa"})
    assert validate(canonical, now=NOW).time == 1_720_119_600
    # without --source-timezone the epoch is UTC
    unzoned = parse_mapping('[fields.time]\npath = "ts"\nunit = "auto"\nwall_clock = true\n')
    assert unzoned.apply({"ts": 1_720_094_400_000}) == {"time": 1_720_094_400}


def test_cases_get_the_source_zone_too() -> None:
    mapping = parse_mapping(
        '[[when]]\nfield = "type"\nis = "x"\n[when.fields]\ntime = "ts"\n'
    ).with_source_zone(LOS_ANGELES)
    assert mapping.source_zone is LOS_ANGELES
    assert [case.mapping.source_zone for case in mapping.cases] == [LOS_ANGELES]
    assert mapping.apply({"type": "x", "ts": "2024-01-15T12:00:00"}) == {
        "type": "x",
        "time": datetime(2024, 1, 15, 12, tzinfo=LOS_ANGELES),
    }
    # a record no case takes: the top level's zone
    assert mapping.apply({"type": "y", "time": "2024-01-15T12:00:00"})["time"] == datetime(
        2024, 1, 15, 12, tzinfo=LOS_ANGELES
    )


def test_utc_as_the_source_zone() -> None:
    mapping = RecordMapping().with_source_zone(UTC)
    canonical = mapping.apply({"time": "2024-07-04T12:00:00", "user_id": 1, "event": "apa"})
    assert validate(canonical, now=NOW).time == 1_720_094_400


# origin -------------------------------------------------------------------------------------

ORIGINS = parse_mapping(
    """
[fields]
user_id = ["userId", "anonymousId"]
event = { template = "Viewed {name} Page" }
event_id = { join = ["source", "id"] }
time = { path = "ts", unit = "ms" }
city = false
[constants]
country = "FR"
[properties]
from = ["properties", "context.traits"]
"""
)


@pytest.mark.parametrize(
    ("canonical", "origin"),
    [
        ("user_id", "userId or anonymousId"),
        ("event", "'Viewed {name} Page'"),
        ("event_id", "source + id"),
        ("time", "ts"),
        ("properties", "properties, context.traits"),
        ("city", None),  # dropped: read from nowhere
        ("country", None),  # a constant
        ("level", None),  # no rule: the field of the same name, if any
        ("", None),
    ],
)
def test_origin_says_where_a_field_is_read_from(canonical: str, origin: str | None) -> None:
    assert ORIGINS.origin(canonical) == origin


def test_origin_of_a_case_is_the_cases_rule() -> None:
    mapping = parse_mapping(
        '[fields]\nuser_id = "uid"\n[[when]]\nfield = "t"\nis = "x"\n[when.fields]\n'
        'user_id = "previousId"\n'
    )
    _, chosen = mapping.select({"t": "x"})
    assert (mapping.origin("user_id"), chosen.origin("user_id")) == ("uid", "previousId")
    assert RecordMapping().origin("user_id") is None
