"""KISSmetrics HTTP API messages: record (/e), set (/s) and alias (/a), validated before sending.

KISSmetrics answers ``200`` and a 1x1 GIF even to a wrong request, so these builders are the
only guard: they refuse what the service would silently drop (times before 2009, names of
255 characters or more, reserved underscore names used as properties) with a
:class:`~beaconflow.model.message.MessageError` naming the parameter and the rule. Backdated
messages carry ``_t`` (integer seconds since the Unix epoch, UTC) and ``_d=1``; KISSmetrics
treats a resend with the same ``_p``, ``_n``, ``_t`` and properties as a duplicate, so an
explicit ``_t`` makes a retry harmless.

Example::

    >>> from beaconflow.model import kissmetrics
    >>> m = kissmetrics.record("bob", "Signed Up", time=1262304000, properties={"gender": "male"})
    >>> kissmetrics.url(m, "https://trk.kissmetrics.io", "api-key")
    'https://trk.kissmetrics.io/e?_k=api-key&_d=1&_n=Signed%20Up&_p=bob&_t=1262304000&gender=male'
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

from beaconflow.model.message import Message, MessageError, check_size, epoch_day
from beaconflow.model.urlencode import encode_query

#: KISSmetrics' tracking host since 2020 (trk.kissmetrics.com before).
DEFAULT_URL = "https://trk.kissmetrics.io"

#: The endpoints: record an event, set properties, alias two identities.
KINDS = frozenset({"e", "s", "a"})

#: Parameters of the API itself; properties may not use these (nor any other ``_`` name).
RESERVED = frozenset({"_k", "_p", "_n", "_t", "_d"})

#: The earliest time KISSmetrics takes data for: 2009-01-01T00:00:00Z.
EARLIEST = int(datetime(2009, 1, 1, tzinfo=UTC).timestamp())

#: A person (``_p``) or alias identity may have at most this many characters.
MAX_IDENTITY = 255
#: Event and property names must be shorter than this.
NAME_LIMIT = 255

PropertyValue = str | int | float | bool
Properties = Mapping[str, PropertyValue]


def _identity(kind: str, name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MessageError(
            kind, name, f"must be a string or an integer, not {type(value).__name__}"
        )
    text = str(value)
    if not text:
        raise MessageError(kind, name, "must not be empty")
    if len(text) > MAX_IDENTITY:
        raise MessageError(
            kind, name, f"must be at most {MAX_IDENTITY} characters, got {len(text)}"
        )
    return text


def _name(kind: str, param: str, value: object) -> str:
    if not isinstance(value, str):
        raise MessageError(kind, param, f"must be a string, not {type(value).__name__}")
    if not value:
        raise MessageError(kind, param, "must not be empty")
    if len(value) >= NAME_LIMIT:
        raise MessageError(
            kind, param, f"must be shorter than {NAME_LIMIT} characters, got {len(value)}"
        )
    return value


def _timestamp(kind: str, value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise MessageError(kind, "_t", "a datetime needs a time zone")
        value = int(value.timestamp())
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(kind, "_t", f"must be integer seconds since the epoch, got {value!r}")
    if value < EARLIEST:
        raise MessageError(
            kind, "_t", f"must not be before 2009-01-01 (KISSmetrics drops it), got {value}"
        )
    return str(value)


def _property_value(kind: str, name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MessageError(kind, name, f"must be a finite number, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        return value
    raise MessageError(kind, name, f"must be a string, number or bool, not {type(value).__name__}")


def _properties(kind: str, properties: Mapping[str, object] | None) -> list[tuple[str, str]]:
    rendered = []
    for name, value in (properties or {}).items():
        # the common case in one test: a plain name, a text or an integer (not a bool)
        if type(name) is str and 0 < len(name) < NAME_LIMIT and name[0] != "_":
            if type(value) is str:
                rendered.append((name, value))
                continue
            if type(value) is int:
                rendered.append((name, str(value)))
                continue
        _name(kind, name, name)
        if name.startswith("_"):
            raise MessageError(kind, name, "names starting with '_' are reserved by KISSmetrics")
        if value is None:
            raise MessageError(kind, name, "has no value (None)")
        rendered.append((name, _property_value(kind, name, value)))
    return rendered


def _timed(kind: str, time: object | None) -> list[tuple[str, str]]:
    if time is None:
        return []
    return [("_t", _timestamp(kind, time)), ("_d", "1")]


def _day(timed: list[tuple[str, str]]) -> int | None:
    """The UTC day of a backdated message's ``_t`` (its :attr:`Message.day`), else None."""
    return epoch_day(int(timed[0][1])) if timed else None


