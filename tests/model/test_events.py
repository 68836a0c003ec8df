"""From a validated event to its Kontagent and KISSmetrics messages.

Pure unit tests of ``beaconflow.model.events``: every Kontagent type, derived tracking tags, what is
(not) sent, KISSmetrics record/set/alias, occurrences and routing by destination.
Run with ``.venv/bin/python -m pytest tests/model/test_events.py -q``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from beaconflow.model import kontagent
from beaconflow.model.events import (
    CUSTOM_EVENTS,
    LIST_SENDER_TYPES,
    RESPONSE_TYPES,
    derived_tag,
    kissmetrics_message,
    kontagent_message,
    map_event,
    messages_for,
)
from beaconflow.model.message import Destination, Message, MessageError
from beaconflow.model.records import Event, validate

NOW = 1_800_000_000
#: 2025-06-01T12:00:00Z, the time of every event unless a test says otherwise.
TIME = 1_748_779_200
TIME_ISO = "2025-06-01T12:00:00Z"
USER = 123
TAG = "9a3d9332b31632a0"
SHORT_TAG = "84a942ad"
SUBTYPES = {"subtype1": "game", "subtype2": "start", "subtype3": "bonus"}
ST = {"st1": "game", "st2": "start", "st3": "bonus"}
#: Stands for "the tag derived from the event's identity" in expected parameters.
DERIVED = object()

#: Every optional field with a value that every type either accepts or does not take.
EVERYTHING: dict[str, Any] = {
    "recipients": [456, 789],
    "tracking_tag": TAG,
    "short_tracking_tag": SHORT_TAG,
    "channel": "dashboard",
    "installed": True,
    **SUBTYPES,
    "value": 120,
    "level": 2,
    "birth_year": 1980,
    "gender": "f",
    "city": "Paris",
    "country": "FR",
    "state": "IDF",
    "postal_code": "75001",
    "friend_count": 142,
    "goal_counts": {"gc1": 1},
    "ip": "10.0.0.1",
    "page_address": "/farm?plot=3",
    "alias": "bob@example.com",
    "name": "plow",
    "properties": {"crop": "pear"},
}


def _kissmetrics(event: Event) -> Message:
    """The event's KISSmetrics message, which these events all have."""
    message = kissmetrics_message(event)
    assert message is not None
    return message


def _event(
    name: str,
    /,
    *,
    event_id: str | int | None = "oq-1",
    user_id: str | int = USER,
    time: object = TIME_ISO,
    **fields: Any,
) -> Event:
    record: dict[str, Any] = {"time": time, "user_id": user_id, "event": name, **fields}
    if event_id is not None:
        record["event_id"] = event_id
    return validate(record, now=NOW, source="test.jsonl:1")


def _kontagent(event: Event) -> Message:
    message = kontagent_message(event)
    assert message is not None
    return message


def _expected(event: Event, params: Mapping[str, object]) -> dict[str, object]:
    return {name: derived_tag(event.key) if v is DERIVED else v for name, v in params.items()}


