"""The command through a real proxy to a real TLS server: issue 19's networks, end to end.

A tinyproxy on loopback and the sandbox collector serving HTTPS with a trustme CA's
certificate (tests/network_parts.py). Every run is the ``beaconflow`` command in a process
of its own, with an environment cleaned of the machine's proxies and CA variables, so that
each test says exactly what it sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beaconflow.sandbox.collector import Collector, unused_port
from tests.conftest import backfill_flags, june_events, read_dead_letter, run_cli, run_json
from tests.network_parts import TestCA, port_of, tinyproxy, tls_collector

USER, PASSWORD = "egress-user", "egress-pass-19"
_NETWORK_VARIABLES = {
    "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
}  # fmt: skip


def _env(**values: str) -> dict[str, str]:
    """The environment of this process without the network's variables, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in _NETWORK_VARIABLES}
    return {**env, **values}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return june_events(tmp_path_factory.mktemp("events"), 60, seed=19, days=2)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def https(ca: TestCA) -> Iterator[Collector]:
    with tls_collector(ca) as running:
        yield running


def _outputs(out: Path) -> str:
    """Everything the run wrote: report, report.html, dead letter."""
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in (out / "report.json", out / "report.html", out / "dead.jsonl")
        if path.exists()
    )


def _report(out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return loaded


@pytest.mark.parametrize(
    "how",
    [
        ("--send-processes=2",),
        ("--direct_running_mode=multi_processing", "--direct_num_workers=2"),
    ],
    ids=["send_processes", "multi_processing"],
)
def test_every_message_goes_through_the_proxy_and_is_delivered(
    https: Collector, ca: TestCA, events: Path, tmp_path: Path, how: tuple[str, ...]
) -> None:
    port = port_of(https.base_url)
    out = tmp_path / "out"
    with tinyproxy(tmp_path, connect_ports=[port], user=USER, password=PASSWORD) as proxy:
        extra = (f"--proxy={proxy.url}", f"--ca-bundle={ca.pem_path}", *how)
        result = run_cli(*backfill_flags(https.base_url, out, events, extra=extra), env=_env())
        tunnels, requests = proxy.tunnels(port), proxy.requests()
    assert result.returncode == 0, result.stderr
    report = _report(out)
    assert report["messages_delivered"] == report["messages_built"] > 0
    assert https.records.counts()["accepted"] == report["messages_delivered"]
    assert tunnels >= 1 and requests == tunnels, "every request was a CONNECT tunnel"
    assert f"proxy: {proxy.shown} (--proxy)" in result.stdout
    assert f"{ca.pem_path} (--ca-bundle, 1 certificate)" in result.stdout
    assert report["network"]["https_proxy"] == {"url": proxy.shown, "source": "--proxy"}
    assert report["network"]["ca_bundles"] == [
        {"source": "--ca-bundle", "path": str(ca.pem_path), "certificates": 1}
    ]
    said = result.stdout + result.stderr + _outputs(out)
    assert PASSWORD not in said and USER not in said
    assert f"--proxy=http://***@127.0.0.1:{proxy.port}" in report["command"]


def test_the_environments_proxy_and_ca_bundle_are_used_and_named(
    https: Collector, ca: TestCA, events: Path, tmp_path: Path
) -> None:
    port = port_of(https.base_url)
    out = tmp_path / "out"
    with tinyproxy(tmp_path, connect_ports=[port], user=USER, password=PASSWORD) as proxy:
        env = _env(https_proxy=proxy.url, SSL_CERT_FILE=str(ca.pem_path))
        extra = ("--log-format=json",)
        result = run_cli(*backfill_flags(https.base_url, out, events, extra=extra), env=env)
        tunnels = proxy.tunnels(port)
    assert result.returncode == 0, result.stderr
    assert tunnels >= 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    (summary,) = [line for line in lines if line["event"] == "summary"]
    assert f"proxy: {proxy.shown} (https_proxy)" in summary["message"]
    assert f"{ca.pem_path} (SSL_CERT_FILE, 1 certificate)" in summary["message"]
    assert summary["network"] == _report(out)["network"]
    assert summary["network"]["https_proxy"] == {"url": proxy.shown, "source": "https_proxy"}
    said = result.stdout + result.stderr + _outputs(out)
    assert PASSWORD not in said and USER not in said


def test_no_proxy_goes_around_the_proxy(
    https: Collector, ca: TestCA, events: Path, tmp_path: Path
) -> None:
    port = port_of(https.base_url)
    out = tmp_path / "out"
    with tinyproxy(tmp_path, connect_ports=[port]) as proxy:
        env = _env(HTTPS_PROXY=proxy.url, NO_PROXY="localhost,127.0.0.1")
        extra = (f"--ca-bundle={ca.pem_path}", "--send-processes=2")
        result = run_cli(*backfill_flags(https.base_url, out, events, extra=extra), env=env)
        logged = proxy.requests()
    assert result.returncode == 0, result.stderr
    report = _report(out)
    assert https.records.counts()["accepted"] == report["messages_delivered"] > 0
    assert logged == 0, "nothing went through the proxy"
    assert "not for NO_PROXY=localhost,127.0.0.1" in result.stdout


def _assert_stopped_completely(out: Path, result: Any, reason: str) -> None:
    """Exit 4, one line saying why, and every message built in the dead letter."""
    assert result.returncode == 4, result.stderr
    report = _report(out)
    assert report["messages_delivered"] == 0
    assert report["stopped"] is not None and reason in report["stopped"]
    entries = [e for e in read_dead_letter(out) if e["stage"] == "send"]
    assert len(entries) == report["messages_built"] > 0, "nothing vanishes"
    not_attempted = [e for e in entries if e["reason"].startswith("not attempted: ")]
    failed = [e for e in entries if not e["reason"].startswith("not attempted: ")]
    assert {e["reason"] for e in failed} == {reason}
    assert all(e["attempts"] == 1 for e in failed), "not retried"
    assert not_attempted, "the rest was kept for a replay"
    assert all(reason in e["reason"] and "cannot be reached" in e["reason"] for e in not_attempted)
    stopped_lines = [line for line in result.stderr.splitlines() if "stopped early" in line]
    assert len(stopped_lines) == 1 and reason in stopped_lines[0]
    assert "Traceback" not in result.stderr


def test_a_server_of_another_ca_stops_the_run_clearly(
    https: Collector, events: Path, tmp_path: Path
) -> None:
    other = TestCA(tmp_path, "other.pem")
    out = tmp_path / "out"
    extra = (f"--ca-bundle={other.pem_path}", "--send-processes=2")
    result = run_cli(*backfill_flags(https.base_url, out, events, extra=extra), env=_env())
    reason = (
        f"TLS certificate of 127.0.0.1:{port_of(https.base_url)} not trusted: unable to get "
        "local issuer certificate; add your CA with --ca-bundle"
    )
    _assert_stopped_completely(out, result, reason)
    assert https.records.counts()["accepted"] == 0


def test_a_proxy_refusing_the_connect_stops_the_run_clearly(
    https: Collector, ca: TestCA, events: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with tinyproxy(tmp_path, user=USER, password=PASSWORD) as proxy:  # CONNECT to 443 only
        extra = (f"--proxy={proxy.url}", f"--ca-bundle={ca.pem_path}")
        result = run_cli(*backfill_flags(https.base_url, out, events, extra=extra), env=_env())
    reason = (
        f"proxy {proxy.shown} refused CONNECT to 127.0.0.1:{port_of(https.base_url)}: "
        "403 Access violation"
    )
    _assert_stopped_completely(out, result, reason)
    assert https.records.counts()["arrived"] == 0
    said = result.stdout + result.stderr + _outputs(out)
    assert PASSWORD not in said and USER not in said


@pytest.mark.parametrize(
    ("flag", "content", "said"),
    [
        ("--ca-bundle", None, "cannot be read: No such file or directory"),
        ("--ca-bundle", "not a certificate\n", "holds no PEM certificate"),
        ("SSL_CERT_FILE", b"\x30\x82\x01\x0a binary DER", "holds no PEM certificate"),
        (
            "--ca-bundle",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQA=\n-----END PRIVATE KEY-----\n",
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----); only a private key: "
            "give the CA's certificate, never a key",
        ),
        (
            "REQUESTS_CA_BUNDLE",
            "directory",
            "cannot be read: Is a directory; give one PEM file (cat DIR/*.pem > FILE.pem)",
        ),
    ],
    ids=["missing", "not_pem", "der_in_variable", "private_key", "directory_in_variable"],
)
def test_a_bad_ca_bundle_is_a_usage_error_in_one_line(
    events: Path, tmp_path: Path, flag: str, content: str | bytes | None, said: str
) -> None:
    path = tmp_path / "bundle.pem"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif content is not None:
        path.write_bytes(content)
    extra = (f"--ca-bundle={path}",) if flag.startswith("--") else ()
    env = _env() if extra else _env(**{flag: str(path)})
    result = run_cli(
        *backfill_flags("https://127.0.0.1:9", tmp_path / "out", events, extra=extra), env=env
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"beaconflow: error: {flag} {path}: ") and said in lines[0]


@pytest.mark.parametrize(
    ("flag", "env", "named"),
    [
        ("--proxy=socks5://user:pw-in-url@proxy:1080", {}, "--proxy 'socks5://proxy:1080'"),
        (None, {"HTTPS_PROXY": "ftp://proxy:21"}, "HTTPS_PROXY 'ftp://proxy:21'"),
    ],
)
def test_a_bad_proxy_url_is_a_usage_error_naming_its_source(
    events: Path, tmp_path: Path, flag: str | None, env: dict[str, str], named: str
) -> None:
    extra = (flag,) if flag else ()
    result = run_cli(
        *backfill_flags("https://127.0.0.1:9", tmp_path / "out", events, extra=extra),
        env=_env(**env),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"beaconflow: error: {named}: not a proxy")
    assert "pw-in-url" not in result.stderr


def test_the_sandbox_ignores_the_environments_proxies(
    events: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector is on loopback: a proxy of the environment could not reach it."""
    nowhere = f"http://127.0.0.1:{unused_port()}"  # nothing listens: a proxy used would fail
    for name in ("http_proxy", "https_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", nowhere)
    monkeypatch.setenv("HTTPS_PROXY", nowhere)
    out = tmp_path / "out"
    status, report = run_json(
        [
            "--sandbox",
            f"--input={events}",
            f"--report={out / 'report.json'}",
            f"--dead-letter={out / 'dead.jsonl'}",
            "--send-processes=0",
        ],
        now=1_800_000_000,
    )
    assert status == 0, report["stopped"]
    assert report["messages_delivered"] == report["messages_built"] > 0
    assert report["network"]["http_proxy"] is None and report["network"]["https_proxy"] is None
