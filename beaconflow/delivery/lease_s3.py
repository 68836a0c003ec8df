"""The lease's store on Amazon S3: ETags as versions, S3's conditional writes and deletes.

A :class:`~beaconflow.delivery.lease_store.LeaseStore` on ``boto3`` (``pip install
'beaconflow[s3]'``: 1.35.70 or later, the first with ``If-Match`` on PutObject and
DeleteObject). S3 answers ``PutObject`` with ``If-None-Match: *`` (August 2024) and
``If-Match: <ETag>`` (November 2024), and ``DeleteObject`` with ``If-Match`` (general
purpose buckets since September 2025), with 412 when the precondition fails and 409 when a
concurrent conditional write won. S3 is strongly consistent for these calls. A store that
only speaks S3 (MinIO, Ceph, R2, ...) must honour the same headers: the lease checks that
``If-None-Match`` and ``If-Match`` on PutObject are honoured when it takes a lock, and
refuses to run on a store that ignores them (see docs/ledger.md).

The client is boto3's, configured as usual (``AWS_ENDPOINT_URL``, ``AWS_REGION``,
``~/.aws``, an instance role) unless the run gives Beam's ``--s3_*`` options, which win.
The tests run it against moto's S3 server on loopback::

    python -m pytest tests/delivery/test_lease_s3.py
"""

from __future__ import annotations

from typing import Any

from beaconflow.delivery.lease_store import (
    StoreOptions,
    import_client,
    object_name,
    store_error,
)

_CONTENT_TYPE = "application/json"
#: Error codes that answer "the precondition does not hold" (or "not there"): not errors.
_REFUSED = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_ABSENT = frozenset({"NoSuchKey", "404", "NotFound"})


class S3LeaseStore:
    """The ledger directory ``prefix`` of S3 bucket ``bucket``, through a boto3 ``client``."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        exceptions = import_client("botocore.exceptions", "s3")
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._where = f"s3://{bucket}/{prefix}"
        self._client_error = exceptions.ClientError
        self._failed = (exceptions.BotoCoreError, exceptions.ClientError)

    @classmethod
    def open(cls, bucket: str, prefix: str, options: StoreOptions) -> S3LeaseStore:
        boto3 = import_client("boto3", "s3")
        exceptions = import_client("botocore.exceptions", "s3")
        settings: dict[str, Any] = {
            "endpoint_url": options.s3_endpoint_url,
            "region_name": options.s3_region_name,
            "aws_access_key_id": options.s3_access_key_id,
            "aws_secret_access_key": options.s3_secret_access_key,
            "aws_session_token": options.s3_session_token,
        }
        if options.s3_verify is not None:
            settings["verify"] = options.s3_verify
        if options.s3_disable_ssl:
            settings["use_ssl"] = False
        try:
            client = boto3.session.Session().client(
                "s3", **{k: v for k, v in settings.items() if v is not None}
            )
        except exceptions.BotoCoreError as error:
            raise store_error(f"s3://{bucket}/{prefix}", error) from None
        return cls(client, bucket, prefix)

    def _key(self, name: str) -> str:
        return object_name(self._prefix, name)

    def _answer(self, error: BaseException, *answers: frozenset[str]) -> bool:
        """Whether ``error`` is one of the expected ``answers``, not a failure."""
        if not isinstance(error, self._client_error):
            return False
        response = getattr(error, "response", {})
        code = str(response.get("Error", {}).get("Code", ""))
        status = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return any(code in known or status in known for known in answers)

    def create(self, name: str, data: bytes) -> str | None:
        try:
            answer = self._client.put_object(
                Bucket=self._bucket,
                Key=self._key(name),
                Body=data,
                ContentType=_CONTENT_TYPE,
                IfNoneMatch="*",
            )
        except self._failed as error:
            if self._answer(error, _REFUSED):
                return None
            raise store_error(self._where, error) from None
        return str(answer["ETag"])

    def read(self, name: str) -> tuple[bytes, str] | None:
        try:
            answer = self._client.get_object(Bucket=self._bucket, Key=self._key(name))
            data = answer["Body"].read()
        except self._failed as error:
            if self._answer(error, _ABSENT):
                return None
            raise store_error(self._where, error) from None
        return bytes(data), str(answer["ETag"])

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        try:
            answer = self._client.put_object(
                Bucket=self._bucket,
                Key=self._key(name),
                Body=data,
                ContentType=_CONTENT_TYPE,
                IfMatch=version,
            )
        except self._failed as error:
            if self._answer(error, _REFUSED, _ABSENT):
                return None
            raise store_error(self._where, error) from None
        return str(answer["ETag"])

    def delete(self, name: str, version: str) -> bool:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=self._key(name), IfMatch=version)
        except self._failed as error:
            if self._answer(error, _REFUSED, _ABSENT):
                return False
            raise store_error(self._where, error) from None
        return True
