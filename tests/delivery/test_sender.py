"""BulkSender (``beaconflow.delivery.sender``) against a real aiohttp server on 127.0.0.1.

Backoff never really waits: a recording ``sleep`` is injected. The server is the sandbox
collector playing scripted answers (the ``server`` fixture): the message kind in the URL path
chooses the answer (``ok``, ``flaky``, ``throttle``, ``bad``, ...) and every URL carries the
API key ``SECRETKEY123``, which must never come out of the sender. Redirects are judged per
destination, and a stopped run halts the sender, as does a ledger lock that is no longer the
run's (its lease, checked before each request). The send step that holds it in a pipeline is
tested in tests/transforms/test_send.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from beaconflow.delivery.body import SHOWN_CHARS
from beaconflow.delivery.lease_store import StoreOptions
from beaconflow.delivery.ledger import LedgerError
from beaconflow.delivery.ledger_lock import Holder, Lease, lock_path
from beaconflow.delivery.ratelimit import RateLimiter
from beaconflow.delivery.retry import RetryPolicy
from beaconflow.delivery.sender import (
    REDIRECT_SECONDS,
    REDIRECT_WINDOW,
    BulkSender,
    Delivery,
    ProgressLog,
    Request,
    SendEngine,
    Sender,
    SenderConfig,
    SenderStats,
)
from beaconflow.delivery.stop import RunStop
from beaconflow.model.message import Message
from beaconflow.sandbox.collector import Collector, unused_port
from tests.conftest import KEY, kissmetrics_url, kontagent_url

NO_WAIT = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0, retry_after_cap=60.0)


@pytest.fixture
def refused_url() -> str:
    """A URL on a port nothing listens on (bound, then released)."""
    return f"http://127.0.0.1:{unused_port()}/api/v1/{KEY}/ok/?_k={KEY}"


class RecordingSleep:
    """Records every requested wait instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def message(kind: str, token: str, destination: str = "kontagent") -> Message:
    return Message(destination, kind, (("token", token),))  # type: ignore[arg-type]


def config(
    retry: RetryPolicy = NO_WAIT,
    concurrency: int = 4,
    timeout: float = 5.0,
    interval: float = 10,
    adaptive: bool = False,
) -> SenderConfig:
    # Fixed concurrency unless a test is about adapting it: the others count in-flight
    # requests and clock readings.
    return SenderConfig(
        concurrency, timeout, retry, {}, progress_interval=interval, adaptive=adaptive
    )


def send_all(sender: BulkSender, requests: list[Request]) -> dict[str, Delivery]:
    for request in requests:
        sender.submit(request)
    deliveries = sender.take_finished() + sender.flush()
    assert len(deliveries) == len(requests)
    return {delivery.message.param("token") or "": delivery for delivery in deliveries}


def test_ok_is_delivered_at_the_first_try(server: Collector) -> None:
    sleep = RecordingSleep()
    requests = [
        Request(message("ok", "ok-k"), kontagent_url(server, "ok", "ok-k")),
        Request(message("ok", "ok-m", "kissmetrics"), kissmetrics_url(server, "ok", "ok-m")),
    ]
    with BulkSender(config(), (KEY,), sleep=sleep) as sender:
        results = send_all(sender, requests)
        stats = sender.stats()
    for token in ("ok-k", "ok-m"):
        assert results[token] == Delivery(
            requests[0 if token == "ok-k" else 1].message, True, 200, None, 1
        )
        assert server.tries(token) == 1
    assert sleep.calls == []
    assert (stats.sent, stats.delivered, stats.failed, stats.retries) == (2, 2, 0, 0)
    assert stats.outcomes == {"200": 2}


def test_fail_twice_then_succeed_is_retried(server: Collector) -> None:
    sleep = RecordingSleep()
    request = Request(message("flaky", "flaky-2"), kontagent_url(server, "flaky", "flaky-2", n=2))
    with BulkSender(config(), (KEY,), sleep=sleep) as sender:
        delivery = send_all(sender, [request])["flaky-2"]
        stats = sender.stats()
    assert (delivery.delivered, delivery.status, delivery.attempts) == (True, 200, 3)
    assert server.tries("flaky-2") == 3
    assert len(sleep.calls) == 2
    assert stats.outcomes == {"503": 2, "200": 1}
    assert stats.retries == 2


def test_retries_stop_at_max_attempts(server: Collector) -> None:
    retry = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, retry_after_cap=0.0)
    request = Request(message("flaky", "flaky-9"), kontagent_url(server, "flaky", "flaky-9", n=9))
    with BulkSender(config(retry), (KEY,), sleep=RecordingSleep()) as sender:
        delivery = send_all(sender, [request])["flaky-9"]
    assert not delivery.delivered
    assert (delivery.status, delivery.error, delivery.attempts) == (503, "HTTP 503", 3)
    assert server.tries("flaky-9") == 3


def test_backoff_follows_the_seeded_jitter(server: Collector) -> None:
    retry = RetryPolicy(max_attempts=4, base_delay=0.25, max_delay=1.0, retry_after_cap=0.0)
    sleep = RecordingSleep()
    request = Request(
        message("flaky", "flaky-jit"), kontagent_url(server, "flaky", "flaky-jit", n=3)
    )
    with BulkSender(config(retry), (KEY,), sleep=sleep, rng=random.Random(11)) as sender:
        assert send_all(sender, [request])["flaky-jit"].attempts == 4
    expected = random.Random(11)
    assert sleep.calls == [expected.uniform(0, min(1.0, 0.25 * 2**n)) for n in range(3)]


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [("bad", 400, "HTTP 400: bad request (scripted)"), ("unimplemented", 501, "HTTP 501")],
)
def test_permanent_statuses_are_not_retried(
    server: Collector, kind: str, status: int, reason: str
) -> None:
    sleep = RecordingSleep()
    token = f"perm-{kind}"
    request = Request(message(kind, token), kontagent_url(server, kind, token))
    with BulkSender(config(), (KEY,), sleep=sleep) as sender:
        delivery = send_all(sender, [request])[token]
        stats = sender.stats()
    # the service's explanation, when its answer has a body
    assert delivery == Delivery(request.message, False, status, reason, 1)
    assert server.tries(token) == 1
    assert sleep.calls == []
    assert (stats.failed, stats.retries) == (1, 0)


#: At most this much of a 300 MB body may leave the server before a sender closes the
#: connection: the 64 KiB it reads, and what the connection's buffers hold on both sides (a
#: few MiB on loopback). Reading the body whole would be 300 MB.
BODY_WRITTEN_BOUND = 32 * 1024 * 1024