def record(
    person: str | int,
    event: str,
    *,
    time: int | datetime | None = None,
    properties: Mapping[str, object] | None = None,
) -> Message:
    """Record that ``person`` did ``event`` (/e); ``time`` backdates it (``_t``, ``_d=1``).

    A backdated message's :attr:`~Message.day` is ``time``'s UTC day.
    """
    params = [("_p", _identity("e", "_p", person)), ("_n", _name("e", "_n", event))]
    timed = _timed("e", time)
    params += timed + _properties("e", properties)
    check_size("e", params)
    return Message("kissmetrics", "e", tuple(params), day=_day(timed))


def set_properties(
    person: str | int,
    properties: Mapping[str, object],
    *,
    time: int | datetime | None = None,
) -> Message:
    """Set properties of ``person`` (/s); with ``time``, backdated via ``_t`` and ``_d=1``."""
    rendered = _properties("s", properties)
    if not rendered:
        raise MessageError("s", None, "set needs at least one property")
    timed = _timed("s", time)
    params = [("_p", _identity("s", "_p", person)), *timed, *rendered]
    check_size("s", params)
    return Message("kissmetrics", "s", tuple(params), day=_day(timed))


def alias(person: str | int, identity: str | int) -> Message:
    """Tell KISSmetrics that ``person`` and ``identity`` are the same person (/a)."""
    params = (("_p", _identity("a", "_p", person)), ("_n", _identity("a", "_n", identity)))
    return Message("kissmetrics", "a", params)


def url(message: Message, base_url: str, api_key: str) -> str:
    """The request URL ``<base>/<e|s|a>?_k=<key>&<params>``, every value percent-encoded."""
    if message.destination != "kissmetrics":
        raise ValueError(f"not a KISSmetrics message: {message.destination}/{message.kind}")
    if not api_key:
        raise ValueError("the KISSmetrics API key is empty")
    prefix = _url_prefix(base_url, api_key, message.kind)
    query = encode_query(message.params)
    return f"{prefix}&{query}" if query else prefix


@functools.lru_cache(maxsize=64)
def _url_prefix(base_url: str, api_key: str, kind: str) -> str:
    """``<base>/<kind>?_k=<key>``: the part of a URL that every message of a kind shares."""
    return f"{base_url.rstrip('/')}/{kind}?{encode_query((('_k', api_key),))}"


def parse_url(request_url: str) -> tuple[Message, str]:
    """The validated message and API key of a KISSmetrics request URL (or path and query)."""
    parts = urlsplit(request_url)
    kind = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if kind not in KINDS:
        raise MessageError("request", None, f"path {parts.path!r} is not /e, /s or /a")
    params: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True, errors="strict"):
        if name in params:
            raise MessageError(kind, name, "is given more than once")
        params[name] = value
    api_key = params.pop("_k", "")
    if not api_key:
        raise MessageError(kind, "_k", "is required")
    for required in ("_p", "_n") if kind in ("e", "a") else ("_p",):
        if required not in params:
            raise MessageError(kind, required, "is required")
    person = params.pop("_p")
    time = params.pop("_t", None)
    backdated = params.pop("_d", None)
    if backdated not in (None, "1"):
        raise MessageError(kind, "_d", f"must be 1 when given, got {backdated!r}")
    if (time is None) != (backdated is None):
        raise MessageError(kind, "_t", "_t and _d=1 go together")
    seconds = None if time is None else int(_timestamp(kind, time))
    if kind == "a":
        if time is not None or params.keys() - {"_n"}:
            raise MessageError("a", None, "alias takes only _k, _p and _n")
        return alias(person, params["_n"]), api_key
    if kind == "e":
        return record(person, params.pop("_n"), time=seconds, properties=params), api_key
    return set_properties(person, params, time=seconds), api_key
