"""Connections that come and go: the sender against the sandbox collector's connection faults.

Each test starts a real :class:`~beaconflow.sandbox.collector.Collector` on loopback and
counts what it saw: the connections that carried requests, the messages it accepted, the
connections it closed. The sender reuses keep-alive connections (at most one per request in
flight); a server that closes them gracefully (``Connection: close``, nginx's
``keepalive_requests``), when idle, or used up under the next request loses nothing and
counts no failure. Names that do not resolve and refused ports never reached the service
and say so. ``localhost`` and ``[::1]`` URLs work. Backoff never waits (a recording
sleep), and no assertion is about time.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from beaconflow.delivery.ambiguity import NEVER_REACHED
from beaconflow.delivery.redact import Redactor
from beaconflow.delivery.retry import RetryPolicy
from beaconflow.delivery.sender import BulkSender, Delivery, Request, SenderConfig, SenderStats
from beaconflow.model.message import Endpoint, Message
from beaconflow.model.render import render_url
from beaconflow.sandbox.collector import Collector, Faults
from tests.conftest import needs_ipv6
from tests.delivery.test_sender import RecordingSleep

KEY = "km-key-0123456789"
#: Three tries, no backoff.
RETRY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, retry_after_cap=0.0)


def _message(token: str) -> Message:
    return Message("kissmetrics", "e", (("_p", token), ("_n", "Signed Up")))


def _requests(base_url: str, count: int, prefix: str = "user") -> list[Request]:
    return [
        Request(_message(f"{prefix}-{n}"), f"{base_url}/e?_k={KEY}&_p={prefix}-{n}&_n=Signed+Up")
        for n in range(count)
    ]


def _send(
    requests: list[Request], concurrency: int, *, adaptive: bool = False
) -> tuple[list[Delivery], SenderStats, RecordingSleep]:
    config = SenderConfig(concurrency, 5.0, RETRY, {}, progress_interval=3600, adaptive=adaptive)
    sleep = RecordingSleep()
    with BulkSender(config, (KEY,), sleep=sleep) as sender:
        sender.submit_many(requests)
        deliveries = sender.take_finished() + sender.flush()
        stats = sender.stats()
    return deliveries, stats, sleep


def _accepted_once(collector: Collector, requests: list[Request]) -> bool:
    """Every message accepted exactly once."""
    users = Counter(record.param_map()["_p"] for record in collector.accepted())
    return users == Counter(request.message.param("_p") for request in requests)


@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed", "adaptive"])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_keep_alive_connections_are_reused_across_messages(
    concurrency: int, adaptive: bool
) -> None:
    with Collector() as collector:
        requests = _requests(collector.base_url, 200)
        deliveries, stats, _ = _send(requests, concurrency, adaptive=adaptive)
        connections = collector.connections()
        assert _accepted_once(collector, requests)
    assert all(d.delivered and d.attempts == 1 for d in deliveries)
    # 200 messages over at most `concurrency` connections: each carried many
    assert 1 <= connections <= concurrency
    assert stats.reconnects == 0


def test_a_graceful_close_after_n_answers_is_invisible() -> None:
    """``Connection: close`` on a connection's 5th answer: a new connection, nothing else."""
    with Collector(faults=Faults(keepalive_requests=5)) as collector:
        requests = _requests(collector.base_url, 50)
        deliveries, stats, sleep = _send(requests, 1)
        connections = collector.connections()
        assert _accepted_once(collector, requests)
    assert all(d.delivered and (d.attempts, d.ambiguous) == (1, 0) for d in deliveries)
    assert connections == 10
    assert (stats.reconnects, stats.retries, stats.failed, sleep.calls) == (0, 0, 0, [])


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_used_up_connection_closed_under_a_request_is_reconnected_at_once(
    concurrency: int,
) -> None:
    """Closed unannounced on its 6th request: sent again on a new connection, no failure."""
    with Collector(faults=Faults(close_every=5)) as collector:
        requests = _requests(collector.base_url, 60)
        deliveries, stats, sleep = _send(requests, concurrency)
        closed = collector.counts().get("closed/used_up", 0)
        assert _accepted_once(collector, requests)
    assert all(d.delivered for d in deliveries) and stats.failed == 0
    # each closed request is ambiguous (the server read it) and was sent again
    assert closed > 0 and sum(d.ambiguous for d in deliveries) == closed
    assert all(d.ambiguous_resent == (d.ambiguous > 0) for d in deliveries)
    if concurrency == 1:
        # the next connection is always a new one: every close was a free reconnect, with
        # no attempt, no retry and no backoff. (With more in flight, a message could in
        # principle meet more used-up pooled connections in a row than it gets for free.)
        assert stats.reconnects == closed
        assert all(d.attempts == 1 for d in deliveries)
        assert (stats.retries, sleep.calls) == (0, [])
        assert dict(stats.outcomes) == {"200": 60}


