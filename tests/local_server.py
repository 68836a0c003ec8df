"""The fake Kontagent/KISSmetrics server the sender tests send to, on 127.0.0.1.

Its behaviour is chosen by the message kind in the URL path (``ok``, ``flaky``, ``throttle``,
``bad``, ``slow``, ``gated``, ``drop``, ``redirect``, ``loop``, ...), and every URL carries the API key :data:`KEY`,
which must never come out of a sender. The ``server`` fixture (conftest) starts one per
test module.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from urllib.parse import urlencode

from aiohttp import web

from beaconflow.sandbox.collector import PIXEL_GIF

KEY = "SECRETKEY123"
GIF = PIXEL_GIF


class LocalServer:
    """The fake Kontagent/KISSmetrics server, running its own event loop in a thread."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        # Per message kind: handlers of earlier tests (slow ones) may still be running.
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.retry_after_date = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._gate = asyncio.Event()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kontagent(self, kind: str, token: str, **params: str | int) -> str:
        query = urlencode({"token": token, **params})
        return f"{self.base_url}/api/v1/{KEY}/{kind}/?{query}"

    def kissmetrics(self, kind: str, token: str, **params: str | int) -> str:
        query = urlencode({"_k": KEY, "token": token, **params})
        return f"{self.base_url}/{kind}?{query}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    def stop(self) -> None:
        self.open_gate()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close_gate(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_gate(False), self._loop).result()

    def open_gate(self) -> None:
        asyncio.run_coroutine_threadsafe(self._set_gate(True), self._loop).result()

    async def _set_gate(self, is_open: bool) -> None:
        if is_open:
            self._gate.set()
        else:
            self._gate.clear()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/{key}/{kind}/", self._handle)
        app.router.add_get("/{kind}", self._handle)
        # No access log: it would print the URLs, keys included, into the captured logs.
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        token = request.query.get("token", "")
        self.hits[token] += 1
        self.in_flight[kind] += 1
        self.max_in_flight[kind] = max(self.max_in_flight[kind], self.in_flight[kind])
        try:
            return await self._respond(kind, request, self.hits[token])
        finally:
            self.in_flight[kind] -= 1

    async def _respond(self, kind: str, request: web.Request, hit: int) -> web.StreamResponse:
        gif = web.Response(body=GIF, content_type="image/gif")
        if kind == "ok":
            return gif
        if kind == "flaky":
            return gif if hit > int(request.query["n"]) else web.Response(status=503)
        if kind == "throttle":
            if hit > 1:
                return gif
            after = request.query.get("after") or self.retry_after_date
            return web.Response(status=429, headers={"Retry-After": after})
        if kind == "bad":
            return web.Response(status=400, text="bad request")
        if kind == "unimplemented":
            return web.Response(status=501)
        if kind == "slow":
            await asyncio.sleep(float(request.query["seconds"]))
            return gif
        if kind == "gated":
            await self._gate.wait()
            return gif
        if kind == "redirect":  # a captive portal: to a login page that answers 200
            raise web.HTTPFound(f"/login?next={request.path_qs}")
        if kind == "loop":  # a redirect to the request itself
            raise web.HTTPFound(request.path_qs)
        if kind == "login":
            return web.Response(text="<html>please log in</html>", content_type="text/html")
        if kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return gif
        return web.Response(status=404)