# Every Kontagent type: (code, event names selecting it, fields, expected parameters).
KONTAGENT_CASES: list[tuple[str, tuple[str, ...], dict[str, Any], dict[str, object]]] = [
    (
        "ins",
        ("invite_sent", "ins"),
        {"recipients": [456, "789"], "tracking_tag": TAG, **SUBTYPES},
        {"s": "123", "r": "456,789", "u": TAG, **ST},
    ),
    (
        "inr",
        ("invite_response", "inr"),
        {"installed": True, "tracking_tag": TAG, **SUBTYPES},
        {"r": "123", "i": "1", "u": TAG, **ST},
    ),
    (
        "nts",
        ("notification_sent", "nts"),
        {"recipients": [456], "tracking_tag": TAG, **SUBTYPES},
        {"s": "123", "r": "456", "u": TAG, "st1": "game", "st2": "start"},  # nts has no st3
    ),
    (
        "ntr",
        ("notification_response", "ntr"),
        {"installed": False, "tracking_tag": TAG, **SUBTYPES},
        {"r": "123", "i": "0", "u": TAG, "st1": "game", "st2": "start"},
    ),
    (
        "nes",
        ("notification_email_sent", "nes"),
        {"recipients": [456, 789], **SUBTYPES},
        {"s": "123", "r": "456,789", "u": DERIVED, **ST},
    ),
    (
        "nei",
        ("notification_email_response", "nei"),
        {"installed": True},
        {"r": "123", "i": "1", "u": DERIVED},
    ),
    (
        "mes",
        ("message_sent", "mes"),
        {"recipients": [456], "channel": "dashboard", "tracking_tag": TAG, **SUBTYPES},
        {"s": "123", "r": "456", "tu": "dashboard", "u": TAG, **ST},
    ),
    (
        "mer",
        ("message_response", "mer"),
        {"channel": "dashboard", "installed": False, "tracking_tag": TAG, **SUBTYPES},
        {"r": "123", "tu": "dashboard", "i": "0", "u": TAG, **ST},
    ),
    (
        "pst",
        ("stream_post", "pst"),
        {"channel": "feedstory", **SUBTYPES},
        {"s": "123", "tu": "feedstory", "u": DERIVED, **ST},
    ),
    (
        "psr",
        ("stream_post_response", "psr"),
        {"channel": "feedpub", "installed": True, "tracking_tag": TAG},
        {"r": "123", "tu": "feedpub", "i": "1", "u": TAG},
    ),
    (
        "evt",
        ("custom_event", "custom_action", "evt"),
        {"name": "plow", "value": -5, "level": 2, **SUBTYPES},
        {"s": "123", "n": "plow", "v": "-5", "l": "2", **ST},
    ),
    (
        "apa",
        ("application_installed", "application_added", "apa"),
        {"tracking_tag": TAG, "short_tracking_tag": SHORT_TAG},
        {"s": "123", "u": TAG, "su": SHORT_TAG},
    ),
    (
        "apr",
        ("application_uninstalled", "application_removed", "apr"),
        {},
        {"s": "123"},
    ),
    (
        "ucc",
        ("undirected_communication_click", "ucc"),
        {"channel": "ad", "installed": False, "short_tracking_tag": SHORT_TAG, **SUBTYPES},
        {"s": "123", "tu": "ad", "i": "0", "su": SHORT_TAG, **ST},
    ),
    (
        "pgr",
        ("page_request_and_user_location", "pgr"),
        {"ip": "10.0.0.1", "page_address": "/farm?plot=3&x=é"},
        {"s": "123", "ts": "2025-06-01T12:00:00", "ip": "10.0.0.1", "u": "/farm?plot=3&x=é"},
    ),
    (
        "cpu",
        ("user_information", "cpu"),
        {
            "birth_year": 1980,
            "gender": "m",
            "city": "Paris",
            "country": "FR",
            "state": "IDF",
            "postal_code": "75001",
            "friend_count": 142,
        },
        {
            "s": "123",
            "b": "1980",
            "g": "m",
            "ly": "Paris",
            "lc": "FR",
            "ls": "IDF",
            "lp": "75001",
            "f": "142",
        },
    ),
    (
        "gci",
        ("goal_counts", "gci"),
        {"goal_counts": {"gc1": 12, "gc4": -3}},
        {"s": "123", "gc1": "12", "gc4": "-3"},
    ),
    ("mtu", ("revenue_tracking", "mtu"), {"value": 120}, {"s": "123", "v": "120"}),
]

KONTAGENT_BY_NAME = [
    pytest.param(code, name, fields, expected, id=name)
    for code, names, fields, expected in KONTAGENT_CASES
    for name in names
]


def test_the_cases_cover_every_kontagent_type() -> None:
    assert {code for code, *_ in KONTAGENT_CASES} == set(kontagent.MESSAGE_TYPES)
    names = {name for _, names, _, _ in KONTAGENT_CASES for name in names}
    assert set(kontagent.EVENT_NAMES) <= names


@pytest.mark.parametrize(("code", "name", "fields", "expected"), KONTAGENT_BY_NAME)
def test_each_kontagent_type_gets_its_parameters(
    code: str, name: str, fields: dict[str, Any], expected: dict[str, object]
) -> None:
    event = _event(name, **fields)
    message = _kontagent(event)
    assert message.destination == "kontagent"
    assert message.kind == code
    assert message.param_map() == _expected(event, expected)
    assert message.occurrence == event.key


