"""Tests of the sandbox collector: validation, records, redaction, faults and the CLI.

Run with ``.venv/bin/pytest tests/sandbox/test_collector.py``. Every fault is seeded or driven by an
injected clock or sleep, so nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import aiohttp
import pytest
import requests

from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.message import Endpoint
from beaconflow.model.render import render_url
from beaconflow.sandbox.collector import (
    PIXEL_GIF,
    Collector,
    FaultPlan,
    Faults,
    TokenBucket,
    down_url,
)

KT_KEY = "0123456789abcdef0123456789abcdef"
KM_KEY = "km-sandbox-key-42"
SECRET = "kontagent-secret-7"
OTHER_KEY = "fedcba9876543210fedcba9876543210"

INS_QUERY = "s=123&r=456%2C789&u=9a3d9332b31632a0"
ROOT = Path(__file__).resolve().parents[2]


def kt_path(kind: str, query: str, key: str = KT_KEY) -> str:
    return f"/api/v1/{key}/{kind}/?{query}"


def km_path(kind: str, query: str, key: str = KM_KEY) -> str:
    return f"/{kind}?_k={key}&{query}"


@pytest.fixture(scope="module")
def server() -> Iterator[Collector]:
    with Collector(kontagent_key=KT_KEY, kissmetrics_key=KM_KEY, kontagent_secret=SECRET) as c:
        yield c


@pytest.fixture
def collector(server: Collector) -> Collector:
    server.set_faults(Faults())
    server.reset()
    return server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get(http: requests.Session, collector: Collector, path: str) -> requests.Response:
    return http.get(collector.base_url + path, timeout=10)


def assert_no_secret(collector: Collector) -> None:
    for record in collector.rejected():
        for secret in (KT_KEY, KM_KEY, SECRET, OTHER_KEY):
            assert secret not in record.path
            assert secret not in record.reason


# -- valid and invalid requests -----------------------------------------------------------


def test_valid_kontagent_request_gets_the_gif_and_is_recorded(collector, http):
    response = get(http, collector, kt_path("ins", INS_QUERY))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/gif"
    assert response.content == PIXEL_GIF
    assert len(PIXEL_GIF) == 43
    [record] = collector.accepted()
    expected = kontagent.build("ins", {"s": 123, "r": [456, 789], "u": "9a3d9332b31632a0"})
    assert (record.destination, record.kind) == ("kontagent", "ins")
    assert record.params == expected.params
    assert record.key == expected.key
    assert record.param_map()["r"] == "456,789"
    counts = collector.counts()
    assert counts["accepted"] == 1
    assert counts["kontagent"] == 1
    assert counts["kontagent/ins"] == 1


def test_kontagent_path_without_trailing_slash_is_accepted(collector, http):
    response = get(http, collector, f"/api/v1/{KT_KEY}/apr?s=456")
    assert response.status_code == 200
    assert [r.kind for r in collector.accepted()] == ["apr"]


@pytest.mark.parametrize(
    ("kind", "query", "expected"),
    [
        ("e", "_p=bob&_n=Signed+Up&gender=male&_t=1262304000&_d=1", {"_n": "Signed Up"}),
        ("s", "_p=bob&gender=male&_t=1262304000&_d=1", {"gender": "male"}),
        ("a", "_p=bob&_n=bob%40bob.com", {"_n": "bob@bob.com"}),
    ],
)
def test_valid_kissmetrics_requests_are_accepted(collector, http, kind, query, expected):
    response = get(http, collector, km_path(kind, query))
    assert response.status_code == 200
    assert response.content == PIXEL_GIF
    [record] = collector.accepted()
    assert (record.destination, record.kind) == ("kissmetrics", kind)
    assert record.param_map()["_p"] == "bob"
    assert expected.items() <= record.param_map().items()
    assert "_k" not in record.param_map()
    assert collector.counts()[f"kissmetrics/{kind}"] == 1


def test_urls_rendered_by_the_project_are_accepted_with_the_same_identity(collector, http):
    messages = [
        kontagent.build("invite_sent", {"s": 0, "r": [456, 789], "u": "9a3d9332b31632a0"}),
        kontagent.build("goal_counts", {"s": [12345, 67890], "gc2": -4}),
        kontagent.build("pgr", {"s": 456, "ts": "2009-4-22T04:08:35", "ip": "10.0.0.1"}),
        kissmetrics.record("bob smith", "Signed Up", time=1262304000, properties={"a&b": "c=d"}),
        kissmetrics.set_properties("bob", {"gender": "male"}),
        kissmetrics.alias("bob", "bob@bob.com"),
    ]
    keys = {"kontagent": KT_KEY, "kissmetrics": KM_KEY}
    for message in messages:
        endpoint = Endpoint(message.destination, collector.base_url, keys[message.destination])
        response = http.get(render_url(message, endpoint, now=1_300_000_000.0), timeout=10)
        assert response.status_code == 200, response.text
    assert [r.key for r in collector.accepted()] == [m.key for m in messages]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        (kt_path("ins", "s=123&r=456&u=9a3d9332b31632a"), "'u'"),  # a 15-character tag
        (kt_path("ins", "s=123&u=9a3d9332b31632a0"), "'r'"),
        (kt_path("inr", "r=456&i=2&u=9a3d9332b31632a0"), "'i'"),
        (kt_path("fdp", "s=456&t=12"), "deprecated"),
        (kt_path("zzz", "s=456"), "unknown"),
        (km_path("e", "_n=Signed+Up"), "'_p'"),
        (km_path("e", "_p=bob&_n=Old&_t=946684800&_d=1"), "'_t'"),
        ("/e?_p=bob&_n=Signed+Up", "'_k'"),
    ],
)
def test_invalid_requests_get_400_and_are_recorded_with_the_reason(collector, http, path, param):
    response = get(http, collector, path)
    assert response.status_code == 400
    assert param in response.text
    assert collector.accepted() == []
    [record] = collector.rejected()
    assert record.status == 400
    assert record.reason == response.text
    assert collector.counts()["rejected"] == 1
    assert_no_secret(collector)


def test_rejected_records_mask_the_key(collector, http):
    get(http, collector, kt_path("ins", "s=123&r=456&u=bad"))
    get(http, collector, km_path("e", "_n=x"))
    paths = [record.path for record in collector.rejected()]
    assert paths == ["/api/v1/***/ins/?s=123&r=456&u=bad", "/e?_k=***&_n=x"]
    assert_no_secret(collector)


@pytest.mark.parametrize(
    "path",
    [
        kt_path("ins", INS_QUERY, key=OTHER_KEY),
        kt_path("ins", "s=123", key=OTHER_KEY),  # wrong key wins over a bad message
        km_path("e", "_p=bob&_n=Signed+Up", key=OTHER_KEY),
        km_path("e", "_n=Signed+Up", key=OTHER_KEY),
    ],
)
def test_wrong_key_gets_403_and_is_never_stored(collector, http, path):
    response = get(http, collector, path)
    assert response.status_code == 403
    assert OTHER_KEY not in response.text
    assert collector.accepted() == []
    [record] = collector.rejected()
    assert record.status == 403
    assert "***" in record.path
    assert_no_secret(collector)


def test_unknown_paths_and_methods_are_rejected(collector, http):
    assert get(http, collector, f"/api/v2/{KT_KEY}/ins/?{INS_QUERY}").status_code == 404
    response = http.post(collector.base_url + km_path("e", "_p=bob&_n=x"), timeout=10)
    assert response.status_code == 405
    assert http.head(collector.base_url + kt_path("apr", "s=1"), timeout=10).status_code == 405
    assert get(http, collector, f"/api/v1/{KT_KEY}/apr/extra/?s=1").status_code == 404
    assert [r.status for r in collector.rejected()] == [404, 405, 405, 404]
    assert collector.accepted() == []
    assert_no_secret(collector)


# -- signatures ---------------------------------------------------------------------------


def signed_url(collector: Collector, message, secret: str = SECRET) -> str:
    endpoint = Endpoint("kontagent", collector.base_url, KT_KEY, secret)
    return render_url(message, endpoint, now=1_300_000_000.0)


def test_good_signature_is_accepted(collector, http):
    message = kontagent.build("ins", {"s": 123, "r": [456, 789], "u": "9a3d9332b31632a0"})
    url = signed_url(collector, message)
    assert "an_sig=" in url
    assert http.get(url, timeout=10).status_code == 200
    pgr = kontagent.build("pgr", {"s": 456, "ts": "2009-4-22T04:08:35"})
    assert http.get(signed_url(collector, pgr), timeout=10).status_code == 200
    assert [r.key for r in collector.accepted()] == [message.key, pgr.key]


def test_bad_signature_gets_403(collector, http):
    message = kontagent.build("apr", {"s": 456})
    assert http.get(signed_url(collector, message, "not-the-secret"), timeout=10).status_code == 403
    tampered = signed_url(collector, message).replace("s=456", "s=457")
    response = http.get(tampered, timeout=10)
    assert response.status_code == 403
    assert "an_sig" in response.text
    assert collector.accepted() == []
    assert [r.status for r in collector.rejected()] == [403, 403]
    assert all("an_sig=***" in r.path for r in collector.rejected())
    assert_no_secret(collector)


def test_unsigned_request_is_accepted_when_a_secret_is_configured(collector, http):
    assert get(http, collector, kt_path("apr", "s=456")).status_code == 200


# -- faults -------------------------------------------------------------------------------


def statuses(http, collector: Collector, n: int) -> list[int]:
    return [get(http, collector, kt_path("apr", f"s={i + 1}")).status_code for i in range(n)]


def test_error_rate_gives_about_that_many_5xx_deterministically(collector, http):
    collector.set_faults(Faults(error_rate=0.3, seed=11))
    first = statuses(http, collector, 200)
    tally = Counter(first)
    errors = tally[500] + tally[503]
    assert 40 <= errors <= 80
    assert tally[500] > 0
    assert tally[503] > 0
    assert tally[200] == 200 - errors
    counts = collector.counts()
    assert counts["faulted"] == errors
    assert counts["accepted"] == len(collector.accepted()) == tally[200]
    collector.reset()
    assert statuses(http, collector, 200) == first


def test_too_many_requests_carries_retry_after(collector, http):
    collector.set_faults(Faults(too_many_rate=1.0, retry_after=7))
    response = get(http, collector, kt_path("apr", "s=1"))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    collector.set_faults(Faults(too_many_rate=1.0, retry_after=0))
    assert get(http, collector, km_path("s", "_p=bob&x=1")).headers["Retry-After"] == "0"
    assert collector.accepted() == []
    assert collector.counts()["faulted/429"] == 2


def test_latency_and_spikes_are_added_to_responses():
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    faults = Faults(latency=0.25, latency_spike_rate=0.5, latency_spike=2.0, seed=3)
    with Collector(faults=faults, sleep=fake_sleep) as collector, requests.Session() as http:
        assert statuses(http, collector, 40) == [200] * 40
    assert set(delays) == {0.25, 2.25}
    assert 5 <= delays.count(2.25) <= 35


def test_real_latency_still_answers(collector, http):
    collector.set_faults(Faults(latency=0.05, latency_spike_rate=1.0, latency_spike=0.05))
    assert get(http, collector, kt_path("apr", "s=1")).status_code == 200


def test_dropped_connection_is_a_client_connection_error(collector, http):
    collector.set_faults(Faults(drop_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        get(http, collector, kt_path("apr", "s=1"))

    async def with_aiohttp() -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(collector.base_url + km_path("s", "_p=bob&x=1"))

    asyncio.run(with_aiohttp())
    assert collector.accepted() == []
    counts = collector.counts()
    # aiohttp itself resends an idempotent GET once after a disconnect, so 2 or 3 drops.
    assert counts["faulted/drop"] == counts["arrived"] >= 2
    collector.set_faults(Faults())
    assert get(http, collector, kt_path("apr", "s=1")).status_code == 200


def test_reject_users_refuses_only_those_users(collector, http):
    collector.set_faults(Faults(reject_users=frozenset({"789", "bob"})))
    assert get(http, collector, kt_path("ins", INS_QUERY)).status_code == 400  # r=456,789
    assert get(http, collector, kt_path("apr", "s=789")).status_code == 400
    assert get(http, collector, km_path("e", "_p=bob&_n=x")).status_code == 400
    assert get(http, collector, kt_path("apr", "s=456")).status_code == 200
    assert get(http, collector, km_path("e", "_p=alice&_n=x")).status_code == 200
    assert [r.param_map().get("s") or r.param_map()["_p"] for r in collector.accepted()] == [
        "456",
        "alice",
    ]
    assert all("reject_users" in r.reason for r in collector.rejected())


def test_rate_limit_answers_429_above_the_rate():
    now = [100.0]
    collector = Collector(faults=Faults(rate_limit=5), clock=lambda: now[0])
    with collector, requests.Session() as http:
        first = [get(http, collector, kt_path("apr", "s=1")) for _ in range(8)]
        assert [r.status_code for r in first] == [200] * 5 + [429] * 3
        assert first[-1].headers["Retry-After"] == "1"
        # Each destination has its own bucket.
        assert get(http, collector, km_path("e", "_p=bob&_n=x")).status_code == 200
        now[0] += 1.0
        later = [get(http, collector, kt_path("apr", "s=1")).status_code for _ in range(6)]
        assert later == [200] * 5 + [429]
    assert collector.counts()["faulted/rate_limit"] == 4
    assert collector.per_second("kontagent") == {0: 8, 1: 6}
    assert collector.per_second("kissmetrics") == {0: 1}


def test_token_bucket_refills_at_the_rate_up_to_the_burst():
    bucket = TokenBucket(rate=2.0, burst=2.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.5)
    assert not bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(3)] == [True, True, False]


def test_fault_plan_is_deterministic_and_the_rates_add_up():
    faults = Faults(drop_rate=0.1, error_rate=0.2, too_many_rate=0.3, seed=5)
    draws = [FaultPlan(faults, ("kontagent",), 0.0) for _ in range(2)]
    first, second = ([plan.draw("kontagent", 0.0)[0] for _ in range(2000)] for plan in draws)
    assert first == second
    tally = Counter(first)
    assert 150 <= tally["drop"] <= 250
    assert 300 <= tally["500"] + tally["503"] <= 500
    assert 500 <= tally["429"] <= 700
    assert 700 <= tally[None] <= 900


def test_down_service_refuses_connections():
    with pytest.raises(requests.ConnectionError):
        requests.get(down_url() + kt_path("apr", "s=1"), timeout=10)


def test_faults_are_validated():
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="exceed"):
        Faults(error_rate=0.6, drop_rate=0.6)
    with pytest.raises(ValueError, match="rate_limit"):
        Faults(rate_limit=0)
    assert Faults(reject_users={"bob"}).reject_users == frozenset({"bob"})  # type: ignore[arg-type]
    for name in ("close_every", "keepalive_requests"):
        with pytest.raises(ValueError, match=f"{name} must be >= 1"):
            Faults(**{name: 0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout"):
        Faults(idle_timeout=0)
    with pytest.raises(ValueError, match="loopback"):
        Collector(host="0.0.0.0")


# -- a connection's life ----------------------------------------------------------------------


def _raw_get(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: collector\r\n\r\n".encode())


def _answer_head(reader: BinaryIO) -> str:
    """The head of the next answer on a connection, read through its body ('' when closed)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = reader.read(1)
        if not byte:
            return head.decode()
        head += byte
    length = 0
    for line in head.decode().split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    reader.read(length)
    return head.decode()


