"""The --mapping TOML: how another log schema maps onto the canonical record, and routing.

A mapping reads canonical fields from other paths (dotted paths reach into nested objects and
lists, with fallbacks and conversions: :mod:`beaconflow.model.field_rules`), adds constant
fields, renames event names, and says which canonical events go to which destination. Without a
mapping the input is the canonical record and every event goes to every configured
destination. The format is documented in docs/input.md ("The mapping file") and an example is
``sample_data/legacy_mapping.toml``.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from beaconflow.model.errors import BeaconflowError
from beaconflow.model.field_rules import FieldRule, RuleError, compile_rule
from beaconflow.model.message import DESTINATIONS, Destination
from beaconflow.model.records import FIELDS

_TABLES = frozenset({"fields", "constants", "events", "destinations"})


class MappingError(BeaconflowError, ValueError):
    """The mapping file is unusable: names the file, the table and what is wrong."""


@dataclass(frozen=True)
class Route:
    """Which canonical event names go to one destination: ``*`` includes every event."""

    include: frozenset[str] = frozenset({"*"})
    exclude: frozenset[str] = frozenset()

    def accepts(self, event: str) -> bool:
        included = "*" in self.include or event in self.include
        excluded = "*" in self.exclude or event in self.exclude
        return included and not excluded


#: The route of a destination the mapping does not name.
_EVERY_EVENT = Route()


@dataclass(frozen=True)
class RecordMapping:
    """A parsed mapping; :meth:`apply` turns a source record into a canonical one."""

    fields: tuple[FieldRule, ...] = ()
    constants: tuple[tuple[str, Any], ...] = ()
    events: Mapping[str, str] = field(default_factory=dict)
    routes: Mapping[Destination, Route] = field(default_factory=dict)
    #: Source fields that never pass through: those a rule reads whole or reaches into
    #: (renamed away; a canonical container such as ``properties`` stays), and the canonical
    #: fields a rule sets or drops (a same-named source field never stands in).
    hidden: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hidden = {rule.canonical for rule in self.fields}
        for rule in self.fields:
            for path in rule.sources:
                # a field read whole is renamed away; so is a container a path reaches into,
                # unless it is itself a canonical field (a rule reading properties.revenue
                # must not take the event's other properties away)
                if len(path) == 1 or str(path[0]) not in FIELDS:
                    hidden.add(str(path[0]))
        object.__setattr__(self, "hidden", frozenset(hidden))

    def apply(
        self, record: Mapping[str, Any], matched: Counter[str] | None = None
    ) -> dict[str, Any]:
        """The canonical record for ``record``: fields read, constants added, names renamed.

        ``matched`` counts, by :attr:`FieldRule.label`, the rules that found a value (the
        report names those that never did). RecordError when a field's conversion refuses
        its value (a time not in its format).
        """
        if not self.fields and not self.constants and not self.events:
            return dict(record)
        hidden = self.hidden
        out = {key: value for key, value in record.items() if key not in hidden}
        for rule in self.fields:
            if rule.drop:
                continue
            value = rule.read(record)
            if value is not None:
                out[rule.canonical] = value
                if matched is not None:
                    matched[rule.label] += 1
        for name, value in self.constants:
            if out.get(name) is None:
                out[name] = value
        event = out.get("event")
        if isinstance(event, str) and event in self.events:
            out["event"] = self.events[event]
        return out

    def labels(self) -> tuple[str, ...]:
        """The label of every rule that reads the source record (not the dropped fields)."""
        return tuple(rule.label for rule in self.fields if not rule.drop)

    def destinations(self, event: str, enabled: tuple[Destination, ...]) -> tuple[Destination, ...]:
        """The enabled destinations that this canonical event goes to."""
        return tuple(d for d in enabled if self.routes.get(d, _EVERY_EVENT).accepts(event))


def _table(doc: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise MappingError(f"{where}: [{name}] must be a table")
    return table


def _names(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MappingError(f"{where} must be a list of event names")
    return frozenset(value)


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
    fields = []
    for canonical, source in _table(doc, "fields", where).items():
        if canonical not in FIELDS:
            raise MappingError(
                f"{where}: [fields] {canonical!r} is not a canonical field; "
                f"expected one of {sorted(FIELDS)}"
            )
        try:
            fields.append(compile_rule(canonical, source))
        except RuleError as error:
            raise MappingError(f"{where}: [fields] {canonical} {error}") from None
    constants = []
    for name, value in _table(doc, "constants", where).items():
        if name not in FIELDS:
            raise MappingError(f"{where}: [constants] {name!r} is not a canonical field")
        constants.append((name, value))
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
    return RecordMapping(tuple(fields), tuple(constants), events, routes)
