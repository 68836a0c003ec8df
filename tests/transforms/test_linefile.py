"""Line files (dead letter, dry run): shards written as the run goes, merged without loss."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from beaconflow.delivery.stop import forget_run, run_stop
from beaconflow.report.counts import STOPPED, tally
from beaconflow.transforms.linefile import (
    WriteLines,
    merge_parts,
    parts_prefix,
    remove_leftovers,
    salvage_leftovers,
)
from tests.fs_faults import SmallDisk


def test_each_bundle_writes_a_shard_and_the_merge_has_every_line(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    lines = [f'{{"n": {n}}}' for n in range(500)]
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        tallies = pipeline | beam.Create(lines) | WriteLines(str(path), part="A", run_id="t1")
        assert_that(tallies, equal_to([]))
    assert list(tmp_path.glob("dead.jsonl.tmp*")) == []
    assert merge_parts(str(path)) >= 1
    assert sorted(path.read_text().splitlines()) == sorted(lines)
    assert [p.name for p in tmp_path.iterdir()] == ["dead.jsonl"], "no shard is left behind"
    forget_run("t1")


def test_a_full_disk_trips_the_runs_stop_and_says_why(small_disk: SmallDisk) -> None:
    small_disk.fill(free=0)
    path = small_disk.path / "dead.jsonl"
    reason = f"dead letter not writable: {path}: No space left on device"
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        tallies = (
            pipeline
            | beam.Create(["x" * 5000] * 20)
            | WriteLines(str(path), what="dead letter", run_id="t2")
        )
        assert_that(tallies, equal_to([tally(STOPPED, detail=reason)]))
    assert run_stop("t2").reason == reason
    forget_run("t2")


def test_a_failed_merge_keeps_the_earlier_file_and_the_shards(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_text("the earlier run's dead letter\n")
    shard = Path(parts_prefix(str(path)) + "Send-0001")
    shard.write_text("new line\n")
    (tmp_path / "dead.jsonl.tmp-merge").mkdir()  # the merge cannot create its file
    with pytest.raises(OSError):
        merge_parts(str(path))
    assert path.read_text() == "the earlier run's dead letter\n"
    assert shard.read_text() == "new line\n"


def test_leftovers_of_an_earlier_run_are_removed_before_a_run(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    Path(parts_prefix(str(path)) + "Send-0001").write_text("stale\n")
    Path(f"{path}.tmpParse-0002").write_text("torn")
    (tmp_path / "other.jsonl").write_text("kept\n")
    assert remove_leftovers(str(path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["other.jsonl"]
    assert merge_parts(str(path)) == 0 and path.read_text() == ""


def test_a_killed_runs_pieces_are_salvaged_whole_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    (tmp_path / "dead.jsonl.parts-a").write_bytes(b'{"n": 1}\n{"n": 2}\n')
    (tmp_path / "dead.jsonl.tmp-b").write_bytes(b'{"n": 3}\n{"n": 4, "torn')  # killed mid-line
    assert salvage_leftovers(str(path)) == 3
    (kept,) = tmp_path.glob("dead.jsonl.parts-salvaged-*")
    assert kept.read_bytes() == b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name]
    # the next merge makes them part of the dead letter
    assert merge_parts(str(path)) == 1
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'
    assert salvage_leftovers(str(path)) == 0
