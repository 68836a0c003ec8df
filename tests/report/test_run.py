"""The run's report (``beaconflow.report.run.RunReport``): report.json's keys, and reading it back."""

from __future__ import annotations

import json
from dataclasses import replace

from beaconflow.report.counts import (
    AMBIGUOUS,
    DELIVERED_AT,
    MAPPING_RULE,
    PROPERTY_LEFT_OUT,
    RECONNECTS,
    build_report,
    tally,
)
from beaconflow.report.run import RunReport, summary
from tests.report.test_counts import sums_of

#: report.json's keys: a public contract (docs/outputs.md); a change here is a change to it.
REPORT_KEYS = {
    "events_read", "events_invalid", "events_duplicate", "events_out_of_range", "events_mapped",
    "events_unrouted", "messages_built", "messages_duplicate", "messages_skipped", "messages_invalid",
    "messages_delivered", "messages_failed", "messages_dry_run", "messages_not_attempted",
    "invalid_by_stage", "by_destination", "by_type", "messages_by_day", "dead_letter_reasons",
    "send_timeline", "stopped", "elapsed_seconds", "messages_per_second", "invariant_errors",
    "inputs", "files", "report", "dead_letter", "dry_run", "sandbox", "ledger", "date",
    "destinations", "exit_status", "mapping_rules_matched", "mapping_rules_unmatched",
    "properties_left_out", "lookback_days_missing", "dead_letter_salvaged",
    "events_already_dead_lettered", "messages_already_dead_lettered", "deadline",
    "messages_ambiguous", "ledger_files_read", "ledger_files_skipped",
    # issue 18
    "messages_too_old", "messages_from_old_days", "started_at", "ended_at", "version", "command",
    "since", "until",
    # issue 19
    "reconnects", "network",
}  # fmt: skip


def test_report_json_has_its_documented_keys_and_reads_back_the_same() -> None:
    sums = sums_of(
        tally("events_read", 2),
        tally("events_mapped", 2),
        tally("events_unrouted", 1),
        tally("messages_built", 1, "kissmetrics", "e"),
        tally("messages_delivered", 1, "kissmetrics", "e"),
        tally(DELIVERED_AT, 1, "kissmetrics", detail="1000"),
    )
    report = replace(
        build_report(sums, 2.0), inputs=("a.jsonl",), exit_status=0, report_written=True
    )
    data = report.to_json()
    assert set(data) == REPORT_KEYS  # report_written is the run's own, not the file's
    assert data["events_unrouted"] == 1 and data["inputs"] == ["a.jsonl"]
    assert RunReport.from_json(json.loads(json.dumps(data))) == report
    timed = replace(report, stopped="deadline", deadline="2025-06-02T08:15:00.250Z")
    assert RunReport.from_json(json.loads(json.dumps(timed.to_json()))) == timed
    described = replace(
        report,
        started_at="2025-06-02T08:00:00.000Z",
        ended_at="2025-06-02T08:15:01.250Z",
        version="0.1.0",
        command=("beaconflow", "--input", "a.jsonl", "--kontagent-api-key", "***"),
        since="2025-06-01T00:00:00Z",
        until="2025-06-02T00:00:00Z",
        messages_too_old=3,
        messages_from_old_days=2,
    )
    data = described.to_json()
    assert data["command"] == ["beaconflow", "--input", "a.jsonl", "--kontagent-api-key", "***"]
    assert RunReport.from_json(json.loads(json.dumps(data))) == described
    # partial and sandbox_collector appear only when they apply
    extra = replace(report, partial=True, sandbox_collector={"accepted": 1}).to_json()
    assert set(extra) - REPORT_KEYS == {"partial", "sandbox_collector"}


def test_a_report_read_back_takes_wrong_types_as_absent() -> None:
    report = RunReport.from_json(
        {"events_read": "many", "exit_status": True, "inputs": "one.jsonl", "stopped": 3,
         "by_type": [], "elapsed_seconds": float("nan"), "files": -4, "unknown": 1}
    )  # fmt: skip
    assert (report.events_read, report.exit_status, report.inputs) == (0, None, ("one.jsonl",))
    assert (report.stopped, report.by_type, report.elapsed_seconds, report.files) == (
        None,
        None,
        0.0,
        0,
    )
    # an older report without the breakdowns has none, which is not "empty"
    assert RunReport.from_json({}).messages_by_day is None


def test_properties_left_out_reads_back_and_is_summarised() -> None:
    sums = sums_of(
        tally("events_read", 1),
        tally("events_mapped", 1),
        tally(MAPPING_RULE, 1, detail="properties from p"),
        *(tally(PROPERTY_LEFT_OUT, n, detail=f"p{n}") for n in range(1, 8)),
    )
    report = build_report(sums, 1.0)
    data = json.loads(json.dumps(report.to_json()))
    assert data["properties_left_out"] == {f"p{n}": n for n in range(7, 0, -1)}
    assert list(data["properties_left_out"]) == ["p7", "p6", "p5", "p4", "p3", "p2", "p1"]
    assert RunReport.from_json(data) == report
    assert (
        "properties left out (objects, lists or nulls; the events went on): "
        "p7 (7), p6 (6), p5 (5), p4 (4), p3 (3) and 2 more"
    ) in summary(report).splitlines()
    # a hand-edited report.json with the wrong type: taken as absent
    assert RunReport.from_json({**data, "properties_left_out": ["p1"]}).properties_left_out == {}


