"""Kontagent REST API messages: every active message type, validated as the reference defines it.

Pure Python, no Beam: :func:`build` turns a message type (or an event name of the Ruby library's
table) and a mapping of parameters into a :class:`~beaconflow.model.message.Message`, or raises
:class:`~beaconflow.model.message.MessageError` naming the parameter and the rule broken.
Nothing is truncated, coerced or dropped: ``0`` and ``False`` are sent as ``0``; ``None`` means
"absent". :func:`url` renders ``<base>/api/v1/<api key>/<type>/?<params>`` with every value
percent-encoded and, when a secret is configured, signs the request as Kontagent's own client
libraries did (``ts`` and ``an_sig``). :func:`parse_url` is the inverse and validates.

Example::

    >>> from beaconflow.model import kontagent
    >>> m = kontagent.build("invite_sent", {"s": 123, "r": [456, 789], "u": "9a3d9332b31632a0"})
    >>> kontagent.url(m, "http://api.geo.kontagent.net", "0123456789abcdef0123456789abcdef")
    'http://api.geo.kontagent.net/api/v1/0123456789abcdef0123456789abcdef/ins/?r=456%2C789&s=123&u=9a3d9332b31632a0'
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from beaconflow.model.message import Message, MessageError, check_size
from beaconflow.model.urlencode import encode_query, quote_part

#: Kontagent's production API (the pipeline's default).
PRODUCTION_URL = "http://api.geo.kontagent.net"
#: Kontagent's test server: the small client's default, as in the Ruby library.
TEST_SERVER_URL = "http://test-server.kontagent.com"

#: Parameters added by signing; never part of a message (except ``ts`` on ``pgr``).
SIGNING_PARAMS = frozenset({"ts", "an_sig"})

#: Message types whose sender may be the application itself, written as ``s=0``.
APP_TO_USER_TYPES = frozenset({"ins", "nts", "nes", "mes"})

#: Channel types of the Post and Post Response messages.
POST_CHANNELS = frozenset(
    {
        "feedpub",
        "stream",
        "feedstory",
        "multifeedstory",
        "dashboard_activity",
        "dashboard_globalnews",
    }
)

#: Event names of the Ruby library's table and the three-letter codes they stand for.
EVENT_NAMES: Mapping[str, str] = {
    "invite_sent": "ins",
    "invite_response": "inr",
    "notification_sent": "nts",
    "notification_response": "ntr",
    "notification_email_sent": "nes",
    "notification_email_response": "nei",
    "message_sent": "mes",
    "message_response": "mer",
    "stream_post": "pst",
    "stream_post_response": "psr",
    "custom_action": "evt",
    "custom_event": "evt",
    "application_added": "apa",
    "application_installed": "apa",
    "application_removed": "apr",
    "application_uninstalled": "apr",
    "undirected_communication_click": "ucc",
    "page_request_and_user_location": "pgr",
    "user_information": "cpu",
    "goal_counts": "gci",
    "revenue_tracking": "mtu",
}

#: Deprecated message types, refused with a reason.
DEPRECATED_TYPES: Mapping[str, str] = {
    "fdp": "the Feed Post message (fdp) is deprecated by Kontagent and no longer accepted; "
    "use pst (stream_post)",
}

#: Largest revenue increment ``v`` of an ``mtu`` message, in cents.
MTU_MAX_VALUE = 1_000_000
#: Range of a goal count increment ``gcN``.
GOAL_COUNT_RANGE = (-16384, 16384)

Check = Callable[[str, str, object], str]
"""A parameter check: (type, parameter, value) -> the value as sent, or raises MessageError."""

_DIGITS = re.compile(r"[0-9]+")
# No id or count of either service comes near this; Python refuses int() past 4300 digits.
_MAX_DIGITS = 64
_TOO_BIG = 10**_MAX_DIGITS
_INTEGER = re.compile(r"-?[0-9]+")
_EVENT_NAME = re.compile(r"[A-Za-z0-9_]{1,32}")
_PGR_TS = re.compile(r"[0-9]+|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}T[0-9]{1,2}:[0-9]{2}:[0-9]{2}")
_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")


def _text(kind: str, name: str, value: object) -> str:
    if not isinstance(value, str):
        raise MessageError(kind, name, f"must be a string, not {type(value).__name__}")
    if value == "":
        raise MessageError(kind, name, "must not be empty")
    return value


def _integer(kind: str, name: str, value: object) -> int:
    """An int given as a Python int or as its decimal text; bool, float and the rest refused."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MessageError(kind, name, f"must be an integer, not {type(value).__name__}")
    if isinstance(value, str):
        if not _INTEGER.fullmatch(value):
            raise MessageError(kind, name, f"must be an integer, got {value!r}")
        if len(value) > _MAX_DIGITS:
            raise MessageError(kind, name, f"has {len(value)} digits; at most {_MAX_DIGITS}")
        return int(value)
    if abs(value) >= _TOO_BIG:
        raise MessageError(kind, name, f"has {len(str(abs(value)))} digits; at most {_MAX_DIGITS}")
    return value


