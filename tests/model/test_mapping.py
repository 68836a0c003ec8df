"""The --mapping TOML: parsing it, applying it to source records, routing, and its errors.

Pure unit tests of ``beaconflow.model.mapping``, plus the sample legacy log mapped end to end into
valid events and messages. Run with ``.venv/bin/python -m pytest tests/model/test_mapping.py -q``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from beaconflow.model.events import messages_for
from beaconflow.model.mapping import MappingError, RecordMapping, Route, parse_mapping
from beaconflow.model.message import DESTINATIONS, Destination
from beaconflow.model.records import RecordError, parse_line, validate

NOW = 1_800_000_000
SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
LEGACY_MAPPING = SAMPLES / "legacy_mapping.toml"
LEGACY_LOG = SAMPLES / "legacy" / "orchard_legacy.jsonl"

LEGACY_RENAMES = {
    "join": "application_installed",
    "quit": "application_uninstalled",
    "buy": "revenue_tracking",
    "lvl": "level_up",
    "invite": "invite_sent",
}


@pytest.fixture(scope="module")
def legacy() -> RecordMapping:
    return parse_mapping(LEGACY_MAPPING.read_text(encoding="utf-8"), str(LEGACY_MAPPING))


def _legacy_lines() -> list[tuple[int, str]]:
    lines = LEGACY_LOG.read_text(encoding="utf-8").splitlines()
    return [(number, line) for number, line in enumerate(lines, 1) if line.strip()]


# The sample legacy log --------------------------------------------------------------------------


def test_the_legacy_log_has_sixty_lines() -> None:
    assert len(_legacy_lines()) == 60


@pytest.mark.parametrize(
    ("number", "line"), _legacy_lines(), ids=[f"line-{number}" for number, _ in _legacy_lines()]
)
def test_every_legacy_line_maps_to_a_valid_event(
    legacy: RecordMapping, number: int, line: str
) -> None:
    source = parse_line(line)
    record = legacy.apply(source)
    event = validate(record, now=NOW, source=f"{LEGACY_LOG.name}:{number}")
    assert event.key  # identity of the legacy id
    assert record["event_id"] == source["id"]
    assert record["user_id"] == source["player"]["uid"]
    assert record["event"] == LEGACY_RENAMES[source["action"]]
    assert event.time == int(source["ts"])
    # the renamed source fields are gone, only canonical names remain
    assert not {"id", "ts", "player", "action", "amount_cents", "invitees", "tag"} & set(record)
    if "amount_cents" in source:
        assert event.get("value") == source["amount_cents"]
    if "level" in source["player"]:
        assert event.get("level") == source["player"]["level"]
    if "invitees" in source:
        assert event.get("recipients") == source["invitees"]
        assert event.get("tracking_tag") == source["tag"]
    destinations = legacy.destinations(event.name, DESTINATIONS)
    assert destinations == DESTINATIONS
    assert [m.destination for m in messages_for(event, destinations)] == list(DESTINATIONS)


def test_the_legacy_log_maps_to_the_documented_message_kinds(legacy: RecordMapping) -> None:
    kinds: Counter[str] = Counter()
    keys = set()
    for number, line in _legacy_lines():
        event = validate(legacy.apply(parse_line(line)), now=NOW, source=f"legacy:{number}")
        keys.add(event.key)
        for message in messages_for(event, ("kontagent",)):
            kinds[message.kind] += 1
    # sample_data/README.md: ins 10, evt 16, apa 13, apr 5, mtu 16; 60 unique events
    assert kinds == Counter({"ins": 10, "evt": 16, "apa": 13, "apr": 5, "mtu": 16})
    assert len(keys) == 60


def test_the_legacy_mapping_routes_page_requests_to_kontagent_only(legacy: RecordMapping) -> None:
    both: tuple[Destination, ...] = ("kontagent", "kissmetrics")
    assert legacy.destinations("page_request_and_user_location", both) == ("kontagent",)
    assert legacy.destinations("level_up", both) == both
    assert legacy.destinations("alias", both) == both


# apply ------------------------------------------------------------------------------------------


def test_an_empty_mapping_passes_records_through_as_a_copy() -> None:
    mapping = parse_mapping("")
    record = {"event": "apa", "anything": {"nested": [1]}}
    applied = mapping.apply(record)
    assert applied == record
    assert applied is not record
    assert RecordMapping().apply(record) == record


def test_a_routing_only_mapping_passes_records_through() -> None:
    mapping = parse_mapping('[destinations.kissmetrics]\ninclude = ["alias"]\n')
    assert mapping.apply({"event": "join", "x": 1}) == {"event": "join", "x": 1}


DOTTED = parse_mapping(
    """
