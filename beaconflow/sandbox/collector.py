"""The sandbox collector: a local HTTP server that speaks the Kontagent and KISSmetrics APIs.

It serves the CLI's ``--sandbox`` mode, the tests and the throughput benchmark. Routes are
Kontagent's ``GET /api/v1/<key>/<type>/`` and KISSmetrics' ``GET /e``, ``/s`` and ``/a``. Unlike
the real services it is strict: every request is validated with
:func:`beaconflow.model.render.parse_url`; a valid one is recorded and answered ``200`` with the
services' 1x1 GIF, an invalid one is recorded as rejected and answered ``400`` with the reason
(``403`` for an unexpected API key or a bad ``an_sig``). API keys are never stored: rejected
paths and reasons go through :class:`beaconflow.delivery.redact.Redactor`.

:class:`Faults` injects what a real service does on a bad day (5xx, 429 with ``Retry-After``,
latency and spikes, dropped connections, a per-destination rate limit, users always refused),
seeded so that tests are deterministic. A faulted request is not recorded as accepted. Some
are about a connection's life: keep-alive connections closed gracefully after N answers
(``Connection: close``, nginx's ``keepalive_requests``), closed when idle, or used up and
closed under the next request without a word; :meth:`Collector.connections` counts the
connections that carried requests, which shows whether a client reuses them.

Scripted answers (``Collector(scripted=True)``, ``--scripted``) play one answer per request,
chosen by the request's kind, in the manner of httpbin: to show, or test, what a sender does
with each. A request whose kind (the Kontagent type in ``/api/v1/<key>/<kind>/``, or the path
of a KISSmetrics-style ``/<kind>``) is one of :data:`SCRIPTED_KINDS` is answered by its
script, neither validated nor recorded as accepted (any other request is served as usual):

=================  ========================================================================
``ok``             200 and the GIF
``flaky``          503 to the first ``n`` tries (query parameter ``n``), then 200
``throttle``       429 with ``Retry-After: <after>`` (query ``after``: seconds or an HTTP
                   date; 1 when absent) to the first try, then 200
``bad``            400 and a line of text saying so
``explain``        400 and a JSON explanation that echoes the request's path, query and key
                   (as some services do: a sender must mask the key before it quotes it)
``error_page``     500 and a multi-line HTML error page of a few KiB, as a proxy answers
``huge``           200 and a body of ``bytes`` bytes (query parameter; 300 MB when absent),
                   generated as it is written, never held; :meth:`Collector.body_written`
                   says how much of it the client took before it closed the connection
``unimplemented``  501
``slow``           200 after ``seconds`` (query parameter)
``gated``          200 once the gate is open (:meth:`Collector.close_gate`, ``open_gate``;
                   open at start and when the collector stops)
``drop``           the connection closed without an answer
``redirect``       302 to the login page; ``loop``: 302 to the request itself
=================  ========================================================================

Tries are counted per request, named by its ``token`` query parameter
(:meth:`Collector.tries`); :meth:`Collector.in_flight` and :meth:`Collector.max_in_flight`
say how many scripted requests of a kind are (or were at most) being answered at once.

Run it on its own (Ctrl-C or SIGTERM stops it)::

    python -m beaconflow.sandbox.collector --port 8099 --error-rate 0.05 --seed 7

or with scripted answers::

    python -m beaconflow.sandbox.collector --port 8099 --scripted
    curl -i 'http://127.0.0.1:8099/api/v1/key/flaky/?token=a&n=1'   # 503, then 200

In tests, in a background thread with its own event loop::

    with Collector(faults=Faults(error_rate=0.1)) as collector:
        requests.get(collector.base_url + "/e?_k=key&_p=bob&_n=Signed+Up")
        collector.accepted()

or inside a running event loop with ``async with Collector() as collector``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import random
import signal
import socket
import ssl
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from beaconflow.delivery.redact import Redactor
from beaconflow.model.kontagent import signature
from beaconflow.model.message import Destination, Message
from beaconflow.model.render import parse_url

#: The interface the collector binds to unless told otherwise.
HOST = "127.0.0.1"
#: The only interfaces it may bind to: it must never be reachable from elsewhere.
LOOPBACK = ("127.0.0.1", "::1")

#: The 43-byte transparent 1x1 GIF89a both services answer with.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

Parser = Callable[[str], tuple[Message, str]]
"""Path and query -> (validated message, API key); raises MessageError (a ValueError)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""An aiohttp request handler, as a middleware receives it."""

Sleep = Callable[[float], Awaitable[None]]
"""How injected latency waits; tests pass a fake that records the delays."""

#: The kinds that scripted answers play (see the module docstring), in its table's order.
SCRIPTED_KINDS = frozenset(
    {
        "ok",
        "flaky",
        "throttle",
        "bad",
        "explain",
        "error_page",
        "huge",
        "unimplemented",
        "slow",
        "gated",
        "drop",
        "redirect",
        "loop",
    }
)
#: The body of a scripted ``huge`` answer when its query names no size: 300 MB.
HUGE_BYTES = 300 * 1024 * 1024
#: What a ``huge`` body is made of, written again and again.
_HUGE_CHUNK = b"GIF89a" + b"\x00" * (64 * 1024 - 6)
#: The page of a scripted ``error_page`` answer: lines, indentation, a long style block.
ERROR_PAGE = (
    "<!DOCTYPE html>\n<html>\n  <head>\n    <title>500 Internal Server Error</title>\n"
    "    <style>\n"
    + "".join(f"      .rule{n} {{ margin: {n}px; padding: {n}px; }}\n" for n in range(120))
    + "    </style>\n  </head>\n  <body>\n    <h1>Internal Server Error</h1>\n"
    "    <p>The server encountered an internal error and could not complete your request.</p>\n"
    "  </body>\n</html>\n"
)


@dataclass(frozen=True)
class Faults:
    """What goes wrong, and how often. The default is a healthy service.

    Rates are fractions of requests in [0, 1]; ``drop_rate + error_rate + too_many_rate``
    must not exceed 1 (one draw decides among them). 0 disables a fault.
    """

    #: Answered 500 or 503 (half each).
    error_rate: float = 0.0
    #: Answered 429 with ``Retry-After: retry_after``.
    too_many_rate: float = 0.0
    #: Seconds in the ``Retry-After`` of a 429 from ``too_many_rate``; 0 is allowed.
    retry_after: int = 1
    #: Seconds added to every response.
    latency: float = 0.0
    #: Fraction of responses delayed by a further ``latency_spike`` seconds.
    latency_spike_rate: float = 0.0
    latency_spike: float = 0.0
    #: Connections closed without any response.
    drop_rate: float = 0.0
    #: User ids (Kontagent ``s`` or any of ``r``, KISSmetrics ``_p``) always answered 400.
    reject_users: frozenset[str] = frozenset()
    #: Requests per second allowed per destination (token bucket, burst of one second's
    #: worth); above it, 429 with ``Retry-After: 1``. None means no limit.
    rate_limit: float | None = None
    #: Seed of the random draws, so that a test sees the same faults on every run.
    seed: int = 0
    #: Destinations whose every request is redirected instead of answered: to the login page
    #: (``redirect="login"``: 302 to ``/login``, which answers 200 with an HTML page, as a
    #: captive portal or a single sign-on proxy does) or to itself (``"loop"``). Empty: none.
    redirect_destinations: frozenset[str] = frozenset()
    redirect: str = "login"
    #: A connection that has answered this many requests is closed on the next one, which
    #: is read and never answered, with no ``Connection: close`` before: a used-up
    #: keep-alive connection the server closed as the client reused it (the client wrote
    #: its request, then met the close). None: never.
    close_every: int | None = None
    #: A connection's answer number N says ``Connection: close`` and the connection closes
    #: after it, as nginx's ``keepalive_requests`` does: the graceful way. None: never.
    keepalive_requests: int | None = None
    #: Seconds after its last answer that an idle connection is closed (an idle timeout, as
    #: a load balancer's). None: aiohttp's own keep-alive timeout (an hour).
    idle_timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "reject_users", frozenset(self.reject_users))
        object.__setattr__(self, "redirect_destinations", frozenset(self.redirect_destinations))
        if self.redirect not in ("login", "loop"):
            raise ValueError(f"redirect must be 'login' or 'loop', got {self.redirect!r}")
        rates = {
            "error_rate": self.error_rate,
            "too_many_rate": self.too_many_rate,
            "latency_spike_rate": self.latency_spike_rate,
            "drop_rate": self.drop_rate,
        }
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if self.drop_rate + self.error_rate + self.too_many_rate > 1.0:
            raise ValueError("drop_rate + error_rate + too_many_rate must not exceed 1")
        if self.latency < 0 or self.latency_spike < 0 or self.retry_after < 0:
            raise ValueError("latency, latency_spike and retry_after must not be negative")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate_limit must be positive or None, got {self.rate_limit}")
        for name, count in (
            ("close_every", self.close_every),
            ("keepalive_requests", self.keepalive_requests),
        ):
            if count is not None and count < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {count}")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive or None, got {self.idle_timeout}")

    @property
    def outcome_rate(self) -> float:
        """The fraction of requests that get a drop, a 5xx or a 429 instead of an answer."""
        return self.drop_rate + self.error_rate + self.too_many_rate


@dataclass(frozen=True, slots=True)
class AcceptedRecord:
    """A message the collector accepted; ``key`` is the message's identity key, not an API key."""

    destination: Destination
    kind: str
    params: tuple[tuple[str, str], ...]
    key: str
    monotonic: float
    wall: float

    def param_map(self) -> dict[str, str]:
        return dict(self.params)


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A refused request: the path and query with every key masked, the status and reason."""

    destination: Destination | None
    path: str
    status: int
    reason: str
    monotonic: float
    wall: float


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; one token per request."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float) -> bool:
        """Take a token if one is available at time ``now`` (seconds, monotonic)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class FaultPlan:
    """The faults in force with their random source and buckets, swapped as one object.

    Only the server loop draws from it; replacing the whole plan (:meth:`Collector.set_faults`)
    is a single assignment, so a request never sees new faults with old buckets.
    """

    def __init__(self, faults: Faults, destinations: Sequence[str], now: float) -> None:
        self.faults = faults
        self.random = random.Random(faults.seed)
        rate = faults.rate_limit
        self.buckets = (
            {dest: TokenBucket(rate, max(1.0, rate), now) for dest in destinations}
            if rate is not None
            else {}
        )

    def draw(self, destination: str, now: float) -> tuple[str | None, float]:
        """The fault this request gets (None: none) and the seconds to delay its answer.

        Draws happen at arrival, before any await, so a seeded sequence of requests always
        sees the same faults. One draw decides among drop, 5xx and 429, so the rates add up.
        """
        faults = self.faults
        fault: str | None = None
        if self.buckets and not self.buckets[destination].take(now):
            fault = "rate_limit"
        elif faults.outcome_rate > 0:
            roll = self.random.random()
            if roll < faults.drop_rate:
                fault = "drop"
            elif (roll := roll - faults.drop_rate) < faults.error_rate:
                fault = "500" if roll < faults.error_rate / 2 else "503"
            elif roll - faults.error_rate < faults.too_many_rate:
                fault = "429"
        delay = faults.latency
        if faults.latency_spike_rate > 0 and self.random.random() < faults.latency_spike_rate:
            delay += faults.latency_spike
        return fault, delay


