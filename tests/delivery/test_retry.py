"""Retry policy: classification, backoff and Retry-After parsing, with no network and no sleep."""

from __future__ import annotations

import random
from email.utils import formatdate, parsedate_to_datetime

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from beaconflow.delivery.retry import (
    Classification,
    RetryPolicy,
    Verdict,
    classify,
    parse_retry_after,
)

D, R, P = Verdict.DELIVERED, Verdict.RETRIABLE, Verdict.PERMANENT


def _connector_error() -> aiohttp.ClientConnectorError:
    """What aiohttp raises for a refused connection (the request never left)."""
    key = aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


@pytest.mark.parametrize(
    ("status", "verdict", "push_back", "redirect", "reached"),
    [
        (200, D, False, False, True),
        (204, D, False, False, True),
        (299, D, False, False, True),
        (408, R, False, False, True),
        (429, R, True, False, False),
        (500, R, False, False, False),
        (502, R, False, False, False),
        (503, R, True, False, False),
        (504, R, False, False, False),
        (599, R, False, False, False),
        (501, P, False, False, False),
        (400, P, False, False, True),
        (401, P, False, False, True),
        (403, P, False, False, True),
        (404, P, False, False, True),
        (413, P, False, False, True),
        (100, P, False, False, True),
        (300, P, False, True, False),
        (302, P, False, True, False),
        (304, P, False, True, False),
        (399, P, False, True, False),
        (600, P, False, False, False),
    ],
)
def test_classify_status(
    status: int, verdict: Verdict, push_back: bool, redirect: bool, reached: bool
) -> None:
    assert classify(status, None) == Classification(verdict, push_back, redirect, reached)
    assert classify(status, None).delivered is (verdict is Verdict.DELIVERED)


@pytest.mark.parametrize(
    ("error", "verdict", "push_back", "ambiguous"),
    [
        # without knowing whether the request went out, the error's type decides: a
        # connection error never left, anything else may have come after it went out
        (ConnectionRefusedError(), R, False, False),
        (ConnectionResetError(), R, False, True),
        (TimeoutError(), R, True, True),
        (aiohttp.ServerDisconnectedError(), R, False, True),
        (aiohttp.ClientPayloadError("truncated"), R, False, True),
        (aiohttp.ServerTimeoutError(), R, True, True),
        (aiohttp.SocketTimeoutError(), R, True, True),
        (aiohttp.ClientOSError(104, "reset"), R, False, True),
        (aiohttp.ConnectionTimeoutError(), R, True, False),
        (_connector_error(), R, False, False),
        (aiohttp.InvalidURL("no host"), P, False, False),
        (ValueError("bad port"), P, False, False),
        (aiohttp.NonHttpUrlClientError("ftp://example"), P, False, False),
    ],
)
def test_classify_error_without_status(
    error: BaseException, verdict: Verdict, push_back: bool, ambiguous: bool
) -> None:
    # no status: never a redirect, and no evidence that the URL reaches the service
    assert classify(None, error) == Classification(verdict, push_back, ambiguous=ambiguous)


@pytest.mark.parametrize(
    "error",
    [
        TimeoutError(),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "reset"),
        aiohttp.ClientPayloadError("cut"),
        ConnectionResetError(),
    ],
)
def test_whether_the_request_went_out_decides_ambiguity(error: BaseException) -> None:
    push_back = isinstance(error, TimeoutError)
    sent = classify(None, error, sent=True)
    assert sent == Classification(R, push_back, ambiguous=True)
    # the same error before the request went out (a timeout while connecting): retried,
    # and safe to retry
    assert classify(None, error, sent=False) == Classification(R, push_back)


@pytest.mark.parametrize(
    "error",
    [ConnectionRefusedError(), aiohttp.ConnectionTimeoutError(), _connector_error()],
)
def test_a_connection_error_is_never_ambiguous(error: BaseException) -> None:
    """A refused connection or a connect timeout never left, whatever the mark says."""
    assert not classify(None, error, sent=True).ambiguous
    assert classify(None, error, sent=True).verdict is R


@pytest.mark.parametrize("sent", [True, False, None])
def test_an_answer_is_never_ambiguous(sent: bool | None) -> None:
    """A status says what the service made of the request, even when its body was cut."""
    for status in (200, 503, 400):
        assert not classify(status, TimeoutError(), sent=sent).ambiguous
        assert not classify(status, None, sent=sent).ambiguous
    # a permanent error did not reach the network
    assert not classify(None, ValueError("bad port"), sent=sent).ambiguous


