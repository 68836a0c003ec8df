"""Bad input: whatever a log line or file holds, the good events next to it still go out.

Every case writes at least one good event into the same file as the bad records, runs the
whole backfill against the sandbox collector on loopback (in-process through ``run_json()``, and
a few times through the real CLI to see its stderr and exit status), and checks that:

- every good event is delivered (the collector accepted its messages, nothing was rejected);
- every bad record is in the dead letter, with a ``reason`` naming the problem and a
  ``source`` with the file and the line (or row);
- the report adds up (``invariant_errors == []``).

"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beaconflow.sandbox.collector import Collector
from tests.conftest import backfill_flags, read_dead_letter, run_cli, run_json

NOW = 1_800_000_000
T0 = 1_750_000_000  # 2025-06-15T15:06:40Z
ROOT = Path(__file__).resolve().parents[2]

#: The report's counters (docs/outputs.md).
COUNTERS = (
    "events_read", "events_invalid", "events_duplicate", "events_out_of_range", "events_mapped",
    "messages_built", "messages_duplicate", "messages_skipped", "messages_delivered",
    "messages_failed", "messages_dry_run",
)  # fmt: skip


# -- helpers ---------------------------------------------------------------------------------


def _good(n: int) -> dict[str, Any]:
    """A valid event: one Kontagent evt (``s`` = its user) and one KISSmetrics record."""
    return {
        "event_id": f"good-{n}",
        "time": T0 + n,
        "user_id": 1000 + n,
        "event": "level_up",
        "level": 1,
        # makes gzip output less compressible, so that a cut lands mid-line
        "note": hashlib.sha256(str(n).encode()).hexdigest(),
    }


def _line(record: bytes | str | dict[str, Any]) -> bytes:
    if isinstance(record, bytes):
        return record
    if isinstance(record, str):
        return record.encode()
    return json.dumps(record).encode()


def _jsonl(records: Sequence[bytes | str | dict[str, Any]]) -> bytes:
    return b"".join(_line(r) + b"\n" for r in records)


def _write(path: Path, records: Sequence[bytes | str | dict[str, Any]]) -> Path:
    data = _jsonl(records)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def _parquet(path: Path, table: pa.Table) -> Path:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def _run(
    collector: Collector, tmp_path: Path, *inputs: Path
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    status, report = run_json(
        backfill_flags(collector.base_url, tmp_path / "out", *inputs), now=NOW
    )
    return status, report, read_dead_letter(tmp_path / "out")


def _assert_delivered(
    collector: Collector,
    report: dict[str, Any],
    goods: Sequence[dict[str, Any]],
    kissmetrics_only: Sequence[dict[str, Any]] = (),
) -> None:
    """Exactly the good events' messages reached the collector, all of them valid.

    ``kissmetrics_only``: events whose KISSmetrics message alone could be built.
    """
    assert collector.rejected() == [], "every request must be valid per the references"
    sent = {
        (r.destination, r.param_map().get("s") or r.param_map().get("_p"))
        for r in collector.accepted()
    }
    expected = {(d, str(g["user_id"])) for g in goods for d in ("kontagent", "kissmetrics")}
    expected |= {("kissmetrics", str(e["user_id"])) for e in kissmetrics_only}
    assert sent == expected
    delivered = 2 * len(goods) + len(kissmetrics_only)
    assert report["messages_delivered"] == len(collector.accepted()) == delivered
    assert report["messages_failed"] == 0


def _entry(
    dead: list[dict[str, Any]], path: Path, position: int, unit: str = "line"
) -> dict[str, Any]:
    """The one dead-letter entry of ``path`` at ``position``."""
    matches = [d for d in dead if d["source"] == {"file": str(path), unit: position}]
    assert len(matches) == 1, f"no single dead letter for {path.name} {unit} {position}: {dead}"
    return matches[0]


def _assert_reason(entry: dict[str, Any], *fragments: str) -> None:
    for fragment in fragments:
        assert fragment.lower() in entry["reason"].lower(), entry["reason"]


#: A bad line, the fragments its dead-letter reason must contain, and the stage it stops at.
Bad = tuple[bytes | str | dict[str, Any], tuple[str, ...], str]


def _assert_bad_lines(
    collector: Collector, tmp_path: Path, bad: Sequence[Bad]
) -> list[dict[str, Any]]:
    """Write a good event, the bad lines, another good event; run; check everything.

    A line bad at the ``map`` stage is a valid event whose Kontagent message cannot be built:
    its KISSmetrics message still goes, and its entry names the destination.
    """
    goods = [_good(1), _good(2)]
    source = _write(tmp_path / "events.jsonl", [goods[0], *(b[0] for b in bad), goods[1]])
    status, report, dead = _run(collector, tmp_path, source)
    mapped = [json.loads(_line(b[0])) for b in bad if b[2] == "map"]
    _assert_delivered(collector, report, goods, kissmetrics_only=mapped)
    assert report["invariant_errors"] == []
    assert report["events_read"] == len(bad) + 2
    assert report["events_invalid"] == len(bad) - len(mapped)
    assert report["messages_invalid"] == len(mapped)
    assert len(dead) == len(bad)
    assert report["events_mapped"] == 2 + len(mapped)
    assert status == 3  # invalid events or messages > --max-errors 0
    entries = []
    for number, (record, fragments, stage) in enumerate(bad, start=2):
        entry = _entry(dead, source, number)
        _assert_reason(entry, *fragments)
        assert entry["stage"] == stage, entry
        assert entry.get("destination") == ("kontagent" if stage == "map" else None), entry
        text = _line(record).decode("utf-8", "replace")
        if "line" in entry:  # not a JSON object: the raw line is kept
            assert entry["line"] == text
        else:  # the record as read, so that the dead letter can be replayed
            assert entry["record"] == json.loads(text)
        entries.append(entry)
    return entries


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"}
    return run_cli(*args, env=env, cwd=cwd)


def _assert_clean_stderr(stderr: str) -> None:
    """Only beaconflow's own lines: no traceback, no library noise."""
    assert "Traceback" not in stderr
    for line in stderr.strip().splitlines():
        assert line.startswith("beaconflow: "), line


