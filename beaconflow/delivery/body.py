"""What a sender keeps of an answer's body: 64 KiB read at most, a failure's reason quoted.

A tracking answer is a 43-byte GIF, and the body of a failure is the service's explanation
(``{"error": "invalid parameter s"}``, an nginx error page). Neither the bulk sender nor the
small client reads more of a body than :data:`READ_LIMIT` bytes: a longer one is not read
further and its connection is closed instead of being kept alive, so a 300 MB answer costs
neither memory nor time (a 2xx is still delivered). A shorter body is read whole, which keeps
its connection reusable.

A failure's reason quotes the start of its body (:func:`reason_text`): decoded leniently,
secrets masked by the run's :class:`~beaconflow.delivery.redact.Redactor` (a service may echo
the request's URL and key), on one line, at most :data:`SHOWN_CHARS` characters, as in
``HTTP 400: {"error":"invalid parameter s"}``. No network here: tested with::

    python -m pytest tests/delivery/test_body.py
"""

from __future__ import annotations

import codecs
import re
from typing import TYPE_CHECKING, NamedTuple

from beaconflow.delivery.redact import Redactor

if TYPE_CHECKING:  # the client reads with requests: only the bulk sender needs aiohttp
    import aiohttp

#: Bytes of a body read at most, whatever the status: any tracking answer or error page
#: fits, and is read whole (its connection is reused); the rest of a longer one is never
#: read (its connection is closed).
READ_LIMIT = 64 * 1024
#: Characters of a failure's body a reason quotes at most (an ellipsis marks a longer one).
SHOWN_CHARS = 512
#: Bytes of a body decoded for its reason: several times what is shown, so that a page
#: indented with blanks still fills it once they are collapsed.
_DECODED_BYTES = 8 * 1024
#: Characters dropped from the end of a decoded text that was cut: a secret cut in two there
#: would no longer match the redactor (an API key percent-encoded is under 100).
_CUT_MARGIN = 128
#: Blanks, line breaks and control characters: each run of them becomes one space.
_BLANKS = re.compile(r"[\s\x00-\x1f\x7f]+")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)


class Body(NamedTuple):
    """The start of an answer's body: at most :data:`READ_LIMIT` bytes.

    ``cut``: the body was longer, and the rest was not read. ``charset``: its Content-Type's
    charset, or None.
    """

    data: bytes
    cut: bool
    charset: str | None = None


async def read_capped(response: aiohttp.ClientResponse, limit: int = READ_LIMIT) -> Body:
    """Read ``response``'s body up to ``limit`` bytes; close its connection if there is more.

    The rest is never read: closing the connection costs a new one for the next request,
    reading a huge body would cost its size in memory and its transfer time.
    """
    content = response.content
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        # one byte past the limit tells a body of exactly ``limit`` bytes from a longer one
        chunk = await content.read(limit + 1 - size)
        if not chunk:
            return Body(b"".join(chunks), False, response.charset)
        chunks.append(chunk)
        size += len(chunk)
    response.close()
    return Body(b"".join(chunks)[:limit], True, response.charset)


def charset_of(content_type: str | None) -> str | None:
    """The ``charset`` parameter of a Content-Type header, or None."""
    if not content_type:
        return None
    found = _CHARSET.search(content_type)
    return found.group(1) if found else None


def reason_text(body: Body, redact: Redactor) -> str:
    """The start of a failure's body as its reason quotes it: one line, secrets masked.

    Bytes that do not decode in the body's charset (UTF-8 when it names none, or one Python
    does not know) are replaced, blanks and control characters collapse to one space, and
    the text is cut to :data:`SHOWN_CHARS` characters after the secrets are masked (a cut
    never leaves part of a secret). An empty or blank body gives ``""``.
    """
    data = body.data
    cut = body.cut or len(data) > _DECODED_BYTES
    text = data[:_DECODED_BYTES].decode(_codec(body.charset), errors="replace")
    if cut:
        text = text[:-_CUT_MARGIN]
    text = _BLANKS.sub(" ", redact(text)).strip()
    if len(text) > SHOWN_CHARS or (cut and text):
        text = text[: SHOWN_CHARS - 1] + "…"
    return text


def with_body(reason: str, text: str) -> str:
    """``reason`` followed by a quoted body (``HTTP 400: {...}``), or alone without one."""
    return f"{reason}: {text}" if text else reason


def _codec(charset: str | None) -> str:
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass
    return "utf-8"