def _connect(collector: Collector) -> socket.socket:
    port = int(collector.base_url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def test_keep_alive_connections_are_counted() -> None:
    with Collector() as collector, requests.Session() as http:
        for n in range(5):
            assert http.get(collector.base_url + kt_path("apr", f"s={n + 1}"), timeout=10).ok
        assert collector.connections() == 1
        with requests.Session() as other:
            assert other.get(collector.base_url + kt_path("apr", "s=9"), timeout=10).ok
        assert collector.connections() == 2


def test_keepalive_requests_closes_gracefully_after_n_answers() -> None:
    with Collector(faults=Faults(keepalive_requests=2)) as collector:
        with _connect(collector) as sock, sock.makefile("rb") as reader:
            _raw_get(sock, kt_path("apr", "s=1"))
            first = _answer_head(reader)
            _raw_get(sock, kt_path("apr", "s=2"))
            second = _answer_head(reader)
            closed = reader.read(1) == b""
        assert first.startswith("HTTP/1.1 200") and "connection: close" not in first.lower()
        assert second.startswith("HTTP/1.1 200") and "connection: close" in second.lower()
        assert closed and collector.counts()["accepted"] == 2


def test_close_every_closes_a_used_up_connection_under_its_next_request() -> None:
    with Collector(faults=Faults(close_every=2)) as collector:
        with _connect(collector) as sock, sock.makefile("rb") as reader:
            heads = []
            for n in range(3):
                _raw_get(sock, kt_path("apr", f"s={n + 1}"))
                heads.append(_answer_head(reader))
        # two answers, neither saying Connection: close; the third request meets the close
        assert [head[:12] for head in heads] == ["HTTP/1.1 200", "HTTP/1.1 200", ""]
        assert all("connection: close" not in head.lower() for head in heads)
        counts = collector.counts()
        assert (counts["accepted"], counts["arrived"], counts["closed/used_up"]) == (2, 2, 1)
        assert collector.connections() == 1


def test_idle_timeout_closes_an_idle_connection() -> None:
    with Collector(faults=Faults(idle_timeout=0.05)) as collector:
        with _connect(collector) as sock, sock.makefile("rb") as reader:
            _raw_get(sock, kt_path("apr", "s=1"))
            head = _answer_head(reader)
            # blocks until the collector's idle timer closes the connection
            closed = reader.read(1) == b""
        assert head.startswith("HTTP/1.1 200") and closed
        assert collector.counts()["closed/idle"] == 1


def test_the_collector_listens_on_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine cannot bind ::1 (no IPv6 loopback on lo)")
    with Collector(host="::1") as collector:
        assert collector.base_url.startswith("http://[::1]:")
        response = requests.get(collector.base_url + kt_path("apr", "s=1"), timeout=10)
        assert response.status_code == 200 and collector.counts()["accepted"] == 1


# -- records ------------------------------------------------------------------------------


def test_concurrent_requests_are_all_recorded(collector):
    def send(i: int) -> int:
        return requests.get(collector.base_url + kt_path("apr", f"s={i}"), timeout=10).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(1, 201)))
    assert results == [200] * 200
    assert sorted(int(r.param_map()["s"]) for r in collector.accepted()) == list(range(1, 201))
    assert collector.counts()["accepted"] == 200
    assert sum(collector.per_second("kontagent").values()) == 200


