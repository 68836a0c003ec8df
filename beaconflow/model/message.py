"""The message model shared by both services: what gets sent, where, and its identity.

A :class:`Message` is the logical content of one HTTP GET, without credentials: the
destination, the message kind (a Kontagent type code such as ``ins`` or a KISSmetrics
endpoint ``e``/``s``/``a``) and its parameters as strings. Credentials live in an
:class:`Endpoint` and are only joined with a message when a URL is rendered, so messages
can be deduplicated, written to a dead letter or a dry-run file without carrying secrets.

The identity key (:attr:`Message.key`) is what dedup and the delivery ledger rely on: the
same logical message always has the same key, whatever the order its parameters were
given in, and signing noise (``ts``, ``an_sig``) is never part of a message.

A message also knows the UTC day of the event it was built from (:attr:`Message.day`, days
since 1970-01-01), which is not part of its identity either: the delivery ledger files its
entries by that day, so that a run reads only the entries that can match its messages
(docs/ledger.md, "Shards by event day").
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Literal

from beaconflow.model.errors import BeaconflowError
from beaconflow.model.urlencode import encode_query

Destination = Literal["kontagent", "kissmetrics"]

#: The destinations beaconflow knows, in the order reports list them.
DESTINATIONS: tuple[Destination, ...] = ("kontagent", "kissmetrics")

#: Seconds in a UTC day (no leap seconds in Unix time).
SECONDS_PER_DAY = 86_400

#: The (destination, kind) of messages whose identity holds no time: a KISSmetrics alias
#: (``_p``, ``_n``) is the same message whichever event, on whichever day, asked for it. The
#: ledger files their deliveries under no day (:func:`beaconflow.delivery.ledger.entry_day`).
TIMELESS_KINDS: frozenset[tuple[str, str]] = frozenset({("kissmetrics", "a")})


def epoch_day(seconds: int) -> int:
    """The UTC day of an instant in seconds since the epoch, as days since 1970-01-01."""
    return seconds // SECONDS_PER_DAY


class MessageError(BeaconflowError, ValueError):
    """A message cannot be built: names the message kind, the parameter and the rule broken."""

    def __init__(self, kind: str, param: str | None, rule: str) -> None:
        self.kind = kind
        self.param = param
        self.rule = rule
        where = f"{kind}: parameter {param!r}" if param else kind
        super().__init__(f"{where}: {rule}")


@dataclass(frozen=True)
class Message:
    """One message for one service, without credentials.

    ``params`` holds ``(name, value)`` pairs sorted by name, values already rendered as the
    strings the service receives (lists comma-joined, booleans ``0``/``1``).
    ``occurrence`` distinguishes messages whose content alone does not identify them: Kontagent
    counts every request and has no timestamps, so two level-ups of one user are two messages
    with equal parameters; the pipeline sets ``occurrence`` to the source event's identity.
    Applications sending one message at a time leave it empty.
    ``source`` is where the message came from, the input's ``file:position`` (of the event
    the event dedup kept, when several were equal), so that a send failure can be traced
    back to its line; empty when unknown. ``day`` is the UTC day of the event it was built
    from, in days since 1970-01-01 (:func:`epoch_day`), None when unknown (a Kontagent
    message replayed from a dead letter, a message an application built). Neither is part
    of the message's identity: they take no part in its key, its equality or its hash.
    """

    destination: Destination
    kind: str
    params: tuple[tuple[str, str], ...]
    occurrence: str = ""
    source: str = field(default="", compare=False)
    day: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(sorted(self.params)))
        refuse_surrogates(self)

    @functools.cached_property
    def key(self) -> str:
        """The message's identity key (:func:`identity_key`), computed when first asked for.

        Most messages of a run never need theirs (without a ledger, only the message dedup
        groups by it), and a message restored from a coder's bytes would hash its every
        parameter again: the key is the costliest part of a message to make.
        """
        return identity_key(self)

    @classmethod
    def from_parts(
        cls,
        destination: Destination,
        kind: str,
        params: tuple[tuple[str, str], ...],
        occurrence: str,
        key: str | None = None,
        source: str = "",
        day: int | None = None,
    ) -> Message:
        """The message of parts taken from a message before: ``params`` sorted already.

        ``key`` is its identity key when known, or None to compute it when it is first asked
        for (no sorting either way). Beam's coder (:mod:`beaconflow.transforms.coders`)
        restores messages with it.
        """
        return cls._assemble(destination, kind, params, occurrence, key, source, day)

    def with_source(self, source: str) -> Message:
        """The same message, coming from ``source`` (nothing sorted or hashed again)."""
        return self.with_origin(source, self.day)

    def with_origin(self, source: str, day: int | None) -> Message:
        """The same message, built from the event at ``source`` on ``day`` (nothing hashed)."""
        if source == self.source and day == self.day:
            return self
        return self._assemble(
            self.destination,
            self.kind,
            self.params,
            self.occurrence,
            self.__dict__.get("key"),  # the key when it was computed already
            source,
            day,
        )

    @classmethod
    def _assemble(
        cls,
        destination: Destination,
        kind: str,
        params: tuple[tuple[str, str], ...],
        occurrence: str,
        key: str | None,
        source: str = "",
        day: int | None = None,
    ) -> Message:
        """A message from parts already checked and sorted (no __post_init__)."""
        message = cls.__new__(cls)
        # frozen: its own __setattr__ refuses, its __dict__ takes them (the key's too, which
        # the cached property then finds)
        fields = message.__dict__
        fields["destination"] = destination
        fields["kind"] = kind
        fields["params"] = params
        fields["occurrence"] = occurrence
        fields["source"] = source
        fields["day"] = day
        if key is not None:
            fields["key"] = key
        return message

    def param(self, name: str) -> str | None:
        """The value of parameter ``name``, or None when the message does not carry it."""
        for key, value in self.params:
            if key == name:
                return value
        return None

    def param_map(self) -> dict[str, str]:
        """The parameters as a dict (names are unique within a message)."""
        return dict(self.params)


#: The longest query a message may have, percent-encoded: the request line of a GET must fit
#: the 8 KiB that common servers take (aiohttp's and nginx's default), with room left for
#: the base URL, the key and Kontagent's signature.
MAX_QUERY_BYTES = 7_168


def check_size(kind: str, params: Sequence[tuple[str, str]]) -> None:
    """MessageError when a message's query is longer than :data:`MAX_QUERY_BYTES`."""
    # a character is at most 12 bytes encoded (4 UTF-8 bytes, each %XX): most messages are
    # far below the limit, and only the long ones are encoded to be measured
    if 12 * (sum(map(len, chain.from_iterable(params))) + 2 * len(params)) <= MAX_QUERY_BYTES:
        return
    size = len(encode_query(params))
    if size > MAX_QUERY_BYTES:
        longest = max(params, key=lambda param: len(param[1]))[0]
        raise MessageError(
            kind,
            None,
            f"is {size:,} bytes as a URL query; at most {MAX_QUERY_BYTES:,} fit in a request "
            f"(the longest parameter is {longest!r})",
        )


