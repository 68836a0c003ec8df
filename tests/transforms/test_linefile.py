"""Line files (dead letter, dry run): shards written as the run goes, merged without loss.

Their pieces live in the file's private folder (staging.py); those a release before left
beside the file are still salvaged or removed. Also on ``s3://``, against moto's server.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from beaconflow.delivery.stop import forget_run, run_stop
from beaconflow.report.counts import STOPPED, Tally, tally
from beaconflow.transforms.linefile import (
    WriteLines,
    merge_parts,
    parts_prefix,
    remove_leftovers,
    salvage_leftovers,
)
from beaconflow.transforms.staging import temporary
from tests.fakes.s3 import moto_s3, objects
from tests.fs_faults import SmallDisk

FOLDER = ".dead.jsonl.beaconflow"


def test_each_bundle_writes_a_shard_and_the_merge_has_every_line(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    lines = [f'{{"n": {n}}}' for n in range(500)]
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        tallies = pipeline | beam.Create(lines) | WriteLines(str(path), part="A", run_id="t1")
        assert_that(tallies, equal_to([]))
    # the shards are in the private folder, nothing beside the file
    assert [p.name for p in tmp_path.iterdir()] == [FOLDER]
    folder = tmp_path / FOLDER
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    shards = list(folder.iterdir())
    assert shards and all(p.name.startswith("dead.jsonl.partsA-") for p in shards)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in shards)
    assert merge_parts(str(path)) == len(shards)
    assert sorted(path.read_text().splitlines()) == sorted(lines)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["dead.jsonl"], "no shard, no folder left"
    forget_run("t1")


def _rendered(n: int) -> tuple[str, list[Tally]]:
    """An element's line and tallies, as a dead letter's render gives them."""
    return f'{{"n": {n}}}', [tally("counted", n=1, detail="even" if n % 2 == 0 else "odd")]


def test_with_render_each_element_gives_its_line_and_its_tallies(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        tallies = (
            pipeline
            | beam.Create(range(7))
            | WriteLines(str(path), part="A", run_id="t4", render=_rendered)
        )
        summed = tallies | beam.CombinePerKey(sum)
        assert_that(
            summed,
            equal_to(
                [(tally("counted", detail="even")[0], 4), (tally("counted", detail="odd")[0], 3)]
            ),
        )
    merge_parts(str(path))
    assert sorted(path.read_text().splitlines()) == sorted(f'{{"n": {n}}}' for n in range(7))
    forget_run("t4")


@pytest.mark.parametrize("rendered", [False, True], ids=["lines", "rendered"])
def test_a_full_disk_trips_the_runs_stop_and_says_why(
    small_disk: SmallDisk, rendered: bool
) -> None:
    """With ``render``, what the run met is counted, written or not."""
    small_disk.fill(free=0)
    path = small_disk.path / "dead.jsonl"
    reason = f"dead letter not writable: {path}: No space left on device"
    elements: list[object] = [0, 2, 4] if rendered else ["x" * 5000] * 20
    expected = [tally(STOPPED, detail=reason)]
    if rendered:
        expected.append((tally("counted", detail="even")[0], 3))
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        tallies = (
            pipeline
            | beam.Create(elements)
            | WriteLines(
                str(path),
                what="dead letter",
                run_id="t2",
                render=_rendered if rendered else None,
            )
        )
        assert_that(tallies, equal_to(expected))
    assert run_stop("t2").reason == reason
    forget_run("t2")


def test_a_failed_merge_keeps_the_earlier_file_and_the_shards(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    path.write_text("the earlier run's dead letter\n")
    (tmp_path / FOLDER).mkdir()
    shard = Path(parts_prefix(str(path)) + "Send-0001")
    shard.write_text("new line\n")
    Path(temporary(str(path), "merge")).mkdir()  # the merge cannot create its file
    with pytest.raises(OSError):
        merge_parts(str(path))
    assert path.read_text() == "the earlier run's dead letter\n"
    assert shard.read_text() == "new line\n"


def test_leftovers_of_an_earlier_run_are_removed_before_a_run(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    (tmp_path / FOLDER).mkdir()
    Path(parts_prefix(str(path)) + "Send-0001").write_text("stale\n")
    Path(temporary(str(path), "tallies-1.json")).write_text("{}\n")
    # and those of a run of the release before, beside the file
    (tmp_path / "dead.jsonl.partsParse-0002").write_text("stale\n")
    (tmp_path / "dead.jsonl.tmpParse-0003").write_text("torn")
    (tmp_path / "other.jsonl").write_text("kept\n")
    assert remove_leftovers(str(path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [FOLDER, "other.jsonl"]
    assert merge_parts(str(path)) == 0 and path.read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead.jsonl", "other.jsonl"]


def test_a_killed_runs_pieces_are_salvaged_whole_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    folder = tmp_path / FOLDER
    folder.mkdir()
    (folder / "dead.jsonl.parts-a").write_bytes(b'{"n": 1}\n{"n": 2}\n')
    (folder / "dead.jsonl.tmp-b").write_bytes(b'{"n": 3}\n{"n": 4, "torn')  # killed mid-line
    assert salvage_leftovers(str(path)) == 3
    (kept,) = folder.glob("dead.jsonl.parts-salvaged-*")
    assert kept.read_bytes() == b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [kept.name]
    # the next merge makes them part of the dead letter
    assert merge_parts(str(path)) == 1
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'
    assert salvage_leftovers(str(path)) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["dead.jsonl"]


def test_the_pieces_a_release_before_left_beside_the_file_are_salvaged(tmp_path: Path) -> None:
    # a run of the release before issue 17 was killed; the user upgraded, and runs again
    path = tmp_path / "dead.jsonl"
    (tmp_path / "dead.jsonl.partsParse-a").write_bytes(b'{"n": 1}\n')
    (tmp_path / "dead.jsonl.tmpSend-b").write_bytes(b'{"n": 2}\n{"n": 3, "to')
    (tmp_path / "dead.jsonl.gz").write_bytes(b"another file")  # not one of its pieces
    listed: dict[str, list[str]] = {}
    assert salvage_leftovers(str(path), listed) == 2
    assert list(listed) == [str(tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [FOLDER, "dead.jsonl.gz"]
    assert merge_parts(str(path)) == 1
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead.jsonl", "dead.jsonl.gz"]


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Moto's S3 server, and Beam's FileSystems sent there: (endpoint, bucket)."""
    with moto_s3(monkeypatch, tmp_path) as (endpoint, bucket):
        FileSystems.set_options(PipelineOptions([f"--s3_endpoint_url={endpoint}"]))
        try:
            yield endpoint, bucket
        finally:
            FileSystems.set_options(PipelineOptions([]))


