"""The read step's functions (``beaconflow.transforms.read``): files matched, lines and rows.

An input that cannot be read is refused before the run, naming it and the system's reason.
"""

from __future__ import annotations

import gzip
import itertools
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from beaconflow.transforms.read import (
    MAX_LINE_BYTES,
    InputError,
    expand_inputs,
    line_ranges,
    read_file,
    read_lines,
)
from tests.fs_faults import as_permission_bits_say


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


def test_an_input_that_is_a_directory_is_refused_before_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "day.jsonl"
    folder.mkdir()
    with pytest.raises(InputError) as raised:
        expand_inputs([str(folder)])
    assert str(raised.value) == f"--input {folder}: cannot be read: Is a directory"


def test_a_matched_file_that_cannot_be_read_is_named_with_its_pattern(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text("{}\n")
    secret = tmp_path / "b.jsonl"
    secret.write_text("{}\n")
    secret.chmod(0)
    pattern = str(tmp_path / "*.jsonl")
    check = "import sys\nfrom beaconflow.transforms.read import expand_inputs\n"
    check += "try:\n    expand_inputs([sys.argv[1]])\nexcept Exception as e:\n    print(e)"
    done = subprocess.run(
        [*as_permission_bits_say(), sys.executable, "-c", check, pattern],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout == f"--input {pattern}: {secret} cannot be read: Permission denied\n"


def test_a_named_pipe_is_neither_waited_for_nor_read_when_inputs_are_checked(
    tmp_path: Path,
) -> None:
    pipe = tmp_path / "stream.jsonl"
    os.mkfifo(pipe)
    assert expand_inputs([str(pipe)]) == [str(pipe)]  # no writer: a blocking open would hang


def test_a_file_gone_before_it_is_read_says_so_not_corrupt(tmp_path: Path) -> None:
    [record] = list(read_file(str(tmp_path / "gone.jsonl")))
    assert record.problem == "file cannot be read: No such file or directory"
    assert record.position == 1


def _lines_file(tmp_path: Path, name: str, lines: list[bytes], end: bytes = b"\n") -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + end)
    return path


RECORD = b'{"time": 1750000000, "user_id": 1, "event": "apr"}'
LONG = b'{"x": "' + b"y" * MAX_LINE_BYTES + b'"}'

#: JSON-lines files at the reader's edges: each read in ranges must read as a whole
SPLITTABLE = {
    "plain": [RECORD] * 50,
    "bom, blank lines, no last newline": [b"\xef\xbb\xbf" + RECORD, b"", b"  ", *[RECORD] * 30],
    "over-long and bad UTF-8 lines among records": [
        RECORD, LONG, b"\xff\xfe bad", RECORD, LONG, b"", RECORD, b"[1, 2]", *[RECORD] * 20,
    ],
    "first record after lines that are none": [b"", LONG, b"\xff", b"  ", RECORD, b"[3]", RECORD],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SPLITTABLE))
def test_a_json_lines_file_read_in_ranges_gives_what_it_gives_whole(
    tmp_path: Path, case: str
) -> None:
    lines = SPLITTABLE[case]
    path = _lines_file(tmp_path, "in.jsonl", lines, b"" if "no last" in case else b"\n")
    whole = list(read_file(str(path)))
    size = path.stat().st_size
    rng = random.Random(17)
    cut_sets = [[1], [size - 1], [size // 2], list(range(1, size, max(1, size // 40)))]
    cut_sets += [sorted(rng.sample(range(1, size), 5)) for _ in range(20)]
    for cuts in cut_sets:
        ranges = line_ranges(str(path), cuts)
        assert ranges is not None, cuts
        assert ranges[0].start == 0 and ranges[-1].stop == size
        assert all(a.stop == b.start for a, b in itertools.pairwise(ranges))
        pieces = [raw for part in ranges for raw in read_lines(str(path), part)]
        assert pieces == whole, cuts
    assert len(line_ranges(str(path), cut_sets[3]) or []) >= 3, "cut into several ranges"


def test_files_that_cannot_be_read_in_ranges_are_not_cut(tmp_path: Path) -> None:
    array = _lines_file(tmp_path, "array.jsonl", [b"[", RECORD + b",", RECORD, b"]"])
    late = _lines_file(tmp_path, "late.jsonl", [b""] * 1000 + [RECORD, RECORD])
    empty = _lines_file(tmp_path, "empty.jsonl", [], b"")
    zipped = tmp_path / "z.jsonl.gz"
    zipped.write_bytes(gzip.compress(RECORD + b"\n" + RECORD + b"\n"))
    for path in (array, late, empty, zipped):
        assert line_ranges(str(path), [5]) is None, path.name
    assert line_ranges(str(tmp_path / "gone.jsonl"), [5]) is None
    assert line_ranges("gs://bucket/in.jsonl", [5]) is None
