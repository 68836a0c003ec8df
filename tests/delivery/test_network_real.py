"""The bulk sender, its sender processes and the client through a real proxy to real TLS.

A tinyproxy on loopback (tests/network_parts.py) and the sandbox collector serving HTTPS
with a trustme CA's certificate: every message goes through the proxy's CONNECT tunnels and
is delivered; a CA the server's certificate is not from, and a proxy that refuses the
CONNECT, each fail with one clear line, are not retried, and stop the destination after a
short row, its other messages ending as "not attempted" (as do a plain HTTP server on an
https:// URL, and an expired certificate or one for another name, whose reasons say what
mends them); NO_PROXY goes around the proxy;
the proxy's credentials are sent as basic authentication and never appear in what comes
back. The whole command is tests/e2e/test_networks.py.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from beaconflow.client import KissmetricsClient, KontagentClient, TransportError
from beaconflow.delivery.network import Network
from beaconflow.delivery.retry import RetryPolicy
from beaconflow.delivery.sender import BLOCKED_WINDOW, BulkSender, Delivery, Request, SenderConfig
from beaconflow.delivery.sendproc import SenderPool
from beaconflow.model.message import Endpoint, Message
from beaconflow.model.render import render_url
from beaconflow.sandbox.collector import Collector, unused_port
from tests.conftest import KISSMETRICS_KEY, KONTAGENT_KEY, KONTAGENT_SECRET
from tests.hostile_servers import LogThenHang
from tests.network_parts import TestCA, Tinyproxy, port_of, tinyproxy, tls_collector

USER, PASSWORD = "proxy-user", "proxy-pass-word-19"
#: Tries per message: enough that a retried blocked attempt would show.
ATTEMPTS = 3
MESSAGES = 40


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture
def https(ca: TestCA) -> Iterator[Collector]:
    with tls_collector(ca) as running:
        yield running


def _messages(base_url: str, count: int = MESSAGES) -> list[Request]:
    endpoint = Endpoint("kissmetrics", base_url, KISSMETRICS_KEY)
    requests = []
    for i in range(count):
        message = Message("kissmetrics", "e", (("_n", "Signed Up"), ("_p", f"user{i}")))
        requests.append(Request(message, render_url(message, endpoint, 1_800_000_000.0)))
    return requests


def _config(network: Network, concurrency: int = 4) -> SenderConfig:
    retry = RetryPolicy(max_attempts=ATTEMPTS, base_delay=0.0)
    return SenderConfig(concurrency, 10.0, retry, adaptive=False, network=network)


def _send_in_process(network: Network, base_url: str) -> list[Delivery]:
    sender = BulkSender(_config(network), (KISSMETRICS_KEY,))
    try:
        sender.submit_many(_messages(base_url))
        return sender.flush()
    finally:
        sender.close()


def _send_from_processes(network: Network, base_url: str) -> list[Delivery]:
    with SenderPool(_config(network), (KISSMETRICS_KEY,), processes=2) as pool:
        client = pool.client()
        client.submit_many(_messages(base_url))
        return client.flush()


SENDERS = {"in_process": _send_in_process, "processes": _send_from_processes}


def _network(proxy: Tinyproxy | None, ca: TestCA, no_proxy: str = "") -> Network:
    environ = {"NO_PROXY": no_proxy} if no_proxy else {}
    return Network.resolve(proxy.url if proxy else "none", [str(ca.pem_path)], environ=environ)


def _texts(deliveries: list[Delivery]) -> str:
    return "\n".join(f"{d.error} {d.stop}" for d in deliveries)


@pytest.mark.parametrize("send", SENDERS.values(), ids=SENDERS.keys())
def test_every_message_goes_through_the_proxys_tunnels_and_is_delivered(
    https: Collector, ca: TestCA, tmp_path: Path, send: object
) -> None:
    port = port_of(https.base_url)
    with tinyproxy(tmp_path, connect_ports=[port], user=USER, password=PASSWORD) as proxy:
        deliveries = send(_network(proxy, ca), https.base_url)  # type: ignore[operator]
        tunnels = proxy.tunnels(port)
    assert [d.delivered for d in deliveries] == [True] * MESSAGES
    assert https.records.counts()["accepted"] == MESSAGES
    # keep-alive: a tunnel per connection, not per message
    assert 1 <= tunnels <= 8, tunnels
    assert proxy.requests() == tunnels, "nothing went to the proxy but the tunnels"


@pytest.mark.parametrize("send", SENDERS.values(), ids=SENDERS.keys())
def test_a_server_of_another_ca_fails_in_one_line_and_stops_the_destination(
    https: Collector, other_ca: TestCA, send: object
) -> None:
    deliveries = send(_network(None, other_ca), https.base_url)  # type: ignore[operator]
    assert len(deliveries) == MESSAGES, "nothing vanishes"
    assert not any(d.delivered for d in deliveries)
    assert https.records.counts()["accepted"] == 0
    port = port_of(https.base_url)
    reason = (
        f"TLS certificate of 127.0.0.1:{port} not trusted: unable to get local issuer "
        "certificate; add your CA with --ca-bundle"
    )
    stop = f"kissmetrics cannot be reached: {reason}"
    failed = [d for d in deliveries if d.attempts]
    not_attempted = [d for d in deliveries if not d.attempts]
    assert {d.error for d in failed} == {reason}
    assert all(d.attempts == 1 for d in failed), "a certificate failure is not retried"
    assert BLOCKED_WINDOW <= len(failed) < MESSAGES
    assert {d.error for d in not_attempted} == {f"not attempted: {stop}"}
    assert {d.stop for d in not_attempted} == {stop}
    assert sum(d.stop == stop for d in failed) >= 1, "the one that stopped it says so"


@pytest.mark.parametrize("send", SENDERS.values(), ids=SENDERS.keys())
def test_a_proxy_refusing_the_connect_fails_in_one_line_and_stops_the_destination(
    https: Collector, ca: TestCA, tmp_path: Path, send: object
) -> None:
    # tinyproxy lets CONNECT through to port 443 alone
    with tinyproxy(tmp_path, user=USER, password=PASSWORD) as proxy:
        deliveries = send(_network(proxy, ca), https.base_url)  # type: ignore[operator]
        refused = proxy.log().count("Refused CONNECT method on port")
    port = port_of(https.base_url)
    reason = f"proxy {proxy.shown} refused CONNECT to 127.0.0.1:{port}: 403 Access violation"
    failed = [d for d in deliveries if d.attempts]
    assert len(deliveries) == MESSAGES
    assert {d.error for d in failed} == {reason}
    assert all(d.attempts == 1 for d in failed)
    assert {d.error for d in deliveries if not d.attempts} == {
        f"not attempted: kissmetrics cannot be reached: {reason}"
    }
    assert refused == len(failed), "every attempt was a CONNECT the proxy refused"
    assert https.records.counts()["arrived"] == 0
    assert PASSWORD not in _texts(deliveries) and USER not in _texts(deliveries)


def test_a_proxy_without_the_credentials_refuses_with_407(
    https: Collector, ca: TestCA, tmp_path: Path
) -> None:
    port = port_of(https.base_url)
    with tinyproxy(tmp_path, connect_ports=[port], user=USER, password=PASSWORD) as proxy:
        network = Network.resolve(proxy.shown, [str(ca.pem_path)], environ={})
        deliveries = _send_in_process(network, https.base_url)
    assert {d.error for d in deliveries if d.attempts} == {
        f"proxy {proxy.shown} refused CONNECT to 127.0.0.1:{port}: 407 Proxy Authentication "
        "Required"
    }


def test_a_proxy_that_cannot_reach_the_server_is_retried_as_a_connection_error(
    ca: TestCA, tmp_path: Path
) -> None:
    """A proxy's 5xx (tinyproxy's for a CONNECT to a closed port) is retried, never blocked."""
    closed = unused_port()
    with tinyproxy(tmp_path, connect_ports=[closed]) as proxy:
        network = _network(proxy, ca)
        deliveries = _send_in_process(network, f"https://127.0.0.1:{closed}")
    assert all(d.attempts == ATTEMPTS for d in deliveries), "retried to the last attempt"
    assert all(d.stop is None for d in deliveries), "nothing stopped the destination"
    assert {d.error for d in deliveries} == {
        f"ClientHttpProxyError: 500, message='Unable to connect', url='{proxy.shown}'"
    }


def test_no_proxy_goes_around_the_proxy(https: Collector, ca: TestCA, tmp_path: Path) -> None:
    port = port_of(https.base_url)
    with tinyproxy(tmp_path, connect_ports=[port]) as proxy:
        deliveries = _send_in_process(_network(proxy, ca, "127.0.0.1"), https.base_url)
        logged = proxy.requests()
    assert all(d.delivered for d in deliveries)
    assert https.records.counts()["accepted"] == MESSAGES
    assert logged == 0


# -- the small client -----------------------------------------------------------------------


def test_the_client_goes_through_the_proxy_and_trusts_the_bundle(
    https: Collector, ca: TestCA, tmp_path: Path
) -> None:
    port = port_of(https.base_url)
    with tinyproxy(tmp_path, connect_ports=[port], user=USER, password=PASSWORD) as proxy:
        network = _network(proxy, ca)
        with (
            KissmetricsClient(KISSMETRICS_KEY, https.base_url, network=network) as kissmetrics,
            KontagentClient(
                KONTAGENT_KEY, KONTAGENT_SECRET, https.base_url, network=network
            ) as kontagent,
        ):
            kissmetrics.record("bob", "Signed Up")
            kissmetrics.set("bob", {"plan": "free"})
            kontagent.notify_new_install(123456)
        tunnels = proxy.tunnels(port)
    assert https.records.counts()["accepted"] == 3
    assert tunnels == 2, "one tunnel per client's kept-alive connection"


def test_the_client_names_an_untrusted_certificate_in_one_line(
    https: Collector, other_ca: TestCA
) -> None:
    network = _network(None, other_ca)
    port = port_of(https.base_url)
    with (
        KissmetricsClient(KISSMETRICS_KEY, https.base_url, network=network) as client,
        pytest.raises(TransportError) as caught,
    ):
        client.record("bob", "Signed Up")
    text = str(caught.value)
    assert text.startswith(
        f"TLS certificate of 127.0.0.1:{port} not trusted: unable to get local issuer "
        "certificate; add your CA with --ca-bundle: GET https://"
    )
    assert KISSMETRICS_KEY not in text and "\n" not in text
    assert not caught.value.ambiguous


def test_the_client_names_a_refused_connect_without_the_credentials(
    https: Collector, ca: TestCA, tmp_path: Path
) -> None:
    port = port_of(https.base_url)
    with tinyproxy(tmp_path, user=USER, password=PASSWORD) as proxy:
        network = _network(proxy, ca)
        with (
            KissmetricsClient(KISSMETRICS_KEY, https.base_url, network=network) as client,
            pytest.raises(TransportError) as caught,
        ):
            client.record("bob", "Signed Up")
    text = str(caught.value)
    assert text.startswith(
        f"proxy {proxy.shown} refused CONNECT to 127.0.0.1:{port}: 403 Access violation: GET"
    )
    assert PASSWORD not in text and USER not in text


def test_the_client_by_default_reads_the_environment_as_the_command_does(
    https: Collector, ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = port_of(https.base_url)
    for name in ("NO_PROXY", "no_proxy", "https_proxy", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    with tinyproxy(tmp_path, connect_ports=[port]) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        # requests alone would trust this bundle instead of the system's store; beaconflow adds it
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.pem_path))
        with KissmetricsClient(KISSMETRICS_KEY, https.base_url) as client:
            client.record("bob", "Signed Up")
        assert proxy.tunnels(port) == 1
    assert https.records.counts()["accepted"] == 1


# --- a server that cannot be trusted for other reasons than its CA, or speaks no TLS ---


def _collector_presenting(cert: trustme.LeafCert) -> Collector:
    """A collector serving HTTPS with ``cert`` (issued by the test CA, but unfit)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return Collector(kissmetrics_key=KISSMETRICS_KEY, ssl_context=context)


