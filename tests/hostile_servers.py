"""Servers that misbehave below HTTP, on loopback, for the tests of ambiguous outcomes.

Each is a raw asyncio socket server on a thread of its own, started by the test, that reads
GET requests itself and records the target of every request it read (its path and query),
in order, before it misbehaves:

- :class:`LogThenHang` reads a request, records it and never answers: the connection stays
  open until the client gives up or the server stops. A service that logs (and counts) a
  request, then hangs.
- :class:`Drip` writes the start of an answer at once (``head``: a status line and headers,
  or only part of a status line), then the rest (``tail``) one byte at a time, ``every``
  seconds apart: slower than the client's timeout.
- :class:`KeepAliveCloser` answers the first request of each connection with a 200 it
  keeps alive, then reads the second request, records it and closes the connection without
  answering it: a server closing an idle keep-alive connection just as a request arrives.
- :class:`FirstRequestCloser` closes every connection on reading its first request: a
  connection that fails on first use.

Nothing here measures time; the tests assert what each server saw and what the client made
of it. The API key the requests carry is never printed: tests compare the targets.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import threading
from collections import Counter
from types import TracebackType
from typing import Self

#: A 200 with a small body, kept alive.
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


class RawServer(abc.ABC):
    """A socket server on 127.0.0.1 whose connections are handled by :meth:`serve`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def targets(self) -> list[str]:
        """Every request target read so far, in order (the path and the query)."""
        with self._lock:
            return list(self._targets)

    def seen(self) -> Counter[str]:
        """How many times each target was read."""
        return Counter(self.targets())

    @abc.abstractmethod
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handle one connection: each subclass's own way of misbehaving."""

    async def read_request(self, reader: asyncio.StreamReader) -> str | None:
        """Read one GET's head and record its target; None when the client closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        with self._lock:
            self._targets.append(target)
        return target

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    def start(self) -> Self:
        self._thread.start()

        async def listen() -> int:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            port: int = self._server.sockets[0].getsockname()[1]
            return port

        self.port = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        """Close the server and every connection (once; later calls do nothing)."""
        if self._loop.is_closed():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._handlers):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class LogThenHang(RawServer):
    """Reads each request, records it, never answers."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await self.read_request(reader) is not None:
            pass  # the client gives up; a request it sends again on this connection is read


class Drip(RawServer):
    """Writes ``head`` at once, then ``tail`` one byte per ``every`` seconds."""

    def __init__(self, head: bytes, tail: bytes = b"x" * 64, every: float = 0.5) -> None:
        super().__init__()
        self._head = head
        self._tail = tail
        self._every = every

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await self.read_request(reader) is None:
            return
        writer.write(self._head)
        await writer.drain()
        for byte in self._tail:
            await asyncio.sleep(self._every)
            writer.write(bytes((byte,)))
            await writer.drain()
        await asyncio.sleep(3600)  # never ends its answer


class KeepAliveCloser(RawServer):
    """Answers a connection's first request (kept alive), closes it on reading the second.

    ``opening``: the first answers wait until that many connections have each sent their
    first request, so that a client sending that many at once opens that many connections
    (which its pool then holds, each good for one more request that it will not answer).
    """

    def __init__(self, opening: int = 1) -> None:
        super().__init__()
        #: The targets read and left unanswered, in order.
        self.unanswered: list[str] = []
        self._opening = opening
        self._opened = 0
        self._all_open: asyncio.Event | None = None  # made on the server's loop

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await self.read_request(reader) is None:
            return
        if self._all_open is None:
            self._all_open = asyncio.Event()
        self._opened += 1
        if self._opened >= self._opening:
            self._all_open.set()
        await self._all_open.wait()
        writer.write(OK)
        await writer.drain()
        second = await self.read_request(reader)
        if second is not None:
            with self._lock:
                self.unanswered.append(second)
        # closed by _handle: the second request is never answered


class FirstRequestCloser(RawServer):
    """Reads each connection's first request, records it, closes the connection unanswered."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.read_request(reader)  # closed by _handle: never answered