@pytest.mark.parametrize(
    ("name", "user_param", "user_value"),
    [
        *[(code, "r", USER) for code in sorted(RESPONSE_TYPES)],
        *[(code, "s", [USER]) for code in sorted(LIST_SENDER_TYPES)],
        *[
            (code, "s", USER)
            for code in sorted(set(kontagent.MESSAGE_TYPES) - RESPONSE_TYPES - LIST_SENDER_TYPES)
        ],
    ],
)
def test_the_user_goes_to_the_right_parameter(
    monkeypatch: pytest.MonkeyPatch, name: str, user_param: str, user_value: object
) -> None:
    """What kontagent.build is given: r for responses, [user] as s for gci and mtu."""
    seen: dict[str, Any] = {}

    def spy(kind: str, params: Mapping[str, object], *, occurrence: str = "") -> Message:
        seen.update(kind=kind, params=dict(params), occurrence=occurrence)
        return Message("kontagent", kind, ())

    monkeypatch.setattr(kontagent, "build", spy)
    event = _event(name, **EVERYTHING)
    kontagent_message(event)
    assert seen["kind"] == name
    assert seen["params"][user_param] == user_value
    other = "s" if user_param == "r" else "r"
    if name in RESPONSE_TYPES or name in LIST_SENDER_TYPES:
        assert other not in seen["params"] or seen["params"][other] is None
    assert seen["occurrence"] == event.key


@pytest.mark.parametrize("code", sorted(RESPONSE_TYPES))
def test_response_types_send_the_user_as_r_and_never_the_recipients(code: str) -> None:
    fields: dict[str, Any] = {"installed": True, "recipients": [456], "channel": "dashboard"}
    if code in ("pst", "psr"):
        fields["channel"] = "feedpub"
    message = _kontagent(_event(code, **fields))
    assert message.param("r") == "123"
    assert message.param("s") is None


@pytest.mark.parametrize("time", [TIME, TIME + 0.999, "2025-06-01T14:00:00+02:00", TIME_ISO])
def test_pgr_ts_is_the_event_time_in_gmt(time: object) -> None:
    message = _kontagent(_event("pgr", time=time))
    assert message.param("ts") == "2025-06-01T12:00:00"


def test_pgr_ts_has_two_digit_fields() -> None:
    message = _kontagent(_event("pgr", time="2009-01-02T03:04:05Z"))
    assert message.param("ts") == "2009-01-02T03:04:05"


def test_pgr_u_is_the_page_address_never_the_tracking_tag() -> None:
    assert _kontagent(_event("pgr", tracking_tag=TAG)).param("u") is None
    message = _kontagent(_event("pgr", tracking_tag=TAG, page_address="/home"))
    assert message.param("u") == "/home"


@pytest.mark.parametrize("goals", [{"gc1": 0}, {"gc2": 1, "gc3": 2}, {"gc1": 16384, "gc4": -16384}])
def test_goal_counts_become_gc_parameters(goals: dict[str, int]) -> None:
    message = _kontagent(_event("goal_counts", goal_counts=goals))
    assert message.param_map() == {"s": "123", **{k: str(v) for k, v in goals.items()}}


def test_goal_counts_take_the_record_contracts_keys_1_to_4() -> None:
    message = _kontagent(_event("goal_counts", goal_counts={"1": 5, "4": -2, "gc2": 7}))
    assert message.param_map() == {"s": "123", "gc1": "5", "gc2": "7", "gc4": "-2"}
    # the same goal twice, under both names, is refused rather than one silently kept
    with pytest.raises(MessageError, match="gc3 twice"):
        _kontagent(_event("goal_counts", goal_counts={"3": 1, "gc3": 2}))
    with pytest.raises(MessageError, match="is not a parameter of gci"):
        _kontagent(_event("goal_counts", goal_counts={"5": 1}))


# Fields a type has no parameter for -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "overrides", "sent"),
    [
        ("apr", {}, {"s"}),
        ("level_up", {}, {"s", "n", "v", "l", "st1", "st2", "st3"}),
        ("custom_event", {}, {"s", "n", "v", "l", "st1", "st2", "st3"}),
        ("cpu", {}, {"s", "b", "g", "ly", "lc", "ls", "lp", "f"}),
        ("mtu", {}, {"s", "v"}),
        ("gci", {}, {"s", "gc1"}),
        ("pgr", {}, {"s", "ts", "ip", "u"}),
        ("apa", {}, {"s", "u", "su"}),
        ("ins", {}, {"s", "r", "u", "st1", "st2", "st3"}),
        ("nts", {}, {"s", "r", "u", "st1", "st2"}),
        ("inr", {}, {"r", "i", "u", "st1", "st2", "st3"}),
        ("mes", {}, {"s", "r", "tu", "u", "st1", "st2", "st3"}),
        ("mer", {}, {"r", "tu", "i", "u", "st1", "st2", "st3"}),
        ("pst", {"channel": "stream"}, {"s", "tu", "u", "st1", "st2", "st3"}),
        ("psr", {"channel": "stream"}, {"r", "tu", "i", "u", "st1", "st2", "st3"}),
        ("ucc", {}, {"s", "tu", "i", "su", "st1", "st2", "st3"}),
    ],
)
def test_fields_a_type_has_no_parameter_for_are_not_sent(
    name: str, overrides: dict[str, Any], sent: set[str]
) -> None:
    message = _kontagent(_event(name, **{**EVERYTHING, **overrides}))
    assert set(message.param_map()) == sent


