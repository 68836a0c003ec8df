"""The wiring's own parts (``beaconflow.pipelines.backfill``): the report files, the locks.

And preparing the outputs: one that cannot be made is named with the system's reason.

Whole runs through ``run()`` are in tests/e2e/.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems

from beaconflow.delivery.lease_store import StoreOptions
from beaconflow.delivery.ledger_lease import RemoteLedgerLocks
from beaconflow.delivery.ledger_lock import Holder, LedgerBusy, LedgerLocks, iso
from beaconflow.report.run import RunReport
from beaconflow.sandbox.collector import Collector
from tests.fakes.lease_store import MemoryLeaseStore
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
        return HalfWritten(path) if path.endswith("report.json.tmp-html") else create(path)

    monkeypatch.setattr(FileSystems, "create", filling)
    problem, html_written = backfill._write_report(str(path), RunReport(exit_status=0))
    html = tmp_path / "report.html"
    assert problem == f"report.html not writable: {html}: No space left on device"
    assert html_written is False
    # the page goes first, the JSON tools read last: neither is torn, neither says less
    assert path.read_text() == "earlier json"
    assert (tmp_path / "report.html").read_text() == "earlier html", "not a torn page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


@pytest.fixture
def stores(monkeypatch: pytest.MonkeyPatch) -> dict[str, MemoryLeaseStore]:
    """An in-memory store behind every gs:// and s3:// ledger, one per bucket."""
    from beaconflow.delivery import lease_store

    opened: dict[str, MemoryLeaseStore] = {}

    def factory(scheme: str) -> Callable[[str, str, StoreOptions], MemoryLeaseStore]:
        def open_memory(bucket: str, prefix: str, options: StoreOptions) -> MemoryLeaseStore:
            return opened.setdefault(f"{scheme}://{bucket}/{prefix}", MemoryLeaseStore())

        return open_memory

    for scheme in ("gs", "s3"):
        monkeypatch.setitem(lease_store.FACTORIES, scheme, factory(scheme))
    return opened


@pytest.mark.parametrize(
    ("ledger", "kind"),
    [
        ("gs://bucket/ledger", RemoteLedgerLocks),
        ("s3://bucket/ledger", RemoteLedgerLocks),
        ("{tmp}/ledger", LedgerLocks),
        ("hdfs://cluster/ledger", contextlib.nullcontext),
    ],
)
def test_each_ledger_gets_its_lock(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    stores: dict[str, MemoryLeaseStore],
    ledger: str,
    kind: type,
) -> None:
    from beaconflow.delivery.stop import RunStop
    from beaconflow.pipelines.backfill import _ledger_locks
    from beaconflow.pipelines.options import configure

    ledger = ledger.format(tmp=tmp_path)
    config = configure(["--input=x.jsonl", "--kontagent-api-key=k", f"--ledger={ledger}"])
    assert isinstance(_ledger_locks(config, RunStop()), kind)
    warned = [r.getMessage() for r in caplog.records if "is not locked" in r.getMessage()]
    assert warned == ([
        f"the ledger {ledger} is not locked (no lock on hdfs:// paths): two runs at once "
        "for the same endpoint may both send; see docs/ledger.md"
    ] if kind is contextlib.nullcontext else [])  # fmt: skip
    dry = configure(["--input=x.jsonl", f"--ledger={ledger}", f"--dry-run={tmp_path / 'd'}"])
    # a dry run sends nothing and takes no lock
    assert isinstance(_ledger_locks(dry, RunStop()), contextlib.nullcontext)


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
    # its private folder, where its pieces go, cannot be made either
    in_the_way = tmp_path / ".out.jsonl.beaconflow"
    in_the_way.write_text("in the way")
    with pytest.raises(UsageError) as raised:
        _prepare_output(str(tmp_path / "out.jsonl"), what)
    assert str(raised.value) == (
        f"{what} not writable: {tmp_path / 'out.jsonl'}: "
        f"a file is in the way of its temporary folder {in_the_way}"
    )


