"""Connections that come and go, in whole runs through the CLI against the sandbox collector.

A run reuses its keep-alive connections: the collector counts the connections that carried
requests, at most ``--concurrency`` for the whole run (the sender processes share it out).
A collector that closes every connection after 5 answers, unannounced, under the next
request (a server dropping keep-alive connections every N requests) loses nothing: every
message is accepted exactly once, nothing fails, the run exits 0, and the report counts
the messages sent again after their request met such a close (``messages_ambiguous``: the
server read it before it closed; the collector, like nginx, had not acted on it). The
sender's part is tested in tests/delivery/test_connections.py. The dropping run is the
command in a process of its own (its sender processes as a user's run has them); the
others run in this process.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from beaconflow.sandbox.collector import Collector, Faults
from tests.conftest import (
    KISSMETRICS_KEY,
    KONTAGENT_KEY,
    KONTAGENT_SECRET,
    backfill_flags,
    june_events,
    needs_ipv6,
    run_cli,
    run_json,
)

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return june_events(tmp_path_factory.mktemp("logs"), 120, seed=19, days=1)


def _collector(faults: Faults | None = None) -> Collector:
    return Collector(
        faults=faults,
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
    )


def _sent(report: dict[str, object]) -> int:
    return int(str(report["messages_built"])) - int(str(report["messages_duplicate"]))


def _accepted(collector: Collector) -> Counter[tuple[str, str, tuple[tuple[str, str], ...]]]:
    """What the collector accepted, each message by its content (two events may agree)."""
    return Counter((r.destination, r.kind, r.params) for r in collector.accepted())


@pytest.fixture(scope="module")
def healthy(
    events: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, Counter[tuple[str, str, tuple[tuple[str, str], ...]]]]:
    """A run against a healthy collector: its connections, and what was accepted."""
    out = tmp_path_factory.mktemp("healthy")
    with _collector() as collector:
        flags = [*backfill_flags(collector.base_url, out, events), "--concurrency=4"]
        status, report = run_json(flags, now=NOW)
        connections, accepted = collector.connections(), _accepted(collector)
    assert status == 0 and report["invariant_errors"] == []
    assert accepted.total() == _sent(report) > 100
    assert report["reconnects"] == 0
    return connections, accepted


def test_a_run_reuses_its_connections(
    healthy: tuple[int, Counter[tuple[str, str, tuple[tuple[str, str], ...]]]],
) -> None:
    connections, _ = healthy
    assert 1 <= connections <= 4


def test_a_server_dropping_keep_alive_every_n_requests_loses_nothing(
    events: Path,
    tmp_path: Path,
    healthy: tuple[int, Counter[tuple[str, str, tuple[tuple[str, str], ...]]]],
) -> None:
    with _collector(Faults(close_every=5)) as collector:
        flags = [*backfill_flags(collector.base_url, tmp_path, events), "--concurrency=4"]
        # the command as a user runs it, in a process of its own
        done = run_cli(*flags)
        accepted = _accepted(collector)
        closed = collector.counts().get("closed/used_up", 0)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["invariant_errors"] == []
    assert "failed 0" in done.stderr and "reconnects: " in done.stdout
    sent = _sent(report)
    assert report["messages_delivered"] == sent and report["messages_failed"] == 0
    # every message accepted exactly once: as the healthy run's
    assert accepted == healthy[1]
    assert not (tmp_path / "dead.jsonl").exists() or not (tmp_path / "dead.jsonl").read_text()
    # each close was under a request the collector read: its message was sent again, and
    # the report says that the service may have counted it twice
    assert closed > 0
    assert 0 < report["messages_ambiguous"] <= closed
    # nearly every close was a free reconnect (a message that met more closed connections in
    # a row than it gets for free counted the rest as attempts): no failure either way
    assert 0 < report["reconnects"] <= closed


@needs_ipv6
def test_a_run_sends_to_ipv6_and_localhost_urls(
    events: Path,
    tmp_path: Path,
    healthy: tuple[int, Counter[tuple[str, str, tuple[tuple[str, str], ...]]]],
) -> None:
    """``--kissmetrics-url http://[::1]:PORT`` and ``--kontagent-url http://localhost:PORT``."""
    ipv6 = Collector(kissmetrics_key=KISSMETRICS_KEY, kontagent_key=KONTAGENT_KEY, host="::1")
    with ipv6, _collector() as ipv4:
        assert ipv6.base_url.startswith("http://[::1]:")
        local = "http://localhost:" + ipv4.base_url.rsplit(":", 1)[1]
        flags = [
            *backfill_flags(local, tmp_path, events),
            f"--kissmetrics-url={ipv6.base_url}",
            "--concurrency=4",
        ]
        status, report = run_json(flags, now=NOW)
        accepted = _accepted(ipv6) + _accepted(ipv4)
        by_destination = ipv6.counts().get("kissmetrics", 0), ipv4.counts().get("kontagent", 0)
    assert status == 0 and report["invariant_errors"] == []
    assert accepted == healthy[1]
    assert by_destination == (
        report["by_destination"]["kissmetrics"]["delivered"],
        report["by_destination"]["kontagent"]["delivered"],
    )
