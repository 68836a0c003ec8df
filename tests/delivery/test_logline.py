"""The stderr line formats (beaconflow.delivery.logline): text, and one JSON object a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from beaconflow.delivery.logline import (
    FORMAT_VARIABLE,
    JsonFormatter,
    TextFormatter,
    adopt,
    current_format,
    install,
    json_line,
)
from beaconflow.delivery.redact import Redactor

SECRET = "kontagent-secret-for-tests"
FIXED = ("time", "level", "event", "message")


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """The root logger's handlers and level, restored after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def record(
    message: str, *args: object, level: int = logging.INFO, **extra: object
) -> logging.LogRecord:
    made = logging.LogRecord("beaconflow.send", level, __file__, 1, message, args, None)
    made.created = 1_764_514_716.123  # 2025-11-30T14:58:36.123Z
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_a_json_line_has_the_fixed_fields_first_then_the_numbers() -> None:
    line = json_line("info", "progress", "beaconflow: sent 3", {"sent": 3, "event": "other"},
                     at=1_764_514_716.123)  # fmt: skip
    data = json.loads(line)
    assert list(data)[:4] == list(FIXED)
    assert data == {
        "time": "2025-11-30T14:58:36.123Z",
        "level": "info",
        "event": "progress",  # a field never replaces a fixed one
        "message": "sent 3",  # the text prefix is the text format's, not the message's
        "sent": 3,
    }


def test_the_json_formatter_takes_the_event_and_fields_and_redacts_the_message() -> None:
    formatter = JsonFormatter(Redactor.of([SECRET]))
    progress = record("sent %d (%.1f/s)", 3, 1.5, event="progress", fields={"sent": 3})
    data = json.loads(formatter.format(progress))
    assert data["event"] == "progress" and data["sent"] == 3
    assert data["message"] == "sent 3 (1.5/s)"
    assert datetime.fromisoformat(data["time"]).utcoffset() is not None
    leak = json.loads(formatter.format(record(f"GET /api/v1/{SECRET}/evt/", level=logging.ERROR)))
    assert SECRET not in json.dumps(leak)
    assert (leak["level"], leak["event"]) == ("error", "error")  # no event: the level's name
    assert json.loads(formatter.format(record("x", level=logging.WARNING)))["event"] == "warning"


def test_the_text_formatter_is_the_prefixed_line_redacted() -> None:
    text = TextFormatter(Redactor.of([SECRET])).format(record(f"key {SECRET}"))
    assert text == "beaconflow: key ***"


def test_install_replaces_the_root_handlers_and_reads_the_environment(
    root_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FORMAT_VARIABLE, "json")
    assert current_format() == "json"
    stream = io.StringIO()
    install(stream=stream, secrets=[SECRET])
    logging.getLogger("beaconflow.test").warning("a warning with %s", SECRET)
    (line,) = stream.getvalue().splitlines()
    data = json.loads(line)
    assert (data["level"], data["event"], data["message"]) == (
        "warning",
        "warning",
        "a warning with ***",
    )
    monkeypatch.setenv(FORMAT_VARIABLE, "xml")
    assert current_format() == "text"  # an unknown value: the default


def test_a_worker_adopts_the_commands_format_on_its_stream_handlers_only(
    root_handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    stream = io.StringIO()
    worker_stream = logging.StreamHandler(stream)  # as basicConfig leaves it in a worker
    other = logging.NullHandler()  # as Beam's handler sending records to the runner
    root.handlers[:] = [worker_stream, other]
    monkeypatch.delenv(FORMAT_VARIABLE, raising=False)
    adopt()
    assert worker_stream.formatter is None  # not started by the command: left alone
    monkeypatch.setenv(FORMAT_VARIABLE, "json")
    adopt([SECRET])
    assert isinstance(worker_stream.formatter, JsonFormatter) and other.formatter is None
    logging.getLogger("beaconflow.test").warning("done %s", SECRET)
    assert json.loads(stream.getvalue())["message"] == "done ***"
    mine = worker_stream.formatter
    adopt()
    assert worker_stream.formatter is mine  # the command's own process: unchanged