def test_everything_is_sent_with_its_own_value() -> None:
    message = _kontagent(_event("level_up", **EVERYTHING))
    assert message.param_map() == {"s": "123", "n": "level_up", "v": "120", "l": "2", **ST}


@pytest.mark.parametrize(
    ("name", "fields", "param", "value"),
    [
        ("inr", {"installed": False}, "i", "0"),
        ("ntr", {"installed": False}, "i", "0"),
        ("nei", {"installed": False}, "i", "0"),
        ("mer", {"installed": False, "channel": "dashboard"}, "i", "0"),
        ("psr", {"installed": False, "channel": "feedpub"}, "i", "0"),
        ("ucc", {"installed": False, "channel": "ad"}, "i", "0"),
        ("mtu", {"value": 0}, "v", "0"),
        ("revenue_tracking", {"value": 0}, "v", "0"),
        ("level_up", {"value": 0}, "v", "0"),
        ("custom_event", {"name": "plow", "value": 0}, "v", "0"),
        ("cpu", {"friend_count": 0}, "f", "0"),
        ("gci", {"goal_counts": {"gc1": 0}}, "gc1", "0"),
        ("ins", {"recipients": [456], "subtype1": "0"}, "st1", "0"),
    ],
)
def test_falsy_values_are_sent(name: str, fields: dict[str, Any], param: str, value: str) -> None:
    assert _kontagent(_event(name, **fields)).param(param) == value


def test_a_user_id_of_zero_is_the_application_on_sent_types() -> None:
    assert _kontagent(_event("ins", user_id=0, recipients=[456])).param("s") == "0"


# Tracking tags ----------------------------------------------------------------------------------

REQUIRED_TAG_TYPES: list[tuple[str, dict[str, Any]]] = [
    ("ins", {"recipients": [456]}),
    ("inr", {"installed": True}),
    ("nts", {"recipients": [456]}),
    ("ntr", {"installed": True}),
    ("nes", {"recipients": [456]}),
    ("nei", {"installed": True}),
    ("mes", {"recipients": [456], "channel": "dashboard"}),
    ("pst", {"channel": "feedpub"}),
]


def test_the_required_tag_types_are_those_of_the_reference() -> None:
    required = {
        code
        for code, spec in kontagent.MESSAGE_TYPES.items()
        if "u" in spec.params and spec.params["u"].required
    }
    assert required == {code for code, _ in REQUIRED_TAG_TYPES}


@pytest.mark.parametrize(("code", "fields"), REQUIRED_TAG_TYPES)
@pytest.mark.parametrize("event_id", ["oq-1", None])
def test_a_missing_required_tag_is_derived_and_stable(
    code: str, fields: dict[str, Any], event_id: str | None
) -> None:
    first = _kontagent(_event(code, event_id=event_id, **fields))
    again = _kontagent(_event(code, event_id=event_id, **fields))
    tag = first.param("u")
    assert tag is not None
    assert re.fullmatch(r"[0-9a-f]{16}", tag)
    assert tag == again.param("u")
    assert first == again
    assert first.key == again.key


@pytest.mark.parametrize(("code", "fields"), REQUIRED_TAG_TYPES)
@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"event_id": "oq-1"}, {"event_id": "oq-2"}),
        ({"event_id": None, "user_id": 123}, {"event_id": None, "user_id": 124}),
        ({"event_id": None, "time": TIME}, {"event_id": None, "time": TIME + 1}),
    ],
    ids=["event_id", "user_id", "time"],
)
def test_different_events_get_different_derived_tags(
    code: str, fields: dict[str, Any], one: dict[str, Any], other: dict[str, Any]
) -> None:
    first = _kontagent(_event(code, **fields, **one))
    second = _kontagent(_event(code, **fields, **other))
    assert first.param("u") != second.param("u")


