"""What a failure's reason quotes of an answer's body (``beaconflow.delivery.body``).

:func:`reason_text` is a plain function, tested on bytes; :func:`read_capped` reads from a
real aiohttp answer of the sandbox collector (its scripted ``huge`` body, of a chosen size).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import aiohttp
import pytest

from beaconflow.delivery.body import (
    READ_LIMIT,
    SHOWN_CHARS,
    Body,
    charset_of,
    read_capped,
    reason_text,
    with_body,
)
from beaconflow.delivery.redact import MASK, Redactor
from beaconflow.sandbox.collector import Collector
from tests.conftest import KEY, kissmetrics_url

REDACT = Redactor.of((KEY,))


@pytest.mark.parametrize(
    ("data", "charset", "shown"),
    [
        (b'{"error":"invalid parameter s"}', None, '{"error":"invalid parameter s"}'),
        (
            b"<html>\n  <body>\r\n\t<h1>Bad</h1>\n</body></html>\n",
            None,
            "<html> <body> <h1>Bad</h1> </body></html>",
        ),
        (b"nul\x00and\x07bell\x7fdel", None, "nul and bell del"),
        (b"caf\xc3\xa9", None, "café"),
        (b"caf\xe9", "iso-8859-1", "café"),
        (b"caf\xe9", None, "caf\ufffd"),  # not UTF-8: replaced, never an error
        (b"caf\xc3\xa9", "no-such-charset", "café"),  # UTF-8 then
        (b"", None, ""),
        (b" \n\t ", None, ""),
    ],
)
def test_a_body_is_quoted_on_one_line(data: bytes, charset: str | None, shown: str) -> None:
    assert reason_text(Body(data, False, charset), REDACT) == shown


def test_a_long_body_is_cut_to_the_shown_characters() -> None:
    text = reason_text(Body(b"x" * 5000, False), REDACT)
    assert len(text) == SHOWN_CHARS and text.endswith("…")
    assert reason_text(Body(b"x" * SHOWN_CHARS, False), REDACT) == "x" * SHOWN_CHARS


def test_a_body_that_was_not_read_whole_says_so() -> None:
    text = reason_text(Body(b"ok " * 1000, True), REDACT)
    assert text.endswith("…") and len(text) == SHOWN_CHARS


@pytest.mark.parametrize(
    "echo",
    [
        f'{{"error":"bad","url":"/api/v1/{KEY}/evt/?s=1"}}',  # by its place in a URL
        f'{{"error":"bad","url":"/e?_k={KEY}&_p=bob"}}',
        f'{{"error":"bad key {KEY}"}}',  # anywhere: the key itself
        f'{{"error":"bad key {quote(KEY)}"}}',
    ],
)
def test_a_key_the_body_echoes_is_masked(echo: str) -> None:
    text = reason_text(Body(echo.encode(), False), REDACT)
    assert KEY not in text and MASK in text


@pytest.mark.parametrize("at", range(SHOWN_CHARS - len(KEY), SHOWN_CHARS + 1))
def test_no_part_of_a_key_survives_the_cut(at: int) -> None:
    # a key across the cut would not match the redactor once cut: it is masked before
    text = reason_text(Body(b"x" * at + f"key={KEY}".encode(), False), REDACT)
    assert KEY[:4] not in text


@pytest.mark.parametrize("blanks", [7000, 8 * 1024 - 8, 8 * 1024 - 3])
def test_no_part_of_a_key_survives_the_end_of_what_was_read(blanks: int) -> None:
    # a body not read whole (or not decoded whole) may end inside a key; blanks collapse,
    # so its end would be shown
    data = b" " * blanks + f"key={KEY}".encode() + b" more" * 10
    for cut in range(blanks + 5, blanks + 4 + len(KEY)):
        assert KEY[:4] not in reason_text(Body(data[:cut], True), REDACT)
    assert KEY[:4] not in reason_text(Body(data, False), REDACT)


def test_charset_of_a_content_type() -> None:
    assert charset_of("text/html; charset=ISO-8859-1") == "ISO-8859-1"
    assert charset_of('application/json; charset="utf-8"') == "utf-8"
    assert charset_of("image/gif") is None
    assert charset_of(None) is None


def test_with_body() -> None:
    assert with_body("HTTP 400", '{"error":"x"}') == 'HTTP 400: {"error":"x"}'
    assert with_body("HTTP 400", "") == "HTTP 400"


@pytest.mark.parametrize(
    ("size", "cut"),
    [(0, False), (1000, False), (READ_LIMIT, False), (READ_LIMIT + 1, True), (10**8, True)],
)
def test_read_capped_reads_at_most_the_limit(server: Collector, size: int, cut: bool) -> None:
    url = kissmetrics_url(server, "huge", f"read-{size}", bytes=size)

    async def read() -> Body:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await read_capped(response)

    body = asyncio.run(read())
    assert (len(body.data), body.cut) == (min(size, READ_LIMIT), cut)
    written = server.body_written(f"read-{size}")
    assert written is not None  # the answer ended: written whole, or its connection closed
    if size == 10**8:
        assert written < size // 4


def test_the_scripted_explanation_is_json_that_echoes_the_key(server: Collector) -> None:
    # what the sender tests rely on: the collector's "explain" answer holds the key
    async def read() -> tuple[int, bytes]:
        url = kissmetrics_url(server, "explain", "e-1")
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.read()

    status, data = asyncio.run(read())
    assert status == 400 and json.loads(data)["key"] == KEY
