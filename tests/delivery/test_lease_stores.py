"""The lease's stores against real servers on loopback: S3 (moto) and GCS (a small fake).

One contract, three stores: the in-memory store the lease's own tests use
(tests/fakes/lease_store.py), :class:`~beaconflow.delivery.lease_s3.S3LeaseStore` through
boto3 against moto's S3 server, and :class:`~beaconflow.delivery.lease_gcs.GcsLeaseStore`
through google-cloud-storage against tests/fakes/gcs.py. Each must refuse a second create,
a replace or a delete at a stale version, and say None for an absent object. Nothing
leaves the machine: the clients get test credentials and loopback endpoints.
"""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Iterator

import pytest

from beaconflow.delivery.lease_gcs import GcsLeaseStore
from beaconflow.delivery.lease_store import (
    NO_SUCH_VERSION,
    LeaseStore,
    LeaseStoreError,
    LeaseStoreMissing,
    StoreOptions,
    open_store,
)
from beaconflow.delivery.ledger_lease import RemoteLedgerLocks, lease_name
from beaconflow.delivery.ledger_lock import Holder, LedgerBusy
from tests.fakes.gcs import FakeGcs, fake_gcs
from tests.fakes.lease_store import MemoryLeaseStore

T0 = 1_750_000_000.0


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Test credentials only: no ~/.aws, no instance metadata, no Google credentials."""
    nowhere = tmp_path_factory.getbasetemp() / "no-such-file"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(nowhere),
        "AWS_SHARED_CREDENTIALS_FILE": str(nowhere),
        "GOOGLE_APPLICATION_CREDENTIALS": str(nowhere),
        "GOOGLE_CLOUD_PROJECT": "test",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _s3_bucket(endpoint: str) -> str:
    import boto3

    bucket = f"ledger-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def gcs() -> Iterator[tuple[FakeGcs, str]]:
    with fake_gcs() as running:
        yield running


def _gcs_store(address: str, monkeypatch: pytest.MonkeyPatch) -> GcsLeaseStore:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", address)
    return GcsLeaseStore.open("ledgers", "nightly/ledger")


@pytest.fixture(params=["memory", "s3", "gcs"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> LeaseStore:
    if request.param == "memory":
        return MemoryLeaseStore()
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # boto3's own setting
        return open_store(f"s3://{_s3_bucket(endpoint)}/nightly/ledger")
    _, address = request.getfixturevalue("gcs")
    return _gcs_store(address, monkeypatch)


def test_create_only_if_absent(store: LeaseStore) -> None:
    version = store.create("lock-a.json", b"first")
    assert version is not None
    assert store.create("lock-a.json", b"second") is None
    assert store.read("lock-a.json") == (b"first", version)
    assert store.read("lock-b.json") is None


def test_replace_only_at_the_version_read(store: LeaseStore) -> None:
    first = store.create("lock-a.json", b"first")
    assert first is not None
    second = store.replace("lock-a.json", b"second", first)
    assert second is not None and second != first
    assert store.replace("lock-a.json", b"stale", first) is None
    assert store.replace("lock-a.json", b"never", NO_SUCH_VERSION) is None
    assert store.read("lock-a.json") == (b"second", second)
    assert store.replace("lock-b.json", b"absent", second) is None
    assert store.read("lock-b.json") is None


def test_delete_only_at_the_version_read(store: LeaseStore) -> None:
    first = store.create("lock-a.json", b"first")
    assert first is not None
    second = store.replace("lock-a.json", b"second", first)
    assert second is not None
    assert store.delete("lock-a.json", first) is False
    assert store.read("lock-a.json") == (b"second", second)
    assert store.delete("lock-a.json", second) is True
    assert store.read("lock-a.json") is None
    assert store.delete("lock-a.json", second) is False
    assert store.create("lock-a.json", b"again") not in (None, first, second)


def test_the_lease_over_each_store(store: LeaseStore) -> None:
    """Two runs: the second is refused; a stale lease is taken over; release cleans up."""
    first = RemoteLedgerLocks("x://ledger", ["aaaaaaaaaaaa"], store, host="etl-1", pid=1,
                              clock=lambda: T0, heartbeat_every=0)  # fmt: skip
    assert first.acquire() == []
    with pytest.raises(LedgerBusy, match="by host etl-1 pid 1 since 2025-06-15T15:06:40Z"):
        RemoteLedgerLocks("x://ledger", ["aaaaaaaaaaaa"], store, host="etl-2", pid=2,
                          clock=lambda: T0 + 1, heartbeat_every=0).acquire()  # fmt: skip
    later = RemoteLedgerLocks("x://ledger", ["aaaaaaaaaaaa"], store, host="etl-2", pid=2,
                              clock=lambda: T0 + 301, heartbeat_every=0)  # fmt: skip
    assert later.acquire()[0].endswith("its heartbeat is 301 s old (limit 300 s)")
    assert first.heartbeat() is not None  # taken over: the first run would stop
    first.release()
    seen = store.read(lease_name("aaaaaaaaaaaa"))
    assert seen is not None and Holder.from_bytes(seen[0]) == later.holder
    later.release()
    assert store.read(lease_name("aaaaaaaaaaaa")) is None


def test_the_s3_objects_are_in_the_ledger_prefix(s3_endpoint: str) -> None:
    import boto3

    bucket = _s3_bucket(s3_endpoint)
    store = open_store(f"s3://{bucket}/nightly/ledger/", StoreOptions(s3_endpoint_url=s3_endpoint))
    assert store.create("lock-a.json", b"{}") is not None
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["nightly/ledger/lock-a.json"]


def test_beams_s3_options_win_over_boto3s_configuration(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _s3_bucket(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    options = StoreOptions(
        s3_endpoint_url=s3_endpoint,
        s3_region_name="eu-west-1",
        s3_access_key_id="beam-key",
        s3_secret_access_key="beam-secret",
    )
    assert "beam-secret" not in repr(options) and "beam-key" not in repr(options)
    store = open_store(f"s3://{bucket}/ledger", options)
    assert store.create("lock-a.json", b"{}") is not None


def test_the_gcs_objects_are_in_the_ledger_prefix(
    gcs: tuple[FakeGcs, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, address = gcs
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", address)
    store = open_store("gs://ledgers/nightly/ledger/")
    version = store.create("lock-a.json", b"{}")
    assert fake.objects == {("ledgers", "nightly/ledger/lock-a.json"): (b"{}", int(version or 0))}
    assert fake.requests == ["POST nightly/ledger/lock-a.json 0"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_s3_store_is_one_line_naming_the_ledger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    store = open_store("s3://ledgers/ledger")
    with pytest.raises(LeaseStoreError) as raised:
        store.create("lock-a.json", b"{}")
    message = str(raised.value)
    assert message.startswith("the lock of the ledger s3://ledgers/ledger failed: ")
    assert "\n" not in message and "testing" not in message


def test_an_unreachable_gcs_store_is_one_line_naming_the_ledger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_closed_port()}")
    # no retry: the client's own would go on for two minutes
    store = GcsLeaseStore.open("ledgers", "nightly/ledger", retry=None)
    with pytest.raises(LeaseStoreError) as raised:
        store.read("lock-a.json")
    assert str(raised.value).startswith(
        "the lock of the ledger gs://ledgers/nightly/ledger failed: "
    )


@pytest.mark.parametrize(
    ("directory", "module", "extra"),
    [("gs://b/ledger", "google.cloud.storage", "gcs"), ("s3://b/ledger", "boto3", "s3")],
)
def test_a_missing_client_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, directory: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(LeaseStoreMissing) as raised:
        open_store(directory)
    assert str(raised.value) == (
        f"a {extra}:// --ledger needs {module}, which is not installed: "
        f"pip install 'beaconflow[{extra}]'"
    )
