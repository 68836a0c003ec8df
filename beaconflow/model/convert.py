"""One source record to its mapped event: the mapping, the validation and the messages.

:func:`convert_record` is what the parse step does to each record, and what
``beaconflow mapping explain`` shows: the mapping (its ``[[when]]`` case), the canonical
record, the validated event and, per destination, its message or why it has none. Errors
name the source path a mapping read the field from. :func:`identify_record` is the same
conversion reduced to the event's time and explicit identity. Pure Python, no Beam.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beaconflow.model.events import MappedEvent, map_event
from beaconflow.model.mapping import RecordMapping
from beaconflow.model.message import Destination
from beaconflow.model.records import (
    Event,
    RecordError,
    event_time,
    explicit_identity,
    validate,
)


@dataclass(frozen=True)
class Converted:
    """A source record converted: its canonical record, its event and its messages."""

    canonical: Mapping[str, Any]
    event: Event
    mapped: MappedEvent


def convert_record(
    source: Mapping[str, Any],
    mapping: RecordMapping,
    *,
    now: float,
    source_name: str,
    destinations: tuple[Destination, ...],
    only: object = None,
    matched: Counter[str] | None = None,
    left_out: Counter[str] | None = None,
) -> Converted:
    """The record's event and messages, or RecordError naming the field and its source path.

    ``only`` restricts the event to one destination (a replayed dead-letter entry's);
    ``matched`` and ``left_out`` count the rules that found a value and the properties left
    out (see :meth:`RecordMapping.convert`).
    """
    prepared, chosen = mapping.select(source)
    try:
        canonical = chosen.canonical(prepared, matched, left_out)
        event = validate(canonical, now=now, source=source_name)
    except RecordError as error:
        raise _named(error, chosen) from None
    targets = chosen.destinations(event.name, destinations, event.get("name"))
    if only is not None:
        # the entry was this destination's only: the event's others were sent already
        targets = tuple(d for d in targets if d == only)
    mapped = map_event(event, targets, source, chosen.options, chosen.origin)
    return Converted(canonical, event, mapped)


def identify_record(
    source: Mapping[str, Any], mapping: RecordMapping, *, now: float
) -> tuple[int, str | None]:
    """The event time of ``source`` and its ``event_id`` identity (None: a content hash).

    The time is that of the event :func:`convert_record` makes, by the same mapping and
    checks, with no message built and no content hashed; RecordError as convert_record
    raises it. The identity is the ``event_id``'s, None when the record has none (its
    identity is then a hash of its content, which covers the time). What the spill pass of
    a chunked backfill sorts records by.
    """
    prepared, chosen = mapping.select(source)
    try:
        canonical = chosen.canonical(prepared)
        seconds = event_time(canonical, now=now)
    except RecordError as error:
        raise _named(error, chosen) from None
    return seconds, explicit_identity(canonical)


def _named(error: RecordError, chosen: RecordMapping) -> RecordError:
    """``error`` naming where the mapping read its field from."""
    return error.read_from(chosen.origin(error.field or ""))
