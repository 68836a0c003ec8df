"""Progress people can read: a chunked run's run-wide numbers and the live display's text.

The clocks are injected: the numbers are checked, never timed.
"""

from __future__ import annotations

import io
import logging
from datetime import date

from beaconflow.pipelines.chunks import Chunk, _Progress
from beaconflow.pipelines.live import LiveProgress, describe, wanted


def test_a_chunked_runs_progress_says_chunk_events_percent_and_eta() -> None:
    now = [100.0]
    progress = _Progress(total_events=1_000, chunks=4, clock=lambda: now[0])
    progress.start(Chunk(1, date(2025, 6, 2), date(2025, 6, 2), 250))
    progress.events_done = 250  # the first chunk is done
    progress.messages_per_event = 2.0
    now[0] = 150.0  # 50 s in
    text, numbers = progress.note(sent=250)  # half of the second chunk's 500 messages
    # 250 + 125 events in 50 s: 7.5 a second, 625 to go
    assert numbers == {
        "chunk": 2,
        "chunks": 4,
        "events_done": 375,
        "events_total": 1_000,
        "run_percent": 37.5,
        "run_eta_seconds": 83.3,
    }
    assert text == "; chunk 2 of 4, events 375 of ~1,000 (38%), ETA 1m23s"


def test_before_any_pace_is_known_there_is_no_eta() -> None:
    progress = _Progress(total_events=10, chunks=1, clock=lambda: 5.0)
    text, numbers = progress.note(sent=0)
    assert numbers["run_eta_seconds"] is None and "ETA" not in text


def test_the_live_displays_text_from_a_progress_lines_numbers() -> None:
    fields = {"sent": 12_000, "rate": 640.4, "retries": 0, "failed": 3, "done": 11_000,
              "total": 20_000, "percent": 55.0, "eta_seconds": 14.1, "down": ["kontagent"],
              "deadline_seconds": 3600.0}  # fmt: skip
    assert describe(fields) == (
        "12,000 sent, 640/s, 3 failed, ETA 14.1s, down: kontagent, deadline in 1h"
    )
    chunked = {**fields, "chunk": 2, "chunks": 5, "events_total": 9, "run_eta_seconds": 90.0}
    assert describe(chunked) == (
        "12,000 sent, 640/s, 3 failed, 11,000 of 20,000 messages built so far, ETA 1m30s, "
        "chunk 2 of 5, down: kontagent, deadline in 1h"
    )


def test_the_live_display_is_for_a_terminal_in_the_text_format_only() -> None:
    assert not wanted(io.StringIO(), "text")  # a pipe, a file: plain lines
    closed = io.StringIO()
    closed.close()
    assert not wanted(closed, "text")


def test_other_lines_are_printed_as_they_are_when_no_bar_is_drawn() -> None:
    stream = io.StringIO()
    handler = LiveProgress(stream)
    handler.setFormatter(logging.Formatter("beaconflow: %(message)s"))
    handler.emit(logging.LogRecord("beaconflow", logging.WARNING, __file__, 1, "[bold]x[/]",
                                   None, None))  # fmt: skip
    handler.close()
    assert stream.getvalue() == "beaconflow: [bold]x[/]\n"  # no markup read into it
