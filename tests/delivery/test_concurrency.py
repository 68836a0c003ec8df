"""The adaptive concurrency limit (AIMD), driven by a fake clock: no network, no sleeping."""

from __future__ import annotations

import asyncio

import pytest

from beaconflow.delivery.concurrency import AdaptiveLimit, AdaptiveRate, AimdPolicy
from beaconflow.delivery.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fill(limit: AdaptiveLimit) -> None:
    """Take every slot the limit allows (acquire returns at once while below it)."""

    async def take() -> None:
        while limit.in_flight < limit.limit:
            await limit.acquire()

    asyncio.run(take())


def _round_trip(limit: AdaptiveLimit, clock: Clock, rtt: float, pushed_back: bool = False) -> None:
    clock.now += rtt
    limit.record(rtt, pushed_back)


def test_starts_at_one_and_doubles_per_round_trip_until_the_first_back_pressure() -> None:
    clock = Clock()
    limit = AdaptiveLimit(AimdPolicy(maximum=100), clock)
    assert limit.limit == 1
    for expected in (2, 4, 8, 16, 32, 64, 100):
        _fill(limit)
        _round_trip(limit, clock, 0.25)
        assert limit.limit == expected
    _fill(limit)
    _round_trip(limit, clock, 0.25)
    assert limit.limit == 100, "never above the maximum"


def test_after_back_pressure_it_grows_by_one_per_round_trip() -> None:
    clock = Clock()
    limit = AdaptiveLimit(AimdPolicy(maximum=100, initial=20), clock)
    _round_trip(limit, clock, 0.25, pushed_back=True)
    assert limit.limit == 18
    for expected in range(19, 25):
        _fill(limit)
        _round_trip(limit, clock, 0.25)
        assert limit.limit == expected


def test_does_not_grow_when_the_limit_is_not_reached() -> None:
    clock = Clock()
    limit = AdaptiveLimit(AimdPolicy(maximum=10, initial=4), clock)
    for _ in range(5):
        _round_trip(limit, clock, 0.25)  # nothing in flight: the service is not the bottleneck
    assert limit.limit == 4


def test_back_pressure_multiplies_by_point_nine_once_per_round_trip() -> None:
    clock = Clock()
    limit = AdaptiveLimit(AimdPolicy(maximum=100, initial=50), clock)
    _round_trip(limit, clock, 0.25)  # a first RTT sets the mean
    limit.record(0.0, pushed_back=True)
    limit.record(0.0, pushed_back=True)
    _round_trip(limit, clock, 0.25, pushed_back=True)
    assert limit.limit == 45
    for _ in range(40):
        _round_trip(limit, clock, 0.25, pushed_back=True)
    assert limit.limit == 1, "never below one"


def test_rising_latency_backs_off() -> None:
    clock = Clock()
    limit = AdaptiveLimit(AimdPolicy(maximum=100, initial=20), clock)
    for rtt in (0.25, 0.375, 0.25, 0.125, 0.25, 0.375, 0.25):
        _round_trip(limit, clock, rtt)
    before = limit.limit
    _round_trip(limit, clock, 4.0)  # far above mean + 2.5 standard deviations
    assert limit.limit == int(before * 0.9)


def test_waiters_wake_in_order_as_slots_free_and_respect_a_lower_limit() -> None:
    clock = Clock()

    async def scenario() -> list[int]:
        limit = AdaptiveLimit(AimdPolicy(maximum=4, initial=2), clock)
        order: list[int] = []

        async def worker(n: int) -> None:
            async with limit:
                order.append(n)
                await asyncio.sleep(0)

        await asyncio.gather(*(worker(n) for n in range(6)))
        assert limit.in_flight == 0
        return order

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4, 5]


def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    async def scenario() -> int:
        limit = AdaptiveLimit(AimdPolicy(maximum=1), Clock())
        await limit.acquire()
        waiter = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        limit.release()
        await limit.acquire()  # the slot is free again
        return limit.in_flight

    assert asyncio.run(scenario()) == 1


@pytest.mark.parametrize(
    "bad", [{"maximum": 0}, {"maximum": 4, "decrease": 1.0}, {"maximum": 4, "initial": 0}]
)
def test_policy_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AimdPolicy(**bad)  # type: ignore[arg-type]


def _pace(ceiling: float | None = None) -> tuple[AdaptiveRate, Clock]:
    clock = Clock()
    return AdaptiveRate(RateLimiter(None, clock), AimdPolicy(maximum=8), ceiling, clock), clock