def test_the_locks_take_their_limits_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stores: dict[str, MemoryLeaseStore]
) -> None:
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
    assert lease.store is None, "lock files"
    # a lease object too, and the run's senders reach its store as the run did
    remote = configure([
        "--input=x.jsonl", "--kontagent-api-key=k", "--ledger=s3://bucket/ledger",
        "--s3_endpoint_url=http://127.0.0.1:9000",
    ])  # fmt: skip
    leases = _ledger_locks(remote, RunStop())
    assert isinstance(leases, RemoteLedgerLocks)
    with leases:
        lease = leases.lease()
    assert (lease.stale_after, lease.heartbeat_every) == (4.0, 0.5)
    assert lease.store == StoreOptions(s3_endpoint_url="http://127.0.0.1:9000")
    monkeypatch.setenv("BEACONFLOW_LEDGER_LOCK_STALE_SECONDS", "5 minutes")
    dry = configure(["--input=x.jsonl", f"--ledger={tmp_path}", f"--dry-run={tmp_path / 'd'}"])
    for each in (config, dry):  # a usage error whatever the run
        with pytest.raises(UsageError) as raised:
            _ledger_locks(each, RunStop())
        assert str(raised.value) == (
            "BEACONFLOW_LEDGER_LOCK_STALE_SECONDS must be a number of seconds above 0, "
            "got '5 minutes'"
        )


def test_a_second_run_on_a_remote_ledger_for_the_same_endpoint_is_refused(
    stores: dict[str, MemoryLeaseStore],
) -> None:
    from beaconflow.delivery.stop import RunStop
    from beaconflow.pipelines.backfill import _holding, _ledger_locks
    from beaconflow.pipelines.options import configure

    argv = ["--input=x.jsonl", "--kontagent-api-key=k", "--ledger=gs://bucket/ledger"]
    first_stop, second_stop = RunStop(), RunStop()
    with _holding(_ledger_locks(configure(argv), first_stop)):
        (held,) = stores["gs://bucket/ledger"].objects
        assert held.startswith("lock-") and held.endswith(".json")
        refused = "the ledger gs://bucket/ledger is in use for endpoint "
        with (
            pytest.raises(LedgerBusy, match=f"^{re.escape(refused)}"),
            _holding(_ledger_locks(configure(argv), second_stop)),
        ):
            pytest.fail("the second run went on")
        other_app = [*argv[:1], "--kontagent-api-key=another", *argv[2:]]
        with _holding(_ledger_locks(configure(other_app), RunStop())):
            assert len(stores["gs://bucket/ledger"].objects) == 2  # not blocked
    assert stores["gs://bucket/ledger"].objects == {}


def test_beams_s3_options_reach_the_lease_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from beaconflow.delivery import lease_store
    from beaconflow.delivery.stop import RunStop
    from beaconflow.pipelines.backfill import _ledger_locks
    from beaconflow.pipelines.options import configure

    seen: list[tuple[str, str, StoreOptions]] = []

    def open_memory(bucket: str, prefix: str, options: StoreOptions) -> MemoryLeaseStore:
        seen.append((bucket, prefix, options))
        return MemoryLeaseStore()

    monkeypatch.setitem(lease_store.FACTORIES, "s3", open_memory)
    config = configure([
        "--input=x.jsonl", "--kontagent-api-key=k", "--ledger=s3://bucket/nightly/ledger",
        "--s3_endpoint_url=http://127.0.0.1:9000", "--s3_region_name=eu-west-1",
        "--s3_access_key_id=id", "--s3_secret_access_key=secret", "--s3_disable_ssl",
    ])  # fmt: skip
    _ledger_locks(config, RunStop())
    assert seen == [("bucket", "nightly/ledger", StoreOptions(
        s3_endpoint_url="http://127.0.0.1:9000", s3_region_name="eu-west-1",
        s3_access_key_id="id", s3_secret_access_key="secret", s3_disable_ssl=True,
    ))]  # fmt: skip


def test_a_remote_ledger_without_its_client_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from beaconflow.delivery.stop import RunStop
    from beaconflow.pipelines.backfill import _ledger_locks
    from beaconflow.pipelines.options import UsageError, configure

    monkeypatch.setitem(sys.modules, "boto3", None)
    config = configure(["--input=x.jsonl", "--kontagent-api-key=k", "--ledger=s3://b/ledger"])
    with pytest.raises(UsageError, match=r"pip install 'beaconflow\[s3\]'"):
        _ledger_locks(config, RunStop())


def test_a_store_that_fails_the_lock_is_a_usage_error(stores: dict[str, MemoryLeaseStore]) -> None:
    from beaconflow.delivery.stop import RunStop
    from beaconflow.pipelines.backfill import _holding, _ledger_locks
    from beaconflow.pipelines.options import UsageError, configure

    config = configure(["--input=x.jsonl", "--kontagent-api-key=k", "--ledger=s3://b/ledger"])
    locks = _ledger_locks(config, RunStop())
    stores["s3://b/ledger"].failing = True
    with (
        pytest.raises(UsageError, match=r"^the lock of the ledger mem://test failed"),
        _holding(locks),
    ):
        pytest.fail("the run went on")


