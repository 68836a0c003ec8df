"""The spill pass of a chunked backfill (``beaconflow.pipelines.spill``).

Records land in the file of their event's day (or the undated file) exactly as they were
read; the pass is complete only once spill.json says so; its processes change nothing in
what it writes; and a chunked run of the real pipeline over the spill files, with the
copies :func:`resolve` names, counts and sends what one unchunked run does.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import random
import stat
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beaconflow.model.mapping import RecordMapping
from beaconflow.model.message import Destination
from beaconflow.model.spillfile import SpillError, SpillStopped
from beaconflow.pipelines import backfill
from beaconflow.pipelines.options import configure
from beaconflow.pipelines.runners import local_runner
from beaconflow.pipelines.spill import (
    KEY_BUCKETS,
    Spilled,
    day_name,
    read_elsewhere,
    resolve,
    spill,
)
from beaconflow.pipelines.spill_shares import plan_shares
from beaconflow.report.counts import TallyKey
from beaconflow.samples.gamelog import generate_events, write_jsonl, write_parquet
from beaconflow.transforms.linefile import merge_parts
from beaconflow.transforms.read import MAX_LINE_BYTES, LineRange, read_file
from tests.conftest import children_of, needs_fork, run_signalled_at_birth

NOW = 1_800_000_000
DAY = 86_400
#: 2025-06-01T00:00:00Z, and its day number
T0 = 1_748_736_000
D0 = T0 // DAY
DESTINATIONS: tuple[Destination, ...] = ("kontagent", "kissmetrics")


def _event(event_id: str | None, time: int, user: int = 1, name: str = "level_up") -> str:
    record: dict[str, Any] = {"time": time, "user_id": user, "event": name, "value": 3}
    if event_id is not None:
        record["event_id"] = event_id
    return json.dumps(record)


def _spill(files: list[Path], work: Path, **options: Any) -> Spilled:
    return spill(
        [str(f) for f in files],
        None,
        RecordMapping(),
        now=NOW,
        destinations=DESTINATIONS,
        work_dir=str(work),
        **options,
    )


def _mixed_input(folder: Path) -> list[Path]:
    """Valid records of three days, invalid ones, a cut gzip, Parquet rows and replays."""
    folder.mkdir()
    plain = folder / "a.jsonl"
    plain.write_text(
        "\n".join(
            [
                _event("e1", T0 + 10),
                _event(None, T0 + DAY + 5),
                '{"time": "yesterday", "user_id": 1, "event": "x"}',  # invalid time
                _event("e2", T0 + 2 * DAY),
                '{"x": "' + "y" * MAX_LINE_BYTES + '"}',  # over-long
                _event("e3", NOW + 100),  # after now
                json.dumps({"stage": "map", "reason": "r", "record": json.loads(_event("e4", T0))}),
                json.dumps(
                    {
                        "stage": "send",
                        "reason": "HTTP 500",
                        "message": {
                            "destination": "kissmetrics",
                            "kind": "e",
                            "params": {"_p": "1", "_n": "x", "_t": str(T0), "_d": "1"},
                        },
                    }
                ),
            ]
        )
        + "\n"
    )
    data = gzip.compress(("\n".join(_event(f"g{n}", T0 + n * 600) for n in range(400))).encode())
    (folder / "b.jsonl.gz").write_bytes(data[: len(data) // 2])  # cut: its last records lost
    start = datetime.fromtimestamp(T0, UTC)
    write_parquet(generate_events(30, seed=3, start=start, end=start + timedelta(days=3)),
                  folder / "c.parquet")  # fmt: skip
    return [plain, folder / "b.jsonl.gz", folder / "c.parquet"]


def test_each_record_lands_whole_in_the_file_of_its_day_or_in_the_undated_one(
    tmp_path: Path,
) -> None:
    files = _mixed_input(tmp_path / "in")
    work = tmp_path / "work"
    spilled = _spill(files, work, processes=1)
    read = [raw for path in files for raw in read_file(str(path))]
    assert spilled.records == len(read)
    by_file = {day: list(read_file(spill_file.path)) for day, spill_file in spilled.days.items()}
    undated = list(read_file(spilled.undated.path))
    assert sorted(spilled.days) == [D0, D0 + 1, D0 + 2]
    assert {day: len(records) for day, records in by_file.items()} == {
        day: spill_file.records for day, spill_file in spilled.days.items()
    }
    # every record once, whole, in input order within its file
    assert sorted(itertools.chain(undated, *by_file.values()), key=read.index) == read
    for records in (undated, *by_file.values()):
        assert records == sorted(records, key=read.index)
    assert [(r.file.rsplit("/", 1)[1], r.position) for r in undated] == [
        ("a.jsonl", 3), ("a.jsonl", 5), ("a.jsonl", 6), ("a.jsonl", 8),
        ("b.jsonl.gz", undated[-1].position),
    ]  # fmt: skip
    assert undated[1].problem is not None and "bytes; the limit" in undated[1].problem
    assert undated[-1].problem is not None and "truncated or corrupt" in undated[-1].problem
    replayed = [r for r in by_file[D0] if r.source.endswith("a.jsonl:7")]
    assert replayed, "a replayed record goes to its event's day"
    # files and folders are the user's alone
    folder = work / "spill"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    names = {p.name for p in folder.iterdir()}
    assert {f"{day_name(d)}.spill" for d in spilled.days} | {"undated.spill", "spill.json"} <= names
    # and spill.json says so, read back as it was made
    loaded = Spilled.load(str(work))
    assert loaded is not None and loaded.to_json() == spilled.to_json()
    assert loaded.files([D0 + 2, None, D0 + 9]) == [
        spilled.days[D0 + 2].path,
        spilled.undated.path,
    ]


def test_load_finds_no_pass_when_it_did_not_finish_or_its_files_changed(tmp_path: Path) -> None:
    files = _mixed_input(tmp_path / "in")
    work = tmp_path / "work"
    assert Spilled.load(str(work)) is None
    spilled = _spill(files, work, processes=1)
    assert Spilled.load(str(work)) is not None
    with open(spilled.days[D0].path, "ab") as handle:
        handle.write(b"x")
    assert Spilled.load(str(work)) is None, "a file not its size"
    _spill(files, work, processes=1)
    manifest = work / "spill" / "spill.json"
    manifest.write_text(manifest.read_text()[:-20])
    assert Spilled.load(str(work)) is None, "a torn spill.json"


class _Ticks:
    """A clock that moves a quarter of a second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def test_progress_is_said_about_once_a_second(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(_event(f"e{n}", T0 + n) + "\n" for n in range(10_000)))
    said: list[int] = []
    _spill([source], tmp_path / "work", processes=1, on_progress=said.append, clock=_Ticks())
    # read every 1,024 records, a quarter of a second apart: each fourth reading says it
    assert said == [4096, 8192]