def _uid(*, allow_zero: bool) -> Check:
    def check(kind: str, name: str, value: object) -> str:
        if isinstance(value, str) and not _DIGITS.fullmatch(value):
            raise MessageError(kind, name, f"must be a numeric user id, got {value!r}")
        number = _integer(kind, name, value)
        if number < 0 or (number == 0 and not allow_zero):
            rule = (
                "0 (the application) or a positive user id" if allow_zero else "a positive user id"
            )
            raise MessageError(kind, name, f"must be {rule}, got {number}")
        return value if isinstance(value, str) else str(number)

    return check


_recipient = _uid(allow_zero=False)


def _uid_list(kind: str, name: str, value: object) -> str:
    """A list of user ids, or one id, or their comma-joined text; sent comma-joined."""
    items: Iterable[object]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = value
    else:
        items = (value,)
    checked = [_recipient(kind, name, item) for item in items]
    if not checked:
        raise MessageError(kind, name, "must list at least one user id")
    return ",".join(checked)


def _byte(kind: str, name: str, value: object) -> str:
    if value is True or value is False:
        return "1" if value else "0"
    if value in (0, 1, "0", "1") and not isinstance(value, float):
        return str(value)
    raise MessageError(kind, name, f"must be 0 or 1 (or a bool), got {value!r}")


def _hex_tag(lengths: tuple[int, ...]) -> Check:
    pattern = re.compile(r"[0-9a-fA-F]+")
    allowed = " or ".join(str(n) for n in lengths)

    def check(kind: str, name: str, value: object) -> str:
        text = _text(kind, name, value)
        if len(text) not in lengths or not pattern.fullmatch(text):
            raise MessageError(
                kind, name, f"must be {allowed} hexadecimal characters, got {text!r} ({len(text)})"
            )
        return text

    return check


def _chars(limit: int) -> Check:
    def check(kind: str, name: str, value: object) -> str:
        text = _text(kind, name, value)
        if len(text) > limit:
            raise MessageError(kind, name, f"must be at most {limit} characters, got {len(text)}")
        return text

    return check


def _one_of(choices: Iterable[str]) -> Check:
    allowed = tuple(sorted(choices))

    def check(kind: str, name: str, value: object) -> str:
        text = _text(kind, name, value)
        if text not in allowed:
            raise MessageError(kind, name, f"must be one of {', '.join(allowed)}, got {text!r}")
        return text

    return check


def _int_range(low: int | None, high: int | None) -> Check:
    def check(kind: str, name: str, value: object) -> str:
        number = _integer(kind, name, value)
        if (low is not None and number < low) or (high is not None and number > high):
            bounds = (
                f"between {low} and {high}"
                if low is not None and high is not None
                else (f"at least {low}" if low is not None else f"at most {high}")
            )
            raise MessageError(kind, name, f"must be {bounds}, got {number}")
        return str(number)

    return check


def _event_name(kind: str, name: str, value: object) -> str:
    text = _text(kind, name, value)
    if not _EVENT_NAME.fullmatch(text):
        raise MessageError(kind, name, f"must be 1 to 32 characters of [a-zA-Z0-9_], got {text!r}")
    return text


_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
#: The longest event name Kontagent takes.
MAX_EVENT_NAME = 32
#: Kontagent user ids are 64-bit signed integers; a hashed id is a positive one of 63 bits.
_HASH_MASK = (1 << 63) - 1