@pytest.fixture
def own_logging() -> Iterator[None]:
    """The root logger's handlers given back as they were after the test.

    ``cli.main`` replaces them with one on the test's captured stderr, which is closed after
    the test: later tests' log lines then failed with "--- Logging error ---" on it.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


@pytest.mark.usefixtures("own_logging")
def test_a_held_remote_ledger_exits_75_and_sends_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stores: dict[str, MemoryLeaseStore],
    collector: Collector,
) -> None:
    """The whole command: another host holds the lease of one of the run's endpoints."""
    from beaconflow.delivery.ledger_identity import endpoint_fingerprint
    from beaconflow.delivery.ledger_lease import lease_name
    from beaconflow.model.message import Endpoint
    from beaconflow.pipelines import backfill, cli
    from tests.conftest import KISSMETRICS_KEY, backfill_flags

    events = tmp_path / "events.jsonl"
    events.write_text('{"event": "install", "user_id": "u1", "ts": 1750000000}\n')
    # the ledger's files are Beam's to reach; this test is about the lock
    monkeypatch.setattr(backfill, "check_writable", lambda directory: None)
    store = stores.setdefault("gs://bucket/ledger", MemoryLeaseStore())
    fingerprint = endpoint_fingerprint(Endpoint("kissmetrics", collector.base_url, KISSMETRICS_KEY))
    now = time.time()
    store.create(lease_name(fingerprint), Holder("etl-2", 4242, now - 60, now).to_bytes())
    flags = backfill_flags(
        collector.base_url, tmp_path / "out", events, extra=("--ledger=gs://bucket/ledger",)
    )
    assert cli.main(flags) == 75
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"beaconflow: the ledger gs://bucket/ledger is in use for endpoint {fingerprint} by "
        f"host etl-2 pid 4242 since {iso(now - 60)}; nothing was done, try again later"
    ]
    assert collector.counts().get("arrived", 0) == 0
    assert not (tmp_path / "out").exists()
    assert list(store.objects) == [lease_name(fingerprint)]  # the other endpoint's let go


@pytest.mark.parametrize("ledger", ["{tmp}/ledger", "gs://bucket/ledger"])
def test_the_senders_check_the_lease_on_this_hosts_runners_only(
    tmp_path: Path, stores: dict[str, MemoryLeaseStore], ledger: str
) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from beaconflow.delivery.stop import RunStop
    from beaconflow.pipelines.backfill import _holding, _lease, _ledger_locks
    from beaconflow.pipelines.options import configure

    ledger = ledger.format(tmp=tmp_path)
    (tmp_path / "ledger").mkdir()
    config = configure(["--input=x.jsonl", "--kontagent-api-key=k", f"--ledger={ledger}"])
    with _holding(_ledger_locks(config, RunStop())) as locks:
        lease = _lease(locks, PipelineOptions([]))
        assert lease is not None and lease.holder == locks.holder
        assert (lease.store is None) is ("://" not in ledger)
        # another runner's workers may be on hosts without the lock files, or the client
        assert _lease(locks, PipelineOptions(["--runner=DataflowRunner"])) is None
    assert _lease(contextlib.nullcontext(), PipelineOptions([])) is None


def test_sender_processes_start_early_only_for_a_run_past_its_usage_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A usage error costs no sender process; a run that sends starts its own before its pool."""
    from beaconflow.delivery.sendproc import prestart
    from beaconflow.pipelines import backfill
    from beaconflow.pipelines.options import UsageError
    from tests.conftest import backfill_flags, run_json

    started: list[int] = []

    def counted(count: int) -> None:
        started.append(count)
        prestart(count)

    monkeypatch.setattr(backfill, "prestart", counted)
    with Collector() as collector:
        missing = backfill_flags(collector.base_url, tmp_path / "a", tmp_path / "none*.jsonl")
        with pytest.raises(UsageError, match="no file matches"):
            run_json([*missing, "--send-processes=2"], now=1_800_000_000)
        assert started == []
        events = tmp_path / "events.jsonl"
        events.write_text('{"time": 1750000000, "user_id": 1, "event": "apr"}\n')
        flags = backfill_flags(collector.base_url, tmp_path / "b", events)
        status, report = run_json([*flags, "--send-processes=2"], now=1_800_000_000)
        assert status == 0 and report["messages_delivered"] == 2
        assert started == [2]
