"""Tests of the Orchard Quest log generator (beaconflow.samples.gamelog).

The validity rules of canonical records are written out here, independently of the
generator, from the Kontagent REST reference and the Ruby library's event table. Run with::

    .venv/bin/python -m pytest tests/samples/test_gamelog.py

The committed sample_data/ is checked in tests/samples/test_make_samples.py.
"""

from __future__ import annotations

import collections
import gzip
import ipaddress
import itertools
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeGuard

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beaconflow.model import kontagent
from beaconflow.model.records import CANONICAL_FIELDS
from beaconflow.samples import gamelog
from beaconflow.samples.gamelog import generate_events, read_parquet, write_jsonl, write_parquet

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"

# ----------------------------------------------------------------------------- the rules

RUBY_NAMES = dict(kontagent.EVENT_NAMES)
CODES = set(RUBY_NAMES.values()) | {"alias"}
ALL_KINDS = {
    "ins", "inr", "nts", "ntr", "nes", "nei", "mes", "mer", "pst", "psr",
    "evt", "apa", "apr", "ucc", "pgr", "cpu", "gci", "mtu", "alias",
}  # fmt: skip
FIELDS = set(CANONICAL_FIELDS)
SENDS = {"ins", "nts", "nes", "mes", "pst"}
RESPONSES = {"inr": "ins", "ntr": "nts", "nei": "nes", "mer": "mes", "psr": "pst"}
STREAM = {
    "feedpub", "stream", "feedstory", "multifeedstory", "dashboard_activity",
    "dashboard_globalnews",
}  # fmt: skip
CHANNELS = {"mes": {"dashboard"}, "mer": {"dashboard"}, "pst": STREAM, "psr": STREAM,
            "ucc": {"ad", "partner"}}  # fmt: skip
CUSTOM_NAME = re.compile(r"[a-zA-Z0-9_]{1,32}")
EARLIEST = gamelog.EARLIEST


def kind(event: str) -> str:
    if event in CODES:
        return event
    return RUBY_NAMES.get(event, "evt")


def parse_time(value: Any) -> datetime:
    if isinstance(value, bool):
        raise ValueError("bool is not a time")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("ISO time without offset")
        return moment
    raise ValueError(f"not a time: {value!r}")


def is_uid(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, str) and value.isascii() and value.isdigit() and int(value) > 0


