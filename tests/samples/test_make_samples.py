"""The committed sample_data/ (``beaconflow.samples.make_samples``) and its documented counts.

Its defects are the documented ones, and regenerating it gives the committed files; and
``--events N`` writes a larger input the real command reads (issue 18, item 7). The
validity checker and the readers are those of tests/samples/test_gamelog.py. Run with::

    .venv/bin/python -m pytest tests/samples/test_make_samples.py
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from beaconflow.samples.gamelog import KINDS, iso_utc, kind_of, read_parquet
from beaconflow.samples.make_samples import build_samples
from tests.samples.test_gamelog import (
    ALL_KINDS,
    SAMPLE_DIR,
    identity,
    kind,
    parse_time,
    problems,
    read_lines,
)

CANONICAL_FILES = (
    "game_events.jsonl",
    "game_events_day2.jsonl.gz",
    "game_events.parquet",
)

LEGACY_FILE = "legacy/orchard_legacy.jsonl"


def documented_counts() -> tuple[dict[str, tuple[int, ...]], dict[str, dict[str, int]]]:
    """The README's counts table (per file) and kinds table (per file, per kind)."""
    text = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    counts = {
        match[1]: tuple(int(value) for value in match.groups()[1:])
        for match in re.finditer(
            r"^\| `([^`]+)` \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$",
            text,
            re.MULTILINE,
        )
    }
    header = re.search(r"^\| kind \| (.+) \|$", text, re.MULTILINE)
    assert header is not None
    files = [cell.strip().strip("`") for cell in header[1].split("|")]
    kinds: dict[str, dict[str, int]] = {name: {} for name in files}
    for match in re.finditer(r"^\| ([a-z]{3}|alias) \| ([\d |]+) \|$", text, re.MULTILINE):
        for name, cell in zip(files, match[2].split("|"), strict=True):
            kinds[name][match[1]] = int(cell)
    return counts, kinds


