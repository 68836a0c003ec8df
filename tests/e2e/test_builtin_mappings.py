"""The built-in mappings end to end on exports written from each product's own documentation.

The fixtures (tests/fixtures/exports/, sources in its README) were written from Segment's,
Mixpanel's, Amplitude's and Google's public descriptions of their export formats, each with
an ``expected.json`` saying what a user means each record to become: its kind (event,
identify, alias, skip), name, person, UTC second, properties and traits. These tests run the
whole pipeline on them with ``--mapping NAME``: as a dry run (every message checked against
the intent) and against the sandbox collector (every message accepted and counted).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from beaconflow.model.kontagent import hashed_user_id, safe_name
from beaconflow.sandbox.collector import Collector
from tests.conftest import backfill_flags, run_cli, run_json

EXPORTS = Path(__file__).resolve().parents[1] / "fixtures" / "exports"
#: After every fixture's events (2024).
NOW = 1_800_000_000

#: (built-in, fixture, its intent)
CASES = [
    ("segment", "segment/calls.jsonl", "segment/expected.json"),
    ("mixpanel", "mixpanel/export.jsonl", "mixpanel/expected.json"),
    ("mixpanel", "mixpanel/export_time_in_ms.jsonl", "mixpanel/expected_time_in_ms.json"),
    ("amplitude", "amplitude/export.json.gz", "amplitude/expected.json"),
    ("ga4", "ga4/events.parquet", "ga4/expected.json"),
]
IDS = [fixture for _, fixture, _ in CASES]


def _intent(path: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads((EXPORTS / path).read_text(encoding="utf-8"))
    return records


def _rendered(value: object) -> str:
    """A property value as a KISSmetrics parameter holds it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def _dry_run(tmp_path: Path, name: str, fixture: str) -> tuple[dict[str, Any], list[Any]]:
    out = tmp_path / "out"
    flags = backfill_flags(
        "http://127.0.0.1:9",
        out,
        EXPORTS / fixture,
        extra=(f"--mapping={name}", f"--dry-run={out / 'messages.jsonl'}"),
    )
    status, report = run_json(flags, now=NOW)
    assert status == 0, report
    text = (out / "messages.jsonl").read_text(encoding="utf-8")
    return report, [json.loads(line) for line in text.splitlines() if line]


def _find(messages: list[Any], destination: str, kind: str, **params: str) -> list[Any]:
    return [
        m
        for m in messages
        if m["destination"] == destination
        and m["kind"] == kind
        and all(m["params"].get(k) == v for k, v in params.items())
    ]


@pytest.mark.parametrize(("name", "fixture", "intent"), CASES, ids=IDS)
def test_every_record_becomes_what_its_product_means(
    tmp_path: Path, name: str, fixture: str, intent: str
) -> None:
    report, messages = _dry_run(tmp_path, name, fixture)
    expected = _intent(intent)
    sent = [r for r in expected if r["kind"] != "skip"]
    assert report["events_read"] == len(expected)
    # nothing refused, nothing dropped as a duplicate (Amplitude's event_id repeats)
    assert report["events_invalid"] == report["messages_invalid"] == 0, report
    assert report["events_duplicate"] == 0
    assert report["events_unrouted"] == len(expected) - len(sent)
    assert report["mapping_rules_unmatched"] == []
    kissmetrics = [m for m in messages if m["destination"] == "kissmetrics"]
    assert len(kissmetrics) == len(sent)
    for record in sent:
        user, second, where = str(record["user"]), str(record["time"]), f"line {record['line']}"
        if record["kind"] == "event":
            found = _find(messages, "kissmetrics", "e", _p=user, _n=record["name"], _t=second)
            assert len(found) == 1, (where, record)
            for prop, value in record["properties"].items():
                assert found[0]["params"].get(prop) == _rendered(value), (where, prop)
            evt = _find(messages, "kontagent", "evt", s=hashed_user_id(user))
            assert safe_name(record["name"]) in {m["params"]["n"] for m in evt}, where
        elif record["kind"] == "identify":
            found = _find(messages, "kissmetrics", "s", _p=user, _t=second)
            assert len(found) == 1, (where, record)
            for trait, value in record["traits"].items():
                assert found[0]["params"].get(trait) == _rendered(value), (where, trait)
            assert _find(messages, "kontagent", "cpu", s=hashed_user_id(user)), where
        else:
            assert record["kind"] == "alias"
            found = _find(messages, "kissmetrics", "a", _p=user, _n=str(record["alias_from"]))
            assert len(found) == 1, (where, record)
    # every Kontagent name is one Kontagent takes, and every id a positive number
    for message in messages:
        if message["destination"] == "kontagent":
            assert int(message["params"]["s"]) > 0
            if message["kind"] == "evt":
                assert len(message["params"]["n"]) <= 32


