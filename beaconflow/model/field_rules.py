"""How a mapping reads one canonical field from a source record: paths, fallbacks, conversions.

A :class:`FieldRule` is one entry of a mapping's ``[fields]`` table, compiled once:

- ``"path"``: a dotted path; a part that is a whole number indexes a list (``items.0.sku``);
- ``["path", "other.path"]``: fallbacks, the first path whose value is neither null nor an
  empty text wins (a user id of ``""`` falls back to the anonymous id);
- ``false``: the canonical field is never taken from the source record (a source field that
  only happens to carry a canonical name);
- a table: ``path`` (one or a list), ``join`` (paths whose values make one text, joined by
  ``separator``, default ``"/"``: CloudEvents' ``source`` + ``id``) or ``template`` (a text
  with ``{path}`` placeholders: ``"Viewed {name} Page"``), and conversions applied in this
  order: ``map`` (a value map: ``{ female = "f", "*" = "u" }``, ``"*"`` for every other
  value), ``scale`` (a number to multiply by,
  rounded half to even to a whole number: dollars to cents), and for ``time`` only, ``unit``
  (an epoch's unit: ``s``, ``ms``, ``us``, ``ns``, or ``auto`` by magnitude: below 1e11
  seconds, below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds; a number or a
  text of digits), ``format`` (a
  ``strptime`` format), ``zone`` (the zone of a naive time: an IANA name or an offset such
  as ``+02:00``; without it, ``--source-timezone``'s) and ``wall_clock`` (the epoch counts the
  zone's wall-clock seconds, not UTC's: legacy Mixpanel projects). ``optional = true`` marks
  a path that may match no record of a run (the report does not warn about it).

A value a conversion cannot take is left as it is, and the record's validation then names the
field; a time that does not match the rule's ``format`` is a :class:`RecordError` naming it.
Pure Python, no Beam. Documented in docs/input.md ("The mapping file").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from beaconflow.model.errors import BeaconflowError
from beaconflow.model.records import RecordError, fromisoformat

#: Epoch units and how many of them make a second; ``auto`` (0) chooses by magnitude.
UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000, "auto": 0}
#: ``unit = "auto"``: the largest epoch read as each unit (seconds until the year 5138,
#: milliseconds from 1973, ...): an event time of the services' range is never ambiguous.
_AUTO_LIMITS = ((10**11, 1), (10**14, 1_000), (10**17, 1_000_000))
#: The keys a field's table may have.
RULE_KEYS = frozenset(
    {
        "path", "join", "separator", "template", "map", "scale", "unit", "format", "zone",
        "wall_clock", "optional",
    }
)  # fmt: skip
_TIME_KEYS = frozenset({"unit", "format", "zone", "wall_clock"})
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")

Path = tuple[str | int, ...]


class RuleError(BeaconflowError, ValueError):
    """A ``[fields]`` entry that cannot be a rule; the mapping adds its file and key."""


@dataclass(frozen=True)
class FieldRule:
    """How one canonical field is read: where from, and how its value is converted."""

    canonical: str
    paths: tuple[Path, ...] = ()
    join: tuple[Path, ...] = ()
    separator: str = "/"
    drop: bool = False
    value_map: Mapping[str, Any] | None = None
    scale: Decimal | None = None
    unit: int | None = None
    time_format: str | None = None
    zone: tzinfo | None = None
    wall_clock: bool = False
    #: A template's literal pieces, around the placeholders whose paths are ``join``.
    template: tuple[str, ...] | None = None
    #: The rule may find no value in a whole run: the report does not warn about it.
    optional: bool = False
    #: A list of templates: the rules of the others, tried in order after this one.
    alternatives: tuple[FieldRule, ...] = ()

    #: How the report names the rule: ``user_id = userId or anonymousId``.
    label: str = field(init=False, compare=False)
    #: Whether the rule does more than read a path (computed once: read is per record).
    converts: bool = field(init=False, compare=False)
    #: Compiled once: a reader per path, and the conversions in order.
    _getters: tuple[Callable[[Mapping[str, Any]], Any], ...] = field(
        init=False, compare=False, repr=False
    )
    _steps: tuple[Callable[[Any, tzinfo | None], Any], ...] = field(
        init=False, compare=False, repr=False
    )
    #: :meth:`read`, compiled for the rule's shape: what a mapping calls per record.
    reader: Callable[[Mapping[str, Any], tzinfo | None], Any] = field(
        init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.template is not None:
            paths = " or ".join(
                repr(_fill(rule.template or (), ["{" + _dotted(p) + "}" for p in rule.join]))
                for rule in (self, *self.alternatives)
            )
        elif self.join:
            paths = " + ".join(_dotted(path) for path in self.join)
        else:
            paths = " or ".join(_dotted(path) for path in self.paths)
        object.__setattr__(self, "label", f"{self.canonical} = {paths}")
        steps = _steps(self)
        object.__setattr__(self, "converts", bool(self.join or steps))
        object.__setattr__(self, "_steps", steps)
        getters = tuple(getter(path) for path in (self.join or self.paths))
        object.__setattr__(self, "_getters", getters)
        object.__setattr__(self, "reader", self._reader())

    def _reader(self) -> Callable[[Mapping[str, Any], tzinfo | None], Any]:
        """:meth:`read` as one closure for the common shapes (one path, at most one step)."""
        if self.alternatives:
            first, others = self.read, tuple(rule.read for rule in self.alternatives)

            def read_first(record: Mapping[str, Any], zone: tzinfo | None) -> Any:
                value = first(record, zone)
                for read in others:
                    if value is not None:
                        break
                    value = read(record, zone)
                return value

            return read_first
        if self.join or len(self.paths) != 1 or len(self._steps) > 1:
            return self.read
        path = self.paths[0]
        if not self._steps:
            if len(path) == 1 and isinstance(path[0], str):
                key = path[0]
                return lambda record, zone: record.get(key)
            get = self._getters[0]
            return lambda record, zone: get(record)
        get, step = self._getters[0], self._steps[0]

        def read_one(record: Mapping[str, Any], zone: tzinfo | None) -> Any:
            value = get(record)
            return None if value is None else step(value, zone)

        return read_one

    @property
    def sources(self) -> tuple[Path, ...]:
        """Every path the rule reads."""
        return self.paths + self.join + tuple(p for r in self.alternatives for p in r.join)

    def read(self, record: Mapping[str, Any], zone: tzinfo | None = None) -> Any:
        """The field's value in ``record`` (None: absent), converted.

        ``zone`` is the zone of naive times when the rule names none (``--source-timezone``);
        a time rule without a zone leaves a naive time naive and the mapping places it.
        """
        if self.join:
            parts = [get(record) for get in self._getters]
            if None in parts:
                return None
            texts = [part if type(part) is str else _text(part) for part in parts]
            if self.template is not None:
                value: Any = _fill(self.template, texts)
            else:
                value = self.separator.join(texts)
        else:
            for get in self._getters:
                value = get(record)
                if value is not None and value != "":
                    break
            if value is None or not self.converts:  # else the last path's (maybe "")
                return value
        for step in self._steps:
            value = step(value, zone)
        return value


def getter(path: Path) -> Callable[[Mapping[str, Any]], Any]:
    """A reader of one path: the common short paths without resolve()'s loop."""
    if len(path) == 1 and isinstance(path[0], str):
        key: str = path[0]
        return lambda record: record.get(key)
    if len(path) == 2 and isinstance(path[0], str) and isinstance(path[1], str):
        outer, inner = str(path[0]), str(path[1])

        def get(record: Mapping[str, Any]) -> Any:
            value = record.get(outer)
            return value.get(inner) if isinstance(value, dict) else None

        return get

    def get_any(record: Mapping[str, Any]) -> Any:
        value: Any = record
        for part in path:
            if type(value) is dict and type(part) is str:
                value = value.get(part)
            elif isinstance(part, int) and type(value) is list and part < len(value):
                value = value[part]
            else:
                return resolve(value, (part,)) if isinstance(value, Mapping) else None
            if value is None:
                return None
        return value

    return get_any