[fields]
user_id = "player.uid"
level = "player.stats.level"
event = "action"
"""
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {"player": {"uid": 7, "stats": {"level": 3}}, "action": "x"},
            {"user_id": 7, "level": 3, "event": "x"},
        ),
        ({"player": {"uid": 7}, "action": "x"}, {"user_id": 7, "event": "x"}),
        ({"player": {"stats": {"level": 3}}}, {"level": 3}),
        ({"player": {"uid": 7, "stats": 3}}, {"user_id": 7}),  # a scalar on the path
        ({"player": {"uid": 7, "stats": [{"level": 3}]}}, {"user_id": 7}),  # a list, no index
        ({"player": "7"}, {}),
        ({"player": None}, {}),
        ({"player": {"uid": None}}, {}),  # None is absent
        ({}, {}),
        ({"player": {"uid": 0, "stats": {"level": 0}}}, {"user_id": 0, "level": 0}),
        ({"player": {"uid": ""}}, {"user_id": ""}),  # falsy but present: kept
        ({"player": {"uid": False}}, {"user_id": False}),
    ],
)
def test_dotted_paths_reach_into_nested_objects(
    source: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert DOTTED.apply(source) == expected


def test_unmapped_fields_pass_through() -> None:
    source = {
        "player": {"uid": 7},
        "action": "x",
        "time": 1_700_000_000,
        "city": "Zürich",
        "not_canonical": [1, 2],
    }
    assert DOTTED.apply(source) == {
        "user_id": 7,
        "event": "x",
        "time": 1_700_000_000,
        "city": "Zürich",
        "not_canonical": [1, 2],
    }


def test_apply_does_not_change_the_source_record() -> None:
    source = {"player": {"uid": 7, "stats": {"level": 3}}, "action": "x"}
    DOTTED.apply(source)
    assert source == {"player": {"uid": 7, "stats": {"level": 3}}, "action": "x"}


def test_a_mapped_field_wins_over_a_source_field_of_the_same_name() -> None:
    assert DOTTED.apply({"action": "mapped", "event": "original"})["event"] == "mapped"


def test_a_source_field_of_a_canonical_name_never_stands_in_for_its_mapped_path() -> None:
    # the mapping says where event comes from: a source field that only happens to be
    # called "event" is not used when that path is absent
    assert "event" not in DOTTED.apply({"event": "original"})


def test_one_source_field_may_feed_two_canonical_fields() -> None:
    mapping = parse_mapping('[fields]\nuser_id = "uid"\nalias = "uid"\n')
    assert mapping.apply({"uid": "bob"}) == {"user_id": "bob", "alias": "bob"}


CONSTANTS = parse_mapping(
    """