def test_a_huge_2xx_body_is_delivered_and_not_read(server: Collector) -> None:
    tokens = [f"huge-{n}" for n in range(4)]
    requests = [Request(message("huge", t), kontagent_url(server, "huge", t)) for t in tokens]
    after = Request(message("ok", "after-huge"), kontagent_url(server, "ok", "after-huge"))
    with BulkSender(config(concurrency=4), (KEY,), sleep=RecordingSleep()) as sender:
        results = send_all(sender, [*requests, after])
        stats = sender.stats()
    for request, token in zip(requests, tokens, strict=True):
        assert results[token] == Delivery(request.message, True, 200, None, 1)
        written = server.body_written(token)
        assert written is not None, "the server is still writing: the sender kept reading"
        assert written < BODY_WRITTEN_BOUND
    # the sender goes on: the connections it closed are replaced
    assert results["after-huge"].delivered
    assert (stats.sent, stats.delivered, stats.retries) == (5, 5, 0)


@pytest.mark.parametrize("destination", ["kontagent", "kissmetrics"])
def test_a_4xx_keeps_the_services_explanation_redacted(server: Collector, destination: str) -> None:
    token = f"explain-{destination}"
    url = (kontagent_url if destination == "kontagent" else kissmetrics_url)(
        server, "explain", token
    )
    request = Request(message("explain", token, destination), url)
    with BulkSender(config(), (KEY,), sleep=RecordingSleep()) as sender:
        delivery = send_all(sender, [request])[token]
    assert (delivery.delivered, delivery.status, delivery.attempts) == (False, 400, 1)
    assert delivery.error is not None
    # the body echoes the URL and the key: both masked, the explanation kept
    assert delivery.error.startswith('HTTP 400: {"error": "invalid parameter s (scripted)", ')
    assert KEY not in delivery.error and '"key": "***"' in delivery.error
    assert "\n" not in delivery.error and len(delivery.error) <= len("HTTP 400: ") + SHOWN_CHARS


def test_a_5xx_error_page_is_quoted_on_one_line_and_cut(server: Collector) -> None:
    retry = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, retry_after_cap=0.0)
    request = Request(message("error_page", "page"), kontagent_url(server, "error_page", "page"))
    with BulkSender(config(retry), (KEY,), sleep=RecordingSleep()) as sender:
        delivery = send_all(sender, [request])["page"]
    assert (delivery.delivered, delivery.status, delivery.attempts) == (False, 500, 2)
    assert server.tries("page") == 2
    error = delivery.error
    assert error is not None and "\n" not in error
    assert error.startswith(
        "HTTP 500: <!DOCTYPE html> <html> <head> <title>500 Internal Server Error</title> <style>"
    )
    assert error.endswith("…") and len(error) == len("HTTP 500: ") + SHOWN_CHARS


def test_retry_after_seconds_is_honoured(server: Collector) -> None:
    sleep = RecordingSleep()
    retry = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01, retry_after_cap=60.0)
    request = Request(
        message("throttle", "ra-7"), kontagent_url(server, "throttle", "ra-7", after=7)
    )
    with BulkSender(config(retry), (KEY,), sleep=sleep) as sender:
        delivery = send_all(sender, [request])["ra-7"]
    assert (delivery.delivered, delivery.attempts) == (True, 2)
    assert len(sleep.calls) == 1
    assert sleep.calls[0] >= 7


def test_retry_after_date_is_honoured(server: Collector) -> None:
    now = 1_700_000_000.0
    after = formatdate(now + 12, usegmt=True)
    sleep = RecordingSleep()
    request = Request(
        message("throttle", "ra-date"), kissmetrics_url(server, "throttle", "ra-date", after=after)
    )
    with BulkSender(config(), (KEY,), sleep=sleep, wall_clock=lambda: now) as sender:
        delivery = send_all(sender, [request])["ra-date"]
    assert (delivery.delivered, delivery.attempts) == (True, 2)
    assert sleep.calls == [12.0]


def test_retry_after_is_capped(server: Collector) -> None:
    sleep = RecordingSleep()
    retry = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, retry_after_cap=5.0)
    request = Request(
        message("throttle", "ra-cap"), kontagent_url(server, "throttle", "ra-cap", after=3600)
    )
    with BulkSender(config(retry), (KEY,), sleep=sleep) as sender:
        assert send_all(sender, [request])["ra-cap"].delivered
    assert sleep.calls == [5.0]


def test_timeouts_are_retried_then_fail(server: Collector) -> None:
    retry = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, retry_after_cap=0.0)
    request = Request(message("slow", "slow"), kontagent_url(server, "slow", "slow", seconds=1))
    with BulkSender(config(retry, timeout=0.2), (KEY,), sleep=RecordingSleep()) as sender:
        delivery = send_all(sender, [request])["slow"]
    assert (delivery.delivered, delivery.status, delivery.attempts) == (False, None, 2)
    assert delivery.error is not None
    assert "Timeout" in delivery.error
    assert server.tries("slow") == 2


def test_dropped_connections_are_retried_then_fail(server: Collector) -> None:
    request = Request(message("drop", "drop"), kontagent_url(server, "drop", "drop"))
    with BulkSender(config(), (KEY,), sleep=RecordingSleep()) as sender:
        delivery = send_all(sender, [request])["drop"]
    assert (delivery.delivered, delivery.status, delivery.attempts) == (False, None, 4)
    assert delivery.error is not None
    assert "Disconnected" in delivery.error
    assert server.tries("drop") == 4


def test_refused_connections_are_retried_then_fail(refused_url: str) -> None:
    request = Request(message("ok", "refused"), refused_url)
    with BulkSender(config(), (KEY,), sleep=RecordingSleep()) as sender:
        (delivery,) = send_all(sender, [request]).values()
    assert (delivery.delivered, delivery.status, delivery.attempts) == (False, None, 4)
    assert delivery.error is not None
    assert delivery.error.startswith("never reached the service: connection refused by 127.0.0.1:")


def test_unusable_urls_fail_without_retry() -> None:
    requests = [
        Request(message("ok", "no-host"), f"http:///api/v1/{KEY}/ok/?_k={KEY}"),
        Request(message("ok", "scheme"), f"nope://example.invalid/{KEY}"),
    ]
    with BulkSender(config(), (KEY,), sleep=RecordingSleep()) as sender:
        results = send_all(sender, requests)
    for delivery in results.values():
        assert (delivery.delivered, delivery.status, delivery.attempts) == (False, None, 1)
        assert delivery.error is not None
        assert "***" in delivery.error


def test_no_secret_leaks_into_errors_or_logs(
    server: Collector, refused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    requests = [
        Request(message("bad", "leak-bad"), kontagent_url(server, "bad", "leak-bad")),
        Request(
            message("bad", "leak-badm", "kissmetrics"), kissmetrics_url(server, "bad", "leak-badm")
        ),
        Request(message("flaky", "leak-fl"), kontagent_url(server, "flaky", "leak-fl", n=9)),
        Request(
            message("throttle", "leak-ra"), kissmetrics_url(server, "throttle", "leak-ra", after=1)
        ),
        Request(message("drop", "leak-drop"), kontagent_url(server, "drop", "leak-drop")),
        Request(
            message("slow", "leak-slow"), kontagent_url(server, "slow", "leak-slow", seconds=1)
        ),
        Request(message("ok", "leak-refused"), refused_url),
        Request(message("ok", "leak-host"), f"http:///api/v1/{KEY}/ok/?_k={KEY}"),
        Request(message("ok", "leak-scheme"), f"nope://example.invalid/{KEY}?_k={KEY}"),
    ]
    retry = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, retry_after_cap=5.0)
    with BulkSender(config(retry, timeout=0.2, interval=0), (KEY,), sleep=RecordingSleep()) as s:
        deliveries = send_all(s, requests)
    assert sum(not d.delivered for d in deliveries.values()) == 8
    for delivery in deliveries.values():
        assert KEY not in repr(delivery)
        assert KEY not in (delivery.error or "")
    assert caplog.records, "the sender logged nothing to check"
    assert KEY not in caplog.text
    assert all(KEY not in repr(request) for request in requests)


