"""The send step (``beaconflow.transforms.send``): SendConfig, and SendMessages in a pipeline.

SendMessages runs against the sandbox collector playing scripted answers (the ``server``
fixture); the engine underneath is tested in tests/delivery/test_sender.py. Run with::

    .venv/bin/python -m pytest tests/transforms/test_send.py
"""

from __future__ import annotations

from urllib.parse import urlencode

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beaconflow.delivery.sender import Delivery, Request
from beaconflow.delivery.stop import forget_run, run_stop
from beaconflow.model.message import Endpoint, Message
from beaconflow.report.counts import STOPPED
from beaconflow.sandbox.collector import Collector
from beaconflow.transforms import send
from beaconflow.transforms.send import SendConfig, SendMessages
from tests.conftest import KEY
from tests.delivery.test_sender import NO_WAIT, message


def test_send_config_divides_the_rate_among_workers() -> None:
    endpoint = Endpoint("kontagent", "http://127.0.0.1:1", KEY)
    cfg = SendConfig(
        {"kontagent": endpoint},
        4,
        1.0,
        NO_WAIT,
        {"kontagent": 100.0, "kissmetrics": None},
        workers=4,
    )
    assert cfg.sender_config().rates == {"kontagent": 25.0, "kissmetrics": None}
    with pytest.raises(ValueError):
        SendConfig({"kissmetrics": endpoint}, 4, 1.0, NO_WAIT)


def fake_render(message: Message, endpoint: Endpoint, now: float) -> str:
    query = urlencode(message.params)
    return f"{endpoint.base_url}/api/v1/{endpoint.api_key}/{message.kind}/?{query}"


def summary(delivery: Delivery) -> tuple[str, str, bool, int | None, str | None, int]:
    token = delivery.message.param("token") or ""
    return (
        token,
        delivery.message.kind,
        delivery.delivered,
        delivery.status,
        delivery.error,
        delivery.attempts,
    )


def test_send_messages_pipeline(server: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(send, "render_url", fake_render)
    endpoint = Endpoint("kontagent", server.base_url, KEY)
    cfg = SendConfig(
        {"kontagent": endpoint},
        concurrency=4,
        timeout=5.0,
        retry=NO_WAIT,
        max_rps={"kontagent": None},
    )
    good = [message("ok", f"pipe-{n}") for n in range(20)]
    flaky = Message("kontagent", "flaky", (("n", "1"), ("token", "pipe-flaky")))
    bad = message("bad", "pipe-bad")
    orphan = message("ok", "pipe-km", "kissmetrics")
    with test_pipeline.TestPipeline(runner=FnApiRunner()) as pipeline:
        # Created from plain tuples: beam.Create reads any element with an as_dict() method,
        # Message included, as a schema Row and then fails to encode it.
        outputs = (
            pipeline
            | beam.Create([(m.destination, m.kind, m.params) for m in [*good, flaky, bad, orphan]])
            | "ToMessages" >> beam.MapTuple(Message)
            | SendMessages(cfg)
        )
        assert_that(
            outputs.delivered | "SummariseDelivered" >> beam.Map(summary),
            equal_to(
                [(f"pipe-{n}", "ok", True, 200, None, 1) for n in range(20)]
                + [("pipe-flaky", "flaky", True, 200, None, 2)]
            ),
            label="CheckDelivered",
        )
        assert_that(
            outputs.failed | "SummariseFailed" >> beam.Map(summary),
            equal_to(
                [
                    ("pipe-bad", "bad", False, 400, "HTTP 400: bad request (scripted)", 1),
                    ("pipe-km", "ok", False, None, "no endpoint configured for kissmetrics", 0),
                ]
            ),
            label="CheckFailed",
        )
    metrics = pipeline.result.metrics().query()
    counters = {
        c.key.metric.name: c.committed
        for c in metrics["counters"]
        if c.key.metric.namespace == "beaconflow"
    }
    assert counters["delivered"] == 21
    assert counters["failed"] == 2
    assert counters["retries"] == 1


def test_a_destination_down_on_the_run_is_not_sent_to_and_its_bundles_say_so(
    server: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(send, "render_url", fake_render)
    reason = "destination down: kontagent (only timeouts, connection errors and 5xx for 1m)"
    stop = run_stop("send-down")
    stop.destination_down("kontagent", reason)  # another sender of the process found it down
    try:
        cfg = SendConfig(
            {
                "kontagent": Endpoint("kontagent", server.base_url, KEY),
                "kissmetrics": Endpoint("kissmetrics", server.base_url, KEY),
            },
            concurrency=4,
            timeout=5.0,
            retry=NO_WAIT,
            run_id="send-down",
        )
        down = [message("ok", f"down-{n}") for n in range(5)]
        # the fake URL is Kontagent-shaped for both: the scripted "ok" answers either
        healthy = [message("ok", f"up-{n}", "kissmetrics") for n in range(5)]
        with test_pipeline.TestPipeline(runner=FnApiRunner()) as pipeline:
            outputs = (
                pipeline
                | beam.Create([(m.destination, m.kind, m.params) for m in [*down, *healthy]])
                | "ToMessages" >> beam.MapTuple(Message)
                | SendMessages(cfg)
            )
            assert_that(
                outputs.delivered | "Delivered" >> beam.Map(lambda d: d.message.param("token")),
                equal_to([f"up-{n}" for n in range(5)]),
                label="CheckDelivered",
            )
            assert_that(
                outputs.failed | "Failed" >> beam.Map(summary),
                equal_to(
                    [
                        (f"down-{n}", "ok", False, None, f"not attempted: {reason}", 0)
                        for n in range(5)
                    ]
                ),
                label="CheckFailed",
            )
            assert_that(
                outputs[send.TALLY]
                | "Stopped" >> beam.Filter(lambda tally: tally[0].counter == STOPPED)
                | "Reasons" >> beam.Map(lambda tally: tally[0].detail)
                | "Distinct" >> beam.Distinct(),
                equal_to([reason]),
                label="CheckStopped",
            )
        assert sum(server.tries(f"down-{n}") for n in range(5)) == 0
    finally:
        forget_run("send-down")


def test_senders_started_before_the_run_are_the_send_steps_own(server: Collector) -> None:
    # The command starts the sender processes as it builds the pipeline; the send steps, set
    # up later from a pickled copy of their config (as Beam ships DoFns), must find the same
    # processes and not start their own.
    import pickle

    endpoint = Endpoint("kontagent", server.base_url, KEY)
    cfg = SendConfig({"kontagent": endpoint}, 4, 5.0, NO_WAIT, processes=2, run_id="prestart")
    started = send.start_senders(cfg)
    assert started is not None
    try:
        shipped: SendConfig = pickle.loads(pickle.dumps(cfg))
        client = shipped.pool_client()
        try:
            assert client.pool is started.pool and started.pool.processes == 2
            client.submit_many(
                [Request(message("ok", "pre-1"), fake_render(message("ok", "pre-1"), endpoint, 0))]
            )
            (delivery,) = client.flush()
            assert delivery.delivered
        finally:
            client.close()
    finally:
        started.close()
    assert send.start_senders(SendConfig({"kontagent": endpoint}, 4, 5.0, NO_WAIT)) is None
