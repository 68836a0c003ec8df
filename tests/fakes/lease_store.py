"""An in-memory lease store that honours the preconditions as GCS and S3 do.

Versions count up from 1 across the whole store (so a deleted and re-created object never
has an old version again). ``failing`` makes every call raise as an unreachable store
would; ``ignores_preconditions`` plays an S3-compatible store that drops the conditional
headers; ``retry_after_success`` applies the next write and then answers as its retry by the
store's client would (the first answer lost on the way): the precondition no longer holds.
"""

from __future__ import annotations

import threading

from beaconflow.delivery.lease_store import LeaseStoreError


class MemoryLeaseStore:
    def __init__(self, *, ignores_preconditions: bool = False) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.ignores_preconditions = ignores_preconditions
        self.failing = False
        self.retry_after_success = False
        self.calls: list[str] = []
        self._next = 0
        self._guard = threading.Lock()

    def _version(self) -> str:
        self._next += 1
        return str(self._next)

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.failing:
            raise LeaseStoreError(
                "the lock of the ledger mem://test failed: unreachable", "unreachable"
            )

    def _written(self, name: str, data: bytes) -> str | None:
        version = self._version()
        self.objects[name] = (data, version)
        if self.retry_after_success:
            self.retry_after_success = False
            return None
        return version

    def create(self, name: str, data: bytes) -> str | None:
        with self._guard:
            self._check("create")
            if name in self.objects and not self.ignores_preconditions:
                return None
            return self._written(name, data)

    def read(self, name: str) -> tuple[bytes, str] | None:
        with self._guard:
            self._check("read")
            return self.objects.get(name)

    def replace(self, name: str, data: bytes, version: str) -> str | None:
        with self._guard:
            self._check("replace")
            current = self.objects.get(name)
            if not self.ignores_preconditions and (current is None or current[1] != version):
                return None
            return self._written(name, data)

    def delete(self, name: str, version: str) -> bool:
        with self._guard:
            self._check("delete")
            current = self.objects.get(name)
            if current is None or (current[1] != version and not self.ignores_preconditions):
                return False
            del self.objects[name]
            return True