def test_progress_lines(server: Collector, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="beaconflow.send")
    ticks = iter(range(1000))
    requests = [
        Request(message("ok", f"prog-{n}"), kontagent_url(server, "ok", f"prog-{n}"))
        for n in range(5)
    ]
    sender = BulkSender(config(interval=2.0), (KEY,), clock=lambda: float(next(ticks)))
    with sender:
        send_all(sender, requests)
    lines = [r.getMessage() for r in caplog.records if r.name == "beaconflow.send"]
    progress = [line for line in lines if line.startswith("sent ")]
    # The clock ticks one second per reading: a line every second attempt, never more often.
    # A line is logged as an attempt is counted, before its message is finished: the 2nd
    # attempt's line finds 1 of the 5 messages finished, at 0.5 per second: 8 s left.
    assert progress == [
        "sent 2 (1.0/s), retries 0, failed 0; 1 of 5 built so far (20%, ETA 8s)",
        "sent 4 (1.0/s), retries 0, failed 0; 3 of 5 built so far (60%, ETA 2s)",
    ]
    fields = [
        getattr(r, "fields", None)
        for r in caplog.records
        if getattr(r, "event", None) == "progress"
    ]
    assert fields[1] == {
        "sent": 4, "rate": 1.0, "retries": 0, "failed": 0, "delivered": 3, "done": 3,
        "total": 5, "percent": 60.0, "eta_seconds": 2.0,
    }  # fmt: skip
    assert re.fullmatch(r"done: sent 5, delivered 5, retries 0, failed 0", lines[-1])


def test_limiter_is_taken_before_every_attempt(server: Collector) -> None:
    sleep = RecordingSleep()
    frozen = RateLimiter(10.0, clock=lambda: 50.0)
    requests = [
        Request(message("flaky", "rate-fl"), kontagent_url(server, "flaky", "rate-fl", n=2)),
        Request(message("ok", "rate-ok"), kontagent_url(server, "ok", "rate-ok")),
    ]
    with BulkSender(config(), (KEY,), sleep=sleep, limiters={"kontagent": frozen}) as sender:
        send_all(sender, requests)
    # Four attempts: the first goes at once, the next three wait 0.1, 0.2 and 0.3 s;
    # backoff waits are 0 with this policy.
    assert sorted(wait for wait in sleep.calls if wait > 0) == pytest.approx([0.1, 0.2, 0.3])


def test_configured_rates_use_the_shared_limiter(server: Collector) -> None:
    sleep = RecordingSleep()
    rates = {"kissmetrics": 1e-6}  # one slot per 11 days: every wait after the first is huge
    cfg = SenderConfig(4, 5.0, NO_WAIT, rates)
    requests = [
        Request(message("ok", f"km-{n}", "kissmetrics"), kissmetrics_url(server, "ok", f"km-{n}"))
        for n in range(3)
    ]
    requests.append(Request(message("ok", "kt-free"), kontagent_url(server, "ok", "kt-free")))
    with BulkSender(cfg, (KEY,), sleep=sleep) as sender:
        assert all(d.delivered for d in send_all(sender, requests).values())
    assert len([wait for wait in sleep.calls if wait > 1e5]) >= 2


def test_pending_requests_are_bounded(server: Collector) -> None:
    server.close_gate()
    try:
        sender = BulkSender(config(concurrency=2), (KEY,), sleep=RecordingSleep())
        for n in range(4):
            sender.submit(
                Request(message("gated", f"gate-{n}"), kontagent_url(server, "gated", f"gate-{n}"))
            )
        extra = Request(message("gated", "gate-4"), kontagent_url(server, "gated", "gate-4"))
        blocked = threading.Thread(target=sender.submit, args=(extra,))
        blocked.start()
        blocked.join(timeout=0.3)
        assert blocked.is_alive(), "a fifth request was accepted with 2 in flight and 2 waiting"
        assert sender.take_finished() == []
    finally:
        server.open_gate()
    blocked.join()
    with sender:
        deliveries = sender.flush()
    assert sorted(d.message.param("token") or "" for d in deliveries) == [
        f"gate-{n}" for n in range(5)
    ]
    assert all(d.delivered for d in deliveries)
    assert server.max_in_flight("gated") == 2


def test_many_requests_respect_concurrency(server: Collector) -> None:
    requests = [
        Request(message("ok", f"bulk-{n}"), kontagent_url(server, "ok", f"bulk-{n}"))
        for n in range(300)
    ]
    with BulkSender(config(concurrency=8), (KEY,)) as sender:
        results = send_all(sender, requests)
        assert sender.take_finished() == []
        stats = sender.stats()
    assert len(results) == 300
    assert all(d.delivered and d.attempts == 1 for d in results.values())
    assert (stats.sent, stats.delivered) == (300, 300)
    assert 1 <= server.max_in_flight("ok") <= 8


def test_close_abandons_unfinished_requests_loudly(
    server: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="beaconflow.send")
    server.close_gate()
    try:
        sender = BulkSender(config(), (KEY,))
        sender.submit(
            Request(message("gated", "abandoned"), kontagent_url(server, "gated", "abandoned"))
        )
        sender.close()
    finally:
        server.open_gate()
    assert sender.take_finished() == []
    assert "closed with 1 unfinished request abandoned" in caplog.text


def test_submit_after_close_is_refused(server: Collector) -> None:
    sender = BulkSender(config(), (KEY,))
    sender.close()
    sender.close()
    with pytest.raises(RuntimeError, match="closed"):
        sender.submit(Request(message("ok", "late"), kontagent_url(server, "ok", "late")))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"timeout": 0.0},
        {"rates": {"kontagent": 0.0}},
        {"progress_interval": -1},
    ],
)
def test_invalid_sender_configs_are_rejected(kwargs: dict[str, object]) -> None:
    values: dict[str, object] = {"concurrency": 1, "timeout": 1.0, "retry": NO_WAIT}
    values.update(kwargs)
    with pytest.raises(ValueError):
        SenderConfig(**values)  # type: ignore[arg-type]