def test_an_interrupted_pass_leaves_no_finished_pass_behind(tmp_path: Path) -> None:
    files = _mixed_input(tmp_path / "in")
    big = tmp_path / "in" / "d.jsonl"
    big.write_text("".join(_event(f"d{n}", T0 + n) + "\n" for n in range(5000)))
    work = tmp_path / "work"
    _spill(files, work, processes=1)
    assert Spilled.load(str(work)) is not None

    def stop(records: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _spill([*files, big], work, processes=1, on_progress=stop, clock=_Ticks())
    assert Spilled.load(str(work)) is None
    assert not (work / "spill" / "spill.json").exists()


class _Exploding(RecordMapping):
    """A mapping with a bug: it raises on a record holding ``boom``."""

    def select(self, record: Mapping[str, Any]) -> tuple[Mapping[str, Any], RecordMapping]:
        if "boom" in record:
            raise ZeroDivisionError("boom")
        return super().select(record)


def test_a_failed_share_process_fails_the_pass_with_its_words(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    files = [folder / "a.jsonl", folder / "b.jsonl"]
    files[0].write_text("".join(_event(f"e{n}", T0 + n) + "\n" for n in range(3000)))
    files[1].write_text(
        "".join(_event(f"f{n}", T0 + n) + "\n" for n in range(3000)) + '{"boom": 1}\n'
    )
    work = tmp_path / "work"
    assert len(plan_shares([str(f) for f in files], None, 2)) == 2
    with pytest.raises(SpillError, match=r"spill process 1: ZeroDivisionError: boom"):
        spill([str(f) for f in files], None, _Exploding(), now=NOW, destinations=DESTINATIONS,
              work_dir=str(work), processes=2)  # fmt: skip
    assert Spilled.load(str(work)) is None
    assert _spill(files[:1], work, processes=2).records == 3000
    assert not [p for p in (work / "spill").iterdir() if p.name.startswith("part-")]


def test_processes_change_nothing_in_what_the_pass_writes(tmp_path: Path) -> None:
    files = _mixed_input(tmp_path / "in")
    big = tmp_path / "in" / "d.jsonl"
    rng = random.Random(11)
    lines = [_event(f"d{rng.randrange(900)}", T0 + rng.randrange(5 * DAY)) for _ in range(6000)]
    big.write_text("\n".join(lines) + "\n")
    files = [files[0], big, *files[1:]]
    shares = plan_shares([str(f) for f in files], None, 3)
    assert len(shares) == 3
    assert any(isinstance(part, LineRange) for share in shares for _, part in share), "cut"

    def written(processes: int) -> dict[str, bytes]:
        work = tmp_path / f"work-{processes}"
        spilled = _spill(files, work, processes=processes)
        contents = {p.name: p.read_bytes() for p in (work / "spill").iterdir()}
        manifest = json.loads(contents.pop("spill.json"))
        assert manifest.pop("seconds") == round(spilled.seconds, 3)
        contents["spill.json"] = json.dumps(manifest).encode()
        return contents

    one = written(1)
    assert len(one) > 8
    assert written(2) == one
    assert written(3) == one


def test_descriptors_stay_few_whatever_the_days_of_the_input(tmp_path: Path) -> None:
    start = datetime(2022, 6, 1, tzinfo=UTC)
    events = list(generate_events(6000, seed=5, start=start, end=start + timedelta(days=1100)))
    random.Random(3).shuffle(events)  # every day touched again and again
    source = tmp_path / "in.jsonl"
    write_jsonl(events, source)
    before = len(os.listdir("/proc/self/fd"))
    held: list[int] = []

    def count(records: int) -> None:
        held.append(len(os.listdir("/proc/self/fd")) - before)

    clock = iter(itertools.count())
    spilled = _spill(
        [source], tmp_path / "work", processes=1, on_progress=count, clock=lambda: next(clock)
    )
    assert len(spilled.days) > 1000
    assert held and max(held) <= 64 + 2, held  # the LRU's limit, and the input's own


def _copies_input(folder: Path) -> list[Path]:
    """Copies of events sharing an event_id across days and files; line 10 sorts before 9."""
    folder.mkdir()
    first = [
        _event("x6", T0 + 3 * DAY, user=7),  # 1: one copy
        _event("x2", T0 + DAY, user=2),  # 2: x2 kept here (a.jsonl:2 < b.jsonl:1)
        _event(None, T0 + 5, user=3),  # 3: a content key, twice on day 0
        _event(None, T0 + 5, user=3),  # 4
        _event("x3", T0, user=4),  # 5: x3 twice on day 0, once on day 4
        _event("x3", T0 + 60, user=4),  # 6
        '{"time": "soon", "user_id": 1, "event": "x"}',  # 7: invalid
        _event("x4", T0 + 2 * DAY, user=5),  # 8: x4 on days 2 and 3: one chunk
        _event("x1", T0 + 2 * DAY, user=1),  # 9: x1 on day 2
        _event("x1", T0 + 4 * DAY, user=1),  # 10: x1 on day 4, kept: "a.jsonl:10" < ":9"
        _event("x5", T0 + 4 * DAY, user=6, name="alias"),  # 11: a message problem
    ]
    (folder / "a.jsonl").write_text("\n".join(first) + "\n")
    second = [
        _event("x2", T0 + 4 * DAY, user=2),
        _event("x3", T0 + 4 * DAY, user=4),
        _event("x4", T0 + 3 * DAY, user=5),
        json.dumps({"stage": "map", "reason": "r", "destination": "kissmetrics",
                    "record": json.loads(_event("x1", T0 + 5 * DAY, user=1))}),
    ]  # fmt: skip
    (folder / "b.jsonl").write_text("\n".join(second) + "\n")
    return [folder / "a.jsonl", folder / "b.jsonl"]


#: days 0-1, 2-3, 4-5 and the undated records: four chunks
def _chunk_of_day(day: int | None) -> int:
    return 9 if day is None else (day - D0) // 2


def test_resolve_names_the_copies_kept_in_another_chunk(tmp_path: Path) -> None:
    files = _copies_input(tmp_path / "in")
    work = tmp_path / "work"
    spilled = _spill(files, work, processes=1)
    assert 0 < len(spilled.key_files) <= KEY_BUCKETS
    (work / "elsewhere-7.txt").write_text('"stale"\n')
    found = resolve(spilled, _chunk_of_day, str(work))
    a, b = (str(f) for f in files)
    named = {chunk: sorted(read_elsewhere(path)) for chunk, path in found.items()}
    assert named == {
        # x1 is kept in chunk 2 (a.jsonl:10, before a.jsonl:9 as strings), with its replay
        1: [f"{a}:9"],
        # x2 is kept in chunk 0 (a.jsonl:2), x3 too (a.jsonl:5); x4's copies share chunk 1
        2: [f"{b}:1", f"{b}:2"],
    }
    assert not (work / "elsewhere-7.txt").exists()
    assert resolve(spilled, lambda day: 0, str(work)) == {}, "one chunk: nothing elsewhere"


def _backfill(
    argv_inputs: list[Path], files: list[str], out: Path, elsewhere: frozenset[str] = frozenset()
) -> tuple[Counter[TallyKey], list[str], list[dict[str, Any]]]:
    """One dry run of the real pipeline over ``files``: its tallies, dry-run lines, dead letter."""
    out.mkdir(parents=True)
    config = configure(
        [
            *(f"--input={path}" for path in argv_inputs),
            f"--dry-run={out / 'dry.jsonl'}",
            f"--dead-letter={out / 'dead.jsonl'}",
            f"--report={out / 'report.json'}",
        ],
        NOW,
    )
    tallies = str(out / "tallies.json")
    options = PipelineOptions([])
    with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
        _ = pipeline | backfill.Backfill(
            config, files, tallies, now=NOW, workers=1, elsewhere=elsewhere
        )
    for path in (out / "dry.jsonl", out / "dead.jsonl"):
        merge_parts(str(path))
    dry = sorted((out / "dry.jsonl").read_text().splitlines())
    dead = [json.loads(line) for line in (out / "dead.jsonl").read_text().splitlines()]
    return backfill._read_tallies(tallies), dry, sorted(dead, key=json.dumps)


def _chunks(spilled: Spilled) -> Iterator[tuple[int, list[str]]]:
    days: dict[int, list[int | None]] = {}
    for day in [*spilled.days, None]:
        days.setdefault(_chunk_of_day(day), []).append(day)
    for chunk, its_days in sorted(days.items()):
        yield chunk, spilled.files(its_days)


def test_a_chunked_run_counts_and_sends_what_one_run_does(tmp_path: Path) -> None:
    files = _copies_input(tmp_path / "in")
    whole, whole_dry, whole_dead = _backfill(files, [str(f) for f in files], tmp_path / "whole")
    assert whole[TallyKey("events_duplicate")] == 7, "the copies were there to drop"
    work = tmp_path / "work"
    spilled = _spill(files, work, processes=1)
    elsewhere = resolve(spilled, _chunk_of_day, str(work))
    summed: Counter[TallyKey] = Counter()
    dry: list[str] = []
    dead: list[dict[str, Any]] = []
    for chunk, chunk_files in _chunks(spilled):
        named = read_elsewhere(elsewhere[chunk]) if chunk in elsewhere else frozenset()
        counted, lines, entries = _backfill(files, chunk_files, tmp_path / f"chunk-{chunk}", named)
        summed.update(counted)
        dry.extend(lines)
        dead.extend(entries)
    assert +summed == +whole
    # the same messages: the copy kept is the same one (its _t says which)
    assert sorted(dry) == whole_dry
    assert sorted(dead, key=json.dumps) == whole_dead
    x1 = [
        view["params"]["_t"]
        for view in map(json.loads, dry)
        if view["destination"] == "kissmetrics" and view["params"].get("_p") == "1"
    ]
    assert x1 == [str(T0 + 4 * DAY)], "x1's copy of a.jsonl:10 is the one sent"


def test_a_spill_file_is_refused_as_input(tmp_path: Path) -> None:
    (tmp_path / "x.spill").write_bytes(b"")
    with pytest.raises(SpillError, match="not spill files"):
        _spill([tmp_path / "x.spill"], tmp_path / "work")


def test_one_process_per_core_only_for_an_input_worth_sharing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beaconflow.pipelines.spill_shares import MIN_SHARE_BYTES

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    small = tmp_path / "small.jsonl"
    small.write_text(_event("e", T0) + "\n")
    assert plan_shares([str(small)], None, None) == [((0, None),)]
    line = _event("e", T0) + "\n"
    large = tmp_path / "large.jsonl"
    large.write_text(line * (2 * MIN_SHARE_BYTES // len(line) + 100))
    shares = plan_shares([str(small), str(large)], None, None)
    assert len(shares) == 2, "two shares' worth: two processes of the four cores"
    assert plan_shares([str(large), "gs://bucket/x.jsonl"], None, None) == [((0, None), (1, None))]


def test_a_stopped_run_ends_the_pass_within_a_thousand_records(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(_event(f"e{n}", T0 + n) + "\n" for n in range(10_000)))
    work = tmp_path / "work"
    asked: list[int] = []

    def stopped() -> str | None:  # asked every 1,024 records: the third time, stopped
        asked.append(1)
        return "interrupted by SIGTERM" if len(asked) == 3 else None

    with pytest.raises(SpillStopped) as caught:
        _spill([source], work, processes=1, stopped=stopped)
    assert caught.value.records == 3 * 1024 and caught.value.reason == "interrupted by SIGTERM"
    assert str(caught.value) == "the spill pass stopped after 3072 records: interrupted by SIGTERM"
    assert Spilled.load(str(work)) is None
    assert _spill([source], work, processes=1).records == 10_000, "the next pass starts over"


@needs_fork
def test_a_stopped_run_kills_the_pass_s_processes(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    files = [folder / "a.jsonl", folder / "b.jsonl"]
    for name, path in zip("ab", files, strict=True):
        path.write_text("".join(_event(f"{name}{n}", T0 + n) + "\n" for n in range(20_000)))
    work = tmp_path / "work"
    before = children_of(os.getpid())
    with pytest.raises(SpillStopped, match=r"^the spill pass stopped after \d+ records: ended"):
        _spill(files, work, processes=2, stopped=lambda: "ended")
    assert children_of(os.getpid()) == before, "no process of the pass is left"
    assert Spilled.load(str(work)) is None
    assert _spill(files, work, processes=2).records == 40_000
    assert not [p for p in (work / "spill").iterdir() if p.name.startswith("part-")]


@needs_fork
def test_a_signal_at_a_share_process_s_birth_is_left_to_the_parent(tmp_path: Path) -> None:
    """A process group's SIGTERM that catches a process of the pass as it is forked.

    It drops it: the run's process handles it, and stops the pass. Before, each process of
    the pass ran the parent's handler, which said "stopping" once more per process.
    """
    folder = tmp_path / "in"
    folder.mkdir()
    files = [folder / "a.jsonl", folder / "b.jsonl"]
    for name, path in zip("ab", files, strict=True):
        path.write_text("".join(_event(f"{name}{n}", T0 + n) + "\n" for n in range(3000)))
    done = run_signalled_at_birth(
        f"""
        from beaconflow.model.mapping import RecordMapping
        from beaconflow.pipelines.spill import spill

        spilled = spill({[str(f) for f in files]!r}, None, RecordMapping(), now={NOW},
                        destinations=("kontagent", "kissmetrics"),
                        work_dir={str(tmp_path / "work")!r}, processes=2)
        print(spilled.records)
        """
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout.split(), done.stderr) == (["6000"], "")