def test_a_connection_closed_when_idle_is_replaced_without_a_failure() -> None:
    """The server closes an idle connection; the next message goes on a new one."""
    with Collector(faults=Faults(idle_timeout=0.05)) as collector:
        config = SenderConfig(1, 5.0, RETRY, {}, progress_interval=3600, adaptive=False)
        sleep = RecordingSleep()
        with BulkSender(config, (KEY,), sleep=sleep) as sender:
            first, second = _requests(collector.base_url, 2)
            sender.submit(first)
            deliveries = sender.flush()
            _wait_for(lambda: collector.counts().get("closed/idle", 0) == 1)
            sender.submit(second)
            deliveries += sender.flush()
            stats = sender.stats()
        connections = collector.connections()
        assert _accepted_once(collector, [first, second])
    assert all(d.delivered and d.attempts == 1 for d in deliveries)
    # usually the client saw the close before it reused the connection; if the close crossed
    # the request, that was a free reconnect: either way no failure and no backoff
    assert connections == 2
    assert (stats.retries, stats.failed, sleep.calls) == (0, 0, [])


def _wait_for(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (the collector's own idle timer closes the connection).

    Not a timed assertion: the bound only keeps a broken timer from hanging the suite.
    """
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    pytest.fail("the collector never closed the idle connection")


def test_a_refused_port_never_reached_the_service(refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}"
    (delivery,), stats, sleep = _send(_requests(url, 1), 1)
    assert (delivery.delivered, delivery.attempts, delivery.ambiguous) == (False, 3, 0)
    assert delivery.error == f"{NEVER_REACHED}: connection refused by 127.0.0.1:{refused_port}"
    assert len(sleep.calls) == 2 and stats.reconnects == 0


def test_a_name_that_does_not_resolve_never_reached_the_service() -> None:
    # .invalid never resolves (RFC 6761); this machine's resolver must say so, not hang
    try:
        socket.getaddrinfo("nosuch.invalid", 80)
    except socket.gaierror:
        pass
    else:  # pragma: no cover - a resolver that answers for .invalid
        pytest.fail("the resolver answers for nosuch.invalid")
    (delivery,), _, sleep = _send(_requests("http://nosuch.invalid", 1), 1)
    assert (delivery.delivered, delivery.attempts, delivery.ambiguous) == (False, 3, 0)
    assert delivery.error is not None
    assert delivery.error.startswith(f"{NEVER_REACHED}: could not resolve host nosuch.invalid")
    assert len(sleep.calls) == 2


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound and closed again: nobody listens there, connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port


@needs_ipv6
def test_an_ipv6_loopback_url_works() -> None:
    with Collector(host="::1") as collector:
        assert collector.base_url.startswith("http://[::1]:")
        requests = _requests(collector.base_url, 10)
        deliveries, _, _ = _send(requests, 2)
        assert _accepted_once(collector, requests)
    assert all(d.delivered for d in deliveries)


@needs_ipv6
def test_a_refused_ipv6_port_names_its_address_in_brackets() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    (delivery,), _, _ = _send(_requests(f"http://[::1]:{port}", 1), 1)
    assert delivery.error == f"{NEVER_REACHED}: connection refused by [::1]:{port}"


def test_a_localhost_url_works() -> None:
    with Collector() as collector:
        port = collector.base_url.rsplit(":", 1)[1]
        requests = _requests(f"http://localhost:{port}", 10)
        deliveries, _, _ = _send(requests, 2)
        assert _accepted_once(collector, requests)
    assert all(d.delivered for d in deliveries)


@pytest.mark.parametrize("base_url", ["http://[::1]:8099", "http://localhost:8099"])
def test_rendering_and_redaction_keep_the_host_as_written(base_url: str) -> None:
    """An IPv6 address keeps its brackets in the request URL and in every redacted text."""
    endpoints = (
        Endpoint("kissmetrics", base_url, KEY),
        Endpoint("kontagent", base_url + "/", KEY, "kt-secret-0123456789"),
    )
    kontagent = Message("kontagent", "evt", (("s", "42"), ("n", "level_up")))
    for endpoint, message in zip(endpoints, (_message("u-1"), kontagent), strict=True):
        url = render_url(message, endpoint, now=1_800_000_000)
        assert url.startswith(
            base_url + ("/e?" if endpoint.destination == "kissmetrics" else "/api/v1/")
        )
        redacted = Redactor.of(endpoint.secrets())(f"failed: {url}")
        assert redacted.startswith(f"failed: {base_url}/") and KEY not in redacted


def test_a_server_that_closes_after_every_answer_gets_one_connection_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every connection closed unannounced under its 2nd request (tinyproxy on http://).

    After ONE_SHOT_CLOSES such closes, half or more of the reused attempts, the sender stops
    reusing that destination's connections: no more ambiguous resends.
    """
    from beaconflow.delivery.sender import ONE_SHOT_CLOSES

    with Collector(faults=Faults(close_every=1)) as collector:
        requests = _requests(collector.base_url, 100)
        with caplog.at_level("WARNING", logger="beaconflow"):
            deliveries, stats, sleep = _send(requests, 1)
        closed = collector.counts().get("closed/used_up", 0)
        connections = collector.connections()
        assert _accepted_once(collector, requests)
    assert all(d.delivered and d.attempts == 1 for d in deliveries)
    assert closed == stats.reconnects == ONE_SHOT_CLOSES
    assert sum(d.ambiguous for d in deliveries) == ONE_SHOT_CLOSES
    assert connections == 100  # one per answer (a closed one had carried an answer first)
    assert (stats.retries, stats.failed, sleep.calls) == (0, 0, [])
    (warning,) = [r.getMessage() for r in caplog.records if "after each answer" in r.getMessage()]
    assert warning.startswith("kissmetrics: its server closes connections after each answer")
    assert "(4 of 4 connections were closed under their second request)" in warning