def is_hex(value: Any, *lengths: int) -> bool:
    return (
        isinstance(value, str)
        and len(value) in lengths
        and re.fullmatch(r"[0-9a-f]+", value) is not None
    )


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def problems(record: Any, now: datetime | None = None) -> list[str]:
    """Every canonical rule the record breaks (empty when valid)."""
    if not isinstance(record, dict):
        return ["not an object"]
    now = now or datetime.now(UTC)
    out = [f"unknown field {name}" for name in record if name not in FIELDS]
    if "event_id" in record and not (isinstance(record["event_id"], str) and record["event_id"]):
        out.append("event_id")
    for required in ("time", "user_id", "event"):
        if required not in record:
            out.append(f"missing {required}")
    if out:
        return out
    try:
        moment = parse_time(record["time"])
        if not EARLIEST <= moment <= now:
            out.append("time out of range")
    except ValueError:
        out.append("time unparsable")
    if not is_uid(record["user_id"]):
        out.append("user_id not numeric")
    event = record["event"]
    if not isinstance(event, str) or not (
        event in RUBY_NAMES or event in CODES or CUSTOM_NAME.fullmatch(event)
    ):
        return [*out, "event name"]
    k = kind(event)
    if event in ("custom_event", "custom_action", "evt"):
        if not (isinstance(record.get("name"), str) and CUSTOM_NAME.fullmatch(record["name"])):
            out.append("custom event without a legal name")
    elif "name" in record:
        out.append("name on a non-custom event")
    if k in ("ins", "nts", "nes", "mes"):
        recipients = record.get("recipients")
        if not (isinstance(recipients, list) and recipients and all(map(is_uid, recipients))):
            out.append("recipients")
    elif "recipients" in record:
        out.append("recipients on the wrong kind")
    if k in SENDS | set(RESPONSES) or "tracking_tag" in record:
        if k not in SENDS | set(RESPONSES) | {"apa"}:
            out.append("tracking_tag on the wrong kind")
        elif not is_hex(record.get("tracking_tag"), 16, 32):
            out.append("tracking_tag")
    if "short_tracking_tag" in record:
        if k not in ("apa", "ucc"):
            out.append("short_tracking_tag on the wrong kind")
        elif not is_hex(record["short_tracking_tag"], 8):
            out.append("short_tracking_tag")
    if k in CHANNELS:
        if record.get("channel") not in CHANNELS[k]:
            out.append("channel")
    elif "channel" in record:
        out.append("channel on the wrong kind")
    if k in set(RESPONSES) | {"ucc"}:
        if not isinstance(record.get("installed"), bool):
            out.append("installed")
    elif "installed" in record:
        out.append("installed on the wrong kind")
    for number in (1, 2, 3):
        name = f"subtype{number}"
        if name in record:
            value = record[name]
            if not (isinstance(value, str) and 0 < len(value) <= 32):
                out.append(name)
            if k not in SENDS | set(RESPONSES) | {"evt", "ucc"}:
                out.append(f"{name} on the wrong kind")
    if k in ("nts", "ntr") and "subtype3" in record:
        out.append("subtype3 on nts/ntr")
    if k == "mtu":
        value = record.get("value")
        if not (is_int(value) and -1000000 <= value <= 1000000):
            out.append("mtu value")
    elif "value" in record and not is_int(record["value"]):
        out.append("value")
    if "level" in record and not (is_int(record["level"]) and record["level"] >= 1):
        out.append("level")
    if "birth_year" in record and not (
        is_int(record["birth_year"]) and 1900 <= record["birth_year"] <= now.year
    ):
        out.append("birth_year")
    if "gender" in record and record["gender"] not in ("m", "f", "u"):
        out.append("gender")
    if "country" in record and not re.fullmatch(r"[A-Z]{2}", str(record["country"])):
        out.append("country")
    for text in ("city", "state", "postal_code", "page_address"):
        if text in record and not (isinstance(record[text], str) and record[text]):
            out.append(text)
    if "friend_count" in record and not (
        is_int(record["friend_count"]) and record["friend_count"] >= 0
    ):
        out.append("friend_count")
    if k == "gci" or "goal_counts" in record:
        counts = record.get("goal_counts")
        if k != "gci":
            out.append("goal_counts on the wrong kind")
        elif not (
            isinstance(counts, dict)
            and counts
            and all(key in ("gc1", "gc2", "gc3", "gc4") for key in counts)
            and all(is_int(v) and -16384 <= v <= 16384 for v in counts.values())
        ):
            out.append("goal_counts")
    if "ip" in record:
        try:
            ipaddress.IPv4Address(record["ip"])
        except (ValueError, TypeError):
            out.append("ip")
    if k == "alias":
        if not (isinstance(record.get("alias"), str) and record["alias"]):
            out.append("alias")
    elif "alias" in record:
        out.append("alias on the wrong kind")
    if "properties" in record:
        props = record["properties"]
        if not isinstance(props, dict) or not all(
            isinstance(key, str)
            and key
            and not key.startswith("_")
            and isinstance(value, str | int | float | bool)
            for key, value in props.items()
        ):
            out.append("properties")
    return out


def identity(record: dict[str, Any]) -> tuple[str, str]:
    if "event_id" in record:
        return ("id", record["event_id"])
    return ("content", json.dumps(record, sort_keys=True, ensure_ascii=False))


GOOD_NTS = {
    "event_id": "x-1",
    "time": "2025-06-01T00:00:00Z",
    "user_id": 100000001,
    "event": "notification_sent",
    "recipients": [100000002, "100000003"],
    "tracking_tag": "0123456789abcdef",
    "subtype1": "crops_ready",
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"subtype3": "x"}, "subtype3 on nts/ntr"),
        ({"tracking_tag": "0123456789ABCDEF"}, "tracking_tag"),
        ({"tracking_tag": "0123456789abcde"}, "tracking_tag"),
        ({"recipients": []}, "recipients"),
        ({"user_id": "bob"}, "user_id not numeric"),
        ({"user_id": True}, "user_id not numeric"),
        ({"time": "2008-12-31T23:59:59Z"}, "time out of range"),
        ({"time": "2025-06-01T00:00:00"}, "time unparsable"),
        ({"time": 4102444800}, "time out of range"),
        ({"channel": "dashboard"}, "channel on the wrong kind"),
        ({"event": "revenue_tracking", "value": 1000001}, "mtu value"),
        ({"event": "goal_counts", "goal_counts": {"gc5": 1}}, "goal_counts"),
        ({"event": "inr"}, "installed"),
        ({"event": "message_sent"}, "channel"),
        ({"event": "stream_post", "channel": "wall"}, "channel"),
        ({"event": "custom_event"}, "custom event without a legal name"),
        ({"event": "level-up"}, "event name"),
        ({"properties": {"_private": 1}}, "properties"),
        ({"surprise": 1}, "unknown field surprise"),
    ],
)
def test_checker_rejects_broken_records(change: dict[str, Any], expected: str) -> None:
    assert problems(GOOD_NTS) == []
    assert expected in problems({**GOOD_NTS, **change})


