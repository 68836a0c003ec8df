"""Ambiguous outcomes (beaconflow.delivery.ambiguity) in the sender, against real local servers.

Each server is a raw socket server on loopback (tests/hostile_servers.py) that records every
request it read: a server that logs a request and never answers, one that drips its answer,
one that closes a kept-alive connection on reading its second request, and a closed port.
What each test asserts is what the server saw and what the sender made of it: a request
that went out and got no answer is ambiguous (retried unless the policy says not, and
counted), one that never left is not, and an answer whose status came is the status's.
Backoff never waits (a recording sleep); no assertion is about time. The classification
itself is tested without a network in tests/delivery/test_retry.py.

Since issue 19: a request that fails on a *reused* connection the server had closed is a
free reconnect (sent again at once, no attempt, still ambiguous), bounded per message; a
connection that fails on first use is not one; and the reasons of requests that never left
say so (``never reached the service: ...``), tested at the end as tables.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import aiohttp
import pytest

from beaconflow.delivery.ambiguity import (
    MAY_HAVE_BEEN_RECEIVED,
    NEVER_REACHED,
    NOT_RETRIED,
    AttemptMark,
    MarkingConnector,
    mark_attempts,
    never_reached,
    stale_connection,
)
from beaconflow.delivery.retry import RetryPolicy, classify
from beaconflow.delivery.sender import (
    FREE_RECONNECTS,
    BulkSender,
    Delivery,
    Request,
    SenderConfig,
    SenderStats,
)
from beaconflow.model.message import Message
from beaconflow.sandbox.collector import unused_port
from tests.conftest import KEY
from tests.delivery.test_sender import RecordingSleep, message
from tests.hostile_servers import (
    OK,
    Drip,
    FirstRequestCloser,
    KeepAliveCloser,
    LogThenHang,
    RawServer,
)

#: Three tries, no backoff.
RETRY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0, retry_after_cap=0.0)
#: The same, sending no ambiguous attempt again (--no-retry-ambiguous).
ONCE = RetryPolicy(
    max_attempts=3, base_delay=0.0, max_delay=0.0, retry_after_cap=0.0, retry_ambiguous=False
)


def _config(retry: RetryPolicy, timeout: float = 0.3, concurrency: int = 4) -> SenderConfig:
    return SenderConfig(concurrency, timeout, retry, {}, adaptive=False, breaker_window=None)


def _target(token: str) -> str:
    return f"/api/v1/{KEY}/evt/?token={token}"


def _request(base_url: str, token: str) -> Request:
    return Request(message("evt", token), base_url + _target(token))


def _send(
    retry: RetryPolicy,
    requests: list[Request],
    *,
    timeout: float = 0.3,
    concurrency: int = 4,
    recorded: list[tuple[str, int]] | None = None,
) -> dict[str, Delivery]:
    def record(delivered: Message, ambiguous: int) -> None:
        if recorded is not None:
            recorded.append((delivered.param("token") or "", ambiguous))

    with BulkSender(
        _config(retry, timeout, concurrency), (KEY,), sleep=RecordingSleep(), on_delivered=record
    ) as sender:
        sender.submit_many(requests)
        deliveries = sender.take_finished() + sender.flush()
    assert len(deliveries) == len(requests)
    return {d.message.param("token") or "": d for d in deliveries}


# -- (a) log then hang ------------------------------------------------------------------


def test_a_server_that_logs_and_hangs_sees_each_message_max_attempts_times() -> None:
    with LogThenHang() as server:
        tokens = [f"hang-{n}" for n in range(6)]
        results = _send(RETRY, [_request(server.base_url, t) for t in tokens])
        seen = server.seen()
    assert seen == {_target(t): 3 for t in tokens}, "retried blindly: three counts each"
    for delivery in results.values():
        assert not delivery.delivered and delivery.status is None
        assert (delivery.attempts, delivery.ambiguous, delivery.ambiguous_resent) == (3, 3, True)
        assert delivery.error == f"TimeoutError: no response within 0.3 s; {MAY_HAVE_BEEN_RECEIVED}"


def test_with_ambiguous_retries_off_a_hanging_server_sees_each_message_once() -> None:
    with LogThenHang() as server:
        tokens = [f"once-{n}" for n in range(6)]
        results = _send(ONCE, [_request(server.base_url, t) for t in tokens])
        seen = server.seen()
    assert seen == {_target(t): 1 for t in tokens}
    for delivery in results.values():
        assert not delivery.delivered
        assert (delivery.attempts, delivery.ambiguous, delivery.ambiguous_resent) == (1, 1, False)
        assert delivery.error == (
            f"TimeoutError: no response within 0.3 s; {MAY_HAVE_BEEN_RECEIVED}; {NOT_RETRIED}"
        )


# -- (b) a request that never left --------------------------------------------------------


@pytest.mark.parametrize("retry", [RETRY, ONCE], ids=["default", "no-retry-ambiguous"])
def test_a_refused_connection_is_retried_and_never_ambiguous(retry: RetryPolicy) -> None:
    port = unused_port()
    url = f"http://127.0.0.1:{port}{_target('refused')}"
    (delivery,) = _send(retry, [Request(message("evt", "refused"), url)]).values()
    assert not delivery.delivered
    assert (delivery.attempts, delivery.ambiguous, delivery.ambiguous_resent) == (3, 0, False)
    assert delivery.error == f"{NEVER_REACHED}: connection refused by 127.0.0.1:{port}"
    assert MAY_HAVE_BEEN_RECEIVED not in delivery.error


class _HangingResolver(aiohttp.abc.AbstractResolver):
    """A name lookup that never ends: the request cannot have left."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        pass


