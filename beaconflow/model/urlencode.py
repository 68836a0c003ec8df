"""Percent-encoding of URL query parts as ``urllib.parse.quote(text, safe="")`` does, faster.

Both services' URLs are rendered with :func:`encode_query`, once per message sent, and
KISSmetrics messages carry many properties whose names (and many values) repeat from message
to message. urllib's ``quote`` encodes the text to UTF-8, then looks each byte up in a
Python-level table; here a text is escaped by ``str.translate`` with a table of code points
(filled as characters come: the always-safe ASCII stays itself, any other character becomes
the ``%XX`` of its UTF-8 bytes, upper-case hex, as urllib writes them), and texts already
escaped are looked up in a bounded cache. Lone surrogates cannot be encoded and raise
``UnicodeEncodeError``, as urllib's ``quote`` does. ``tests/model/test_urlencode.py`` checks
both against urllib on arbitrary text::

    python -m pytest tests/model/test_urlencode.py
"""

from __future__ import annotations

from collections.abc import Iterable

#: What percent-encoding leaves as it is: urllib's always-safe characters, no others.
ALWAYS_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"

#: At most this many characters are kept in the table of escapes (any Unicode text may come;
#: a character beyond it is escaped again each time it comes, correctly).
_TABLE_LIMIT = 1 << 16
#: At most this many texts are kept escaped; the cache starts again empty when full. Names and
#: common values come back at once; ids and times, unique, are what fills it.
_CACHE_LIMIT = 4096
#: Longer texts are escaped each time (a few long values must not fill the memory).
_CACHE_TEXT_LIMIT = 256


class _Escapes(dict[int, str]):
    """``str.translate``'s table: a code point -> the text that stands for it in a URL."""

    def __missing__(self, code: int) -> str:
        # UnicodeEncodeError for a lone surrogate, as urllib's quote raises
        escaped = "".join(f"%{byte:02X}" for byte in chr(code).encode("utf-8"))
        if len(self) < _TABLE_LIMIT:
            self[code] = escaped
        return escaped


_ESCAPES = _Escapes({ord(char): char for char in ALWAYS_SAFE})
_ESCAPED: dict[str, str] = {}


def quote_part(text: str) -> str:
    """``text`` percent-encoded as ``urllib.parse.quote(text, safe="")`` encodes it."""
    escaped = _ESCAPED.get(text)
    if escaped is None:
        escaped = text.translate(_ESCAPES)
        if len(text) <= _CACHE_TEXT_LIMIT:
            if len(_ESCAPED) >= _CACHE_LIMIT:
                _ESCAPED.clear()
            _ESCAPED[text] = escaped
    return escaped


def encode_query(params: Iterable[tuple[str, str]]) -> str:
    """``k=v&...`` with names and values percent-encoded (``,`` as ``%2C``, space as ``%20``)."""
    cached, quote = _ESCAPED.get, quote_part
    # an empty text escapes to itself: falsy, it takes the slow way, which is cheap for it
    return "&".join(
        f"{cached(name) or quote(name)}={cached(value) or quote(value)}" for name, value in params
    )
