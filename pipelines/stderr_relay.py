r"""In the json log format, every line on the command's stderr is JSON, beaconflow's or not.

Some lines reach file descriptor 2 before any beaconflow code can shape them: each Beam
worker process of ``--direct_running_mode=multi_processing`` prints two of Beam's own when it
starts (``WARNING:root:apitools not found...``, ``INFO:__main__:Logging handler created.``),
a worker that crashes prints its traceback, and gRPC's C core writes to the descriptor
directly. A log store that indexes JSON lines would get those as unparsable text.

:class:`StderrRelay` puts a pipe on descriptor 2 for the length of the run. Every child
process (Beam's workers, the sender processes) inherits it. A thread reads the pipe line by
line and writes each line to the real stderr: a line that is a JSON object as it is
(beaconflow's own, already shaped and redacted), any other wrapped as one
:func:`~beaconflow.delivery.logline.json_line` of event ``output``, its level read from a
``LEVEL:logger:`` prefix (``warning`` without one), redacted like every line. The lines
leave in the order they reached the pipe.

On a terminal, in the text format, the live progress display (:mod:`beaconflow.pipelines.live`)
uses the relay too: every line another process writes (a sender process's warning, Beam's)
is printed above the display, as the command's own are, instead of through it.

On :meth:`StderrRelay.stop`, descriptor 2 is the real stderr again and the relay waits until
everything written to the pipe before that moment has been written out. A child process still
alive after it keeps its lines relayed while the command's process lives. Try it::

    beaconflow --sandbox --input sample_data/events.jsonl --log-format json \
        --direct_running_mode=multi_processing --direct_num_workers=2 2>&1 >/dev/null | head
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import BinaryIO, Self, TextIO

from beaconflow.delivery.logline import json_line
from beaconflow.delivery.redact import Redactor

#: The event of a line some other code wrote to stderr.
EVENT = "output"
#: The level of such a line when it does not say its own.
DEFAULT_LEVEL = "warning"
# Python's default logging format (logging.basicConfig), which Beam's workers use at start-up.
_PYTHON_LOG_LINE = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL):([\w.<>-]+):(.*)", re.DOTALL)
_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error"}
# How long stop() waits for the lines written before it (a child flooding the pipe).
_DRAIN_SECONDS = 10.0


def shaped(line: str, redact: Redactor) -> str:
    """``line`` as one JSON line: as it is when it is a JSON object, else wrapped."""
    if line.startswith("{"):
        try:
            if isinstance(json.loads(line), dict):
                return line
        except ValueError:
            pass
    match = _PYTHON_LOG_LINE.fullmatch(line)
    if match is None:
        return json_line(DEFAULT_LEVEL, EVENT, redact(line))
    level, logger, text = match.groups()
    return json_line(_LEVELS.get(level, "error"), EVENT, redact(text), {"logger": logger})


class StderrRelay:
    """Descriptor 2 through a pipe whose lines are written out as JSON lines (see the module).

    ``redact`` masks the run's secrets in the lines it wraps (:attr:`redact` may be set once
    the secrets are known). ``sink``: where each line goes instead, as it came (a live
    progress display prints them above itself; :meth:`real_stream` is its way to the
    terminal). A process whose descriptor 2 is closed gets no relay (:meth:`start` does
    nothing).
    """

    def __init__(self, redact: Redactor, sink: Callable[[str], None] | None = None) -> None:
        self.redact = redact
        self.sink = sink
        self._marker = f"beaconflow-relay-{uuid.uuid4().hex}".encode()
        self._drained = threading.Event()
        self._thread: threading.Thread | None = None
        self._real = -1  # the real stderr, duplicated; the thread writes there
        self._write = -1  # the pipe's write end, kept to write the marker

    def start(self) -> None:
        """Put the pipe on descriptor 2 and start relaying."""
        try:
            real = os.dup(2)
        except OSError:
            return  # no stderr at all: nothing to shape
        read, write = os.pipe()
        sys.stderr.flush()
        os.dup2(write, 2)
        self._real, self._write = real, write
        reader = os.fdopen(read, "rb")
        self._thread = threading.Thread(
            target=self._relay, args=(reader,), name="stderr-relay", daemon=True
        )
        self._thread.start()

    def real_stream(self) -> TextIO:
        """A text stream on the real stderr (call after :meth:`start`), for a live display."""
        if self._thread is None:
            return sys.stderr
        return os.fdopen(os.dup(self._real), "w", buffering=1, encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """The real stderr on descriptor 2 again, once what reached the pipe is written out."""
        if self._thread is None:
            return
        with contextlib.suppress(OSError):
            sys.stderr.flush()
        os.dup2(self._real, 2)
        try:
            # a line of its own: whatever was written before it is relayed before it is read
            os.write(self._write, b"\n" + self._marker + b"\n")
        except OSError:
            self._drained.set()
        os.close(self._write)
        self._drained.wait(_DRAIN_SECONDS)
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _relay(self, reader: BinaryIO) -> None:
        """Read the pipe until every writer has closed it; write each line out shaped."""
        with reader:
            for raw in reader:
                line = raw.rstrip(b"\r\n")
                if line == self._marker:
                    self._drained.set()
                    continue
                if not line.strip():
                    continue
                decoded = line.decode("utf-8", "replace")
                sink = self.sink
                if sink is not None:
                    try:
                        sink(self.redact(decoded))
                    except Exception:  # a display problem: the line still gets out
                        self._write_out((decoded + "\n").encode("utf-8"))
                    continue
                self._write_out((shaped(decoded, self.redact) + "\n").encode("utf-8"))
        self._drained.set()
        os.close(self._real)

    def _write_out(self, data: bytes) -> None:
        """Write ``data`` to stderr; a full or closed stream loses the line, not the run."""
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._real, view)
            except InterruptedError:
                continue
            except OSError:
                return
            view = view[written:]