def test_reset_forgets_everything(collector, http):
    get(http, collector, kt_path("apr", "s=1"))
    get(http, collector, kt_path("apr", "s=x"))
    collector.reset()
    assert collector.accepted() == []
    assert collector.rejected() == []
    assert collector.counts() == {"arrived": 0, "accepted": 0, "rejected": 0, "faulted": 0}
    assert collector.per_second("kontagent") == {}


def test_max_records_bounds_the_lists_not_the_counts():
    with Collector(max_records=3) as collector, requests.Session() as http:
        statuses(http, collector, 5)
        assert [r.param_map()["s"] for r in collector.accepted()] == ["3", "4", "5"]
        assert collector.counts()["accepted"] == 5


def test_collector_runs_inside_a_running_event_loop():
    async def scenario() -> tuple[int, bytes]:
        async with Collector() as collector, aiohttp.ClientSession() as session:
            url = collector.base_url + km_path("e", "_p=bob&_n=x")
            async with session.get(url) as response:
                body = await response.read()
            assert collector.counts()["kissmetrics/e"] == 1
            return response.status, body

    assert asyncio.run(scenario()) == (200, PIXEL_GIF)


# -- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_command_line_serves_and_stops_cleanly(signum):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "beaconflow.sandbox.collector", "--port", "0", "--error-rate", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert requests.get(base_url + kt_path("apr", "s=1"), timeout=10).status_code == 200
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "Traceback" not in stderr
    assert "accepted=1" in stderr


