"""The live progress display on a terminal: a bar, the percent, the rate and the time left.

When the command's stderr is a terminal and the log format is text, its progress lines
(the log records of event ``progress``, :class:`beaconflow.delivery.sender.ProgressLog`)
update one live line drawn with ``rich`` instead of scrolling; every other line (warnings,
errors) is printed above it. Anywhere else (cron, CI, a pipe, ``--log-format json``) the
progress lines stay plain lines. Try it in a terminal::

    beaconflow --sandbox --input sample_data/events.jsonl --progress-interval 0.5
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from beaconflow.model.duration import format_duration


def wanted(stream: TextIO, log_format: str) -> bool:
    """Whether ``stream`` gets the live display: a terminal, and the text format."""
    try:
        return log_format == "text" and stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


class LiveProgress(logging.Handler):
    """A logging handler: progress records move a live bar, others are printed above it.

    The display starts with the first progress record and ends with :meth:`close` (the
    last state stays on the screen). Its bar is the run's when a chunked run says how many
    events it has (``events_done`` of ``events_total``), else the messages built so far
    (``done`` of ``total``).
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._console = Console(file=stream, highlight=False, markup=False, emoji=False)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[detail]}"),
            console=self._console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = getattr(record, "fields", None)
            if getattr(record, "event", None) == "progress" and isinstance(fields, Mapping):
                self._update(fields)
            else:
                self._console.print(self.format(record), soft_wrap=True)
        except Exception:  # a display problem must not stop the run
            self.handleError(record)

    def print_line(self, text: str) -> None:
        """Print a line another process wrote (relayed): above the display, as it is."""
        self._console.print(text, soft_wrap=True, markup=False, highlight=False)

    def _update(self, fields: Mapping[str, object]) -> None:
        done, total, what = _bar(fields)
        detail = describe(fields)
        with self._guard:
            if self._task is None:
                self._progress.start()
                self._task = self._progress.add_task(what, total=total, detail=detail)
            self._progress.update(
                self._task, completed=done, total=total, description=what, detail=detail
            )

    def close(self) -> None:
        with self._guard:
            if self._task is not None:
                self._progress.refresh()
                self._progress.stop()
                self._task = None
        super().close()


def _bar(fields: Mapping[str, object]) -> tuple[float, float | None, str]:
    """What the bar measures: the run's events when known, else the messages built so far."""
    events_total = fields.get("events_total")
    if isinstance(events_total, int) and events_total > 0:
        done = fields.get("events_done")
        return float(done if isinstance(done, int | float) else 0), float(events_total), "events"
    total = fields.get("total")
    if isinstance(total, int) and total > 0:
        done = fields.get("done")
        return float(done if isinstance(done, int | float) else 0), float(total), "messages"
    return 0.0, None, "sending"


def describe(fields: Mapping[str, object]) -> str:
    """The text beside the bar: ``12,000 sent, 640/s, 3 failed, ETA 20s``, and what is down."""
    parts = [f"{_int(fields.get('sent')):,} sent", f"{_float(fields.get('rate')):.0f}/s"]
    for key in ("retries", "failed"):
        if _int(fields.get(key)):
            parts.append(f"{_int(fields.get(key)):,} {key}")
    total = fields.get("total")
    if isinstance(total, int) and fields.get("events_total"):
        parts.append(f"{_int(fields.get('done')):,} of {total:,} messages built so far")
    eta = fields.get("run_eta_seconds", fields.get("eta_seconds"))
    if isinstance(eta, int | float):
        parts.append(f"ETA {format_duration(eta)}")
    if fields.get("chunks"):
        parts.append(f"chunk {fields.get('chunk')} of {fields.get('chunks')}")
    down = fields.get("down")
    if isinstance(down, list) and down:
        parts.append("down: " + ", ".join(str(d) for d in down))
    left = fields.get("deadline_seconds")
    if isinstance(left, int | float):
        parts.append(f"deadline in {format_duration(left)}" if left > 0 else "deadline passed")
    return ", ".join(parts)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
