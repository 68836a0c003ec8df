"""Retry policy for delivery: which outcomes to retry, and how long to wait before the next try.

One readable function, :func:`classify`, turns an HTTP outcome into a
:class:`Classification`: its :class:`Verdict` (delivered, retriable, permanent), whether it
is back-pressure (429, 503, timeouts: the adaptive limits slow down), whether it is a
redirect (never followed), whether the network itself refused it (**blocked**: a TLS
certificate that is not trusted, a server not speaking TLS on an https:// URL, a proxy that
refuses the CONNECT), whether it shows that the
request reached the service, and whether it is **ambiguous**: the request went out and no
answer came back, so the service may have received it (:mod:`beaconflow.delivery.ambiguity`). As
Vector's ``RetryLogic`` feeds both its retries and its adaptive concurrency, this one function
feeds the sender's retries, its adaptive limits and pacing, its redirect watch, and the
small client; no other module keeps a status set of its own.
:class:`RetryPolicy` is an immutable value (in the spirit of urllib3's ``Retry``) saying how
many tries a message gets, whether an ambiguous attempt is tried again
(:meth:`RetryPolicy.retries`, the one retry decision), and how long to back off between
tries. Neither touches the network or sleeps, so both are tested as plain functions::

    python -m pytest tests/delivery/test_retry.py

The anchors are those of Vector and Fluent Bit for classification (retry 408, 429, 5xx except
501, connection errors and timeouts; other statuses are permanent) and AWS "full jitter" for
backoff, with the server's ``Retry-After`` honoured up to a cap; the split of connection
errors (the request never left) from read errors (it may have had effects) is urllib3's.
"""

from __future__ import annotations

import asyncio
import enum
import random
import re
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import ClassVar

import aiohttp
from yarl import URL

from beaconflow.delivery.network import handshake_failure

# Past 2**1000 every sane cap is reached; bounding the exponent keeps the float finite.
_MAX_EXPONENT = 1000
_DELTA_SECONDS = re.compile(r"\s*(\d+)\s*")


