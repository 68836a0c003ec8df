"""Sender processes (beaconflow.delivery.sendproc) against a real aiohttp server on 127.0.0.1.

The server is the sandbox collector playing scripted answers (the ``server`` fixture): the
message kind in the URL path chooses the answer, and every URL carries the API key
``SECRETKEY123``, which must never come out of a child.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from beaconflow.delivery.ledger import (
    ledger_files,
    ledger_key,
    read_ledger_file,
)
from beaconflow.delivery.ledger_days import file_days
from beaconflow.delivery.ledger_lock import Holder, Lease, iso, lock_path
from beaconflow.delivery.retry import RetryPolicy
from beaconflow.delivery.sender import (
    REDIRECT_SECONDS,
    REDIRECT_WINDOW,
    Request,
    SenderConfig,
)
from beaconflow.delivery.sendproc import SenderPool, shared_client, split_config
from beaconflow.delivery.stop import RunStop
from beaconflow.sandbox.collector import Collector
from tests.conftest import KEY, kissmetrics_url, kontagent_url
from tests.delivery.test_sender import BODY_WRITTEN_BOUND, NO_WAIT, ManualClock, message
from tests.fakes.s3 import moto_s3
from tests.fs_faults import SmallDisk
from tests.hostile_servers import KeepAliveCloser


def config(concurrency: int = 4, retry: RetryPolicy = NO_WAIT) -> SenderConfig:
    return SenderConfig(concurrency, 5.0, retry, {}, adaptive=False)


def _wait_for(condition: object, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: it runs no more)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_split_config_divides_concurrency_and_rates() -> None:
    base = SenderConfig(5, 5.0, NO_WAIT, {"kontagent": 100.0, "kissmetrics": None})
    parts = split_config(base, 2)
    assert [p.concurrency for p in parts] == [3, 2]
    assert all(p.rates == {"kontagent": 50.0, "kissmetrics": None} for p in parts)
    assert all(p.progress_interval == float("inf") for p in parts), "the parent logs progress"
    # never more children than request slots: --concurrency 1 means one request in flight
    assert [p.concurrency for p in split_config(base.__class__(1, 5.0, NO_WAIT), 4)] == [1]
    with pytest.raises(ValueError, match="processes must be >= 1"):
        split_config(base, 0)


def test_each_message_gets_its_own_outcome(server: Collector) -> None:
    kinds = ["ok", "bad", "flaky", "unimplemented"] * 25
    requests = []
    for n, kind in enumerate(kinds):
        token = f"own-{kind}-{n}"
        extra = {"n": 1} if kind == "flaky" else {}
        requests.append(Request(message(kind, token), kontagent_url(server, kind, token, **extra)))
    with SenderPool(config(concurrency=8), (KEY,), processes=2) as pool:
        assert pool.processes == 2
        client = pool.client()
        for start in range(0, len(requests), 7):
            client.submit_many(requests[start : start + 7])
        deliveries = client.take_finished() + client.flush()
        assert client.flush() == []
    assert sorted(d.message.param("token") or "" for d in deliveries) == sorted(
        r.message.param("token") or "" for r in requests
    )
    by_kind = {d.message.kind: d for d in deliveries}
    assert all(d.message is r.message for d, r in zip(
        sorted(deliveries, key=lambda d: d.message.key),
        sorted(requests, key=lambda r: r.message.key),
        strict=True,
    ))  # fmt: skip
    assert by_kind["ok"].delivered and by_kind["ok"].attempts == 1
    assert by_kind["flaky"].delivered and by_kind["flaky"].attempts == 2
    assert (by_kind["bad"].delivered, by_kind["bad"].status) == (False, 400)
    assert by_kind["bad"].error == "HTTP 400: bad request (scripted)"
    assert by_kind["bad"].attempts == 1
    assert by_kind["unimplemented"].status == 501
    stats = pool.stats()
    assert (stats.delivered, stats.failed, stats.retries) == (50, 50, 25)
    assert stats.sent == 125 and stats.outcomes == {"200": 50, "503": 25, "400": 25, "501": 25}


def test_children_quote_bodies_leave_huge_ones_unread_and_keep_sources(
    server: Collector,
) -> None:
    kinds = ["explain", "huge", "ok"]
    requests = [
        Request(
            message(kind, f"body-{kind}").with_source(f"events.jsonl:{n}"),
            kontagent_url(server, kind, f"body-{kind}"),
        )
        for n, kind in enumerate(kinds, 1)
    ]
    with SenderPool(config(concurrency=4), (KEY,), processes=2) as pool:
        client = pool.client()
        client.submit_many(requests)
        deliveries = {d.message.kind: d for d in client.take_finished() + client.flush()}
    explained = deliveries["explain"]
    assert (explained.delivered, explained.status) == (False, 400)
    assert explained.error is not None and KEY not in explained.error
    assert explained.error.startswith('HTTP 400: {"error": "invalid parameter s (scripted)"')
    assert deliveries["huge"].delivered and deliveries["ok"].delivered
    written = server.body_written("body-huge")
    assert written is not None and written < BODY_WRITTEN_BOUND
    # the parent keeps each message, with where it came from
    assert {kind: d.message.source for kind, d in deliveries.items()} == {
        "explain": "events.jsonl:1",
        "huge": "events.jsonl:2",
        "ok": "events.jsonl:3",
    }


def test_children_share_the_concurrency(server: Collector) -> None:
    server.close_gate()
    try:
        with SenderPool(config(concurrency=5), processes=2) as pool:
            client = pool.client()
            # 20: what the children may have outstanding (4 per slot) without blocking
            tokens = [f"gate-{n}" for n in range(20)]
            client.submit_many(
                [Request(message("gated", t), kontagent_url(server, "gated", t)) for t in tokens]
            )
            _wait_for(lambda: server.in_flight("gated") == 5, "5 requests in flight")
            time.sleep(0.2)  # were there room, more would be in flight by now
            assert server.in_flight("gated") == 5
            server.open_gate()
            assert len(client.flush()) == 20
        assert server.max_in_flight("gated") == 5
    finally:
        server.open_gate()


def test_clients_of_one_pool_get_only_their_own_deliveries(server: Collector) -> None:
    first = shared_client(config(), (KEY,), processes=2)
    second = shared_client(config(), (KEY,), processes=2)
    assert first.pool is second.pool
    pids = [child.process.pid for child in first.pool._children]
    for client, name in ((first, "first"), (second, "second")):
        client.submit_many(
            [
                Request(message("ok", f"{name}-{n}"), kontagent_url(server, "ok", f"{name}-{n}"))
                for n in range(40)
            ]
        )
    assert {d.message.param("token")[:5] for d in second.flush()} == {"secon"}  # type: ignore[index]
    assert {d.message.param("token")[:5] for d in first.flush()} == {"first"}  # type: ignore[index]
    first.close()
    assert not any(_gone(pid) for pid in pids), "the pool outlives its first client"
    second.close()
    assert all(_gone(pid) for pid in pids), "and closes with its last"
    other = shared_client(config(), (KEY,), processes=2)
    assert other.pool is not first.pool
    other.close()


def test_each_child_keeps_a_ledger_journal_and_seals_it(server: Collector, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger")
    fingerprints = {"kontagent": "fp0000000001"}
    # each message's event day crosses the pipe with it: its entry is filed under that day
    requests = [
        Request(
            message(kind, f"ledger-{kind}-{n}").with_origin("", 20_240 + n % 3),
            kontagent_url(server, kind, f"ledger-{kind}-{n}"),
        )
        for n in range(30)
        for kind in ("ok", "bad")
    ]
    with SenderPool(
        config(), (KEY,), processes=2, ledger=ledger, fingerprints=fingerprints
    ) as pool:
        client = pool.client()
        client.submit_many(requests)
        client.flush()
        journals = [p for p in os.listdir(ledger) if p.startswith("journal-")]
        assert len(journals) == 2, "written through as answers come in, one per child"
        client.seal()
        shards = sorted(p.split("-")[0] for p in os.listdir(ledger) if p.endswith(".jsonl"))
        assert shards == ["shard", "shard"]
    recorded = [key for path in ledger_files(ledger) for key in read_ledger_file(path)]
    delivered = [r.message for r in requests if r.message.kind == "ok"]
    assert sorted(recorded) == sorted(ledger_key("fp0000000001", m) for m in delivered)
    lines = [json.loads(x) for p in ledger_files(ledger) for x in Path(p).read_text().split()]
    lines = [x for x in lines if "sealed" not in x]
    assert {(x["destination"], x["kind"]) for x in lines} == {("kontagent", "ok")}
    days = {ledger_key("fp0000000001", r.message): r.message.day for r in requests}
    assert all(x["day"] == days[x["ledger"]] for x in lines)
    # each shard named with its entries' days: within June 1st to 3rd
    spans = [file_days(p) for p in ledger_files(ledger)]
    assert all(span is not None and 20_240 <= span[0] <= span[1] <= 20_242 for span in spans)


def test_a_child_reports_ambiguous_attempts_and_marks_its_ledger_entry(tmp_path: Path) -> None:
    """A kept-alive connection closed on reading the second request: resent, then delivered.

    The resend is a free reconnect: no attempt of its own, and its count crosses the pipe.
    """
    ledger = str(tmp_path / "ledger")
    fingerprints = {"kontagent": "fp0000000001"}
    with KeepAliveCloser() as closer:
        requests = [
            Request(message("evt", token), f"{closer.base_url}/api/v1/{KEY}/evt/?token={token}")
            for token in ("first", "second")
        ]
        # one child, one request in flight: the second goes out on the first's connection
        with SenderPool(
            config(concurrency=1), (KEY,), processes=1, ledger=ledger, fingerprints=fingerprints
        ) as pool:
            client = pool.client()
            client.submit_many(requests)
            deliveries = {d.message.param("token"): d for d in client.flush()}
            client.seal()
            reconnects = pool.stats().reconnects
        assert len(closer.unanswered) == 1 and reconnects == 1
    first, second = deliveries["first"], deliveries["second"]
    assert (first.delivered, first.ambiguous, first.ambiguous_resent) == (True, 0, False)
    assert (second.delivered, second.attempts, second.reconnects) == (True, 1, 1)
    assert (second.ambiguous, second.ambiguous_resent) == (1, True)
    lines = [json.loads(x) for p in ledger_files(ledger) for x in Path(p).read_text().split()]
    marks = {x["ledger"]: x.get("ambiguous") for x in lines if "sealed" not in x}
    assert marks == {
        ledger_key("fp0000000001", requests[0].message): None,
        ledger_key("fp0000000001", requests[1].message): 1,
    }


def test_a_ledger_needs_fingerprints() -> None:
    with pytest.raises(ValueError, match="fingerprints"):
        SenderPool(config(), processes=1, ledger="/tmp/never-made")


def test_a_child_that_cannot_start_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    pool = SenderPool(
        config(),
        (KEY,),
        processes=1,
        ledger=str(blocker / "ledger"),
        fingerprints={"kontagent": "f"},
    )
    with pytest.raises(RuntimeError, match=r"sender process 0: cannot start: .*Error") as caught:
        client = pool.client()
        for _ in range(100):  # the child's answer comes when it has started
            client.submit_many([Request(message("ok", "x"), f"http://127.0.0.1:9/?_k={KEY}")])
            client.flush()
    assert KEY not in str(caught.value)
    pool.close()


def test_a_dead_child_is_an_error_not_a_hang(server: Collector) -> None:
    pool = SenderPool(config(), processes=1)
    client = pool.client()
    child = pool._children[0].process
    child.kill()
    child.wait()
    with pytest.raises(RuntimeError, match=r"sender process 0 was killed \(signal 9\)"):
        client.submit_many([Request(message("ok", "dead"), kontagent_url(server, "ok", "dead"))])
        client.flush()
    pool.close()


def test_secrets_stay_out_of_what_children_say(
    server: Collector, capfd: pytest.CaptureFixture[str]
) -> None:
    server.close_gate()
    try:
        with SenderPool(config(concurrency=2), (KEY,), processes=2) as pool:
            client = pool.client()
            for pair in ((0, 1), (2, 3)):  # one pair to each child
                requests = [
                    Request(message("gated", f"s{n}"), kontagent_url(server, "gated", f"s{n}"))
                    for n in pair
                ]
                client.submit_many(requests)
            _wait_for(lambda: server.in_flight("gated") == 2, "2 requests in flight")
        # closed unflushed: each child says it abandoned its requests
    finally:
        server.open_gate()
    err = capfd.readouterr().err
    assert err.count("unfinished requests abandoned") == 2
    assert KEY not in err


def test_children_exit_when_their_parent_is_killed(server: Collector, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from beaconflow.delivery.retry import RetryPolicy
        from beaconflow.delivery.sender import SenderConfig
        from beaconflow.delivery.sendproc import SenderPool
        pool = SenderPool(SenderConfig(4, 5.0, RetryPolicy()), processes=2)
        print(" ".join(str(c.process.pid) for c in pool._children), flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    assert parent.stdout is not None
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(pids) == 2 and not any(_gone(pid) for pid in pids)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    _wait_for(lambda: all(_gone(pid) for pid in pids), "the children to exit")


def test_closed_pool_refuses_more(server: Collector) -> None:
    pool = SenderPool(config(), processes=1)
    client = pool.client()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.submit_many([Request(message("ok", "late"), kontagent_url(server, "ok", "late"))])
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.submit_many([Request(message("ok", "late"), kontagent_url(server, "ok", "late"))])


def test_the_pool_logs_progress_for_all_its_children(
    server: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="beaconflow")
    now = [0.0]
    progress = SenderConfig(4, 5.0, NO_WAIT, {}, progress_interval=10.0, adaptive=False)
    with SenderPool(progress, processes=2, clock=lambda: now[0]) as pool:
        client = pool.client()
        client.submit_many(
            [
                Request(message("ok", f"p{n}"), kontagent_url(server, "ok", f"p{n}"))
                for n in range(12)
            ]
        )
        client.flush()
        assert not [r for r in caplog.records if r.getMessage().startswith("sent ")]
        now[0] = 12.0
        client.submit_many([Request(message("ok", "p12"), kontagent_url(server, "ok", "p12"))])
        client.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "beaconflow.send"]
    assert any(line.startswith("sent 1") and "/s), retries 0, failed 0" in line for line in lines)
    assert lines[-1] == "done: sent 13, delivered 13, retries 0, failed 0 (2 sender processes)"


def test_sender_processes_raise_glibcs_malloc_thresholds() -> None:
    import platform

    from beaconflow.delivery.sendproc import raise_malloc_thresholds

    if platform.libc_ver()[0] != "glibc":
        assert raise_malloc_thresholds() is False
        return
    # in a process of its own: the test process keeps glibc's defaults
    code = "from beaconflow.delivery.sendproc import raise_malloc_thresholds as r; print(r())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_a_child_whose_ledger_fills_stops_every_child_without_a_traceback(
    server: Collector, small_disk: SmallDisk, capfd: pytest.CaptureFixture[str]
) -> None:
    small_disk.fill(free=0)
    stop = RunStop()
    fingerprints = {"kontagent": "f" * 12, "kissmetrics": "e" * 12}
    with SenderPool(
        config(concurrency=2),
        (KEY,),
        processes=2,
        ledger=str(small_disk.path / "ledger"),
        fingerprints=fingerprints,
        stop=stop,
    ) as pool:
        client = pool.client()
        tokens = [f"p{n}" for n in range(200)]
        client.submit_many(
            [Request(message("ok", t), kontagent_url(server, "ok", t)) for t in tokens]
        )
        deliveries = client.flush()
        client.close()
    assert len(deliveries) == 200
    assert stop.reason is not None and stop.reason.startswith("ledger not writable: ")
    assert stop.reason.endswith("No space left on device")
    sent = sum(server.tries(t) for t in tokens)
    assert sent <= 2 + 2, "at most what was in flight when the first record failed, per child"
    not_attempted = [d for d in deliveries if d.error and d.error.startswith("not attempted")]
    assert len(not_attempted) == 200 - sent
    err = capfd.readouterr().err
    assert "Traceback" not in err


def test_the_pool_judges_redirects_over_all_its_children(server: Collector) -> None:
    clock = ManualClock()
    with SenderPool(config(concurrency=4), (KEY,), processes=2, clock=clock) as pool:
        client = pool.client()

        def send(prefix: str, kind: str, count: int) -> list[object]:
            tokens = [f"{prefix}{n}" for n in range(count)]
            client.submit_many(
                [Request(message(kind, t), kontagent_url(server, kind, t)) for t in tokens]
            )
            return list(client.flush())

        send("pd", "ok", 8)  # both children deliver
        # one child (or both) now sees only redirects: the destination delivered, so no stop
        redirected = send("pr", "redirect", 3 * REDIRECT_WINDOW)
        assert all(d.stop is None for d in redirected)  # type: ignore[attr-defined]
        clock.now += REDIRECT_SECONDS  # but redirects that last are a portal: it stops
        later = send("pl", "redirect", 3 * REDIRECT_WINDOW)
        client.close()
    stops = {d.stop for d in later} - {None}  # type: ignore[attr-defined]
    assert len(stops) == 1 and next(iter(stops)).startswith("kontagent is misconfigured")
    # after the pool's decision, at most what the children had already been handed goes out
    assert sum(server.tries(f"pl{n}") for n in range(3 * REDIRECT_WINDOW)) <= 1 + 4 * 4


def test_a_child_that_finds_a_destination_down_halts_it_in_every_child(
    server: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    stop = RunStop()
    heard: list[str] = []
    stop.subscribe_down(lambda destination, reason: heard.append(destination))
    # retried until the breaker decides: every answer is a 503 for the whole (short) window
    endless = RetryPolicy(max_attempts=10**6, base_delay=0.0, max_delay=0.0)
    cfg = SenderConfig(4, 5.0, endless, {}, adaptive=False, breaker_window=0.2)
    failing = [
        Request(message("flaky", f"bd{n}"), kontagent_url(server, "flaky", f"bd{n}", n=10**9))
        for n in range(30)
    ]
    healthy = [
        Request(message("ok", f"bh{n}", "kissmetrics"), kissmetrics_url(server, "ok", f"bh{n}"))
        for n in range(30)
    ]
    caplog.set_level(logging.INFO, logger="beaconflow.send")
    with SenderPool(cfg, (KEY,), processes=2, stop=stop) as pool:
        client = pool.client()
        client.submit_many(failing + healthy)
        deliveries = client.take_finished() + client.flush()
        client.close()
    reason = "destination down: kontagent (only timeouts, connection errors and 5xx for 0.2s)"
    assert stop.down == {"kontagent": reason} and heard == ["kontagent"]
    assert stop.reason is None, "the run goes on"
    by_token = {d.message.param("token"): d for d in deliveries}
    down = [by_token[f"bd{n}"] for n in range(30)]
    assert all(not d.delivered and d.stop == reason for d in down)
    assert any(d.error == f"not attempted: {reason}" for d in down)
    assert all(by_token[f"bh{n}"].delivered for n in range(30)), "the other goes on"
    # the parent's totals say done: one destination down does not stop the senders
    assert re.search(r"done: sent \d+, delivered 30", caplog.text)


def test_each_child_keeps_the_deadline_on_its_own_clock(server: Collector) -> None:
    cfg = SenderConfig(4, 5.0, NO_WAIT, {}, adaptive=False, deadline=time.time() - 1.0)
    requests = [
        Request(message("ok", f"dl{n}"), kontagent_url(server, "ok", f"dl{n}")) for n in range(12)
    ]
    with SenderPool(cfg, (KEY,), processes=2) as pool:
        client = pool.client()
        client.submit_many(requests)
        deliveries = client.take_finished() + client.flush()
        client.close()
    assert len(deliveries) == 12
    assert all(d.error == "not attempted: deadline" and d.stop == "deadline" for d in deliveries)
    assert sum(server.tries(f"dl{n}") for n in range(12)) == 0


def test_a_child_that_finds_the_runs_lock_taken_over_stops_the_run(
    server: Collector, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The children check the run's lease themselves: they woke from a freeze with it."""
    stop = RunStop()
    holder = Holder("here", 4242, 0.0, 0.0)
    other = Holder("there", 4343, time.time(), time.time())
    Path(lock_path(str(tmp_path), "a" * 12)).write_bytes(other.to_bytes())
    lease = Lease(str(tmp_path), ("a" * 12,), holder, stale_after=100)
    with SenderPool(
        replace(config(concurrency=2), lease=lease), (KEY,), processes=2, stop=stop
    ) as pool:
        client = pool.client()
        tokens = [f"lease-{n}" for n in range(20)]
        client.submit_many(
            [Request(message("ok", t), kontagent_url(server, "ok", t)) for t in tokens]
        )
        deliveries = client.flush()
        client.close()
    reason = (
        f"the ledger's lock of endpoint {'a' * 12} was taken over by host there pid 4343 "
        f"since {iso(other.since)}"
    )
    assert stop.reason == reason, "the parent was told"
    assert sum(server.tries(t) for t in tokens) == 0
    assert all(d.error == f"not attempted: {reason}" for d in deliveries)
    assert "Traceback" not in capfd.readouterr().err


