"""How a line on stderr looks: ``beaconflow: text`` or one JSON object (``--log-format json``).

Every process of a run writes its stderr lines through :func:`install`: the command itself,
its sender processes, Beam's worker processes. The command chooses the format and puts it in
the environment (:data:`FORMAT_VARIABLE`), so that every child process it starts inherits it.

A JSON line has a fixed set of fields, then the numbers of its event::

    {"time": "2026-11-30T14:58:36.123Z", "level": "info", "event": "progress",
     "message": "sent 3232 (632.6/s), ...", "sent": 3232, "rate": 632.6, ...}

``event`` is a stable short name given by the code that logs (``extra={"event": ...,
"fields": {...}}``), else the level's (``info``, ``warning``, ``error``, ``debug``).
``message`` is the human text, redacted like every other line. Try it::

    beaconflow --sandbox --input sample_data/events.jsonl --log-format json 2>&1 >/dev/null | head
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TextIO

from beaconflow.delivery.redact import Redactor

#: The formats ``--log-format`` accepts; the first is the default.
FORMATS = ("text", "json")
#: The variable the command sets for its child processes (sender processes, Beam workers).
FORMAT_VARIABLE = "BEACONFLOW_LOG_FORMAT"
#: What begins every text line.
PREFIX = "beaconflow: "

_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}


def current_format() -> str:
    """The format this process writes its lines in: the variable's, else ``text``."""
    wanted = os.environ.get(FORMAT_VARIABLE, "")
    return wanted if wanted in FORMATS else FORMATS[0]


def level_name(level: int) -> str:
    """``info``, ``warning``, ... for a logging level."""
    return _LEVELS.get(level, logging.getLevelName(level).lower())


def json_line(
    level: str,
    event: str,
    message: str,
    fields: Mapping[str, object] | None = None,
    *,
    at: float | None = None,
) -> str:
    """One JSON line: ``time``, ``level``, ``event``, ``message``, then ``fields``.

    ``time`` is ISO 8601 UTC (``at``: epoch seconds, default now); ``fields`` never replace
    the four fixed ones.
    """
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    data: dict[str, object] = {
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level,
        "event": event,
        "message": message.removeprefix(PREFIX),
    }
    for key, value in (fields or {}).items():
        data.setdefault(key, value)
    return json.dumps(data, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """A log record as one :func:`json_line` (a traceback, if any, joins the message)."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        event = getattr(record, "event", None) or level_name(record.levelno)
        fields = getattr(record, "fields", None)
        return json_line(
            level_name(record.levelno),
            str(event),
            self._redact(text),
            fields if isinstance(fields, Mapping) else None,
            at=record.created,
        )


class TextFormatter(logging.Formatter):
    """``beaconflow: message``, redacted."""

    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__(PREFIX + "%(message)s")
        self._redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


def formatter(log_format: str, secrets: Iterable[str] = ()) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``), masking ``secrets``."""
    redact = Redactor.of(secrets)
    return JsonFormatter(redact) if log_format == "json" else TextFormatter(redact)


def adopt(secrets: Iterable[str] = ()) -> None:
    """Write a worker process's stderr lines in the command's format too.

    For the worker processes the command starts (Beam's, on a runner of several processes).
    Does nothing where the format was not chosen by the command (no :data:`FORMAT_VARIABLE`)
    or where beaconflow's formatter is installed already (the command's own process). The
    worker's stream handlers get the formatter; its other handlers (Beam's, which send the
    records to the runner) are left alone.
    """
    if FORMAT_VARIABLE not in os.environ:
        return
    root = logging.getLogger()
    mine = (JsonFormatter, TextFormatter)
    if any(isinstance(handler.formatter, mine) for handler in root.handlers):
        return
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:
            handler.setFormatter(formatter(current_format(), secrets))


def install(
    log_format: str | None = None,
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
    handler: logging.Handler | None = None,
) -> logging.Handler:
    """Make the root logger write this format (default: :func:`current_format`) to stderr.

    Replaces the root logger's handlers (``handler``: a ready one, such as a live progress
    display, else a stream handler on ``stream``). Returns the handler.
    """
    chosen = current_format() if log_format is None else log_format
    if handler is None:
        handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter(chosen, secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    return handler
