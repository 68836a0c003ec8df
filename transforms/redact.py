"""The one redaction helper: every log line, error, dead letter and report goes through it.

Kontagent carries its API key in the URL path and a signature (``an_sig``) in the query;
KISSmetrics carries its key in ``_k``. :class:`Redactor` removes those by their position in
a URL and, as a second line of defence, every literal occurrence of a configured secret
(raw, percent-encoded and ``+``-encoded) anywhere in a text.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

#: What replaces a secret.
MASK = "***"

_KONTAGENT_KEY_IN_PATH = re.compile(r"(/api/v\d+/)([^/?#\s]+)")
_SECRET_QUERY_PARAMS = re.compile(r"([?&](?:_k|an_sig)=)([^&#\s]*)")


@dataclass(frozen=True)
class Redactor:
    """Masks the given secrets wherever they appear, plus key-bearing URL positions."""

    secrets: tuple[str, ...] = ()

    @classmethod
    def of(cls, secrets: Iterable[str | None]) -> Redactor:
        """A redactor for the non-empty values among ``secrets``, longest first."""
        values = {value for value in secrets if value}
        forms: set[str] = set()
        for value in values:
            forms.update((value, quote(value, safe=""), quote_plus(value, safe="")))
        return cls(tuple(sorted(forms, key=len, reverse=True)))

    def text(self, text: str) -> str:
        """``text`` with URL key positions and every known secret masked."""
        text = _KONTAGENT_KEY_IN_PATH.sub(lambda m: m.group(1) + MASK, text)
        text = _SECRET_QUERY_PARAMS.sub(lambda m: m.group(1) + MASK, text)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def __call__(self, text: str) -> str:
        return self.text(text)


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