[fields]
user_id = "player.uid"
[constants]
channel = "feedpub"
installed = false
value = 0
user_id = 1
properties = { source = "legacy" }
"""
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            {},
            {
                "channel": "feedpub",
                "installed": False,
                "value": 0,
                "user_id": 1,
                "properties": {"source": "legacy"},
            },
        ),
        (
            {"channel": "stream", "installed": True, "value": 99, "player": {"uid": 7}},
            {
                "channel": "stream",
                "installed": True,
                "value": 99,
                "user_id": 7,
                "properties": {"source": "legacy"},
            },
        ),
        (
            {"channel": "", "value": 0, "installed": False, "properties": {}},
            # present values are kept even when falsy
            {
                "channel": "",
                "installed": False,
                "value": 0,
                "user_id": 1,
                "properties": {},
            },
        ),
        (
            {"player": {"uid": None}},  # the mapped path is absent: the constant fills it
            {
                "channel": "feedpub",
                "installed": False,
                "value": 0,
                "user_id": 1,
                "properties": {"source": "legacy"},
            },
        ),
    ],
)
def test_constants_only_fill_absent_fields(
    source: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert CONSTANTS.apply(source) == expected


def test_constants_fill_fields_that_are_null() -> None:
    applied = CONSTANTS.apply({"player": {"uid": 7}, "channel": None, "value": None})
    assert applied["channel"] == "feedpub"
    assert applied["value"] == 0


def test_constants_alone_make_a_mapping() -> None:
    mapping = parse_mapping('[constants]\ncountry = "FR"\n')
    assert mapping.apply({"event": "cpu"}) == {"event": "cpu", "country": "FR"}


EVENTS = parse_mapping(
    """
