"""Outputs in a crowded folder (issue 17): a run never walks nor matches the outputs' folder.

Beam's ``FileSystems.match`` walks a local pattern's folder recursively, with two stats per
file: beside 74,000 files, each match of a shard pattern next to the outputs cost about a
second. The outputs' pieces now live in private folders (transforms/staging.py). Counted
here, not timed: in a whole run in this process (Beam in memory, no sender process) with a
few thousand files beside its outputs, every ``os.scandir`` (``os.walk`` lists with it),
``os.listdir`` and ``os.stat`` that reaches their folder, and every pattern given to
``FileSystems.match``. ``benchmarks/crowded.py`` times it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apache_beam.io.filesystems import FileSystems

from beaconflow.sandbox.collector import Collector
from beaconflow.transforms.staging import is_staging_dir
from tests.conftest import backfill_flags, june_events, run_json

NOW = 1_800_000_000
#: Files beside the outputs: the old walk made two stats for each.
CROWD = 3000


class Watch:
    """The file-system calls of a run: listings and stats by folder, match patterns."""

    def __init__(self) -> None:
        self.listings: Counter[tuple[str, str]] = Counter()  # (call, folder)
        self.stats: Counter[str] = Counter()  # folder of the path
        self.patterns: list[str] = []

    def in_folder(self, folder: Path) -> dict[str, int]:
        """Calls reaching ``folder`` itself or anything below it but private folders."""
        seen: Counter[str] = Counter()
        root = str(folder)
        for (call, where), n in self.listings.items():
            if _below(where, root):
                seen[call] += n
        seen["stat"] = sum(n for where, n in self.stats.items() if _below(where, root))
        return dict(seen)


def _below(where: str, root: str) -> bool:
    """Whether ``where`` is ``root`` or below it, not in one of the outputs' private folders."""
    if where != root and not where.startswith(root + "/"):
        return False
    parts = where[len(root) :].split("/")
    return not any(is_staging_dir(part) for part in parts if part)


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    seen = Watch()
    scandir, listdir, stat, match = os.scandir, os.listdir, os.stat, FileSystems.match

    def counted_scandir(path: Any = ".") -> Any:
        if isinstance(path, (str, os.PathLike)):
            seen.listings["scandir", os.path.abspath(path)] += 1
        return scandir(path)

    def counted_listdir(path: Any = ".") -> list[str]:
        if isinstance(path, (str, os.PathLike)):
            seen.listings["listdir", os.path.abspath(path)] += 1
        return listdir(path)

    def counted_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if isinstance(path, (str, os.PathLike)):
            seen.stats[os.path.dirname(os.path.abspath(path))] += 1
        return stat(path, *args, **kwargs)

    def counted_match(patterns: list[str], limits: Any = None) -> Any:
        seen.patterns.extend(patterns)
        return match(patterns, limits)

    monkeypatch.setattr(os, "scandir", counted_scandir)
    monkeypatch.setattr(os, "listdir", counted_listdir)
    monkeypatch.setattr(os, "stat", counted_stat)
    monkeypatch.setattr(FileSystems, "match", staticmethod(counted_match))
    yield seen


@pytest.fixture
def crowded(tmp_path: Path) -> Path:
    """A folder of CROWD files, a tenth of them in a subfolder (the old walk went there too)."""
    folder = tmp_path / "crowded"
    (folder / "sub").mkdir(parents=True)
    for n in range(CROWD):
        (folder / ("sub" if n % 10 == 0 else "") / f"other-{n:05d}.dat").touch()
    return folder


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = june_events(tmp_path_factory.mktemp("logs"), 150, seed=5, days=3)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("{broken\n[1]\n")  # two dead-letter entries
    return path


@pytest.mark.parametrize("kind", ["dry run", "sending, with a ledger"])
def test_a_run_beside_many_files_never_walks_their_folder(
    kind: str, crowded: Path, watch: Watch, events_file: Path, tmp_path: Path
) -> None:
    extra = ["--direct_running_mode=in_memory", "--send-processes=0", "--max-errors=10"]
    if kind == "dry run":
        extra.append(f"--dry-run={crowded / 'dry.jsonl'}")
    else:
        extra.append(f"--ledger={tmp_path / 'ledger'}")
    with Collector() as collector:
        flags = backfill_flags(collector.base_url, crowded, events_file, extra=tuple(extra))
        status, report = run_json(flags, now=NOW)
    assert status == 0, report["stopped"]
    assert report["events_invalid"] == 2 and report["invariant_errors"] == []

    # no walk: not one listing of the subfolder, nor of the folder but one of its names
    # (names only, no stat per file: what a release before left beside the outputs)
    assert watch.in_folder(crowded / "sub") == {"stat": 0}
    calls = watch.in_folder(crowded)
    assert calls.get("scandir", 0) == 0 and calls.get("listdir", 0) == 1, calls
    # a few stats per output (its folder, its pieces' folder, the file): not one per file
    assert calls["stat"] < 60, calls
    for pattern in watch.patterns:
        if pattern.startswith(str(crowded)):
            assert is_staging_dir(os.path.dirname(pattern)), pattern
    assert any(p.startswith(f"{crowded}/.dead.jsonl.beaconflow/") for p in watch.patterns)

    outputs = {"dead.jsonl", "report.json", "report.html"} | (
        {"dry.jsonl"} if kind == "dry run" else set()
    )
    beside = {p.name for p in crowded.iterdir()} - {f"other-{n:05d}.dat" for n in range(CROWD)}
    assert beside == outputs | {"sub"}, "no piece and no private folder is left"
