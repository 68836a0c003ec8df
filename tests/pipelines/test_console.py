"""The command's lines (``beaconflow.pipelines.console``) on a stream that is full: /dev/full.

The command's subcommands on a full stdout are in tests/e2e/test_paths_named.py.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO

import pytest

from beaconflow.pipelines.console import say, say_all


@pytest.fixture
def full() -> Iterator[IO[str]]:
    stream = open("/dev/full", "w")  # noqa: SIM115 - its close fails too, and is let go
    yield stream
    with contextlib.suppress(OSError):
        stream.close()  # what the failed lines left in its buffer fails once more


def test_a_full_stream_is_let_go_and_its_error_returned(
    full: IO[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdout", full)
    failure = say("a line")
    assert failure is not None and failure.strerror == "No space left on device"
    assert sys.stdout is not full, "let go: the exit flush would fail on it again"
    assert say("another line") is None


def test_say_all_stops_at_a_full_stdout_and_says_so_on_stderr(
    full: IO[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", full)
    printed: list[str] = []

    def lines() -> Iterator[str]:
        for line in ("first", "second"):
            printed.append(line)
            yield line

    assert say_all(lines()) == 2
    assert printed == ["first"], "nothing more is produced for a stream that is gone"
    error = capsys.readouterr().err
    assert error.startswith("beaconflow: error: standard output not writable: ")
    assert error.endswith(": No space left on device\n")


def test_say_all_prints_every_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert say_all(["a", "b"]) == 0
    assert capsys.readouterr().out == "a\nb\n"