# ----------------------------------------------------------------------------- generator

START = datetime(2025, 6, 1, tzinfo=UTC)
END = datetime(2025, 6, 8, tzinfo=UTC)


def test_defaults_are_the_documented_range() -> None:
    assert gamelog.DEFAULT_START == START
    assert gamelog.DEFAULT_END == END
    assert list(generate_events(50)) == list(generate_events(50, seed=7, start=START, end=END))


def test_same_seed_same_output_and_other_seed_other_output() -> None:
    first = list(generate_events(500, seed=3))
    assert first == list(generate_events(500, seed=3))
    assert json.dumps(first) == json.dumps(list(generate_events(500, seed=3)))
    assert first != list(generate_events(500, seed=4))


@pytest.mark.parametrize("seed", [7, 1, 2, 99, 2025])
def test_covers_every_kind_at_300(seed: int) -> None:
    kinds = collections.Counter(kind(r["event"]) for r in generate_events(300, seed=seed))
    assert set(kinds) == ALL_KINDS


@pytest.mark.parametrize("n", [19, 50, 200, 1000])
def test_covers_every_kind_within_the_window(n: int) -> None:
    head = itertools.islice(generate_events(n, seed=11), gamelog.COVERAGE_WINDOW)
    assert {kind(r["event"]) for r in head} == ALL_KINDS


@pytest.mark.parametrize("seed", [7, 12345])
def test_every_record_is_valid(seed: int) -> None:
    start = datetime(2024, 2, 28, 12, 0, 30, tzinfo=UTC)
    end = datetime(2024, 3, 1, 6, tzinfo=UTC)
    records = list(generate_events(3000, seed=seed, start=start, end=end))
    assert len(records) == 3000
    ids = [r["event_id"] for r in records]
    assert len(set(ids)) == len(ids)
    previous = start
    for record in records:
        assert problems(record) == [], record
        moment = parse_time(record["time"])
        assert start <= moment < end
        # Non-decreasing to the second (fractional epoch times carry milliseconds).
        assert moment.replace(microsecond=0) >= previous.replace(microsecond=0)
        previous = moment
    assert parse_time(records[0]["time"]) < start + timedelta(hours=1)
    assert parse_time(records[-1]["time"]) > end - timedelta(hours=1)


def test_shapes_vary_like_real_logs() -> None:
    records = list(generate_events(2000, seed=7))
    times = [r["time"] for r in records]
    assert any(isinstance(t, str) and t.endswith("Z") for t in times)
    assert any(isinstance(t, str) and re.search(r"[+-]\d\d:\d\d$", t) for t in times)
    assert any(isinstance(t, int) for t in times)
    assert any(isinstance(t, float) for t in times)
    assert any(isinstance(r["user_id"], int) for r in records)
    assert any(isinstance(r["user_id"], str) for r in records)
    names = {r["event"] for r in records}
    assert names & set(RUBY_NAMES) and names & CODES
    assert {"custom_event", "custom_action", "evt", "level_up", "boss_defeated"} <= names
    assert any(len(r.get("tracking_tag", "")) == 32 for r in records)
    assert any(len(r.get("tracking_tag", "")) == 16 for r in records)


def test_values_older_libraries_dropped_are_present() -> None:
    records = list(generate_events(300, seed=7))
    assert any(r.get("installed") is False for r in records)
    assert any(r.get("installed") is True for r in records)
    assert any(r.get("value") == 0 for r in records)
    assert any(kind(r["event"]) == "evt" and "level" not in r for r in records)
    texts = "".join(
        str(key) + str(value) for r in records for key, value in r.get("properties", {}).items()
    )
    for char in (" ", "&", "=", "%", "+", ",", "#"):
        assert char in texts, char
    assert not texts.isascii()
    longer = list(generate_events(3000, seed=7))
    assert any(kind(r["event"]) == "mtu" and r["value"] < 0 for r in longer)
    assert any(kind(r["event"]) == "mtu" and r["value"] == 0 for r in longer)