def test_a_timeout_before_the_connection_is_not_marked_sent() -> None:
    """The attempt's total timeout while connecting: the same TimeoutError, not ambiguous."""

    async def attempt() -> tuple[BaseException | None, bool]:
        mark = mark_attempts()
        connector = MarkingConnector(resolver=_HangingResolver())
        timeout = aiohttp.ClientTimeout(total=0.2)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            try:
                async with session.get("http://hangs.invalid/e"):
                    pass
            except (aiohttp.ClientError, TimeoutError) as error:
                return error, mark.sent
        return None, mark.sent

    error, sent = asyncio.run(attempt())
    assert isinstance(error, TimeoutError) and not sent
    assert not classify(None, error, sent=sent).ambiguous


def test_a_timeout_after_the_request_went_out_is_marked_sent() -> None:
    async def attempt(base_url: str) -> tuple[BaseException | None, bool]:
        mark = mark_attempts()
        timeout = aiohttp.ClientTimeout(total=0.2)
        async with aiohttp.ClientSession(connector=MarkingConnector(), timeout=timeout) as session:
            try:
                async with session.get(base_url + "/e"):
                    pass
            except (aiohttp.ClientError, TimeoutError) as error:
                return error, mark.sent
        return None, mark.sent

    with LogThenHang() as server:
        error, sent = asyncio.run(attempt(server.base_url))
        assert server.targets() == ["/e"]
    assert isinstance(error, TimeoutError) and sent
    assert classify(None, error, sent=sent).ambiguous


# -- (c) slow drip --------------------------------------------------------------------------


