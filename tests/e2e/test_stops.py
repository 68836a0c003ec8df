"""Stopping early instead of corrupting silently: redirects, an unwritable ledger or dead letter.

Unit tests of the stop flag and of the bulk sender against the real local server, then the
sender processes, then the command itself against real failing filesystems (a read-only
mount, a tmpfs that fills: tests/fs_faults.py) and a collector that redirects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from beaconflow.client import HTTPStatusError, KissmetricsClient, KontagentClient
from beaconflow.delivery.ledger import LedgerError, LedgerWriter, ledger_files, read_ledger_file
from beaconflow.delivery.sender import REDIRECT_SECONDS, REDIRECT_WINDOW, BulkSender, Request
from beaconflow.delivery.sendproc import SenderPool
from beaconflow.delivery.stop import RunStop, forget_run, run_stop
from beaconflow.model.message import Message
from beaconflow.report.run import RunReport
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector, Faults
from tests.conftest import (
    KEY,
    KONTAGENT_KEY,
    backfill_flags,
    kissmetrics_url,
    kontagent_url,
    read_dead_letter,
    run_cli,
    run_json,
)
from tests.delivery.test_sender import ManualClock, RecordingSleep, config, message
from tests.fs_faults import SmallDisk

NOW = 1_800_000_000


# -- the stop flag -------------------------------------------------------------------------


def test_the_first_reason_wins_and_every_listener_hears_it() -> None:
    stop = RunStop()
    heard: list[str] = []
    stop.subscribe(heard.append)
    assert stop.reason is None
    assert stop.trip("ledger not writable: /l: No space left on device")
    assert not stop.trip("a later reason")
    assert stop.reason == heard[0] == "ledger not writable: /l: No space left on device"
    late: list[str] = []
    stop.subscribe(late.append)  # subscribing after the trip hears it at once
    assert late == heard and len(heard) == 1


def test_an_unsubscribed_listener_hears_nothing() -> None:
    stop = RunStop()
    heard: list[str] = []
    stop.subscribe(heard.append)
    stop.unsubscribe(heard.append)
    stop.unsubscribe(heard.append)  # twice is harmless
    stop.trip("x")
    assert heard == []


def test_runs_have_their_own_flags() -> None:
    first, second = run_stop("run-a"), run_stop("run-b")
    assert first is run_stop("run-a") and first is not second
    first.trip("stop a")
    assert second.reason is None
    forget_run("run-a")
    forget_run("run-b")
    assert run_stop("run-a").reason is None
    forget_run("run-a")


# -- the bulk sender ---------------------------------------------------------------------


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

    def record(delivered: Message) -> None:
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


def test_the_client_never_follows_a_redirect(server: Collector) -> None:
    client = KissmetricsClient(KEY, base_url=f"{server.base_url}")
    login_hits = server.counts().get("faulted/login_page", 0)
    with client, pytest.raises(HTTPStatusError) as raised:
        # a scripted /redirect answers 302 to the collector's login page
        client.send_message(Message("kissmetrics", "redirect", (("token", "c-1"),)))
    assert raised.value.status == 302 and not raised.value.retriable
    assert f"redirected to {server.base_url}" in str(raised.value)
    assert KEY not in str(raised.value)
    assert server.counts().get("faulted/login_page", 0) == login_hits


def test_the_client_names_the_host_of_an_absolute_redirect() -> None:
    with Collector(faults=Faults(redirect_destinations=frozenset({"kontagent"}))) as collector:
        client = KontagentClient("feedfacefeedfacefeedfacefeedface", base_url=collector.base_url)
        with client, pytest.raises(HTTPStatusError, match=r"redirected to http://127\.0\.0\.1:"):
            client.notify_new_install(123)
        assert collector.counts().get("faulted/login_page", 0) == 0
    # requests itself would have followed it to the login page's 200
    with Collector(faults=Faults(redirect_destinations=frozenset({"kontagent"}))) as collector:
        url = f"{collector.base_url}/api/v1/{KONTAGENT_KEY}/apa/?s=1"
        assert requests.get(url, timeout=5).status_code == 200


# -- sender processes --------------------------------------------------------------------


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


# -- the command ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datetime import UTC, datetime

    path = tmp_path_factory.mktemp("logs") / "events.jsonl"
    events = generate_events(
        300, seed=5, start=datetime(2025, 6, 1, tzinfo=UTC), end=datetime(2025, 6, 3, tzinfo=UTC)
    )
    write_jsonl(events, path)
    return path


def _two_collectors(redirect: str) -> tuple[Collector, Collector]:
    faults = Faults(redirect_destinations=frozenset({"kontagent"}), redirect=redirect)
    return Collector(faults=faults), Collector()


@pytest.mark.parametrize(("redirect", "processes"), [("login", "0"), ("loop", "2")])
def test_a_redirecting_destination_stops_it_and_nothing_is_counted_delivered(
    events_file: Path, tmp_path: Path, redirect: str, processes: str
) -> None:
    wrong, right = _two_collectors(redirect)
    ledger = tmp_path / "ledger"
    with wrong, right:
        flags = backfill_flags(right.base_url, tmp_path, events_file)
        flags = [f for f in flags if not f.startswith("--kontagent-url=")]
        flags += [
            f"--kontagent-url={wrong.base_url}",
            f"--ledger={ledger}",
            f"--send-processes={processes}",
        ]
        status, report = run_json(flags, now=NOW)
        assert status == 4
        assert report["stopped"].startswith("kontagent is misconfigured: its last")
        assert report["invariant_errors"] == []
        by = report["by_destination"]
        assert "delivered" not in by["kontagent"] and by["kontagent"]["failed"] > 0
        assert by["kissmetrics"]["delivered"] > 0 and "failed" not in by["kissmetrics"]
        assert wrong.counts().get("faulted/login_page", 0) == 0, "the login page never fetched"
        assert len(wrong.accepted()) == 0
        # the ledger holds KISSmetrics deliveries only
        kinds = Counter(
            json.loads(line)["destination"]
            for path in ledger_files(str(ledger))
            for line in Path(path).read_text().splitlines()
        )
        assert set(kinds) == {"kissmetrics"}
        dead = read_dead_letter(tmp_path)  # every line parses
        reasons = Counter(d["reason"].split(":")[0] for d in dead)
        assert reasons["not attempted"] > 0 and reasons["HTTP 302"] >= 1
        assert report["messages_not_attempted"] == reasons["not attempted"]
        assert all(KONTAGENT_KEY not in json.dumps(d) for d in dead)

        # the URL is mended; the dead letter goes back in and every Kontagent message goes
        replay = tmp_path / "replay.jsonl"
        replay.write_text((tmp_path / "dead.jsonl").read_text())
        again_flags = backfill_flags(right.base_url, tmp_path / "again", replay)
        status, again = run_json([*again_flags, f"--ledger={ledger}"], now=NOW)
        assert status == 0, again
        assert again["messages_delivered"] == by["kontagent"]["failed"]
        assert (
            len([r for r in right.accepted() if r.destination == "kontagent"])
            == by["kontagent"]["failed"]
        )


def test_a_read_only_ledger_stops_the_run_before_anything_is_sent(
    events_file: Path, tmp_path: Path, read_only_dir: Path
) -> None:
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        done = run_cli(*flags, f"--ledger={read_only_dir / 'ledger'}")
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            f"beaconflow: error: ledger not writable: {read_only_dir / 'ledger'}: "
            "Read-only file system"
        )
        assert collector.counts().get("arrived", 0) == 0 and not collector.accepted()


def test_a_read_only_dead_letter_stops_the_run_before_anything_is_sent(
    events_file: Path, tmp_path: Path, read_only_dir: Path
) -> None:
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        flags = [f for f in flags if not f.startswith("--dead-letter=")]
        done = run_cli(*flags, f"--dead-letter={read_only_dir / 'dead.jsonl'}")
        assert done.returncode == 2, done.stderr
        assert "dead letter not writable" in done.stderr and "Read-only file system" in done.stderr
        assert not collector.accepted()


@pytest.mark.parametrize("processes", ["0", "2"])
def test_a_ledger_disk_that_fills_stops_sending_and_the_next_run_finishes(
    events_file: Path, tmp_path: Path, small_disk: SmallDisk, processes: str
) -> None:
    ledger = small_disk.path / "ledger"
    small_disk.fill(free=8192)  # two pages: some deliveries are recorded, then it is full
    with Collector() as collector:
        flags = [*backfill_flags(collector.base_url, tmp_path, events_file), f"--ledger={ledger}"]
        flags += ["--concurrency=4", f"--send-processes={processes}"]
        done = run_cli(*flags)
        assert done.returncode == 4, done.stderr
        assert "Traceback" not in done.stderr
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["stopped"] == f"ledger not writable: {ledger}: No space left on device"
        assert report["exit_status"] == 4 and report["invariant_errors"] == []
        first = len(collector.accepted())
        assert 0 < first < report["messages_built"], "it stopped early"
        assert "stopped early" in done.stderr
        recorded = sum(1 for p in ledger_files(str(ledger)) for _ in read_ledger_file(p))

        small_disk.free_up()  # the operator makes room; the same command again
        done = run_cli(*flags)
        assert done.returncode == 0, done.stderr
        total = len(collector.accepted())
        again = json.loads((tmp_path / "report.json").read_text())
        assert again["stopped"] is None
        # sent again: what was delivered but not recorded, at most what was in flight
        resent = first - recorded
        assert 0 <= resent <= 4
        assert again["messages_skipped"] == recorded
        unique = report["messages_built"] - report["messages_duplicate"]
        assert total == unique + resent, "nothing lost, and sent twice only what was in flight"


def test_a_dead_letter_disk_that_fills_stops_sending(
    events_file: Path, tmp_path: Path, small_disk: SmallDisk
) -> None:
    small_disk.fill(free=8192)
    dead = small_disk.path / "dead.jsonl"
    with Collector(faults=Faults(reject_users=_all_users(events_file))) as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        flags = [f for f in flags if not f.startswith("--dead-letter=")]
        flags += [f"--dead-letter={dead}", f"--ledger={tmp_path / 'ledger'}", "--concurrency=4"]
        done = run_cli(*flags)
        assert done.returncode == 4, done.stderr
        assert "Traceback" not in done.stderr
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["stopped"].startswith(f"dead letter not writable: {dead}: ")
        assert "No space left on device" in report["stopped"]
        assert len(collector.rejected()) < report["messages_built"], "it stopped early"


def _all_users(events_file: Path) -> frozenset[str]:
    users = set()
    for line in events_file.read_text().splitlines():
        users.add(str(json.loads(line)["user_id"]))
    return frozenset(users)


def test_no_log_line_per_unrecorded_delivery(
    server: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def record(_: Message) -> None:
        raise LedgerError("ledger not writable: /l: Read-only file system")

    requests_ = [
        Request(message("ok", f"q{n}"), kontagent_url(server, "ok", f"q{n}")) for n in range(20)
    ]
    stop = RunStop()
    with BulkSender(config(concurrency=4), (KEY,), on_delivered=record, stop=stop) as sender:
        _tokens(sender, requests_)
    assert caplog.text.count("ledger not writable") == 1, caplog.text


def test_a_failed_ledger_writer_stays_failed(small_disk: SmallDisk) -> None:
    small_disk.fill(free=0)
    writer = LedgerWriter(str(small_disk.path / "l"), {"kontagent": "f" * 12})
    one = Message("kontagent", "apa", (("s", "1"),))
    with pytest.raises(LedgerError, match="No space left on device"):
        for _ in range(1000):
            writer.record_one(one)
    small_disk.free_up()
    with pytest.raises(LedgerError, match="No space left on device"):
        writer.record_one(one)  # no half-written journal is written to again
    writer.close()


def test_a_run_that_fails_after_sending_began_exits_4_with_a_partial_report(
    events_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beaconflow.transforms import send

    original = send._SendDoFn.finish_bundle

    def failing(self: send._SendDoFn) -> object:
        yield from original(self)
        raise RuntimeError("the worker fell over")

    monkeypatch.setattr(send._SendDoFn, "finish_bundle", failing)
    with Collector() as collector:
        flags = [*backfill_flags(collector.base_url, tmp_path, events_file), "--send-processes=0"]
        status, report = run_json(flags, now=NOW)
        assert collector.accepted(), "it sent something before it failed"
    assert status == 4
    assert report["stopped"].startswith("the run failed: RuntimeError: the worker fell over")
    assert report["partial"] is True and report["exit_status"] == 4
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["stopped"] == report["stopped"]
    assert "Stopped early" in (tmp_path / "report.html").read_text()


def test_a_run_that_fails_before_sending_is_still_a_whole_run_error(
    events_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beaconflow.transforms import parse

    def failing(self: parse.ParseEvents, raw: object) -> object:
        raise RuntimeError("the reader fell over")

    monkeypatch.setattr(parse.ParseEvents, "process", failing)
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        with pytest.raises(Exception, match="the reader fell over"):
            run_json(flags, now=NOW)  # the command turns this into one line and exit 2
        assert not collector.accepted()


def test_help_lists_every_exit_status() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    for line in ("0    done", "2    nothing was sent", "3    done, but", "4    stopped early"):
        assert line in done.stdout


def test_a_ledger_removed_under_a_running_writer_is_noticed_within_a_second(
    tmp_path: Path,
) -> None:
    import shutil

    clock = ManualClock()
    directory = tmp_path / "ledger"
    writer = LedgerWriter(str(directory), {"kontagent": "f" * 12}, clock=clock)
    one = Message("kontagent", "apa", (("s", "1"),))
    writer.record_one(one)
    shutil.rmtree(directory)  # logrotate, an operator, a cleanup job
    writer.record_one(one)  # the write itself still succeeds, into the unlinked file
    clock.now += 1.0
    with pytest.raises(LedgerError, match=r"ledger not writable: .*: the journal .* was removed"):
        writer.record_one(one)
    writer.close()


def test_a_report_disk_that_fills_leaves_a_whole_report_and_no_litter(
    events_file: Path, tmp_path: Path, small_disk: SmallDisk
) -> None:
    out = small_disk.path
    earlier = '{"exit_status": 0, "note": "the earlier run"}\n'
    (out / "report.json").write_text(earlier)
    small_disk.fill(free=4096)  # the probe fits, the run's report does not
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        flags = [f for f in flags if not f.startswith("--report=")]
        done = run_cli(*flags, f"--report={out / 'report.json'}", f"--ledger={tmp_path / 'l'}")
        assert collector.accepted(), "it sent"
    assert done.returncode == 4, done.stderr
    assert "report not writable" in done.stderr and "Traceback" not in done.stderr
    written = json.loads((out / "report.json").read_text())  # never a torn report
    if written != json.loads(earlier):
        # the counts could not be written, but once their file was gone the report fit
        assert written["partial"] is True and written["exit_status"] == 4
        assert written["stopped"].startswith(f"report not writable: {out / 'report.json'}: ")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["filler", "report.json"], "no probe, tallies or temporary file is left"


def test_a_full_stdout_does_not_turn_a_good_run_into_a_traceback(
    events_file: Path, tmp_path: Path
) -> None:
    with Collector() as collector, open("/dev/full", "w") as full:
        flags = backfill_flags(collector.base_url, tmp_path, events_file)
        done = subprocess.run(
            [sys.executable, "-m", "beaconflow", *flags],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads((tmp_path / "report.json").read_text())["exit_status"] == 0


def test_a_stray_word_after_a_secret_is_not_echoed(tmp_path: Path) -> None:
    done = run_cli(
        "--input=x.jsonl",
        "--kissmetrics-api-key",
        "first-half",
        "second-half-of-key",
        "--dry-run=y",
    )
    assert done.returncode == 2
    assert "second-half-of-key" not in done.stderr and "first-half" not in done.stderr
    assert "after the value of --kissmetrics-api-key" in done.stderr


@pytest.mark.parametrize("url", ["notaurl", "ftp://host/x", "http://", "http:///path"])
def test_a_destination_url_that_is_no_http_url_is_a_usage_error(tmp_path: Path, url: str) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"time": 1750000000, "user_id": 1, "event": "apa"}\n')
    done = run_cli(f"--input={events}", "--kontagent-api-key=k" * 1, f"--kontagent-url={url}")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"beaconflow: error: --kontagent-url {url!r}: not an http:// or https:// URL with a host"
    )


def test_each_report_file_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beaconflow.pipelines import backfill

    path = tmp_path / "report.json"
    path.write_text("earlier json")
    (tmp_path / "report.html").write_text("earlier html")

    create = backfill.FileSystems.create

    class HalfWritten:
        """A file whose write fails half-way, as on a disk that fills."""

        def __init__(self, path: str) -> None:
            self.handle = create(path)

        def __enter__(self) -> HalfWritten:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> None:
            self.handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    def filling(path: str, *args: object, **kwargs: object) -> object:
        return HalfWritten(path) if path.endswith(".html.tmp-write") else create(path)

    monkeypatch.setattr(backfill.FileSystems, "create", filling)
    with pytest.raises(OSError, match="No space left"):
        backfill._write_report(str(path), RunReport(exit_status=0))
    # the page goes first, the JSON tools read last: neither is torn, neither says less
    assert path.read_text() == "earlier json"
    assert (tmp_path / "report.html").read_text() == "earlier html", "not a torn page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


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


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--report={d}/x.json", "--dead-letter={d}/x.json"), "would be one file"),
        (("--dry-run={d}/x.jsonl", "--dead-letter={d}/x.jsonl"), "would be one file"),
        (("--report={d}/r.json", "--dead-letter={d}/r.html"), "would be one file"),
        (("--report={d}",), "is a folder, not a file"),
    ],
)
def test_outputs_that_collide_or_are_folders_are_usage_errors(
    tmp_path: Path, flags: tuple[str, ...], says: str
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"time": 1750000000, "user_id": 1, "event": "apa"}\n')
    given = [f.format(d=tmp_path) for f in flags]
    done = run_cli(f"--input={events}", "--kissmetrics-api-key=k", *given)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1


def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("--input=x.jsonl", "--kissmetrics-api-key=k", "--kissmetrics-url=http://h:99999")
    assert done.returncode == 2 and "not an http:// or https:// URL" in done.stderr


def test_an_unwritable_stderr_keeps_the_runs_status(events_file: Path, tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "beaconflow", "--input=nothing-here-*.jsonl", "--sandbox"],
            stdout=subprocess.PIPE, stderr=full, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, "a usage error stays 2 when stderr cannot be written"
        out = tmp_path / "out"
        done = subprocess.run(
            [sys.executable, "-m", "beaconflow", f"--input={events_file}", "--sandbox",
             f"--report={out / 'report.json'}", f"--dead-letter={out / 'dead.jsonl'}"],
            stdout=subprocess.PIPE, stderr=full, text=True, timeout=300,
        )  # fmt: skip
    assert done.returncode == 0
    assert json.loads((out / "report.json").read_text())["exit_status"] == 0


def test_secrets_in_data_keys_and_dry_run_params_are_masked(tmp_path: Path) -> None:
    key = 'KMK3Y"r\\ s<b>&e'
    events = tmp_path / "e.jsonl"
    record = {
        "time": 1750000000,
        "user_id": "bob",
        "event": "signed_up",
        "properties": {key: 1, "where": f"https://x/?k={key}"},
    }
    events.write_text(json.dumps(record) + "\n")
    dry = tmp_path / "dry.jsonl"
    done = run_cli(
        f"--input={events}",
        f"--kissmetrics-api-key={key}",
        f"--dry-run={dry}",
        f"--report={tmp_path / 'report.json'}",
        f"--dead-letter={tmp_path / 'dead.jsonl'}",
    )
    assert done.returncode == 0, done.stderr
    text = dry.read_text()
    for form in (key, json.dumps(key)[1:-1]):
        assert form not in text
    assert json.loads(text.splitlines()[0])["params"]["where"] == "https://x/?k=***"


def test_the_advice_after_a_stop_never_invites_a_double_send() -> None:
    from beaconflow.pipelines.cli import _advice

    base = RunReport(dead_letter="out/dead.jsonl", messages_not_attempted=5)
    with_ledger = _advice(replace(base, ledger="/l"))
    assert "same --ledger" in with_ledger
    without = _advice(base)
    assert "replay the dead letter (out/dead.jsonl)" in without and "same command" not in without
    partial = _advice(replace(base, partial=True))
    assert "running it again sends everything again" in partial
    nothing_left = _advice(replace(base, messages_not_attempted=0))
    assert "Everything was sent or is in the dead letter" in nothing_left
