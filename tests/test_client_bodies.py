"""The small client (``beaconflow.client``) quotes a failure's body and reads no huge one.

Against the sandbox collector's scripted answers (the ``server`` fixture of
tests/conftest.py): ``explain`` answers 400 with JSON that echoes the request and its key,
``error_page`` 500 with an HTML page, ``huge`` 200 with a 300 MB body.
"""

from __future__ import annotations

import pytest

from beaconflow.client import HTTPStatusError, KissmetricsClient, KontagentClient, TransportError
from beaconflow.delivery.body import SHOWN_CHARS
from beaconflow.model.message import Message
from beaconflow.sandbox.collector import Collector, unused_port
from tests.conftest import KEY
from tests.delivery.test_sender import BODY_WRITTEN_BOUND


def test_a_status_error_carries_the_services_explanation(server: Collector) -> None:
    with (
        KissmetricsClient(KEY, base_url=server.base_url) as client,
        pytest.raises(HTTPStatusError) as raised,
    ):
        client.send_message(Message("kissmetrics", "explain", (("token", "c-explain"),)))
    error = raised.value
    assert (error.status, error.retriable, error.source) == (400, False, None)
    assert error.body.startswith(
        '{"error": "invalid parameter s (scripted)", "request": "/explain?'
    )
    assert '"key": "***"' in error.body
    text = str(error)
    assert text.startswith("HTTP 400: GET ") and text.endswith(error.body)
    assert KEY not in text and "\n" not in text


def test_a_status_error_quotes_an_error_page_on_one_line(server: Collector) -> None:
    with (
        KontagentClient(KEY, base_url=server.base_url) as client,
        pytest.raises(HTTPStatusError) as raised,
    ):
        client.send_message(Message("kontagent", "error_page", (("token", "c-page"),)))
    error = raised.value
    assert error.status == 500 and error.retriable
    assert error.body.startswith("<!DOCTYPE html> <html> <head> <title>500 Internal Server Error")
    assert len(error.body) == SHOWN_CHARS and error.body.endswith("…")
    assert "\n" not in str(error) and KEY not in str(error)


def test_a_status_error_without_a_body_is_the_status_alone(server: Collector) -> None:
    with (
        KontagentClient(KEY, base_url=server.base_url) as client,
        pytest.raises(HTTPStatusError) as raised,
    ):
        client.send_message(Message("kontagent", "unimplemented", (("token", "c-501"),)))
    assert raised.value.body == "" and str(raised.value).startswith("HTTP 501: GET ")
    assert str(raised.value).endswith("/unimplemented/?token=c-501")


def test_a_huge_2xx_body_is_delivered_and_not_read(server: Collector) -> None:
    message = Message("kissmetrics", "huge", (("token", "c-huge"),))
    with KissmetricsClient(KEY, base_url=server.base_url) as client:
        assert client.send_message(message) is message
        # the client goes on
        assert client.send_message(Message("kissmetrics", "ok", (("token", "c-ok"),)))
    written = server.body_written("c-huge")
    assert written is not None and written < BODY_WRITTEN_BOUND


def test_errors_name_the_source_of_a_message_that_has_one(server: Collector) -> None:
    message = Message("kissmetrics", "bad", (("token", "c-src"),)).with_source("in.jsonl:12")
    with (
        KissmetricsClient(KEY, base_url=server.base_url) as client,
        pytest.raises(HTTPStatusError) as raised,
    ):
        client.send_message(message)
    assert raised.value.source == "in.jsonl:12"
    assert str(raised.value).endswith("bad request (scripted) (from in.jsonl:12)")
    unreachable = f"http://127.0.0.1:{unused_port()}"
    with (
        KissmetricsClient(KEY, base_url=unreachable, timeout=2) as client,
        pytest.raises(TransportError) as refused,
    ):
        client.send_message(message)
    assert refused.value.source == "in.jsonl:12"
    assert str(refused.value).endswith("(from in.jsonl:12)") and KEY not in str(refused.value)
