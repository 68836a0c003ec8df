"""The command's words on stdout and stderr: never a traceback for a stream that is full.

A stream redirected to a full disk (or ``/dev/full``) fails when written or flushed. The
line is then lost, not the run's status: :func:`say` lets the stream go (the interpreter's
flush at exit would fail again and print a traceback) and returns the system's error, so
that a subcommand whose output *is* its result (``beaconflow mapping show``, ``ledger
verify``) can say so on stderr and exit 2::

    beaconflow mapping show segment > /dev/full
    # beaconflow: error: standard output not writable: /dev/full: No space left on device

With ``--log-format json`` (:mod:`beaconflow.delivery.logline`) every stderr line is one
JSON object instead: :func:`say` writes it from the ``event``, ``level`` and ``fields`` given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

from beaconflow.delivery.logline import current_format, json_line
from beaconflow.model.errors import io_problem


def say(
    text: str,
    *,
    error: bool = False,
    event: str = "error",
    level: str = "error",
    fields: Mapping[str, object] | None = None,
) -> OSError | None:
    """Print a line on stdout (stderr with ``error``); the stream's error, if it failed.

    On stderr in the json log format, the line is a JSON object of this ``event`` and
    ``level`` with ``fields``.
    """
    stream = sys.stderr if error else sys.stdout
    if error and current_format() == "json":
        text = json_line(level, event, text, fields)
    try:
        print(text, file=stream)
        stream.flush()
    except OSError as failure:
        # the stream is let go: the interpreter's exit flush would fail on it again
        devnull = open(os.devnull, "w")  # noqa: SIM115 - for the interpreter's exit flush
        if error:
            sys.stderr = devnull
        else:
            sys.stdout = devnull
        return failure
    return None


def say_all(lines: Iterable[str]) -> int:
    """Print every line on stdout: 0, or 2 after saying on stderr that stdout failed."""
    for line in lines:
        failure = say(line)
        if failure is not None:
            problem = io_problem("standard output", _stdout_path(), failure)
            say(f"beaconflow: error: {problem}", error=True)
            return 2
    return 0


def _stdout_path() -> str:
    """What file descriptor 1 is (``/dev/full``, a file), where /proc says; else ``-``."""
    try:
        return os.readlink("/proc/self/fd/1")
    except OSError:
        return "-"
