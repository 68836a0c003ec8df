"""aiohttp's private switch (``beaconflow.delivery.aiohttp_internals``) still works as expected.

pyproject.toml bounds aiohttp to the versions this suite ran with; before widening the
bound, these tests must pass on the new version (they fail loudly, naming what changed).
Their counterpart for Beam is tests/pipelines/test_fnapi.py.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from beaconflow.delivery.aiohttp_internals import UnsupportedAiohttpError, disable_silent_resend
from beaconflow.delivery.ambiguity import MarkingConnector, mark_attempts

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


async def _get_twice(disable: bool) -> tuple[list[str], int]:
    """Two GETs on one kept-alive connection, the second never answered.

    Returns what the client saw and how many requests reached the server.
    """
    arrived = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived
        first = True
        while await reader.readuntil(b"\r\n\r\n"):
            arrived += 1
            if not first:
                writer.close()  # the keep-alive connection dies before the answer
                return
            first = False
            writer.write(_OK)
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    seen: list[str] = []
    async with aiohttp.ClientSession() as session:
        if disable:
            disable_silent_resend(session)
        for _ in range(2):
            try:
                async with session.get(f"http://127.0.0.1:{port}/e") as response:
                    seen.append(str(response.status))
            except aiohttp.ClientError as error:
                seen.append(type(error).__name__)
    server.close()
    await server.wait_closed()
    return seen, arrived


def test_aiohttp_resends_silently_unless_beaconflow_turns_it_off() -> None:
    # aiohttp's own behaviour, which the switch exists for: a second request, unseen
    seen, arrived = asyncio.run(_get_twice(disable=False))
    assert seen == ["200", "200"] and arrived == 3, (
        "aiohttp no longer resends on a closed keep-alive connection: see "
        "beaconflow/delivery/aiohttp_internals.py"
    )
    seen, arrived = asyncio.run(_get_twice(disable=True))
    assert seen == ["200", "ServerDisconnectedError"] and arrived == 2


def test_an_aiohttp_without_the_switch_is_refused_loudly() -> None:
    class Session:
        pass

    with pytest.raises(UnsupportedAiohttpError, match="cannot turn off its silent resend"):
        disable_silent_resend(Session())  # type: ignore[arg-type]


async def _reused_marks(answer: bytes) -> list[bool]:
    """Three GETs one after another through a MarkingConnector: each one's ``reused`` mark."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(answer)
            await writer.drain()
            if b"Connection: close" in answer:
                writer.close()
                return

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    marks: list[bool] = []
    async with aiohttp.ClientSession(connector=MarkingConnector()) as session:
        mark = mark_attempts()
        for _ in range(3):
            mark.reset()
            async with session.get(f"http://127.0.0.1:{port}/e") as response:
                await response.read()
            marks.append(mark.reused)
    server.close()
    await server.wait_closed()
    return marks


def test_a_pooled_connection_comes_back_as_the_same_protocol_object() -> None:
    """MarkingConnector tells a reused connection by its protocol object (``reused``)."""
    assert asyncio.run(_reused_marks(_OK)) == [False, True, True], (
        "aiohttp's pool no longer hands back the same Connection.protocol for a kept-alive "
        "connection: MarkingConnector cannot tell reused connections (see "
        "beaconflow/delivery/ambiguity.py)"
    )
    closing = _OK.replace(b"keep-alive", b"close")
    assert asyncio.run(_reused_marks(closing)) == [False, False, False]
