"""Beam coders for the typed values that cross the pipeline's shuffles: messages and events.

A :class:`~beaconflow.model.message.Message` and a
:class:`~beaconflow.model.events.MappedEvent` are encoded field by field with Beam's compiled
coders (strings, varints, lists), never pickled and never re-encoded as JSON. Both coders are
deterministic: the same value always has the same bytes, which the dedup relies on to choose
the copy it keeps (:mod:`beaconflow.transforms.dedup`). :func:`register` adds them to Beam's
coder registry (the pipeline's wiring calls it; importing this module registers nothing), so
that any ``PCollection`` typed as either uses them. Check them with::

    python -m pytest tests/transforms/test_coders.py
"""

from __future__ import annotations

import json
import re
from itertools import chain
from typing import Any

from apache_beam import coders
from apache_beam.coders.typecoders import registry

from beaconflow.model.events import MappedEvent, Problem
from beaconflow.model.message import DESTINATIONS, Message, epoch_day
from beaconflow.model.records import plain

# Both values are written as tuples of strings, bytes, integers, lists and None, in a fixed
# order:
#   a message: (destination's index, kind, occurrence, [name, value, name, value, ...],
#               source, day or None);
#   an event: (source, time, [message without its source and day, ...],
#              [(destination's index, kind, reason), ...], record as JSON or None,
#              None, or [each message's day or None, ...]).
# An event's messages come from the event, so their source is the event's: written once; and
# so is their day, the event's (the last field is None), unless one of them has another.
# Beam's compiled FastPrimitivesCoder has one encoding for each of these types (no dicts, no
# sets, nothing pickled), so equal values have equal bytes. It is three times faster here
# than a TupleCoder of StrUtf8Coders, whose strings go through a Python callback each.
# The dedup holds every value of a run in memory, encoded, and Beam's in-memory runner copies
# a grouping's output several times while it encodes it (benchmarks/datapath.py): every byte
# of a value counts. A message's identity key is not written but computed again when it is
# decoded (3 us, measured: less than the memory of 16 bytes per message is worth at 1M
# events), and an occurrence that is an event's identity (32 hex digits) is written as its
# 16 bytes. A message's source (its input's ``file:position``, a few dozen bytes) is the one
# field sending does not need: it is carried so that a send failure names its input line.
_MESSAGE_IMPL = _EVENT_IMPL = coders.FastPrimitivesCoder().get_impl()
_HEX_IDENTITY = re.compile("[0-9a-f]{32}")

_MessageFields = tuple[int, str, str | bytes, list[str]]


def _message_fields(message: Message) -> _MessageFields:
    """A message's fields without its source (an event's messages share the event's)."""
    flat = list(chain.from_iterable(message.params))
    text = message.occurrence
    occurrence: str | bytes = text
    if len(text) == 32 and _HEX_IDENTITY.fullmatch(text):
        occurrence = bytes.fromhex(text)
    destination = _DESTINATION_INDEX[message.destination]
    return (destination, message.kind, occurrence, flat)


def _message(fields: _MessageFields, source: str, day: int | None) -> Message:
    destination, kind, occurrence, flat = fields
    params = tuple(zip(flat[0::2], flat[1::2], strict=True))
    return Message.from_parts(
        DESTINATIONS[destination],
        kind,
        params,
        occurrence.hex() if isinstance(occurrence, bytes) else occurrence,
        source=source,
        day=day,
    )


_DESTINATION_INDEX = {destination: index for index, destination in enumerate(DESTINATIONS)}


class MessageCoder(coders.Coder):
    """A :class:`Message` as its fields, source and day: nothing sorted again when decoded."""

    def encode(self, value: Message) -> bytes:
        encoded: bytes = _MESSAGE_IMPL.encode((*_message_fields(value), value.source, value.day))
        return encoded

    def decode(self, encoded: bytes) -> Message:
        destination, kind, occurrence, flat, source, day = _MESSAGE_IMPL.decode(encoded)
        return _message((destination, kind, occurrence, flat), source, day)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return Message


class MappedEventCoder(coders.Coder):
    """A :class:`MappedEvent`: messages and problems as fields, the record as JSON text."""

    def encode(self, value: MappedEvent) -> bytes:
        record = (
            None
            if value.record is None
            else json.dumps(value.record, ensure_ascii=False, sort_keys=True, default=plain)
        )
        day = epoch_day(value.time)
        days = None
        if any(m.day != day for m in value.messages):
            days = [m.day for m in value.messages]
        fields = (
            value.source,
            value.time,
            [_message_fields(m) for m in value.messages],
            [
                (_DESTINATION_INDEX[p.destination], p.kind, p.reason, p.known)
                for p in value.problems
            ],
            record,
            days,
        )
        encoded: bytes = _EVENT_IMPL.encode(fields)
        return encoded

    def decode(self, encoded: bytes) -> MappedEvent:
        source, time, messages, problems, record, days = _EVENT_IMPL.decode(encoded)
        restored: Any = None if record is None else json.loads(record)
        if days is None:
            days = [epoch_day(time)] * len(messages)
        return MappedEvent(
            source,
            time,
            tuple(_message(m, source, d) for m, d in zip(messages, days, strict=True)),
            tuple(
                Problem(DESTINATIONS[d], kind, reason, known) for d, kind, reason, known in problems
            ),
            restored,
        )

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return MappedEvent


def register() -> None:
    """Make Beam use these coders for every ``PCollection`` of messages or mapped events.

    Beam's registry is global: once is enough, and again does no harm.
    """
    registry.register_coder(Message, MessageCoder)
    registry.register_coder(MappedEvent, MappedEventCoder)
