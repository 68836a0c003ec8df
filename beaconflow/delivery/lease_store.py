"""The object store under a ``gs://`` or ``s3://`` ledger, as the lease needs it: four calls.

Beam's FileSystems cannot create a file only if it is absent, nor replace one only if it is
unchanged, so the lease of a remote ledger (:mod:`beaconflow.delivery.ledger_lease`) talks
to the store through its own client and its own preconditions: a :class:`LeaseStore` is
bound to one ledger directory (bucket and prefix) and names objects in it by file name.

================  ==========================================  ===========================
call              Google Cloud Storage                        Amazon S3
================  ==========================================  ===========================
``create``        ``ifGenerationMatch=0``                     ``If-None-Match: *``
``read``          the object and its generation               the object and its ETag
``replace``       ``ifGenerationMatch=<generation>``          ``If-Match: <ETag>``
``delete``        ``ifGenerationMatch=<generation>``          ``If-Match: <ETag>``
================  ==========================================  ===========================

The stores' clients are imported when a store is opened, and only then: ``pip install
'beaconflow[gcs]'`` or ``'beaconflow[s3]'`` brings them. :data:`FACTORIES` opens the store
of a scheme; tests put their own there. The stores are in
:mod:`beaconflow.delivery.lease_gcs` and :mod:`beaconflow.delivery.lease_s3`::

    python -m pytest tests/delivery/test_lease_gcs.py tests/delivery/test_lease_s3.py
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Protocol

from beaconflow.delivery.ledger import LedgerError
from beaconflow.model.errors import BeaconflowError

#: A version no object of any store has: a replace conditioned on it must be refused.
NO_SUCH_VERSION = "0"


class LeaseStoreError(LedgerError):
    """The store could not be asked (unreachable, denied, ...); the text says which and why.

    ``reason``: why alone (the client's words), for a line that names the object itself.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class LeaseStoreMissing(BeaconflowError):
    """The store's client library is not installed; the text names the pip extra."""


class LeaseStore(Protocol):
    """One ledger directory of an object store, with create-if-absent and compare-and-swap.

    A version is the store's own (a GCS generation, an S3 ETag), as text. Every call raises
    :class:`LeaseStoreError` when the store cannot be asked; a refused precondition is an
    answer, not an error.
    """

    def create(self, name: str, data: bytes) -> str | None:
        """Create ``name`` holding ``data`` if it does not exist: its version, else None."""
        ...

    def read(self, name: str) -> tuple[bytes, str] | None:
        """What ``name`` holds and its version; None when it does not exist."""
        ...

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        """Write ``data`` to ``name`` if it is still at ``version``: its new version, else None."""
        ...

    def delete(self, name: str, version: str) -> bool:
        """Delete ``name`` if it is still at ``version``; whether it was deleted."""
        ...


@dataclass(frozen=True)
class StoreOptions:
    """How to reach the store, from Beam's own options for it; None: the client's default.

    For S3 these are Beam's ``--s3_endpoint_url``, ``--s3_region_name``,
    ``--s3_access_key_id``, ``--s3_secret_access_key``, ``--s3_session_token``,
    ``--s3_verify`` and ``--s3_disable_ssl``: without them boto3 reads its usual
    configuration (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``~/.aws``, an instance role).
    Google Cloud Storage takes the application default credentials, as Beam does.
    """

    s3_endpoint_url: str | None = None
    s3_region_name: str | None = None
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_session_token: str | None = field(default=None, repr=False)
    s3_verify: str | None = None
    s3_disable_ssl: bool = False


def split_url(directory: str) -> tuple[str, str, str]:
    """``gs://bucket/some/ledger`` -> ``("gs", "bucket", "some/ledger")``."""
    scheme, _, rest = directory.partition("://")
    bucket, _, prefix = rest.partition("/")
    return scheme, bucket, prefix.strip("/")


def object_url(directory: str, name: str) -> str:
    """The URL of file ``name`` in the remote ledger ``directory``, as messages name it."""
    return f"{directory.rstrip('/')}/{name}"


def object_name(prefix: str, name: str) -> str:
    """The object key of file ``name`` in the directory ``prefix`` of a bucket."""
    return f"{prefix}/{name}" if prefix else name


def store_error(where: str, error: BaseException) -> LeaseStoreError:
    """A store's failure as one line naming the ledger (a client's error, first line)."""
    first_line = (str(error) or type(error).__name__).splitlines()[0]
    return LeaseStoreError(f"the lock of the ledger {where} failed: {first_line}", first_line)


def import_client(module: str, extra: str) -> ModuleType:
    """Import a store's client library, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LeaseStoreMissing(
            f"a {extra}:// --ledger needs {module}, which is not installed: "
            f"pip install 'beaconflow[{extra}]'"
        ) from None


def _open_gcs(bucket: str, prefix: str, options: StoreOptions) -> LeaseStore:
    from beaconflow.delivery.lease_gcs import GcsLeaseStore

    return GcsLeaseStore.open(bucket, prefix)


def _open_s3(bucket: str, prefix: str, options: StoreOptions) -> LeaseStore:
    from beaconflow.delivery.lease_s3 import S3LeaseStore

    return S3LeaseStore.open(bucket, prefix, options)


#: The store of each scheme: ``factory(bucket, prefix, options)``.
FACTORIES: dict[str, Callable[[str, str, StoreOptions], LeaseStore]] = {
    "gs": _open_gcs,
    "s3": _open_s3,
}


def has_store(directory: str) -> bool:
    """Whether a remote ledger ``directory`` is on a store that can hold a lease."""
    return split_url(directory)[0] in FACTORIES


def open_store(directory: str, options: StoreOptions | None = None) -> LeaseStore:
    """The store of the remote ledger ``directory`` (``gs://`` or ``s3://``).

    Raises :class:`LeaseStoreMissing` when its client is not installed, and
    :class:`LeaseStoreError` when it cannot be set up (no credentials, ...).
    """
    scheme, bucket, prefix = split_url(directory)
    return FACTORIES[scheme](bucket, prefix, options or StoreOptions())