@pytest.mark.parametrize(("code", "fields"), REQUIRED_TAG_TYPES)
@pytest.mark.parametrize("tag", [TAG, "0123456789ABCDEF0123456789abcdef"])
def test_a_given_tracking_tag_is_used(code: str, fields: dict[str, Any], tag: str) -> None:
    assert _kontagent(_event(code, tracking_tag=tag, **fields)).param("u") == tag


@pytest.mark.parametrize(
    ("code", "fields"),
    [
        ("mer", {"channel": "dashboard", "installed": True}),
        ("psr", {"channel": "feedpub", "installed": True}),
        ("apa", {}),
        ("pgr", {}),
    ],
)
def test_an_optional_tag_is_not_derived(code: str, fields: dict[str, Any]) -> None:
    assert _kontagent(_event(code, **fields)).param("u") is None


def test_a_bad_given_tag_is_refused_not_replaced() -> None:
    with pytest.raises(MessageError) as error:
        kontagent_message(_event("ins", recipients=[456], tracking_tag="9a3d9332b31632a"))
    assert (error.value.kind, error.value.param) == ("ins", "u")
    assert "16 or 32 hexadecimal characters" in error.value.rule


def test_derived_tag() -> None:
    key = "0" * 32
    assert re.fullmatch(r"[0-9a-f]{16}", derived_tag(key))
    assert derived_tag(key) == derived_tag(key) == derived_tag(key, "u")
    assert derived_tag(key) != derived_tag("1" * 32)
    assert derived_tag(key, "su") != derived_tag(key, "u")


# Custom events and event names ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CUSTOM_EVENTS))
@pytest.mark.parametrize("label", ["plow", "a", "x" * 32, "Level_2", "0"])
def test_custom_events_take_n_from_the_name_field(name: str, label: str) -> None:
    message = _kontagent(_event(name, name=label))
    assert (message.kind, message.param("n")) == ("evt", label)


@pytest.mark.parametrize("name", sorted(CUSTOM_EVENTS))
@pytest.mark.parametrize("missing", [{}, {"name": None}, {"name": ""}])
def test_custom_events_need_a_name(name: str, missing: dict[str, Any]) -> None:
    event = _event(name, **missing)
    for build in (kontagent_message, kissmetrics_message):
        with pytest.raises(MessageError) as error:
            build(event)
        assert (error.value.kind, error.value.param) == (name, "name")
        assert f"a {name} event needs a name field" in error.value.rule


@pytest.mark.parametrize("name", ["level_up", "harvest", "Plow2", "x" * 32, "_", "9"])
def test_any_other_name_is_an_evt_named_after_it(name: str) -> None:
    message = _kontagent(_event(name))
    assert message.kind == "evt"
    assert message.param_map() == {"s": "123", "n": name}


@pytest.mark.parametrize(
    "name",
    ["level up", "x" * 33, "été", "with-dash", "a.b", "tab\t", "😀", "n=1", "a&b"],
)
def test_a_name_that_is_not_a_kontagent_event_name_fails(name: str) -> None:
    with pytest.raises(MessageError) as error:
        kontagent_message(_event(name))
    assert (error.value.kind, error.value.param) == ("evt", "n")
    assert "1 to 32 characters of [a-zA-Z0-9_]" in error.value.rule


@pytest.mark.parametrize("custom", sorted(CUSTOM_EVENTS))
@pytest.mark.parametrize("label", ["Signed Up", "x" * 33, "é"])
def test_a_custom_name_that_is_not_a_kontagent_event_name_fails(custom: str, label: str) -> None:
    with pytest.raises(MessageError) as error:
        kontagent_message(_event(custom, name=label))
    assert (error.value.kind, error.value.param) == ("evt", "n")


def test_fdp_fails_as_deprecated() -> None:
    with pytest.raises(MessageError) as error:
        kontagent_message(_event("fdp", channel="feedpub"))
    assert (error.value.kind, error.value.param) == ("fdp", None)
    assert "deprecated" in error.value.rule


def test_alias_has_no_kontagent_message() -> None:
    event = _event("alias", alias="bob@example.com")
    assert kontagent_message(event) is None
    assert messages_for(event, ("kontagent",)) == []