def test_a_child_that_finds_the_runs_lease_object_taken_over_stops_the_run(
    server: Collector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The same on an s3:// ledger: each child reads the lease object through its own store.

    Reached as the run reached it (the lease's store options), on moto's S3 server.
    """
    import boto3

    from beaconflow.delivery.lease_store import StoreOptions
    from beaconflow.delivery.ledger_lease import lease_name

    # test credentials only, inherited by the children
    with moto_s3(monkeypatch, tmp_path) as (endpoint, bucket):
        client = boto3.client("s3", endpoint_url=endpoint)
        now = time.time()
        other = Holder("there", 4343, now, now, "fedcba9876543210")
        client.put_object(
            Bucket=bucket, Key=f"nightly/{lease_name('a' * 12)}", Body=other.to_bytes()
        )
        holder = Holder("here", 4242, now, now, "0123456789abcdef")
        lease = Lease(
            f"s3://{bucket}/nightly", ("a" * 12,), holder, stale_after=100,
            store=StoreOptions(s3_endpoint_url=endpoint),
        )  # fmt: skip
        stop = RunStop()
        with SenderPool(
            replace(config(concurrency=2), lease=lease), (KEY,), processes=2, stop=stop
        ) as pool:
            pool_client = pool.client()
            tokens = [f"s3-lease-{n}" for n in range(20)]
            pool_client.submit_many(
                [Request(message("ok", t), kontagent_url(server, "ok", t)) for t in tokens]
            )
            deliveries = pool_client.flush()
            pool_client.close()
    reason = (
        f"the ledger's lock of endpoint {'a' * 12} was taken over by host there pid 4343 "
        f"since {iso(now)}"
    )
    assert stop.reason == reason, "the parent was told"
    assert sum(server.tries(t) for t in tokens) == 0
    assert all(d.error == f"not attempted: {reason}" for d in deliveries)
    assert "Traceback" not in capfd.readouterr().err


def test_a_pool_takes_the_processes_started_before_it(
    server: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The processes started early send for the next pool; the rest are stopped cleanly."""
    from beaconflow.delivery import sendproc

    sendproc.prestart(3)
    started = [spare[0] for spare in sendproc._spares]
    assert len(started) == 3
    requests = [Request(message("ok", f"t{n}"), kontagent_url(server, "ok", f"t{n}"))
                for n in range(10)]  # fmt: skip
    try:
        with SenderPool(config(), (KEY,), processes=2) as pool:
            taken = [child.process for child in pool._children]
            assert taken == started[:2], "the pool took the started processes, in order"
            client = pool.client()
            client.submit_many(requests)
            assert all(d.delivered for d in client.flush())
        assert [spare[0] for spare in sendproc._spares] == started[2:]
        # a spare started with another environment than the pool's is not taken
        monkeypatch.setenv("BEACONFLOW_TEST_SPARE", "other")
        with SenderPool(config(), (KEY,), processes=1) as pool:
            assert pool._children[0].process not in started
            assert sendproc._spares == []
    finally:
        sendproc.discard_spares()
    assert all(process.returncode == 0 for process in started), "each ended on its own"


def test_a_spare_no_pool_took_ends_without_a_word(tmp_path: Path) -> None:
    """A run that stops before sending (a bad flag, a held ledger) stops its spares quietly."""
    script = textwrap.dedent(
        """
        from beaconflow.delivery import sendproc
        sendproc.prestart(2)
        spares = [spare[0] for spare in sendproc._spares]
        sendproc.discard_spares()
        print([process.returncode for process in spares])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.stdout.strip() == "[0, 0]" and done.stderr == "", done.stderr


def test_a_sender_process_survives_a_signal_sent_while_it_imports() -> None:
    """A process group's SIGTERM that comes while a sender process imports its libraries.

    The run's process handles it; the sender process, started with the signal held, drops
    it once it ignores SIGTERM, instead of dying of it before it could.
    """
    from beaconflow.delivery import sendproc

    env = dict(os.environ, PYTHONPATH=sendproc._child_path())
    spare = sendproc._spawn(env)
    spare[0].send_signal(signal.SIGTERM)  # at once: it takes ~0.4 s to import
    sendproc._discard(spare)  # the end of its command pipe: it exits on its own
    assert spare[0].returncode == 0
