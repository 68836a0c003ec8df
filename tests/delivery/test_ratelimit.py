"""The rate limiter against a fake clock: exact spacing, no burst, the one-second-window bound."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beaconflow.delivery.ratelimit import RateLimiter, shared_limiter
from tests.delivery.test_concurrency import Clock

# Windows are compared with a tolerance far below any slot spacing, so that float rounding
# of "exactly one second apart" does not count as a breach.
_EPSILON = 1e-9


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def send_times(limiter: RateLimiter, clock: FakeClock, arrivals: list[float]) -> list[float]:
    """When each caller arriving at ``arrivals`` (sorted) would send."""
    times = []
    for arrival in arrivals:
        clock.now = arrival
        times.append(arrival + limiter.reserve())
    return times


def busiest_window(times: list[float]) -> int:
    """The most sends in any half-open one-second window."""
    times = sorted(times)
    best, end = 0, 0
    for start, t in enumerate(times):
        while end < len(times) and times[end] < t + 1 - _EPSILON:
            end += 1
        best = max(best, end - start)
    return best


def test_unlimited_never_waits() -> None:
    limiter = RateLimiter(None, clock=FakeClock())
    assert [limiter.reserve() for _ in range(1000)] == [0.0] * 1000
    assert limiter.rate is None


@pytest.mark.parametrize("rate", [0, -1.0])
def test_non_positive_rates_are_rejected(rate: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate)


def test_simultaneous_callers_are_spaced_exactly() -> None:
    limiter = RateLimiter(4.0, clock=FakeClock())
    assert [limiter.reserve() for _ in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]


def test_no_burst_after_idle_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    assert limiter.reserve() == 0.0
    clock.now += 60.0
    waits = [limiter.reserve() for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.1, 0.2])


def test_slow_callers_are_not_delayed() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    for _ in range(5):
        assert limiter.reserve() == 0.0
        clock.now += 0.15


def test_a_caller_between_slots_waits_for_the_next_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, clock=clock)
    limiter.reserve()
    clock.now += 0.04
    assert limiter.reserve() == pytest.approx(0.06)


def test_spacing_does_not_drift_over_many_slots() -> None:
    limiter = RateLimiter(3.0, clock=FakeClock(0.0))
    waits = [limiter.reserve() for _ in range(300_001)]
    assert waits[-1] == pytest.approx(100_000.0, abs=1e-9)


@pytest.mark.parametrize("rate", [10.0, 25.0, 100.0, 1000.0, 12.5])
def test_saturated_callers_stay_within_the_window_bound(rate: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock)
    arrivals = [100.0] * int(rate * 10)
    times = send_times(limiter, clock, arrivals)
    assert busiest_window(times) <= math.ceil(rate) <= 1.1 * rate
    mean = len(times) / (max(times) - min(times) + 1 / rate)
    assert mean >= 0.9 * rate


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=10, max_value=500),
    gaps=st.lists(st.floats(min_value=0, max_value=0.3), min_size=1, max_size=400),
)
def test_any_arrival_pattern_stays_within_the_window_bound(rate: float, gaps: list[float]) -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(rate, clock=clock)
    arrivals = []
    now = 0.0
    for gap in gaps:
        now += gap
        arrivals.append(now)
    times = send_times(limiter, clock, arrivals)
    assert busiest_window(times) <= math.ceil(rate) <= 1.1 * rate
    assert all(b - a >= 1 / rate - _EPSILON for a, b in itertools.pairwise(times))


def test_threads_sharing_a_limiter_get_distinct_slots() -> None:
    limiter = RateLimiter(50.0, clock=FakeClock())
    waits: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        mine = [limiter.reserve() for _ in range(250)]
        with lock:
            waits.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == pytest.approx([n / 50.0 for n in range(2000)])


def test_acquire_sleeps_until_the_slot() -> None:
    limiter = RateLimiter(5.0, clock=FakeClock())
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def main() -> None:
        for _ in range(4):
            await limiter.acquire(sleep)

    asyncio.run(main())
    assert slept == pytest.approx([0.2, 0.4, 0.6])


def test_shared_limiter_is_one_per_name_and_rate() -> None:
    first = shared_limiter("test-ratelimit-kontagent", 20.0)
    assert shared_limiter("test-ratelimit-kontagent", 20.0) is first
    assert shared_limiter("test-ratelimit-kontagent", 40.0) is not first
    assert shared_limiter("test-ratelimit-kissmetrics", 20.0) is not first
    assert shared_limiter("test-ratelimit-kontagent", None).rate is None


def test_rate_limiter_rate_can_change() -> None:
    clock = Clock()
    limiter = RateLimiter(None, clock)
    assert limiter.reserve() == 0.0
    limiter.set_rate(10.0)
    waits = [limiter.reserve() for _ in range(3)]
    assert waits == pytest.approx([0.0, 0.1, 0.2])
    with pytest.raises(ValueError):
        limiter.set_rate(0)