def test_command_line_refuses_bad_fault_settings():
    from beaconflow.sandbox.collector import main

    assert main(["--port", "0", "--error-rate", "2"]) == 2
    assert main(["--port", "0", "--close-every", "0"]) == 2
    assert main(["--port", "0", "--idle-timeout", "0"]) == 2


# -- scripted answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "first", "second"),
    [
        ("/api/v1/key/ok/?token=t", 200, 200),
        ("/api/v1/key/flaky/?token=t&n=1", 503, 200),
        ("/api/v1/key/throttle/?token=t&after=7", 429, 200),
        ("/api/v1/key/bad/?token=t", 400, 400),
        ("/api/v1/key/unimplemented/?token=t", 501, 501),
        ("/api/v1/key/redirect/?token=t", 302, 302),
        ("/api/v1/key/loop?token=t", 302, 302),
        ("/ok?_k=key&token=t", 200, 200),
        ("/flaky?_k=key&token=t&n=1", 503, 200),
        ("/slow?_k=key&token=t&seconds=0", 200, 200),
    ],
)
def test_scripted_answers_by_kind(path: str, first: int, second: int) -> None:
    with Collector(scripted=True) as collector, requests.Session() as http:
        answers = [
            http.get(collector.base_url + path, allow_redirects=False, timeout=5) for _ in (1, 2)
        ]
        assert [a.status_code for a in answers] == [first, second]
        assert collector.tries("t") == 2
        counts = collector.counts()
        assert counts["scripted"] == 2 and counts["accepted"] == 0
    if first == 429:
        assert answers[0].headers["Retry-After"] == "7"
    if first == 302:
        location = answers[0].headers["Location"]
        assert location == ("/login?next=1" if "redirect" in path else path)
    if first == 200:
        assert answers[0].content == PIXEL_GIF