def _steps(rule: FieldRule) -> tuple[Callable[[Any, tzinfo | None], Any], ...]:
    """The rule's conversions, in order: map, scale, epoch unit, format, zone."""
    steps: list[Callable[[Any, tzinfo | None], Any]] = []
    value_map = rule.value_map
    if value_map is not None:
        others = value_map.get("*")

        def mapped(value: Any, zone: tzinfo | None) -> Any:
            if type(value) is str:
                return value_map.get(value, value if others is None else others)
            if isinstance(value, int) and not isinstance(value, bool):
                return value_map.get(str(value), value if others is None else others)
            return value

        steps.append(mapped)
    scale = rule.scale
    if scale is not None:
        whole = int(scale) if scale == scale.to_integral_value() else None
        steps.append(lambda value, zone: _scaled(value, scale, whole))
    unit, wall_clock, own_zone = rule.unit, rule.wall_clock, rule.zone
    if unit is not None:

        def epoch(value: Any, zone: tzinfo | None) -> Any:
            if not wall_clock and unit:  # the common cases first: digits, or an int
                if type(value) is str and value.isdigit():
                    return int(value) // unit
                if type(value) is int:
                    return value // unit
            value = _from_epoch(value, unit)
            zone = own_zone or zone
            if wall_clock and zone is not None and isinstance(value, int):
                # the epoch counts the zone's wall clock: read it as a naive time there
                return (_EPOCH + timedelta(seconds=value)).replace(tzinfo=zone)
            return value

        steps.append(epoch)
    time_format = rule.time_format
    if time_format is not None:
        steps.append(lambda value, zone: _from_format(value, time_format))
    if own_zone is not None:
        steps.append(lambda value, zone: in_zone(value, own_zone))
    return tuple(steps)


