"""The built-in mappings (``beaconflow.model.builtin``): names, errors, and what each makes.

Each built-in is tried on one record of its export, as its file's comments describe it.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import pytest

from beaconflow.model.builtin import BUILTINS, builtin_mapping, builtin_text, is_builtin_name
from beaconflow.model.convert import convert_record
from beaconflow.model.mapping import MappingError, RecordMapping
from beaconflow.model.message import DESTINATIONS

NOW = 1_800_000_000
T0 = 1_750_000_000  # 2025-06-15T15:06:40Z


def test_the_builtin_names() -> None:
    assert BUILTINS == ("segment", "mixpanel", "amplitude", "ga4")


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_parses(name: str) -> None:
    mapping = builtin_mapping(name)
    assert isinstance(mapping, RecordMapping)
    assert not mapping.plain
    packaged = resources.files("beaconflow.model") / "mappings" / f"{name}.toml"
    assert builtin_text(name) == packaged.read_text("utf-8")
    assert builtin_text(name).startswith("# beaconflow's built-in mapping for ")


@pytest.mark.parametrize(
    ("value", "builtin"),
    [
        ("segment", True),
        ("nosuch", True),  # a name: refused with the list of names
        ("Segment", True),
        ("segment.toml", False),
        ("./segment", False),
        ("conf/segment", False),
        ("conf\\segment", False),
        ("gs://bucket/mapping.toml", False),
        ("/etc/mapping", False),
    ],
)
def test_is_builtin_name(value: str, builtin: bool) -> None:
    assert is_builtin_name(value) is builtin


@pytest.mark.parametrize("name", ["nosuch", "Segment", ""])
def test_an_unknown_name_lists_the_builtins(name: str) -> None:
    with pytest.raises(MappingError) as error:
        builtin_text(name)
    assert str(error.value) == (
        f"{name!r} is not a built-in mapping; built-ins: segment, mixpanel, amplitude, ga4 "
        f"(a mapping file's name has a / or ends in .toml: ./{name}.toml)"
    )
    with pytest.raises(MappingError):
        builtin_mapping(name)


def _messages(name: str, record: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    converted = convert_record(
        record, builtin_mapping(name), now=NOW, source_name="x:1", destinations=DESTINATIONS
    )
    assert converted.mapped.problems == ()
    messages = [(m.destination, m.kind, dict(m.params)) for m in converted.mapped.messages]
    return dict(converted.canonical), messages


def test_segment_track() -> None:
    canonical, messages = _messages(
        "segment",
        {
            "type": "track",
            "messageId": "m1",
            "timestamp": "2025-06-15T15:06:40.000Z",
            "userId": "u1",
            "event": "Order Completed",
            "channel": "server",
            "properties": {"revenue": 9.5, "products": [{"sku": "a"}]},
        },
    )
    assert canonical == {
        "type": "track",
        "event_id": "m1",
        "time": "2025-06-15T15:06:40.000Z",
        "user_id": "u1",
        "event": "custom_event",
        "name": "Order Completed",
        "properties": {"revenue": 9.5},
    }
    kontagent, kissmetrics = messages
    assert kontagent[:2] == ("kontagent", "evt")
    assert kontagent[2]["n"] == "Order_Completed"
    assert kissmetrics == (
        "kissmetrics",
        "e",
        {"_d": "1", "_n": "Order Completed", "_p": "u1", "_t": str(T0), "revenue": "9.5"},
    )


@pytest.mark.parametrize(
    ("extra", "name"), [({"name": "Home"}, "Viewed Home Page"), ({}, "Viewed Page")]
)
def test_segment_page(extra: dict[str, str], name: str) -> None:
    record = {"type": "page", "messageId": "m2", "timestamp": "2025-06-15T15:06:40Z",
              "anonymousId": "a1", **extra}  # fmt: skip
    _, messages = _messages("segment", record)
    assert [m[2].get("n", m[2].get("_n")) for m in messages] == [name.replace(" ", "_"), name]


def test_segment_identify_alias_and_group() -> None:
    base = {"messageId": "m3", "timestamp": "2025-06-15T15:06:40Z", "userId": "42"}
    _, identify = _messages(
        "segment",
        {**base, "type": "identify", "traits": {"gender": "female", "address": {"city": "Oslo"}}},
    )
    assert [(m[0], m[1]) for m in identify] == [("kontagent", "cpu"), ("kissmetrics", "s")]
    assert identify[0][2] == {"g": "f", "ly": "Oslo", "s": "42"}
    _, alias = _messages("segment", {**base, "type": "alias", "previousId": "a1"})
    assert alias == [("kissmetrics", "a", {"_n": "a1", "_p": "42"})]
    _, group = _messages("segment", {**base, "type": "group", "groupId": "g"})
    assert group == []


def test_mixpanel() -> None:
    canonical, messages = _messages(
        "mixpanel",
        {
            "event": "Signed Up",
            "properties": {"time": T0 * 1000, "distinct_id": "$device:abc", "$insert_id": "i1",
                           "plan": "pro", "mp_lib": "web"},
        },
    )  # fmt: skip
    assert canonical == {
        "event_id": "i1",
        "time": T0,  # milliseconds, by the number's size
        "user_id": "$device:abc",
        "event": "custom_event",
        "name": "Signed Up",
        "properties": {"plan": "pro"},
    }
    assert [(m[0], m[1]) for m in messages] == [("kontagent", "evt"), ("kissmetrics", "e")]


def test_amplitude() -> None:
    canonical, messages = _messages(
        "amplitude",
        {"event_type": "Play Song", "event_time": "2025-06-15 15:06:40.460000", "user_id": None,
         "device_id": "d1", "$insert_id": "ins1", "event_properties": {"genre": "rock"}},
    )  # fmt: skip
    assert (canonical["event_id"], canonical["user_id"], canonical["name"]) == (
        "ins1",
        "d1",
        "Play Song",
    )
    assert messages[1] == (
        "kissmetrics",
        "e",
        {"_d": "1", "_n": "Play Song", "_p": "d1", "_t": str(T0), "genre": "rock"},
    )


def test_ga4() -> None:
    canonical, messages = _messages(
        "ga4",
        {
            "event_timestamp": T0 * 1_000_000,
            "event_name": "purchase",
            "user_id": None,
            "user_pseudo_id": "p1",
            "event_params": [
                {"key": "page_title", "value": {"string_value": "Home", "int_value": None}},
                {"key": "value", "value": {"double_value": 19.99}},
            ],
        },
    )
    assert canonical == {
        "time": T0,
        "user_id": "p1",
        "event": "custom_event",
        "name": "purchase",
        "value": 1999,
        "properties": {"page_title": "Home", "value": 19.99},
    }
    assert messages[0][:2] == ("kontagent", "evt")
    assert (messages[0][2]["n"], messages[0][2]["v"]) == ("purchase", "1999")
