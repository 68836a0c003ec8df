"""Every I/O error names its path (issue 15, item 5), through the command itself.

Real files in the way of each output, input and ledger file (a file where a folder should
be, a folder where a file should be, a folder that refuses writes, a file that refuses
reads, a file past the size limit, a full stdout): the command says in one line what the
path is, the path and the system's reason, without a traceback, and exits 2 before anything
is sent, or 4 with a report once sending began. The wording of each part is tested where it
lives (tests/model/test_errors.py, tests/delivery/test_ledger*.py, tests/transforms/).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from beaconflow.delivery.ledger_identity import endpoint_fingerprint
from beaconflow.delivery.ledger_lock import lock_path
from beaconflow.model.message import Endpoint
from beaconflow.sandbox.collector import Collector
from tests.conftest import (
    KONTAGENT_KEY,
    KONTAGENT_SECRET,
    backfill_flags,
    june_events,
    run_cli,
)
from tests.fs_faults import as_permission_bits_say, unwritable


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return june_events(tmp_path_factory.mktemp("logs"), 60, seed=3, days=1)


def _a_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder\n")
    return path


def _kontagent_lock(url: str, ledger: Path) -> Path:
    endpoint = Endpoint("kontagent", url, KONTAGENT_KEY, KONTAGENT_SECRET)
    return Path(lock_path(str(ledger), endpoint_fingerprint(endpoint)))


def _dead_letter_under_a_file(url: str, tmp: Path) -> tuple[list[str], str]:
    dead = _a_file(tmp / "out") / "dead.jsonl"
    return [f"--dead-letter={dead}"], f"dead letter not writable: {dead}: Not a directory"


def _ledger_is_a_file(url: str, tmp: Path) -> tuple[list[str], str]:
    ledger = _a_file(tmp / "ledger")
    return [f"--ledger={ledger}"], f"ledger not writable: {ledger}: Not a directory"


def _lock_is_a_folder(url: str, tmp: Path) -> tuple[list[str], str]:
    lock = _kontagent_lock(url, tmp / "ledger")
    lock.mkdir(parents=True)
    return [f"--ledger={tmp / 'ledger'}"], f"ledger lock not writable: {lock}: Is a directory"


def _shard_is_a_folder(url: str, tmp: Path) -> tuple[list[str], str]:
    shard = tmp / "ledger" / "shard-0123456789ab-000000.v2.jsonl"
    shard.mkdir(parents=True)
    return [f"--ledger={tmp / 'ledger'}"], f"ledger file not readable: {shard}: Is a directory"


def _input_is_a_folder(url: str, tmp: Path) -> tuple[list[str], str]:
    folder = tmp / "day.jsonl"
    folder.mkdir()
    return [f"--input={folder}"], f"--input {folder}: cannot be read: Is a directory"


def _mapping_under_a_file(url: str, tmp: Path) -> tuple[list[str], str]:
    mapping = _a_file(tmp / "mappings") / "game.toml"
    return [f"--mapping={mapping}"], f"--mapping {mapping}: cannot be read: Not a directory"


SETUPS: dict[str, Callable[[str, Path], tuple[list[str], str]]] = {
    "dead letter under a file (ENOTDIR)": _dead_letter_under_a_file,
    "ledger is a file (ENOTDIR)": _ledger_is_a_file,
    "lock file is a folder (EISDIR)": _lock_is_a_folder,
    "shard is a folder (EISDIR)": _shard_is_a_folder,
    "input is a folder (EISDIR)": _input_is_a_folder,
    "mapping under a file (ENOTDIR)": _mapping_under_a_file,
}


def _flags(url: str, tmp: Path, events: Path, extra: list[str]) -> list[str]:
    """The run's flags with ``extra`` in place of the flags of the same name."""
    replaced = {flag.partition("=")[0] for flag in extra}
    flags = backfill_flags(url, tmp / "out", events)
    return [*(f for f in flags if f.partition("=")[0] not in replaced), *extra]