class Verdict(enum.Enum):
    """What one attempt's outcome means for the message."""

    DELIVERED = "delivered"
    RETRIABLE = "retriable"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Classification:
    """What one attempt's outcome means, for every part of the sender that acts on it.

    ``verdict``
        Delivered, worth another try, or permanent (the retry decision).
    ``push_back``
        The service asks to slow down: 429, 503 or a timeout. The adaptive concurrency and
        rate back off on it; it says nothing about retrying.
    ``redirect``
        A 3xx: never followed and never retried (see :func:`redirect_reason`); a row of them
        marks a destination as misconfigured.
    ``reached``
        The answer shows that the URL reaches the service: a status below 500 that is neither
        a redirect nor 429. It breaks a row of redirects; 5xx, 429 and transport errors
        neither count in such a row nor break it.
    ``ambiguous``
        No answer came back after the request went out (a timeout, a reset, a connection
        closed before the answer): the service may have received it, and a retry may be
        counted twice. Always retriable; :attr:`RetryPolicy.retry_ambiguous` says whether
        it is retried. A connection error (the request never left) is not ambiguous, nor
        is any attempt that got a status: the status says what the service made of it.
    ``blocked``
        The network between beaconflow and the service refused the request before it left:
        the server's TLS certificate is not trusted (aiohttp's
        ``ClientConnectorCertificateError``) or the proxy refused the CONNECT with a 4xx
        (``ClientHttpProxyError``: 403, 407...). Permanent: the next try meets the same CA
        and the same proxy. A row of them stops the destination (the sender's
        ``BlockedWatch``), as a row of redirects does. A proxy's 5xx or a timeout stays
        retriable.

    The instances are shared (:func:`classify` allocates nothing per attempt), so compare
    them by their fields.
    """

    verdict: Verdict
    push_back: bool = False
    redirect: bool = False
    reached: bool = False
    ambiguous: bool = False
    blocked: bool = False
    #: ``verdict is Verdict.DELIVERED``, read once per attempt on the hot path.
    delivered: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "delivered", self.verdict is Verdict.DELIVERED)


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
    ``retry_ambiguous``
        Whether an ambiguous attempt (:attr:`Classification.ambiguous`: sent, no answer) is
        tried again. True (at-least-once): it is, and a service that counts requests on
        receipt may count the message more than once. False (``--no-retry-ambiguous``): the
        message fails at once, its reason saying that it may have been received; connection
        errors, timeouts before the request went out and retriable statuses are still
        retried.
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
    #: Statuses that mean "slow down": back-pressure for the adaptive concurrency and rate.
    PUSH_BACK_STATUSES: ClassVar[frozenset[int]] = frozenset({429, 503})
    #: Transport errors that mean "slow down": the service did not answer in time.
    PUSH_BACK_ERRORS: ClassVar[frozenset[type[BaseException]]] = frozenset(
        {asyncio.TimeoutError, aiohttp.ServerTimeoutError}
    )
    #: Transport errors that mean the request never left, whatever else is known: no
    #: connection (refused, unresolvable, TLS, proxy) or none within the connect timeout.
    #: Never ambiguous.
    CONNECTION_ERRORS: ClassVar[frozenset[type[BaseException]]] = frozenset(
        {aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, ConnectionRefusedError}
    )

    #: Transport errors of a TLS certificate that is not trusted (an unknown CA, a
    #: self-signed certificate, a host name it does not cover): permanent and blocked.
    CERTIFICATE_ERRORS: ClassVar[frozenset[type[BaseException]]] = frozenset(
        {aiohttp.ClientConnectorCertificateError}
    )
    #: Transport errors of a TLS handshake that failed otherwise: blocked (permanent) when
    #: it cannot succeed with this server (it speaks plain HTTP on the https:// port, or
    #: no TLS version in common: :func:`~beaconflow.delivery.network.handshake_failure`),
    #: else a retriable connection error (a handshake cut short may pass next time).
    HANDSHAKE_ERRORS: ClassVar[frozenset[type[BaseException]]] = frozenset(
        {aiohttp.ClientConnectorSSLError}
    )
    #: The error of a proxy that answered its CONNECT (or a plain request) with a status:
    #: a 4xx (403 Forbidden, 407 Proxy Authentication Required) is blocked and permanent,
    #: any other status retriable (a proxy's 502 or 503 passes).
    #: The status only a proxy answers with (407 Proxy Authentication Required): on an
    #: http:// URL, which a proxy forwards instead of tunnelling, it comes as the answer
    #: itself. Blocked and permanent, as a refused tunnel.
    PROXY_AUTH_STATUS: ClassVar[int] = 407
    PROXY_ERRORS: ClassVar[frozenset[type[BaseException]]] = frozenset(
        {aiohttp.ClientHttpProxyError}
    )

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float | None = 30.0
    retry_after_cap: float | None = 60.0
    retry_ambiguous: bool = True

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

    def retries(self, answer: Classification, attempts: int) -> bool:
        """Whether a message whose attempt number ``attempts`` ended in ``answer`` is tried again.

        Retriable, tries left, and not an ambiguous attempt when those are not retried.
        """
        return (
            answer.verdict is Verdict.RETRIABLE
            and attempts < self.max_attempts
            and (self.retry_ambiguous or not answer.ambiguous)
        )

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