def test_an_s3_files_pieces_live_under_a_prefix_of_its_own(
    s3: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    endpoint, bucket = s3
    monkeypatch.chdir(tmp_path)
    path = f"s3://{bucket}/out/dead.jsonl"
    client = boto3.client("s3", endpoint_url=endpoint)
    # a killed run of the release before left a piece beside the file
    client.put_object(Bucket=bucket, Key="out/dead.jsonl.partsParse-a", Body=b'{"n": -1}\n')
    client.put_object(Bucket=bucket, Key="out/other.jsonl", Body=b"kept\n")
    assert salvage_leftovers(path) == 1
    lines = [f'{{"n": {n}}}' for n in range(50)]
    options = PipelineOptions([f"--s3_endpoint_url={endpoint}"])
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        _ = pipeline | beam.Create(lines) | WriteLines(path, part="A", run_id="t3")
    pieces = set(objects(endpoint, bucket)) - {"out/other.jsonl"}
    assert pieces and all(
        k.startswith("out/.dead.jsonl.beaconflow/dead.jsonl.parts") for k in pieces
    )
    assert merge_parts(path) == len(pieces)
    stored = objects(endpoint, bucket)
    assert sorted(stored) == ["out/dead.jsonl", "out/other.jsonl"]
    assert sorted(stored["out/dead.jsonl"].decode().splitlines()) == sorted([*lines, '{"n": -1}'])
    # a leftover under the prefix is removed before a run that does not salvage
    client.put_object(Bucket=bucket, Key="out/.dead.jsonl.beaconflow/dead.jsonl.tmpA-x", Body=b"x")
    assert remove_leftovers(path) == 1
    assert sorted(objects(endpoint, bucket)) == ["out/dead.jsonl", "out/other.jsonl"]
    assert os.listdir(tmp_path) == [], "no local folder is made for an s3:// file"
    forget_run("t3")