[fields]
event = "action"
[events]
join = "application_installed"
buy = "revenue_tracking"
"Level Up" = "level_up"
"""
)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("join", "application_installed"),
        ("buy", "revenue_tracking"),
        ("Level Up", "level_up"),
        ("JOIN", "JOIN"),  # names are case-sensitive
        ("revenue_tracking", "revenue_tracking"),  # canonical names pass through
        ("unknown", "unknown"),
        (3, 3),  # not a name: left for validate to refuse
    ],
)
def test_event_renames(action: object, expected: object) -> None:
    assert EVENTS.apply({"action": action})["event"] == expected


def test_event_renames_apply_to_a_canonical_event_field() -> None:
    mapping = parse_mapping('[events]\njoin = "apa"\n')
    assert mapping.apply({"event": "join", "user_id": 1}) == {"event": "apa", "user_id": 1}


def test_event_renames_apply_to_a_constant_event() -> None:
    mapping = parse_mapping('[constants]\nevent = "join"\n[events]\njoin = "apa"\n')
    assert mapping.apply({})["event"] == "apa"


def test_renames_are_not_chained() -> None:
    mapping = parse_mapping('[events]\na = "b"\nb = "c"\n')
    assert mapping.apply({"event": "a"})["event"] == "b"


def test_without_event_there_is_nothing_to_rename() -> None:
    assert "event" not in EVENTS.apply({"other": 1})


# routing ----------------------------------------------------------------------------------------

BOTH: tuple[Destination, ...] = ("kontagent", "kissmetrics")


@pytest.mark.parametrize(
    ("toml", "event", "expected"),
    [
        ("", "level_up", BOTH),
        ("", "alias", BOTH),
        ('[destinations.kontagent]\ninclude = ["*"]\n', "anything", BOTH),
        ("[destinations.kontagent]\n", "anything", BOTH),  # include defaults to "*"
        ('[destinations.kontagent]\nexclude = ["alias"]\n', "alias", ("kissmetrics",)),
        ('[destinations.kontagent]\nexclude = ["alias"]\n', "level_up", BOTH),
        (
            '[destinations.kissmetrics]\ninclude = ["alias", "user_information"]\n',
            "alias",
            BOTH,
        ),
        (
            '[destinations.kissmetrics]\ninclude = ["alias", "user_information"]\n',
            "level_up",
            ("kontagent",),
        ),
        ("[destinations.kissmetrics]\ninclude = []\n", "alias", ("kontagent",)),
        (
            '[destinations.kissmetrics]\ninclude = ["*", "alias"]\nexclude = ["alias"]\n',
            "alias",
            ("kontagent",),
        ),
        (
            '[destinations.kissmetrics]\ninclude = ["alias"]\nexclude = ["alias"]\n',
            "alias",
            ("kontagent",),
        ),
        (
            "[destinations.kontagent]\ninclude = []\n[destinations.kissmetrics]\ninclude = []\n",
            "alias",
            (),
        ),
        ('[destinations.kissmetrics]\ninclude = ["Alias"]\n', "alias", ("kontagent",)),
    ],
)
def test_routing_include_and_exclude(
    toml: str, event: str, expected: tuple[Destination, ...]
) -> None:
    assert parse_mapping(toml).destinations(event, BOTH) == expected


@pytest.mark.parametrize(
    ("enabled", "expected"),
    [
        (("kontagent",), ("kontagent",)),
        (("kissmetrics",), ()),
        ((), ()),
        (("kissmetrics", "kontagent"), ("kontagent",)),
    ],
)
def test_routing_only_returns_enabled_destinations(
    enabled: tuple[Destination, ...], expected: tuple[Destination, ...]
) -> None:
    mapping = parse_mapping('[destinations.kissmetrics]\nexclude = ["level_up"]\n')
    assert mapping.destinations("level_up", enabled) == expected


def test_routing_keeps_the_enabled_order() -> None:
    reverse: tuple[Destination, ...] = ("kissmetrics", "kontagent")
    assert parse_mapping("").destinations("x", reverse) == reverse


def test_parsed_routes() -> None:
    mapping = parse_mapping(
        '[destinations.kissmetrics]\ninclude = ["a", "b"]\nexclude = ["b"]\n'
        "[destinations.kontagent]\n"
    )
    assert mapping.routes == {
        "kissmetrics": Route(frozenset({"a", "b"}), frozenset({"b"})),
        "kontagent": Route(),
    }


@pytest.mark.parametrize(
    ("route", "event", "accepts"),
    [
        (Route(), "x", True),
        (Route(frozenset({"*"}), frozenset({"x"})), "x", False),
        (Route(frozenset({"x"})), "x", True),
        (Route(frozenset({"x"})), "y", False),
        (Route(frozenset()), "x", False),
    ],
)
def test_route_accepts(route: Route, event: str, accepts: bool) -> None:
    assert route.accepts(event) is accepts


# MappingError -----------------------------------------------------------------------------------

WHERE = "conf/orchard.toml"


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ("[fields", ("not valid TOML",)),
        ("[fields]\nevent = ", ("not valid TOML",)),
        ('[fields]\nevent = "a"\nevent = "b"\n', ("not valid TOML",)),
        ("event = action\n", ("not valid TOML",)),
        ('[field]\nevent = "action"\n', ("unknown table(s) ['field']", "expected")),
        ('event = "action"\n', ("unknown table(s) ['event']",)),
        ("[fields]\n[routing]\n", ("unknown table(s) ['routing']",)),
        ('fields = "action"\n', ("[fields] must be a table",)),
        ("constants = 1\n", ("[constants] must be a table",)),
        ('events = ["a"]\n', ("[events] must be a table",)),
        ("destinations = 3\n", ("[destinations] must be a table",)),
        (
            '[fields]\nuser = "player.uid"\n',
            ("[fields] 'user' is not a canonical field", "expected one of"),
        ),
        ('[fields]\nts = "ts"\n', ("[fields] 'ts' is not a canonical field",)),
        ('[constants]\nsource = "legacy"\n', ("[constants] 'source' is not a canonical field",)),
        ("[constants]\nUser_Id = 1\n", ("[constants] 'User_Id' is not a canonical field",)),
        ("[fields]\ntime = 1\n", ("[fields] time must be a field name or dotted path",)),
        ("[fields]\ntime = []\n", ("[fields] time needs at least one path",)),
        ("[fields.time]\npaths = 'ts'\n", ("[fields] time has unknown key(s) ['paths']",)),
        ("[fields.time]\nunit = 'ms'\n", ("[fields] time needs a path, a join or a template",)),
        ("[fields.value]\npath = 'v'\nunit = 'ms'\n", ("['unit'] apply to time only",)),
        ("[fields.time]\npath = 't'\nunit = 'days'\n", ("unit must be one of",)),
        ("[fields.time]\npath = 't'\nformat = 'Y-m-d'\n", ("format must be a strptime",)),
        ("[fields.time]\npath = 't'\nzone = 'Mars/Olympus'\n", ("neither an IANA time zone name",)),
        ("[fields.time]\npath = 't'\nzone = '+25:00'\n", ("less than 24 hours",)),
        ("[fields.value]\npath = 'v'\nscale = 'x'\n", ("scale must be a finite number",)),
        ("[fields.gender]\npath = 'g'\nmap = 'f'\n", ("map must be a table",)),
        ("[fields]\ntime = true\n", ("[fields] time must be a field name",)),
        ('[fields]\ntime = ""\n', ("[fields] time must be a field name or dotted path",)),
        (
            '[fields]\nuser_id = "player..uid"\n',
            ("[fields] user_id must be a field name or dotted path",),
        ),
        ('[fields]\nuser_id = ".uid"\n', ("[fields] user_id must be a field name or dotted path",)),
        (
            '[fields]\nuser_id = "player."\n',
            ("[fields] user_id must be a field name or dotted path",),
        ),
        ('[fields]\nuser_id = "."\n', ("[fields] user_id must be a field name or dotted path",)),
        ("[events]\njoin = 1\n", ("[events] join must map to an event name",)),
        ('[events]\njoin = ""\n', ("[events] join must map to an event name",)),
        ('[events]\njoin = ["apa"]\n', ("[events] join must map to an event name",)),
        (
            '[destinations.mixpanel]\ninclude = ["*"]\n',
            ("[destinations.mixpanel] is not a destination", "expected one of"),
        ),
        ("[destinations.Kontagent]\n", ("[destinations.Kontagent] is not a destination",)),
        (
            '[destinations.kontagent]\nincludes = ["*"]\n',
            ("[destinations.kontagent] takes include and exclude lists",),
        ),
        (
            '[destinations.kissmetrics]\ninclude = ["*"]\nrate = 10\n',
            ("[destinations.kissmetrics] takes include and exclude lists",),
        ),
        (
            "[destinations]\nkontagent = true\n",
            ("[destinations.kontagent] takes include and exclude lists",),
        ),
        (
            '[destinations]\nkontagent = ["*"]\n',
            ("[destinations.kontagent] takes include and exclude lists",),
        ),
        (
            '[destinations.kontagent]\ninclude = "*"\n',
            ("destinations.kontagent.include must be a list of event names",),
        ),
        (
            "[destinations.kontagent]\ninclude = [1]\n",
            ("destinations.kontagent.include must be a list of event names",),
        ),
        (
            '[destinations.kontagent]\ninclude = ["apa", 2]\n',
            ("destinations.kontagent.include must be a list of event names",),
        ),
        (
            '[destinations.kissmetrics]\ninclude = [["alias"]]\n',
            ("destinations.kissmetrics.include must be a list of event names",),
        ),
        (
            '[destinations.kissmetrics]\nexclude = "alias"\n',
            ("destinations.kissmetrics.exclude must be a list of event names",),
        ),
        (
            "[destinations.kissmetrics]\nexclude = [true]\n",
            ("destinations.kissmetrics.exclude must be a list of event names",),
        ),
        (
            "[destinations.kissmetrics]\nexclude = { alias = true }\n",
            ("destinations.kissmetrics.exclude must be a list of event names",),
        ),
    ],
)
def test_mapping_errors_name_the_file_and_the_table(toml: str, fragments: tuple[str, ...]) -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping(toml, WHERE)
    message = str(error.value)
    assert message.startswith(f"{WHERE}: ")
    for fragment in fragments:
        assert fragment in message


def test_mapping_errors_default_to_naming_the_mapping() -> None:
    with pytest.raises(MappingError, match=r"^mapping: not valid TOML"):
        parse_mapping("[fields")


def test_mapping_error_is_a_value_error() -> None:
    assert issubclass(MappingError, ValueError)


@pytest.mark.parametrize(
    "toml",
    [
        "",
        "# only a comment\n",
        "[fields]\n[constants]\n[events]\n[destinations]\n",
        '[fields]\nuser_id = "a.b.c.d"\n',
        '[fields]\n"event" = "Event Name"\n',  # a source name with a space is fine
        "[destinations.kontagent]\ninclude = []\nexclude = []\n",
    ],
)
def test_valid_mappings_parse(toml: str) -> None:
    assert isinstance(parse_mapping(toml, WHERE), RecordMapping)


def test_the_sample_mapping_parses_to_what_it_says(legacy: RecordMapping) -> None:
    assert {rule.canonical: rule.paths[0] for rule in legacy.fields} == {
        "event_id": ("id",),
        "time": ("ts",),
        "user_id": ("player", "uid"),
        "event": ("action",),
        "value": ("amount_cents",),
        "level": ("player", "level"),
        "recipients": ("invitees",),
        "tracking_tag": ("tag",),
    }
    assert legacy.constants == ()
    assert dict(legacy.events) == LEGACY_RENAMES
    assert legacy.routes == {
        "kontagent": Route(frozenset({"*"}), frozenset()),
        "kissmetrics": Route(frozenset({"*"}), frozenset({"page_request_and_user_location"})),
    }


def test_exclude_star_excludes_every_event() -> None:
    mapping = parse_mapping('[destinations.kontagent]\ninclude = ["*"]\nexclude = ["*"]\n')
    assert mapping.destinations("level_up", ("kontagent", "kissmetrics")) == ("kissmetrics",)


# The mapping language (beaconflow.model.field_rules) --------------------------------------

NOW_UTC = 1_800_000_000


def _time(toml: str, record: dict[str, Any]) -> int:
    """The event time the mapping gives ``record``, through validation."""
    mapped = parse_mapping(toml).apply({"user_id": 1, "event": "x", **record})
    return validate(mapped, now=NOW_UTC).time


@pytest.mark.parametrize(
    ("unit", "value", "expected"),
    [
        ("s", 1_710_144_020, 1_710_144_020),
        ("ms", 1_710_144_020_123, 1_710_144_020),
        ("ms", "1710144020123", 1_710_144_020),  # an epoch written as a string
        ("us", 1_710_144_020_123_456, 1_710_144_020),
        ("ns", 1_710_144_020_123_456_789, 1_710_144_020),
        ("ms", 1_710_144_020_999.9, 1_710_144_020),
    ],
)
def test_an_epoch_in_any_unit(unit: str, value: object, expected: int) -> None:
    toml = f'[fields.time]\npath = "ts"\nunit = "{unit}"\n'
    assert _time(toml, {"ts": value}) == expected


def test_a_strptime_format_with_the_zone_of_its_naive_times() -> None:
    amplitude = (
        '[fields.time]\npath = "event_time"\nformat = "%Y-%m-%d %H:%M:%S.%f"\nzone = "UTC"\n'
    )
    assert _time(amplitude, {"event_time": "2024-03-11 20:24:00.460000"}) == 1_710_188_640
    # a legacy project's local times, seven hours behind UTC in March (PDT)
    pacific = '[fields.time]\npath = "t"\nzone = "America/Los_Angeles"\n'
    assert _time(pacific, {"t": "2024-03-11T13:24:00"}) == 1_710_188_640
    assert _time('[fields.time]\npath = "t"\nzone = "-07:00"\n', {"t": "2024-03-11T13:24:00"}) == (
        1_710_188_640
    )
    # a time that already has an offset keeps it
    assert _time(pacific, {"t": "2024-03-11T20:24:00Z"}) == 1_710_188_640
    with pytest.raises(RecordError, match="does not match the format"):
        _time(amplitude, {"event_time": "11/03/2024"})


def test_rfc3339_lower_case_t_and_z() -> None:
    assert _time("", {"time": "2024-03-11t20:24:00z"}) == 1_710_188_640


def test_fallbacks_take_the_first_path_with_a_value() -> None:
    mapping = parse_mapping('[fields]\nuser_id = ["userId", "anonymousId"]\n')
    assert mapping.apply({"userId": None, "anonymousId": "anon-1"})["user_id"] == "anon-1"
    assert mapping.apply({"userId": "u-9", "anonymousId": "anon-1"})["user_id"] == "u-9"
    assert "user_id" not in mapping.apply({"userId": None})


def test_paths_index_lists() -> None:
    mapping = parse_mapping('[fields]\nname = "items.1.sku"\n')
    assert mapping.apply({"items": [{"sku": "a"}, {"sku": "b"}]})["name"] == "b"
    assert "name" not in mapping.apply({"items": [{"sku": "a"}]})
    assert "name" not in mapping.apply({"items": {"1": {"sku": "b"}}})


@pytest.mark.parametrize(
    ("value", "expected"),
    [(19.99, 1999), ("19.99", 1999), (0.125, 12), (0.135, 14), (3, 300), ("x", "x"), (True, True)],
)
def test_scaling_rounds_half_to_even_to_a_whole_number(value: object, expected: object) -> None:
    mapping = parse_mapping('[fields.value]\npath = "revenue"\nscale = 100\n')
    assert mapping.apply({"revenue": value})["value"] == expected


def test_value_maps() -> None:
    mapping = parse_mapping(
        '[fields.gender]\npath = "traits.gender"\nmap = { female = "f", male = "m" }\n'
    )
    assert mapping.apply({"traits": {"gender": "female"}})["gender"] == "f"
    assert mapping.apply({"traits": {"gender": "u"}})["gender"] == "u"  # not in the map: as is


def test_a_composite_event_id() -> None:
    mapping = parse_mapping('[fields.event_id]\njoin = ["source", "id"]\n')
    assert mapping.apply({"source": "/shop", "id": "42"})["event_id"] == "/shop/42"
    # one part missing: no id (content identifies the event), never half of one
    assert "event_id" not in mapping.apply({"id": "42"})


def test_a_canonical_named_source_field_can_be_dropped() -> None:
    mapping = parse_mapping("[fields]\ncity = false\nvalue = false\n")
    assert mapping.apply({"city": "Oslo", "value": 3, "event": "x"}) == {"event": "x"}


@pytest.mark.parametrize("document", ["docs/input.md", "README.md"])
def test_every_mapping_in_the_documentation_parses(document: str) -> None:
    text = (Path(__file__).resolve().parents[2] / document).read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    # the README's mapping at a glance moved to docs/input.md (issue 18): the README may
    # have none, docs/input.md has that one and the others
    assert len(blocks) >= (9 if document == "docs/input.md" else 0)
    for block in blocks:
        assert isinstance(parse_mapping(block, document), RecordMapping)


def test_a_rule_reading_into_properties_leaves_the_other_properties() -> None:
    # Segment: value from properties.revenue; the event's other properties still go to
    # KISSmetrics (a non-canonical container a path reaches into is renamed away, as before)
    mapping = parse_mapping(
        '[fields]\nvalue = { path = "properties.revenue", scale = 100 }\nuser_id = "player.uid"\n'
    )
    record = {"properties": {"revenue": 12.51, "currency": "USD"}, "player": {"uid": 7}}
    assert mapping.apply(record) == {
        "value": 1251,
        "properties": {"revenue": 12.51, "currency": "USD"},
        "user_id": 7,
    }