def test_a_2xx_whose_body_drips_slower_than_the_timeout_is_delivered_once() -> None:
    """The status came: the service accepted the request, however its body ends."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n"
    recorded: list[tuple[str, int]] = []
    with Drip(head) as server:
        results = _send(RETRY, [_request(server.base_url, "drip")], recorded=recorded)
        seen = server.seen()
    delivery = results["drip"]
    assert (delivery.delivered, delivery.status, delivery.attempts) == (True, 200, 1)
    assert (delivery.ambiguous, delivery.ambiguous_resent) == (0, False)
    assert seen == {_target("drip"): 1}
    assert recorded == [("drip", 0)]


def test_a_5xx_whose_body_drips_is_retried_as_a_5xx_not_as_ambiguous() -> None:
    head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 64\r\n\r\n"
    with Drip(head) as server:
        results = _send(ONCE, [_request(server.base_url, "drip-503")])
        seen = server.seen()
    delivery = results["drip-503"]
    assert (delivery.delivered, delivery.status, delivery.attempts) == (False, 503, 3)
    assert (delivery.ambiguous, delivery.ambiguous_resent) == (0, False)
    assert seen == {_target("drip-503"): 3}


def test_a_status_line_that_drips_slower_than_the_timeout_is_ambiguous() -> None:
    """No status came: the request went out and got no answer."""
    with Drip(b"HTTP/1.1 2", tail=b"00 OK\r\n") as server:
        results = _send(ONCE, [_request(server.base_url, "drip-status")])
        seen = server.seen()
    delivery = results["drip-status"]
    assert (delivery.delivered, delivery.status, delivery.attempts) == (False, None, 1)
    assert (delivery.ambiguous, delivery.ambiguous_resent) == (1, False)
    assert delivery.error is not None and delivery.error.endswith(NOT_RETRIED)
    assert seen == {_target("drip-status"): 1}


# -- (d) a kept-alive connection closed before the answer -----------------------------------


def test_a_keep_alive_connection_closed_before_the_answer_is_ambiguous() -> None:
    """The second request on a connection is read and never answered: ambiguous, resent."""
    recorded: list[tuple[str, int]] = []
    with KeepAliveCloser() as server:
        requests = [_request(server.base_url, t) for t in ("ka-1", "ka-2")]
        # one request at a time, so that the second goes out on the first's connection
        results = _send(RETRY, requests, concurrency=1, recorded=recorded)
        seen, unanswered = server.seen(), server.unanswered
    first, second = results["ka-1"], results["ka-2"]
    assert (first.delivered, first.attempts, first.ambiguous) == (True, 1, 0)
    # resent at once on a new connection, where it is the first request: a free reconnect,
    # no attempt of its own, but ambiguous: delivered, twice received
    assert (second.delivered, second.attempts, second.ambiguous) == (True, 1, 1)
    assert second.ambiguous_resent
    assert unanswered == [_target("ka-2")]
    assert seen == {_target("ka-1"): 1, _target("ka-2"): 2}
    # the ledger hook is told, so that the ledger marks the entry
    assert recorded == [("ka-1", 0), ("ka-2", 1)]


def _send_with_stats(
    retry: RetryPolicy, batches: list[list[Request]], concurrency: int
) -> tuple[dict[str, Delivery], SenderStats, list[float]]:
    """Each batch flushed before the next; the deliveries, the counters, the backoffs."""
    sleep = RecordingSleep()
    deliveries: list[Delivery] = []
    with BulkSender(_config(retry, 5.0, concurrency), (KEY,), sleep=sleep) as sender:
        for batch in batches:
            sender.submit_many(batch)
            deliveries += sender.take_finished() + sender.flush()
        stats = sender.stats()
    return {d.message.param("token") or "": d for d in deliveries}, stats, sleep.calls


def test_a_reused_connection_the_server_closed_is_a_free_reconnect() -> None:
    """No backoff, no attempt, no failed outcome counted: only the reconnect and ambiguity."""
    with KeepAliveCloser() as server:
        batches = [[_request(server.base_url, "fr-1")], [_request(server.base_url, "fr-2")]]
        results, stats, backoffs = _send_with_stats(RETRY, batches, concurrency=1)
        seen = server.seen()
    assert (results["fr-2"].delivered, results["fr-2"].attempts) == (True, 1)
    assert (results["fr-1"].reconnects, results["fr-2"].reconnects) == (0, 1)
    assert backoffs == []
    assert stats.reconnects == 1
    # two answered attempts; the disconnection is not an outcome, nor a retry, nor a failure
    assert (stats.sent, stats.retries, stats.failed, dict(stats.outcomes)) == (2, 0, 0, {"200": 2})
    assert seen == {_target("fr-1"): 1, _target("fr-2"): 2}


class CutSecondAnswer(RawServer):
    """Answers a connection's first request; its second gets a 200 cut short, then the close."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await self.read_request(reader) is None:
            return
        writer.write(OK)
        await writer.drain()
        if await self.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
            await writer.drain()
        # closed by _handle, the body cut short