def test_players_act_plausibly() -> None:
    """Only installed players act; responses and clicks say truthfully whether they are."""
    installed: set[int] = set()
    sends: dict[str, dict[str, Any]] = {}
    player_kinds = {"cpu", "pgr", "evt", "gci", "mtu", "alias", "apr"} | SENDS
    for record in generate_events(20000, seed=21):
        uid = int(record["user_id"])
        k = kind(record["event"])
        if k == "apa":
            assert uid not in installed
            installed.add(uid)
        elif k in player_kinds:
            assert uid in installed, record
            if k == "apr":
                installed.remove(uid)
        elif k in RESPONSES or k == "ucc":
            assert record["installed"] == (uid in installed), record
        if k in SENDS:
            sends[record["tracking_tag"]] = record
            assert uid not in {int(u) for u in record.get("recipients", [])}
        if k in RESPONSES and record["tracking_tag"] in sends:
            sent = sends[record["tracking_tag"]]
            assert kind(sent["event"]) == RESPONSES[k]
            for same in ("subtype1", "subtype2", "subtype3", "channel"):
                assert sent.get(same) == record.get(same)
            if "recipients" in sent:
                assert uid in {int(u) for u in sent["recipients"]}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        generate_events(-1)
    with pytest.raises(ValueError):
        generate_events(10, start=datetime(2025, 6, 1), end=datetime(2025, 6, 2))
    with pytest.raises(ValueError):
        generate_events(10, start=datetime(2008, 12, 31, tzinfo=UTC))
    with pytest.raises(ValueError):
        generate_events(10, end=datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(ValueError):
        generate_events(10, start=END, end=END)
    assert list(generate_events(0)) == []


def test_streams_lazily_and_fast() -> None:
    stream = generate_events(10**12)
    began = time.perf_counter()
    head = list(itertools.islice(stream, 20000))
    elapsed = time.perf_counter() - began
    assert len(head) == 20000
    assert elapsed < 5, f"20k events took {elapsed:.1f}s"


# ----------------------------------------------------------------------------- writers


def read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_jsonl_round_trip(tmp_path: Path, name: str) -> None:
    records = list(generate_events(400, seed=8))
    path = tmp_path / name
    assert write_jsonl(records, path) == 400
    assert [json.loads(line) for line in read_lines(path)] == records
    again = tmp_path / ("again-" + name)
    write_jsonl(iter(records), again)
    assert path.read_bytes() == again.read_bytes()
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def iso_z(value: Any) -> str:
    moment = parse_time(value).astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{round(moment.microsecond / 1000):03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def as_parquet(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    out["time"] = iso_z(record["time"])
    out["user_id"] = str(record["user_id"])
    if "recipients" in record:
        out["recipients"] = [str(uid) for uid in record["recipients"]]
    return out


def test_parquet_round_trip(tmp_path: Path) -> None:
    records = list(generate_events(1200, seed=9))
    path = tmp_path / "events.parquet"
    assert write_parquet(iter(records), path, batch_size=500) == 1200
    table = pq.read_table(path)
    assert table.num_rows == 1200
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    schema = table.schema
    assert schema.field("time").type == pa.string()
    assert schema.field("user_id").type == pa.string()
    assert schema.field("recipients").type == pa.list_(pa.string())
    assert schema.field("installed").type == pa.bool_()
    assert schema.field("value").type == pa.int64()
    assert schema.field("level").type == pa.int64()
    assert schema.field("goal_counts").type == pa.string()
    assert schema.field("properties").type == pa.string()
    raw = [row for row in table.to_pylist() if row["goal_counts"] is not None]
    assert raw and all(isinstance(json.loads(row["goal_counts"]), dict) for row in raw)
    back = list(read_parquet(path))
    assert back == [as_parquet(r) for r in records]
    for record in back:
        assert problems(record) == [], record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", record["time"])


def test_parquet_rejects_fields_outside_the_schema(tmp_path: Path) -> None:
    record = {"time": 1748736000, "user_id": 1, "event": "apa", "surprise": 1}
    with pytest.raises(ValueError, match="surprise"):
        write_parquet([record], tmp_path / "bad.parquet")


def test_empty_parquet_has_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    assert write_parquet([], path) == 0
    assert pq.read_table(path).schema.names == list(CANONICAL_FIELDS)


def test_command_line(tmp_path: Path) -> None:
    out = tmp_path / "cli.parquet"
    assert gamelog.main(["-n", "40", "--seed", "3", "--out", str(out)]) == 0
    assert list(read_parquet(out)) == [as_parquet(r) for r in generate_events(40, seed=3)]
    out = tmp_path / "cli.jsonl.gz"
    assert gamelog.main(["-n", "40", "--out", str(out)]) == 0
    assert len(read_lines(out)) == 40


# ----------------------------------------------------------------------------- sample_data
