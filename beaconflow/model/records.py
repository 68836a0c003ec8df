"""The canonical event record: parsing a log line, validating it, and the event's identity.

Pure Python, no Beam. :func:`parse_line` turns one JSONL line into a dict (refusing NaN,
Infinity and nesting too deep to be a log record); :func:`validate` turns a canonical dict
into an :class:`Event` or raises :class:`RecordError` naming the field and the rule.
The schema is documented in docs/input.md ("The record").
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beaconflow.model import kissmetrics
from beaconflow.model.errors import BeaconflowError

#: The earliest event time accepted: 2009-01-01T00:00:00Z (KISSmetrics takes nothing older).
EARLIEST = kissmetrics.EARLIEST

_SURROGATE = re.compile("[\ud800-\udfff]")

#: How deep a record's JSON may nest; deeper is a broken or hostile line, not an event.
MAX_DEPTH = 32

#: The canonical record's fields, in the order docs/input.md and the Parquet schema list them.
CANONICAL_FIELDS: tuple[str, ...] = (
    "event_id", "time", "user_id", "event", "name", "recipients", "tracking_tag",
    "short_tracking_tag", "channel", "installed", "subtype1", "subtype2", "subtype3",
    "value", "level", "birth_year", "gender", "city", "country", "state", "postal_code",
    "friend_count", "goal_counts", "ip", "page_address", "alias", "properties",
)  # fmt: skip

#: Every field of the canonical record; others are ignored.
FIELDS = frozenset(CANONICAL_FIELDS)

#: The fields that hold an object (name -> value).
OBJECT_FIELDS = ("goal_counts", "properties")
#: The fields that hold a list.
LIST_FIELDS = ("recipients",)
#: The fields a Parquet column may hold as JSON text; the reader decodes them.
JSON_TEXT_FIELDS = OBJECT_FIELDS + LIST_FIELDS

STRING_FIELDS = frozenset(
    {
        "name", "tracking_tag", "short_tracking_tag", "channel", "subtype1", "subtype2",
        "subtype3", "gender", "city", "country", "state", "postal_code", "ip", "page_address",
        "alias",
    }
)  # fmt: skip
INT_FIELDS = frozenset({"value", "level", "birth_year", "friend_count"})
#: The fields every event has: its identity (optional), time, user and name.
CORE_FIELDS = ("event_id", "time", "user_id", "event")
#: The fields an Event keeps in ``fields``: all but its core fields.
OPTIONAL_FIELDS = tuple(sorted(FIELDS - set(CORE_FIELDS)))


class RecordError(BeaconflowError, ValueError):
    """A record is not a valid event: names the field and the rule broken."""

    def __init__(self, field: str | None, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"field {field!r}: {rule}" if field else rule)

    def read_from(self, origin: str | None) -> RecordError:
        """The error naming where a mapping read its field from (``userId or anonymousId``)."""
        if origin is None or self.field is None:
            return self
        return RecordError(f"{self.field}", f"{self.rule} (read from {origin})")


@dataclass(frozen=True)
class Event:
    """A validated event: identity, time in whole seconds (UTC), user, name, other fields."""

    key: str
    time: int
    user_id: str | int
    name: str
    fields: Mapping[str, Any]
    source: str

    def get(self, name: str) -> Any:
        """An optional field's value, or None."""
        return self.fields.get(name)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