@functools.lru_cache(maxsize=4096)  # a log has few event names, each seen many times
def safe_name(name: str) -> str:
    """An event name Kontagent takes, for any product's name (``[options] kontagent_names``).

    Every character outside ``[A-Za-z0-9_]`` becomes ``_``. A name still longer than 32
    characters keeps its first 23 and ends with ``_`` and the first 8 hex digits of the
    SHA-256 of the whole original name (UTF-8), so two long names that share a beginning
    stay two names. Names in other scripts lose their letters (``"購入"`` is ``"__"``): give
    them a Kontagent name in ``[events]``.
    """
    safe = _UNSAFE.sub("_", name)
    if len(safe) <= MAX_EVENT_NAME:
        return safe
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[: MAX_EVENT_NAME - 9]}_{digest}"


def hashed_user_id(user_id: str | int) -> str:
    """A Kontagent user id for an id that is not a positive number (``kontagent_user_ids``).

    A positive decimal id below 2**63 is returned as it is. Any other id (a text, 0, a
    negative or larger number) is the first 8 bytes of the
    SHA-256 of its UTF-8 text, read big-endian, with the top bit cleared (0 becomes 1): a
    stable id from 1 to 2**63 - 1, the same in every run, release and machine. Two ids share
    a hash with a probability of about n**2 / 2**64 for n users.
    """
    if type(user_id) is int and 0 < user_id <= _HASH_MASK:
        return str(user_id)
    text = str(user_id)
    # at most 19 digits: int() of a longer text is never below 2**63, and costs
    if _DIGITS.fullmatch(text) and len(text) <= 19 and 0 < int(text) <= _HASH_MASK:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return str(int.from_bytes(digest[:8], "big") & _HASH_MASK or 1)