def test_scripted_kinds_are_served_as_usual_without_scripted() -> None:
    with Collector() as collector, requests.Session() as http:
        assert (
            http.get(collector.base_url + "/api/v1/key/ok/?token=t", timeout=5).status_code == 400
        )
        assert http.get(collector.base_url + "/ok?token=t", timeout=5).status_code == 404
        assert collector.tries("t") == 0 and "scripted" not in collector.counts()


def test_gated_answers_wait_for_the_open_gate() -> None:
    with Collector(scripted=True) as collector, requests.Session() as http:
        collector.close_gate()
        url = collector.base_url + "/api/v1/key/gated/?token=g"
        answers: list[int] = []
        waiting = threading.Thread(
            target=lambda: answers.append(http.get(url, timeout=10).status_code)
        )
        waiting.start()
        while collector.in_flight("gated") == 0:
            time.sleep(0.01)
        assert answers == [] and collector.in_flight("gated") == 1
        collector.open_gate()
        waiting.join()
        assert answers == [200]
        assert (collector.in_flight("gated"), collector.max_in_flight("gated")) == (0, 1)


def test_a_dropped_scripted_request_gets_no_answer() -> None:
    with Collector(scripted=True) as collector, pytest.raises(requests.ConnectionError):
        requests.get(collector.base_url + "/api/v1/key/drop/?token=d", timeout=5)


def test_the_command_offers_scripted_answers() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "beaconflow.sandbox.collector", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--scripted" in done.stdout
