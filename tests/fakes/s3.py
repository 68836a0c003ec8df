"""Moto's S3 server on loopback with a new bucket, for tests of ``s3://`` paths through Beam.

Beam's S3 filesystem reaches it through ``--s3_endpoint_url``; only test credentials are
set, for this process and the processes it starts, so nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def moto_s3(monkeypatch: pytest.MonkeyPatch, scratch: Path) -> Iterator[tuple[str, str]]:
    """Moto's S3 server and a new bucket in it: (endpoint, bucket). ``scratch``: a folder."""
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(scratch / "no-such-file"),
        "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "no-such-file"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"outputs-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield endpoint, bucket
    finally:
        server.stop()


def objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    """Every object of ``bucket``: key -> content."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}
