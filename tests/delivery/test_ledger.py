"""The ledger's writer (``beaconflow.delivery.ledger``) on a full disk, or its journal removed.

An unwritable ledger, or a file where its folder should be, is named with the system's reason.

The ledger's whole runs (rerun, replay, kill and resume) are in tests/e2e/test_ledger_runs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from beaconflow.delivery.ledger import LedgerError, LedgerWriter, check_writable, make_directories
from beaconflow.model.message import Message
from tests.delivery.test_sender import ManualClock
from tests.fs_faults import SmallDisk, unwritable


def test_a_failed_ledger_writer_stays_failed(small_disk: SmallDisk) -> None:
    small_disk.fill(free=0)
    writer = LedgerWriter(str(small_disk.path / "l"), {"kontagent": "f" * 12})
    one = Message("kontagent", "apa", (("s", "1"),))
    with pytest.raises(LedgerError, match="No space left on device"):
        for _ in range(1000):
            writer.record_one(one)
    small_disk.free_up()
    with pytest.raises(LedgerError, match="No space left on device"):
        writer.record_one(one)  # no half-written journal is written to again
    writer.close()


def test_a_ledger_removed_under_a_running_writer_is_noticed_within_a_second(
    tmp_path: Path,
) -> None:
    import shutil

    clock = ManualClock()
    directory = tmp_path / "ledger"
    writer = LedgerWriter(str(directory), {"kontagent": "f" * 12}, clock=clock)
    one = Message("kontagent", "apa", (("s", "1"),))
    writer.record_one(one)
    shutil.rmtree(directory)  # logrotate, an operator, a cleanup job
    writer.record_one(one)  # the write itself still succeeds, into the unlinked file
    clock.now += 1.0
    with pytest.raises(LedgerError, match=r"ledger not writable: .*: the journal .* was removed"):
        writer.record_one(one)
    writer.close()


def test_make_directories_calls_a_file_in_the_way_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path in (tmp_path / "file", tmp_path / "file" / "ledger"):
        with pytest.raises(NotADirectoryError) as raised:
            make_directories(str(path))
        assert raised.value.strerror == "Not a directory"
    make_directories(str(tmp_path / "new" / "ledger"))
    make_directories(str(tmp_path / "new" / "ledger"))  # there already: nothing to do
    assert (tmp_path / "new" / "ledger").is_dir()


@pytest.mark.parametrize("where", ["file", "file/ledger"], ids=["is-a-file", "parent-is-a-file"])
def test_check_writable_names_the_ledger_and_the_reason(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("x")
    ledger = tmp_path / where
    with pytest.raises(LedgerError) as raised:
        check_writable(str(ledger))
    assert str(raised.value) == f"ledger not writable: {ledger}: Not a directory"


def test_an_unwritable_ledger_is_named_with_the_systems_reason(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    with unwritable(ledger) as reason:
        with pytest.raises(LedgerError) as raised:
            check_writable(str(ledger))
        assert str(raised.value) == f"ledger not writable: {ledger}: {reason}"
        writer = LedgerWriter(str(ledger), {"kontagent": "f" * 12}, sync_seconds=None)
        with pytest.raises(LedgerError) as raised:
            writer.record_one(Message("kontagent", "apa", (("s", "1"),)))
        assert str(raised.value) == f"ledger not writable: {ledger}: {reason}"
        writer.close()