def _unfit(ca: TestCA, unfit: str) -> trustme.LeafCert:
    if unfit == "expired":
        return ca.ca.issue_cert("127.0.0.1", not_after=datetime(2020, 1, 1, tzinfo=UTC))
    return ca.ca.issue_cert("other.example")  # a certificate for another name


UNFIT = {
    "expired": "certificate has expired; the server's certificate is out of date (or this "
    "machine's clock is wrong)",
    "other_name": "IP address mismatch, certificate is not valid for '127.0.0.1'; the "
    "certificate is for other names: check the URL's host",
}


@pytest.mark.parametrize("unfit", UNFIT, ids=UNFIT.keys())
def test_an_expired_or_misnamed_certificate_is_not_advised_a_ca(ca: TestCA, unfit: str) -> None:
    """Adding a CA mends neither: the reason says what would (the sender and the client)."""
    with _collector_presenting(_unfit(ca, unfit)) as served:
        port = port_of(served.base_url)
        reason = f"TLS certificate of 127.0.0.1:{port} not trusted: {UNFIT[unfit]}"
        deliveries = _send_in_process(_network(None, ca), served.base_url)
        with (
            KissmetricsClient(
                KISSMETRICS_KEY, served.base_url, network=_network(None, ca)
            ) as client,
            pytest.raises(TransportError) as caught,
        ):
            client.record("bob", "Signed Up")
    failed = [d for d in deliveries if d.attempts]
    assert failed and {d.error for d in failed} == {reason}
    assert all(d.attempts == 1 for d in failed), "not retried"
    assert str(caught.value).startswith(f"{reason}: GET https://")
    assert "--ca-bundle" not in str(caught.value)


