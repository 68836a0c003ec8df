"""The small synchronous client against a real HTTP server on loopback, started here."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest

from beaconflow.client import HTTPStatusError, KissmetricsClient, KontagentClient, TransportError
from beaconflow.delivery.network import Network
from beaconflow.model.message import MessageError
from beaconflow.sandbox.collector import PIXEL_GIF, unused_port
from tests.hostile_servers import KeepAliveCloser, LogThenHang

KEY = "c0ffee00c0ffee00c0ffee00c0ffee00"
SECRET = "hunter2-the-kontagent-secret"
GIF = PIXEL_GIF


class _Handler(BaseHTTPRequestHandler):
    seen: list[str] = []  # noqa: RUF012 - shared by design: the server's record

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if "/slow" in self.path or "s=666" in self.path:
            time.sleep(1.0)
        status = 503 if "s=503" in self.path else 400 if "s=400" in self.path else 200
        self.send_response(status)
        self.send_header("Content-Type", "image/gif")
        self.send_header("Content-Length", str(len(GIF)))
        self.end_headers()
        self.wfile.write(GIF)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


_free_port = unused_port


def _params(path: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(path).query))


def test_kontagent_calls_of_the_ruby_library(server: str) -> None:
    with KontagentClient(KEY, base_url=server, clock=lambda: 1_500_000_000) as client:
        client.notify_new_install(123)
        client.notify_uninstall(123)
        client.notify_custom_event(123, "harvest", 0, 2, "crops", None, "wheat")
        client.send("invite_sent", {"s": 123, "r": [4, 5], "u": "0123456789abcdef"})
    paths = _Handler.seen
    assert [urlsplit(p).path for p in paths] == [
        f"/api/v1/{KEY}/apa/",
        f"/api/v1/{KEY}/apr/",
        f"/api/v1/{KEY}/evt/",
        f"/api/v1/{KEY}/ins/",
    ]
    assert _params(paths[2]) == {
        "s": "123",
        "n": "harvest",
        "v": "0",
        "l": "2",
        "st1": "crops",
        "st3": "wheat",
    }
    assert _params(paths[3])["r"] == "4,5" and "r=4%2C5" in paths[3]


def test_signed_requests_carry_ts_and_an_sig(server: str) -> None:
    with KontagentClient(KEY, SECRET, server, clock=lambda: 1_500_000_000) as client:
        client.notify_uninstall(7)
    params = _params(_Handler.seen[0])
    assert params["ts"] == "1500000000" and len(params["an_sig"]) == 32
    assert SECRET not in _Handler.seen[0]


def test_kissmetrics_record_set_alias(server: str) -> None:
    with KissmetricsClient(KEY, server) as client:
        client.record("bob", "Signed Up", time=1262304000, properties={"gender": "male"})
        client.set("bob", {"plan": "free"})
        client.alias("bob", "bob@bob.com")
    assert [urlsplit(p).path for p in _Handler.seen] == ["/e", "/s", "/a"]
    assert _params(_Handler.seen[0]) == {
        "_k": KEY,
        "_p": "bob",
        "_n": "Signed Up",
        "_t": "1262304000",
        "_d": "1",
        "gender": "male",
    }


def test_invalid_message_is_refused_before_sending(server: str) -> None:
    with KontagentClient(KEY, base_url=server) as client, pytest.raises(MessageError, match="'n'"):
        client.notify_custom_event(1, "not valid!")
    assert _Handler.seen == []


def test_5xx_raises_a_retriable_status_error(server: str) -> None:
    with KontagentClient(KEY, SECRET, server) as client, pytest.raises(HTTPStatusError) as caught:
        client.notify_uninstall(503)
    assert caught.value.status == 503 and caught.value.retriable
    assert KEY not in str(caught.value) and "/api/v1/***/apr/" in str(caught.value)


def test_4xx_is_permanent(server: str) -> None:
    with KontagentClient(KEY, base_url=server) as client, pytest.raises(HTTPStatusError) as caught:
        client.notify_uninstall(400)
    assert caught.value.status == 400 and not caught.value.retriable


def test_timeout_raises_transport_error(server: str) -> None:
    with (
        KontagentClient(KEY, SECRET, server, timeout=0.2) as client,
        pytest.raises(TransportError) as caught,
    ):
        client.notify_uninstall(666)
    assert "timed out" in str(caught.value)
    assert KEY not in str(caught.value) and SECRET not in str(caught.value)


def test_connection_refused_raises_transport_error() -> None:
    base = f"http://127.0.0.1:{_free_port()}"
    with KissmetricsClient(KEY, base, timeout=2) as client, pytest.raises(TransportError) as caught:
        client.alias("a", "b")
    assert KEY not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    # the request never left: safe to call again
    assert not caught.value.ambiguous
    # named as the bulk sender names it
    host, port = base.removeprefix("http://").split(":")
    assert str(caught.value).startswith(
        f"never reached the service: connection refused by {host}:{port}: GET {base}/"
    )


def test_a_name_that_does_not_resolve_is_never_reached() -> None:
    # .invalid never resolves (RFC 6761): the machine's resolver says so without a network
    base = "http://nosuch.invalid"
    with KissmetricsClient(KEY, base, timeout=2) as client, pytest.raises(TransportError) as caught:
        client.alias("a", "b")
    assert not caught.value.ambiguous and KEY not in str(caught.value)
    assert str(caught.value).startswith(
        "never reached the service: could not resolve host nosuch.invalid"
    )


def test_a_request_the_server_logged_without_answering_is_ambiguous() -> None:
    with (
        LogThenHang() as hung,
        KontagentClient(KEY, SECRET, hung.base_url, timeout=0.2) as client,
        pytest.raises(TransportError) as caught,
    ):
        client.notify_uninstall(7)
    assert caught.value.ambiguous
    text = str(caught.value)
    assert text.startswith("no answer, the request was sent (the service may have received it")
    assert "timed out after 0.2s waiting for the answer" in text
    assert KEY not in text and SECRET not in text
    assert len(hung.targets()) == 1, "the client never sends a request again by itself"


def test_a_kept_alive_connection_closed_before_the_answer_is_ambiguous() -> None:
    with KeepAliveCloser() as server, KontagentClient(KEY, SECRET, server.base_url) as client:
        client.notify_uninstall(1)
        with pytest.raises(TransportError) as caught:
            client.notify_uninstall(2)  # read by the server on the same connection, unanswered
        assert len(server.unanswered) == 1 and len(server.targets()) == 2
    assert caught.value.ambiguous
    assert "the connection failed before the answer" in str(caught.value)
    assert KEY not in str(caught.value)


def test_no_key_or_secret_reaches_the_logs(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with KontagentClient(KEY, SECRET, server) as client:
        client.notify_uninstall(1)
        with pytest.raises(HTTPStatusError):
            client.notify_uninstall(503)
    unreachable = f"http://127.0.0.1:{_free_port()}"
    with KontagentClient(KEY, SECRET, unreachable) as client, pytest.raises(TransportError):
        client.notify_uninstall(2)
    assert caplog.records, "the client should log what it sends"
    assert KEY not in caplog.text and SECRET not in caplog.text


def test_missing_key_and_bad_timeout_are_refused() -> None:
    with pytest.raises(ValueError, match="API key"):
        KontagentClient("")
    with pytest.raises(ValueError, match="timeout"):
        KissmetricsClient(KEY, timeout=0)


def test_client_is_usable_from_many_threads(server: str) -> None:
    with KontagentClient(KEY, base_url=server) as client:
        threads = [
            threading.Thread(target=client.notify_uninstall, args=(n,)) for n in range(1, 21)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(int(_params(p)["s"]) for p in _Handler.seen) == list(range(1, 21))


def test_a_tls_handshake_that_never_ends_is_not_ambiguous() -> None:
    """A server that accepts and never answers the TLS hello: no request was ever written."""
    with (
        LogThenHang() as hung,
        KissmetricsClient(KEY, f"https://127.0.0.1:{hung.port}", timeout=0.2) as client,
        pytest.raises(TransportError) as caught,
    ):
        client.record("bob", "Signed Up")
    assert hung.targets() == [], "no HTTP request reached it"
    assert not caught.value.ambiguous
    assert str(caught.value).startswith(
        "never reached the service: no connection within 0.2 s: GET https://127.0.0.1:"
    )


def test_a_proxy_that_never_answers_the_connect_is_not_ambiguous() -> None:
    """The tunnel never opened: the request never left, and the line names the proxy."""
    with LogThenHang() as proxy:
        network = Network.resolve(f"http://user:pw-19@127.0.0.1:{proxy.port}", environ={})
        target = f"https://127.0.0.1:{_free_port()}"
        with (
            KissmetricsClient(KEY, target, timeout=0.2, network=network) as client,
            pytest.raises(TransportError) as caught,
        ):
            client.record("bob", "Signed Up")
        assert proxy.targets() == [target.removeprefix("https://")], "only the CONNECT"
    assert not caught.value.ambiguous
    assert str(caught.value).startswith(
        f"never reached the service: no connection within 0.2 s through proxy "
        f"http://127.0.0.1:{proxy.port}: GET "
    )
    assert "pw-19" not in str(caught.value)