def legacy_to_canonical(record: dict[str, Any], mapping: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target, source in mapping["fields"].items():
        value: Any = record
        for part in source.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            out[target] = value
    out.update(mapping["constants"])
    out["event"] = mapping["events"].get(out["event"], out["event"])
    return out


def scan(
    name: str, seen_before: set[tuple[str, str]]
) -> tuple[tuple[int, ...], collections.Counter[str]]:
    """(lines read, blank, invalid, duplicates, cross-file duplicates, unique) and kinds."""
    path = SAMPLE_DIR / name
    lines: list[Any] = (
        list(read_parquet(path)) if name.endswith(".parquet") else list(read_lines(path))
    )
    mapping = None
    if name == LEGACY_FILE:
        mapping = tomllib.loads((SAMPLE_DIR / "legacy_mapping.toml").read_text("utf-8"))
    read = blank = invalid = duplicates = cross = 0
    kinds: collections.Counter[str] = collections.Counter()
    seen: set[tuple[str, str]] = set()
    for line in lines:
        if isinstance(line, str):
            if not line.strip():
                blank += 1
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                read += 1
                invalid += 1
                continue
        else:
            record = line
        read += 1
        if mapping is not None:
            record = legacy_to_canonical(record, mapping)
        if problems(record):
            invalid += 1
            continue
        key = identity(record)
        if key in seen:
            duplicates += 1
        elif key in seen_before:
            cross += 1
        else:
            seen.add(key)
            kinds[kind(record["event"])] += 1
    seen_before |= seen
    unique = read - invalid - duplicates - cross
    assert unique == sum(kinds.values())
    return (read, blank, invalid, duplicates, cross, unique), kinds


def test_sample_files_match_their_documented_counts() -> None:
    counts, kinds = documented_counts()
    assert set(counts) == {*CANONICAL_FILES, LEGACY_FILE}
    seen: set[tuple[str, str]] = set()
    for name in (*CANONICAL_FILES, LEGACY_FILE):
        if name == LEGACY_FILE:
            seen = set()
        found, found_kinds = scan(name, seen)
        assert found == counts[name], name
        assert dict(found_kinds) == {k: v for k, v in kinds[name].items() if v}, name


def test_sample_counts_are_what_the_brief_asked_for() -> None:
    counts, kinds = documented_counts()
    # read, blank, invalid, duplicates, duplicates of earlier files, unique
    assert counts["game_events.jsonl"] == (311, 2, 3, 8, 0, 300)
    assert counts["game_events_day2.jsonl.gz"] == (103, 0, 0, 0, 3, 100)
    assert counts["game_events.parquet"] == (150, 0, 0, 0, 0, 150)
    assert counts[LEGACY_FILE] == (60, 0, 0, 0, 0, 60)
    assert {k for k, v in kinds["game_events.parquet"].items() if v} == ALL_KINDS
    assert {k for k, v in kinds["game_events.jsonl"].items() if v} == ALL_KINDS


def test_sample_defects_are_the_documented_ones() -> None:
    lines = read_lines(SAMPLE_DIR / "game_events.jsonl")
    blank = [line for line in lines if not line.strip()]
    assert blank == ["", "  "]
    parsed = []
    malformed = 0
    for line in filter(str.strip, lines):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            malformed += 1
    assert malformed == 1
    assert sum("user_id" not in r for r in parsed) == 1
    assert sum(r["time"] == "2008-12-31T23:59:59Z" for r in parsed) == 1
    exact = [line for line, n in collections.Counter(lines).items() if n > 1 and line.strip()]
    assert len(exact) == 5 and all('"event_id"' in line for line in exact)
    without_id = [r for r in parsed if "event_id" not in r]
    assert len(without_id) == 8
    by_content = collections.Counter(identity(r) for r in without_id)
    assert sorted(by_content.values()) == [1, 1, 2, 2, 2]
    first_lines = set(lines)
    day2 = read_lines(SAMPLE_DIR / "game_events_day2.jsonl.gz")
    assert [line in first_lines for line in day2[:4]] == [True, True, True, False]
    assert not first_lines & set(day2[3:])
    parquet_ids = {r["event_id"] for r in read_parquet(SAMPLE_DIR / "game_events.parquet")}
    jsonl_ids = {r.get("event_id") for r in parsed} | {json.loads(x)["event_id"] for x in day2}
    assert not parquet_ids & jsonl_ids

    def utc_days(records: Any) -> set[str]:
        return {parse_time(r["time"]).astimezone(UTC).date().isoformat() for r in records}

    good = [r for r in parsed if r.get("event_id") != "oq-7-bad-0003"]
    assert utc_days(good) == {"2025-06-01", "2025-06-02", "2025-06-03", "2025-06-04"}
    assert utc_days(json.loads(x) for x in day2[3:]) == {"2025-06-05", "2025-06-06", "2025-06-07"}
    assert utc_days(read_parquet(SAMPLE_DIR / "game_events.parquet")) == {
        "2025-06-08",
        "2025-06-09",
        "2025-06-10",
    }


def test_legacy_mapping_has_the_agreed_shape() -> None:
    mapping = tomllib.loads((SAMPLE_DIR / "legacy_mapping.toml").read_text("utf-8"))
    assert set(mapping) == {"fields", "constants", "events", "destinations"}
    fields = mapping["fields"]
    assert fields["event_id"] == "id" and fields["time"] == "ts"
    assert fields["user_id"] == "player.uid" and fields["event"] == "action"
    assert fields["value"] == "amount_cents"
    assert mapping["constants"] == {}
    assert mapping["events"]["join"] == "application_installed"
    assert mapping["events"]["quit"] == "application_uninstalled"
    assert mapping["events"]["buy"] == "revenue_tracking"
    assert mapping["events"]["lvl"] == "level_up"
    assert mapping["destinations"] == {
        "kontagent": {"include": ["*"], "exclude": []},
        "kissmetrics": {"include": ["*"], "exclude": ["page_request_and_user_location"]},
    }
    raw = [json.loads(line) for line in read_lines(SAMPLE_DIR / LEGACY_FILE)]
    assert {r["action"] for r in raw} == {"join", "quit", "buy", "lvl", "invite"}
    assert all(isinstance(r["ts"], float) and isinstance(r["player"]["uid"], int) for r in raw)
    assert "event" not in raw[0] and "user_id" not in raw[0]


def test_regenerating_samples_gives_the_committed_files(tmp_path: Path) -> None:
    build_samples(tmp_path)
    for name in (
        "game_events.jsonl",
        "game_events_day2.jsonl.gz",
        LEGACY_FILE,
        "legacy_mapping.toml",
        "README.md",
    ):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name
    fresh = pq.read_table(tmp_path / "game_events.parquet")
    committed = pq.read_table(SAMPLE_DIR / "game_events.parquet")
    assert fresh.equals(committed, check_metadata=True)


# --------------------------------------------------------------------------- --events N


def _make(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beaconflow.samples.make_samples", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def _beaconflow(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = cwd / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "beaconflow",
            *args,
            f"--report={out / 'report.json'}",
            f"--dead-letter={out / 'dead.jsonl'}",
            f"--dry-run={out / 'messages.jsonl'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith(("KONTAGENT", "KISS"))},
    )
    report = json.loads((out / "report.json").read_text()) if done.returncode == 0 else {}
    return done, report


def _utc_seconds(value: str | int | float) -> float:
    return datetime.fromisoformat(iso_utc(value).replace("Z", "+00:00")).timestamp()


def test_events_n_writes_n_events_in_time_order_that_beaconflow_reads(tmp_path: Path) -> None:
    made = _make("--events", "700", "--out", "big", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "wrote 700 events to 1 file(s) in big; try: beaconflow --input 'big/events.jsonl'" in (
        made.stderr
    )
    lines = (tmp_path / "big" / "events.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 700 == len({r["event_id"] for r in records})
    times = [_utc_seconds(r["time"]) for r in records]
    assert times == sorted(times)
    assert {kind_of(r["event"]) for r in records} == set(KINDS)  # every message type
    done, report = _beaconflow("--input=big/events.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert report["events_read"] == report["events_mapped"] == 700
    assert report["events_invalid"] == 0 and report["invariant_errors"] == []
    # deterministic: the same seed writes the same bytes
    again = _make("--events", "700", "--out", "again", cwd=tmp_path)
    assert again.returncode == 0
    assert (tmp_path / "again" / "events.jsonl").read_bytes() == (
        tmp_path / "big" / "events.jsonl"
    ).read_bytes()


def test_events_by_day_partitions_for_the_date_syntax(tmp_path: Path) -> None:
    made = _make(
        "--events",
        "900",
        "--by-day",
        "--gzip",
        "--since",
        "2025-03-01",
        "--until",
        "2025-03-04",
        "--out",
        "days",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    files = sorted((tmp_path / "days").glob("dt=*/events.jsonl.gz"))
    assert [f.parent.name for f in files] == ["dt=2025-03-01", "dt=2025-03-02", "dt=2025-03-03"]
    total = 0
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle]
        total += len(records)
        assert {iso_utc(r["time"])[:10] for r in records} == {path.parent.name[3:]}
    assert total == 900
    done, report = _beaconflow(
        "--input=days/dt={date}/*.jsonl.gz",
        "--since=2025-03-01",
        "--until=2025-03-04",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert report["events_read"] == report["events_mapped"] == 900
    nightly, report = _beaconflow(
        "--input=days/dt={date}/*.jsonl.gz", "--date=2025-03-02", cwd=tmp_path
    )
    assert nightly.returncode == 0, nightly.stderr
    assert report["events_read"] == report["events_mapped"] == 300


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--events", "0"], "--events must be 1 or more"),
        (["--by-day"], "--by-day and --gzip go with --events"),
        (["--events", "5", "--since", "2008-01-01"], "before 2009"),
        (["--events", "5", "--since", "June"], "expected YYYY-MM-DD"),
    ],
)
def test_events_refuses_what_it_cannot_do(tmp_path: Path, args: list[str], error: str) -> None:
    made = _make(*args, "--out", "x", cwd=tmp_path)
    assert made.returncode == 2 and error in made.stderr
    assert "Traceback" not in made.stderr
