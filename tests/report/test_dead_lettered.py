"""The ledger's memory of dead-lettered records: what it records, recalls and drops."""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from beaconflow.report import dead_lettered
from beaconflow.report.dead_lettered import Memory, recall, remember
from beaconflow.report.deadletter import DeadLetterEntry, entry_identity

BAD_LINE = {"stage": "parse", "reason": "not JSON", "source": "a.jsonl:3", "line": "{oops"}
MAP_ENTRY = {
    "stage": "map",
    "reason": "parameter 'n' ...",
    "source": "a.jsonl:4",
    "record": {"event": "level up", "user_id": 7},
    "destination": "kontagent",
}
SEND_ENTRY = {"stage": "send", "reason": "HTTP 500", "message": {"kind": "evt"}}


def _dead_letter(path: Path, *entries: dict[str, Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    return str(path)


def _ledger(tmp_path: Path) -> str:
    (tmp_path / "ledger").mkdir()  # a run's ledger check creates it
    return str(tmp_path / "ledger")


def _identity(entry: dict[str, Any]) -> str:
    identity = entry_identity(DeadLetterEntry.read(entry))
    assert identity is not None
    return identity


def test_a_committed_dead_letter_is_recalled_by_another_run(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    first = _dead_letter(tmp_path / "06-03" / "dead.jsonl", BAD_LINE, MAP_ENTRY, SEND_ENTRY)
    remember(ledger, first, "run1", [date(2025, 6, 3)])
    [path] = dead_lettered._memories(ledger)
    memory = Memory.read(path)
    assert (memory.dead_letter, memory.days) == (first, ("2025-06-03",))
    # read and map entries are remembered (a map entry with its destination); sends are not
    assert set(memory.identities) == {_identity(BAD_LINE), _identity(MAP_ENTRY)}
    recalled = recall(ledger, str(tmp_path / "06-04" / "dead.jsonl"), date(2025, 6, 3))
    assert recalled == {_identity(BAD_LINE), _identity(MAP_ENTRY)}
    # the run writing the same dead letter again replaces it: not recalled
    assert recall(ledger, first, date(2025, 6, 3)) == frozenset()


def test_a_map_entry_of_another_destination_is_another_problem() -> None:
    other = {**MAP_ENTRY, "destination": "kissmetrics"}
    assert _identity(other) != _identity(MAP_ENTRY)
    moved = {**MAP_ENTRY, "source": "b.jsonl:9", "reason": "worded otherwise"}
    assert _identity(moved) == _identity(MAP_ENTRY)


def test_replacing_a_dead_letter_drops_the_memory_of_the_one_it_replaced(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    dead = _dead_letter(tmp_path / "dead.jsonl", BAD_LINE)
    remember(ledger, dead, "run1")
    remember(ledger, _dead_letter(tmp_path / "dead.jsonl", MAP_ENTRY), "run2")
    [path] = dead_lettered._memories(ledger)
    assert path.endswith("dead-lettered-run2.txt")
    # an empty dead letter at the path replaces it too, and needs no memory of its own
    remember(ledger, _dead_letter(tmp_path / "dead.jsonl"), "run3")
    assert dead_lettered._memories(ledger) == []


def test_the_memory_of_a_dead_letter_that_is_gone_is_removed(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    gone = _dead_letter(tmp_path / "old" / "dead.jsonl", BAD_LINE)
    kept = _dead_letter(tmp_path / "new" / "dead.jsonl", MAP_ENTRY)
    remember(ledger, gone, "run1")
    remember(ledger, kept, "run2")
    Path(gone).unlink()
    assert recall(ledger, str(tmp_path / "dead.jsonl")) == {_identity(MAP_ENTRY)}
    assert [Path(p).name for p in dead_lettered._memories(ledger)] == ["dead-lettered-run2.txt"]


def test_a_date_run_drops_the_nights_before_its_window(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    # the nights of the 2nd and the 3rd, each with --lookback 1
    for day, entry in ((2, BAD_LINE), (3, MAP_ENTRY)):
        dead = _dead_letter(tmp_path / f"06-0{day}" / "dead.jsonl", entry)
        remember(ledger, dead, f"run{day}", [date(2025, 6, day - 1), date(2025, 6, day)])
    # the night of the 4th reads the 3rd and the 4th: the 2nd's memory cannot serve again
    assert recall(ledger, str(tmp_path / "x.jsonl"), date(2025, 6, 3)) == {_identity(MAP_ENTRY)}
    assert len(dead_lettered._memories(ledger)) == 1
    # the night of the 5th: neither
    assert recall(ledger, str(tmp_path / "x.jsonl"), date(2025, 6, 4)) == frozenset()
    assert dead_lettered._memories(ledger) == []


def test_a_plain_run_keeps_memories_of_every_day(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    dead = _dead_letter(tmp_path / "06-01" / "dead.jsonl", BAD_LINE)
    remember(ledger, dead, "run1", [date(2025, 6, 1)])
    assert recall(ledger, str(tmp_path / "x.jsonl")) == {_identity(BAD_LINE)}
    assert len(dead_lettered._memories(ledger)) == 1


def test_a_damaged_memory_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / "dead-lettered-x.txt").write_bytes(b"\x00\x00\x00")
    with caplog.at_level(logging.WARNING, logger="beaconflow"):
        assert recall(str(ledger), str(tmp_path / "dead.jsonl")) == frozenset()
    assert "dead-lettered-x.txt" in caplog.text


def test_a_memory_that_cannot_be_written_costs_only_a_repeat(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = tmp_path / "ledger"
    ledger.write_text("a file where the ledger directory should be")
    dead = _dead_letter(tmp_path / "dead.jsonl", BAD_LINE)
    with caplog.at_level(logging.WARNING, logger="beaconflow"):
        remember(str(ledger), dead, "run1")
    assert "could not record what" in caplog.text and dead in caplog.text
