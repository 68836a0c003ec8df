"""The circuit breaker (``beaconflow.delivery.breaker``): down after a window of only failures.

No network and no sleeping: answers are classified by ``classify`` and the clock is a
number the test moves. The sender acting on it is tested in tests/delivery/test_sender.py
and test_sendproc.py, whole runs against hung and failing servers in
tests/e2e/test_misbehaving_services.py.

Run with ``.venv/bin/python -m pytest tests/delivery/test_breaker.py``.
"""

from __future__ import annotations

import aiohttp
import pytest

from beaconflow.delivery.breaker import DOWN, Breaker, down_reason, is_failure
from beaconflow.delivery.retry import classify


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return self.now


TIMEOUT = (None, TimeoutError())
REFUSED = (None, aiohttp.ClientConnectionError("Connection refused"))


def answer(breaker: Breaker, status: int | None, error: BaseException | None = None) -> bool:
    return breaker.answer(status, classify(status, error))


@pytest.mark.parametrize(
    ("status", "error", "failure"),
    [
        (500, None, True),
        (501, None, True),  # permanent for retries, but still the service failing
        (503, None, True),
        (599, None, True),
        (None, TimeoutError(), True),
        (None, aiohttp.ServerDisconnectedError(), True),
        (None, aiohttp.ClientConnectionError("refused"), True),
        (200, None, False),
        (204, None, False),
        (302, None, False),
        (400, None, False),
        (404, None, False),
        (408, None, False),
        (429, None, False),  # throttled: the service is up
        (200, TimeoutError(), False),  # the status came: it answered
        (None, ValueError("bad URL"), None),  # never reached the network: says nothing
    ],
)
def test_what_counts_as_a_failure(
    status: int | None, error: BaseException | None, failure: bool | None
) -> None:
    assert is_failure(status, classify(status, error)) is failure


def test_down_after_a_whole_window_of_failures_and_not_before() -> None:
    clock = Clock()
    breaker = Breaker(60.0, clock)
    assert not answer(breaker, 503), "the first failure opens the window"
    assert breaker.failing_since == 100.0
    clock.now += 59.9
    assert not answer(breaker, *TIMEOUT)
    clock.now += 0.1
    assert answer(breaker, *REFUSED), "a failure a whole window after the first"
    assert breaker.down and breaker.failures == 3
    clock.now += 1000
    assert not answer(breaker, 503), "declared once"
    assert not answer(breaker, 200) and breaker.down, "and it stays down"


@pytest.mark.parametrize("status", [200, 404, 429, 302])
def test_any_other_answer_starts_the_window_again(status: int) -> None:
    clock = Clock()
    breaker = Breaker(10.0, clock)
    answer(breaker, 503)
    clock.now += 9
    assert not answer(breaker, status)
    assert breaker.failing_since is None and breaker.failures == 0
    clock.now += 5
    assert not answer(breaker, 503), "a new window starts here"
    clock.now += 9.5
    assert not answer(breaker, 503)
    clock.now += 0.5
    assert answer(breaker, 503)


def test_a_long_silence_between_two_failures_is_a_window_of_failures() -> None:
    # a hung service: each answer is a timeout, and they come far apart
    clock = Clock()
    breaker = Breaker(5.0, clock)
    assert not answer(breaker, *TIMEOUT)
    clock.now += 30
    assert answer(breaker, *TIMEOUT)


def test_attempts_that_never_reached_the_network_neither_open_nor_close_it() -> None:
    clock = Clock()
    breaker = Breaker(5.0, clock)
    assert not answer(breaker, None, ValueError("unusable URL"))
    assert breaker.failing_since is None and clock.readings == 0
    answer(breaker, 503)
    clock.now += 5
    assert not answer(breaker, None, ValueError("unusable URL")), "no failure, no success"
    assert answer(breaker, 500)


def test_the_clock_is_read_on_failures_only() -> None:
    clock = Clock()
    breaker = Breaker(5.0, clock)
    for _ in range(100):
        answer(breaker, 200)
    assert clock.readings == 0


@pytest.mark.parametrize("window", [0.0, -1.0, float("nan")])
def test_a_window_must_be_positive(window: float) -> None:
    with pytest.raises(ValueError, match="window must be > 0"):
        Breaker(window, Clock())


def test_the_reason_names_the_destination_and_the_window() -> None:
    reason = down_reason("kontagent", 60.0)
    assert reason == (
        "destination down: kontagent (only timeouts, connection errors and 5xx for 1m)"
    )
    assert reason.startswith(DOWN) and ";" not in reason  # stop reasons are joined with "; "