def _one_error_line(done: subprocess.CompletedProcess[str], problem: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"beaconflow: error: {problem}\n"
    assert done.stdout == ""


@pytest.mark.parametrize("setup", SETUPS, ids=list(SETUPS))
def test_a_path_in_the_way_is_named_before_anything_is_sent(
    collector: Collector, events_file: Path, tmp_path: Path, setup: str
) -> None:
    extra, problem = SETUPS[setup](collector.base_url, tmp_path)
    done = run_cli(*_flags(collector.base_url, tmp_path, events_file, extra))
    _one_error_line(done, problem)
    assert collector.counts().get("arrived", 0) == 0


def test_a_report_folder_that_refuses_writes_is_named(
    collector: Collector, events_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    out.mkdir()
    with unwritable(out) as reason:
        flags = _flags(collector.base_url, tmp_path, events_file, [f"--report={out / 'r.json'}"])
        done = run_cli(*flags)
    _one_error_line(done, f"report not writable: {out / 'r.json'}: {reason}")
    assert collector.counts().get("arrived", 0) == 0


def test_an_input_that_refuses_reads_is_named_even_for_root(
    collector: Collector, events_file: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_bytes(events_file.read_bytes())
    locked = logs / "b.jsonl"
    locked.write_bytes(events_file.read_bytes())
    locked.chmod(0)
    flags = _flags(collector.base_url, tmp_path, events_file, [f"--input={logs / '*.jsonl'}"])
    done = subprocess.run(
        [*as_permission_bits_say(), sys.executable, "-m", "beaconflow", *flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    _one_error_line(done, f"--input {logs / '*.jsonl'}: {locked} cannot be read: Permission denied")
    assert collector.counts().get("arrived", 0) == 0


def _file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: files past ``limit`` bytes fail with EFBIG, as on a disk that fills."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limited


def test_a_report_too_large_to_write_after_sending_is_exit_4_naming_the_page(
    events_file: Path, tmp_path: Path
) -> None:
    """report.html (about 20 kB) is past the limit, report.json (about 4 kB) is not."""
    out = tmp_path / "out"
    flags = ["--sandbox", f"--input={events_file}", f"--report={out / 'report.json'}"]
    flags.append(f"--dead-letter={out / 'dead.jsonl'}")
    done = subprocess.run(
        [sys.executable, "-m", "beaconflow", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_file_size_limit(12_000),
    )
    page = out / "report.html"
    problem = f"report.html not writable: {page}: File too large"
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    assert f"beaconflow: {problem}\n" in done.stderr
    assert f"beaconflow: stopped early: {problem}. " in done.stderr
    assert f"report: {out / 'report.json'} ({page} could not be written)\n" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["stopped"] == problem and report["exit_status"] == 4
    assert report["messages_delivered"] == report["sandbox_collector"]["accepted"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["dead.jsonl", "report.json"], "no litter"


@pytest.mark.parametrize(
    "argv",
    [["mapping", "show", "segment"], ["ledger", "verify", "{ledger}"]],
    ids=["mapping show", "ledger verify"],
)
def test_a_subcommand_whose_stdout_is_full_says_so_and_exits_2(
    tmp_path: Path, argv: list[str]
) -> None:
    (tmp_path / "ledger").mkdir()
    args = [a.format(ledger=tmp_path / "ledger") for a in argv]
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "beaconflow", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert done.stderr == (
        "beaconflow: error: standard output not writable: /dev/full: No space left on device\n"
    )


def test_ledger_verify_and_repair_name_the_file_they_cannot_read_or_write(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    shard = ledger / "shard-0123456789ab-000000.v2.jsonl"
    shard.mkdir(parents=True)
    for command in ("verify", "repair"):
        done = run_cli("ledger", command, str(ledger))
        assert done.returncode == 2
        assert done.stderr == (
            f"beaconflow: error: ledger file not readable: {shard}: Is a directory\n"
        )
    shard.rmdir()
    # a damaged shard (no seal) in a ledger that refuses writes: repair cannot set it aside
    shard.write_bytes(b'{"ledger": "x"}\n')
    with unwritable(ledger) as reason:
        done = run_cli("ledger", "repair", str(ledger))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"beaconflow: error: ledger not writable: {ledger}: {reason} (setting {shard.name} aside)\n"
    )
    assert os.listdir(ledger) == [shard.name], "nothing was changed"
