"""From a validated event to its Kontagent and KISSmetrics messages. Pure Python, no Beam.

The rules (also in docs/input.md, "The record"):

- Kontagent: a name of the Ruby library's table or a three-letter code selects that type;
  ``alias`` has no Kontagent message; any other name is an ``evt`` with ``n`` = the name
  (``custom_event``, ``custom_action`` and ``evt`` take ``n`` from the ``name`` field).
  The user is ``s``, or ``r`` for the response types. A field the type has no
  parameter for is not sent to Kontagent. A tracking tag the type requires and the
  record lacks is derived from the event's identity (16 hex), so the same input always
  builds the same messages.
- KISSmetrics: ``alias`` -> /a; ``user_information`` (or ``cpu``) -> /s with the user fields and
  properties; every other event -> /e, ``_n`` = the event name (the ``name`` field for
  custom events). /e and /s are backdated with ``_t`` = the event time and ``_d=1``.

Kontagent messages carry the event's identity as their occurrence: Kontagent counts every
request and has no timestamps, so two purchases of 120 cents by one user are two messages.

:func:`map_event` is the whole of it for one event: a :class:`MappedEvent` holding its
messages, or why they cannot be built and the record to replay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.message import Destination, Message, MessageError
from beaconflow.model.records import Event

#: Kontagent types whose user is the responder ``r`` rather than the sender ``s``.
RESPONSE_TYPES = frozenset({"inr", "ntr", "nei", "mer", "psr"})
#: Kontagent types whose ``s`` is a list of users.
LIST_SENDER_TYPES = frozenset({"gci", "mtu"})
#: Event names that only KISSmetrics understands.
KISSMETRICS_ONLY = frozenset({"alias"})
#: Events whose Kontagent ``n`` (and KISSmetrics ``_n``) comes from the ``name`` field.
CUSTOM_EVENTS = frozenset({"custom_event", "custom_action", "evt"})

#: Canonical field -> Kontagent parameter (``u`` is the page address on pgr).
KONTAGENT_PARAMS = {
    "recipients": "r",
    "tracking_tag": "u",
    "short_tracking_tag": "su",
    "channel": "tu",
    "installed": "i",
    "subtype1": "st1",
    "subtype2": "st2",
    "subtype3": "st3",
    "value": "v",
    "level": "l",
    "birth_year": "b",
    "gender": "g",
    "city": "ly",
    "country": "lc",
    "state": "ls",
    "postal_code": "lp",
    "friend_count": "f",
    "ip": "ip",
}
#: goal_counts keys of the record contract that name Kontagent's gc1..gc4 parameters.
GOAL_NAMES = {str(n): f"gc{n}" for n in range(1, 5)}
#: Events that set the user's properties (/s) rather than record an event.
USER_INFORMATION = frozenset({"user_information", "cpu"})
#: User fields a user_information event sets on the KISSmetrics person.
USER_FIELDS = ("birth_year", "gender", "city", "country", "state", "postal_code", "friend_count")


def derived_tag(event_key: str, purpose: str = "u") -> str:
    """A 16-hex tracking tag derived from the event's identity: stable across runs."""
    return hashlib.sha256(f"{event_key}/{purpose}".encode()).hexdigest()[:16]


def _kontagent_type(name: str) -> str | None:
    if name in KISSMETRICS_ONLY:
        return None
    if name in kontagent.MESSAGE_TYPES or name in kontagent.EVENT_NAMES:
        return kontagent.resolve_type(name)
    if name in kontagent.DEPRECATED_TYPES:
        kontagent.resolve_type(name)  # raises with the reason
    return "evt"


def _event_label(event: Event) -> str:
    if event.name in CUSTOM_EVENTS:
        label = event.get("name")
        if not label:
            raise MessageError(event.name, "name", f"a {event.name} event needs a name field")
        return str(label)
    return event.name


def kontagent_message(event: Event) -> Message | None:
    """The Kontagent message of an event, or None for KISSmetrics-only events."""
    code = _kontagent_type(event.name)
    if code is None:
        return None
    accepted = kontagent.MESSAGE_TYPES[code].params
    params: dict[str, Any] = {}
    for field, param in KONTAGENT_PARAMS.items():
        value = event.get(field)
        if value is not None and param in accepted:
            params[param] = value
    if code == "pgr":
        params["u"] = event.get("page_address")
        params["ts"] = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if code == "gci":
        given: dict[str, str] = {}
        for goal, count in (event.get("goal_counts") or {}).items():
            # the record contract's "1".."4" are gc1..gc4; the builder refuses other names
            name = GOAL_NAMES.get(goal, goal)
            if name in given:
                twice = f"goal_counts gives {name} twice: {given[name]!r} and {goal!r}"
                raise MessageError(code, name, twice)
            given[name] = goal
            params[name] = count
    if code == "evt":
        params["n"] = _event_label(event)
    user_param = "r" if code in RESPONSE_TYPES else "s"
    params[user_param] = [event.user_id] if code in LIST_SENDER_TYPES else event.user_id
    if accepted.get("u") is not None and accepted["u"].required and params.get("u") is None:
        params["u"] = derived_tag(event.key)
    return kontagent.build(code, params, occurrence=event.key)


def kissmetrics_message(event: Event) -> Message:
    """The KISSmetrics message of an event (record, set or alias)."""
    properties = dict(event.get("properties") or {})
    if event.name == "alias":
        identity = event.get("alias")
        if identity is None:
            raise MessageError("a", "alias", "an alias event needs an alias field")
        return kissmetrics.alias(event.user_id, identity)
    if event.name in USER_INFORMATION:
        for field in USER_FIELDS:
            if event.get(field) is not None:
                properties.setdefault(field, event.get(field))
        return kissmetrics.set_properties(event.user_id, properties, time=event.time)
    return kissmetrics.record(
        event.user_id, _event_label(event), time=event.time, properties=properties
    )


def messages_for(event: Event, destinations: Iterable[Destination]) -> list[Message]:
    """Every message of ``event`` for the given destinations; MessageError if any is invalid.

    An event is mapped whole or not at all: when one destination's message is invalid, the
    event is invalid and nothing of it is sent.
    """
    messages = []
    for destination in destinations:
        message = (
            kontagent_message(event) if destination == "kontagent" else kissmetrics_message(event)
        )
        if message is not None:
            messages.append(message)
    return messages


@dataclass(frozen=True, slots=True)
class MappedEvent:
    """A validated event as it travels on: where it came from, its time and its messages.

    ``problem`` says why its messages could not be built (then ``messages`` is empty and
    ``record`` holds the source record, for the dead letter and a replay); an event whose
    destinations take none of it has no messages and no problem.
    """

    source: str
    time: int
    messages: tuple[Message, ...]
    problem: str | None = None
    record: object = None

    @property
    def day(self) -> str:
        """The event's UTC day, ``YYYY-MM-DD``."""
        return datetime.fromtimestamp(self.time, UTC).date().isoformat()


def map_event(event: Event, destinations: Iterable[Destination], record: object) -> MappedEvent:
    """The event's messages for ``destinations``; ``record`` is kept only when they fail."""
    try:
        messages = tuple(messages_for(event, destinations))
    except MessageError as error:
        return MappedEvent(event.source, event.time, (), str(error), record)
    return MappedEvent(event.source, event.time, messages)