@pytest.mark.parametrize(
    ("name", "fields", "param", "fragment"),
    [
        ("ins", {}, "r", "is required"),
        ("ins", {"recipients": []}, "r", "at least one user id"),
        ("ins", {"recipients": [0]}, "r", "positive user id"),
        ("inr", {}, "i", "is required"),
        ("mes", {"recipients": [1]}, "tu", "is required"),
        ("pst", {"channel": "dashboard"}, "tu", "must be one of"),
        ("ucc", {"installed": True}, "tu", "is required"),
        ("ucc", {"installed": True, "channel": "x" * 17}, "tu", "at most 16"),
        ("mtu", {}, "v", "is required"),
        ("mtu", {"value": 1_000_001}, "v", "at most 1000000"),
        ("gci", {}, None, "needs at least one of gc1, gc2, gc3, gc4"),
        ("gci", {"goal_counts": {}}, None, "needs at least one of"),
        ("gci", {"goal_counts": {"gc5": 1}}, "gc5", "is not a parameter of gci"),
        ("gci", {"goal_counts": {"gc1": 16385}}, "gc1", "between -16384 and 16384"),
        ("level_up", {"level": 0}, "l", "at least 1"),
        ("cpu", {"gender": "male"}, "g", "must be one of f, m, u"),
        ("cpu", {"birth_year": 0}, "b", "at least 1"),
        ("pgr", {"ip": "300.0.0.1"}, "ip", "IPv4"),
        ("apr", {"user_id": "bob"}, "s", "numeric user id"),
        ("apr", {"user_id": -1}, "s", "positive user id"),
        ("apr", {"user_id": 0}, "s", "positive user id"),
        ("inr", {"installed": True, "user_id": "bob"}, "r", "numeric user id"),
        ("mtu", {"value": 1, "user_id": "1,2"}, "s", "numeric user id"),
    ],
)
def test_builder_refusals_name_the_parameter(
    name: str, fields: dict[str, Any], param: str | None, fragment: str
) -> None:
    with pytest.raises(MessageError) as error:
        kontagent_message(_event(name, **fields))
    assert error.value.param == param
    assert fragment in error.value.rule


# Occurrence -------------------------------------------------------------------------------------


def test_two_identical_purchases_of_different_events_are_two_messages() -> None:
    first = _kontagent(_event("revenue_tracking", event_id="buy-1", value=120))
    second = _kontagent(_event("revenue_tracking", event_id="buy-2", value=120))
    assert first.params == second.params
    assert first.occurrence != second.occurrence
    assert first.key != second.key
    assert first != second


def test_two_identical_purchases_without_event_id_at_different_times_are_two_messages() -> None:
    first = _kontagent(_event("mtu", event_id=None, value=120, time=TIME))
    second = _kontagent(_event("mtu", event_id=None, value=120, time=TIME + 1))
    assert first.params == second.params
    assert first.key != second.key


def test_the_same_event_read_twice_is_the_same_message() -> None:
    first = _kontagent(_event("revenue_tracking", value=120))
    again = _kontagent(_event("revenue_tracking", value=120, properties={"ignored": 1}))
    assert first == again
    assert first.key == again.key


# KISSmetrics ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("user_id", "alias"), [(USER, "bob@example.com"), ("bob", "7"), (1, "x")])
def test_alias_is_an_a_message(user_id: str | int, alias: str) -> None:
    message = _kissmetrics(
        _event("alias", user_id=user_id, alias=alias, properties={"ignored": 1}, value=3)
    )
    assert message == Message("kissmetrics", "a", (("_p", str(user_id)), ("_n", alias)))
    assert message.occurrence == ""


def test_alias_needs_an_alias_field() -> None:
    with pytest.raises(MessageError) as error:
        _kissmetrics(_event("alias", name="bob@example.com"))
    assert (error.value.kind, error.value.param) == ("a", "alias")
    assert "an alias event needs an alias field" in error.value.rule


def test_an_empty_alias_is_refused() -> None:
    with pytest.raises(MessageError) as error:
        _kissmetrics(_event("alias", alias=""))
    assert (error.value.kind, error.value.param) == ("a", "_n")


def test_user_information_sets_user_fields_and_properties() -> None:
    event = _event(
        "user_information",
        birth_year=1980,
        gender="m",
        city="Paris",
        country="FR",
        state="IDF",
        postal_code="75001",
        friend_count=0,
        value=120,
        tracking_tag=TAG,
        properties={"vip": True, "plan": "gold"},
    )
    message = _kissmetrics(event)
    assert message.kind == "s"
    assert message.param_map() == {
        "_p": "123",
        "_t": str(TIME),
        "_d": "1",
        "birth_year": "1980",
        "gender": "m",
        "city": "Paris",
        "country": "FR",
        "state": "IDF",
        "postal_code": "75001",
        "friend_count": "0",
        "vip": "true",
        "plan": "gold",
    }
    assert message.occurrence == ""


