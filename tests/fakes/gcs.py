"""A fake of the Google Cloud Storage JSON API on loopback: what the lease's store calls.

``google-cloud-storage`` talks to it through ``STORAGE_EMULATOR_HOST``: multipart and
media uploads (``POST /upload/storage/v1/b/B/o``), object downloads (``GET
/download/storage/v1/b/B/o/NAME?alt=media``) and metadata (``GET /storage/v1/b/B/o/NAME``)
and deletes (``DELETE /storage/v1/b/B/o/NAME``), each with ``ifGenerationMatch``: 412 when
the precondition fails, 404 when the object is absent, as GCS answers. Every bucket
exists (the client reads its metadata, ``GET /storage/v1/b/B``). ``requests`` lists the
object requests. Generations count up across the server, so a re-created object never has an old
one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c

FIRST_GENERATION = 1_750_000_000_000_000


class FakeGcs:
    """The objects, ``(bucket, name) -> (data, generation)``, and the requests seen."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, int]] = {}
        self.requests: list[str] = []
        self._generation = FIRST_GENERATION
        self.guard = threading.Lock()

    def next_generation(self) -> int:
        self._generation += 1
        return self._generation


def _hashes(data: bytes) -> tuple[str, str]:
    crc = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    return crc, md5


def _resource(bucket: str, name: str, data: bytes, generation: int) -> dict[str, Any]:
    crc, md5 = _hashes(data)
    return {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/{generation}",
        "bucket": bucket,
        "name": name,
        "generation": str(generation),
        "metageneration": "1",
        "contentType": "application/json",
        "size": str(len(data)),
        "crc32c": crc,
        "md5Hash": md5,
    }


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    """The metadata and the media of a ``multipart/related`` upload."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    parts = body.split(b"--" + boundary)[1:-1]
    contents = []
    for part in parts:
        _, _, content = part.partition(b"\r\n\r\n")
        contents.append(content.removesuffix(b"\r\n"))
    return json.loads(contents[0]), contents[1]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"code": status, "message": message, "errors": [
            {"message": message, "domain": "global", "reason": "conditionNotMet"
             if status == 412 else "notFound"}]}})  # fmt: skip

    def _route(self) -> tuple[str, str | None, dict[str, str]]:
        """The bucket, the object name (None for an upload) and the query."""
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path.removeprefix("/upload").removeprefix("/download")
        rest = path.removeprefix("/storage/v1/b/")
        bucket, _, tail = rest.partition("/o")
        name = unquote(tail.removeprefix("/")) if tail.startswith("/") else None
        return bucket, name, query

    def _precondition(self, current: tuple[bytes, int] | None, query: dict[str, str]) -> bool:
        wanted = query.get("ifGenerationMatch")
        if wanted is None:
            return True
        return (current[1] if current else 0) == int(wanted)

    def do_POST(self) -> None:
        bucket, _, query = self._route()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if query.get("uploadType") == "multipart":
            metadata, data = _multipart(self.headers["Content-Type"], body)
            name = metadata["name"]
        else:
            name, data = query["name"], body
        fake = self.server.fake
        with fake.guard:
            fake.requests.append(f"POST {name} {query.get('ifGenerationMatch')}")
            if not self._precondition(fake.objects.get((bucket, name)), query):
                self._error(412, "At least one of the pre-conditions you specified did not hold.")
                return
            generation = fake.next_generation()
            fake.objects[bucket, name] = (data, generation)
        self._json(200, _resource(bucket, name, data, generation))

    def do_GET(self) -> None:
        bucket, name, query = self._route()
        fake = self.server.fake
        if name is None:  # the client reads its bucket's metadata in the background
            self._json(200, {"kind": "storage#bucket", "id": bucket, "name": bucket,
                             "location": "US", "metageneration": "1"})  # fmt: skip
            return
        with fake.guard:
            fake.requests.append(f"GET {name}")
            current = fake.objects.get((bucket, name or ""))
        if current is None:
            self._error(404, f"No such object: {bucket}/{name}")
            return
        data, generation = current
        if query.get("alt") != "media":
            self._json(200, _resource(bucket, name or "", data, generation))
            return
        crc, md5 = _hashes(data)
        self._send(200, data, {
            "Content-Type": "application/json",
            "X-Goog-Generation": str(generation),
            "X-Goog-Metageneration": "1",
            "X-Goog-Hash": f"crc32c={crc},md5={md5}",
            "X-Goog-Stored-Content-Length": str(len(data)),
        })  # fmt: skip

    def do_DELETE(self) -> None:
        bucket, name, query = self._route()
        fake = self.server.fake
        with fake.guard:
            fake.requests.append(f"DELETE {name} {query.get('ifGenerationMatch')}")
            current = fake.objects.get((bucket, name or ""))
            if current is None:
                self._error(404, f"No such object: {bucket}/{name}")
                return
            if not self._precondition(current, query):
                self._error(412, "At least one of the pre-conditions you specified did not hold.")
                return
            del fake.objects[bucket, name or ""]
        self._send(204)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeGcs


@contextmanager
def fake_gcs() -> Iterator[tuple[FakeGcs, str]]:
    """A running fake and its address for ``STORAGE_EMULATOR_HOST``."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = FakeGcs()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
