"""The lease's store on Google Cloud Storage: generations as versions, ``ifGenerationMatch``.

A :class:`~beaconflow.delivery.lease_store.LeaseStore` on ``google-cloud-storage``
(``pip install 'beaconflow[gcs]'``, which ``apache-beam[gcp]`` also brings). GCS is
strongly consistent for these calls: a create, replace or delete is seen by every later
read, and a precondition is checked against the object's current generation. The client
takes the application default credentials, as Beam's GCS filesystem does, and
``STORAGE_EMULATOR_HOST`` as usual. The tests run it against a small fake of the JSON API
on loopback (tests/fakes/gcs.py)::

    python -m pytest tests/delivery/test_lease_gcs.py
"""

from __future__ import annotations

from typing import Any

from beaconflow.delivery.lease_store import (
    import_client,
    object_name,
    store_error,
)

_CONTENT_TYPE = "application/json"
#: ``retry`` unset: each call keeps the client's own retry.
CLIENT_RETRY = object()


class GcsLeaseStore:
    """The ledger directory ``prefix`` of GCS bucket ``bucket``, through ``client``.

    ``client`` is a ``google.cloud.storage.Client``; :meth:`open` makes the default one.
    ``retry`` is given to every call when set (None: no retry); unset, each call keeps the
    client's own (transient errors retried for up to two minutes, a conditional write too:
    the lease knows its own write when a retry of it is refused).
    """

    def __init__(
        self, client: Any, bucket: str, prefix: str, *, retry: object = CLIENT_RETRY
    ) -> None:
        exceptions = import_client("google.api_core.exceptions", "gcs")
        auth_exceptions = import_client("google.auth.exceptions", "gcs")
        self._bucket = client.bucket(bucket)
        self._where = f"gs://{bucket}/{prefix}"
        self._prefix = prefix
        self._refused = (exceptions.PreconditionFailed,)
        self._absent = (exceptions.NotFound,)
        # requests' errors are OSErrors
        self._failed = (exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, OSError)
        self._options: dict[str, Any] = {} if retry is CLIENT_RETRY else {"retry": retry}

    @classmethod
    def open(cls, bucket: str, prefix: str, *, retry: object = CLIENT_RETRY) -> GcsLeaseStore:
        storage = import_client("google.cloud.storage", "gcs")
        auth_exceptions = import_client("google.auth.exceptions", "gcs")
        try:
            client = storage.Client()
        except (auth_exceptions.GoogleAuthError, OSError) as error:
            raise store_error(f"gs://{bucket}/{prefix}", error) from None
        return cls(client, bucket, prefix, retry=retry)

    def _blob(self, name: str) -> Any:
        return self._bucket.blob(object_name(self._prefix, name))

    def create(self, name: str, data: bytes) -> str | None:
        blob = self._blob(name)
        try:
            blob.upload_from_string(
                data, content_type=_CONTENT_TYPE, if_generation_match=0, **self._options
            )
        except self._refused:
            return None
        except self._failed as error:
            raise store_error(self._where, error) from None
        return str(blob.generation)

    def read(self, name: str) -> tuple[bytes, str] | None:
        blob = self._blob(name)
        try:
            # one GET: the generation comes in the response's x-goog-generation header
            data = blob.download_as_bytes(**self._options)
        except self._absent:
            return None
        except self._failed as error:
            raise store_error(self._where, error) from None
        return bytes(data), str(blob.generation)

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        blob = self._blob(name)
        try:
            blob.upload_from_string(
                data,
                content_type=_CONTENT_TYPE,
                if_generation_match=int(version),
                **self._options,
            )
        except self._refused + self._absent:
            return None
        except self._failed as error:
            raise store_error(self._where, error) from None
        return str(blob.generation)

    def delete(self, name: str, version: str) -> bool:
        try:
            self._bucket.delete_blob(
                object_name(self._prefix, name),
                if_generation_match=int(version),
                **self._options,
            )
        except self._refused + self._absent:
            return False
        except self._failed as error:
            raise store_error(self._where, error) from None
        return True
