"""Spill files (``beaconflow.model.spillfile``): records back exactly as they were read."""

from __future__ import annotations

import collections
import datetime
import decimal
import pickle
import uuid
import zoneinfo
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beaconflow.model.source import RawRecord
from beaconflow.model.spillfile import SpillFileError, encode, read_spill
from beaconflow.transforms.read import read_file


def _spilled(tmp_path: Path, records: list[RawRecord]) -> Path:
    path = tmp_path / "20250601.spill"
    path.write_bytes(b"".join(encode(raw) for raw in records))
    return path


def test_jsonl_records_and_problems_come_back_whole(tmp_path: Path) -> None:
    records = [
        RawRecord("in/a.jsonl", 1, text='{"time": 1, "user_id": "ü \\u00e9"}\n'),
        RawRecord("in/a.jsonl", 7, text="x" * 1000, problem="line is 2000000 bytes; the limit"),
        RawRecord("in/b.jsonl.gz", 3, problem="file is truncated or corrupt after line 2: ..."),
        RawRecord("in/odd name:with colon.jsonl", 2, text="\ud800 lone surrogate\n"),
        RawRecord("in/a.jsonl", 9, text=""),
    ]
    path = _spilled(tmp_path, records)
    assert list(read_spill(str(path))) == records
    # read_file reads a spill file as it reads any input: what ReadEvents does per file
    assert list(read_file(str(path), "parquet")) == records


def test_parquet_rows_keep_their_types(tmp_path: Path) -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    table = pa.table(
        {
            "utc": pa.array([datetime.datetime(2025, 6, 1, 12)], pa.timestamp("us", tz="UTC")),
            "paris": pa.array(
                [datetime.datetime(2025, 6, 1, 12)], pa.timestamp("ms", tz=paris.key)
            ),
            "offset": pa.array([datetime.datetime(2025, 6, 1)], pa.timestamp("ns", tz="+02:00")),
            "naive": pa.array([datetime.datetime(2025, 6, 1, 1, 2, 3)], pa.timestamp("us")),
            "day": pa.array([datetime.date(2025, 6, 1)]),
            "clock": pa.array([datetime.time(13, 14, 15)]),
            "took": pa.array([datetime.timedelta(seconds=90)]),
            "price": pa.array([decimal.Decimal("12.340")], pa.decimal128(10, 3)),
            "blob": pa.array([b"\x00\x93\xff"]),
            "tags": pa.array([["a", "b"]]),
            "nested": pa.array([{"k": [1, 2], "s": {"x": 1.5}}]),
            "counts": pa.array([[("gold", 3)]], pa.map_(pa.string(), pa.int64())),
            "id": pa.array([uuid.UUID(int=7).bytes], pa.uuid()),
        }
    )
    source = tmp_path / "rows.parquet"
    pq.write_table(table, source)
    rows = list(read_file(str(source)))
    path = _spilled(tmp_path, rows)
    back = list(read_spill(str(path)))
    assert back == rows
    row = back[0].row
    assert row is not None
    assert row["paris"].tzinfo == paris and row["paris"].utcoffset() == datetime.timedelta(hours=2)
    assert row["utc"].tzinfo == zoneinfo.ZoneInfo("UTC")
    assert row["offset"].tzinfo == datetime.timezone(datetime.timedelta(hours=2))
    assert row["naive"].tzinfo is None
    assert type(row["price"]) is decimal.Decimal and str(row["price"]) == "12.340"
    assert row["blob"] == b"\x00\x93\xff"
    assert row["counts"] == [("gold", 3)], "a map column's pairs stay tuples"
    assert row["clock"] == datetime.time(13, 14, 15)
    assert row["took"] == datetime.timedelta(seconds=90)
    assert row["id"] == uuid.UUID(int=7)


def test_a_row_no_spill_file_may_hold_is_refused_naming_its_record() -> None:
    interval = pa.array([pa.scalar((1, 2, 3), pa.month_day_nano_interval()).as_py()])
    row = {"time": "2025-06-01T00:00:00Z", "every": interval[0].as_py()}
    with pytest.raises(SpillFileError, match=r"in/x\.parquet:4: cannot be spilled"):
        encode(RawRecord("in/x.parquet", 4, row=row))
    ordered = {"time": 1, "extra": collections.OrderedDict(a=1)}
    with pytest.raises(SpillFileError, match=r"in/x\.parquet:5: cannot be spilled.*OrderedDict"):
        encode(RawRecord("in/x.parquet", 5, row=ordered))


def test_a_file_naming_another_class_runs_nothing(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("ran",))

    path = tmp_path / "hostile.spill"
    good = encode(RawRecord("a.jsonl", 1, text="{}"))
    path.write_bytes(good + pickle.dumps(("a.jsonl", 2, None, {"x": Boom()}, None)))
    records = read_spill(str(path))
    assert next(records) == RawRecord("a.jsonl", 1, text="{}")
    with pytest.raises(SpillFileError, match=r"hostile\.spill is damaged after record 1: .*print"):
        next(records)


@pytest.mark.parametrize("cut", [1, 10, -1])
def test_a_torn_file_is_named_with_the_records_before_the_tear(tmp_path: Path, cut: int) -> None:
    records = [RawRecord("a.jsonl", n, text=f'{{"n": {n}}}') for n in range(1, 4)]
    data = b"".join(encode(raw) for raw in records)
    path = tmp_path / "torn.spill"
    last = len(encode(records[-1]))
    path.write_bytes(data[: len(data) - last + cut] if cut > 0 else data[:cut])
    with pytest.raises(SpillFileError, match=r"torn\.spill is damaged after record 2"):
        list(read_spill(str(path)))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpillFileError, match=r"spill file .*gone\.spill: cannot be read: No such"):
        list(read_spill(str(tmp_path / "gone.spill")))
