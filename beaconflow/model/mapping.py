"""The --mapping TOML: how another log schema maps onto the canonical record, and routing.

A mapping reads canonical fields from other paths (dotted paths reach into nested objects and
lists, with fallbacks and conversions: :mod:`beaconflow.model.field_rules`), turns key/value
lists into objects (``[lists]``: GA4's ``event_params``), gathers the event's properties from
several objects (``[properties]``), adds constant fields, renames event names, applies other
rules to records of another type (``[[when]]``: Segment's ``type``), says how product event
names and ids become Kontagent's (``[options]``) and which canonical events go to which
destination. Without a mapping the input is the canonical record and every event goes to every
configured destination. The format is documented in docs/input.md ("The mapping file"); the
built-in mappings (``beaconflow mapping show NAME``) and ``sample_data/legacy_mapping.toml``
are examples.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Any

from beaconflow.model.errors import BeaconflowError
from beaconflow.model.field_rules import (
    FieldRule,
    Path,
    RuleError,
    compile_rule,
    getter,
    in_zone,
    parse_path,
    parse_paths,
    resolve,
)
from beaconflow.model.message import DESTINATIONS, Destination
from beaconflow.model.records import FIELDS

_TABLES = frozenset(
    {"fields", "constants", "events", "destinations", "lists", "properties", "when", "options"}
)
#: What a ``[[when]]`` entry may hold.
_CASE_KEYS = frozenset(
    {"field", "is", "matches", "fields", "constants", "properties", "destinations"}
)
#: ``[options]``: each option's values, the default first.
OPTIONS: Mapping[str, tuple[object, ...]] = {
    "event_names": ("types", "custom"),
    "kontagent_names": ("strict", "safe"),
    "kontagent_user_ids": ("numeric", "hash"),
    "pass_through": (True, False),
}


class MappingError(BeaconflowError, ValueError):
    """The mapping file is unusable: names the file, the table and what is wrong."""


@dataclass(frozen=True)
class Route:
    """Which canonical event names go to one destination: ``*`` includes every event."""

    include: frozenset[str] = frozenset({"*"})
    exclude: frozenset[str] = frozenset()

    def accepts(self, *names: str) -> bool:
        """Whether the event goes here: one of its names included, none excluded."""
        included = "*" in self.include or any(name in self.include for name in names)
        excluded = "*" in self.exclude or any(name in self.exclude for name in names)
        return included and not excluded


#: The canonical events whose own name is their ``name`` field.
CUSTOM_NAMES = frozenset({"custom_event", "custom_action", "evt"})
#: The route of a destination the mapping does not name.
_EVERY_EVENT = Route()


@dataclass(frozen=True)
class KeyValueList:
    """A list of ``{key, value}`` objects read as one object (GA4's ``event_params``).

    The value is the first of ``values`` that is not null (GA4 sets one of ``string_value``,
    ``int_value``, ``float_value``, ``double_value``).
    """

    path: Path
    key: Path
    values: tuple[Path, ...]

    def objectify(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """``record`` with the list at :attr:`path` replaced by its object (a copy)."""
        items = resolve(record, self.path)
        if not isinstance(items, list):
            return record
        obj: dict[str, Any] = {}
        for item in items:
            if not isinstance(item, dict):
                continue
            key = resolve(item, self.key)
            if key is None:
                continue
            value = None
            for path in self.values:
                value = resolve(item, path)
                if value is not None:
                    break
            obj.setdefault(str(key), value)
        return _replaced(record, self.path, obj)


def _replaced(record: Mapping[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A copy of ``record`` with ``value`` at ``path``; the containers on the way are copied."""
    out = dict(record)
    head = path[0]
    if len(path) == 1:
        out[str(head)] = value
    else:
        inner = out.get(str(head))
        if isinstance(inner, dict):
            out[str(head)] = _replaced(inner, path[1:], value)
    return out


def _flattened(obj: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(name, value)`` of an object, a nested object's under dotted names."""
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flattened(value, f"{name}.")
        else:
            yield name, value


@dataclass(frozen=True)
class PropertySources:
    """``[properties]``: the event's properties, gathered from one or several objects.

    The first source that has a name wins; ``include`` (when given) and ``exclude`` filter
    names (a name excludes its dotted children too). A value that is not a scalar (an
    object, a list, null, a non-finite number), a name KISSmetrics reserves (starting with
    ``_``) and a source that is not an object (counted under its path) are left out and
    counted, never a reason to refuse the event; ``flatten`` turns nested objects into
    dotted names first.
    """

    sources: tuple[Path, ...]
    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    flatten: bool = False
    optional: bool = False
    label: str = field(init=False, compare=False)
    _getters: tuple[Callable[[Mapping[str, Any]], Any], ...] = field(
        init=False, compare=False, repr=False
    )
    _source_names: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        paths = ", ".join(".".join(map(str, path)) for path in self.sources)
        object.__setattr__(self, "label", f"properties from {paths}")
        object.__setattr__(self, "_getters", tuple(getter(path) for path in self.sources))
        names = tuple(".".join(map(str, path)) for path in self.sources)
        object.__setattr__(self, "_source_names", names)

    def _excluded(self, name: str) -> bool:
        if name in self.exclude:
            return True
        if (
            self.include is not None
            and name not in self.include
            and not any(name.startswith(f"{kept}.") for kept in self.include)
        ):
            return True
        # an included name's dotted children may still be excluded by an excluded parent
        return "." in name and any(name.startswith(f"{gone}.") for gone in self.exclude)

    def collect(
        self, record: Mapping[str, Any], left_out: Counter[str] | None = None
    ) -> dict[str, Any] | None:
        """The properties (None: no source is an object in this record)."""
        found = False
        properties: dict[str, Any] = {}
        dropped: list[str] = []
        exclude, filtered = self.exclude, self.include is not None or self.flatten
        for get, source in zip(self._getters, self._source_names, strict=True):
            obj = get(record)
            if not isinstance(obj, dict):
                if obj is not None:  # a text or a list where an object was expected
                    dropped.append(source)
                continue
            found = True
            items = _flattened(obj) if self.flatten else obj.items()
            for name, value in items:
                if name in properties or name in exclude:
                    continue
                if filtered and self._excluded(name):
                    continue
                if (type(value) is str or type(value) is int) and name and name[0] != "_":
                    properties[name] = value  # the common case
                    continue
                if not name or name[0] == "_":
                    dropped.append(name or '""')  # KISSmetrics reserves names with a _
                    continue
                if isinstance(value, datetime):
                    value = value.isoformat()
                if (
                    value is None
                    or isinstance(value, dict | list | bytes)
                    or (isinstance(value, float) and not math.isfinite(value))
                ):
                    dropped.append(name)
                    continue
                properties[name] = value
        if dropped and left_out is not None:
            # a later source may have given the name a value: then it was not left out
            left_out.update({name for name in dropped if name not in properties})
        return properties if found else None


@dataclass(frozen=True)
class Options:
    """``[options]``: how a product's event names and user ids become Kontagent's."""

    #: ``custom``: an event name read from the record is the product's own (a Kontagent
    #: ``evt`` and a KISSmetrics event of that name), never one of the Ruby library's types
    #: (``invite_sent`` stays ``invite_sent``); ``[events]`` and constants still select types.
    event_names: str = "types"
    #: ``safe``: a Kontagent event name has every character outside [A-Za-z0-9_] replaced
    #: by ``_``; one past 32 characters is shortened (``kontagent.safe_name``).
    kontagent_names: str = "strict"
    #: ``hash``: a user id that is not a positive number is sent to Kontagent as a stable
    #: 63-bit hash of it (:func:`beaconflow.model.kontagent.hashed_user_id`).
    kontagent_user_ids: str = "numeric"
    #: False: a source field named like a canonical field is never read as one unless a rule
    #: reads it (Segment's ``channel``, a property bag's ``value``).
    pass_through: bool = True


@dataclass(frozen=True)
class RecordMapping:
    """A parsed mapping; :meth:`convert` turns a source record into a canonical one."""

    fields: tuple[FieldRule, ...] = ()
    constants: tuple[tuple[str, Any], ...] = ()
    events: Mapping[str, str] = field(default_factory=dict)
    routes: Mapping[Destination, Route] = field(default_factory=dict)
    lists: tuple[KeyValueList, ...] = ()
    properties: PropertySources | None = None
    cases: tuple[Case, ...] = ()
    options: Options = Options()
    #: A ``[[when]]`` case's destinations (None: every destination its routes take).
    only: tuple[Destination, ...] | None = None
    #: The zone of naive times no rule gives a zone to (``--source-timezone``).
    source_zone: tzinfo | None = None
    #: A ``[[when]]`` case's: the source fields the top-level rules keep from passing through
    #: (a field the top level renames away stays hidden when the case drops that rule).
    inherited_hidden: frozenset[str] = frozenset()
    #: Source fields that never pass through: those a rule reads whole or reaches into
    #: (renamed away; a canonical container such as ``properties`` stays), and the canonical
    #: fields a rule sets or drops (a same-named source field never stands in).
    hidden: frozenset[str] = field(init=False, repr=False, compare=False)
    plain: bool = field(init=False, repr=False, compare=False)
    #: (canonical field, its rule's read, its label) of the rules that read: per record.
    _readers: tuple[tuple[str, Callable[..., Any], str], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        readers = tuple((r.canonical, r.reader, r.label) for r in self.fields if not r.drop)
        object.__setattr__(self, "_readers", readers)
        hidden = {rule.canonical for rule in self.fields} | self.inherited_hidden
        for rule in self.fields:
            for path in rule.sources:
                # a field read whole is renamed away; so is a container a path reaches into,
                # unless it is itself a canonical field (a rule reading properties.revenue
                # must not take the event's other properties away)
                if len(path) == 1 or str(path[0]) not in FIELDS:
                    hidden.add(str(path[0]))
        if self.properties is not None:
            hidden.add("properties")
        if not self.options.pass_through:
            hidden |= FIELDS
        object.__setattr__(self, "hidden", frozenset(hidden))
        plain = not (
            self.fields
            or self.constants
            or self.events
            or self.lists
            or self.properties
            or self.cases
            or self.source_zone
            or self.options != Options()
        )
        object.__setattr__(self, "plain", plain)

    def select(self, record: Mapping[str, Any]) -> tuple[Mapping[str, Any], RecordMapping]:
        """``record`` with its key/value lists as objects, and the mapping that converts it.

        That is the first ``[[when]]`` case whose condition the record meets, or this one.
        """
        if self.plain:
            return record, self
        for keyvalue in self.lists:
            record = keyvalue.objectify(record)
        for case in self.cases:
            if case.matches(record):
                return record, case.mapping
        return record, self

    def convert(
        self,
        record: Mapping[str, Any],
        matched: Counter[str] | None = None,
        left_out: Counter[str] | None = None,
    ) -> tuple[dict[str, Any], RecordMapping]:
        """The canonical record for ``record``, and the mapping that made it (:meth:`select`).

        ``matched`` counts, by label, the rules that found a value (the report names those
        that never did); ``left_out`` counts the properties left out, by name. RecordError
        when a field's conversion refuses its value (a time not in its format).
        """
        prepared, chosen = self.select(record)
        return chosen.canonical(prepared, matched, left_out), chosen

    def apply(
        self, record: Mapping[str, Any], matched: Counter[str] | None = None
    ) -> dict[str, Any]:
        """The canonical record for ``record`` (:meth:`convert` without the mapping)."""
        return self.convert(record, matched)[0]

    def canonical(
        self,
        record: Mapping[str, Any],
        matched: Counter[str] | None = None,
        left_out: Counter[str] | None = None,
    ) -> dict[str, Any]:
        """The canonical record by this mapping's own rules (its cases not consulted)."""
        if self.plain:
            return dict(record)
        hidden = self.hidden
        out = {key: value for key, value in record.items() if key not in hidden}
        zone = self.source_zone
        for canonical, read, label in self._readers:
            value = read(record, zone)
            if value is not None:
                out[canonical] = value
                if matched is not None:
                    matched[label] += 1
        if self.properties is not None:
            properties = self.properties.collect(record, left_out)
            if properties is not None:
                out["properties"] = properties
                if matched is not None:
                    matched[self.properties.label] += 1
        event_read = out.get("event")
        for name, value in self.constants:
            if out.get(name) is None:
                out[name] = value
        event = out.get("event")
        if isinstance(event, str):
            if event in self.events:
                out["event"] = self.events[event]
            elif event_read and self.options.event_names == "custom":
                out["event"] = "custom_event"
                out["name"] = event
        if zone is not None and "time" in out:
            # a naive time, read by a rule without a zone of its own or passed through
            out["time"] = in_zone(out["time"], zone)
        return out

    def rules(self) -> Iterator[FieldRule | PropertySources]:
        """Every rule that reads the source record, this mapping's and its cases', once each."""
        seen: set[str] = set()
        for mapping in (self, *(case.mapping for case in self.cases)):
            found: list[FieldRule | PropertySources] = [
                rule for rule in mapping.fields if not rule.drop
            ]
            if mapping.properties is not None:
                found.append(mapping.properties)
            for rule in found:
                if rule.label not in seen:
                    seen.add(rule.label)
                    yield rule

    def labels(self) -> tuple[str, ...]:
        """The label of every rule that reads the source record (not the dropped fields)."""
        return tuple(rule.label for rule in self.rules())

    def required_labels(self) -> tuple[str, ...]:
        """The labels of the rules not marked optional: the report warns if one never matched."""
        return tuple(rule.label for rule in self.rules() if not rule.optional)

    def origin(self, canonical: str) -> str | None:
        """Where this mapping reads a canonical field from (``userId or anonymousId``)."""
        if canonical == "properties" and self.properties is not None:
            return self.properties.label.removeprefix("properties from ")
        for rule in self.fields:
            if rule.canonical == canonical and not rule.drop:
                return rule.label.split(" = ", 1)[1]
        return None

    def destinations(
        self, event: str, enabled: tuple[Destination, ...], name: object = None
    ) -> tuple[Destination, ...]:
        """The enabled destinations that this canonical event goes to.

        ``name`` is a custom event's own name (``event_names = "custom"``): a route names
        the product's event names as well as the canonical ones.
        """
        if self.only is not None:
            enabled = tuple(d for d in enabled if d in self.only)
        if not self.routes:
            return enabled
        names = (
            (event,) if event not in CUSTOM_NAMES or not isinstance(name, str) else (event, name)
        )
        return tuple(d for d in enabled if self.routes.get(d, _EVERY_EVENT).accepts(*names))

    def with_source_zone(self, zone: tzinfo | None) -> RecordMapping:
        """The mapping with ``zone`` for naive times (``--source-timezone``), cases too."""
        if zone is None:
            return self
        cases = tuple(
            replace(case, mapping=replace(case.mapping, source_zone=zone)) for case in self.cases
        )
        return replace(self, cases=cases, source_zone=zone)


@dataclass(frozen=True)
class Case:
    """A ``[[when]]`` entry: the rules of records whose ``field`` has one of some values.

    A record whose ``field`` is one of ``values`` (or matches ``pattern``) is converted by
    ``mapping``: the top-level tables with the entry's own on top.
    """

    path: Path
    values: frozenset[str] | None
    pattern: re.Pattern[str] | None
    mapping: RecordMapping
    _get: Callable[[Mapping[str, Any]], Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_get", getter(self.path))

    @property
    def label(self) -> str:
        """How ``mapping explain`` names the case: ``type is identify``."""
        field_name = ".".join(map(str, self.path))
        if self.values is not None:
            return f"{field_name} is {' or '.join(sorted(self.values))}"
        return f"{field_name} matches {self.pattern.pattern if self.pattern else ''}"

    def matches(self, record: Mapping[str, Any]) -> bool:
        value = self._get(record)
        if value is None or isinstance(value, dict | list):
            return False
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if self.values is not None:
            return text in self.values
        return self.pattern is not None and self.pattern.fullmatch(text) is not None


def _table(doc: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise MappingError(f"{where}: [{name}] must be a table")
    return table


def _names(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MappingError(f"{where} must be a list of event names")
    return frozenset(value)


def _fields(doc: Mapping[str, Any], where: str, table: str) -> list[FieldRule]:
    fields = []
    for canonical, source in _table(doc, "fields", where).items():
        if canonical not in FIELDS:
            raise MappingError(
                f"{where}: [{table}] {canonical!r} is not a canonical field; "
                f"expected one of {sorted(FIELDS)}"
            )
        try:
            fields.append(compile_rule(canonical, source))
        except RuleError as error:
            raise MappingError(f"{where}: [{table}] {canonical} {error}") from None
    return fields


def _constants(doc: Mapping[str, Any], where: str, table: str) -> list[tuple[str, Any]]:
    constants = []
    for name, value in _table(doc, "constants", where).items():
        if name not in FIELDS:
            raise MappingError(f"{where}: [{table}] {name!r} is not a canonical field")
        constants.append((name, value))
    return constants


def _path(value: object, where: str) -> Path:
    try:
        return parse_path(value)
    except RuleError as error:
        raise MappingError(f"{where} {error}") from None


def _paths(value: object, where: str) -> tuple[Path, ...]:
    try:
        return parse_paths(value)
    except RuleError as error:
        raise MappingError(f"{where} {error}") from None


def _text_set(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MappingError(f"{where} must be a list of names")
    return frozenset(value)


def _flag(spec: Mapping[str, Any], key: str, where: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise MappingError(f"{where}.{key} must be true or false")
    return value


_PROPERTY_KEYS = frozenset({"from", "include", "exclude", "flatten", "optional"})


def _table_of(spec: object, keys: frozenset[str], where: str) -> dict[str, Any]:
    """``spec`` if it is a table of some of ``keys``; MappingError naming what is not."""
    if not isinstance(spec, dict):
        raise MappingError(f"{where} must be a table")
    unknown = set(spec) - keys
    if unknown:
        raise MappingError(
            f"{where} has unknown key(s) {sorted(unknown)}; expected some of {sorted(keys)}"
        )
    return spec


def _properties(spec: object, where: str) -> PropertySources:
    spec = _table_of(spec, _PROPERTY_KEYS, where)
    if "from" not in spec:
        raise MappingError(f"{where} needs from: the path(s) of the objects holding properties")
    include = spec.get("include")
    return PropertySources(
        _paths(spec["from"], f"{where}.from"),
        include=None if include is None else _text_set(include, f"{where}.include"),
        exclude=_text_set(spec.get("exclude", []), f"{where}.exclude"),
        flatten=_flag(spec, "flatten", where),
        optional=_flag(spec, "optional", where),
    )


def _lists(doc: Mapping[str, Any], where: str) -> list[KeyValueList]:
    lists = []
    for name, spec in _table(doc, "lists", where).items():
        here = f"{where}: [lists.{name}]"
        if not isinstance(spec, dict) or set(spec) != {"key", "value"}:
            raise MappingError(
                f"{here} takes key (the path of each item's name) and value (the path or "
                "paths of its value, the first not null wins)"
            )
        path = _path(name, here)
        if any(isinstance(part, int) for part in path):
            raise MappingError(f"{here}: a key/value list's path cannot go through a list index")
        lists.append(
            KeyValueList(
                path,
                _path(spec["key"], f"{here} key"),
                _paths(spec["value"], f"{here} value"),
            )
        )
    return lists


def _options(doc: Mapping[str, Any], where: str) -> Options:
    table = _table(doc, "options", where)
    for key, value in table.items():
        if key not in OPTIONS:
            raise MappingError(
                f"{where}: [options] has no {key!r}; expected some of {list(OPTIONS)}"
            )
        if value not in OPTIONS[key] or type(value) is not type(OPTIONS[key][0]):
            raise MappingError(
                f"{where}: [options] {key} must be one of {list(OPTIONS[key])}, got {value!r}"
            )
    return Options(**table)


def _destination_names(value: object, where: str) -> tuple[Destination, ...]:
    if not isinstance(value, list) or any(v not in DESTINATIONS for v in value):
        raise MappingError(f"{where} must be a list of destinations from {list(DESTINATIONS)}")
    return tuple(d for d in DESTINATIONS if d in value)


def _case(spec: object, n: int, top: RecordMapping, where: str) -> Case:
    here = f"{where}: [[when]] #{n}"
    spec = _table_of(spec, _CASE_KEYS, here)
    if "field" not in spec or ("is" in spec) == ("matches" in spec):
        raise MappingError(
            f"{here} needs field (a path) and either is (a value or a list) or matches "
            "(a regular expression the whole value must match)"
        )
    values = pattern = None
    if "is" in spec:
        given = spec["is"] if isinstance(spec["is"], list) else [spec["is"]]
        if not given or any(isinstance(v, dict | list | float) for v in given):
            raise MappingError(f"{here} is must be a text, a whole number or a list of them")
        values = frozenset(str(v).lower() if isinstance(v, bool) else str(v) for v in given)
    else:
        if not isinstance(spec["matches"], str):
            raise MappingError(f"{here} matches must be a regular expression (a text)")
        try:
            pattern = re.compile(spec["matches"])
        except re.error as error:
            raise MappingError(f"{here} matches is not a regular expression: {error}") from None
    rules = {rule.canonical: rule for rule in top.fields}
    rules.update((rule.canonical, rule) for rule in _fields(spec, here, "when.fields"))
    constants = dict(top.constants)
    constants.update(_constants(spec, here, "when.constants"))
    properties = top.properties
    if "properties" in spec:
        properties = _properties(spec["properties"], f"{here} properties")
    only = None
    if "destinations" in spec:
        only = _destination_names(spec["destinations"], f"{here} destinations")
    mapping = replace(
        top,
        fields=tuple(rules.values()),
        constants=tuple(constants.items()),
        properties=properties,
        lists=(),
        cases=(),
        only=only,
        inherited_hidden=top.hidden,
    )
    return Case(_path(spec["field"], f"{here} field"), values, pattern, mapping)


def parse_mapping(text: str, where: str = "mapping") -> RecordMapping:
    """A RecordMapping from TOML text; ``where`` names the file in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MappingError(f"{where}: not valid TOML: {error}") from None
    unknown = set(doc) - _TABLES
    if unknown:
        raise MappingError(
            f"{where}: unknown table(s) {sorted(unknown)}; expected {sorted(_TABLES)}"
        )
    events = {}
    for source_name, canonical_name in _table(doc, "events", where).items():
        if not isinstance(canonical_name, str) or not canonical_name:
            raise MappingError(f"{where}: [events] {source_name} must map to an event name")
        events[source_name] = canonical_name
    routes: dict[Destination, Route] = {}
    for name, spec in _table(doc, "destinations", where).items():
        if name not in DESTINATIONS:
            raise MappingError(
                f"{where}: [destinations.{name}] is not a destination; "
                f"expected one of {list(DESTINATIONS)}"
            )
        if not isinstance(spec, dict) or set(spec) - {"include", "exclude"}:
            raise MappingError(f"{where}: [destinations.{name}] takes include and exclude lists")
        include = _names(spec.get("include", ["*"]), f"{where}: destinations.{name}.include")
        exclude = _names(spec.get("exclude", []), f"{where}: destinations.{name}.exclude")
        routes[name] = Route(include, exclude)
    properties = None
    if "properties" in doc:
        properties = _properties(doc["properties"], f"{where}: [properties]")
    top = RecordMapping(
        tuple(_fields(doc, where, "fields")),
        tuple(_constants(doc, where, "constants")),
        events,
        routes,
        lists=tuple(_lists(doc, where)),
        properties=properties,
        options=_options(doc, where),
    )
    cases = doc.get("when", [])
    if not isinstance(cases, list):
        raise MappingError(f"{where}: when must be an array of tables ([[when]])")
    return replace(top, cases=tuple(_case(spec, n, top, where) for n, spec in enumerate(cases, 1)))
