"""Whole backfill runs against the collector: delivery, exit statuses, window, dry run, report.

The steps themselves are tested under TestPipeline in tests/transforms/.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from beaconflow.pipelines.options import UsageError
from beaconflow.report.run import RunReport, summary
from beaconflow.sandbox.collector import Collector
from tests.conftest import (
    KISSMETRICS_KEY,
    KONTAGENT_KEY,
    KONTAGENT_SECRET,
    backfill_flags,
    read_dead_letter,
    run_cli,
    run_json,
)

NOW = 1_800_000_000
T0 = 1_750_000_000  # 2025-06-15T15:06:40Z


def _write_jsonl(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


EVENTS = [
    {"event_id": "e1", "time": "2025-06-15T15:06:40Z", "user_id": 11, "event": "application_installed"},
    {"event_id": "e2", "time": T0 + 60, "user_id": "12", "event": "invite_sent", "recipients": [13, 14]},
    {"event_id": "e3", "time": T0 + 120.9, "user_id": 13, "event": "invite_response", "installed": False},
    {"event_id": "e4", "time": T0 + 180, "user_id": 12, "event": "revenue_tracking", "value": 0,
     "properties": {"item": "golden hoe & rake", "price": "1,99 €"}},
    {"event_id": "e5", "time": T0 + 240, "user_id": 12, "event": "alias", "alias": "twelve@example.com"},
    {"event_id": "e6", "time": T0 + 300, "user_id": 14, "event": "user_information", "gender": "f",
     "birth_year": 1990, "country": "NZ"},
]  # fmt: skip


def test_backfill_end_to_end(collector: Collector, tmp_path: Path) -> None:
    reordered = {"user_id": 15, "event": "boss_defeated", "time": T0 + 400, "level": 2}
    first = _write_jsonl(
        tmp_path / "day1.jsonl",
        [
            *EVENTS,
            EVENTS[1],  # the same event_id again
            "",  # blank: not an event
            {"time": T0 + 400, "event": "boss_defeated", "level": 2, "user_id": 15},
            "{broken",
            {"event_id": "bad-time", "time": "2008-01-01T00:00:00Z", "user_id": 1, "event": "apr"},
        ],
    )
    second = _write_jsonl(tmp_path / "day2.jsonl.gz", [EVENTS[0], reordered])
    status, report = run_json(
        backfill_flags(collector.base_url, tmp_path / "out", first, second), now=NOW
    )

    assert collector.rejected() == [], "every request must be valid per the references"
    accepted = collector.accepted()
    assert report["events_read"] == 12
    assert (report["events_invalid"], report["events_duplicate"], report["events_mapped"]) == (
        2,
        3,
        7,
    )
    assert report["invariant_errors"] == []
    assert report["messages_delivered"] == len(accepted) == report["messages_built"]
    assert status == 3  # two invalid events, --max-errors 0

    by_kind: dict[str, list[dict[str, str]]] = {}
    for record in accepted:
        by_kind.setdefault(f"{record.destination}/{record.kind}", []).append(record.param_map())
    assert len(by_kind["kontagent/apa"]) == 1  # event e1 read twice, sent once
    assert len(by_kind["kontagent/ins"]) == 1 and by_kind["kontagent/ins"][0]["r"] == "13,14"
    assert by_kind["kontagent/inr"][0]["i"] == "0"
    assert by_kind["kontagent/mtu"][0]["v"] == "0"
    assert len(by_kind["kontagent/evt"]) == 1  # same object, keys reordered, in two files
    assert by_kind["kissmetrics/a"] == [{"_p": "12", "_n": "twelve@example.com"}]
    for params in by_kind["kissmetrics/e"] + by_kind["kissmetrics/s"]:
        assert params["_d"] == "1"
    assert sorted(int(r["_t"]) for r in by_kind["kissmetrics/e"]) == [
        T0,
        T0 + 60,
        T0 + 120,
        T0 + 180,
        T0 + 400,
    ]
    purchase = next(r for r in by_kind["kissmetrics/e"] if r["_n"] == "revenue_tracking")
    assert purchase["item"] == "golden hoe & rake" and purchase["price"] == "1,99 €"
    assert by_kind["kissmetrics/s"][0]["_t"] == str(T0 + 300)

    dead = read_dead_letter(tmp_path / "out")
    assert sorted((d["stage"], d["source"]["line"]) for d in dead) == [("parse", 10), ("parse", 11)]
    assert any("malformed JSON" in d["reason"] for d in dead)
    assert any("before 2009" in d["reason"] for d in dead)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (
        saved["events_read"] == 12 and saved["messages_delivered"] == report["messages_delivered"]
    )
    # the series behind report.html
    per_day = [n for counts in report["messages_by_day"].values() for n in counts.values()]
    assert sum(per_day) == report["messages_built"]
    assert set(report["messages_by_day"]) == {"2025-06-15"}
    assert sorted((r["stage"], r["reason"], r["count"]) for r in report["dead_letter_reasons"]) == [
        ("parse", "field 'time': is before 2009-01-01, which the services do not take", 1),
        ("parse", "malformed JSON: Expecting property name enclosed in double quotes", 1),
    ]
    timeline = report["send_timeline"]
    assert timeline["bucket_seconds"] == 1 and timeline["failed"] == {}
    assert sum(sum(v) for v in timeline["delivered"].values()) == report["messages_delivered"]


def test_max_errors_sets_the_exit_status(collector: Collector, tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "x.jsonl", [EVENTS[0], "{bad", "{worse"])
    assert (
        run_json(
            backfill_flags(collector.base_url, tmp_path / "out", source, extra=("--max-errors=2",)),
            now=NOW,
        )[0]
        == 0
    )
    assert (
        run_json(
            backfill_flags(collector.base_url, tmp_path / "out", source, extra=("--max-errors=1",)),
            now=NOW,
        )[0]
        == 3
    )


def test_since_until_filter_counts_out_of_range(collector: Collector, tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "x.jsonl", EVENTS)
    # T0 is 2025-06-15T15:06:40Z; e2..e4 are at T0+60..T0+180, e5 at T0+240 (= until)
    window = ("--since=2025-06-15T15:07:00Z", "--until=2025-06-15T17:10:40+02:00")
    status, report = run_json(
        backfill_flags(collector.base_url, tmp_path / "out", source, extra=window), now=NOW
    )
    assert status == 0
    assert report["events_out_of_range"] == 3  # e1 (before), e5 and e6 (at/after until)
    assert report["events_mapped"] == 3
    assert report["invariant_errors"] == []


def test_dry_run_sends_nothing_and_writes_redacted_messages(
    collector: Collector, tmp_path: Path
) -> None:
    source = _write_jsonl(tmp_path / "x.jsonl", EVENTS)
    dry = tmp_path / "out" / "dry.jsonl"
    status, report = run_json(
        backfill_flags(collector.base_url, tmp_path / "out", source, extra=(f"--dry-run={dry}",)),
        now=NOW,
    )
    assert status == 0 and collector.accepted() == []
    lines = [json.loads(line) for line in dry.read_text().splitlines()]
    assert len(lines) == report["messages_dry_run"] == report["messages_built"] > 0
    text = dry.read_text()
    assert (
        KONTAGENT_KEY not in text and KISSMETRICS_KEY not in text and KONTAGENT_SECRET not in text
    )
    # the summary gives the pace of what was written, not "0 messages/s" delivered
    # (the events are older than 2 days at NOW: the Kontagent warning follows it)
    pace = next(
        line
        for line in summary(RunReport.from_json(report)).splitlines()
        if line.startswith("elapsed ")
    )
    assert pace.endswith(" messages/s written (dry run)") and not pace.endswith(" 0 messages/s")


def test_only_destinations_with_a_key_are_used(collector: Collector, tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "x.jsonl", EVENTS)
    flags = [
        f
        for f in backfill_flags(collector.base_url, tmp_path / "out", source)
        if "kontagent" not in f
    ]
    status, report = run_json(flags, now=NOW)
    assert status == 0
    assert {r.destination for r in collector.accepted()} == {"kissmetrics"}
    assert report["destinations"] == ["kissmetrics"]


def test_sandbox_run_of_the_sample_data() -> None:
    done = run_cli("--sandbox", "--input=sample_data/game_events*", "--max-errors=3",
                "--report=/tmp/beaconflow-test-sandbox/report.json",
                "--dead-letter=/tmp/beaconflow-test-sandbox/dead.jsonl")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "SANDBOX MODE" in done.stderr and "Traceback" not in done.stderr
    report = json.loads(Path("/tmp/beaconflow-test-sandbox/report.json").read_text())
    assert report["invariant_errors"] == []
    assert report["sandbox_collector"]["rejected"] == 0
    assert report["sandbox_collector"]["accepted"] == report["messages_delivered"] > 1000


def test_the_report_file_carries_the_exit_status(collector: Collector, tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "x.jsonl", [EVENTS[0], "{bad"])
    status, report = run_json(backfill_flags(collector.base_url, tmp_path / "out", source), now=NOW)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert status == report["exit_status"] == saved["exit_status"] == 3


def test_report_html_is_written_beside_the_json(collector: Collector, tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "x.jsonl", [EVENTS[0], EVENTS[1], "{bad"])
    run_json(backfill_flags(collector.base_url, tmp_path / "out", source), now=NOW)
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    for chart in ("by-day", "outcomes", "reasons", "send-rate"):
        assert f'<svg class="chart" data-chart="{chart}"' in page
    assert "malformed JSON" in page and "2025-06-15" in page
    assert KONTAGENT_KEY not in page and KISSMETRICS_KEY not in page


def test_the_report_names_mapping_rules_that_matched_no_record(tmp_path: Path) -> None:
    source = _write_jsonl(
        tmp_path / "segment.jsonl",
        [
            {"messageId": "m1", "ts": T0, "userId": None, "anonymousId": "7", "event": "level_up"},
            {"messageId": "m2", "ts": T0 + 1, "userId": "8", "event": "level_up"},
        ],
    )
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        '[fields]\nevent_id = "messageId"\ntime = "ts"\nuser_id = ["userId", "anonymousId"]\n'
        'level = "properties.lvl"\ncity = false\n'  # a typo'd or absent path: lvl
    )
    out = tmp_path / "out"
    flags = backfill_flags(
        "http://127.0.0.1:9", out, source, extra=(f"--mapping={mapping}", f"--dry-run={out / 'd'}")
    )
    status, report = run_json(flags, now=NOW)
    assert status == 0 and report["events_mapped"] == 2
    assert report["mapping_rules_matched"] == {
        "event_id = messageId": 2,
        "time = ts": 2,
        "user_id = userId or anonymousId": 2,  # a fallback list counts as one rule
    }
    assert report["mapping_rules_unmatched"] == ["level = properties.lvl"]
    lines = summary(RunReport.from_json(report)).splitlines()
    assert (
        "WARNING: the mapping's rule 'level = properties.lvl' found a value in no record" in lines
    )
    page = (out / "report.html").read_text()
    assert "found a value in no record" in page and "level = properties.lvl" in page


def test_the_report_counts_the_properties_left_out(tmp_path: Path) -> None:
    source = _write_jsonl(
        tmp_path / "segment.jsonl",
        [
            {"messageId": "m1", "ts": T0, "userId": "7", "event": "level_up",
             "properties": {"plan": "pro", "cart": {"n": 2}, "tags": ["a"]}},
            {"messageId": "m2", "ts": T0 + 1, "userId": "8", "event": "level_up",
             "properties": {"cart": None}, "traits": {"plan": "free"}},
            {"messageId": "m3", "ts": T0 + 2, "event": "level_up", "properties": {"x": []}},
        ],
    )  # fmt: skip
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        '[fields]\nevent_id = "messageId"\ntime = "ts"\nuser_id = "userId"\n'
        '[properties]\nfrom = ["properties", "traits"]\n'
        "[destinations.kontagent]\ninclude = []\n"
    )
    out = tmp_path / "out"
    flags = backfill_flags(
        "http://127.0.0.1:9", out, source, extra=(f"--mapping={mapping}", f"--dry-run={out / 'd'}")
    )
    status, report = run_json(flags, now=NOW)
    # the third record has no user: invalid, but what its properties left out is counted
    assert status == 3 and report["events_mapped"] == 2 and report["events_invalid"] == 1
    assert report["properties_left_out"] == {"cart": 2, "tags": 1, "x": 1}
    assert report["mapping_rules_matched"]["properties from properties, traits"] == 3
    assert report["mapping_rules_unmatched"] == []
    saved = json.loads((out / "report.json").read_text())
    assert saved["properties_left_out"] == {"cart": 2, "tags": 1, "x": 1}
    lines = summary(RunReport.from_json(saved)).splitlines()
    assert (
        "properties left out (objects, lists or nulls; the events went on): "
        "cart (2), tags (1), x (1)"
    ) in lines
    written = [json.loads(line) for line in (out / "d").read_text().splitlines()]
    assert len(written) == 2


def test_format_jsonl_reads_a_file_whose_name_says_nothing(tmp_path: Path) -> None:
    source = tmp_path / "events.log"
    source.write_text(
        json.dumps({"event_id": "f1", "time": T0, "user_id": 5, "event": "apa"}) + "\n"
    )
    out = tmp_path / "out"
    flags = backfill_flags("http://127.0.0.1:9", out, source, extra=(f"--dry-run={out / 'd'}",))
    with pytest.raises(UsageError, match="--format jsonl"):
        run_json(flags, now=NOW)
    status, report = run_json([*flags, "--format=jsonl"], now=NOW)
    assert status == 0 and report["events_mapped"] == 1 and report["messages_dry_run"] == 2


def test_the_dead_letter_and_the_dry_run_are_readable_by_their_owner_only(
    tmp_path: Path,
) -> None:
    # they hold users' records: whatever the umask, and over an earlier world-readable file
    source = tmp_path / "x.jsonl"
    source.write_text('{"time": 1750000000, "user_id": 1, "event": "apa"}\n{oops\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "dead.jsonl").write_text("earlier\n")
    (out / "dead.jsonl").chmod(0o644)
    previous = os.umask(0)
    try:
        flags = backfill_flags(
            "http://127.0.0.1:9", out, source, extra=(f"--dry-run={out / 'dry.jsonl'}",)
        )
        status, _ = run_json(flags, now=NOW)
    finally:
        os.umask(previous)
    assert status == 3
    for name in ("dead.jsonl", "dry.jsonl"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    assert "earlier" not in (out / "dead.jsonl").read_text()