def classify(
    status: int | None, error: BaseException | None, *, sent: bool | None = None
) -> Classification:
    """What one attempt means: its HTTP status, or the error when none came back.

    A status, when there is one, decides the verdict: the server has answered even if reading
    the rest of the body failed afterwards. Without a status, the error decides: transport
    failures (refused or dropped connections, timeouts) are retriable, except the
    :attr:`RetryPolicy.PERMANENT_ERRORS` that no retry can fix, and the **blocked** ones: a
    :attr:`RetryPolicy.CERTIFICATE_ERRORS` error, a :attr:`RetryPolicy.HANDSHAKE_ERRORS`
    error of a handshake that cannot succeed, or a :attr:`RetryPolicy.PROXY_ERRORS`
    error whose status is a 4xx other than 408 and 429 (its 5xx, 408 and 429 are retriable
    connection errors: the request never left). Back-pressure is either: a
    :attr:`RetryPolicy.PUSH_BACK_STATUSES` status, or a
    :attr:`RetryPolicy.PUSH_BACK_ERRORS` error, even one that cut short a body whose status
    had come.

    A retriable transport error is ambiguous when the request went out: ``sent`` says
    whether it did (:mod:`beaconflow.delivery.ambiguity`), and a
    :attr:`RetryPolicy.CONNECTION_ERRORS` error never did. With ``sent`` None (not known)
    the error's type decides: every other transport error (a timeout, a reset, a
    disconnection, a cut body) is taken as ambiguous, since it may have come after the
    request went out.
    """
    if status is not None:
        found = _BY_STATUS.get(status)
        if found is None:
            found = _BY_STATUS[status] = _classify_status(status)
        if error is not None and not found.push_back and isinstance(error, _PUSH_BACK_ERRORS):
            return _pushed_back(found)
        return found
    if error is None:
        raise ValueError("an attempt has either a status or an error")
    if isinstance(error, _CERTIFICATE_ERRORS):
        return _BLOCKED
    if isinstance(error, _HANDSHAKE_ERRORS) and handshake_failure(error) is not None:
        return _BLOCKED
    if isinstance(error, _PROXY_ERRORS):
        proxy_status = getattr(error, "status", 0)
        refused = 400 <= proxy_status < 500 and proxy_status not in (408, 429)
        return _BLOCKED if refused else _TRANSPORT_RETRIABLE
    if isinstance(error, _PERMANENT_ERRORS):
        return _TRANSPORT_PERMANENT
    push_back = isinstance(error, _PUSH_BACK_ERRORS)
    if sent is False or isinstance(error, _CONNECTION_ERRORS):
        return _TRANSPORT_PUSH_BACK if push_back else _TRANSPORT_RETRIABLE
    return _AMBIGUOUS_PUSH_BACK if push_back else _AMBIGUOUS


def _classify_status(status: int) -> Classification:
    """The classification of an answer with ``status`` (computed once per status)."""
    redirect = status in RetryPolicy.REDIRECT_STATUSES
    if status in RetryPolicy.DELIVERED_STATUSES:
        verdict = Verdict.DELIVERED
    elif status in RetryPolicy.RETRIABLE_STATUSES:
        verdict = Verdict.RETRIABLE
    else:
        verdict = Verdict.PERMANENT
    blocked = status == RetryPolicy.PROXY_AUTH_STATUS  # a proxy's, not the service's
    return Classification(
        verdict,
        push_back=status in RetryPolicy.PUSH_BACK_STATUSES,
        redirect=redirect,
        reached=status < 500 and status != 429 and not redirect and not blocked,
        blocked=blocked,
    )


def _pushed_back(found: Classification) -> Classification:
    """``found`` with back-pressure (a timeout that cut short its body), shared per kind."""
    key = (found.verdict, found.redirect, found.reached, found.blocked)
    pushed = _PUSHED_BACK.get(key)
    if pushed is None:
        pushed = _PUSHED_BACK[key] = Classification(
            found.verdict,
            push_back=True,
            redirect=found.redirect,
            reached=found.reached,
            blocked=found.blocked,
        )
    return pushed


# The tuples isinstance wants, and the shared classifications of attempts without a status.
_PERMANENT_ERRORS = tuple(RetryPolicy.PERMANENT_ERRORS)
_PUSH_BACK_ERRORS = tuple(RetryPolicy.PUSH_BACK_ERRORS)
_CONNECTION_ERRORS = tuple(RetryPolicy.CONNECTION_ERRORS)
_CERTIFICATE_ERRORS = tuple(RetryPolicy.CERTIFICATE_ERRORS)
_HANDSHAKE_ERRORS = tuple(RetryPolicy.HANDSHAKE_ERRORS)
_PROXY_ERRORS = tuple(RetryPolicy.PROXY_ERRORS)
_BLOCKED = Classification(Verdict.PERMANENT, blocked=True)
_TRANSPORT_PERMANENT = Classification(Verdict.PERMANENT)
_TRANSPORT_RETRIABLE = Classification(Verdict.RETRIABLE)
_TRANSPORT_PUSH_BACK = Classification(Verdict.RETRIABLE, push_back=True)
_AMBIGUOUS = Classification(Verdict.RETRIABLE, ambiguous=True)
_AMBIGUOUS_PUSH_BACK = Classification(Verdict.RETRIABLE, push_back=True, ambiguous=True)
# Filled on first use: a handful of statuses in a run, each classified once.
_BY_STATUS: dict[int, Classification] = {}
_PUSHED_BACK: dict[tuple[Verdict, bool, bool, bool], Classification] = {}


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
            host = f"[{joined.host}]" if ":" in joined.host else joined.host  # IPv6
            target = f"{joined.scheme}://{host}"
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
