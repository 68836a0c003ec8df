"""The ledger's writer (``beaconflow.delivery.ledger``) on a full disk, or its journal removed.

The ledger's whole runs (rerun, replay, kill and resume) are in tests/e2e/test_ledger_runs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from beaconflow.delivery.ledger import LedgerError, LedgerWriter
from beaconflow.model.message import Message
from tests.delivery.test_sender import ManualClock
from tests.fs_faults import SmallDisk


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