def test_adaptive_concurrency_grows_on_fast_answers_and_backs_off_on_429(
    server: Collector,
) -> None:
    fast = [
        Request(message("ok", f"grow-{n}"), kontagent_url(server, "ok", f"grow-{n}"))
        for n in range(300)
    ]
    with BulkSender(config(concurrency=16, adaptive=True), (KEY,)) as sender:
        assert all(d.delivered for d in send_all(sender, fast).values())
        grown = sender.concurrency_limits()["kontagent"]
        throttled = [
            Request(
                message("throttle", f"slow-{n}"),
                kontagent_url(server, "throttle", f"slow-{n}", after="0"),
            )
            for n in range(60)
        ]
        assert all(d.delivered for d in send_all(sender, throttled).values())
        backed_off = sender.concurrency_limits()["kontagent"]
    assert 1 < grown <= 16
    assert backed_off < grown


def test_a_batch_larger_than_the_pending_room_does_not_block(server: Collector) -> None:
    # 2 x concurrency requests may be pending; a batch of 50 at concurrency 1 must still flow
    requests = [
        Request(message("ok", f"batch-{n}"), kontagent_url(server, "ok", f"batch-{n}"))
        for n in range(50)
    ]
    with BulkSender(config(concurrency=1), (KEY,)) as sender:
        sender.submit_many(requests)
        deliveries = sender.take_finished() + sender.flush()
    assert len(deliveries) == 50 and all(d.delivered for d in deliveries)


# -- the workers, driven step by step: a fake session answers only when the test says so --


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class EmptyBody:
    async def read(self, n: int = -1) -> bytes:
        return b""


class FakeResponse:
    def __init__(self, status: int) -> None:
        self.status = status
        self.headers: dict[str, str] = {}
        self.content = EmptyBody()
        self.charset = None

    def close(self) -> None:
        pass


class FakeGet:
    def __init__(self, session: FakeSession, url: str) -> None:
        self._session = session
        self._url = url

    async def __aenter__(self) -> FakeResponse:
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = (self._url, answer)
        self._session.calls.append(self._url)
        self._session.in_flight.append(entry)
        try:
            return FakeResponse(await answer)
        finally:
            self._session.in_flight.remove(entry)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class FakeSession:
    """Stands in for aiohttp.ClientSession: every GET waits until the test answers it."""

    def __init__(self, *, connector: aiohttp.BaseConnector, **_: object) -> None:
        self._connector = connector
        self._retry_connection = True  # as aiohttp's, which the sender turns off
        self.calls: list[str] = []
        self.in_flight: list[tuple[str, asyncio.Future[int]]] = []
        self.closed = False

    def get(
        self, url: object, *, allow_redirects: bool = True, proxy: str | None = None
    ) -> FakeGet:
        assert allow_redirects is False, "a tracking GET never follows a redirect"
        assert proxy is None, "the tests' default network is direct"
        return FakeGet(self, str(url))

    async def close(self) -> None:
        self.closed = True
        await self._connector.close()


@pytest.fixture
def fake_sessions(monkeypatch: pytest.MonkeyPatch) -> list[FakeSession]:
    sessions: list[FakeSession] = []

    def open_session(**kwargs: Any) -> FakeSession:
        session = FakeSession(**kwargs)
        sessions.append(session)
        return session

    monkeypatch.setattr(aiohttp, "ClientSession", open_session)
    return sessions


def fake_request(destination: str, n: int) -> Request:
    token = f"{destination}-{n}"
    return Request(message("ok", token, destination), f"http://fake.invalid/{destination}/{token}")


T = TypeVar("T")


def on_loop(sender: BulkSender, action: Callable[[], T]) -> T:
    """Run ``action`` on the sender's loop, then let the loop run until it has nothing to do.

    No network and no sleeping is involved (the session is fake, the sleep records), so a
    fixed number of turns of the loop is enough for every wake-up to have happened.
    """

    async def run() -> T:
        result = action()
        for _ in range(100):
            await asyncio.sleep(0)
        return result

    return asyncio.run_coroutine_threadsafe(run(), sender._loop).result()


def in_flight_by_destination(session: FakeSession) -> Counter[str]:
    return Counter(url.split("/")[3] for url, _ in session.in_flight)


def answer_all(session: FakeSession, status: Callable[[str], int]) -> Callable[[], list[str]]:
    """An action answering every request in flight with ``status(url)``."""

    def answer() -> list[str]:
        answered = []
        for url, future in list(session.in_flight):
            future.set_result(status(url))
            answered.append(url)
        return answered

    return answer


def test_workers_fill_the_adaptive_limit_as_it_grows_and_no_more(
    fake_sessions: list[FakeSession],
) -> None:
    clock = ManualClock()
    requests = [fake_request("kontagent", n) for n in range(60)]
    cfg = config(concurrency=32, adaptive=True)  # 64 may be pending: submit_many never blocks
    with BulkSender(cfg, (KEY,), clock=clock, sleep=RecordingSleep()) as sender:
        (session,) = fake_sessions
        sender.submit_many(requests)
        limits = []
        outstanding = len(requests)
        while outstanding:
            in_flight = on_loop(sender, lambda: len(session.in_flight))
            limit = sender.concurrency_limits()["kontagent"]
            # as many in flight as the limit allows: workers above it parked, none idle below
            assert in_flight == min(limit, outstanding)
            limits.append(limit)
            clock.now += 1.0  # every answer takes one round trip of the fake clock
            outstanding -= len(on_loop(sender, answer_all(session, lambda _: 200)))
        deliveries = sender.flush()
    assert limits == [1, 2, 4, 8, 16, 32]  # slow start: doubling per round trip, up to 32
    assert sorted(d.message.param("token") or "" for d in deliveries) == sorted(
        r.message.param("token") or "" for r in requests
    )
    assert all(d.delivered and d.attempts == 1 for d in deliveries)
    assert len(session.calls) == len(set(session.calls)) == len(requests)


def test_no_request_is_lost_or_duplicated_while_limits_shrink_and_grow(
    fake_sessions: list[FakeSession],
) -> None:
    clock = ManualClock()
    requests = [fake_request(d, n) for n in range(24) for d in ("kontagent", "kissmetrics")]
    cfg = config(concurrency=24, adaptive=True)  # 48 may be pending: submit_many never blocks
    # 503 is back-pressure: kissmetrics is pushed back in round trip 2, kontagent in 3
    pushed_back = {2: "kissmetrics", 3: "kontagent"}
    refusals: Counter[str] = Counter()
    limits: dict[str, list[int]] = {"kontagent": [], "kissmetrics": []}
    with BulkSender(cfg, (KEY,), clock=clock, sleep=RecordingSleep()) as sender:
        (session,) = fake_sessions
        sender.submit_many(requests)
        finished: list[Delivery] = []
        for round_trip in range(1, 100):
            in_flight = on_loop(sender, lambda: in_flight_by_destination(session))
            finished += sender.take_finished()
            if len(finished) == len(requests):
                break
            done: Counter[str] = Counter(d.message.destination for d in finished)
            wanted = 0
            for destination, seen in limits.items():
                limit = sender.concurrency_limits()[destination]
                seen.append(limit)
                outstanding = 24 - done[destination]
                assert in_flight[destination] <= min(limit, outstanding)
                wanted += min(limit, outstanding)
            # never more than the concurrency in all, and no room left unused
            assert sum(in_flight.values()) == min(24, wanted)

            def status(url: str, round_trip: int = round_trip) -> int:
                if url.split("/")[3] == pushed_back.get(round_trip):
                    refusals[url] += 1
                    return 503
                return 200

            clock.now += 1.0
            on_loop(sender, answer_all(session, status))
        else:
            pytest.fail(f"{len(requests) - len(finished)} requests never finished")
        finished += sender.flush()
    for seen in limits.values():
        shrunk = next(n for n in range(1, len(seen)) if seen[n] < seen[n - 1])
        assert max(seen[shrunk:]) > seen[shrunk], "the limit grew again after shrinking"
    assert sorted(d.message.param("token") or "" for d in finished) == sorted(
        r.message.param("token") or "" for r in requests
    )
    assert all(d.delivered for d in finished)
    sent = Counter(session.calls)
    for request in requests:
        assert sent[request.url] == 1 + refusals[request.url]
    url_of = {request.message.key: request.url for request in requests}
    for delivery in finished:
        assert delivery.attempts == 1 + refusals[url_of[delivery.message.key]]


