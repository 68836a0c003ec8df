"""The one redaction helper: every log line, error, dead letter and report goes through it.

Kontagent carries its API key in the URL path and a signature (``an_sig``) in the query;
KISSmetrics carries its key in ``_k``; a proxy URL may carry ``user:password@``.
:class:`Redactor` removes those by their position in a URL, whatever their length, and,
as a second line of defence, every literal occurrence of a configured secret of at least
:data:`MIN_LITERAL_LENGTH` characters (raw, percent-encoded and ``+``-encoded) anywhere in a
text. A shorter secret is masked by position only: masked
anywhere, a key such as ``0000`` would also be cut out of ordinary data (a user id
``10000042``).

A redactor works on values, never on encoded text: :meth:`Redactor.value` masks each string
inside a dead-letter entry or a report before it is encoded as JSON, so what it writes is
always valid JSON whatever an error text contains. Data (an input record, a message's
parameters) gets the literal masking only: a page address holding ``/api/v1/`` or ``_k=``
is the user's, and a replay must send it unchanged. A URL position's value is taken to end
at the first character a rendered URL cannot hold there (a quote, a comma, a space, ...),
so a mask never swallows the text around a URL.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

#: What replaces a secret.
MASK = "***"
#: Secrets at least this long are masked wherever they appear; shorter ones only where a URL
#: carries them (the Kontagent path, ``_k``, ``an_sig``), which masks them at any length.
MIN_LITERAL_LENGTH = 8

# What a value in a rendered URL is made of: unreserved characters, percent escapes and the
# few sub-delimiters a quoting function may leave alone. Anything else ends the value.
_URL_VALUE = r"[A-Za-z0-9\-._~%+!$*]"
_KONTAGENT_KEY_IN_PATH = re.compile(r"(/api/v\d+/)(" + _URL_VALUE + r"+)")
_SECRET_QUERY_PARAMS = re.compile(r"([?&;](?:_k|an_sig)=)(" + _URL_VALUE + r"*)")
#: ``scheme://user:password@`` or ``scheme://user@`` at the start of a URL's authority (a
#: proxy's credentials, issue 19): masked to ``scheme://***@``.
URL_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s?#]*@")


@dataclass(frozen=True)
class Redactor:
    """Masks the given secrets wherever they appear, plus key-bearing URL positions."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def of(cls, secrets: Iterable[str | None]) -> Redactor:
        """A redactor for the values among ``secrets`` long enough to mask literally.

        Values shorter than :data:`MIN_LITERAL_LENGTH` are masked by position only.
        """
        values = {value for value in secrets if value and len(value) >= MIN_LITERAL_LENGTH}
        forms: set[str] = set()
        for value in values:
            # as sent in a URL, as a JSON string holds it, as Python's repr() shows it
            forms.update((value, quote(value, safe=""), quote_plus(value, safe="")))
            forms.update((json.dumps(value)[1:-1], repr(value)[1:-1]))
        return cls(tuple(sorted(forms, key=len, reverse=True)))

    def text(self, text: str) -> str:
        """``text`` with URL key positions, URL credentials and every known secret masked."""
        if "@" in text:
            text = URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", text)
        text = _KONTAGENT_KEY_IN_PATH.sub(lambda m: m.group(1) + MASK, text)
        text = _SECRET_QUERY_PARAMS.sub(lambda m: m.group(1) + MASK, text)
        return self.literal(text)

    def literal(self, text: str) -> str:
        """``text`` with every known secret masked, but no URL position.

        For data (an input record, a message's parameters): a page address that happens to
        hold ``/api/v1/`` or ``_k=`` is the user's data, which a replay must send unchanged.
        """
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def __call__(self, text: str) -> str:
        return self.text(text)

    def value(self, value: object, *, data: bool = False) -> object:
        """``value`` with every string inside it (dict values, list items) masked.

        ``data``: the value is data, not a text that may carry a request URL: only known
        secrets are masked (:meth:`literal`). Dict keys are kept. Use it on an entry before
        encoding it, never on the encoded text.
        """
        if isinstance(value, str):
            return self.literal(value) if data else self.text(value)
        if isinstance(value, dict):
            # a key is data too (a KISSmetrics property's name): known secrets only
            return {
                self.literal(key) if isinstance(key, str) else key: self.value(item, data=data)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item, data=data) for item in value]
        return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks registered secrets in records of third-party loggers.

    Libraries we call log full URLs at DEBUG (urllib3: ``"GET /api/v1/<key>/..."``); this
    filter rewrites such records before any handler sees them.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._redactor = Redactor()

    def register(self, secrets: Iterable[str | None]) -> None:
        """Mask these values too, from now on."""
        with self._lock:
            self._secrets.update(value for value in secrets if value)
            self._redactor = Redactor.of(self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = self._redactor(text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


#: Loggers of libraries that put request URLs into their records.
URL_LOGGERS = ("urllib3.connectionpool", "aiohttp.client", "aiohttp.access")

_filter = RedactingFilter()
_installed = False
_install_lock = threading.Lock()


def redact_library_logs(secrets: Iterable[str | None]) -> None:
    """Make sure the URL-logging libraries' records never show these secrets."""
    global _installed
    _filter.register(secrets)
    with _install_lock:
        if not _installed:
            for name in URL_LOGGERS:
                logging.getLogger(name).addFilter(_filter)
            _installed = True