def test_an_answer_cut_short_on_a_reused_connection_is_no_reconnect() -> None:
    """The status came: it says what the service made of the request, nothing is resent."""
    with CutSecondAnswer() as server:
        batches = [[_request(server.base_url, "cut-1")], [_request(server.base_url, "cut-2")]]
        results, stats, backoffs = _send_with_stats(RETRY, batches, concurrency=1)
        seen = server.seen()
    delivery = results["cut-2"]
    assert (delivery.delivered, delivery.status, delivery.attempts) == (True, 200, 1)
    assert (delivery.ambiguous, delivery.reconnects, stats.reconnects) == (0, 0, 0)
    assert seen == {_target("cut-1"): 1, _target("cut-2"): 1} and backoffs == []


def test_a_connection_that_fails_on_first_use_is_not_a_reconnect() -> None:
    with FirstRequestCloser() as server:
        results, stats, backoffs = _send_with_stats(
            RETRY, [[_request(server.base_url, "first-use")]], concurrency=1
        )
        seen = server.seen()
    delivery = results["first-use"]
    assert (delivery.delivered, delivery.attempts, delivery.ambiguous) == (False, 3, 3)
    assert delivery.error is not None and delivery.error.startswith("ServerDisconnectedError")
    assert stats.reconnects == 0 and stats.failed == 1 and len(backoffs) == 2
    assert seen == {_target("first-use"): 3}


