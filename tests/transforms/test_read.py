"""The read step's functions (``beaconflow.transforms.read``): files matched, lines and rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from beaconflow.transforms.read import InputError, expand_inputs, read_file


def test_patterns_expand_to_each_file_once_sorted(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl.gz", "c.parquet"):
        (tmp_path / name).write_bytes(b"")
    files = expand_inputs([str(tmp_path / "*"), str(tmp_path / "a.*")])
    assert [Path(f).name for f in files] == ["a.jsonl.gz", "b.jsonl", "c.parquet"]


@pytest.mark.parametrize(
    ("name", "error"),
    [("nothing-*.jsonl", "no file matches"), ("notes.txt", "is neither .jsonl")],
)
def test_a_pattern_that_cannot_be_read_names_itself(tmp_path: Path, name: str, error: str) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=error):
        expand_inputs([str(tmp_path / name)])


def test_lines_are_numbered_blank_ones_skipped_and_a_cut_gzip_says_where(tmp_path: Path) -> None:
    data = gzip.compress(b'{"a": 1}\n\n{"a": 2}\n' + b'{"a": 3}\n' * 2000)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    records = list(read_file(str(path)))
    assert [(r.position, r.text) for r in records[:2]] == [(1, '{"a": 1}\n'), (3, '{"a": 2}\n')]
    last = records[-1]
    assert last.problem is not None and "truncated or corrupt after line" in last.problem
    assert all(r.problem is None for r in records[:-1])
