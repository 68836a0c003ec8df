"""The stderr relay of the json log format: every line on descriptor 2 leaves as one JSON object.

The lines are written by real child processes that inherit the relayed descriptor, as Beam's
worker processes do, and read from the real stderr of a real process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from beaconflow.delivery.redact import Redactor
from beaconflow.pipelines.stderr_relay import DEFAULT_LEVEL, EVENT, shaped

SECRET = "s3cr3t-kontagent-key-0123456789"


def test_a_json_object_passes_as_it_is() -> None:
    line = '{"time": "2026-11-30T00:00:00.000Z", "level": "info", "event": "done", "message": "x"}'
    assert shaped(line, Redactor()) == line


def test_a_python_log_line_keeps_its_level_and_logger() -> None:
    wrapped = json.loads(shaped("WARNING:root:apitools not found, and ...", Redactor()))
    assert wrapped["level"] == "warning" and wrapped["event"] == EVENT
    assert wrapped["message"] == "apitools not found, and ..." and wrapped["logger"] == "root"
    info = json.loads(shaped("INFO:__main__:Logging handler created.", Redactor()))
    assert (info["level"], info["logger"]) == ("info", "__main__")
    critical = json.loads(shaped("CRITICAL:apache_beam.x:down", Redactor()))
    assert critical["level"] == "error"


def test_any_other_line_is_wrapped_and_redacted() -> None:
    for line in ("E0000 00:00:1700000000 grpc said something", "[1, 2]", "{not json", "  x"):
        wrapped = json.loads(shaped(line, Redactor()))
        assert (wrapped["level"], wrapped["event"], wrapped["message"]) == (
            DEFAULT_LEVEL,
            EVENT,
            line,
        )
    masked = json.loads(shaped(f"Traceback: key={SECRET}", Redactor.of([SECRET])))
    assert SECRET not in json.dumps(masked) and "***" in masked["message"]


RELAYED = textwrap.dedent(
    f"""
    import subprocess, sys
    from beaconflow.delivery.redact import Redactor
    from beaconflow.pipelines.stderr_relay import StderrRelay

    with StderrRelay(Redactor.of([{SECRET!r}])):
        print('{{"time": "t", "level": "info", "event": "mine", "message": "first"}}',
              file=sys.stderr, flush=True)
        print("before the child", file=sys.stderr, flush=True)
        # a child that inherits descriptor 2, as Beam's workers do: plain text, Python's
        # default log format, a partial last line, and a secret
        subprocess.run([sys.executable, "-c", '''
    import logging, sys
    print("plain child line", file=sys.stderr, flush=True)
    logging.warning("apitools not found")
    sys.stderr.write("key {SECRET} leaked")  # no line end: the relay's stop ends the line
    '''], check=True)
    print("outside: not relayed", file=sys.stderr, flush=True)
    """
)


def test_the_lines_of_child_processes_leave_as_json_in_order() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RELAYED], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    assert lines[-1] == "outside: not relayed"  # stop() put the real stderr back
    objects = [json.loads(line) for line in lines[:-1]]
    assert [(o["event"], o["message"]) for o in objects] == [
        ("mine", "first"),
        (EVENT, "before the child"),
        (EVENT, "plain child line"),
        (EVENT, "apitools not found"),
        (EVENT, "key *** leaked"),
    ]
    assert objects[3]["logger"] == "root" and objects[2]["level"] == "warning"
    assert SECRET not in done.stderr
