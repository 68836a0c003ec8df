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


def test_json_and_json_gz_files_are_json_lines(tmp_path: Path) -> None:
    # Amplitude's exports are JSON lines named *.json.gz
    (tmp_path / "a.json").write_text('{"a": 1}\n{"a": 2}\n')
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(b'{"b": 1}\n'))
    files = expand_inputs([str(tmp_path / "*")])
    assert [Path(f).name for f in files] == ["a.json", "b.json.gz"]
    assert [r.text for f in files for r in read_file(f)] == [
        '{"a": 1}\n',
        '{"a": 2}\n',
        '{"b": 1}\n',
    ]


def test_a_json_array_is_one_problem_for_its_file_not_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text('\n[\n  {"a": 1},\n  {"a": 2}\n]\n')
    records = list(read_file(str(path)))
    assert len(records) == 1 and records[0].position == 2
    assert records[0].problem is not None and "JSON array, not JSON lines" in records[0].problem


def test_format_reads_files_whose_names_say_nothing(tmp_path: Path) -> None:
    path = tmp_path / "part-00000"
    path.write_text('{"a": 1}\n')
    with pytest.raises(InputError, match="give --format jsonl or --format parquet"):
        expand_inputs([str(path)])
    assert expand_inputs([str(path)], "jsonl") == [str(path)]
    assert [r.text for r in read_file(str(path), "jsonl")] == ['{"a": 1}\n']
    # --format parquet on JSON text: the file is unreadable as Parquet, one problem, no crash
    (problem,) = list(read_file(str(path), "parquet"))
    assert problem.problem is not None and "Parquet file is unreadable" in problem.problem