def test_the_cpu_code_sets_user_properties_in_kissmetrics_like_user_information() -> None:
    message = _kissmetrics(_event("cpu", country="FR"))
    assert message.kind == "s"
    assert message.param_map() == {"_p": "123", "_t": str(TIME), "_d": "1", "country": "FR"}


def test_user_information_with_only_properties() -> None:
    message = _kissmetrics(_event("user_information", properties={"plan": "gold"}))
    assert message.param_map() == {"_p": "123", "_t": str(TIME), "_d": "1", "plan": "gold"}


def test_user_information_with_nothing_to_set_sends_nothing() -> None:
    # an identify call without traits: no /s, no cpu carrying only the user (issue 14)
    assert kissmetrics_message(_event("user_information", value=3)) is None
    assert kontagent_message(_event("user_information", value=3)) is None
    assert kontagent_message(_event("user_information", gender="f")) is not None


@pytest.mark.parametrize(
    ("name", "fields", "expected_name"),
    [
        ("level_up", {}, "level_up"),
        ("application_installed", {}, "application_installed"),
        ("ins", {"recipients": [456]}, "ins"),
        ("revenue_tracking", {"value": 120}, "revenue_tracking"),
        ("page_request_and_user_location", {}, "page_request_and_user_location"),
        ("fdp", {}, "fdp"),
        ("Signed Up", {}, "Signed Up"),
        ("custom_event", {"name": "plow"}, "plow"),
        ("custom_action", {"name": "Signed Up"}, "Signed Up"),
        ("evt", {"name": "harvest"}, "harvest"),
    ],
)
def test_other_events_are_recorded_with_their_name(
    name: str, fields: dict[str, Any], expected_name: str
) -> None:
    properties = {"crop": "pear", "plot": 3, "ratio": 0.5, "first": False, "note": "a&b=c"}
    message = _kissmetrics(_event(name, properties=properties, **fields))
    assert message.kind == "e"
    assert message.param_map() == {
        "_p": "123",
        "_n": expected_name,
        "_t": str(TIME),
        "_d": "1",
        "crop": "pear",
        "plot": "3",
        "ratio": "0.5",
        "first": "false",
        "note": "a&b=c",
    }
    assert message.occurrence == ""


def test_recorded_events_send_only_properties() -> None:
    message = _kissmetrics(_event("level_up", **EVERYTHING))
    assert message.param_map() == {
        "_p": "123",
        "_n": "level_up",
        "_t": str(TIME),
        "_d": "1",
        "crop": "pear",
    }


@pytest.mark.parametrize(
    ("time", "expected"),
    [(TIME + 0.9, TIME), ("2025-06-01T14:00:00.5+02:00", TIME), (1_230_768_000, 1_230_768_000)],
)
def test_t_is_the_event_time_in_whole_seconds(time: object, expected: int) -> None:
    assert _kissmetrics(_event("level_up", time=time)).param("_t") == str(expected)


@pytest.mark.parametrize(
    ("properties", "param"), [({"_n": "x"}, "_n"), ({"_custom": 1}, "_custom"), ({"": 1}, "")]
)
def test_reserved_or_empty_property_names_are_refused(
    properties: dict[str, Any], param: str
) -> None:
    with pytest.raises(MessageError) as error:
        _kissmetrics(_event("level_up", properties=properties))
    assert error.value.param == param


def test_kissmetrics_messages_of_the_same_content_and_time_are_one() -> None:
    # KISSmetrics treats the same _p, _n, _t and properties as a duplicate: no occurrence.
    first = _kissmetrics(_event("revenue_tracking", event_id="buy-1", value=120))
    second = _kissmetrics(_event("revenue_tracking", event_id="buy-2", value=120))
    assert first == second
    assert first.key == second.key


# messages_for -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destinations", "kinds"),
    [
        (("kontagent",), [("kontagent", "mtu")]),
        (("kissmetrics",), [("kissmetrics", "e")]),
        (("kontagent", "kissmetrics"), [("kontagent", "mtu"), ("kissmetrics", "e")]),
        (("kissmetrics", "kontagent"), [("kissmetrics", "e"), ("kontagent", "mtu")]),
        ((), []),
    ],
)
def test_messages_for_each_destination(
    destinations: tuple[Destination, ...], kinds: list[tuple[str, str]]
) -> None:
    event = _event("revenue_tracking", value=120)
    messages = messages_for(event, destinations)
    assert [(m.destination, m.kind) for m in messages] == kinds
    for message in messages:
        expected = kontagent_message(event) if message.destination == "kontagent" else None
        assert message == (expected or _kissmetrics(event))
        assert message.occurrence == (event.key if message.destination == "kontagent" else "")