# -- malformed lines -------------------------------------------------------------------------


def test_malformed_json(collector: Collector, tmp_path: Path) -> None:
    _assert_bad_lines(
        collector,
        tmp_path,
        [
            ("{broken", ("malformed JSON",), "parse"),
            ('{"time": 1750000000, "user_id": 1,', ("malformed JSON",), "parse"),
            ('{"time": 1750000000} trailing', ("malformed JSON", "extra data"), "parse"),
            ("{'time': 1750000000}", ("malformed JSON",), "parse"),
            ("[1, 2, 3]", ("must be a JSON object", "list"), "parse"),
            ('"just a string"', ("must be a JSON object", "str"), "parse"),
            ("null", ("must be a JSON object",), "parse"),
        ],
    )


# -- truncated .jsonl.gz ---------------------------------------------------------------------

GZ_GOODS = [_good(n) for n in range(1, 41)]


def _cut_mid_line() -> tuple[bytes, int]:
    """A .jsonl.gz cut off in its deflate stream, and how many whole lines survive the cut."""
    whole = gzip.compress(_jsonl(GZ_GOODS), mtime=0)
    cut = whole[: len(whole) * 2 // 3]
    prefix = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut)
    assert prefix and not prefix.endswith(b"\n"), "the cut must land inside a line"
    return cut, prefix.count(b"\n")


