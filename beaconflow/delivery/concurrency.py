"""Adaptive sending: find how much a service takes, in requests in flight and per second.

Modelled on Vector's adaptive request concurrency (AIMD). The limit starts low. Once per
round trip (the mean RTT, smoothed with an EWMA), it grows if the limit was reached and
nothing pushed back: it doubles until the first back-pressure (slow start, as in TCP: Vector
adds 1 from the start, which takes minutes to reach a few hundred on a 100 ms link), then
grows by 1. It shrinks to 0.9x on back-pressure (429, 503, timeouts) or when the RTT
rises past mean + 2.5 standard deviations (and at least 10% above the mean, so that jitter
around a very steady RTT does not count).
It never exceeds the configured maximum (--concurrency) and never drops below 1.

A concurrency limit cannot slow a sender below one request per round trip, and on a fast
network a rate-limited service is far slower than that; :class:`AdaptiveRate` is the rate
half of the same idea. Unlimited until the service first pushes back (with at least
``MIN_EVIDENCE`` answers accepted in the last second to measure), it then sends at 0.9x
the rate the service accepted over the last second, lowers that by 0.9x for each further
second with back-pressure, and raises it by 5% for each second without, never above a cap
(--max-rps). Pure asyncio with an injectable clock, tested without a network or sleeping.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from beaconflow.delivery.ratelimit import RateLimiter


@dataclass(frozen=True)
class AimdPolicy:
    """The numbers of the adaptive limit (Vector's defaults).

    ``initial``: the starting limit (1 is Vector's). ``maximum``: the ceiling, >= 1.
    ``decrease``: the factor applied on back-pressure, in (0, 1). ``ewma_alpha``: weight of
    the newest RTT sample in the mean. ``rtt_deviation``: how many standard deviations above
    the mean an RTT must be to count as rising latency.
    """

    maximum: int
    initial: int = 1
    decrease: float = 0.9
    ewma_alpha: float = 0.4
    rtt_deviation: float = 2.5

    def __post_init__(self) -> None:
        if self.maximum < 1 or not self.initial >= 1:
            raise ValueError("maximum and initial must be >= 1")
        if not 0 < self.decrease < 1:
            raise ValueError("decrease must be between 0 and 1")


class AdaptiveLimit:
    """An async semaphore whose size follows the AIMD rule above.

    Use ``async with limit:`` around an attempt, and report its outcome with
    :meth:`record` (round-trip seconds, and whether the service pushed back).
    """

    def __init__(self, policy: AimdPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._limit = float(min(policy.initial, policy.maximum))
        # the whole-number limit, kept up to date by _adjust: read several times per request
        self._current = max(1, int(self._limit))
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean: float | None = None
        self._variance = 0.0
        # what happened since the last adjustment
        self._window_start = clock()
        self._reached = False
        self._pushed_back = False
        self._rtt_sum, self._rtt_count = 0.0, 0
        # like TCP: double per round trip until the first sign of trouble, then +1
        self._slow_start = True

    @property
    def limit(self) -> int:
        """The current number of requests allowed in flight."""
        return self._current

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    @property
    def available(self) -> int:
        """Slots free under the current limit: 0 while it is reached or exceeded."""
        free = self._current - self._in_flight
        return free if free > 0 else 0

    def try_acquire(self) -> bool:
        """Take a slot if one is free under the limit and nobody waits; never waits."""
        if self._in_flight < self._current and not self._waiters:
            self._take()
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot under the current limit."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over as we were cancelled
            raise

    def _take(self) -> None:
        self._in_flight += 1
        if self._in_flight >= self._current:
            self._reached = True

    def release(self) -> None:
        """Free a slot and wake whoever fits under the limit now."""
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self._current:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)

    def record(self, rtt: float, pushed_back: bool, now: float | None = None) -> None:
        """One attempt's round-trip seconds and whether it was back-pressure.

        ``now`` is the clock's current reading when the caller has one (saves reading it).
        """
        if pushed_back:
            self._pushed_back = True
        else:
            self._rtt_sum += rtt
            self._rtt_count += 1
        interval = self._mean if self._mean is not None else rtt
        if (self._clock() if now is None else now) - self._window_start >= interval:
            self._adjust()

    def _observe(self, rtt: float) -> None:
        alpha = self._policy.ewma_alpha
        if self._mean is None:
            self._mean = rtt
            return
        difference = rtt - self._mean
        self._mean += alpha * difference
        self._variance = (1 - alpha) * (self._variance + alpha * difference * difference)

    def _latency_rose(self) -> bool:
        """Whether this interval's mean RTT is past the long-term mean + 2.5 deviations.

        Compared as an interval mean, like Vector, so one slow request (a new connection)
        does not count; and at least 10% above the mean, so jitter around a very steady RTT
        does not either.
        """
        if not self._rtt_count:
            return False
        current = self._rtt_sum / self._rtt_count
        rose = False
        if self._mean is not None:
            deviation = math.sqrt(self._variance)
            margin = max(self._policy.rtt_deviation * deviation, 0.1 * self._mean)
            rose = current >= self._mean + margin
        self._observe(current)
        return rose

    def _adjust(self) -> None:
        if self._latency_rose() or self._pushed_back:
            self._limit = max(1.0, self._limit * self._policy.decrease)
            self._slow_start = False
        elif self._reached and self._limit < self._policy.maximum:
            grown = math.floor(self._limit) * 2.0 if self._slow_start else self._limit + 1.0
            self._limit = min(float(self._policy.maximum), math.floor(grown))
        self._current = max(1, int(self._limit))
        self._window_start = self._clock()
        self._reached = self._in_flight >= self.limit
        self._pushed_back = False
        self._rtt_sum, self._rtt_count = 0.0, 0
        self._wake()


class AdaptiveRate:
    """The send rate of one destination, adapted to the service's limit (see module)."""

    #: Seconds between adjustments, and the span over which the accepted rate is measured.
    INTERVAL = 1.0
    #: Growth per quiet interval, as a fraction of the rate.
    INCREASE = 0.05
    #: Answers accepted in the last interval before a first push-back may set a rate.
    MIN_EVIDENCE = 20

    def __init__(
        self,
        limiter: RateLimiter,
        policy: AimdPolicy,
        ceiling: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self._decrease = policy.decrease
        self._ceiling = ceiling
        self._clock = clock
        self._accepted: deque[float] = deque()
        self._window_start = clock()
        self._pushed_back = False

    @property
    def rate(self) -> float | None:
        """The current rate in requests per second, None while unlimited."""
        return self.limiter.rate

    def record(self, accepted: bool, pushed_back: bool, now: float | None = None) -> None:
        """One attempt's outcome: accepted by the service, or back-pressure (429/503/timeout).

        ``now`` is the clock's current reading when the caller has one (saves reading it).
        """
        if now is None:
            now = self._clock()
        times = self._accepted
        if accepted:
            times.append(now)
        horizon = now - self.INTERVAL
        while times and times[0] < horizon:
            times.popleft()
        if pushed_back and self.rate is None and len(times) < self.MIN_EVIDENCE:
            # too few answers yet to tell a rate from (a 503 among the first would set it
            # near 1/s, and it takes minutes to grow back): the concurrency limit backs off
            return
        self._pushed_back = self._pushed_back or pushed_back
        if now - self._window_start < self.INTERVAL and not (pushed_back and self.rate is None):
            return
        rate = self.rate
        if self._pushed_back:
            measured = max(1.0, float(len(self._accepted)))
            rate = (measured if rate is None else min(rate, measured)) * self._decrease
        elif rate is not None:
            rate += max(1.0, rate * self.INCREASE)
        if rate is not None and self._ceiling is not None:
            rate = min(rate, self._ceiling)
        if rate != self.rate:
            self.limiter.set_rate(rate)
        self._window_start = now
        self._pushed_back = False
