"""An exact, thread-safe rate limiter shared by every sender of a process.

Each caller reserves the next free send slot and then sleeps until it: slots are exactly
``1/rate`` seconds apart and idle time is never banked, so there is no burst. In any
half-open one-second window the reservations number at most ``ceil(rate)`` (and at least
``floor(rate)`` while callers keep up), which is what keeps a service's per-key limit and
``--max-rps`` honest. Tested with a fake clock, no sleeping::

    python -m pytest tests/delivery/test_ratelimit.py

Several event loops and Beam worker threads in one process share one limiter per
destination through :func:`shared_limiter`; the run-wide rate is divided among processes by
the caller (see ``beaconflow.transforms.send``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


class RateLimiter:
    """Spaces reservations exactly ``1/rate`` seconds apart.

    ``rate`` is in requests per second: None means unlimited (every reservation is
    immediate); 0 and negative values are rejected, as "never send" is not a rate.
    ``clock`` is a monotonic clock in seconds.
    """

    def __init__(self, rate: float | None, clock: Clock = time.monotonic) -> None:
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be > 0 requests/s or None (unlimited), got {rate!r}")
        self._rate = rate
        self._clock = clock
        self._lock = threading.Lock()
        # Slots are computed as anchor + n/rate rather than by repeated addition, so that
        # rounding does not drift over millions of requests; the anchor moves when idle.
        self._anchor = 0.0
        self._issued = 0
        self._next_free = float("-inf")

    @property
    def rate(self) -> float | None:
        """Requests per second, or None when unlimited."""
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        """Change the rate from the next reservation on (None: unlimited)."""
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be > 0 requests/s or None (unlimited), got {rate!r}")
        with self._lock:
            self._rate = rate
            self._next_free = float("-inf")

    def reserve(self) -> float:
        """Reserve the next send slot; return how many seconds to wait until it (>= 0)."""
        if self._rate is None:
            return 0.0
        with self._lock:
            now = self._clock()
            if now >= self._next_free:
                self._anchor = now
                self._issued = 0
            slot = self._anchor + self._issued / self._rate
            self._issued += 1
            self._next_free = self._anchor + self._issued / self._rate
        return max(0.0, slot - now)

    async def acquire(self, sleep: Sleep = asyncio.sleep) -> None:
        """Reserve a slot and sleep until it with ``sleep`` (injectable for tests)."""
        wait = self.reserve()
        if wait > 0:
            await sleep(wait)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self._rate!r})"


_registry: dict[tuple[str, float | None], RateLimiter] = {}
_registry_lock = threading.Lock()


def shared_limiter(name: str, rate: float | None) -> RateLimiter:
    """The process-wide limiter for ``name`` (a destination) at ``rate`` requests/s.

    Every caller in this process asking for the same name and rate gets the same instance, so
    concurrent senders (one per Beam worker thread) together stay within ``rate``.
    """
    key = (name, rate)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = RateLimiter(rate)
        return limiter