def test_ambiguous_messages_are_counted_apart_from_the_outcomes_and_summarised() -> None:
    sums = sums_of(
        tally("messages_built", 3, "kontagent", "evt"),
        tally("messages_delivered", 2, "kontagent", "evt"),
        tally("messages_failed", 1, "kontagent", "evt"),
        # one delivered and the failed one went out again after a request got no answer
        tally(AMBIGUOUS, 2, "kontagent", "evt"),
    )
    report = build_report(sums, 1.0)
    assert report.messages_ambiguous == 2
    assert report.invariant_errors == (), "part of neither sum: it overlaps delivered and failed"
    assert report.by_destination["kontagent"] == {
        "built": 3,
        "delivered": 2,
        "failed": 1,
        "ambiguous": 2,
    }
    assert report.by_type is not None and report.by_type["kontagent/evt"]["ambiguous"] == 2
    lines = summary(report).splitlines()
    assert "  kontagent: 2 ambiguous, 3 built, 2 delivered, 1 failed" in lines
    assert (
        "ambiguous: 2 messages were sent again after a request that went out and got no "
        "answer (a timeout, a reset, a kept-alive connection the server closed): the service "
        "may have counted them more than once "
        "(--no-retry-ambiguous sends no such request again)"
    ) in lines
    data = json.loads(json.dumps(report.to_json()))
    assert data["messages_ambiguous"] == 2 and RunReport.from_json(data) == report
    # a report of an older release has no such key: 0, and no line
    del data["messages_ambiguous"]
    older = RunReport.from_json(data)
    assert older.messages_ambiguous == 0 and "ambiguous: " not in summary(older)


def test_reconnects_are_counted_apart_from_every_sum_and_summarised() -> None:
    sums = sums_of(
        tally("messages_built", 2, "kissmetrics", "e"),
        tally("messages_delivered", 2, "kissmetrics", "e"),
        tally(AMBIGUOUS, 1, "kissmetrics", "e"),
        # requests, not messages: one message met two closed connections
        tally(RECONNECTS, 2, "kissmetrics", "e"),
    )
    report = build_report(sums, 1.0)
    assert report.reconnects == 2 and report.invariant_errors == ()
    assert "reconnects" not in report.by_destination["kissmetrics"]
    assert (
        "reconnects: 2 requests met a kept-alive connection the server had closed and went "
        "out again at once on a new one (no failure, no retry; docs/networks.md)"
    ) in summary(report).splitlines()
    data = json.loads(json.dumps(report.to_json()))
    assert data["reconnects"] == 2 and RunReport.from_json(data) == report
    del data["reconnects"]
    older = RunReport.from_json(data)
    assert older.reconnects == 0 and "reconnects: " not in summary(older)


def test_too_old_messages_are_an_outcome_of_their_own_and_old_ones_are_warned() -> None:
    sums = sums_of(
        tally("messages_built", 5, "kontagent", "evt"),
        tally("messages_too_old", 3, "kontagent", "evt"),
        tally("messages_delivered", 2, "kontagent", "evt"),
        tally("messages_from_old_days", 1, "kontagent", "evt"),
        tally("messages_built", 5, "kissmetrics", "e"),
        tally("messages_delivered", 5, "kissmetrics", "e"),
    )
    report = build_report(sums, 1.0)
    assert report.messages_too_old == 3 and report.messages_skipped == 0
    assert report.invariant_errors == (), "built = too old + delivered"
    assert report.by_destination["kontagent"] == {
        "built": 5,
        "too_old": 3,
        "delivered": 2,
        "from_old_days": 1,
    }
    assert report.by_type is not None and report.by_type["kontagent/evt"]["too_old"] == 3
    lines = summary(report).splitlines()
    assert lines[1] == (
        "messages: 10 built, 7 delivered, 0 failed, 0 duplicate, 0 already delivered, "
        "3 too old for Kontagent (--kontagent-max-age)"
    )
    # the per-destination line says in words what report.json's keys say
    assert (
        "  kontagent: 5 built, 2 delivered, 1 of events older than 2 days, "
        "3 too old (--kontagent-max-age)"
    ) in lines
    assert (
        "WARNING: 1 message of events older than 2 days went to Kontagent, which counts each "
        "on the day it is sent, not on its event's day (--kontagent-max-age DAYS sends it "
        "only newer ones; docs/backfill.md)"
    ) in lines
    # without the too-old outcome the report would not add up
    without = {key: n for key, n in sums.items() if key.counter != "messages_too_old"}
    assert build_report(without, 1.0).invariant_errors
    # a report of an older release: neither key, no line
    data = report.to_json()
    del data["messages_too_old"], data["messages_from_old_days"]
    for breakdown in (data["by_destination"], data["by_type"]):
        for counts in breakdown.values():
            counts.pop("too_old", None)
            counts.pop("from_old_days", None)
    older = RunReport.from_json(data)
    assert "too old" not in summary(older) and "older than 2 days" not in summary(older)
