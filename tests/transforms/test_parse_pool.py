"""The parse step in forked processes (``beaconflow.transforms.parse_pool``).

What the processes give must be what one process gives, output for output and in its order
(the dead letter keeps the input's order), with the same tallies: checked on every kind of
record the parse step meets (good, duplicate, invalid JSON and UTF-8, blank lines, a JSON
array file, gzip, Parquet, a dead letter replayed, edge times), with blocks small enough
that every process gets many. Then the ways a process can end badly: a bug raises in the
parent as itself, a killed process is named, and the processes never outlive the run.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.pvalue import TaggedOutput

from beaconflow.model.mapping import RecordMapping
from beaconflow.model.source import RawRecord
from beaconflow.report.counts import TallyKey
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.transforms import parse_pool
from beaconflow.transforms.coders import MappedEventCoder
from beaconflow.transforms.parse import ParseEvents
from beaconflow.transforms.parse_pool import (
    ParseProcessError,
    _ParsePool,
    parse_processes,
)
from beaconflow.transforms.read import read_file
from tests.conftest import children_of, needs_fork, run_signalled_at_birth
from tests.transforms.test_parse import EDGES, FINGERPRINTS, NOW, T0

pytestmark = needs_fork


def _inputs(directory: Path) -> list[str]:
    """Files holding every kind of record the parse step meets, some of them twice."""
    events = list(generate_events(300, seed=11))
    plain = directory / "a.jsonl"
    lines = [json.dumps(e) for e in events[:200]]
    lines[10] = "{not json"
    lines[20] = ""  # blank: not a record
    lines[30] = json.dumps(events[5])  # a duplicate of an earlier event
    lines[40] = json.dumps({"time": T0, "event": "apr"})  # no user
    plain.write_text("\n".join(lines) + "\n")
    bad_utf8 = directory / "b.jsonl"
    bad_utf8.write_bytes(b'{"time": 1}\n\xff\xfe\n' + json.dumps(events[200]).encode() + b"\n")
    gz = directory / "c.jsonl.gz"
    write_jsonl(events[200:260], gz)
    rows = [{k: str(e[k]) for k in ("event_id", "time", "user_id", "event")} for e in events[260:]]
    table = pa.Table.from_pylist(rows)
    parquet = directory / "d.parquet"
    pq.write_table(table, parquet)
    edges = directory / "e.jsonl"
    edges.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in EDGES) + "\n")
    array = directory / "f.jsonl"
    array.write_text("[1, 2]\n" + json.dumps(events[0]) + "\n")
    torn = directory / "g.jsonl.gz"
    torn.write_bytes(gzip.compress(("\n".join(lines[:50]) + "\n").encode())[:-30])
    return [str(p) for p in (plain, bad_utf8, gz, parquet, edges, array, torn)]


def _comparable(output: Any) -> Any:
    """An output as both ways give it: events as their encoding, tagged outputs as (tag, value)."""
    if isinstance(output, TaggedOutput):
        value = output.value
        if output.tag == "tally":
            value = value.value if hasattr(value, "value") else value
            return ("tally", tuple(value[0]), value[1])
        if output.tag == "replayed":
            return ("replayed", value[0], value[1].source, value[1].params)
        return (output.tag, value)
    key, event = output
    return (key, event if isinstance(event, bytes) else MappedEventCoder().encode(event))


def _one_process(files: list[str], parse: ParseEvents) -> tuple[list[Any], Counter[Any]]:
    parse.start_bundle()
    outputs = [
        _comparable(o) for path in files for raw in read_file(path) for o in parse.process(raw)
    ]
    tallies: Counter[Any] = Counter()
    for tally in parse.finish_bundle():
        _, key, n = _comparable(tally)
        tallies[key] += n
    return outputs, tallies


def _processes(
    files: list[str], parse: ParseEvents, processes: int
) -> tuple[list[Any], Counter[Any]]:
    outputs, tallies = [], Counter[Any]()
    for output in _ParsePool(files, None, parse, processes).process(None):
        compared = _comparable(output)
        if compared[0] == "tally":
            tallies[compared[1]] += compared[2]
        else:
            outputs.append(compared)
    return outputs, tallies


@pytest.mark.parametrize("processes", [1, 2, 3])
@pytest.mark.parametrize("block", [1, 7, 256])
def test_the_processes_give_what_one_process_gives_in_its_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int, block: int
) -> None:
    monkeypatch.setattr(parse_pool, "BLOCK", block)
    files = _inputs(tmp_path)
    expected, expected_tallies = _one_process(
        files, ParseEvents(RecordMapping(), NOW, FINGERPRINTS)
    )
    got, tallies = _processes(files, ParseEvents(RecordMapping(), NOW, FINGERPRINTS), processes)
    assert got == expected
    assert tallies == expected_tallies
    kinds = Counter(o[0] if o[0] in ("invalid", "replayed") else "event" for o in got)
    assert kinds["event"] > 250 and kinds["invalid"] >= 10 and kinds["replayed"] == 1, kinds
    assert TallyKey("events_read", "", "", "", "") in tallies


def test_an_input_without_records_gives_nothing_and_ends(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    parse = ParseEvents(RecordMapping(), NOW, FINGERPRINTS)
    assert list(_ParsePool([str(empty)], None, parse, 3).process(None)) == []


class _Failing(ParseEvents):
    """The parse step with a bug at one record, or a process that dies there."""

    def __init__(self, at: int, how: str) -> None:
        super().__init__(RecordMapping(), NOW, FINGERPRINTS)
        self._at = at
        self._how = how

    def process(self, raw: RawRecord) -> Iterator[Any]:
        if raw.position == self._at:
            if self._how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise LookupError(f"a bug at line {raw.position}")
        yield from super().process(raw)


def test_a_bug_in_a_process_is_raised_in_the_parent_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parse_pool, "BLOCK", 10)
    files = _inputs(tmp_path)[:1]
    with pytest.raises(LookupError, match="a bug at line 155"):
        list(_ParsePool(files, None, _Failing(155, "raise"), 2).process(None))


def test_a_killed_process_is_named_and_the_others_are_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parse_pool, "BLOCK", 10)
    monkeypatch.setattr(parse_pool, "_POLL", 0.05)
    files = _inputs(tmp_path)[:1]
    before = children_of(os.getpid())
    with pytest.raises(ParseProcessError, match=r"parse process 1 ended with status -9"):
        list(_ParsePool(files, None, _Failing(15, "kill"), 2).process(None))
    assert children_of(os.getpid()) == before, "a parse process outlived the step"


def test_processes_only_for_a_local_input_worth_forking_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2}, raising=False)
    small = tmp_path / "small.jsonl"
    small.write_text('{"time": 1}\n')
    large = tmp_path / "large.jsonl"
    large.write_bytes(b"x" * parse_pool.MIN_BYTES)
    assert parse_processes([str(small)]) == 0
    assert parse_processes([str(small), str(large)]) == 3, "one process per core"
    assert parse_processes([str(large), "gs://bucket/x.jsonl"]) == 0, "read once per process"
    assert parse_processes([str(large), str(tmp_path / "missing.jsonl")]) == 0
    assert parse_processes([]) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0}, raising=False)
    assert parse_processes([str(large)]) == 0, "one core: nothing to share"


def test_a_signal_at_a_process_s_birth_is_left_to_the_parent(tmp_path: Path) -> None:
    """A process group's SIGTERM that catches a parse process as it is forked.

    The parse process drops it (the run's process handles it); it neither runs the
    parent's handler (which printed a traceback from threading's fork bookkeeping, seen in
    CI) nor dies of it, and the outputs are whole.
    """
    source = tmp_path / "events.jsonl"
    write_jsonl(generate_events(600, seed=3), source)
    done = run_signalled_at_birth(
        f"""
        from beaconflow.model.mapping import RecordMapping
        from beaconflow.transforms.parse import ParseEvents
        from beaconflow.transforms.parse_pool import _ParsePool
        from tests.transforms.test_parse import FINGERPRINTS, NOW

        parse = ParseEvents(RecordMapping(), NOW, FINGERPRINTS)
        outputs = list(_ParsePool([{str(source)!r}], None, parse, 3).process(None))
        print(sum(1 for each in outputs if isinstance(each, tuple)))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["600"]
    assert done.stderr == ""