def test_close_with_requests_queued_abandons_them_and_sends_no_more(
    fake_sessions: list[FakeSession], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="beaconflow.send")
    sender = BulkSender(
        config(concurrency=8, adaptive=True), (KEY,), clock=ManualClock(), sleep=RecordingSleep()
    )
    (session,) = fake_sessions
    sender.submit_many([fake_request("kontagent", n) for n in range(10)])
    in_flight = on_loop(sender, lambda: list(session.in_flight))
    assert len(in_flight) == 1  # the adaptive limit starts at 1: nine wait in the queue
    sender.close()
    assert in_flight[0][1].cancelled()
    assert session.calls == [in_flight[0][0]]
    assert session.closed
    assert sender.take_finished() == []
    assert "closed with 10 unfinished requests abandoned" in caplog.text


def test_the_ledger_hook_runs_while_the_request_holds_its_slot(
    fake_sessions: list[FakeSession],
) -> None:
    held: list[int] = []

    def record(message: Message, ambiguous: int) -> None:
        # the lane's adaptive limit still counts the request as in flight
        held.append(sender._engine._lanes[message.destination].limit.in_flight)  # type: ignore[union-attr]

    clock = ManualClock()
    sender = BulkSender(
        config(concurrency=4, adaptive=True),
        (KEY,),
        clock=clock,
        sleep=RecordingSleep(),
        on_delivered=record,
    )
    with sender:
        (session,) = fake_sessions
        sender.submit_many([fake_request("kontagent", 0), fake_request("kontagent", 1)])
        for _ in range(10):
            clock.now += 1.0
            on_loop(sender, answer_all(session, lambda _: 200))
            if len(held) == 2:
                break
        assert len(sender.flush()) == 2
    assert held == [1, 1]


@pytest.mark.parametrize("where", ["queued", "in flight"])
def test_a_halt_just_after_a_retry_went_back_to_its_lane_finishes_it_once(
    fake_sessions: list[FakeSession], where: str
) -> None:
    """A halt in the turn of the loop in which a retry's wait ended finishes the retry once.

    The retry is back in its lane (``queued``) or a worker has sent it again already (``in
    flight``), but its task's done-callback runs a turn later. A destination declared down
    right then (the pool telling a sender process that another one's breaker tripped)
    finished it twice: cut short as still waiting, and again from the queue or by its
    attempt; the sender pool met that as a KeyError, a sender as "closed with -1 unfinished
    requests abandoned". Every step is the test's: the answers, the end of the wait, and
    where the halt falls.
    """
    finished: list[Delivery] = []
    reason = "destination down: kontagent (elsewhere)"

    def on_finished(deliveries: Sequence[Delivery], tokens: Sequence[object]) -> None:
        finished.extend(deliveries)

    async def turns(count: int = 20) -> None:
        for _ in range(count):
            await asyncio.sleep(0)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        waited = asyncio.Event()  # the retry's wait ends when the test sets it

        async def sleep(seconds: float) -> None:
            await waited.wait()

        retry = RetryPolicy(max_attempts=5, base_delay=0.0, max_delay=0.0)
        cfg = SenderConfig(2, 5.0, retry, {}, adaptive=False, breaker_window=None)
        engine = SendEngine(cfg, (KEY,), on_finished=on_finished, sleep=sleep)
        async with engine:
            (session,) = fake_sessions
            count = 2 if where == "in flight" else 1
            engine.submit([fake_request("kontagent", n) for n in range(count)])
            await turns()
            (first, answer), *others = session.in_flight
            answer.set_result(503)  # request 0 waits to be retried
            await turns()
            assert not finished and len(session.in_flight) == count - 1
            # all in one turn of the loop: the wait ends (request 0 back in its lane), the
            # other request's answer frees a worker that sends request 0 again, and then
            # the destination is down
            waited.set()
            for _, other in others:
                other.set_result(200)
            loop.call_soon(engine.destination_down, "kontagent", reason)
            await turns()
            if where == "in flight":
                assert [url for url, _ in session.in_flight] == [first]
                session.in_flight[0][1].set_result(503)
                await turns()
        tokens = Counter(d.message.param("token") for d in finished)
        assert tokens == Counter(f"kontagent-{n}" for n in range(count)), "each once"
        (zero,) = [d for d in finished if d.message.param("token") == "kontagent-0"]
        assert zero.stop == reason and not zero.delivered

    asyncio.run(run())


# -- the engine through its public interface, as a sender process holds it ----------------


def test_the_engine_hands_back_each_requests_token_beside_its_delivery(server: Collector) -> None:
    finished: list[tuple[int, Delivery]] = []
    recorded: list[object] = []

    def on_finished(deliveries: Sequence[Delivery], tokens: Sequence[object]) -> None:
        finished.extend((int(str(token)), d) for token, d in zip(tokens, deliveries, strict=True))

    async def run() -> SenderStats:
        engine = SendEngine(
            config(),
            (KEY,),
            on_finished=on_finished,
            on_delivered=lambda request, ambiguous: recorded.append(request.token),
            sleep=RecordingSleep(),
        )
        async with engine:
            engine.submit(
                [
                    Request(
                        message(kind, f"tok-{kind}"), kontagent_url(server, kind, f"tok-{kind}"), n
                    )
                    for n, kind in enumerate(("ok", "bad", "ok"))
                ]
            )
            while len(finished) < 3:
                await asyncio.sleep(0.01)
            return engine.counts()

    counts = asyncio.run(run())
    assert sorted((token, d.delivered, d.status) for token, d in finished) == [
        (0, True, 200),
        (1, False, 400),
        (2, True, 200),
    ]
    assert sorted(int(str(t)) for t in recorded) == [0, 2], (
        "on_delivered sees the request, token included"
    )
    assert (counts.sent, counts.delivered, counts.failed) == (3, 2, 1)


def test_bulk_sender_and_pool_client_are_senders() -> None:
    from beaconflow.delivery.sendproc import PoolClient

    # the send step is typed against the protocol; mypy checks these assignments
    senders: list[type[Sender]] = [BulkSender, PoolClient]
    for cls in senders:
        for name in ("submit_many", "take_finished", "flush", "stats", "close"):
            assert callable(getattr(cls, name))