def test_rate_is_unlimited_until_the_service_pushes_back() -> None:
    pace, clock = _pace()
    for _ in range(100):
        clock.now += 0.05
        pace.record(accepted=True, pushed_back=False)
    assert pace.rate is None


def test_first_push_back_sets_the_rate_from_what_was_accepted() -> None:
    pace, clock = _pace()
    for _ in range(512):  # 512 accepted in the last second
        clock.now += 1 / 512
        pace.record(accepted=True, pushed_back=False)
    pace.record(accepted=False, pushed_back=True)
    assert pace.rate == pytest.approx(512 * 0.9)


def test_rate_falls_while_pushed_back_and_grows_five_percent_a_second_after() -> None:
    pace, clock = _pace(ceiling=1000.0)
    pace.limiter.set_rate(400.0)
    clock.now += 1.0
    pace.record(accepted=False, pushed_back=True)
    assert pace.rate == pytest.approx(1.0 * 0.9)  # nothing was accepted in the last second
    pace.limiter.set_rate(400.0)
    for _ in range(256):  # one second, in binary-exact steps
        clock.now += 1 / 256
        pace.record(accepted=True, pushed_back=False)
    assert pace.rate == pytest.approx(420.0)
    for _ in range(100):
        clock.now += 1.0
        pace.record(accepted=True, pushed_back=False)
    assert pace.rate == 1000.0, "never above the ceiling"


def test_try_acquire_takes_a_free_slot_and_never_waits() -> None:
    clock = Clock()
    limit = AdaptiveLimit(AimdPolicy(maximum=8, initial=2), clock)
    assert limit.available == 2
    assert limit.try_acquire() and limit.try_acquire()
    assert not limit.try_acquire(), "at the limit"
    assert (limit.in_flight, limit.available) == (2, 0)
    limit.release()
    assert limit.available == 1
    assert limit.try_acquire()


def test_try_acquire_does_not_jump_the_queue_of_waiters() -> None:
    async def scenario() -> tuple[bool, int]:
        limit = AdaptiveLimit(AimdPolicy(maximum=1), Clock())
        await limit.acquire()
        waiter = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        limit.release()  # handed to the waiter, not to whoever asks next
        taken = limit.try_acquire()
        await waiter
        return taken, limit.in_flight

    assert asyncio.run(scenario()) == (False, 1)


def test_available_is_zero_while_over_a_shrunk_limit() -> None:
    clock = Clock()
    limit = AdaptiveLimit(AimdPolicy(maximum=100, initial=10), clock)
    _fill(limit)
    _round_trip(limit, clock, 0.25, pushed_back=True)
    assert (limit.limit, limit.in_flight) == (9, 10)
    assert limit.available == 0
    assert not limit.try_acquire()


def test_record_uses_the_reading_it_is_given() -> None:
    clock = Clock()  # never moves: only the readings passed in can end an interval
    limit = AdaptiveLimit(AimdPolicy(maximum=100), clock)
    _fill(limit)
    limit.record(0.25, False, now=0.1)
    assert limit.limit == 1, "0.1 s is less than one round trip"
    limit.record(0.25, False, now=0.25)
    assert limit.limit == 2
    pace = AdaptiveRate(RateLimiter(None, clock), AimdPolicy(maximum=8), None, clock)
    for _ in range(5):  # more than a second before the push-back: not counted
        pace.record(accepted=True, pushed_back=False, now=3.0)
    for n in range(20):
        pace.record(accepted=True, pushed_back=False, now=5.0 + n / 20)
    pace.record(accepted=False, pushed_back=True, now=5.97)
    assert pace.rate == pytest.approx(20 * 0.9)


def test_a_push_back_before_enough_answers_sets_no_rate() -> None:
    # A 503 among the very first answers must not set the rate from the two or three
    # accepted so far (near 1/s, it would take minutes to grow back).
    pace, clock = _pace()
    for _ in range(AdaptiveRate.MIN_EVIDENCE - 1):
        clock.now += 0.01
        pace.record(accepted=True, pushed_back=False)
    pace.record(accepted=False, pushed_back=True)
    assert pace.rate is None
    clock.now += 0.01
    pace.record(accepted=True, pushed_back=False)
    pace.record(accepted=False, pushed_back=True)  # now there is enough to measure
    assert pace.rate == pytest.approx(AdaptiveRate.MIN_EVIDENCE * 0.9)