@pytest.mark.parametrize("send", SENDERS.values(), ids=SENDERS.keys())
def test_plain_http_on_an_https_url_fails_in_one_line_and_stops_the_destination(
    send: object,
) -> None:
    """No retry can make a plain HTTP server speak TLS: blocked, as an untrusted certificate."""
    with Collector(kissmetrics_key=KISSMETRICS_KEY) as plain:
        port = port_of(plain.base_url)
        https_url = f"https://127.0.0.1:{port}"
        deliveries = send(Network.resolve("none", environ={}), https_url)  # type: ignore[operator]
        with (
            KissmetricsClient(
                KISSMETRICS_KEY, https_url, network=Network.resolve("none", environ={})
            ) as client,
            pytest.raises(TransportError) as caught,
        ):
            client.record("bob", "Signed Up")
        assert plain.records.counts()["accepted"] == 0
    reason = (
        f"TLS handshake with 127.0.0.1:{port} failed: the server does not speak TLS there "
        "(plain HTTP? then use http://)"
    )
    assert len(deliveries) == MESSAGES, "nothing vanishes"
    failed = [d for d in deliveries if d.attempts]
    not_attempted = [d for d in deliveries if not d.attempts]
    assert {d.error for d in failed} == {reason}
    assert all(d.attempts == 1 for d in failed), "not retried"
    assert BLOCKED_WINDOW <= len(failed) < MESSAGES
    assert {d.error for d in not_attempted} == {
        f"not attempted: kissmetrics cannot be reached: {reason}"
    }
    assert str(caught.value).startswith(f"{reason}: GET https://127.0.0.1:{port}/e?_k=***")
    assert not caught.value.ambiguous


