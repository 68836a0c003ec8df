"""Dead-letter entries (``beaconflow.report.deadletter.DeadLetterEntry``): made and written."""

from __future__ import annotations

import json
import math

from beaconflow.model import kissmetrics
from beaconflow.model.source import RawRecord
from beaconflow.report.deadletter import DeadLetterEntry


def test_a_record_entry_keeps_the_record_or_the_line_it_came_as() -> None:
    raw = RawRecord("a.jsonl", 3, text='{"time": NaN}\n')
    # a record strict JSON cannot hold keeps its raw line, so a replay fails the same way
    entry = DeadLetterEntry.of_record("parse", "NaN", raw, {"time": math.nan})
    assert json.loads(entry.to_json()) == {
        "stage": "parse",
        "reason": "NaN",
        "source": {"file": "a.jsonl", "line": 3},
        "line": '{"time": NaN}',
    }
    good = DeadLetterEntry.of_record("parse", "why", raw, {"time": 1})
    assert json.loads(good.to_json())["record"] == {"time": 1}
    row = RawRecord("b.parquet", 2, row={"time": "x"})
    assert json.loads(DeadLetterEntry.of_record("read", "bad", row).to_json())["source"] == {
        "file": "b.parquet",
        "row": 2,
    }
    # a record that is JSON null is still a record
    assert (
        json.loads(DeadLetterEntry("map", "why", "c.jsonl:1", record=None).to_json())["record"]
        is None
    )


def test_a_send_entry_holds_the_message_its_status_and_attempts() -> None:
    message = kissmetrics.record("p", "n", time=1_262_304_000)
    entry = json.loads(DeadLetterEntry.of_message(message, "HTTP 400", 400, 1).to_json())
    assert entry["stage"] == "send" and (entry["status"], entry["attempts"]) == (400, 1)
    assert entry["message"]["key"] == message.key and "source" not in entry
    # a message that knows where it came from names it
    traced = message.with_source("logs/a.jsonl:12")
    entry = json.loads(DeadLetterEntry.of_message(traced, "HTTP 400", 400, 1).to_json())
    assert entry["source"] == {"file": "logs/a.jsonl", "line": 12}
    assert "source" not in entry["message"]


def test_a_send_entry_counts_its_ambiguous_attempts_when_there_were_some() -> None:
    message = kissmetrics.record("p", "n", time=1_262_304_000)
    reason = "TimeoutError: no response within 10 s; sent, no answer: the service may have..."
    entry = json.loads(DeadLetterEntry.of_message(message, reason, None, 5, 4).to_json())
    assert (entry["attempts"], entry["ambiguous_attempts"]) == (5, 4)
    # none: no key, as before
    plain = json.loads(DeadLetterEntry.of_message(message, "HTTP 400", 400, 1).to_json())
    assert "ambiguous_attempts" not in plain


def test_an_entry_with_values_json_cannot_hold_is_still_one_line_of_strict_json() -> None:
    entry = DeadLetterEntry("map", "x", record={"v": math.inf, "w": [math.nan], "o": object()})
    line = entry.to_json()
    assert "\n" not in line and json.loads(line)["record"]["v"] == "inf"