_EPOCH = datetime(1970, 1, 1)


def _fill(pieces: tuple[str, ...], texts: list[str]) -> str:
    """A template's literal pieces with ``texts`` between them."""
    out = [pieces[0]]
    for text, piece in zip(texts, pieces[1:], strict=True):
        out += (text, piece)
    return "".join(out)


def _text(value: Any) -> str:
    """A joined part as text: a whole float (a Parquet double) without its ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _dotted(path: Path) -> str:
    return ".".join(str(part) for part in path)


def resolve(record: Mapping[str, Any], path: Path) -> Any:
    """The value at ``path`` (None when any step of it is missing)."""
    value: Any = record
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return None
            value = value[part]
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def _scaled(value: Any, scale: Decimal, whole: int | None = None) -> Any:
    """``value`` x ``scale`` rounded half to even; ``whole``: the scale if it is whole."""
    if whole is not None:
        if type(value) is int:
            return value * whole
        if type(value) is float:
            product = value * whole
            # far from a tie, the float product rounds as the decimal one does: the two
            # differ by a few units in the last place (|product| < 1e9: under 1e-6). Ties,
            # large values, NaN and infinities take the decimal way below
            if abs(product) < 1e9:
                nearest = round(product)
                if abs(abs(product - nearest) - 0.5) > 1e-3:
                    return int(nearest)
    if isinstance(value, bool):
        return value
    try:
        number = Decimal(str(value)) if isinstance(value, int | float | str) else None
    except InvalidOperation:
        return value
    if number is None or not number.is_finite():
        return value
    # round half to even, as the cents of a currency conversion are usually rounded
    return int((number * scale).to_integral_value())


def _from_epoch(value: Any, unit: int) -> Any:
    if isinstance(value, str):
        try:
            value = int(value) if value.isdigit() else float(value)
        except ValueError:
            return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if unit == 0 and not (isinstance(value, float) and not math.isfinite(value)):
        unit = next((u for limit, u in _AUTO_LIMITS if abs(value) < limit), 1_000_000_000)
    if isinstance(value, float):
        if not math.isfinite(value):
            return value
        return math.floor(value / unit)
    return value // unit


def _from_format(value: Any, time_format: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return datetime.strptime(value, time_format)
    except ValueError:
        raise RecordError("time", f"{value!r} does not match the format {time_format!r}") from None


def in_zone(value: Any, zone: tzinfo) -> Any:
    """A naive time (a datetime, or ISO text without an offset) placed in ``zone``."""
    if isinstance(value, str):
        if not value[:1].isdigit() or value.isdigit():
            return value  # not ISO text: an epoch as text, or what validation refuses
        try:
            parsed = fromisoformat(value)  # RFC 3339's lower-case t too
        except ValueError:
            return value  # validation names the field and the formats it takes
        return parsed.replace(tzinfo=zone) if parsed.tzinfo is None else value
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=zone)
    return value


def parse_zone(text: str) -> tzinfo:
    """A zone from an IANA name (``Europe/Paris``), ``UTC``, or an offset (``+02:00``)."""
    match = _OFFSET.fullmatch(text)
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        if delta >= timedelta(hours=24):
            raise RuleError(f"zone {text!r} is not an offset of less than 24 hours")
        return timezone(-delta if sign == "-" else delta)
    if text.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleError(
            f"zone {text!r} is neither an IANA time zone name nor an offset like +02:00"
        ) from None


def parse_path(text: object) -> Path:
    """A dotted path; whole-number parts index lists."""
    if not isinstance(text, str) or not text or "" in text.split("."):
        raise RuleError("must be a field name or dotted path")
    return tuple(int(part) if part.isdigit() else part for part in text.split("."))


def parse_paths(value: object) -> tuple[Path, ...]:
    """One dotted path, or a non-empty list of them."""
    if isinstance(value, list):
        if not value:
            raise RuleError("needs at least one path")
        return tuple(parse_path(item) for item in value)
    return (parse_path(value),)


def compile_rule(canonical: str, spec: object) -> FieldRule:
    """The rule of one ``[fields]`` entry; RuleError saying what is wrong with it."""
    if spec is False:
        return FieldRule(canonical, drop=True)
    if isinstance(spec, str | list):
        return FieldRule(canonical, paths=parse_paths(spec))
    if not isinstance(spec, dict):
        raise RuleError("must be a field name or dotted path, a list of them, false, or a table")
    unknown = set(spec) - RULE_KEYS
    if unknown:
        raise RuleError(
            f"has unknown key(s) {sorted(unknown)}; expected some of {sorted(RULE_KEYS)}"
        )
    if len({"path", "join", "template"} & set(spec)) != 1:
        raise RuleError("needs a path, a join or a template (one of them)")
    if canonical != "time" and _TIME_KEYS & set(spec):
        raise RuleError(f"{sorted(_TIME_KEYS & set(spec))} apply to time only")
    separator = spec.get("separator", "/")
    if not isinstance(separator, str):
        raise RuleError("separator must be a text")
    value_map = spec.get("map")
    if value_map is not None and not isinstance(value_map, dict):
        raise RuleError("map must be a table of source value = canonical value")
    scale = spec.get("scale")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale)
    ):
        raise RuleError("scale must be a finite number")
    unit = spec.get("unit")
    if unit is not None and unit not in UNITS:
        raise RuleError(f"unit must be one of {sorted(UNITS)}")
    time_format = spec.get("format")
    if time_format is not None and (not isinstance(time_format, str) or "%" not in time_format):
        raise RuleError("format must be a strptime format such as '%Y-%m-%d %H:%M:%S.%f'")
    if time_format is not None:
        try:
            datetime.strptime("", time_format)
        except ValueError as error:
            if "bad directive" in str(error):
                raise RuleError(f"format {time_format!r}: {error}") from None
    if unit is not None and time_format is not None:
        raise RuleError("takes a unit (an epoch) or a format (a text), not both")
    zone = spec.get("zone")
    if zone is not None and not isinstance(zone, str):
        raise RuleError("zone must be a text")
    wall_clock = spec.get("wall_clock", False)
    if not isinstance(wall_clock, bool):
        raise RuleError("wall_clock must be true or false")
    if wall_clock and unit is None:
        raise RuleError("wall_clock applies to an epoch: give its unit")
    optional = spec.get("optional", False)
    if not isinstance(optional, bool):
        raise RuleError("optional must be true or false")
    template = spec.get("template")
    join = parse_paths(spec["join"]) if "join" in spec else ()
    alternatives: tuple[FieldRule, ...] = ()
    if template is not None:
        templates = template if isinstance(template, list) else [template]
        if not templates or not all(
            isinstance(t, str) and _PLACEHOLDER.search(t) for t in templates
        ):
            raise RuleError(
                "template must be a text with {path} placeholders, or a list of them (the "
                "first whose paths all have a value wins): 'Viewed {name} Page'"
            )
        parts = _PLACEHOLDER.split(templates[0])  # literal, path, literal, ..., literal
        join = tuple(parse_path(name) for name in parts[1::2])
        template = tuple(parts[0::2])
        alternatives = tuple(
            compile_rule(canonical, {**spec, "template": other}) for other in templates[1:]
        )
    return FieldRule(
        canonical,
        paths=parse_paths(spec["path"]) if "path" in spec else (),
        join=join,
        separator=separator,
        value_map=None if value_map is None else dict(value_map),
        scale=None if scale is None else Decimal(str(scale)),
        unit=None if unit is None else UNITS[unit],
        time_format=time_format,
        zone=None if zone is None else parse_zone(zone),
        wall_clock=wall_clock,
        template=template,
        optional=optional,
        alternatives=alternatives,
    )