@pytest.mark.parametrize(("name", "fixture", "intent"), CASES, ids=IDS)
def test_every_message_is_accepted_by_the_sandbox_collector(
    tmp_path: Path, collector: Collector, name: str, fixture: str, intent: str
) -> None:
    out = tmp_path / "out"
    flags = backfill_flags(collector.base_url, out, EXPORTS / fixture, extra=(f"--mapping={name}",))
    status, report = run_json(flags, now=NOW)
    assert status == 0, report
    assert report["messages_failed"] == 0 and report["invariant_errors"] == []
    assert report["messages_delivered"] == report["messages_built"] > 0
    assert collector.counts()["accepted"] == report["messages_delivered"]
    assert collector.counts()["rejected"] == 0, collector.rejected()[:3]
    # the same export again, with the same messages: one identity per record
    expected = _intent(intent)
    assert report["events_mapped"] == len(expected)


@pytest.mark.parametrize(("name", "fixture", "intent"), CASES, ids=IDS)
def test_the_same_export_read_twice_is_sent_once(
    tmp_path: Path, name: str, fixture: str, intent: str
) -> None:
    # the product's own ids (or the row's content, for GA4) are the events' identity
    source = EXPORTS / fixture
    twice = tmp_path / "in"
    twice.mkdir()
    for copy in ("a", "b"):
        (twice / f"{copy}-{source.name}").write_bytes(source.read_bytes())
    out = tmp_path / "out"
    flags = backfill_flags(
        "http://127.0.0.1:9",
        out,
        *sorted(twice.iterdir()),
        extra=(f"--mapping={name}", f"--dry-run={out / 'messages.jsonl'}"),
    )
    status, report = run_json(flags, now=NOW)
    assert status == 0, report
    assert report["events_duplicate"] == report["events_mapped"] == len(_intent(intent))


def test_a_legacy_mixpanel_project_s_local_times_are_read_in_its_zone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    flags = backfill_flags(
        "http://127.0.0.1:9",
        out,
        EXPORTS / "mixpanel" / "export.jsonl",
        extra=(
            "--mapping=mixpanel",
            "--source-timezone=America/Los_Angeles",
            f"--dry-run={out / 'messages.jsonl'}",
        ),
    )
    status, report = run_json(flags, now=NOW)
    assert status == 0, report
    lines = (out / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    messages = [json.loads(line) for line in lines]
    sent = {
        m["params"]["_t"]
        for m in messages
        if m["destination"] == "kissmetrics" and m["kind"] == "e"
    }
    zone = ZoneInfo("America/Los_Angeles")
    for record in _intent("mixpanel/expected.json"):
        if record["kind"] != "event":
            continue
        wall = datetime(1970, 1, 1) + timedelta(seconds=record["time"])
        utc = int(wall.replace(tzinfo=zone).timestamp())
        assert utc - record["time"] in (7 * 3600, 8 * 3600)
        assert str(utc) in sent, record["line"]


def test_mapping_explain_shows_a_built_in_on_its_export() -> None:
    done = run_cli(
        "mapping", "explain", "--mapping=segment",
        f"--input={EXPORTS / 'segment' / 'calls.jsonl'}", "--limit=14",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "rules: [[when]] type is identify" in done.stdout
    assert "kissmetrics/a: https://trk.kissmetrics.io/a?_k=***&" in done.stdout
    assert "no destination takes this event (counted as unrouted)" in done.stdout  # group
    assert "(optional)" in done.stdout and "Traceback" not in done.stderr