def test_a_message_gets_at_most_a_few_free_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pooled connection is closed under it: past FREE_RECONNECTS, failures count."""
    # each pooled connection served one answer, then closed: the pattern of a server that
    # closes after every answer, which would make the destination one-shot; not here
    monkeypatch.setattr("beaconflow.delivery.sender.ONE_SHOT_CLOSES", 1000)
    pooled = FREE_RECONNECTS + 2
    with KeepAliveCloser(opening=pooled) as server:
        opening = [_request(server.base_url, f"open-{n}") for n in range(pooled)]
        unlucky = _request(server.base_url, "unlucky")
        results, stats, backoffs = _send_with_stats(RETRY, [opening, [unlucky]], pooled)
        seen = server.seen()
    delivery = results["unlucky"]
    # FREE_RECONNECTS free, then two counted attempts on the last two pooled connections
    # (no free one left), then a fresh connection answers
    assert (delivery.delivered, delivery.attempts) == (True, 3)
    assert (delivery.ambiguous, delivery.ambiguous_resent) == (pooled, True)
    assert stats.reconnects == delivery.reconnects == FREE_RECONNECTS and len(backoffs) == 2
    assert seen[_target("unlucky")] == pooled + 1


def test_with_ambiguous_retries_off_a_reused_connection_gets_no_free_reconnect() -> None:
    with KeepAliveCloser() as server:
        batches = [[_request(server.base_url, "nf-1")], [_request(server.base_url, "nf-2")]]
        results, stats, _ = _send_with_stats(ONCE, batches, concurrency=1)
    delivery = results["nf-2"]
    assert (delivery.delivered, delivery.attempts, delivery.ambiguous) == (False, 1, 1)
    assert delivery.error is not None
    assert delivery.error.endswith(f"{MAY_HAVE_BEEN_RECEIVED}; {NOT_RETRIED}")
    assert stats.reconnects == 0


def test_with_ambiguous_retries_off_a_closed_keep_alive_connection_is_not_resent() -> None:
    with KeepAliveCloser() as server:
        requests = [_request(server.base_url, t) for t in ("kb-1", "kb-2")]
        results = _send(ONCE, requests, concurrency=1)
        seen = server.seen()
    second = results["kb-2"]
    assert (second.delivered, second.status, second.attempts) == (False, None, 1)
    assert (second.ambiguous, second.ambiguous_resent) == (1, False)
    assert second.error is not None
    assert second.error.startswith("ServerDisconnectedError")
    assert second.error.endswith(f"{MAY_HAVE_BEEN_RECEIVED}; {NOT_RETRIED}")
    assert seen == {_target("kb-1"): 1, _target("kb-2"): 1}


def test_an_ambiguous_attempt_then_a_refused_one_is_not_resent() -> None:
    """Tried again, but nothing went out again: the service saw it once at most."""
    with LogThenHang() as server:
        base_url = server.base_url
        port = server.port

        class StopAfterFirst(RecordingSleep):
            async def __call__(self, seconds: float) -> None:
                await super().__call__(seconds)
                await asyncio.to_thread(server.stop)  # the port is closed: refused from now

        retry = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, retry_after_cap=0.0)
        with BulkSender(_config(retry), (KEY,), sleep=StopAfterFirst()) as sender:
            sender.submit(_request(base_url, "then-refused"))
            (delivery,) = sender.flush()
        seen = server.seen()
    assert port and seen == {_target("then-refused"): 1}
    assert (delivery.attempts, delivery.ambiguous, delivery.ambiguous_resent) == (2, 1, False)
    assert delivery.error is not None
    assert delivery.error.startswith(f"{NEVER_REACHED}: connection refused by 127.0.0.1:")


# -- the texts and the test, without a network ----------------------------------------------


def _connector_error(host: str, cause: OSError) -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey(host, 9, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, cause)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            _connector_error("127.0.0.1", ConnectionRefusedError(111, "Connection refused")),
            f"{NEVER_REACHED}: connection refused by 127.0.0.1:9",
        ),
        (
            _connector_error("::1", ConnectionRefusedError(111, "Connection refused")),
            f"{NEVER_REACHED}: connection refused by [::1]:9",
        ),
        (
            _connector_error("nosuch.invalid", socket.gaierror(-2, "Name or service not known")),
            f"{NEVER_REACHED}: could not resolve host nosuch.invalid (Name or service not known)",
        ),
        (
            _connector_error("10.0.0.1", OSError(113, "No route to host")),
            f"{NEVER_REACHED}: could not connect to 10.0.0.1:9 (No route to host)",
        ),
        (TimeoutError(), f"{NEVER_REACHED}: no connection within 2.5 s"),
        (aiohttp.ServerDisconnectedError(), None),
    ],
)
def test_never_reached_names_why(error: BaseException, reason: str | None) -> None:
    assert never_reached(error, 2.5) == reason


@pytest.mark.parametrize(
    ("error", "sent", "reused", "stale"),
    [
        (aiohttp.ServerDisconnectedError(), True, True, True),
        (aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"), True, True, True),
        (aiohttp.ClientOSError(errno.EPIPE, "Broken pipe"), True, True, True),
        # a fresh connection: the service failed
        (aiohttp.ServerDisconnectedError(), True, False, False),
        # nothing went out
        (aiohttp.ServerDisconnectedError(), False, False, False),
        # slow, not closed
        (TimeoutError(), True, True, False),
        (aiohttp.ClientPayloadError("cut short"), True, True, False),
    ],
)
def test_a_stale_connection_is_a_reused_one_closed_under_the_request(
    error: BaseException, sent: bool, reused: bool, stale: bool
) -> None:
    mark = AttemptMark()
    mark.sent, mark.reused = sent, reused
    assert stale_connection(error, mark) is stale
