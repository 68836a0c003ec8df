"""The chunk driver's parts (``beaconflow.pipelines.chunks``).

Grouping days, owning records, the work directory's plan and lock, estimating an input's size.

Whole chunked runs are in tests/e2e/test_chunked_runs.py.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beaconflow.model.errors import TryLaterError
from beaconflow.pipelines.chunks import Chunk, WorkDir, estimate_events, group_days
from beaconflow.transforms.parse import PartitionOwner

JAN = date(2025, 1, 1)


def _days(counts: list[int], start: date = JAN) -> list[tuple[date, int]]:
    return [(start + timedelta(days=i), n) for i, n in enumerate(counts)]


def test_calendar_units_cut_at_their_boundaries() -> None:
    days = _days([1] * 70, start=date(2024, 12, 25))  # Wed 25 Dec 2024 .. 4 Mar 2025
    months = group_days(days, "month", 0)
    assert [(c.first, c.last) for c in months] == [
        (date(2024, 12, 25), date(2024, 12, 31)),
        (date(2025, 1, 1), date(2025, 1, 31)),
        (date(2025, 2, 1), date(2025, 2, 28)),
        (date(2025, 3, 1), date(2025, 3, 4)),
    ]
    weeks = group_days(days, "week", 0)
    assert weeks[0].first == date(2024, 12, 25) and weeks[0].last == date(2024, 12, 29)
    assert all(c.first.isoweekday() == 1 for c in weeks[1:]), "weeks begin on Mondays"
    assert sum(c.events for c in weeks) == 70
    assert len(group_days(days, "day", 0)) == 70
    assert [c.index for c in months] == [0, 1, 2, 3]


def test_auto_packs_consecutive_days_within_a_budget_that_grows_from_an_eighth() -> None:
    chunks = group_days(_days([5, 5, 20, 40, 50, 30, 200, 10, 10, 10]), "auto", 800)
    assert [(c.events, (c.last - c.first).days + 1) for c in chunks] == [
        (70, 4),  # the first chunk's budget is an eighth, 100: it is read and sent soon
        (80, 2),  # then 200: 50 + 30; 200 more would pass it
        (230, 4),  # then 400
    ]
    alone = group_days(_days([900, 10]), "auto", 800)
    assert [c.events for c in alone] == [900, 10], "a day over the budget is a chunk alone"
    steady = group_days(_days([100] * 40), "auto", 800)
    assert [c.events for c in steady] == [100, 200, 400, 800, 800, 800, 800, 100]


def test_chunks_cover_the_gaps_between_the_days_they_hold() -> None:
    days = [(JAN, 5), (JAN + timedelta(days=10), 5), (JAN + timedelta(days=40), 5)]
    chunks = group_days(days, "day", 0)
    assert [(c.first, c.last) for c in chunks] == [
        (JAN, JAN + timedelta(days=9)),
        (JAN + timedelta(days=10), JAN + timedelta(days=39)),
        (JAN + timedelta(days=40), JAN + timedelta(days=40)),
    ]


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    lookback=st.integers(0, 4),
    partition=st.integers(-5, 60),
    event_day=st.integers(-10, 70),
)
def test_every_record_of_a_read_partition_is_owned_by_exactly_one_chunk(
    lengths: list[int], lookback: int, partition: int, event_day: int
) -> None:
    starts, day = [], 0
    for length in lengths:
        starts.append(day)
        day += length
    last = day - 1
    path = "/logs/p.jsonl"
    owners = [
        PartitionOwner(i, tuple(starts), last, lookback, {path: partition})
        for i in range(len(starts))
    ]
    # the chunks that read this partition: their days, and the lookback days after them
    ends = [*(s - 1 for s in starts[1:]), last]
    readers = [i for i in range(len(starts)) if starts[i] <= partition <= ends[i] + lookback]
    if not readers and 0 <= partition <= last + lookback:
        pytest.fail("a partition of the run is read by no chunk")
    time = event_day * 86_400 + 3_600
    owning = [o.chunk for o in owners if o.owns(path, time)]
    assert len(owning) == 1
    undated = [o.chunk for o in owners if o.owns_undated(path)]
    assert len(undated) == 1
    if readers:
        # the owner reads the partition: every record is counted where it is read
        assert owning[0] in readers and undated[0] in readers
    if starts[0] <= event_day <= last:
        chunk_of_event = max(i for i, s in enumerate(starts) if s <= event_day)
        if chunk_of_event in readers:
            assert owning == [chunk_of_event], "sent with its own day's chunk"


def test_the_work_directory_is_held_by_one_run(tmp_path: Path) -> None:
    work = WorkDir(str(tmp_path / "work"))
    busy = pytest.raises(TryLaterError, match="another run is using the work directory")
    with work.locked(), busy, WorkDir(str(tmp_path / "work")).locked():
        pass
    with work.locked():  # released at the end of the block
        pass


def test_a_plan_of_another_command_is_cleared_away(tmp_path: Path) -> None:
    work = WorkDir(str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    plan = {
        "format": 1,
        "fingerprint": "a" * 64,
        "mode": "dated",
        "unit": "month",
        "chunks": [Chunk(0, JAN, JAN, 3).to_json()],
    }
    work.save("plan.json", plan)
    work.save("chunk-0001.done.json", {"tallies": "[]", "seconds": 1.0})
    assert work.load_plan("a" * 64) is not None
    assert work.done(0) == {"tallies": "[]", "seconds": 1.0}
    assert work.load_plan("b" * 64) is None
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []


def test_a_damaged_plan_starts_a_new_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "plan.json").write_text('{"format": 1, "fingerp')
    assert WorkDir(str(tmp_path / "work")).load_plan("a" * 64) is None
    assert "could not be read" in caplog.text


def test_the_input_size_is_estimated_from_samples(tmp_path: Path) -> None:
    lines = [json.dumps({"event_id": f"e{i}", "time": 1_700_000_000 + i}) for i in range(30_000)]
    plain = tmp_path / "a.jsonl"
    plain.write_text("\n".join(lines) + "\n")
    packed = tmp_path / "b.jsonl.gz"
    with gzip.open(packed, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    assert estimate_events([str(plain)], None) == pytest.approx(30_000, rel=0.02)
    assert estimate_events([str(packed)], None) == pytest.approx(30_000, rel=0.25)
    assert estimate_events([str(plain), str(packed)], None) == pytest.approx(60_000, rel=0.15)


def test_a_commands_fingerprint_is_the_same_in_every_process(tmp_path: Path) -> None:
    """Resuming needs the same plan: the fingerprint hashes no set, no object's memory."""
    script = (
        "from beaconflow.pipelines.chunks import fingerprint\n"
        "from beaconflow.pipelines.options import configure\n"
        "c = configure(['--dry-run=d', '--input=x.jsonl', '--mapping=segment', '--chunk=week'])\n"
        "print(fingerprint(c, ['x.jsonl']))\n"
    )
    prints = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            cwd=tmp_path,
        ).stdout
        for seed in (1, 2)
    }
    assert len(prints) == 1 and len(prints.pop().strip()) == 64
