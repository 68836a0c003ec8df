"""The command's metrics outputs: a push that fails is one warning, its status untouched."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from beaconflow.pipelines.metrics_out import publish_metrics
from beaconflow.pipelines.options import MetricsConfig
from beaconflow.report.run import RunReport

SECRET = "gateway-password-1234"


class _Refusing(BaseHTTPRequestHandler):
    """A gateway that refuses every push with a 503 and a reason."""

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"overloaded: try later\nsecond line"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST = _refuse

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_push_says_the_gateways_answer(
    refusing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = MetricsConfig(pushgateway=f"http://ops:{SECRET}@{refusing}")
    publish_metrics(config, 0, RunReport(exit_status=0), 1.0, now=10.0)
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"beaconflow: warning: metrics not pushed to http://{refusing}: HTTP 503 Service "
        "Unavailable: overloaded: try later; the run's exit status stands"
    ]
    assert SECRET not in captured.out + captured.err


def test_a_gateway_that_never_answers_is_given_up(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections (the kernel does), never answers
        port = silent.getsockname()[1]
        config = MetricsConfig(pushgateway=f"http://127.0.0.1:{port}", pipeline="a")
        publish_metrics(config, 3, None, 1.0, now=10.0, push_timeout=0.5)
    assert capsys.readouterr().err.splitlines() == [
        f"beaconflow: warning: metrics not pushed to http://127.0.0.1:{port}: TimeoutError: "
        "timed out; the run's exit status stands"
    ]
