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
  properties (none when it has nothing to set, and no Kontagent cpu without a user field:
  an identify call without traits sends nothing and is counted as unrouted); every other
  event -> /e, ``_n`` = the event name (the ``name`` field for
  custom events). /e and /s are backdated with ``_t`` = the event time and ``_d=1``.

Kontagent messages carry the event's identity as their occurrence: Kontagent counts every
request and has no timestamps, so two purchases of 120 cents by one user are two messages.

:func:`map_event` is the whole of it for one event: a :class:`MappedEvent` holding its
messages, and for each destination whose message cannot be built, why (a :class:`Problem`)
and the record to replay. Destinations stand on their own: a Kontagent-only problem (a
non-numeric user id, a name Kontagent refuses) does not keep the KISSmetrics message back.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.mapping import Options
from beaconflow.model.message import Destination, Message, MessageError, epoch_day
from beaconflow.model.records import FIELDS, Event

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


#: The options of a run without a mapping.
_DEFAULT = Options()


def kontagent_message(event: Event, options: Options = _DEFAULT) -> Message | None:
    """The Kontagent message of an event, or None for KISSmetrics-only events.

    ``options`` (the mapping's) may make product event names safe and hash user ids that
    are not numbers (:func:`kontagent.safe_name`, :func:`kontagent.hashed_user_id`).
    """
    code = _kontagent_type(event.name)
    if code is None:
        return None
    accepted = kontagent.MESSAGE_TYPES[code].params
    params: dict[str, Any] = {}
    fields = event.fields
    for field, param in KONTAGENT_PARAMS.items():
        if field in fields:  # an event has a few of these fields
            value = fields[field]
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
    if code == "cpu" and not params:
        return None  # nothing to tell Kontagent about the user (an identify without traits)
    if code == "evt":
        label = _event_label(event)
        params["n"] = kontagent.safe_name(label) if options.kontagent_names == "safe" else label
    user_param = "r" if code in RESPONSE_TYPES else "s"
    user: str | int = event.user_id
    if options.kontagent_user_ids == "hash":
        user = kontagent.hashed_user_id(user)
        if isinstance(params.get("r"), list):
            params["r"] = [kontagent.hashed_user_id(r) for r in params["r"]]
    params[user_param] = [user] if code in LIST_SENDER_TYPES else user
    if accepted.get("u") is not None and accepted["u"].required and params.get("u") is None:
        params["u"] = derived_tag(event.key)
    return kontagent.build(code, params, occurrence=event.key)


def kissmetrics_message(event: Event) -> Message | None:
    """The KISSmetrics message of an event (record, set or alias); None: nothing to set."""
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
        if not properties:
            return None  # nothing to set (an identify call without traits)
        return kissmetrics.set_properties(event.user_id, properties, time=event.time)
    return kissmetrics.record(
        event.user_id, _event_label(event), time=event.time, properties=properties
    )


def message_for(
    event: Event, destination: Destination, options: Options = _DEFAULT
) -> Message | None:
    """The event's message for one destination (None: it has none); MessageError if invalid."""
    if destination == "kontagent":
        return kontagent_message(event, options)
    return kissmetrics_message(event)


def messages_for(event: Event, destinations: Iterable[Destination]) -> list[Message]:
    """Every message of ``event`` for the given destinations; MessageError if any is invalid.

    All or nothing, for a caller that wants the event whole; the pipeline builds each
    destination's message on its own (:func:`map_event`). Each carries the event's UTC day.
    """
    messages = []
    day = epoch_day(event.time)
    for destination in destinations:
        message = message_for(event, destination)
        if message is not None:
            messages.append(message.with_origin(message.source, day))
    return messages


#: Message parameter -> the canonical field it comes from, where it is not KONTAGENT_PARAMS'.
_PARAM_FIELDS = {
    "s": "user_id",
    "_p": "user_id",
    "n": "event",
    "_n": "event",
    "ts": "time",
    "_t": "time",
    **{param: field for field, param in KONTAGENT_PARAMS.items()},
}


def _canonical_field(error: MessageError) -> str | None:
    if error.param == "r" and error.kind in RESPONSE_TYPES:
        return "user_id"
    param = error.param or ""
    return _PARAM_FIELDS.get(param) or (param if param in FIELDS else None)


class Problem(NamedTuple):
    """Why one destination's message of an event could not be built.

    ``known``: an earlier run with the same ledger dead-lettered this very problem already
    (the parse step knows; the messages step counts it, without a new dead-letter entry).
    """

    destination: Destination
    kind: str  # the message kind the rule belongs to (a Kontagent type, a KISSmetrics call)
    reason: str
    known: bool = False


@dataclass(frozen=True, slots=True)
class MappedEvent:
    """A validated event as it travels on: where it came from, its time and its messages.

    Each destination's message is built on its own: ``problems`` says, per destination, why
    its message could not be built, while the others' messages go on; ``record`` holds the
    source record when there is a problem (for the dead letter and a replay). An event whose
    destinations take none of it has no messages and no problems. Its messages' day is its
    own (:attr:`day_number`), as :func:`map_event` builds them.
    """

    source: str
    time: int
    messages: tuple[Message, ...]
    problems: tuple[Problem, ...] = ()
    record: object = None

    @property
    def day(self) -> str:
        """The event's UTC day, ``YYYY-MM-DD``."""
        return utc_day(self.time)

    @property
    def day_number(self) -> int:
        """The event's UTC day as days since 1970-01-01 (its messages' :attr:`Message.day`)."""
        return epoch_day(self.time)


_EPOCH = date(1970, 1, 1)


def utc_day(seconds: int) -> str:
    """The UTC day, ``YYYY-MM-DD``, of a time in whole seconds since the epoch."""
    return _day(seconds // 86_400)


@functools.lru_cache(maxsize=4096)
def _day(days: int) -> str:
    # a run's events fall on a few days: each is written once
    return (_EPOCH + timedelta(days=days)).isoformat()


def map_event(
    event: Event,
    destinations: Iterable[Destination],
    record: object,
    options: Options = _DEFAULT,
    origin: Callable[[str], str | None] | None = None,
) -> MappedEvent:
    """The event's messages for ``destinations``, each built on its own.

    A destination whose message cannot be built gets a :class:`Problem`; ``record`` is kept only
    then. Each message carries the event's source (:attr:`Message.source`) and UTC day
    (:attr:`Message.day`). ``origin`` says
    where the mapping read a canonical field from; a problem's reason names it (``parameter 's'
    (user_id, read from anonymousId)``).
    """
    messages: list[Message] = []
    problems: list[Problem] = []
    day = epoch_day(event.time)
    for destination in destinations:
        try:
            message = message_for(event, destination, options)
        except MessageError as error:
            reason = str(error)
            field = _canonical_field(error)
            read_from = origin(field) if origin is not None and field is not None else None
            if read_from is not None:
                where = f"parameter {error.param!r}" if error.param else error.kind
                reason = reason.replace(where, f"{where} ({field}, read from {read_from})", 1)
            problems.append(Problem(destination, error.kind, reason))
            continue
        if message is not None:
            messages.append(message.with_origin(event.source, day))
    if problems:
        return MappedEvent(event.source, event.time, tuple(messages), tuple(problems), record)
    return MappedEvent(event.source, event.time, tuple(messages))
