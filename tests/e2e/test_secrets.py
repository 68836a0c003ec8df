"""Secrets never leak: API keys and the Kontagent secret stay out of every output of a run.

The README promises that the keys and the secret "never appear in logs, errors, dead letters,
dry-run files or reports". These tests run the real CLI (a subprocess, so stdout and stderr
are the real ones) with distinctive keys, given once by flags and once by environment
variables, against a collector on loopback that answers 5xx, drops every connection, or is
not there at all, so that there are retries, send failures and dead letters; then a
successful run that fills a delivery ledger and a second one that reads it; then dry runs.
Every output is searched for each secret, its percent-, plus- and JSON-encoded forms, and a
distinctive fragment of it. One in-process run also captures Python logging at DEBUG.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import pytest

from beaconflow.sandbox.collector import Collector, Faults, down_url
from tests.conftest import run_cli, run_json

NOW = 1_800_000_000
T0 = 1_750_000_000
ROOT = Path(__file__).resolve().parents[2]

# Distinctive values with characters that encode differently in a path, a query, a form and
# JSON. The Kontagent key goes into the URL path (anything non-empty without '/').
KONTAGENT_KEY = "Kt-Key_9f3c +&=%é~"
KONTAGENT_SECRET = "Sh-Secret_41b7 +&=%/é"
KISSMETRICS_KEY = "Km-Key_77aa +&=%é"
SECRETS = (KONTAGENT_KEY, KONTAGENT_SECRET, KISSMETRICS_KEY)
#: A fragment of each secret, to catch a secret that is cut short or partly encoded.
FRAGMENTS = ("Kt-Key_9f3c", "Sh-Secret_41b7", "Km-Key_77aa")

EVENTS = [
    {"event_id": "e1", "time": T0, "user_id": 7, "event": "level_up", "level": 3},
    {"event_id": "e2", "time": T0 + 1, "user_id": 8, "event": "application_installed"},
    # a map dead letter for Kontagent (bob is not numeric); his KISSmetrics message goes
    {"event_id": "e3", "time": T0 + 2, "user_id": "bob", "event": "apr"},
]
MESSAGES = 5  # e1 and e2, one Kontagent and one KISSmetrics message each; e3's KISSmetrics


def _forms(secret: str) -> set[str]:
    """The secret as it could appear in a URL, a form, a JSON text, or with lowercase hex."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    for form in list(forms):
        if "%" in form:
            forms.add(_lower_hex(form))
    return forms


def _lower_hex(text: str) -> str:
    parts = text.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])


def _assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        for form in _forms(secret):
            assert form not in text, f"{where} shows a secret ({form!r})"
        for decoded in (unquote(text), unquote_plus(text)):
            assert secret not in decoded, f"{where} shows a percent-encoded secret"
    for fragment in FRAGMENTS:
        assert fragment not in text, f"{where} shows part of a secret ({fragment!r})"


def _files(*directories: Path) -> Iterator[tuple[str, str]]:
    for directory in directories:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                yield str(path), path.read_bytes().decode("utf-8", "surrogateescape")


def _write_events(tmp_path: Path) -> Path:
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    return source


def _cli(
    tmp_path: Path, out: Path, base_url: str, via: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with the secrets given ``via`` flags, the environment or files.

    ``files``: ``KONTAGENT_API_KEY_FILE`` and the others; ``credentials``: systemd's
    ``$CREDENTIALS_DIRECTORY`` (item 10 of issue 18).
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    args = [
        f"--input={_write_events(tmp_path)}",
        f"--kontagent-url={base_url}",
        f"--kissmetrics-url={base_url}",
        f"--report={out / 'report.json'}",
        f"--dead-letter={out / 'dead.jsonl'}",
        "--max-attempts=2",
        "--backoff=0",
        "--timeout=5",
        "--progress-interval=0.001",  # as many progress lines as there are attempts
        *extra,
    ]
    if via == "flags":
        # both spellings: "--flag VALUE" and "--flag=VALUE"
        args += ["--kontagent-api-key", KONTAGENT_KEY, f"--kontagent-secret={KONTAGENT_SECRET}",
                 f"--kissmetrics-api-key={KISSMETRICS_KEY}"]  # fmt: skip
    elif via == "env":
        env.update(
            KONTAGENT_API_KEY=KONTAGENT_KEY,
            KONTAGENT_SECRET=KONTAGENT_SECRET,
            KISSMETRICS_API_KEY=KISSMETRICS_KEY,
        )
    else:  # files: named by the _FILE variables, or systemd's credentials directory
        folder = tmp_path / "credentials"
        folder.mkdir(exist_ok=True)
        for name, value in (("kontagent_api_key", KONTAGENT_KEY),
                            ("kontagent_secret", KONTAGENT_SECRET),
                            ("kissmetrics_api_key", KISSMETRICS_KEY)):  # fmt: skip
            (folder / name).write_text(value + "\n", encoding="utf-8")
            if via == "files":
                env[f"{name.upper()}_FILE"] = str(folder / name)
        if via == "credentials":
            env["CREDENTIALS_DIRECTORY"] = str(folder)
    assert "BEACONFLOW_DEBUG" not in env
    return run_cli(*args, env=env, cwd=ROOT)


def _assert_outputs_clean(done: subprocess.CompletedProcess[str], *directories: Path) -> None:
    _assert_no_secret("stdout", done.stdout)
    _assert_no_secret("stderr", done.stderr)
    for path, text in _files(*directories):
        _assert_no_secret(path, text)


def _collector(**kwargs: Any) -> Collector:
    return Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("via", "failure"),
    [
        *((via, failure) for via in ("flags", "env") for failure in ("errors", "drops", "down")),
        ("files", "errors"),
        ("credentials", "drops"),
    ],
)
def test_failed_sends_never_show_a_secret(tmp_path: Path, failure: str, via: str) -> None:
    out, ledger = tmp_path / "out", tmp_path / "ledger"
    faults = {"errors": Faults(error_rate=1.0), "drops": Faults(drop_rate=1.0)}.get(failure)
    with _collector(faults=faults) as collector:
        base_url = down_url() if failure == "down" else collector.base_url
        done = _cli(tmp_path, out, base_url, via, f"--ledger={ledger}")
        assert collector.accepted() == []
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr

    report = json.loads((out / "report.json").read_text())
    assert report["invariant_errors"] == []
    assert report["messages_failed"] == report["messages_built"] == MESSAGES
    dead = [json.loads(line) for line in (out / "dead.jsonl").read_text().splitlines()]
    sent = [d for d in dead if d["stage"] == "send"]
    assert len(sent) == MESSAGES and all(d["attempts"] == 2 for d in sent)
    expected = {"errors": "HTTP 50", "drops": "disconnected", "down": "connect"}[failure]
    assert all(expected.lower() in d["reason"].lower() for d in sent), sent
    assert "retries" in done.stderr  # progress lines were written, and are checked below

    _assert_outputs_clean(done, out, ledger)


