"""Property tests: whatever a record holds, only RecordError and MessageError come out.

``validate`` and ``messages_for`` are fuzzed with records of canonical keys mapped to
arbitrary JSON values, and with records that are nearly valid so that every message builder
is reached (``parse_line`` is fuzzed in tests/model/test_records_fuzz.py, whose settings and
JSON strategies these tests share). Any exception other than RecordError or MessageError is
a bug in the code under test, not in these tests. Every test is derandomized, so CI runs the
same examples every time.
Run with ``.venv/bin/python -m pytest tests/model/test_events_fuzz.py -q``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from beaconflow.model import kontagent
from beaconflow.model.events import USER_FIELDS, USER_INFORMATION, messages_for
from beaconflow.model.message import DESTINATIONS, Destination, MessageError
from beaconflow.model.records import (
    EARLIEST,
    FIELDS,
    OPTIONAL_FIELDS,
    RecordError,
    parse_line,
    validate,
)
from tests.model.test_records_fuzz import FUZZ, json_values

NOW = 1_800_000_000


destination_sets: st.SearchStrategy[tuple[Destination, ...]] = st.sampled_from(
    [(), ("kontagent",), ("kissmetrics",), ("kontagent", "kissmetrics"), DESTINATIONS[::-1]]
)


def _check_messages(record: dict[str, Any], destinations: tuple[Destination, ...]) -> None:
    """Validate, then build the messages: only the two domain errors may come out."""
    try:
        event = validate(record, now=NOW, source="fuzz:1")
    except RecordError as error:
        assert error.field is None or error.field in FIELDS
        return
    assert EARLIEST <= event.time <= NOW
    assert re.fullmatch(r"[0-9a-f]{32}", event.key)
    try:
        messages = messages_for(event, destinations)
    except MessageError:
        return
    assert messages == messages_for(event, destinations)
    # alias has no Kontagent message; user information with nothing to set has none there
    expected = [d for d in destinations if d != "kontagent" or event.name != "alias"]
    got = [m.destination for m in messages]
    if event.name in USER_INFORMATION:
        assert got == [d for d in expected if d in got]
    else:
        assert got == expected
    for message in messages:
        assert all(isinstance(v, str) for _, v in message.params)
        if message.destination == "kontagent":
            assert message.kind in kontagent.MESSAGE_TYPES
            assert message.occurrence == event.key
        else:
            assert message.kind in ("e", "s", "a")
            assert message.occurrence == ""


# parse_line -------------------------------------------------------------------------------------


# Records ----------------------------------------------------------------------------------------

EVENT_NAMES = sorted(
    {*kontagent.MESSAGE_TYPES, *kontagent.EVENT_NAMES, *kontagent.DEPRECATED_TYPES}
    | {"alias", "level_up", "Signed Up", "x" * 33}
)
OPTIONAL = list(OPTIONAL_FIELDS)
digits = st.from_regex(r"[0-9]{1,20}", fullmatch=True)
small_ints = st.integers(min_value=-20_000, max_value=2_000_000)


def _hex(*lengths: int) -> st.SearchStrategy[str]:
    return st.sampled_from(lengths).flatmap(
        lambda n: st.text("0123456789abcdefABCDEF", min_size=n, max_size=n)
    )


#: For each optional field, values of the right type that are often, not always, acceptable.
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "recipients": st.lists(st.integers(min_value=-1, max_value=10**12) | digits, max_size=4),
    "tracking_tag": _hex(16, 32),
    "short_tracking_tag": _hex(8, 16, 32),
    "channel": st.sampled_from([*sorted(kontagent.POST_CHANNELS), "dashboard", "ad", "x" * 17, ""]),
    "installed": st.booleans(),
    "subtype1": st.text(max_size=40),
    "subtype2": st.text(max_size=40),
    "subtype3": st.text(max_size=40),
    "value": small_ints,
    "level": small_ints,
    "birth_year": small_ints,
    "gender": st.sampled_from(["m", "f", "u", "x", ""]),
    "city": st.text(max_size=20),
    "country": st.text(max_size=4),
    "state": st.text(max_size=4),
    "postal_code": st.text(max_size=8),
    "friend_count": small_ints,
    "goal_counts": st.dictionaries(
        st.sampled_from(["gc1", "gc2", "gc3", "gc4", "gc5", "s", "u"]), small_ints, max_size=4
    ),
    "ip": st.ip_addresses(v=4).map(str) | st.text(max_size=16),
    "page_address": st.text(max_size=300),
    "alias": st.text(max_size=20),
    "name": st.from_regex(r"[A-Za-z0-9_]{1,33}", fullmatch=True) | st.text(max_size=8),
    "properties": st.dictionaries(
        st.text(max_size=8),
        st.text(max_size=8) | st.integers() | st.floats() | st.booleans(),
        max_size=4,
    ),
}

times = (
    st.integers(min_value=EARLIEST - 10, max_value=NOW + 10)
    | st.floats(min_value=EARLIEST - 10, max_value=NOW + 10)
    | st.integers(min_value=EARLIEST, max_value=NOW).map(
        lambda seconds: datetime.fromtimestamp(seconds, UTC).isoformat()
    )
)
valid_times = (
    st.integers(min_value=EARLIEST, max_value=NOW)
    | st.floats(min_value=EARLIEST, max_value=NOW)
    | st.integers(min_value=EARLIEST, max_value=NOW).map(
        lambda seconds: datetime.fromtimestamp(seconds, UTC).isoformat()
    )
)
loose_user_ids = st.integers(min_value=-1, max_value=10**15) | digits | st.text(max_size=8)
valid_required = {
    "time": st.integers(min_value=EARLIEST, max_value=NOW),
    "user_id": st.integers(min_value=1, max_value=10**15) | digits,
    "event": st.sampled_from(EVENT_NAMES),
}
#: Required fields valid, every optional field an arbitrary JSON value.
valid_required_arbitrary_optional = st.fixed_dictionaries(
    valid_required, optional={name: json_values for name in OPTIONAL}
)
#: Every field of the right type: validation mostly passes and the builders are reached.
typed = st.fixed_dictionaries(
    {**valid_required, "time": times, "user_id": loose_user_ids},
    optional={"event_id": st.text(max_size=8) | st.integers(), **PLAUSIBLE},
)
#: Right types or arbitrary JSON, field by field.
nearly_valid = st.fixed_dictionaries(
    {
        "time": times,
        "user_id": loose_user_ids,
        "event": st.sampled_from(EVENT_NAMES) | st.text(max_size=10),
    },
    optional={
        "event_id": st.none() | st.text(max_size=8) | st.integers(),
        **{name: strategy | json_values for name, strategy in PLAUSIBLE.items()},
    },
)

# Well-formed events: what the reference and KISSmetrics accept, so building must succeed.
uids = st.integers(min_value=1, max_value=10**15) | st.from_regex(
    r"[1-9][0-9]{0,14}", fullmatch=True
)
labels = st.text(st.characters(codec="utf-8"), min_size=1, max_size=32)
property_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20).filter(
    lambda name: not name.startswith("_")
)
goal_counts = st.dictionaries(
    st.sampled_from(["gc1", "gc2", "gc3", "gc4"]),
    st.integers(min_value=-16384, max_value=16384),
    min_size=1,
)
#: Valid values of the optional fields that every type either accepts or ignores.
VALID_EXTRAS: dict[str, st.SearchStrategy[Any]] = {
    "recipients": st.lists(uids, min_size=1, max_size=5),
    "channel": labels,
    "goal_counts": goal_counts,
    "tracking_tag": _hex(16, 32),
    "short_tracking_tag": _hex(8, 16, 32),
    "installed": st.booleans(),
    "subtype1": labels,
    "subtype2": labels,
    "subtype3": labels,
    "value": st.integers(min_value=-(10**6), max_value=10**6),
    "level": st.integers(min_value=1, max_value=10**6),
    "birth_year": st.integers(min_value=1, max_value=3000),
    "gender": st.sampled_from(["m", "f", "u"]),
    "city": labels,
    "country": labels,
    "state": labels,
    "postal_code": labels,
    "friend_count": st.integers(min_value=0, max_value=10**6),
    "ip": st.ip_addresses(v=4).map(str),
    "page_address": st.text(st.characters(codec="utf-8"), min_size=1, max_size=256),
    "properties": st.dictionaries(
        property_names,
        st.text(st.characters(codec="utf-8"), max_size=20)
        | st.integers(min_value=-(2**63), max_value=2**63)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.booleans(),
        max_size=4,
    ),
}
#: What each kind of event needs besides the extras: (event names, required fields).
WELL_FORMED_KINDS: list[tuple[list[str], dict[str, st.SearchStrategy[Any]]]] = [
    (
        ["ins", "invite_sent", "nts", "notification_sent", "nes", "notification_email_sent"],
        {"recipients": st.lists(uids, min_size=1, max_size=5)},
    ),
    (
        [
            "inr",
            "invite_response",
            "ntr",
            "notification_response",
            "nei",
            "notification_email_response",
        ],
        {"installed": st.booleans()},
    ),
    (
        ["mes", "message_sent"],
        {"recipients": st.lists(uids, min_size=1, max_size=5), "channel": st.just("dashboard")},
    ),
    (
        ["mer", "message_response"],
        {"installed": st.booleans(), "channel": st.just("dashboard")},
    ),
    (["pst", "stream_post"], {"channel": st.sampled_from(sorted(kontagent.POST_CHANNELS))}),
    (
        ["psr", "stream_post_response"],
        {"installed": st.booleans(), "channel": st.sampled_from(sorted(kontagent.POST_CHANNELS))},
    ),
    (
        ["ucc", "undirected_communication_click"],
        {"installed": st.booleans(), "channel": st.text(min_size=1, max_size=16)},
    ),
    (
        ["custom_event", "custom_action", "evt"],
        {"name": st.from_regex(r"[A-Za-z0-9_]{1,32}", fullmatch=True)},
    ),
    (
        [],  # any other name is an evt named after it
        {
            "event": st.from_regex(r"[A-Za-z0-9_]{1,32}", fullmatch=True).filter(
                lambda name: name not in EVENT_NAMES
            )
        },
    ),
    (
        [
            "apa",
            "application_added",
            "application_installed",
            "apr",
            "application_removed",
            "application_uninstalled",
            "pgr",
            "page_request_and_user_location",
        ],
        {},
    ),
    # user information without a trait sends nothing (docs/input.md): one trait at least
    (["user_information", "cpu"], {"country": labels}),
    (["gci", "goal_counts"], {"goal_counts": goal_counts}),
    (
        ["mtu", "revenue_tracking"],
        {"value": st.integers(min_value=-(10**6), max_value=kontagent.MTU_MAX_VALUE)},
    ),
    (["alias"], {"alias": st.text(st.characters(codec="utf-8"), min_size=1, max_size=255)}),
]


def _well_formed(
    name: str | None, needs: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    required: dict[str, st.SearchStrategy[Any]] = {"time": valid_times, "user_id": uids}
    if name is not None:
        required["event"] = st.just(name)
    required.update(needs)
    extras = {field: s for field, s in VALID_EXTRAS.items() if field not in needs}
    return st.fixed_dictionaries(
        required, optional={"event_id": st.text(max_size=8) | st.integers(), **extras}
    )


#: One entry a name (None: a custom name), so that every name is drawn about as often.
WELL_FORMED_ENTRIES: list[tuple[str | None, dict[str, st.SearchStrategy[Any]]]] = [
    *((name, needs) for names, needs in WELL_FORMED_KINDS for name in names),
    *((None, needs) for names, needs in WELL_FORMED_KINDS if not names),
]
well_formed = st.sampled_from(WELL_FORMED_ENTRIES).flatmap(lambda entry: _well_formed(*entry))


# validate + messages_for ------------------------------------------------------------------------


def test_the_strategies_cover_every_field_and_event_name() -> None:
    assert set(PLAUSIBLE) == set(OPTIONAL)
    assert set(VALID_EXTRAS) | {"alias", "name"} == set(OPTIONAL)
    names = {name for names, _ in WELL_FORMED_KINDS for name in names}
    assert names == {*kontagent.MESSAGE_TYPES, *kontagent.EVENT_NAMES, "alias"}


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), json_values), destination_sets)
def test_any_canonical_record_is_an_event_messages_or_a_domain_error(
    record: dict[str, Any], destinations: tuple[Destination, ...]
) -> None:
    _check_messages(record, destinations)


@FUZZ
@given(
    st.dictionaries(st.sampled_from(sorted(FIELDS)) | st.text(max_size=8), json_values),
    destination_sets,
)
def test_records_with_unknown_keys_are_still_only_domain_errors(
    record: dict[str, Any], destinations: tuple[Destination, ...]
) -> None:
    _check_messages(record, destinations)


@FUZZ
@given(valid_required_arbitrary_optional, destination_sets)
def test_arbitrary_optional_fields_are_messages_or_domain_errors(
    record: dict[str, Any], destinations: tuple[Destination, ...]
) -> None:
    _check_messages(record, destinations)


@FUZZ
@given(typed, destination_sets)
def test_typed_records_are_messages_or_domain_errors(
    record: dict[str, Any], destinations: tuple[Destination, ...]
) -> None:
    _check_messages(record, destinations)


@FUZZ
@given(nearly_valid, destination_sets)
def test_nearly_valid_records_are_messages_or_domain_errors(
    record: dict[str, Any], destinations: tuple[Destination, ...]
) -> None:
    _check_messages(record, destinations)


@FUZZ
@given(well_formed, destination_sets)
def test_well_formed_events_always_build_their_messages(
    record: dict[str, Any], destinations: tuple[Destination, ...]
) -> None:
    event = validate(record, now=NOW)
    messages = messages_for(event, destinations)
    # an identify without traits tells neither service anything: it builds no message
    traitless = (
        event.name in USER_INFORMATION
        and not event.get("properties")
        and all(event.get(name) is None for name in USER_FIELDS)
    )
    kontagent_kinds = [m.kind for m in messages if m.destination == "kontagent"]
    expected = "kontagent" in destinations and event.name != "alias" and not traitless
    assert len(kontagent_kinds) == expected
    assert all(m.occurrence == event.key for m in messages if m.destination == "kontagent")
    assert len(messages) == len(kontagent_kinds) + ("kissmetrics" in destinations and not traitless)


@FUZZ
@given(typed | nearly_valid | well_formed)
def test_nearly_valid_records_survive_a_json_round_trip(record: dict[str, Any]) -> None:
    """A record written to a log and read back is the same event with the same messages."""
    try:
        line = json.dumps(record, allow_nan=False)
    except ValueError:
        return  # NaN or Infinity: no log line can hold it
    try:
        event = validate(record, now=NOW)
    except RecordError:
        return
    again = validate(parse_line(line), now=NOW)
    assert again == event
    try:
        messages = messages_for(event, DESTINATIONS)
    except MessageError:
        return
    assert messages_for(again, DESTINATIONS) == messages