def test_a_proxy_where_nothing_listens_is_named_as_the_proxy(https: Collector) -> None:
    """The refused address is the proxy's: the reason says so, never its credentials."""
    port = unused_port()
    network = Network.resolve(f"http://{USER}:{PASSWORD}@127.0.0.1:{port}", environ={})
    deliveries = _send_in_process(network, https.base_url)
    with (
        KissmetricsClient(KISSMETRICS_KEY, https.base_url, network=network) as client,
        pytest.raises(TransportError) as caught,
    ):
        client.record("bob", "Signed Up")
    assert len(deliveries) == MESSAGES and not any(d.delivered for d in deliveries)
    assert {d.error for d in deliveries} == {
        f"never reached the service: connection refused by proxy 127.0.0.1:{port}"
    }
    assert all(d.attempts == ATTEMPTS for d in deliveries), "retried: a proxy may come back"
    assert str(caught.value).startswith(
        f"could not reach proxy http://127.0.0.1:{port}: connection refused: GET https://"
    )
    assert not caught.value.ambiguous
    assert PASSWORD not in _texts(deliveries) + str(caught.value)


def test_a_proxy_that_never_answers_the_connect_is_named_in_the_timeout() -> None:
    """A proxy that accepts and hangs: the attempt times out, and the reason says through what."""
    with LogThenHang() as proxy:
        network = Network.resolve(f"http://{USER}:{PASSWORD}@127.0.0.1:{proxy.port}", environ={})
        config = SenderConfig(2, 0.3, RetryPolicy(max_attempts=1), adaptive=False, network=network)
        sender = BulkSender(config, (KISSMETRICS_KEY,))
        try:
            sender.submit_many(_messages(f"https://127.0.0.1:{unused_port()}", 2))
            deliveries = sender.flush()
        finally:
            sender.close()
    assert {d.error for d in deliveries} == {
        f"never reached the service: no connection within 0.3 s "
        f"(through proxy http://127.0.0.1:{proxy.port})"
    }
    assert not any(d.ambiguous for d in deliveries)
    assert PASSWORD not in _texts(deliveries)