# -- redirects, and a run that stops: the sender halts instead of sending on --------------


def _tokens(sender: BulkSender, requests_: list[Request]) -> dict[str, object]:
    sender.submit_many(requests_)
    deliveries = sender.take_finished() + sender.flush()
    assert len(deliveries) == len(requests_), "every request has exactly one outcome"
    return {d.message.param("token") or "": d for d in deliveries}


def test_a_redirect_is_a_permanent_failure_naming_the_host_only(server: Collector) -> None:
    for kind in ("redirect", "loop"):
        token = f"{kind}-1"
        request = Request(message(kind, token), kontagent_url(server, kind, token))
        with BulkSender(config(), (KEY,), sleep=RecordingSleep()) as sender:
            (delivery,) = _tokens(sender, [request]).values()
        assert not delivery.delivered  # type: ignore[attr-defined]
        assert delivery.status == 302 and delivery.attempts == 1  # type: ignore[attr-defined]
        assert delivery.error == (  # type: ignore[attr-defined]
            f"HTTP 302: redirected to {server.base_url} (redirects are not followed)"
        )
        assert delivery.stop is None  # type: ignore[attr-defined]
        assert server.tries(token) == 1, "a redirect is never retried"
    assert server.counts().get("faulted/login_page", 0) == 0, "the login page is never fetched"


def test_a_destination_that_only_redirects_halts_and_the_rest_is_not_attempted(
    server: Collector,
) -> None:
    redirected = [
        Request(message("redirect", f"r{n}"), kontagent_url(server, "redirect", f"r{n}"))
        for n in range(40)
    ]
    healthy = [
        Request(message("ok", f"k{n}", "kissmetrics"), kissmetrics_url(server, "ok", f"k{n}"))
        for n in range(40)
    ]
    # one request in flight: exactly the window's requests reach the server
    with BulkSender(config(concurrency=1), (KEY,), sleep=RecordingSleep()) as sender:
        results = _tokens(sender, redirected + healthy)
    sent = [t for t in results if t.startswith("r") and server.tries(t)]
    assert len(sent) == REDIRECT_WINDOW
    stops = [results[f"r{n}"].stop for n in range(40)]  # type: ignore[attr-defined]
    assert stops[: REDIRECT_WINDOW - 1] == [None] * (REDIRECT_WINDOW - 1)
    assert len(set(stops[REDIRECT_WINDOW - 1 :])) == 1, "the window's last declares it"
    reason = stops[-1]
    assert reason == (
        f"kontagent is misconfigured: its last 10 answers were redirects (HTTP 302: "
        f"redirected to {server.base_url}): check its URL"
    )
    assert reason.startswith("kontagent is misconfigured: its last 10 answers were redirects")
    not_attempted = [results[t] for t in results if t.startswith("r") and not server.tries(t)]
    assert len(not_attempted) == 40 - REDIRECT_WINDOW
    assert all(d.attempts == 0 and d.error == f"not attempted: {reason}" for d in not_attempted)  # type: ignore[attr-defined]
    assert all(results[f"k{n}"].delivered for n in range(40)), "the other destination goes on"  # type: ignore[attr-defined]


def test_an_answer_between_redirects_resets_the_window(server: Collector) -> None:
    tokens = [f"mix{n}" for n in range(3 * REDIRECT_WINDOW)]
    kinds = ["ok" if n % REDIRECT_WINDOW == 5 else "redirect" for n in range(len(tokens))]
    requests_ = [
        Request(message(k, t), kontagent_url(server, k, t))
        for k, t in zip(kinds, tokens, strict=True)
    ]
    with BulkSender(config(concurrency=1), (KEY,), sleep=RecordingSleep()) as sender:
        results = _tokens(sender, requests_)
    assert [server.tries(t) for t in tokens] == [1] * len(tokens), "a stray redirect stops nothing"
    assert all(d.stop is None for d in results.values())  # type: ignore[attr-defined]


def test_server_errors_between_redirects_do_not_hide_a_misconfigured_destination(
    server: Collector,
) -> None:
    kinds = ["redirect"] * 5 + ["flaky"] + ["redirect"] * 10
    tokens = [f"se{n}" for n in range(len(kinds))]
    requests_ = [
        Request(message(k, t), kontagent_url(server, k, t, n=99))
        for k, t in zip(kinds, tokens, strict=True)
    ]
    with BulkSender(config(concurrency=1), (KEY,), sleep=RecordingSleep()) as sender:
        results = _tokens(sender, requests_)
    assert results["se5"].status == 503  # type: ignore[attr-defined]
    assert results["se10"].stop is not None, "the 10th redirect declares it"  # type: ignore[attr-defined]
    assert all(server.tries(t) == 0 for t in tokens[11:])


def test_redirects_after_deliveries_stop_a_destination_only_when_they_last(
    server: Collector,
) -> None:
    clock = ManualClock()

    def batch(prefix: str, kinds: list[str]) -> dict[str, object]:
        requests_ = [
            Request(message(k, f"{prefix}{n}"), kontagent_url(server, k, f"{prefix}{n}"))
            for n, k in enumerate(kinds)
        ]
        return _tokens(sender, requests_)

    with BulkSender(config(concurrency=1), (KEY,), sleep=RecordingSleep(), clock=clock) as sender:
        first = batch("a", ["ok"] + ["redirect"] * (2 * REDIRECT_WINDOW))
        # a few users whose requests redirect, in a row, stop nothing: it delivered before
        assert all(d.stop is None for d in first.values())  # type: ignore[attr-defined]
        clock.now += REDIRECT_SECONDS
        second = batch("b", ["redirect"] * 5)
    # nothing but redirects for REDIRECT_SECONDS: a portal appeared, the destination stops
    assert second["b0"].stop is not None  # type: ignore[attr-defined]
    assert [server.tries(f"b{n}") for n in range(5)] == [1, 0, 0, 0, 0]


def test_a_delivery_the_ledger_cannot_record_halts_the_sender(server: Collector) -> None:
    stop = RunStop()
    recorded: list[str] = []

    def record(delivered: Message, ambiguous: int) -> None:
        if recorded:
            raise LedgerError("ledger not writable: /var/lib/ledger: No space left on device")
        recorded.append(delivered.param("token") or "")

    requests_ = [
        Request(message("ok", f"l{n}"), kontagent_url(server, "ok", f"l{n}")) for n in range(30)
    ]
    with BulkSender(
        config(concurrency=1), (KEY,), sleep=RecordingSleep(), on_delivered=record, stop=stop
    ) as sender:
        results = _tokens(sender, requests_)
    reason = "ledger not writable: /var/lib/ledger: No space left on device"
    assert stop.reason == reason
    delivered = [d for d in results.values() if d.delivered]  # type: ignore[attr-defined]
    assert len(delivered) == 2, "one recorded, one delivered but unrecorded, then no more"
    assert [d.stop for d in delivered].count(reason) == 1  # type: ignore[attr-defined]
    cut = [d for d in results.values() if not d.delivered]  # type: ignore[attr-defined]
    assert len(cut) == 28
    assert all(d.error == f"not attempted: {reason}" and d.attempts == 0 for d in cut)  # type: ignore[attr-defined]
    assert sum(server.tries(f"l{n}") for n in range(30)) == 2