def test_the_ledger_and_successful_runs_never_show_a_secret(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    with _collector() as collector:
        first = _cli(
            tmp_path, tmp_path / "first", collector.base_url, "flags", f"--ledger={ledger}"
        )
        assert first.returncode == 3, first.stderr  # the one invalid event
        assert len(collector.accepted()) == MESSAGES and collector.rejected() == []
        again = _cli(tmp_path, tmp_path / "again", collector.base_url, "env", f"--ledger={ledger}")
        assert len(collector.accepted()) == MESSAGES  # nothing sent twice
    # the invalid event is in the first run's dead letter, still there: not an error again
    assert again.returncode == 0, again.stderr
    report = json.loads((tmp_path / "again" / "report.json").read_text())
    assert report["messages_skipped"] == MESSAGES and report["invariant_errors"] == []
    known = report["events_already_dead_lettered"] + report["messages_already_dead_lettered"]
    assert known == 1

    lines = [line for path, text in _files(ledger) if ".jsonl" in path for line in text.split()]
    entries = [line for line in lines if line.startswith('{"ledger":')]  # no seal records
    assert len(entries) == MESSAGES
    # _assert_outputs_clean below greps every file of the ledger, manifests and endpoint
    # descriptors included, for the keys and the secret
    _assert_outputs_clean(first, tmp_path / "first", ledger)
    _assert_outputs_clean(again, tmp_path / "again", ledger)


@pytest.mark.parametrize("via", ["flags", "env", "files", "credentials"])
def test_dry_run_file_never_shows_a_secret(tmp_path: Path, via: str) -> None:
    out = tmp_path / "out"
    done = _cli(tmp_path, out, down_url(), via, f"--dry-run={out / 'dry.jsonl'}")
    assert done.returncode == 3, done.stderr
    lines = [json.loads(line) for line in (out / "dry.jsonl").read_text().splitlines()]
    assert len(lines) == MESSAGES
    urls = sorted(line["url"] for line in lines)
    assert sum("/api/v1/***/" in url for url in urls) == 2, urls
    assert sum("_k=***" in url for url in urls) == 3, urls
    _assert_outputs_clean(done, out)


@pytest.mark.parametrize("processes", [0, 2])
def test_debug_logging_never_shows_a_secret(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    processes: int,
) -> None:
    """In-process, with every logger at DEBUG (aiohttp, beaconflow.send's retry lines).

    With sender processes, their retry lines go to the stderr they share with the run.
    """
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    with _collector(faults=Faults(drop_rate=1.0)) as collector:
        argv = [
            f"--input={_write_events(tmp_path)}",
            f"--kontagent-api-key={KONTAGENT_KEY}",
            f"--kontagent-secret={KONTAGENT_SECRET}",
            f"--kontagent-url={collector.base_url}",
            f"--kissmetrics-api-key={KISSMETRICS_KEY}",
            f"--kissmetrics-url={collector.base_url}",
            f"--report={out / 'report.json'}",
            f"--dead-letter={out / 'dead.jsonl'}",
            "--max-attempts=2",
            "--backoff=0",
            "--progress-interval=0.001",
            f"--send-processes={processes}",
        ]
        status, report = run_json(argv, now=NOW)
    assert status == 3 and report["messages_failed"] == MESSAGES
    if processes:
        err = capfd.readouterr().err
        assert "beaconflow: retrying kontagent/" in err
        _assert_no_secret("the sender processes' stderr", err)
    else:
        assert any(
            r.name == "beaconflow.send" and r.levelno == logging.DEBUG for r in caplog.records
        )
    _assert_no_secret("the log", caplog.text)
    for record in caplog.records:
        _assert_no_secret(f"log record of {record.name}", record.getMessage())
    _assert_no_secret("the report", json.dumps(report, ensure_ascii=False))
    for path, text in _files(out):
        _assert_no_secret(path, text)


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