def _pgr_timestamp(kind: str, name: str, value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    text = _text(kind, name, value)
    if not _PGR_TS.fullmatch(text):
        raise MessageError(
            kind, name, f"must be GMT time as YYYY-MM-DDTHH:MM:SS or epoch seconds, got {text!r}"
        )
    return text


def _ipv4(kind: str, name: str, value: object) -> str:
    text = _text(kind, name, value)
    match = _IPV4.fullmatch(text)
    if not match or any(int(part) > 255 for part in match.groups()):
        raise MessageError(kind, name, f"must be an IPv4 address (char(15)), got {text!r}")
    return text


@dataclass(frozen=True)
class Param:
    """One parameter of a message type: its check and whether the reference requires it."""

    check: Check
    required: bool = False


@dataclass(frozen=True)
class MessageType:
    """A Kontagent message type: its code, name in the reference, and parameters."""

    code: str
    title: str
    params: Mapping[str, Param]
    #: At least one of these must be present (gci's goal counts).
    one_of: tuple[str, ...] = ()


_TAG = _hex_tag((16, 32))
_SHORT_TAG = _hex_tag((8, 16, 32))
_SUBTYPE = Param(_chars(32))
_SUBTYPES = {"st1": _SUBTYPE, "st2": _SUBTYPE, "st3": _SUBTYPE}
_SENDER = Param(_uid(allow_zero=False), required=True)
_APP_SENDER = Param(_uid(allow_zero=True), required=True)
_RECIPIENTS = Param(_uid_list, required=True)
_RESPONDER = Param(_uid(allow_zero=False))
_INSTALLED = Param(_byte, required=True)
_REQUIRED_TAG = Param(_TAG, required=True)
_GOAL_COUNT = Param(_int_range(*GOAL_COUNT_RANGE))


def _type(code: str, title: str, *one_of: str, **params: Param) -> MessageType:
    return MessageType(code, title, params, one_of)


#: Every active message type of the reference, with its parameters.
MESSAGE_TYPES: Mapping[str, MessageType] = {
    spec.code: spec
    for spec in (
        _type("ins", "Invite Sent", s=_APP_SENDER, r=_RECIPIENTS, u=_REQUIRED_TAG, **_SUBTYPES),
        _type(
            "inr", "Invite Click Response", r=_RESPONDER, i=_INSTALLED, u=_REQUIRED_TAG, **_SUBTYPES
        ),
        _type(
            "nts",
            "Notification Sent",
            s=_APP_SENDER,
            r=_RECIPIENTS,
            u=_REQUIRED_TAG,
            st1=_SUBTYPE,
            st2=_SUBTYPE,
        ),
        _type(
            "ntr",
            "Notification Click Response",
            r=_RESPONDER,
            i=_INSTALLED,
            u=_REQUIRED_TAG,
            st1=_SUBTYPE,
            st2=_SUBTYPE,
        ),
        _type(
            "nes",
            "Notification E-mail Sent",
            s=_APP_SENDER,
            r=_RECIPIENTS,
            u=_REQUIRED_TAG,
            **_SUBTYPES,
        ),
        _type(
            "nei",
            "Notification Email Click Response",
            r=_RESPONDER,
            i=_INSTALLED,
            u=_REQUIRED_TAG,
            **_SUBTYPES,
        ),
        _type(
            "mes",
            "Message Sent",
            s=_APP_SENDER,
            r=_RECIPIENTS,
            tu=Param(_one_of({"dashboard"}), required=True),
            u=_REQUIRED_TAG,
            **_SUBTYPES,
        ),
        _type(
            "mer",
            "Message Response",
            r=_RESPONDER,
            tu=Param(_one_of({"dashboard"}), required=True),
            i=_INSTALLED,
            u=Param(_TAG),
            **_SUBTYPES,
        ),
        _type(
            "pst",
            "Post",
            s=_SENDER,
            tu=Param(_one_of(POST_CHANNELS), required=True),
            u=_REQUIRED_TAG,
            **_SUBTYPES,
        ),
        _type(
            "psr",
            "Post Response",
            r=_RESPONDER,
            tu=Param(_one_of(POST_CHANNELS), required=True),
            i=_INSTALLED,
            u=Param(_TAG),
            **_SUBTYPES,
        ),
        _type(
            "evt",
            "Event",
            s=_SENDER,
            n=Param(_event_name, required=True),
            v=Param(_int_range(None, None)),
            l=Param(_int_range(1, None)),
            **_SUBTYPES,
        ),
        _type(
            "apa",
            "Application Added",
            s=_SENDER,
            u=Param(_TAG),
            su=Param(_SHORT_TAG),
            ru=Param(_uid(allow_zero=False)),
        ),
        _type("apr", "Application Removed", s=_SENDER),
        _type(
            "ucc",
            "Undirected Communication Click",
            s=Param(_uid(allow_zero=False)),
            tu=Param(_chars(16), required=True),
            i=_INSTALLED,
            su=Param(_SHORT_TAG),
            **_SUBTYPES,
        ),
        _type(
            "pgr",
            "Page Request",
            s=_SENDER,
            ts=Param(_pgr_timestamp, required=True),
            ip=Param(_ipv4),
            u=Param(_chars(256)),
        ),
        _type(
            "cpu",
            "User Information",
            s=_SENDER,
            b=Param(_int_range(1, None)),
            g=Param(_one_of({"m", "f", "u"})),
            ly=Param(_chars(1 << 16)),
            lc=Param(_chars(1 << 16)),
            ls=Param(_chars(1 << 16)),
            lp=Param(_chars(1 << 16)),
            f=Param(_int_range(0, None)),
        ),
        _type(
            "gci",
            "Goal Counts",
            "gc1",
            "gc2",
            "gc3",
            "gc4",
            s=Param(_uid_list, required=True),
            gc1=_GOAL_COUNT,
            gc2=_GOAL_COUNT,
            gc3=_GOAL_COUNT,
            gc4=_GOAL_COUNT,
        ),
        _type(
            "mtu",
            "Revenue Tracking",
            s=Param(_uid_list, required=True),
            v=Param(_int_range(None, MTU_MAX_VALUE), required=True),
        ),
    )
}


def resolve_type(name: str) -> str:
    """The message type code for an event name of the Ruby table or a type code.

    Raises MessageError for deprecated and unknown names.
    """
    if name in MESSAGE_TYPES:
        return name
    if name in EVENT_NAMES:
        return EVENT_NAMES[name]
    if name in DEPRECATED_TYPES:
        raise MessageError(name, None, DEPRECATED_TYPES[name])
    raise MessageError(
        name, None, "unknown message type; use a three-letter code or a name of the event table"
    )


def build(kind: str, params: Mapping[str, object], *, occurrence: str = "") -> Message:
    """A validated Kontagent message of type ``kind`` (a code or an event-table name).

    ``params`` maps parameter names to values; ``None`` values are absent. Lists of user ids
    may be given as lists. Raises MessageError for unknown or missing parameters and for any
    value that breaks the reference's rules.
    """
    code = resolve_type(kind)
    spec = MESSAGE_TYPES[code]
    rendered: list[tuple[str, str]] = []
    for name, value in params.items():
        if value is None:
            continue
        param = spec.params.get(name)
        if param is None:
            allowed = ", ".join(sorted(spec.params))
            raise MessageError(code, name, f"is not a parameter of {code}; allowed: {allowed}")
        rendered.append((name, param.check(code, name, value)))
    present = {name for name, _ in rendered}
    for name, param in spec.params.items():
        if param.required and name not in present:
            raise MessageError(code, name, "is required")
    if spec.one_of and not present.intersection(spec.one_of):
        raise MessageError(code, None, f"needs at least one of {', '.join(spec.one_of)}")
    check_size(code, rendered)
    return Message("kontagent", code, tuple(rendered), occurrence)


def signature(params: Iterable[tuple[str, str]], secret: str) -> str:
    """``an_sig``: md5 hex of the sorted ``key=value`` pairs followed by the secret."""
    joined = "".join(f"{name}={value}" for name, value in sorted(params))
    return hashlib.md5((joined + secret).encode("utf-8"), usedforsecurity=False).hexdigest()


def query_params(
    message: Message, *, secret: str | None = None, now: float | None = None
) -> list[tuple[str, str]]:
    """The parameters as sent: the message's own, plus ``ts`` and ``an_sig`` when signing."""
    params = list(message.params)
    if secret:
        if now is None:
            raise ValueError("signing a Kontagent request needs the current time")
        if message.param("ts") is None:
            params.append(("ts", str(int(now))))
        params.append(("an_sig", signature(params, secret)))
    return params


def url(
    message: Message,
    base_url: str,
    api_key: str,
    *,
    secret: str | None = None,
    now: float | None = None,
) -> str:
    """The request URL ``<base>/api/v1/<api key>/<type>/?<params>`` for a Kontagent message."""
    if message.destination != "kontagent":
        raise ValueError(f"not a Kontagent message: {message.destination}/{message.kind}")
    if not api_key:
        raise ValueError("the Kontagent API key is empty")
    params = query_params(message, secret=secret, now=now) if secret else message.params
    return _url_prefix(base_url, api_key, message.kind) + encode_query(params)


@functools.lru_cache(maxsize=64)
def _url_prefix(base_url: str, api_key: str, code: str) -> str:
    """``<base>/api/v1/<key>/<type>/?``: the part of a URL every message of a type shares."""
    return f"{base_url.rstrip('/')}/api/v1/{quote_part(api_key)}/{code}/?"


def parse_url(request_url: str) -> tuple[Message, str]:
    """The validated message and API key of a Kontagent request URL (or path and query).

    Signing parameters are dropped (``ts`` is kept on ``pgr``, where it is the message's own).
    Raises MessageError when the path, a parameter or a value breaks the reference.
    """
    parts = urlsplit(request_url)
    segments = [unquote(segment) for segment in parts.path.split("/")]
    try:
        at = segments.index("api")
        version, api_key, code = segments[at + 1 : at + 4]
    except ValueError as error:
        raise MessageError("request", None, "path is not /api/v1/<api key>/<type>/") from error
    if version != "v1" or not api_key:
        raise MessageError("request", None, "path is not /api/v1/<api key>/<type>/")
    if any(segments[at + 4 :]):
        raise MessageError(code, None, "unexpected path after the message type")
    if code not in MESSAGE_TYPES:
        resolve_type(code)  # raises with the right reason for deprecated and unknown codes
        raise MessageError(code, None, "not a message type code")
    pairs = parse_qsl(parts.query, keep_blank_values=True, errors="strict")
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name in seen:
            raise MessageError(code, name, "is given more than once")
        seen[name] = value
    for name in SIGNING_PARAMS:
        if name == "ts" and code == "pgr":
            continue
        seen.pop(name, None)
    return build(code, seen), api_key
