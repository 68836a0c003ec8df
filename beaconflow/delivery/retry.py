"""Retry policy for delivery: which outcomes to retry, and how long to wait before the next try.

One readable function, :func:`classify`, turns an HTTP outcome into a :class:`Verdict`;
:class:`RetryPolicy` is an immutable value (in the spirit of urllib3's ``Retry``) saying how
many tries a message gets and how long to back off between them. Neither touches the network
or sleeps, so both are tested as plain functions::

    python -m pytest tests/test_retry.py

The anchors are those of Vector and Fluent Bit for classification (retry 408, 429, 5xx except
501, connection errors and timeouts; other statuses are permanent) and AWS "full jitter" for
backoff, with the server's ``Retry-After`` honoured up to a cap.
"""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import ClassVar

import aiohttp
from yarl import URL

# Past 2**1000 every sane cap is reached; bounding the exponent keeps the float finite.
_MAX_EXPONENT = 1000
_DELTA_SECONDS = re.compile(r"\s*(\d+)\s*")


class Verdict(enum.Enum):
    """What one attempt's outcome means for the message."""

    DELIVERED = "delivered"
    RETRIABLE = "retriable"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class RetryPolicy:
    """How many tries a message gets and how long to wait between them.

    ``max_attempts``
        Total tries including the first. 1 means "never retry". 0 and None are rejected: a
        message is always tried at least once, and an unbounded retry loop could hold a
        pipeline forever.
    ``base_delay``
        Seconds; the backoff ceiling before the ``n``-th retry is ``base_delay * 2**n``.
        0 means retry immediately (no backoff). None is rejected.
    ``max_delay``
        Seconds; the cap on that ceiling. None means no cap; 0 means retry immediately.
    ``retry_after_cap``
        Seconds; the longest ``Retry-After`` honoured (longer values are cut to it). None means
        honour any ``Retry-After``; 0 means ignore ``Retry-After`` and use the jitter alone.
    """

    #: Statuses that mean "the request was accepted".
    DELIVERED_STATUSES: ClassVar[frozenset[int]] = frozenset(range(200, 300))
    #: Statuses worth another try: timeouts, throttling and server errors, except 501
    #: (Not Implemented), which no number of retries will change.
    RETRIABLE_STATUSES: ClassVar[frozenset[int]] = frozenset(
        {408, 429} | (set(range(500, 600)) - {501})
    )
    #: Statuses of a redirect, which is never followed and never retried: the request did
    #: not reach the service (see :func:`redirect_reason`).
    REDIRECT_STATUSES: ClassVar[frozenset[int]] = frozenset(range(300, 400))
    #: Transport errors that will fail the same way again: a URL that cannot be formed or
    #: parsed (aiohttp's ``InvalidURL`` is a ``ValueError``) or whose scheme is not HTTP is
    #: not a network hiccup.
    PERMANENT_ERRORS: ClassVar[frozenset[type[BaseException]]] = frozenset(
        {ValueError, aiohttp.NonHttpUrlClientError}
    )

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float | None = 30.0
    retry_after_cap: float | None = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if self.base_delay is None or self.base_delay < 0:
            raise ValueError(f"base_delay must be >= 0, got {self.base_delay!r}")
        if self.max_delay is not None and self.max_delay < 0:
            raise ValueError(f"max_delay must be >= 0 or None, got {self.max_delay!r}")
        if self.retry_after_cap is not None and self.retry_after_cap < 0:
            raise ValueError(f"retry_after_cap must be >= 0 or None, got {self.retry_after_cap!r}")

    def can_retry(self, attempts: int) -> bool:
        """True when a message already tried ``attempts`` times may be tried once more."""
        return attempts < self.max_attempts

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None) -> float:
        """Seconds to wait before retrying after the failed attempt numbered ``attempt``.

        ``attempt`` counts from 0 (the first try), so the wait after the first failure is drawn
        from ``[0, base_delay]``. Full jitter: ``uniform(0, min(max_delay, base_delay *
        2**attempt))``. When the server sent ``Retry-After`` (already parsed to seconds), the
        wait is at least ``min(retry_after, retry_after_cap)``.
        """
        if attempt < 0:
            raise ValueError(f"attempt counts from 0, got {attempt}")
        ceiling = self.base_delay * 2.0 ** min(attempt, _MAX_EXPONENT)
        if self.max_delay is not None:
            ceiling = min(ceiling, self.max_delay)
        wait = rng.uniform(0.0, ceiling)
        if retry_after is not None:
            honoured = max(0.0, retry_after)
            if self.retry_after_cap is not None:
                honoured = min(honoured, self.retry_after_cap)
            wait = max(wait, honoured)
        return wait


def classify(status: int | None, error: BaseException | None) -> Verdict:
    """The verdict on one attempt: its HTTP status, or the error when none came back.

    A status, when there is one, decides: the server has answered even if reading the rest of
    the body failed afterwards. Without a status, the error decides: transport failures
    (refused or dropped connections, timeouts) are retriable, except the
    :attr:`RetryPolicy.PERMANENT_ERRORS` that no retry can fix.
    """
    if status is not None:
        if status in RetryPolicy.DELIVERED_STATUSES:
            return Verdict.DELIVERED
        if status in RetryPolicy.RETRIABLE_STATUSES:
            return Verdict.RETRIABLE
        return Verdict.PERMANENT
    if error is None:
        raise ValueError("an attempt has either a status or an error")
    if isinstance(error, tuple(RetryPolicy.PERMANENT_ERRORS)):
        return Verdict.PERMANENT
    return Verdict.RETRIABLE


#: How a redirect's reason ends (a stop's reason quotes the reason without it).
NOT_FOLLOWED = " (redirects are not followed)"


def redirect_reason(status: int, request_url: str, location: str | None) -> str:
    """The reason a redirect is a failure: its status and its target's host, never more.

    Redirects are never followed: a tracking GET answered with a 3xx did not reach the
    service (a captive portal, a login proxy, a mistyped URL). The target's path and query
    are left out: they may carry the request's own key (a redirect to itself).
    """
    target = "no Location"
    if location:
        try:
            joined = URL(request_url, encoded=True).join(URL(location, encoded=True))
        except ValueError:
            joined = None
        if joined is None or not joined.host:
            target = "an unparsable Location"
        else:
            target = f"{joined.scheme}://{joined.host}"
            if joined.explicit_port is not None:
                target += f":{joined.explicit_port}"
    return f"HTTP {status}: redirected to {target}{NOT_FOLLOWED}"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header, or None when absent or invalid.

    Accepts delta-seconds (``"120"``) and HTTP-dates (``"Wed, 21 Oct 2015 07:28:00 GMT"``);
    ``now`` is the current wall-clock time in seconds since the epoch (``time.time()``), used
    to turn a date into a delay. A date in the past gives 0.
    """
    if value is None:
        return None
    match = _DELTA_SECONDS.fullmatch(value)
    if match:
        return float(match.group(1))
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; "-0000" parses as naive.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