def test_plain_http_through_tinyproxy_stops_meeting_its_closes(tmp_path: Path) -> None:
    """Tinyproxy forwards http:// and closes each connection after one answer, unannounced.

    Kontagent's URL is http://: through such a proxy, every reused connection would meet a
    close under its request (an ambiguous resend, or with --no-retry-ambiguous a failure).
    The sender sees it after a few and opens a connection per request instead.
    """
    from beaconflow.delivery.ambiguity import MAY_HAVE_BEEN_RECEIVED
    from beaconflow.delivery.sender import ONE_SHOT_CLOSES

    count = 200
    with Collector(kissmetrics_key=KISSMETRICS_KEY) as plain, tinyproxy(tmp_path) as proxy:
        network = Network.resolve(proxy.url)
        retry = RetryPolicy(max_attempts=ATTEMPTS, base_delay=0.0, retry_ambiguous=False)
        config = SenderConfig(1, 10.0, retry, adaptive=False, network=network)
        with BulkSender(config, (KISSMETRICS_KEY,)) as sender:
            sender.submit_many(_messages(plain.base_url, count))
            deliveries = sender.flush()
            stats = sender.stats()
        forwarded = proxy.requests()
        accepted = plain.records.counts()["accepted"]
    # with ambiguous attempts not retried, a close under a request fails its message: a few
    # at most, before the sender stops reusing (each is in the dead letter, replayable)
    failed = [d for d in deliveries if not d.delivered]
    assert len(failed) <= ONE_SHOT_CLOSES, _texts(failed)
    assert all(MAY_HAVE_BEEN_RECEIVED in (d.error or "") for d in failed), _texts(failed)
    assert accepted == count - len(failed) and forwarded >= accepted
    assert stats.reconnects == 0  # no free reconnect without retrying ambiguous attempts


def test_a_proxy_asking_credentials_for_plain_http_stops_the_destination(tmp_path: Path) -> None:
    """On http:// (Kontagent's scheme) the proxy's 407 is the answer itself: blocked too."""
    from beaconflow.delivery.sender import BLOCKED_WINDOW

    with (
        Collector(kissmetrics_key=KISSMETRICS_KEY) as plain,
        tinyproxy(tmp_path, user=USER, password=PASSWORD) as proxy,
    ):
        network = Network.resolve(proxy.shown, environ={})  # no credentials
        config = SenderConfig(1, 10.0, RetryPolicy(max_attempts=ATTEMPTS, base_delay=0.0),
                              adaptive=False, network=network)  # fmt: skip
        with BulkSender(config, (KISSMETRICS_KEY,)) as sender:
            sender.submit_many(_messages(plain.base_url))
            deliveries = sender.flush()
        accepted = plain.records.counts()["accepted"]
    port = port_of(plain.base_url)
    reason = (
        f"proxy {proxy.shown} asks for credentials (HTTP 407) to reach 127.0.0.1:{port}: add a "
        "user name and password to the proxy's URL (--proxy or HTTP_PROXY)"
    )
    tried = [d for d in deliveries if d.attempts]
    # not retried (permanent), and the destination stops after a short row
    assert len(tried) == BLOCKED_WINDOW and all(d.attempts == 1 for d in tried)
    assert {(d.status, d.error) for d in tried} == {(407, reason)}
    rest = [d for d in deliveries if not d.attempts]
    assert len(rest) == MESSAGES - BLOCKED_WINDOW and accepted == 0
    assert {d.error for d in rest} == {f"not attempted: kissmetrics cannot be reached: {reason}"}