@pytest.mark.parametrize(
    ("destinations", "kinds"),
    [
        (("kontagent",), []),
        (("kissmetrics",), [("kissmetrics", "a")]),
        (("kontagent", "kissmetrics"), [("kissmetrics", "a")]),
    ],
)
def test_messages_for_alias(
    destinations: tuple[Destination, ...], kinds: list[tuple[str, str]]
) -> None:
    event = _event("alias", alias="bob@example.com")
    messages = messages_for(event, destinations)
    assert [(m.destination, m.kind) for m in messages] == kinds


@pytest.mark.parametrize(
    ("name", "fields", "kissmetrics_only_ok"),
    [
        ("fdp", {}, True),
        ("custom_event", {"name": "Signed Up"}, True),
        ("Signed Up", {}, True),
        ("alias", {}, False),
        ("user_information", {"properties": {"_reserved": 1}}, False),
    ],
)
def test_messages_for_maps_an_event_whole_or_not_at_all(
    name: str, fields: dict[str, Any], kissmetrics_only_ok: bool
) -> None:
    event = _event(name, **fields)
    with pytest.raises(MessageError):
        messages_for(event, ("kontagent", "kissmetrics"))
    with pytest.raises(MessageError):
        messages_for(event, ("kissmetrics", "kontagent"))
    if kissmetrics_only_ok:
        assert len(messages_for(event, ("kissmetrics",))) == 1
    else:
        with pytest.raises(MessageError):
            messages_for(event, ("kissmetrics",))


@pytest.mark.parametrize(
    ("user_id", "fields"),
    [("9" * 4301, {}), ("1", {"recipients": ["9" * 4301]})],
    ids=["user_id", "recipients"],
)
def test_an_absurdly_long_numeric_user_id_is_a_message_error(
    user_id: str, fields: dict[str, Any]
) -> None:
    event = _event("ins" if fields else "apr", user_id=user_id, **fields)
    with pytest.raises(MessageError):
        messages_for(event, ("kontagent",))


def test_map_event_builds_each_destination_on_its_own() -> None:
    record = {"time": 1_750_000_000, "user_id": "alice", "event": "level_up"}
    event = validate(record, now=NOW, source="f.jsonl:4")
    mapped = map_event(event, ("kontagent", "kissmetrics"), record)
    # Kontagent needs a numeric user id; KISSmetrics takes alice as she is
    assert [m.destination for m in mapped.messages] == ["kissmetrics"]
    assert mapped.messages[0].source == "f.jsonl:4"  # a send failure names the line
    assert [(p.destination, p.kind) for p in mapped.problems] == [("kontagent", "evt")]
    assert "numeric user id" in mapped.problems[0].reason and mapped.record is record
    # both destinations can fail, each with its own reason
    nameless = {"time": 1_750_000_000, "user_id": "alice", "event": "custom_event"}
    both = map_event(validate(nameless, now=NOW), ("kontagent", "kissmetrics"), nameless)
    assert both.messages == () and [p.destination for p in both.problems] == [
        "kontagent",
        "kissmetrics",
    ]
    # without a problem, the record is not carried along
    fine = {"time": 1_750_000_000, "user_id": 7, "event": "level_up"}
    assert map_event(validate(fine, now=NOW), ("kontagent",), fine).record is None


@pytest.mark.parametrize(
    ("time", "day"),
    [
        (1_748_736_000, 20_240),  # 2025-06-01T00:00:00Z
        (1_748_822_399, 20_240),  # 23:59:59 the same day
        (1_748_822_400, 20_241),  # midnight: the next
    ],
)
def test_every_message_of_an_event_carries_its_utc_day(time: int, day: int) -> None:
    """Its ledger entry is filed under that day; an alias's too (the ledger knows better)."""
    for name in ("level_up", "alias", "user_information"):
        record = {"time": time, "user_id": 7, "event": name, "alias": "a7", "gender": "f"}
        event = validate(record, now=NOW, source="f.jsonl:1")
        mapped = map_event(event, ("kontagent", "kissmetrics"), record)
        assert mapped.messages and all(m.day == day for m in mapped.messages)
        assert mapped.day_number == day
        assert [m.day for m in messages_for(event, ("kontagent", "kissmetrics"))] == [day] * len(
            mapped.messages
        )
