"""The bulk sender: many HTTP GETs in flight from one thread's point of view, no Beam inside.

A :class:`BulkSender` owns a background thread running its own asyncio event loop and one
keep-alive ``aiohttp`` session. A synchronous caller (a Beam ``DoFn``) hands it
:class:`Request` objects with :meth:`BulkSender.submit` and collects one :class:`Delivery`
per request with :meth:`BulkSender.take_finished` and :meth:`BulkSender.flush`. Each request
takes the destination's shared rate limiter before every attempt, is classified by
``transforms.retry.classify`` and retried per the :class:`~transforms.retry.RetryPolicy`,
honouring ``Retry-After``. Retry happens here and nowhere else.

URLs carry API keys, so they never reach a log line, an exception or a :class:`Delivery`:
error texts go through a :class:`~transforms.redact.Redactor` built from the endpoint secrets.
Tested against a local aiohttp server::

    python -m pytest tests/test_sender.py
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from transforms.concurrency import AdaptiveLimit, AdaptiveRate, AimdPolicy
from transforms.message import Message
from transforms.ratelimit import Clock, RateLimiter, Sleep, shared_limiter
from transforms.redact import Redactor
from transforms.retry import RetryPolicy, Verdict, classify, parse_retry_after

logger = logging.getLogger("beaconflow.send")

#: Seconds a blocked caller waits between checks that the sender thread is still alive.
_LIVENESS_POLL = 1.0
#: Seconds a resolved host name is reused: a backfill talks to one or two hosts for hours.
_DNS_CACHE_SECONDS = 300
#: Exceptions that mean "this attempt got no usable answer", as opposed to a bug.
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ValueError)


@dataclass(frozen=True)
class Request:
    """One message and its rendered URL; the URL carries credentials and is kept out of repr."""

    message: Message
    url: str = field(repr=False)


@dataclass(frozen=True)
class Delivery:
    """The outcome of one message: delivered or not, the last status or error, and the tries.

    ``status`` is None when no HTTP answer came back; ``error`` is None when delivered, and is
    always redacted. ``attempts`` is 0 only for messages that were never sent.
    """

    message: Message
    delivered: bool
    status: int | None
    error: str | None
    attempts: int


@dataclass(frozen=True)
class SenderConfig:
    """How one process sends.

    ``concurrency``: requests in flight (>= 1). ``timeout``: seconds per attempt, from the
    start of the request to the end of its body (> 0; there is no "no timeout", a hung server
    would hold the pipeline). ``rates``: requests/s per destination for this process; a
    destination that is absent or maps to None is unlimited. ``progress_interval``: seconds
    between progress lines; 0 logs after every attempt. ``adaptive``: find the concurrency
    each destination takes, up to ``concurrency`` (see :mod:`transforms.concurrency`); False
    keeps ``concurrency`` requests in flight whatever the service answers.
    """

    concurrency: int
    timeout: float
    retry: RetryPolicy
    rates: Mapping[str, float | None] = field(default_factory=dict)
    progress_interval: float = 10.0
    adaptive: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.progress_interval < 0:
            raise ValueError(f"progress_interval must be >= 0, got {self.progress_interval}")
        for destination, rate in self.rates.items():
            if rate is not None and not rate > 0:
                raise ValueError(f"rate for {destination} must be > 0 or None, got {rate}")


@dataclass(frozen=True)
class SenderStats:
    """Counters so far. ``outcomes`` counts attempts by status code or error class name."""

    sent: int
    delivered: int
    retries: int
    failed: int
    outcomes: Mapping[str, int]


@dataclass(frozen=True)
class _Outcome:
    status: int | None
    error: BaseException | None
    retry_after: str | None


def _pushed_back(outcome: _Outcome) -> bool:
    """Whether the service asked us to slow down: 429, 503 or a timeout."""
    if outcome.status in (429, 503):
        return True
    return isinstance(outcome.error, asyncio.TimeoutError | aiohttp.ServerTimeoutError)


class BulkSender:
    """Sends requests concurrently from a private event loop; see the module docstring.

    ``secrets`` are the endpoint secrets to mask in every error text and log line. ``clock``
    (monotonic, for progress lines), ``wall_clock`` (epoch seconds, for ``Retry-After`` dates),
    ``sleep`` (backoff and rate-limit waits), ``rng`` (backoff jitter) and ``limiters`` (per
    destination; by default the process-wide :func:`~transforms.ratelimit.shared_limiter` for
    each rate in the config) are injectable for tests. ``on_delivered`` is called on the
    sender's thread with each delivered message the moment its answer is in (the delivery
    ledger records it there, so a kill loses at most the requests in flight).

    Use as a context manager, or call :meth:`close`; :meth:`flush` first, as closing abandons
    unfinished requests.
    """

    def __init__(
        self,
        config: SenderConfig,
        secrets: tuple[str, ...] = (),
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        limiters: Mapping[str, RateLimiter] | None = None,
        on_delivered: Callable[[Message], None] | None = None,
    ) -> None:
        self._config = config
        self._on_delivered = on_delivered
        self._redact = Redactor.of(secrets)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._limiters: dict[str, RateLimiter] = {
            destination: shared_limiter(destination, rate)
            for destination, rate in config.rates.items()
            if rate is not None
        }
        self._limiters.update(limiters or {})

        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        # Bounds memory: submit() blocks while twice the concurrency is pending.
        self._room = threading.Semaphore(2 * config.concurrency)
        self._pending = 0
        self._finished: list[Delivery] = []
        self._sent = self._delivered = self._retries = self._failed = 0
        self._outcomes: Counter[str] = Counter()
        self._reported_at = clock()
        self._reported_sent = 0
        self._closed = False

        self._tasks: set[asyncio.Task[Delivery]] = set()
        self._adaptive: dict[str, AdaptiveLimit] = {}
        self._adaptive_rates: dict[str, AdaptiveRate] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name="beaconflow-sender", daemon=True
        )
        self._thread.start()
        try:
            self._session, self._slots = asyncio.run_coroutine_threadsafe(
                self._open(), self._loop
            ).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            raise

    def __enter__(self) -> BulkSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- caller side (any thread) ----------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue ``request``; blocks while about twice the concurrency is already pending."""
        self.submit_many((request,))

    def submit_many(self, requests: Sequence[Request]) -> None:
        """Queue several requests with one wake-up of the sender's loop (cheaper per request).

        Blocks while about twice the concurrency is already pending.
        """
        if self._closed:
            raise RuntimeError("BulkSender is closed")
        held: list[Request] = []
        for request in requests:
            if not self._room.acquire(blocking=False):
                # hand over what has room before waiting: those are what frees room
                self._dispatch(held)
                held = []
                while not self._room.acquire(timeout=_LIVENESS_POLL):
                    self._check_alive()
            held.append(request)
        self._dispatch(held)

    def _dispatch(self, requests: list[Request]) -> None:
        if not requests:
            return
        with self._lock:
            self._pending += len(requests)
        self._loop.call_soon_threadsafe(self._spawn_all, tuple(requests))

    def take_finished(self) -> list[Delivery]:
        """The deliveries finished since the last call; never blocks."""
        with self._lock:
            finished, self._finished = self._finished, []
        return finished

    def flush(self) -> list[Delivery]:
        """Wait until every submitted request has finished; return the remaining deliveries."""
        with self._idle:
            while self._pending:
                if not self._idle.wait(timeout=_LIVENESS_POLL):
                    self._check_alive()
        return self.take_finished()

    def stats(self) -> SenderStats:
        """A snapshot of the counters."""
        with self._lock:
            return SenderStats(
                self._sent, self._delivered, self._retries, self._failed, dict(self._outcomes)
            )

    def close(self) -> None:
        """Stop the loop and close the session; unfinished requests are abandoned (logged)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
        self._loop.close()
        stats = self.stats()
        if stats.sent:
            logger.info(
                "done: sent %d, delivered %d, retries %d, failed %d",
                stats.sent,
                stats.delivered,
                stats.retries,
                stats.failed,
            )

    def _check_alive(self) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the sender thread has stopped")

    # -- loop side (the sender thread) -----------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _open(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        connector = aiohttp.TCPConnector(
            limit=self._config.concurrency, ttl_dns_cache=_DNS_CACHE_SECONDS
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            # Tracking APIs set cookies on every answer; keeping them would grow without end.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # aiohttp silently resends an idempotent request once when a reused connection drops.
        # A tracking GET is not idempotent (Kontagent counts every request), and retries
        # belong to one layer, this one, where they are counted and backed off.
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        # Our own gate, not only the connector's: the total timeout must not include the
        # time a request queues for a pooled connection.
        return session, asyncio.Semaphore(self._config.concurrency)

    async def _shutdown(self) -> None:
        abandoned = list(self._tasks)
        for task in abandoned:
            task.cancel()
        await asyncio.gather(*abandoned, return_exceptions=True)
        await self._session.close()
        if abandoned:
            logger.warning("closed with %d unfinished requests abandoned", len(abandoned))

    def _spawn_all(self, requests: Sequence[Request]) -> None:
        for request in requests:
            self._spawn(request)

    def _spawn(self, request: Request) -> None:
        task = self._loop.create_task(self._deliver(request))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._finish, request))

    def _finish(self, request: Request, task: asyncio.Task[Delivery]) -> None:
        self._tasks.discard(task)
        delivery: Delivery | None = None
        if not task.cancelled():
            error = task.exception()
            if error is None:
                delivery = task.result()
            else:
                # A bug, not a network outcome: still accounted for, never silently lost.
                text = self._redact(f"internal error: {type(error).__name__}: {error}")
                logger.error("%s (%s)", text, request.message.kind)
                delivery = Delivery(request.message, False, None, text, 0)
        with self._idle:
            if delivery is not None:
                self._finished.append(delivery)
                if delivery.delivered:
                    self._delivered += 1
                else:
                    self._failed += 1
            self._pending -= 1
            if not self._pending:
                self._idle.notify_all()
        self._room.release()

    async def _deliver(self, request: Request) -> Delivery:
        message = request.message
        policy = self._config.retry
        limiter = self._limiters.get(message.destination)
        attempts = 0
        while True:
            adaptive = self._adaptive_limit(message.destination)
            pace = self._adaptive_rates.get(message.destination)
            if pace is not None:
                # waiting for the adaptive rate is not being in flight: outside the slot
                await pace.limiter.acquire(self._sleep)
            async with adaptive or contextlib.nullcontext(), self._slots:
                if limiter is not None:
                    # the --max-rps cap is taken inside the slot, right before the send, so
                    # that sends are spaced exactly as their reservations
                    await limiter.acquire(self._sleep)
                attempts += 1
                started = self._clock() if adaptive is not None else 0.0
                outcome = await self._attempt(request.url)
                if adaptive is not None and pace is not None:
                    pushed_back = _pushed_back(outcome)
                    adaptive.record(self._clock() - started, pushed_back)
                    accepted = outcome.error is None and outcome.status is not None
                    accepted = accepted and classify(outcome.status, None) is Verdict.DELIVERED
                    pace.record(accepted, pushed_back)
                if self._on_delivered is not None and outcome.error is None:
                    # still holding the slot: a kill now loses at most the slots in flight
                    self._notify_delivered(message, outcome)
            self._record(outcome)
            verdict = classify(outcome.status, outcome.error)
            if verdict is Verdict.DELIVERED:
                return Delivery(message, True, outcome.status, None, attempts)
            reason = self._describe(outcome)
            if verdict is Verdict.PERMANENT or not policy.can_retry(attempts):
                logger.debug(
                    "failed %s/%s after %d attempts: %s",
                    message.destination,
                    message.kind,
                    attempts,
                    reason,
                )
                return Delivery(message, False, outcome.status, reason, attempts)
            retry_after = parse_retry_after(outcome.retry_after, self._wall_clock())
            wait = policy.delay(attempts - 1, self._rng, retry_after)
            with self._lock:
                self._retries += 1
            logger.debug(
                "retrying %s/%s in %.3f s after attempt %d: %s",
                message.destination,
                message.kind,
                wait,
                attempts,
                reason,
            )
            await self._sleep(wait)

    def _adaptive_limit(self, destination: str) -> AdaptiveLimit | None:
        if not self._config.adaptive:
            return None
        limit = self._adaptive.get(destination)
        if limit is None:
            policy = AimdPolicy(maximum=self._config.concurrency)
            limit = self._adaptive[destination] = AdaptiveLimit(policy, self._clock)
            self._adaptive_rates[destination] = AdaptiveRate(
                RateLimiter(None, self._clock),
                policy,
                ceiling=self._config.rates.get(destination),
                clock=self._clock,
            )
        return limit

    def concurrency_limits(self) -> dict[str, int]:
        """The adaptive concurrency each destination has reached (empty when not adaptive)."""
        return {destination: limit.limit for destination, limit in self._adaptive.items()}

    def adaptive_rates(self) -> dict[str, float | None]:
        """The adaptive rate of each destination, None while the service has not pushed back."""
        return {destination: pace.rate for destination, pace in self._adaptive_rates.items()}

    def _notify_delivered(self, message: Message, outcome: _Outcome) -> None:
        if self._on_delivered is None or classify(outcome.status, None) is not Verdict.DELIVERED:
            return
        try:
            self._on_delivered(message)
        except Exception as error:  # a full disk must not lose the delivery itself
            logger.error(self._redact(f"could not record a delivery: {error}"))

    async def _attempt(self, url: str) -> _Outcome:
        status: int | None = None
        retry_after: str | None = None
        try:
            # encoded=True: the URL is sent byte for byte as rendered (signatures cover it).
            async with self._session.get(URL(url, encoded=True)) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                await response.read()
        except _TRANSPORT_ERRORS as error:
            return _Outcome(status, error, retry_after)
        return _Outcome(status, None, retry_after)

    def _record(self, outcome: _Outcome) -> None:
        key = str(outcome.status) if outcome.status is not None else type(outcome.error).__name__
        with self._lock:
            self._sent += 1
            self._outcomes[key] += 1
            now = self._clock()
            elapsed = now - self._reported_at
            if elapsed < self._config.progress_interval:
                return
            rate = (self._sent - self._reported_sent) / elapsed if elapsed > 0 else 0.0
            self._reported_at, self._reported_sent = now, self._sent
            line = (self._sent, rate, self._retries, self._failed)
        logger.info("sent %d (%.1f/s), retries %d, failed %d", *line)

    def _describe(self, outcome: _Outcome) -> str:
        """A redacted reason for a non-delivered attempt."""
        parts = []
        if outcome.status is not None:
            parts.append(f"HTTP {outcome.status}")
        error = outcome.error
        if error is not None:
            detail = str(error)
            if not detail and isinstance(error, TimeoutError):
                detail = f"no response within {self._config.timeout:g} s"
            parts.append(f"{type(error).__name__}: {detail}" if detail else type(error).__name__)
        return self._redact("; ".join(parts))
