"""A send failure in a whole run: the service's reason and the event's line in the dead letter.

The command runs against the sandbox collector refusing one user with a 400 whose body says
why; every dead-letter entry of that user's messages quotes it and names the input line of
its event (the line the event dedup kept, for a duplicated event), and keeps that line when
the dead letter is replayed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from beaconflow.sandbox.collector import Collector, Faults
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
T0 = 1_750_000_000
REFUSED = "666"
REASON = f"HTTP 400: user '{REFUSED}' is refused (fault injection: reject_users)"


def _events(path: Path) -> Path:
    refused = {"time": T0, "user_id": int(REFUSED), "event": "level_up", "level": 2}
    lines = [
        {"time": T0, "user_id": 1, "event": "level_up", "level": 2},
        refused,
        refused,  # the same event again: the dedup keeps line 2
        {"time": T0 + 1, "user_id": 2, "event": "level_up", "level": 3},
        {"time": T0 + 5, "user_id": int(REFUSED), "event": "level_up", "level": 3},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _collector() -> Collector:
    return Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
        faults=Faults(reject_users=frozenset({REFUSED})),
    )


def test_a_refused_message_names_the_services_reason_and_its_events_line(tmp_path: Path) -> None:
    events = _events(tmp_path / "events.jsonl")
    first, replay = tmp_path / "first", tmp_path / "replay"
    first.mkdir()
    replay.mkdir()
    with _collector() as collector:
        ran = run_cli(*backfill_flags(collector.base_url, first, events))
        assert ran.returncode == 3, ran.stderr
        dead = read_dead_letter(first)
        # both destinations refuse both events of the user: four messages
        assert len(dead) == 4
        assert all(entry["stage"] == "send" and entry["status"] == 400 for entry in dead)
        assert {entry["reason"] for entry in dead} == {REASON}
        assert Counter(json.dumps(entry["source"], sort_keys=True) for entry in dead) == {
            json.dumps({"file": str(events), "line": 2}, sort_keys=True): 2,
            json.dumps({"file": str(events), "line": 5}, sort_keys=True): 2,
        }
        report = json.loads((first / "report.json").read_text())
        assert report["dead_letter_reasons"] == [
            {
                "stage": "send",
                "reason": "HTTP 400: user '#' is refused (fault injection: reject_users)",
                "count": 4,
            }
        ]

        # replayed while the user is still refused: each entry keeps its event's line
        again = tmp_path / "again.jsonl"
        again.write_text((first / "dead.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
        status, _ = run_json(backfill_flags(collector.base_url, replay, again), now=NOW)
        assert status == 3
        replayed = read_dead_letter(replay)
    assert sorted((e["message"]["key"], e["source"]["line"]) for e in replayed) == sorted(
        (e["message"]["key"], e["source"]["line"]) for e in dead
    )
    assert {e["source"]["file"] for e in replayed} == {str(events)}
    assert {e["reason"] for e in replayed} == {REASON}