#: One decoder for every line (json.loads with an option builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _depth(value: object, limit: int) -> int:
    stack: list[tuple[object, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _has_surrogate(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json(text: str, field: str | None = None) -> Any:
    """The value of a JSON text, or RecordError naming what is wrong with it.

    Refused: malformed JSON, NaN and Infinity, nesting deeper than :data:`MAX_DEPTH`, and
    escapes of lone surrogates (U+D800 to U+DFFF), which are not text and cannot be sent.
    """
    if text.startswith("\ufeff"):  # json.loads refused it; the decoder alone says less
        raise RecordError(
            field, "malformed JSON: Unexpected UTF-8 BOM (a byte order mark, U+FEFF) before it"
        )
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise RecordError(field, f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:
        raise RecordError(field, f"malformed JSON: {error}") from None
    # each level of nesting opens with a bracket: a text with few cannot nest deep
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise RecordError(field, f"JSON nested deeper than {MAX_DEPTH} levels")
    # a decoded line can only hold a surrogate through a \u escape
    if "\\u" in text and _has_surrogate(value):
        raise RecordError(field, "contains a lone surrogate escape (\\ud800-\\udfff): not text")
    return value


def parse_line(line: str) -> dict[str, Any]:
    """The JSON object on one log line; raises RecordError for anything else."""
    value = parse_json(line)
    if not isinstance(value, dict):
        raise RecordError(None, f"a record must be a JSON object, got {type(value).__name__}")
    return value


#: RFC 3339 allows a lower-case ``t`` and ``z``; Python's parser takes upper case only.
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[tT](.*?)([zZ]?)")


def fromisoformat(text: str) -> datetime:
    """``datetime.fromisoformat``, and RFC 3339's lower-case letters when that refuses them."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        match = _RFC3339.fullmatch(text)
        if match is None:
            raise
    date, time, zulu = match.groups()
    return datetime.fromisoformat(f"{date}T{time}{'Z' if zulu else ''}")


def parse_time(value: object) -> int:
    """Whole seconds since the epoch, UTC, from ISO-8601 with an offset or Z, or epoch seconds."""
    if isinstance(value, bool):
        raise RecordError("time", "must be ISO-8601 or epoch seconds, not a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise RecordError(
                "time",
                "a timestamp column needs a time zone (UTC); give the mapping's time rule a "
                "zone, or --source-timezone",
            )
        return math.trunc(value.timestamp())
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError("time", f"must be a finite number of seconds, got {value}")
        return math.trunc(value)
    if isinstance(value, str):
        try:
            parsed = fromisoformat(value)
        except ValueError:
            raise RecordError(
                "time", f"must be ISO-8601 with an offset or Z, or epoch seconds, got {value!r}"
            ) from None
        if parsed.tzinfo is None:
            raise RecordError(
                "time",
                f"needs an offset or Z (UTC), got {value!r}; give the mapping's time rule a "
                "zone, or --source-timezone",
            )
        return math.trunc(parsed.timestamp())
    raise RecordError("time", f"must be ISO-8601 or epoch seconds, not {type(value).__name__}")


def plain(value: object) -> str:
    """JSON's fallback for values it has no form for: timestamps as ISO text, else str()."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def identity(record: Mapping[str, Any]) -> str:
    """The event's identity: its ``event_id`` if it has one, else a hash of its content.

    The content hash is over the record with keys sorted, so the same fields and values in
    any key order are the same event, wherever they were read.
    """
    explicit = explicit_identity(record)
    if explicit is not None:
        return explicit
    # null fields are absent fields; timestamps (Parquet) hash as their ISO text
    present = {key: value for key, value in record.items() if value is not None}
    seed = "content\x00" + json.dumps(
        present, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=plain
    )
    return _digest(seed)


def explicit_identity(record: Mapping[str, Any]) -> str | None:
    """The identity of a record with an ``event_id`` (:func:`identity`), None without one.

    Only such an identity can be shared by records whose times differ: a content hash
    covers the time.
    """
    event_id = record.get("event_id")
    if event_id is None or event_id == "":
        return None
    return _digest("id\x00" + str(event_id))


def _digest(seed: str) -> str:
    return hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:32]


_OPTIONAL_SET = frozenset(OPTIONAL_FIELDS)


def _optional_names(record: Mapping[str, Any]) -> list[str]:
    """The optional fields ``record`` has (maybe null), in :data:`OPTIONAL_FIELDS`' order.

    A record holds a few of the 20-odd optional fields: intersecting its keys is cheaper
    than asking it for each one.
    """
    return sorted(_OPTIONAL_SET.intersection(record))


_PROPERTIES_RULE = "must be an object of name -> string, number or bool"


def _check_properties(value: object) -> None:
    """RecordError unless ``value`` is an object of scalars; it names the first bad key."""
    if not isinstance(value, dict):
        raise RecordError("properties", _PROPERTIES_RULE)
    for key, item in value.items():
        if (
            isinstance(item, dict | list)
            or item is None
            or (isinstance(item, float) and not math.isfinite(item))
        ):
            shown = "null" if item is None else type(item).__name__
            if isinstance(item, float):
                shown = str(item)
            raise RecordError("properties", f"{_PROPERTIES_RULE}; {key!r} is {shown}")


def _check_optional(record: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in _optional_names(record):
        value = record[name]
        if value is None:
            continue
        if name in STRING_FIELDS and not isinstance(value, str):
            raise RecordError(name, f"must be a string, not {type(value).__name__}")
        if name in INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int)):
            raise RecordError(name, f"must be an integer, not {type(value).__name__}")
        if name == "installed" and not isinstance(value, bool):
            raise RecordError(name, f"must be true or false, not {type(value).__name__}")
        if name == "recipients" and (
            not isinstance(value, list)
            or any(isinstance(r, bool) or not isinstance(r, int | str) for r in value)
        ):
            raise RecordError(name, "must be a list of user ids (strings or integers)")
        if name == "goal_counts" and (
            not isinstance(value, dict)
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value.values())
        ):
            raise RecordError(name, "must be an object of goal name -> integer count")
        if name == "properties":
            _check_properties(value)
        fields[name] = value
    return fields


def _unit_hint(seconds: int, now: float) -> str:
    """A hint for an epoch that reads as milliseconds, microseconds or nanoseconds."""
    for unit, factor in (("ms", 1_000), ("us", 1_000_000), ("ns", 1_000_000_000)):
        if EARLIEST <= seconds // factor <= now:
            return (
                f"; as {unit} it would be {seconds // factor}: give time's unit in the mapping "
                f'([fields.time] unit = "{unit}")'
            )
    return ""


def validate(
    record: Mapping[str, Any],
    *,
    now: float,
    source: str = "",
) -> Event:
    """The :class:`Event` of a canonical record, or RecordError naming what is wrong.

    ``now`` is the current time (seconds since the epoch): events after it are refused, as
    are events before 2009.
    """
    seconds, user_id, name, fields = _checked(record, now)
    return Event(identity(record), seconds, user_id, name, fields, source)


def event_time(record: Mapping[str, Any], *, now: float) -> int:
    """The time of the event :func:`validate` makes of ``record``, or the RecordError it raises.

    Every check of validate, without hashing the record's identity or building the event.
    """
    return _checked(record, now)[0]


def _checked(record: Mapping[str, Any], now: float) -> tuple[int, str | int, str, dict[str, Any]]:
    """The checked time, user, name and optional fields of a canonical record."""
    for required in ("time", "user_id", "event"):
        if record.get(required) is None:
            raise RecordError(required, "is required")
    event_id = record.get("event_id")
    if event_id is not None and (isinstance(event_id, bool) or not isinstance(event_id, str | int)):
        raise RecordError("event_id", f"must be a string, not {type(event_id).__name__}")
    seconds = parse_time(record["time"])
    if seconds < EARLIEST:
        raise RecordError(
            "time", f"is before 2009-01-01, which the services do not take: {seconds}"
        )
    if seconds > now:
        raise RecordError(
            "time", f"is in the future: {seconds} > now ({int(now)}){_unit_hint(seconds, now)}"
        )
    user_id = record["user_id"]
    if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
        raise RecordError("user_id", "must be a non-empty string or an integer")
    name = record["event"]
    if not isinstance(name, str) or not name:
        raise RecordError("event", "must be a non-empty string")
    return seconds, user_id, name, _check_optional(record)