def identity_key(message: Message) -> str:
    """A stable hex key for a message: equal for the same logical message, else different.

    Built from the destination, the kind, the sorted parameters and the occurrence, with
    separators that cannot occur unescaped in the parts (each part is length-prefixed: its
    UTF-8 length as 4 bytes, big-endian, then its UTF-8 bytes), hashed with SHA-256.
    Raises MessageError for text that cannot be sent as UTF-8 (lone surrogates).
    """
    parts = [message.destination, message.kind, message.occurrence]
    for pair in sorted(message.params):
        parts.extend(pair)
    # The bytes hashed are those of the definition above (keys in existing ledgers must not
    # change), assembled as one text of code points below 256 and encoded once as Latin-1:
    # an ASCII part is its own UTF-8, another is replaced by its UTF-8 bytes as Latin-1
    # characters, and each length prefix is 4 such characters. Half the time of encoding
    # and measuring each part on its own, on messages with many properties.
    prefixes = _LENGTH_PREFIXES
    pieces: list[str] = []
    for part in parts:
        if not part.isascii():
            try:
                part = part.encode("utf-8").decode("latin-1")
            except UnicodeEncodeError:
                refuse_surrogates(message)
                raise
        size = len(part)
        pieces.append(prefixes[size] if size < _PREFIXED else _length_prefix(size))
        pieces.append(part)
    return hashlib.sha256("".join(pieces).encode("latin-1")).hexdigest()[:32]


def _length_prefix(size: int) -> str:
    """A part's length prefix (4 bytes, big-endian) as the text of their Latin-1 characters."""
    return size.to_bytes(4, "big").decode("latin-1")


#: The length prefixes of the parts most messages have, made once.
_PREFIXED = 1024
_LENGTH_PREFIXES = tuple(_length_prefix(size) for size in range(_PREFIXED))


_SURROGATE = re.compile("[\ud800-\udfff]")


def refuse_surrogates(message: Message) -> None:
    """MessageError naming the first part of ``message`` that is not text (a lone surrogate).

    Such text cannot be encoded as UTF-8, so it could be neither hashed nor sent.
    """
    parts = [message.destination, message.kind, message.occurrence]
    for pair in message.params:
        parts.extend(pair)
    text = "".join(parts)
    # isascii() reads a flag: most messages are decided by it
    if text.isascii() or _SURROGATE.search(text) is None:
        return
    for part in parts:
        if _SURROGATE.search(part):
            raise MessageError(
                message.kind, None, f"{part[:40]!r} is not valid Unicode (a lone surrogate)"
            )


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom a destination's messages are sent.

    ``api_key`` and ``secret`` are excluded from ``repr`` so that they cannot leak through a
    log line or an exception that formats the endpoint.
    """

    destination: Destination
    base_url: str
    api_key: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)

    def secrets(self) -> tuple[str, ...]:
        """The values that must never be shown: the API key and the secret, when set."""
        return tuple(value for value in (self.api_key, self.secret) if value)
