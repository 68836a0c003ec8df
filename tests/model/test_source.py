"""Where a record came from (``beaconflow.model.source``): its place as the dead letter names it."""

from __future__ import annotations

import pytest

from beaconflow.model.source import RawRecord, location, source_of


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("logs/a.jsonl:12", {"file": "logs/a.jsonl", "line": 12}),
        ("logs/a.jsonl.gz:1", {"file": "logs/a.jsonl.gz", "line": 1}),
        ("gs://bucket/b.parquet:7", {"file": "gs://bucket/b.parquet", "row": 7}),
        # a Windows-like path with a colon keeps everything before the last one
        ("C:/logs/a.ndjson:3", {"file": "C:/logs/a.ndjson", "line": 3}),
        ("odd.jsonl:x", {"file": "odd.jsonl", "line": "x"}),
    ],
)
def test_a_source_is_a_file_and_a_line_or_a_row(source: str, expected: dict[str, object]) -> None:
    assert location(source) == expected
    # and a dead letter's place read back is the source again
    assert source_of(expected) == source


@pytest.mark.parametrize(
    "where",
    [
        None,
        "a.jsonl:1",
        {},
        {"line": 3},
        {"file": "a"},
        {"file": 1, "line": 2},
        {"file": "a", "line": True},
    ],
)
def test_what_is_not_a_place_has_no_source(where: object) -> None:
    assert source_of(where) is None


def test_a_raw_record_names_its_own_place() -> None:
    raw = RawRecord("b.parquet", 4, row={"event": "x"})
    assert raw.source == "b.parquet:4" and raw.location() == {"file": "b.parquet", "row": 4}