class Records:
    """Thread-safe record of what arrived: written by the server loop, read from anywhere.

    ``max_records`` bounds the accepted and rejected lists (oldest dropped first); counters
    always count everything. None keeps every record.
    """

    def __init__(
        self, max_records: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._max_records = max_records
        self._clock = clock
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._accepted: deque[AcceptedRecord] = deque(maxlen=self._max_records)
            self._rejected: deque[RejectedRecord] = deque(maxlen=self._max_records)
            self._counts: dict[str, int] = dict.fromkeys(
                ("arrived", "accepted", "rejected", "faulted"), 0
            )
            self._per_second: dict[str, dict[int, int]] = {}
            self._connections = 0
            self.started = self._clock()

    def connect(self) -> None:
        """A connection carried its first request."""
        with self._lock:
            self._connections += 1

    def connections(self) -> int:
        with self._lock:
            return self._connections

    def arrive(self, destination: str, now: float) -> None:
        second = int(now - self.started)
        with self._lock:
            self._counts["arrived"] += 1
            buckets = self._per_second.setdefault(destination, {})
            buckets[second] = buckets.get(second, 0) + 1

    def accept(self, message: Message, now: float) -> None:
        record = AcceptedRecord(
            message.destination, message.kind, message.params, message.key, now, time.time()
        )
        kind = f"{message.destination}/{message.kind}"
        with self._lock:
            self._accepted.append(record)
            counts = self._counts
            counts["accepted"] += 1
            counts[message.destination] = counts.get(message.destination, 0) + 1
            counts[kind] = counts.get(kind, 0) + 1

    def reject(self, record: RejectedRecord) -> None:
        with self._lock:
            self._rejected.append(record)
            self._counts["rejected"] += 1

    def fault(self, name: str) -> None:
        key = f"faulted/{name}"
        with self._lock:
            self._counts["faulted"] += 1
            self._counts[key] = self._counts.get(key, 0) + 1

    def closed(self, why: str) -> None:
        key = f"closed/{why}"
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def script(self, kind: str) -> None:
        key = f"scripted/{kind}"
        with self._lock:
            self._counts["scripted"] = self._counts.get("scripted", 0) + 1
            self._counts[key] = self._counts.get(key, 0) + 1

    def accepted(self) -> list[AcceptedRecord]:
        with self._lock:
            return list(self._accepted)

    def rejected(self) -> list[RejectedRecord]:
        with self._lock:
            return list(self._rejected)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def per_second(self, destination: str) -> dict[int, int]:
        with self._lock:
            return dict(self._per_second.get(destination, {}))


class Scripts:
    """The state of the scripted answers: tries per token, requests in flight, the gate.

    Written by the server loop; the counts are read from anywhere, under a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tries: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._max_in_flight: dict[str, int] = {}
        # bytes of a huge body written per token, once its answer has ended
        self._written: dict[str, int] = {}
        self._ended = threading.Condition(self._lock)
        # created unbound: asyncio binds it to the loop of its first wait
        self.gate = asyncio.Event()
        self.gate.set()

    def arrive(self, kind: str, token: str) -> int:
        """Count a try of ``token`` and one more ``kind`` in flight; returns its try number."""
        with self._lock:
            tries = self._tries[token] = self._tries.get(token, 0) + 1
            now = self._in_flight[kind] = self._in_flight.get(kind, 0) + 1
            if now > self._max_in_flight.get(kind, 0):
                self._max_in_flight[kind] = now
        return tries

    def leave(self, kind: str) -> None:
        with self._lock:
            self._in_flight[kind] -= 1

    def tries(self, token: str) -> int:
        with self._lock:
            return self._tries.get(token, 0)

    def in_flight(self, kind: str) -> int:
        with self._lock:
            return self._in_flight.get(kind, 0)

    def max_in_flight(self, kind: str) -> int:
        with self._lock:
            return self._max_in_flight.get(kind, 0)

    def body_ended(self, token: str, written: int) -> None:
        """A huge body's answer to ``token`` has ended, ``written`` bytes of it written."""
        with self._lock:
            self._written[token] = written
            self._ended.notify_all()

    def body_written(self, token: str, timeout: float) -> int | None:
        """Bytes of the huge body written to ``token`` once its answer ended; None meanwhile.

        Waits up to ``timeout`` seconds for the answer to end.
        """
        with self._lock:
            self._ended.wait_for(lambda: token in self._written, timeout)
            return self._written.get(token)


class Collector:
    """The sandbox server: start it, send to :attr:`base_url`, then read what it recorded.

    ``kontagent_key`` / ``kissmetrics_key``: when set, a request with another key gets 403.
    ``kontagent_secret``: when set, a Kontagent request carrying ``an_sig`` must be signed
    with it (else 403); unsigned requests are still accepted. ``host``: the loopback
    address to listen on, ``127.0.0.1`` or ``::1`` (:data:`LOOPBACK`; the base URL puts an
    IPv6 address in brackets). ``port`` 0 picks a free one.
    ``scripted``: play scripted answers (see the module docstring) to requests of the
    :data:`SCRIPTED_KINDS`. For tests, ``parser`` replaces
    :func:`beaconflow.model.render.parse_url`, ``sleep`` asyncio.sleep (injected latency and
    the ``slow`` script) and ``clock`` time.monotonic (rate limit, per-second counts).
    ``ssl_context``: serve HTTPS with this server context (a test CA's certificate for
    127.0.0.1, see tests/delivery/test_network_real.py); :attr:`base_url` is then https://.

    Use either :meth:`start`/:meth:`stop` (a background thread with its own event loop, or
    ``with``), or :meth:`start_async`/:meth:`stop_async` (the running loop, or ``async with``).
    """

    def __init__(
        self,
        *,
        faults: Faults | None = None,
        kontagent_key: str | None = None,
        kissmetrics_key: str | None = None,
        kontagent_secret: str | None = None,
        host: str = HOST,
        port: int = 0,
        max_records: int | None = None,
        scripted: bool = False,
        parser: Parser | None = None,
        sleep: Sleep | None = None,
        clock: Callable[[], float] = time.monotonic,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._parse = parser or parse_url
        self._ssl_context = ssl_context
        self._sleep: Sleep = sleep or asyncio.sleep
        self._clock = clock
        self._expected: dict[str, str | None] = {
            "kontagent": kontagent_key,
            "kissmetrics": kissmetrics_key,
        }
        self._secret = kontagent_secret
        self._known_secrets = (kontagent_key, kissmetrics_key, kontagent_secret)
        if host not in LOOPBACK:
            raise ValueError(
                f"host must be a loopback address ({', '.join(LOOPBACK)}), got {host!r}"
            )
        self._host = host
        self._port = port
        # per connection (its transport, weakly): the requests it carried, and the timer
        # that closes it when idle
        self._served: weakref.WeakKeyDictionary[asyncio.BaseTransport, int] = (
            weakref.WeakKeyDictionary()
        )
        self._idle: weakref.WeakKeyDictionary[asyncio.BaseTransport, asyncio.TimerHandle] = (
            weakref.WeakKeyDictionary()
        )
        self.records = Records(max_records, clock)
        self._scripted = scripted
        self.scripts = Scripts()
        self.set_faults(faults or Faults())
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.base_url = ""

    # -- configuration ------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._plan.faults

    def set_faults(self, faults: Faults) -> None:
        """Switch to ``faults`` from the next request on, with a fresh seed and full buckets."""
        self._plan = FaultPlan(faults, tuple(self._expected), self._clock())

    def reset(self) -> None:
        """Forget every record and count, and restart the fault draws from the seed."""
        self.records.clear()
        self.set_faults(self._plan.faults)

    # -- what was recorded --------------------------------------------------------------

    def accepted(self) -> list[AcceptedRecord]:
        """A snapshot of the accepted messages, in arrival order."""
        return self.records.accepted()

    def rejected(self) -> list[RejectedRecord]:
        """A snapshot of the rejected requests, in arrival order, keys masked."""
        return self.records.rejected()

    def counts(self) -> dict[str, int]:
        """Totals since start or reset.

        ``arrived``, ``accepted``, ``rejected``, ``faulted``; accepted per ``<destination>``
        and ``<destination>/<kind>``; faulted per ``faulted/<fault>`` (``drop``, ``500``,
        ``503``, ``429``, ``rate_limit``); connections closed by a fault of a connection's
        life per ``closed/<why>`` (``used_up``: a request closed unanswered by
        ``close_every``, neither arrived nor faulted; ``idle``: by ``idle_timeout``; absent
        until one is); with scripted answers, ``scripted`` and
        ``scripted/<kind>`` (absent until one is played).
        """
        return self.records.counts()

    def connections(self) -> int:
        """Connections that carried a request (their first since start or reset).

        A client that reuses keep-alive connections opens at most as many as it has
        requests in flight, plus one for each connection the server closed.
        """
        return self.records.connections()

    def per_second(self, destination: Destination) -> dict[int, int]:
        """Requests that arrived for ``destination``, whatever their answer, per second.

        Keyed by whole seconds since the collector started (or was reset).
        """
        return self.records.per_second(destination)

    def tries(self, token: str) -> int:
        """How many tries of the scripted request named ``token`` arrived."""
        return self.scripts.tries(token)

    def body_written(self, token: str, timeout: float = 30.0) -> int | None:
        """Bytes of a scripted ``huge`` body written to the request ``token`` before its end.

        The answer ends when the whole body is written or the client closes the connection;
        this waits up to ``timeout`` seconds for that, and is None if it has not ended. What the
        client took is at most this: the count includes what the connection's buffers held
        when it closed.
        """
        return self.scripts.body_written(token, timeout)

    def in_flight(self, kind: str) -> int:
        """Scripted requests of ``kind`` being answered now."""
        return self.scripts.in_flight(kind)

    def max_in_flight(self, kind: str) -> int:
        """The most scripted requests of ``kind`` answered at once so far."""
        return self.scripts.max_in_flight(kind)

    def close_gate(self) -> None:
        """Hold the answers to ``gated`` requests until :meth:`open_gate` (any thread)."""
        self._set_gate(False)

    def open_gate(self) -> None:
        """Answer the ``gated`` requests held, and those to come (any thread)."""
        self._set_gate(True)

    def _set_gate(self, is_open: bool) -> None:
        gate = self.scripts.gate
        change = gate.set if is_open else gate.clear
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            change()
            return

        async def on_loop() -> None:
            change()

        # waits until it is done: a request sent after close_gate() returns is held
        asyncio.run_coroutine_threadsafe(on_loop(), loop).result()

    # -- the application ----------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application, for embedding in another server or aiohttp's test tools."""
        app = web.Application(middlewares=[self._connection_faults])
        # HEAD is not GET: a sandbox that counted it as delivered would hide a client bug.
        app.router.add_get("/api/v1/{key}/{type}/", self._kontagent, allow_head=False)
        app.router.add_get("/api/v1/{key}/{type}", self._kontagent_no_slash, allow_head=False)
        for endpoint in ("/e", "/s", "/a"):
            app.router.add_get(endpoint, self._kissmetrics, allow_head=False)
        app.router.add_get("/login", self._login)
        if self._scripted:
            app.router.add_get("/{kind}", self._kissmetrics_scripted, allow_head=False)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    @web.middleware
    async def _connection_faults(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        """Count the connections, and play the faults of a connection's life.

        ``close_every``, ``keepalive_requests`` and ``idle_timeout`` (:class:`Faults`).
        """
        transport = request.transport
        if transport is None:  # the client is gone already
            return await handler(request)
        served = self._served.get(transport)
        if served is None:
            served = 0
            self.records.connect()
        if self._idle:  # cheap when no idle timer runs
            timer = self._idle.pop(transport, None)
            if timer is not None:
                timer.cancel()
        faults = self._plan.faults
        if faults.close_every is not None and served >= faults.close_every:
            self.records.closed("used_up")
            # as the drop fault: the answer's write fails quietly, the client sees the close
            transport.close()
            return web.Response(status=500)
        self._served[transport] = served + 1
        try:
            response = await handler(request)
        finally:
            if faults.idle_timeout is not None and not transport.is_closing():
                loop = asyncio.get_running_loop()
                self._idle[transport] = loop.call_later(
                    faults.idle_timeout, self._close_idle, transport
                )
        if faults.keepalive_requests is not None and served + 1 >= faults.keepalive_requests:
            response.force_close()  # "Connection: close" on this answer, then closed
        return response

    def _close_idle(self, transport: asyncio.BaseTransport) -> None:
        self._idle.pop(transport, None)
        if not transport.is_closing():
            self.records.closed("idle")
            transport.close()

    async def _kontagent(self, request: web.Request) -> web.StreamResponse:
        if self._scripted and request.match_info["type"] in SCRIPTED_KINDS:
            return await self._script(request, "kontagent", request.match_info["type"])
        return await self._handle(request, "kontagent", request.raw_path)

    async def _kontagent_no_slash(self, request: web.Request) -> web.StreamResponse:
        if self._scripted and request.match_info["type"] in SCRIPTED_KINDS:
            return await self._script(request, "kontagent", request.match_info["type"])
        path, question, query = request.raw_path.partition("?")
        return await self._handle(request, "kontagent", f"{path}/{question}{query}")

    async def _kissmetrics(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "kissmetrics", request.raw_path)

    async def _kissmetrics_scripted(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        if kind not in SCRIPTED_KINDS:
            return await self._unknown(request)
        return await self._script(request, "kissmetrics", kind)

    async def _script(
        self, request: web.Request, destination: Destination, kind: str
    ) -> web.StreamResponse:
        """Play the scripted answer of ``kind`` (see the module docstring)."""
        self.records.arrive(destination, self._clock())
        self.records.script(kind)
        scripts = self.scripts
        query = request.query
        tries = scripts.arrive(kind, query.get("token", ""))
        try:
            return await self._play(request, kind, query, tries)
        finally:
            scripts.leave(kind)

    async def _play(
        self, request: web.Request, kind: str, query: Mapping[str, str], tries: int
    ) -> web.StreamResponse:
        gif = web.Response(body=PIXEL_GIF, content_type="image/gif")
        if kind == "flaky":
            return gif if tries > int(query.get("n", "1")) else web.Response(status=503)
        if kind == "throttle":
            if tries > 1:
                return gif
            return web.Response(status=429, headers={"Retry-After": query.get("after", "1")})
        if kind == "bad":
            return web.Response(status=400, text="bad request (scripted)")
        if kind == "explain":
            destination: Destination = "kontagent" if "/api/v1/" in request.path else "kissmetrics"
            explanation = {
                "error": "invalid parameter s (scripted)",
                "request": request.raw_path,
                "key": self._request_key(request, destination),
            }
            return web.json_response(explanation, status=400)
        if kind == "error_page":
            return web.Response(status=500, text=ERROR_PAGE, content_type="text/html")
        if kind == "huge":
            return await self._huge(request, int(query.get("bytes", HUGE_BYTES)))
        if kind == "unimplemented":
            return web.Response(status=501)
        if kind == "slow":
            await self._sleep(float(query.get("seconds", "1")))
        elif kind == "gated":
            await self.scripts.gate.wait()
        elif kind == "drop":
            # as the drop fault: the client sees the connection end with no response
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        elif kind == "redirect":
            raise web.HTTPFound("/login?next=1")
        elif kind == "loop":
            raise web.HTTPFound(request.raw_path)
        return gif

    async def _huge(self, request: web.Request, size: int) -> web.StreamResponse:
        """200 and ``size`` bytes, written a chunk at a time until the client goes away."""
        response = web.StreamResponse(headers={"Content-Type": "image/gif"})
        response.content_length = size
        written = 0
        try:
            await response.prepare(request)
            while written < size:
                chunk = _HUGE_CHUNK[: size - written]
                await response.write(chunk)  # waits while the client is not reading
                written += len(chunk)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client closed the connection: what it took is counted
        finally:
            self.scripts.body_ended(request.query.get("token", ""), written)
        return response

    async def _login(self, request: web.Request) -> web.StreamResponse:
        # what a captive portal answers: 200, and a page that is not the service's GIF
        self.records.fault("login_page")
        page = "<html><body><h1>Please log in</h1></body></html>"
        return web.Response(text=page, content_type="text/html")

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        known = request.path.startswith("/api/v1/") or request.path in ("/e", "/s", "/a")
        status, reason = (
            (405, f"method {request.method} not allowed: use GET")
            if known and request.method != "GET"
            else (404, "no such endpoint: expected a Kontagent or KISSmetrics API path")
        )
        return self._reject(request, None, status, reason)

    async def _handle(
        self, request: web.Request, destination: Destination, path_qs: str
    ) -> web.StreamResponse:
        now = self._clock()
        records = self.records
        records.arrive(destination, now)
        plan = self._plan
        if destination in plan.faults.redirect_destinations:
            self.records.fault("redirect")
            target = "/login?next=1" if plan.faults.redirect == "login" else request.raw_path
            raise web.HTTPFound(target)
        fault, delay = plan.draw(destination, now)
        if delay > 0:
            await self._sleep(delay)
        if fault is not None:
            return self._faulted(request, fault, plan.faults)

        expected = self._expected[destination]
        try:
            message, key = self._parse(path_qs)
        except ValueError as error:
            # A key that is there but wrong is an auth failure; a missing one is a bad request.
            given = self._request_key(request, destination)
            if expected is not None and given and given != expected:
                return self._reject(request, destination, 403, "wrong API key")
            return self._reject(request, destination, 400, str(error))
        if expected is not None and key != expected:
            return self._reject(request, destination, 403, "wrong API key")
        if self._secret is not None and "an_sig=" in path_qs:
            problem = self._signature_problem(path_qs, self._secret)
            if problem:
                return self._reject(request, destination, 403, problem)
        reject_users = plan.faults.reject_users
        if reject_users:
            refused = self._rejected_user(message, reject_users)
            if refused is not None:
                reason = f"user {refused!r} is refused (fault injection: reject_users)"
                return self._reject(request, destination, 400, reason)
        records.accept(message, now)
        return web.Response(body=PIXEL_GIF, content_type="image/gif")

    def _faulted(self, request: web.Request, fault: str, faults: Faults) -> web.StreamResponse:
        self.records.fault(fault)
        if fault == "drop":
            # Closing the transport makes aiohttp's write of the response fail quietly, and
            # the client sees the connection end with no response at all.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        if fault == "rate_limit":
            return web.Response(
                status=429, text="rate limit exceeded", headers={"Retry-After": "1"}
            )
        if fault == "429":
            return web.Response(
                status=429,
                text="too many requests",
                headers={"Retry-After": str(faults.retry_after)},
            )
        status = int(fault)
        return web.Response(status=status, text=f"injected fault: {status}")

    def _reject(
        self,
        request: web.Request,
        destination: Destination | None,
        status: int,
        reason: str,
    ) -> web.Response:
        key = self._request_key(request, destination) if destination else None
        redact = Redactor.of((*self._known_secrets, key))
        safe_reason = redact(reason)
        now = self._clock()
        path = redact(request.raw_path)
        self.records.reject(
            RejectedRecord(destination, path, status, safe_reason, now, time.time())
        )
        return web.Response(status=status, text=safe_reason)

    @staticmethod
    def _request_key(request: web.Request, destination: Destination | None) -> str | None:
        if destination == "kontagent":
            return request.match_info.get("key")
        return request.query.get("_k")

    @staticmethod
    def _signature_problem(path_qs: str, secret: str) -> str | None:
        try:
            pairs = parse_qsl(urlsplit(path_qs).query, keep_blank_values=True, errors="strict")
        except ValueError as error:
            return f"an_sig: the query cannot be decoded ({error})"
        given = [value for name, value in pairs if name == "an_sig"]
        signed = [(name, value) for name, value in pairs if name != "an_sig"]
        if len(given) != 1:
            return "an_sig: must be given once"
        expected = signature(signed, secret)
        if not hmac.compare_digest(given[0].lower().encode(), expected.encode()):
            return "an_sig: bad signature"
        return None

    @staticmethod
    def _rejected_user(message: Message, users: frozenset[str]) -> str | None:
        names = ("s", "r") if message.destination == "kontagent" else ("_p",)
        for name, value in message.params:
            if name in names:
                ids = value.split(",") if message.destination == "kontagent" else (value,)
                for user in ids:
                    if user in users:
                        return user
        return None

    # -- running ------------------------------------------------------------------------

    async def start_async(self) -> str:
        """Serve on the running event loop; returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the collector is already running")
        # No access log: it would be the hot path's largest cost. A short shutdown timeout so
        # that stopping does not wait out an injected latency spike.
        runner = web.AppRunner(
            self.make_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(
            runner, self._host, self._port, backlog=1024, ssl_context=self._ssl_context
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http" if self._ssl_context is None else "https"
        self.base_url = f"{scheme}://{host}:{port}"
        return self.base_url

    async def stop_async(self) -> None:
        """Stop serving; records stay readable."""
        runner, self._runner = self._runner, None
        # held answers go out rather than wait for the shutdown timeout
        self.scripts.gate.set()
        if runner is not None:
            await runner.cleanup()

    def start(self) -> str:
        """Serve from a background thread with its own event loop; returns the base URL."""
        if self._thread is not None:
            raise RuntimeError("the collector is already running")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as error:
                failure.append(error)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        thread = threading.Thread(target=serve, name="beaconflow-collector", daemon=True)
        thread.start()
        started.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread, self._loop = thread, loop
        return self.base_url

    def stop(self) -> None:
        """Stop the background server and wait for its thread; records stay readable."""
        thread, loop = self._thread, self._loop
        self._thread = self._loop = None
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Collector:
        await self.start_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_async()


def unused_port() -> int:
    """A port on 127.0.0.1 with nothing listening: a "down" service refuses connections there.

    The kernel picks it and it is released at once, so another process could in principle
    take it; on a test machine that race is negligible.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def down_url() -> str:
    """A base URL where connections are refused: the ``down`` fault."""
    return f"http://{HOST}:{unused_port()}"


def summary_line(counts: dict[str, int], previous: dict[str, int], seconds: float) -> str:
    """One line for the console: the rate over the last interval (if a second long), totals."""
    arrived = counts["arrived"] - previous.get("arrived", 0)
    rate = f"{arrived / seconds:.0f} req/s over {seconds:.0f}s" if seconds >= 1 else "stopping"
    return (
        f"collector: {rate}; total arrived={counts['arrived']} "
        f"accepted={counts['accepted']} (kontagent={counts.get('kontagent', 0)} "
        f"kissmetrics={counts.get('kissmetrics', 0)}) rejected={counts['rejected']} "
        f"faulted={counts['faulted']}"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m beaconflow.sandbox.collector",
        description="Sandbox Kontagent + KISSmetrics collector on 127.0.0.1, with fault injection.",
    )
    parser.add_argument(
        "--host", choices=LOOPBACK, default=HOST, help="the loopback address to listen on"
    )
    parser.add_argument("--port", type=int, default=8099, help="port to listen on (0: any free)")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500/503")
    parser.add_argument("--too-many-rate", type=float, default=0.0, help="fraction answered 429")
    parser.add_argument(
        "--retry-after", type=int, default=1, help="Retry-After seconds of those 429s (may be 0)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to responses")
    parser.add_argument(
        "--latency-spike-rate", type=float, default=0.0, help="fraction of responses spiking"
    )
    parser.add_argument("--latency-spike", type=float, default=0.0, help="seconds of a spike")
    parser.add_argument(
        "--drop-rate", type=float, default=0.0, help="fraction of connections closed unanswered"
    )
    parser.add_argument(
        "--reject-user", action="append", default=[], help="user id always answered 400 (repeat)"
    )
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="requests/s per destination, then 429"
    )
    parser.add_argument(
        "--close-every",
        type=int,
        default=None,
        help="close a connection on its request after N answers, unanswered and unannounced",
    )
    parser.add_argument(
        "--keepalive-requests",
        type=int,
        default=None,
        help="answer a connection's N-th request with 'Connection: close', then close it",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="close a connection idle this many seconds after its last answer",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument(
        "--redirect",
        action="append",
        default=[],
        choices=("kontagent", "kissmetrics"),
        help="redirect every request of this destination (repeat)",
    )
    parser.add_argument(
        "--redirect-to",
        choices=("login", "loop"),
        default="login",
        help="where redirects go: a 200 login page, or the request itself",
    )
    parser.add_argument(
        "--scripted",
        action="store_true",
        help="answer the scripted kinds (ok, flaky, throttle, bad, unimplemented, slow, gated, "
        "drop, redirect, loop) as scripted: see the module's documentation",
    )
    parser.add_argument("--kontagent-key", default=None, help="the only Kontagent key accepted")
    parser.add_argument("--kissmetrics-key", default=None, help="the only KISSmetrics key accepted")
    parser.add_argument(
        "--kontagent-secret", default=None, help="verify an_sig of signed Kontagent requests"
    )
    parser.add_argument(
        "--max-records", type=int, default=100_000, help="records kept (counts are not capped)"
    )
    parser.add_argument(
        "--summary-interval", type=float, default=10.0, help="seconds between summary lines"
    )
    return parser.parse_args(argv)


def _faults_from(args: argparse.Namespace) -> Faults:
    return Faults(
        error_rate=args.error_rate,
        too_many_rate=args.too_many_rate,
        retry_after=args.retry_after,
        latency=args.latency,
        latency_spike_rate=args.latency_spike_rate,
        latency_spike=args.latency_spike,
        drop_rate=args.drop_rate,
        reject_users=frozenset(args.reject_user),
        rate_limit=args.rate_limit,
        seed=args.seed,
        redirect_destinations=frozenset(args.redirect),
        redirect=args.redirect_to,
        close_every=args.close_every,
        keepalive_requests=args.keepalive_requests,
        idle_timeout=args.idle_timeout,
    )


async def _serve(args: argparse.Namespace, faults: Faults) -> None:
    collector = Collector(
        faults=faults,
        kontagent_key=args.kontagent_key,
        kissmetrics_key=args.kissmetrics_key,
        kontagent_secret=args.kontagent_secret,
        host=args.host,
        port=args.port,
        max_records=args.max_records,
        scripted=args.scripted,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    base_url = await collector.start_async()
    print(base_url, flush=True)
    print(f"collector: listening on {base_url}", file=sys.stderr, flush=True)
    previous: dict[str, int] = {}
    last = time.monotonic()
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), args.summary_interval)
            now = time.monotonic()
            counts = collector.counts()
            print(summary_line(counts, previous, now - last), file=sys.stderr, flush=True)
            previous, last = counts, now
    finally:
        await collector.stop_async()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the collector until Ctrl-C or SIGTERM; returns the exit status."""
    args = _parse_args(argv)
    try:
        faults = _faults_from(args)
    except ValueError as error:
        print(f"collector: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, faults))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    except OSError as error:
        print(f"collector: cannot listen on {args.host} port {args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
