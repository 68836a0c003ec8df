"""Appending to many files (``beaconflow.pipelines.appendfiles``): bounded descriptors, all kept."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from beaconflow.pipelines.appendfiles import AppendError, AppendFiles


def test_many_files_in_any_order_keep_every_byte_with_few_descriptors(tmp_path: Path) -> None:
    rng = random.Random(5)
    paths = [str(tmp_path / f"{n:04d}.bin") for n in range(300)]
    expected: dict[str, bytearray] = {path: bytearray() for path in paths}
    with AppendFiles(what="spill file", max_open=8, flush_bytes=256, budget=4096) as out:
        for n in range(20_000):
            # mostly in order, as a log is, and now and then anywhere
            path = paths[n * len(paths) // 20_000] if rng.random() < 0.8 else rng.choice(paths)
            data = f"{n},".encode() * rng.randint(1, 4)
            out.append(path, data)
            expected[path] += data
            assert len(out._open) <= 8
        sizes = out.close()
    assert out.peak_open == 8, "the LRU filled up and never went past its limit"
    for path in paths:
        assert Path(path).read_bytes() == expected[path]
        assert sizes[path] == len(expected[path])
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_what_a_file_held_before_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "old.bin"
    path.write_bytes(b"from an earlier pass")
    path.chmod(0o644)
    with AppendFiles(what="spill file") as out:
        out.append(str(path), b"new")
        out.append(str(tmp_path / "empty.bin"), b"")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "empty.bin").read_bytes() == b"", "a file appended nothing exists"


def test_a_failed_run_leaves_what_was_not_written_unwritten(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    with pytest.raises(RuntimeError), AppendFiles(what="spill file") as out:
        out.append(str(path), b"buffered")
        raise RuntimeError("midway")
    assert not path.exists()


def test_a_file_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    named = rf"spill file not writable: {blocked}/a\.bin: Not a dir"
    with pytest.raises(AppendError, match=named), AppendFiles(what="spill file") as out:
        out.append(str(blocked / "a.bin"), b"x")