def test_a_tripped_run_halts_a_sender_that_waits_to_retry(server: Collector) -> None:
    stop = RunStop()
    gate = threading.Event()

    class SlowSleep(RecordingSleep):
        async def __call__(self, seconds: float) -> None:
            await super().__call__(seconds)
            gate.set()
            await asyncio.sleep(3600)  # a backoff that only the halt ends

    request = Request(message("flaky", "f-99"), kontagent_url(server, "flaky", "f-99", n=99))
    with BulkSender(config(), (KEY,), sleep=SlowSleep(), stop=stop) as sender:
        sender.submit(request)
        assert gate.wait(10), "the first attempt failed and a retry waits"
        stop.trip("dead letter not writable: /out/dead.jsonl: No space left on device")
        (delivery,) = sender.flush()
    assert not delivery.delivered and delivery.attempts == 1
    assert delivery.error.startswith("not retried: dead letter not writable")  # type: ignore[union-attr]
    assert server.tries("f-99") == 1


def test_no_log_line_per_unrecorded_delivery(
    server: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def record(_: Message, ambiguous: int) -> None:
        raise LedgerError("ledger not writable: /l: Read-only file system")

    requests_ = [
        Request(message("ok", f"q{n}"), kontagent_url(server, "ok", f"q{n}")) for n in range(20)
    ]
    stop = RunStop()
    with BulkSender(config(concurrency=4), (KEY,), on_delivered=record, stop=stop) as sender:
        _tokens(sender, requests_)
    assert caplog.text.count("ledger not writable") == 1, caplog.text


# -- a destination down (the circuit breaker) and the run's deadline ----------------------


class TickingClock:
    """Monotonic seconds that move one second at every reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def breaker_config(window: float | None, **kwargs: Any) -> SenderConfig:
    return SenderConfig(1, 5.0, NO_WAIT, {}, adaptive=False, breaker_window=window, **kwargs)


def test_a_destination_that_only_fails_for_the_window_is_down_and_the_other_goes_on(
    server: Collector,
) -> None:
    stop = RunStop()
    failing = [
        Request(message("flaky", f"d{n}"), kontagent_url(server, "flaky", f"d{n}", n=99))
        for n in range(20)
    ]
    healthy = [
        Request(message("ok", f"h{n}", "kissmetrics"), kissmetrics_url(server, "ok", f"h{n}"))
        for n in range(20)
    ]
    with BulkSender(
        breaker_config(10.0), (KEY,), sleep=RecordingSleep(), clock=TickingClock(), stop=stop
    ) as sender:
        results = _tokens(sender, failing + healthy)
    reason = "destination down: kontagent (only timeouts, connection errors and 5xx for 10s)"
    assert stop.down == {"kontagent": reason} and stop.reason is None
    down = [results[f"d{n}"] for n in range(20)]
    assert not any(d.delivered for d in down)  # type: ignore[attr-defined]
    declared = [d for d in down if d.error.startswith("HTTP 503")]  # type: ignore[attr-defined]
    assert [d.stop for d in declared] == [reason], "the answer that declared it says so"  # type: ignore[attr-defined]
    assert declared[0].error in (f"HTTP 503; not retried: {reason}", "HTTP 503")  # type: ignore[attr-defined]
    cut = [d for d in down if d.attempts == 0]  # type: ignore[attr-defined]
    assert cut, "some were never sent"
    assert all(d.error == f"not attempted: {reason}" and d.stop == reason for d in cut)  # type: ignore[attr-defined]
    waiting = [d for d in down if d not in declared and d.attempts]  # type: ignore[attr-defined]
    assert all(d.error == f"not retried: {reason}" for d in waiting)  # type: ignore[attr-defined]
    assert sum(1 for n in range(20) if server.tries(f"d{n}") == 0) == len(cut)
    assert all(results[f"h{n}"].delivered for n in range(20)), "the other destination goes on"  # type: ignore[attr-defined]


def test_without_a_breaker_a_failing_destination_is_tried_to_the_end(server: Collector) -> None:
    failing = [
        Request(message("flaky", f"n{n}"), kontagent_url(server, "flaky", f"n{n}", n=99))
        for n in range(5)
    ]
    with BulkSender(
        breaker_config(None), (KEY,), sleep=RecordingSleep(), clock=TickingClock()
    ) as sender:
        results = _tokens(sender, failing)
    assert all(d.stop is None and d.attempts == 4 for d in results.values())  # type: ignore[attr-defined]


def test_a_destination_declared_down_by_another_sender_halts_here_too(server: Collector) -> None:
    stop = RunStop()
    server.close_gate()
    requests_ = [
        Request(message("gated", f"g{n}"), kontagent_url(server, "gated", f"g{n}"))
        for n in range(4)
    ]
    try:
        with BulkSender(
            SenderConfig(2, 5.0, NO_WAIT, {}, adaptive=False), (KEY,), stop=stop
        ) as sender:
            sender.submit_many(requests_)
            _wait_for(lambda: server.in_flight("gated") == 2, "two requests in flight")
            stop.destination_down("kontagent", "destination down: kontagent (elsewhere)")
            cut = _wait_for_finished(sender, 2)
            server.open_gate()
            rest = sender.flush()
    finally:
        server.open_gate()
    assert all(d.error == "not attempted: destination down: kontagent (elsewhere)" for d in cut)
    assert all(d.delivered for d in rest), "what was in flight finishes"
    assert sum(server.tries(f"g{n}") for n in range(4)) == 2


def test_a_deadline_already_passed_sends_nothing(server: Collector) -> None:
    requests_ = [
        Request(message("ok", f"p{n}"), kontagent_url(server, "ok", f"p{n}")) for n in range(6)
    ]
    cfg = breaker_config(60.0, deadline=1_000.0)
    with BulkSender(cfg, (KEY,), wall_clock=lambda: 1_000.5) as sender:
        results = _tokens(sender, requests_)
    assert all(
        d.error == "not attempted: deadline" and d.stop == "deadline" and d.attempts == 0  # type: ignore[attr-defined]
        for d in results.values()
    )
    assert sum(server.tries(f"p{n}") for n in range(6)) == 0


def test_at_the_deadline_no_new_request_starts_and_what_is_in_flight_finishes(
    server: Collector,
) -> None:
    server.close_gate()
    requests_ = [
        Request(message("gated", f"t{n}"), kontagent_url(server, "gated", f"t{n}"))
        for n in range(4)
    ]
    # the deadline is a little ahead on the injected wall clock; the engine's timer waits
    # for it on the loop's own clock
    cfg = SenderConfig(2, 5.0, NO_WAIT, {}, adaptive=False, deadline=1_000.05)
    try:
        with BulkSender(cfg, (KEY,), wall_clock=lambda: 1_000.0) as sender:
            sender.submit_many(requests_)
            cut = _wait_for_finished(sender, 2)  # the two queued, at the deadline
            server.open_gate()
            rest = sender.flush()
    finally:
        server.open_gate()
    assert all(d.error == "not attempted: deadline" and d.attempts == 0 for d in cut)
    assert all(d.delivered and d.stop is None for d in rest), "in flight: they finish"
    assert sum(server.tries(f"t{n}") for n in range(4)) == 2


def test_a_request_waiting_for_the_rate_cap_when_the_run_stops_never_starts(
    server: Collector,
) -> None:
    stop = RunStop()

    class StoppingSleep(RecordingSleep):
        async def __call__(self, seconds: float) -> None:
            await super().__call__(seconds)
            stop.trip("deadline")
            for _ in range(3):  # the halt reaches the loop through call_soon_threadsafe
                await asyncio.sleep(0)

    capped = RateLimiter(1.0, clock=lambda: 50.0)  # the second request waits a second
    requests_ = [
        Request(message("ok", f"c{n}"), kontagent_url(server, "ok", f"c{n}")) for n in range(2)
    ]
    with BulkSender(
        config(concurrency=1),
        (KEY,),
        sleep=StoppingSleep(),
        limiters={"kontagent": capped},
        stop=stop,
    ) as sender:
        results = _tokens(sender, requests_)
    assert results["c0"].delivered  # type: ignore[attr-defined]
    assert results["c1"].error == "not attempted: deadline"  # type: ignore[attr-defined]
    assert server.tries("c1") == 0


def test_progress_lines_say_what_is_down_and_the_time_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="beaconflow.send")
    wall = [10_000.0 - 5 * 3600 - 59 * 60]
    progress = ProgressLog(1.0, 0.0, deadline=10_000.0, wall_clock=lambda: wall[0])
    progress.line(2.0, 10, 1, 0)
    progress.line(4.0, 20, 1, 3, ("kontagent",))
    wall[0] = 10_000.0
    progress.line(6.0, 20, 1, 3, ("kontagent", "kissmetrics"))
    plain = ProgressLog(1.0, 0.0)
    plain.line(2.0, 4, 0, 0)
    assert [r.getMessage() for r in caplog.records] == [
        "sent 10 (5.0/s), retries 1, failed 0; deadline in 5h59m",
        "sent 20 (5.0/s), retries 1, failed 3; down: kontagent; deadline in 5h59m",
        "sent 20 (0.0/s), retries 1, failed 3; down: kissmetrics, kontagent; "
        "deadline passed: no new request starts",
        "sent 4 (2.0/s), retries 0, failed 0",
    ]


def _wait_for(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _wait_for_finished(sender: BulkSender, count: int) -> list[Delivery]:
    """The first ``count`` deliveries to finish (polled: take_finished never blocks)."""
    finished: list[Delivery] = []

    def enough() -> bool:
        finished.extend(sender.take_finished())
        return len(finished) >= count

    _wait_for(enough, f"{count} deliveries")
    return finished


def _lease(directory: Path, heartbeat: float | None) -> Lease:
    """A run's lease on one lock; its lock file written with ``heartbeat``, or none."""
    holder = Holder("here", 4242, heartbeat or 0.0, heartbeat or 0.0)
    if heartbeat is not None:
        Path(lock_path(str(directory), "aaaaaaaaaaaa")).write_bytes(holder.to_bytes())
    return Lease(str(directory), ("aaaaaaaaaaaa",), holder, stale_after=100)


def test_a_sender_whose_lease_holds_sends(server: Collector, tmp_path: Path) -> None:
    lease = _lease(tmp_path, time.time())
    requests_ = [
        Request(message("ok", f"h{n}"), kontagent_url(server, "ok", f"h{n}")) for n in range(5)
    ]
    with BulkSender(replace(config(), lease=lease), (KEY,), sleep=RecordingSleep()) as sender:
        results = send_all(sender, requests_)
    assert all(d.delivered for d in results.values())
    assert [server.tries(f"h{n}") for n in range(5)] == [1] * 5


def test_a_sender_whose_lock_was_taken_over_sends_nothing_and_stops_the_run(
    server: Collector, tmp_path: Path
) -> None:
    """A run frozen while another took its lock over: its sender wakes before its heartbeat."""
    stop = RunStop()
    lease = _lease(tmp_path, None)  # the lock file is gone: the other run had it and let go
    requests_ = [
        Request(message("ok", f"t{n}"), kontagent_url(server, "ok", f"t{n}")) for n in range(9)
    ]
    with BulkSender(
        replace(config(concurrency=3), lease=lease), (KEY,), sleep=RecordingSleep(), stop=stop
    ) as sender:
        results = send_all(sender, requests_)
    reason = "the ledger's lock of endpoint aaaaaaaaaaaa was taken over by another run"
    assert stop.reason == reason
    assert all(d.error == f"not attempted: {reason}" and d.attempts == 0 for d in results.values())
    assert all(d.stop == reason for d in results.values())
    assert sum(server.tries(f"t{n}") for n in range(9)) == 0, "not one request went out"


@pytest.mark.parametrize("taken_over", [False, True])
def test_a_sender_checks_a_remote_ledgers_lease_object_through_its_store(
    server: Collector, monkeypatch: pytest.MonkeyPatch, taken_over: bool
) -> None:
    """A gs:// or s3:// ledger: the lease object, read through a store the sender opens."""
    from beaconflow.delivery import lease_store
    from beaconflow.delivery.ledger_lease import lease_name
    from beaconflow.delivery.ledger_lock import iso
    from tests.fakes.lease_store import MemoryLeaseStore

    store = MemoryLeaseStore()
    monkeypatch.setitem(lease_store.FACTORIES, "gs", lambda bucket, prefix, options: store)
    now = time.time()
    ours = Holder("here", 4242, now, now, "0123456789abcdef")
    other = Holder("here", 4242, now, now, "fedcba9876543210")  # another run, same host and pid
    store.create(lease_name("a" * 12), (other if taken_over else ours).to_bytes())
    lease = Lease("gs://b/ledger", ("a" * 12,), ours, stale_after=100, store=StoreOptions())
    stop = RunStop()
    requests_ = [
        Request(message("ok", f"r{n}"), kontagent_url(server, "ok", f"r{n}")) for n in range(9)
    ]
    with BulkSender(replace(config(concurrency=3), lease=lease), (KEY,), stop=stop) as sender:
        results = send_all(sender, requests_)
    assert "read" in store.calls
    if not taken_over:
        assert stop.reason is None
        assert all(d.delivered for d in results.values())
        return
    reason = (
        f"the ledger's lock of endpoint {'a' * 12} was taken over by host here pid 4242 "
        f"since {iso(now)}"
    )
    assert stop.reason == reason
    assert all(d.error == f"not attempted: {reason}" for d in results.values())
    assert sum(server.tries(f"r{n}") for n in range(9)) == 0, "not one request went out"