def _cut_at_flush_point() -> tuple[bytes, int]:
    """A .jsonl.gz whose writer flushed after line 20 and was cut off right there."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = compressor.compress(_jsonl(GZ_GOODS[:20])) + compressor.flush(zlib.Z_SYNC_FLUSH)
    whole = head + compressor.compress(_jsonl(GZ_GOODS[20:])) + compressor.flush()
    assert gzip.decompress(whole) == _jsonl(GZ_GOODS)
    return head, 20


def _cut_in_header() -> tuple[bytes, int]:
    """Only the first 5 bytes of the 10-byte gzip header are left."""
    return gzip.compress(_jsonl(GZ_GOODS), mtime=0)[:5], 0


def test_truncated_gzip_delivers_the_lines_before_the_cut(
    collector: Collector, tmp_path: Path
) -> None:
    data, whole_lines = _cut_mid_line()
    source = tmp_path / "day.jsonl.gz"
    source.write_bytes(data)
    status, report, dead = _run(collector, tmp_path, source)
    assert 0 < whole_lines < len(GZ_GOODS)
    _assert_delivered(collector, report, GZ_GOODS[:whole_lines])
    assert report["invariant_errors"] == []
    # the broken-off remainder is counted and dead-lettered, at the line after the last whole one
    assert report["events_read"] == whole_lines + 1
    assert report["events_invalid"] == 1
    _entry(dead, source, whole_lines + 1)
    assert status == 3


@pytest.mark.parametrize(
    "cut",
    [_cut_mid_line, _cut_at_flush_point, _cut_in_header],
    ids=["mid-line", "at-flush-point", "in-header"],
)
def test_truncated_gzip_is_reported_as_truncated(collector: Collector, tmp_path: Path, cut: Any) -> None:  # fmt: skip
    data, whole_lines = cut()
    source = tmp_path / "day.jsonl.gz"
    source.write_bytes(data)
    other = _write(tmp_path / "other.jsonl", [_good(100)])
    status, report, dead = _run(collector, tmp_path, source, other)
    _assert_delivered(collector, report, [*GZ_GOODS[:whole_lines], _good(100)])
    assert report["invariant_errors"] == []
    reasons = [d["reason"].lower() for d in dead if d["source"]["file"] == str(source)]
    assert any("truncated" in r or "corrupt" in r for r in reasons), reasons
    assert status == 3


# -- a 10 MB line ----------------------------------------------------------------------------


def test_a_10_mb_line_is_refused_and_only_an_excerpt_kept(
    collector: Collector, tmp_path: Path
) -> None:
    huge = (
        b'{"time": 1750000000, "user_id": 5, "event": "apr", "pad": "' + b"x" * (10 << 20) + b'"}'
    )
    goods = [_good(1), _good(2)]
    source = _write(tmp_path / "events.jsonl", [goods[0], huge, "{after", goods[1]])
    status, report, dead = _run(collector, tmp_path, source)
    _assert_delivered(collector, report, goods)
    assert report["invariant_errors"] == []
    assert (report["events_read"], report["events_invalid"]) == (4, 2)
    entry = _entry(dead, source, 2)
    assert entry["stage"] == "read"
    _assert_reason(entry, f"line is {len(huge) + 1} bytes", "limit")  # the whole line, newline too
    assert huge.decode()[:100] in entry["line"]
    assert len(entry["line"]) <= 1000  # an excerpt, not 10 MB
    assert (tmp_path / "out" / "dead.jsonl").stat().st_size < 16_000
    _assert_reason(_entry(dead, source, 3), "malformed JSON")  # line numbers stay right
    assert status == 3


# -- wrong types, missing fields, bad names --------------------------------------------------


def test_wrong_types(collector: Collector, tmp_path: Path) -> None:
    _assert_bad_lines(
        collector,
        tmp_path,
        [
            ({"time": T0, "user_id": [1], "event": "level_up"},
             ("'user_id'", "string or an integer"), "parse"),
            ({"time": True, "user_id": 1, "event": "level_up"}, ("'time'", "bool"), "parse"),
            ({"time": T0, "user_id": 1, "event": "invite_response", "installed": "yes"},
             ("'installed'", "true or false"), "parse"),
            ({"time": T0, "user_id": 1, "event": "revenue_tracking", "value": "12"},
             ("'value'", "integer"), "parse"),
            ({"time": T0, "user_id": 1, "event": "level_up", "properties": {"a": {"b": 1}}},
             ("'properties'", "string, number or bool"), "parse"),
            ({"time": T0, "user_id": 1, "event": "level_up", "properties": {"a": [1, 2]}},
             ("'properties'", "string, number or bool"), "parse"),
        ],
    )  # fmt: skip


def test_missing_required_fields(collector: Collector, tmp_path: Path) -> None:
    _assert_bad_lines(
        collector,
        tmp_path,
        [
            ({"user_id": 1, "event": "level_up"}, ("field 'time': is required",), "parse"),
            ({"time": T0, "event": "level_up"}, ("field 'user_id': is required",), "parse"),
            ({"time": T0, "user_id": 1}, ("field 'event': is required",), "parse"),
            ({"time": None, "user_id": 1, "event": "level_up"},
             ("field 'time': is required",), "parse"),
        ],
    )  # fmt: skip


def test_bad_event_names(collector: Collector, tmp_path: Path) -> None:
    _assert_bad_lines(
        collector,
        tmp_path,
        [
            ({"time": T0, "user_id": 1, "event": "level up"},
             ("parameter 'n'", "[a-zA-Z0-9_]"), "map"),
            ({"time": T0, "user_id": 1, "event": "x" * 40}, ("parameter 'n'", "1 to 32"), "map"),
            ({"time": T0, "user_id": 1, "event": "fdp"}, ("fdp", "deprecated"), "map"),
            ({"time": T0, "user_id": 1, "event": ""}, ("'event'", "non-empty"), "parse"),
        ],
    )  # fmt: skip


# -- times -----------------------------------------------------------------------------------


def test_times_out_of_range(collector: Collector, tmp_path: Path) -> None:
    times: list[tuple[object, str]] = [
        ("2008-12-31T23:59:59Z", "before 2009"),
        (1_230_767_999, "before 2009"),  # 2008-12-31T23:59:59Z as epoch seconds
        ("0001-01-01T00:00:00+01:00", "before 2009"),
        ("2100-01-01T00:00:00Z", "in the future"),
        ("9999-12-31T23:59:59-01:00", "in the future"),
        (10**12, "in the future"),
        (1e300, "in the future"),
        (NOW + 1, "in the future"),
    ]
    _assert_bad_lines(
        collector,
        tmp_path,
        [({"time": t, "user_id": 1, "event": "level_up"}, ("'time'", why), "parse")
         for t, why in times],
    )  # fmt: skip


def test_nan_and_infinity(collector: Collector, tmp_path: Path) -> None:
    record = '{"time": %s, "user_id": 1, "event": "level_up"}'
    _assert_bad_lines(
        collector,
        tmp_path,
        [
            (record % "NaN", ("malformed JSON", "NaN"), "parse"),
            (record % "Infinity", ("malformed JSON", "Infinity"), "parse"),
            (record % "-Infinity", ("malformed JSON", "Infinity"), "parse"),
            ('{"time": 1750000000, "user_id": 1, "event": "level_up", "value": NaN}',
             ("malformed JSON", "NaN"), "parse"),
            (record % "1e400", ("'time'", "finite"), "parse"),  # float('inf') to Python
            (record % "-1e400", ("'time'", "finite"), "parse"),
            ('{"time": 1750000000, "user_id": 1, "event": "level_up", "properties": {"x": 1e400}}',
             ("'properties'",), "parse"),
        ],
    )  # fmt: skip


def test_dead_letter_of_1e400_is_strict_json(collector: Collector, tmp_path: Path) -> None:
    line = '{"time": 1e400, "user_id": 1, "event": "level_up"}'
    _assert_bad_lines(collector, tmp_path, [(line, ("finite",), "parse")])
    text = (tmp_path / "out" / "dead.jsonl").read_text(encoding="utf-8")

    def refuse(name: str) -> float:
        raise ValueError(f"{name} is not JSON")

    for dead_line in text.splitlines():
        json.loads(dead_line, parse_constant=refuse)


# -- bytes that do not belong in a log line ----------------------------------------------------


def test_non_utf8_bytes(collector: Collector, tmp_path: Path) -> None:
    entries = _assert_bad_lines(
        collector,
        tmp_path,
        [
            (b'\xff\xfe{"time": 1750000000, "user_id": 1, "event": "level_up"}',
             ("not valid UTF-8", "byte 0"), "read"),
            (b'{"time": 1750000000, "user_id": 1, "event": "level_up", "city": "\xff\xfe"}',
             ("not valid UTF-8",), "read"),
            (b"\xff\xfe", ("not valid UTF-8",), "read"),
        ],
    )  # fmt: skip
    assert all("\ufffd" in entry["line"] for entry in entries)  # shown, not dropped


def test_nul_bytes(collector: Collector, tmp_path: Path) -> None:
    _assert_bad_lines(
        collector,
        tmp_path,
        [
            (b'{"time": 1750000000, "user_id": 1, "event": "level\\u0000up"}',
             ("parameter 'n'",), "map"),
            (b'{"time": 1750000000, "user_id": "1\\u00002", "event": "level_up"}',
             ("numeric user id",), "map"),
            (b'{"time": 1750000000, "user_id": 1, "event": "level\x00up"}',
             ("malformed JSON", "control character"), "parse"),
            (b"\x00\x00\x00", ("malformed JSON",), "parse"),
            (b'{"time": 1750000000, "user_id": 1, "event": "level_up"}\x00',
             ("malformed JSON",), "parse"),
        ],
    )  # fmt: skip


def test_deeply_nested_json(collector: Collector, tmp_path: Path) -> None:
    _assert_bad_lines(
        collector,
        tmp_path,
        [
            ("[" * 10_000 + "]" * 10_000, ("nested deeper",), "parse"),
            ('{"a": ' * 10_000 + "1" + "}" * 10_000, ("nested deeper",), "parse"),
            ("[" * 10_000, ("nested deeper",), "parse"),
            ('{"time": 1750000000, "user_id": 1, "event": "level_up", "x": '
             + "[" * 40 + "]" * 40 + "}", ("nested deeper than 32",), "parse"),
        ],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("line", "stage"),
    [
        ('{"time": "2008-06-01T00:00:00Z", "user_id": 1, "event": "level_up", "city": "\\ud800"}',
         "parse"),
        ('{"time": 1750000000, "user_id": "\\ud800", "event": "level_up"}', "parse"),
        # a property no URL can carry
        ('{"time": 1750000000, "user_id": 1, "event": "level_up", "properties": {"x": "\\ud800"}}',
         "parse"),
    ],
    ids=["next-to-another-problem", "in-the-user-id", "in-a-property"],
)  # fmt: skip
def test_lone_surrogate_escape(collector: Collector, tmp_path: Path, line: str, stage: str) -> None:
    # refused as soon as the line is parsed: the text is not Unicode, so nothing can carry it
    _assert_bad_lines(collector, tmp_path, [(line, ("lone surrogate",), stage)])


# -- empty input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty.jsonl", b""),
        ("empty.jsonl.gz", gzip.compress(b"", mtime=0)),
        ("blank.jsonl", b"\n  \n\t\r\n\n"),
    ],
    ids=["zero-bytes", "gzip-of-nothing", "blank-lines"],
)
def test_empty_file(collector: Collector, tmp_path: Path, name: str, data: bytes) -> None:
    source = tmp_path / name
    source.write_bytes(data)
    status, report, dead = _run(collector, tmp_path, source)
    assert status == 0
    assert {counter: report[counter] for counter in COUNTERS} == dict.fromkeys(COUNTERS, 0)
    assert report["invariant_errors"] == []
    assert dead == []
    assert collector.accepted() == [] and collector.rejected() == []


# -- Parquet ---------------------------------------------------------------------------------


def test_parquet_of_another_schema_and_the_run_goes_on(
    collector: Collector, tmp_path: Path
) -> None:
    other = _parquet(
        tmp_path / "other.parquet", pa.table({"a": [1, 2, None], "b": ["x", None, "z"]})
    )
    goods = [_good(1), _good(2)]
    good = _write(tmp_path / "good.jsonl", goods)
    status, report, dead = _run(collector, tmp_path, other, good)
    _assert_delivered(collector, report, goods)
    assert report["invariant_errors"] == []
    assert (report["events_read"], report["events_invalid"]) == (5, 3)
    rows = [_entry(dead, other, row, unit="row") for row in (1, 2, 3)]
    for entry in rows:
        assert entry["stage"] == "parse"
        _assert_reason(entry, "field 'time': is required")
    assert [e["record"] for e in rows] == [{"a": 1, "b": "x"}, {"a": 2}, {"b": "z"}]
    assert status == 3


def test_parquet_rows_with_bad_values(collector: Collector, tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["p1", "p2", "p3", "p4", "p5", "p6"],
            "time": ["2025-06-15T15:06:41Z", "2008-01-01T00:00:00Z", "soon", None,
                     "2025-06-15T15:06:42Z", "2025-06-15T15:06:43Z"],
            "user_id": ["1001", "5", "6", "7", "8", "1006"],
            "event": ["level_up"] * 6,
            "properties": [None, None, None, None, '{"x": NaN}', '{"x": "ok"}'],
        }
    )  # fmt: skip
    source = _parquet(tmp_path / "events.parquet", table)
    status, report, dead = _run(collector, tmp_path, source)
    _assert_delivered(collector, report, [{"user_id": 1001}, {"user_id": 1006}])
    assert report["invariant_errors"] == []
    assert (report["events_read"], report["events_invalid"]) == (6, 4)
    _assert_reason(_entry(dead, source, 2, unit="row"), "'time'", "before 2009")
    _assert_reason(_entry(dead, source, 3, unit="row"), "'time'", "ISO-8601")
    _assert_reason(_entry(dead, source, 4, unit="row"), "field 'time': is required")
    _assert_reason(_entry(dead, source, 5, unit="row"), "'properties'")
    assert status == 3


def test_parquet_row_with_deeply_nested_json_text(collector: Collector, tmp_path: Path) -> None:
    deep = "[" * 10_000 + "]" * 10_000
    table = pa.table(
        {
            "event_id": ["p1", "p2", "p3"],
            "time": ["2025-06-15T15:06:41Z"] * 3,
            "user_id": ["1001", "5", "1003"],
            "event": ["level_up"] * 3,
            "properties": [None, deep, None],
        }
    )
    source = _parquet(tmp_path / "events.parquet", table)
    status, report, dead = _run(collector, tmp_path, source)
    assert report["invariant_errors"] == []
    _entry(dead, source, 2, unit="row")
    _assert_delivered(collector, report, [{"user_id": 1001}, {"user_id": 1003}])
    assert status == 3


@pytest.mark.parametrize(
    "columns",
    [
        {"time": pa.array([datetime(2025, 6, 15, 15, 6, 41, tzinfo=UTC)], pa.timestamp("s", "UTC"))},
        {"time": ["2025-06-15T15:06:41Z"], "blob": pa.array([b"\x00\xff"], pa.binary())},
        {"time": ["2025-06-15T15:06:41Z"], "day": pa.array([datetime(2025, 6, 15).date()])},
    ],
    ids=["timestamp-time", "binary-column", "date-column"],
)  # fmt: skip
def test_parquet_with_typed_columns_and_no_event_id(
    collector: Collector, tmp_path: Path, columns: dict[str, Any]
) -> None:
    """Values that are not JSON types still give a content identity: no crash, dedup works."""
    one = pa.table({**columns, "user_id": ["1001"], "event": ["level_up"]})
    source = _parquet(tmp_path / "typed.parquet", pa.concat_tables([one, one]))
    status, report, dead = _run(collector, tmp_path, source)
    _assert_delivered(collector, report, [{"user_id": 1001}])
    assert report["invariant_errors"] == []
    assert (report["events_read"], report["events_duplicate"]) == (2, 1)
    assert dead == []
    assert status == 0


# -- several files ---------------------------------------------------------------------------


def test_an_entirely_bad_file_does_not_stop_the_good_one(
    collector: Collector, tmp_path: Path
) -> None:
    goods = [_good(1), _good(2), _good(3)]
    good = _write(tmp_path / "a-good.jsonl", goods)
    bad = _write(
        tmp_path / "b-bad.jsonl",
        ["{broken", b"\xff\xfe", {"time": T0, "event": "level_up"}, "[" * 10_000],
    )
    bad_gz = tmp_path / "c-bad.jsonl.gz"
    bad_gz.write_bytes(b"this is not gzip at all\n")
    garbage = tmp_path / "d-garbage.parquet"
    garbage.write_bytes(b"PAR1 but not really a Parquet file")
    other = _parquet(tmp_path / "e-other.parquet", pa.table({"a": [1, 2], "b": ["x", "y"]}))
    status, report, dead = _run(collector, tmp_path, good, bad, bad_gz, garbage, other)
    _assert_delivered(collector, report, goods)
    assert report["invariant_errors"] == []
    assert report["events_mapped"] == 3
    files = {Path(entry["source"]["file"]).name for entry in dead}
    assert files == {"b-bad.jsonl", "c-bad.jsonl.gz", "d-garbage.parquet", "e-other.parquet"}
    assert len([d for d in dead if d["source"]["file"] == str(bad)]) == 4
    assert _entry(dead, garbage, 1, unit="row")["stage"] == "read"
    assert status == 3


# -- through the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patterns",
    [["{tmp}/nothing-*.jsonl"], ["{tmp}/good.jsonl", "{tmp}/missing/*.parquet"]],
    ids=["only-pattern", "second-pattern"],
)
def test_a_glob_that_matches_nothing_is_one_line_and_exit_2(
    tmp_path: Path, patterns: list[str]
) -> None:
    _write(tmp_path / "good.jsonl", [_good(1)])
    inputs = [p.format(tmp=tmp_path) for p in patterns]
    done = _cli(
        *(f"--input={p}" for p in inputs),
        f"--dry-run={tmp_path / 'dry.jsonl'}",
        f"--report={tmp_path / 'out' / 'report.json'}",
        f"--dead-letter={tmp_path / 'out' / 'dead.jsonl'}",
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert inputs[-1] in done.stderr and "no file matches" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "out" / "report.json").exists()


def test_hostile_lines_through_the_cli(collector: Collector, tmp_path: Path) -> None:
    goods = [_good(1), _good(2)]
    huge = b'{"pad": "' + b"y" * (10 << 20) + b'"}'
    source = _write(
        tmp_path / "hostile.jsonl",
        [goods[0], huge, b"\xff\xfe", b"\x00\x00", "[" * 10_000,
         '{"time": NaN, "user_id": 1, "event": "level_up"}', goods[1]],
    )  # fmt: skip
    done = _cli(*backfill_flags(collector.base_url, tmp_path / "out", source))
    assert done.returncode == 3, done.stderr
    _assert_clean_stderr(done.stderr)
    assert len(done.stderr) < 2_000  # nothing of the 10 MB line
    errors = [line for line in done.stderr.splitlines() if "exceed --max-errors" in line]
    assert len(errors) == 1 and "5 invalid events" in errors[0]
    assert "events: 7 read, 2 mapped, 5 invalid" in done.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["invariant_errors"] == []
    _assert_delivered(collector, report, goods)
    dead = read_dead_letter(tmp_path / "out")
    assert sorted(d["source"]["line"] for d in dead) == [2, 3, 4, 5, 6]


def test_lone_surrogate_through_the_cli(collector: Collector, tmp_path: Path) -> None:
    line = '{"time": "2008-06-01T00:00:00Z", "user_id": 1, "event": "level_up", "city": "\\ud800"}'
    source = _write(tmp_path / "events.jsonl", [_good(1), line])
    done = _cli(*backfill_flags(collector.base_url, tmp_path / "out", source))
    _assert_clean_stderr(done.stderr)
    assert done.returncode == 3, done.stderr


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.jsonl.gz"])
def test_a_byte_order_mark_before_the_first_line_is_not_part_of_it(
    name: str, collector: Collector, tmp_path: Path
) -> None:
    first = {"event_id": "b1", "time": 1750000000, "user_id": 1, "event": "level_up"}
    second = {"event_id": "b2", "time": 1750000060, "user_id": 2, "event": "level_up"}
    data = b"\xef\xbb\xbf" + f"{json.dumps(first)}\n\ufeff{json.dumps(second)}\n".encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    status, report, dead = _run(collector, tmp_path, path)
    assert report["events_mapped"] == 1, "the first line is read; a BOM inside the file is not"
    _assert_reason(_entry(dead, path, 2), "malformed JSON", "BOM")
    assert status == 3


def test_an_endless_last_line_is_refused_in_pieces(collector: Collector, tmp_path: Path) -> None:
    # no newline at the end: the reader stops at the end of the file, having held at most
    # the limit of it at once
    source = tmp_path / "events.jsonl"
    source.write_bytes(_jsonl([_good(1)]) + b'{"pad": "' + b"z" * (3 << 20))
    status, report, dead = _run(collector, tmp_path, source)
    _assert_delivered(collector, report, [_good(1)])
    _assert_reason(_entry(dead, source, 2), f"line is {9 + (3 << 20)} bytes")
    assert status == 3


def test_a_first_line_just_over_the_limit_with_a_bom_is_refused_whole(
    collector: Collector, tmp_path: Path
) -> None:
    # the BOM must not bring a cut line back under the limit (its rest read as line 2)
    from beaconflow.transforms.read import MAX_LINE_BYTES

    long = b'{"pad": "' + b"q" * (MAX_LINE_BYTES - 10) + b'"}'
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + long + b"\n" + _jsonl([_good(1)]))
    status, report, dead = _run(collector, tmp_path, source)
    _assert_delivered(collector, report, [_good(1)])
    _assert_reason(_entry(dead, source, 1), f"line is {len(long) + 4} bytes")
    assert [d["source"]["line"] for d in dead] == [1]
    assert status == 3
