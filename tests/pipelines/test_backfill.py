"""The wiring's own parts (``beaconflow.pipelines.backfill``): writing the report files.

And preparing the outputs: one that cannot be made is named with the system's reason.

Whole runs through ``run()`` are in tests/e2e/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems

from beaconflow.report.run import RunReport
from tests.fs_faults import unwritable


def test_each_report_file_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beaconflow.pipelines import backfill

    path = tmp_path / "report.json"
    path.write_text("earlier json")
    (tmp_path / "report.html").write_text("earlier html")

    create = FileSystems.create

    class HalfWritten:
        """A file whose write fails half-way, as on a disk that fills."""

        def __init__(self, path: str) -> None:
            self.handle = create(path)

        def __enter__(self) -> HalfWritten:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> None:
            self.handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    def filling(path: str, *args: object, **kwargs: object) -> object:
        return HalfWritten(path) if path.endswith(".html.tmp-write") else create(path)

    monkeypatch.setattr(FileSystems, "create", filling)
    problem, html_written = backfill._write_report(str(path), RunReport(exit_status=0))
    html = tmp_path / "report.html"
    assert problem == f"report.html not writable: {html}: No space left on device"
    assert html_written is False
    # the page goes first, the JSON tools read last: neither is torn, neither says less
    assert path.read_text() == "earlier json"
    assert (tmp_path / "report.html").read_text() == "earlier html", "not a torn page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


@pytest.mark.parametrize(
    ("ledger", "locked"),
    [("gs://bucket/ledger", False), ("s3://bucket/ledger", False), ("{tmp}/ledger", True)],
)
def test_a_remote_ledger_is_not_locked_and_the_run_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, ledger: str, locked: bool
) -> None:
    from beaconflow.delivery.ledger_lock import LedgerLocks
    from beaconflow.delivery.stop import RunStop
    from beaconflow.pipelines.backfill import _ledger_locks
    from beaconflow.pipelines.options import configure

    ledger = ledger.format(tmp=tmp_path)
    config = configure(["--input=x.jsonl", "--kontagent-api-key=k", f"--ledger={ledger}"])
    holder = _ledger_locks(config, RunStop())
    assert isinstance(holder, LedgerLocks) is locked
    warned = [r.getMessage() for r in caplog.records if "is not locked" in r.getMessage()]
    assert warned == ([] if locked else [
        f"the ledger {ledger} is not locked (no lock on gs:// or s3:// yet): two runs at once "
        "for the same endpoint may both send; see docs/ledger.md"
    ])  # fmt: skip
    dry = configure(["--input=x.jsonl", f"--ledger={ledger}", f"--dry-run={tmp_path / 'd'}"])
    assert not isinstance(_ledger_locks(dry, RunStop()), LedgerLocks)  # a dry run sends nothing


@pytest.mark.parametrize("what", ["dead letter", "report", "dry-run file"])
def test_an_output_that_cannot_be_made_is_named_with_the_systems_reason(
    tmp_path: Path, what: str
) -> None:
    from beaconflow.pipelines.backfill import _prepare_output
    from beaconflow.pipelines.options import UsageError

    (tmp_path / "file").write_text("in the way")
    under_a_file = tmp_path / "file" / "out.jsonl"
    with pytest.raises(UsageError) as raised:
        _prepare_output(str(under_a_file), what)
    assert str(raised.value) == f"{what} not writable: {under_a_file}: Not a directory"
    folder = tmp_path / "folder"
    folder.mkdir()
    with unwritable(folder) as reason, pytest.raises(UsageError) as raised:
        _prepare_output(str(folder / "out.jsonl"), what)
    assert str(raised.value) == f"{what} not writable: {folder / 'out.jsonl'}: {reason}"


def test_the_locks_take_their_limits_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beaconflow.delivery.ledger_lock import LedgerLocks
    from beaconflow.delivery.stop import RunStop
    from beaconflow.pipelines.backfill import _ledger_locks
    from beaconflow.pipelines.options import UsageError, configure

    config = configure(["--input=x.jsonl", "--kontagent-api-key=k", f"--ledger={tmp_path}"])
    monkeypatch.setenv("BEACONFLOW_LEDGER_LOCK_STALE_SECONDS", "4")
    monkeypatch.setenv("BEACONFLOW_LEDGER_LOCK_HEARTBEAT_SECONDS", "0.5")
    locks = _ledger_locks(config, RunStop())
    assert isinstance(locks, LedgerLocks)
    with locks:
        lease = locks.lease()
    assert (lease.stale_after, lease.heartbeat_every) == (4.0, 0.5)
    monkeypatch.setenv("BEACONFLOW_LEDGER_LOCK_STALE_SECONDS", "5 minutes")
    dry = configure(["--input=x.jsonl", f"--ledger={tmp_path}", f"--dry-run={tmp_path / 'd'}"])
    for each in (config, dry):  # a usage error whatever the run
        with pytest.raises(UsageError) as raised:
            _ledger_locks(each, RunStop())
        assert str(raised.value) == (
            "BEACONFLOW_LEDGER_LOCK_STALE_SECONDS must be a number of seconds above 0, "
            "got '5 minutes'"
        )