@pytest.mark.parametrize(
    ("retry_ambiguous", "answer", "attempts", "expected"),
    [
        (True, classify(None, TimeoutError(), sent=True), 1, True),
        (True, classify(None, TimeoutError(), sent=True), 3, False),  # no tries left
        (False, classify(None, TimeoutError(), sent=True), 1, False),
        (False, classify(None, aiohttp.ServerDisconnectedError(), sent=True), 1, False),
        (False, classify(None, TimeoutError(), sent=False), 1, True),  # never left
        (False, classify(None, ConnectionRefusedError()), 1, True),
        (False, classify(503, None), 1, True),
        (False, classify(400, None), 1, False),
        (False, classify(200, None), 1, False),
    ],
)
def test_retries_is_the_one_retry_decision(
    retry_ambiguous: bool, answer: Classification, attempts: int, expected: bool
) -> None:
    policy = RetryPolicy(max_attempts=3, retry_ambiguous=retry_ambiguous)
    assert policy.retries(answer, attempts) is expected


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (200, aiohttp.ClientPayloadError("cut"), Classification(D, reached=True)),
        (400, ConnectionResetError(), Classification(P, reached=True)),
        (503, ConnectionResetError(), Classification(R, push_back=True)),
        # a timeout while the body came in: the status decides, and it is back-pressure
        (200, TimeoutError(), Classification(D, push_back=True, reached=True)),
        (500, aiohttp.ServerTimeoutError(), Classification(R, push_back=True)),
        (302, TimeoutError(), Classification(P, push_back=True, redirect=True)),
        (429, TimeoutError(), Classification(R, push_back=True)),
    ],
)
def test_status_decides_over_a_late_error(
    status: int, error: BaseException, expected: Classification
) -> None:
    """An answer whose body failed to arrive is still the server's answer."""
    assert classify(status, error) == expected


def test_classifications_are_shared_not_built_per_attempt() -> None:
    assert classify(200, None) is classify(200, None)
    assert classify(None, TimeoutError()) is classify(None, aiohttp.ServerTimeoutError())
    assert classify(None, TimeoutError(), sent=False) is classify(None, TimeoutError(), sent=False)
    assert classify(200, TimeoutError()) is classify(204, TimeoutError())


def test_classify_needs_status_or_error() -> None:
    with pytest.raises(ValueError, match="status or an error"):
        classify(None, None)


def test_class_constants_are_frozensets() -> None:
    assert isinstance(RetryPolicy.RETRIABLE_STATUSES, frozenset)
    assert isinstance(RetryPolicy.DELIVERED_STATUSES, frozenset)
    assert isinstance(RetryPolicy.PERMANENT_ERRORS, frozenset)
    assert isinstance(RetryPolicy.PUSH_BACK_STATUSES, frozenset)
    assert isinstance(RetryPolicy.PUSH_BACK_ERRORS, frozenset)
    assert isinstance(RetryPolicy.CONNECTION_ERRORS, frozenset)
    assert 501 not in RetryPolicy.RETRIABLE_STATUSES


def test_delay_is_full_jitter_with_a_growing_ceiling() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=0.5, max_delay=8.0, retry_after_cap=60.0)
    expected_rng = random.Random(7)
    rng = random.Random(7)
    for attempt in range(8):
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert policy.delay(attempt, rng, None) == expected_rng.uniform(0, ceiling)


@given(
    attempt=st.integers(min_value=0, max_value=5000),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=1000),
    seed=st.integers(),
)
def test_delay_stays_within_its_ceiling(attempt: int, base: float, cap: float, seed: int) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=base, max_delay=cap, retry_after_cap=None)
    wait = policy.delay(attempt, random.Random(seed), None)
    assert 0 <= wait <= min(cap, base * 2.0 ** min(attempt, 1000))


def test_delay_without_a_cap_keeps_doubling() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=None, retry_after_cap=None)

    class Highest(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert [policy.delay(n, Highest(), None) for n in range(5)] == [1, 2, 4, 8, 16]


def test_zero_base_delay_retries_immediately() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=30.0, retry_after_cap=60.0)
    assert policy.delay(4, random.Random(1), None) == 0.0


def test_retry_after_is_a_floor_on_the_wait() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0, retry_after_cap=60.0)
    assert policy.delay(0, random.Random(3), 7.0) == 7.0


def test_retry_after_does_not_shorten_a_longer_jitter() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=100.0, max_delay=None, retry_after_cap=60.0)
    jitter = random.Random(5).uniform(0, 100.0)
    assert jitter > 0.5
    assert policy.delay(0, random.Random(5), 0.5) == jitter


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, retry_after_cap=30.0)
    assert policy.delay(0, random.Random(1), 3600.0) == 30.0


def test_retry_after_cap_none_honours_any_value_and_zero_ignores_it() -> None:
    unlimited = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, retry_after_cap=None)
    ignoring = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, retry_after_cap=0.0)
    assert unlimited.delay(0, random.Random(1), 3600.0) == 3600.0
    assert ignoring.delay(0, random.Random(1), 3600.0) == 0.0


def test_can_retry_counts_every_attempt() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.can_retry(n) for n in (1, 2, 3, 4)] == [True, True, False, False]
    assert not RetryPolicy(max_attempts=1).can_retry(1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -1},
        {"base_delay": -0.1},
        {"max_delay": -1.0},
        {"retry_after_cap": -1.0},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_negative_attempt_is_rejected() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().delay(-1, random.Random(), None)


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]


NOW = parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 5 ", 5.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:29:00 -0000", 60.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("Wed, 99 Foo 2015", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


@given(st.integers(min_value=0, max_value=10**6))
def test_parse_retry_after_round_trips_dates(delta: int) -> None:
    header = formatdate(NOW + delta, usegmt=True)
    assert parse_retry_after(header, NOW) == pytest.approx(delta)
