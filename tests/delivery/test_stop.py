"""The run's stop flag (``beaconflow.delivery.stop``): the first reason wins, each run has its own.

Run with ``.venv/bin/python -m pytest tests/delivery/test_stop.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from beaconflow.delivery.stop import (
    RunStop,
    clear_interrupt,
    early_signal,
    end_early_signals,
    end_with_parent,
    forget_run,
    mark_over,
    note_early_signals,
    run_over,
    run_stop,
    signals_held,
)
from tests.conftest import assert_group_ends, children_of, needs_fork, run_signalled_at_birth


def test_the_first_reason_wins_and_every_listener_hears_it() -> None:
    stop = RunStop()
    heard: list[str] = []
    stop.subscribe(heard.append)
    assert stop.reason is None
    assert stop.trip("ledger not writable: /l: No space left on device")
    assert not stop.trip("a later reason")
    assert stop.reason == heard[0] == "ledger not writable: /l: No space left on device"
    late: list[str] = []
    stop.subscribe(late.append)  # subscribing after the trip hears it at once
    assert late == heard and len(heard) == 1


def test_an_unsubscribed_listener_hears_nothing() -> None:
    stop = RunStop()
    heard: list[str] = []
    stop.subscribe(heard.append)
    stop.unsubscribe(heard.append)
    stop.unsubscribe(heard.append)  # twice is harmless
    stop.trip("x")
    assert heard == []


def test_runs_have_their_own_flags() -> None:
    first, second = run_stop("run-a"), run_stop("run-b")
    assert first is run_stop("run-a") and first is not second
    first.trip("stop a")
    assert second.reason is None
    forget_run("run-a")
    forget_run("run-b")
    assert run_stop("run-a").reason is None
    forget_run("run-a")


def test_a_destination_down_is_told_once_to_every_listener_and_the_run_goes_on() -> None:
    stop = RunStop()
    heard: list[tuple[str, str]] = []
    stop.subscribe_down(lambda d, r: heard.append((d, r)))
    assert stop.destination_down("kontagent", "destination down: kontagent (...)")
    assert not stop.destination_down("kontagent", "a later reason")
    assert stop.reason is None, "the run itself is not stopped"
    assert stop.down == {"kontagent": "destination down: kontagent (...)"}
    late: list[tuple[str, str]] = []
    stop.subscribe_down(lambda d, r: late.append((d, r)))  # a sender opened later hears it
    assert heard == late == [("kontagent", "destination down: kontagent (...)")]
    stop.destination_down("kissmetrics", "destination down: kissmetrics (...)")
    assert [d for d, _ in heard] == ["kontagent", "kissmetrics"]


def test_an_unsubscribed_down_listener_hears_nothing() -> None:
    stop = RunStop()
    heard: list[str] = []

    def listener(destination: str, reason: str) -> None:
        heard.append(destination)

    stop.subscribe_down(listener)
    stop.unsubscribe_down(listener)
    stop.unsubscribe_down(listener)
    stop.destination_down("kontagent", "x")
    assert heard == []


def test_a_later_different_reason_is_kept_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """A dead letter that fails after the ledger on the same full disk is a problem of its own."""
    stop = RunStop()
    heard: list[str] = []
    stop.subscribe(heard.append)
    assert not stop.reasons
    assert stop.trip("ledger not writable: /l: No space left on device")
    for _ in range(3):  # every bundle of the dead letter fails
        assert not stop.trip("dead letter not writable: /d: No space left on device")
    assert not stop.trip("ledger not writable: /l: No space left on device")
    assert stop.reasons == (
        "ledger not writable: /l: No space left on device",
        "dead letter not writable: /d: No space left on device",
    )
    assert heard == ["ledger not writable: /l: No space left on device"]  # listeners: once
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "stopping: ledger not writable: /l: No space left on device; no new request starts",
        "dead letter not writable: /d: No space left on device",
    ]


@needs_fork
def test_a_child_started_with_the_signals_held_drops_a_signal_sent_at_its_birth() -> None:
    done = run_signalled_at_birth(
        """
        import contextlib
        from beaconflow.delivery.stop import ignore_stop_signals, signals_held

        def child(held):
            with signals_held() if held else contextlib.nullcontext():
                pid = os.fork()
                if pid == 0:
                    ignore_stop_signals()
                    os.kill(os.getpid(), signal.SIGTERM)  # and later ones: ignored too
                    os._exit(0)
            return os.waitpid(pid, 0)[1]

        print(child(held=True))
        os.kill(os.getpid(), signal.SIGTERM)  # the parent's own handler still runs
        print(child(held=False))  # the control: without it, the child runs the parent's
        """
    )
    assert done.stdout.split() == ["0", "0"], done.stderr
    assert done.stderr.splitlines() == ["handled in the parent", "handled in a child"]


def test_an_executed_child_survives_a_signal_sent_before_it_could_ignore_it() -> None:
    code = (
        "import sys; from beaconflow.delivery.stop import ignore_stop_signals; "
        "sys.stdin.read(1); ignore_stop_signals(); print('alive')"
    )

    def started(held: bool) -> subprocess.Popen[str]:
        with signals_held() if held else contextlib.nullcontext():
            return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)  # fmt: skip

    for held, outcome in ((True, (0, "alive\n")), (False, (-signal.SIGTERM, ""))):
        child = started(held)
        child.send_signal(signal.SIGTERM)  # while it waits, before it ignores SIGTERM
        out, _ = child.communicate("x", timeout=60)
        assert (child.returncode, out) == outcome, f"held: {held}"


@needs_fork
def test_a_forked_child_ends_with_its_parent_killed_outright() -> None:
    script = textwrap.dedent(
        """
        import os, sys, time
        from beaconflow.delivery.stop import end_with_parent

        parent = os.getpid()
        if os.fork() == 0:
            end_with_parent(parent)
            print(os.getpid(), flush=True)
            time.sleep(300)
            os._exit(0)
        time.sleep(300)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert child in children_of(parent.pid)
    parent.kill()  # as the OOM killer does: the child is not told
    parent.wait(timeout=30)
    assert_group_ends(parent.pid, 15)


@needs_fork
def test_a_child_whose_parent_is_gone_already_exits_at_once() -> None:
    pid = os.fork()
    if pid == 0:
        end_with_parent(os.getppid() + 1_000_000)  # not its parent: "gone" before it looked
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 1 << 8  # exit status 1


def test_a_signal_in_the_command_s_start_up_is_noted_and_nothing_is_raised() -> None:
    before = signal.getsignal(signal.SIGTERM)
    assert note_early_signals()
    try:
        assert not note_early_signals(), "noted already (by the entry point)"
        assert early_signal() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert early_signal() == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # a second: the command ends as start-up ends
        assert early_signal() == signal.SIGTERM
    finally:
        assert end_early_signals() == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before, "the handlers it replaced are back"
    assert end_early_signals() == signal.SIGTERM, "again: nothing more to put back"


def test_the_run_is_over_once_marked_until_the_next_run() -> None:
    clear_interrupt()
    assert not run_over()
    mark_over()
    assert run_over()
    clear_interrupt()
    assert not run_over()


def test_signals_in_start_up_are_let_go_once_the_command_has_its_status() -> None:
    assert note_early_signals()
    try:
        mark_over()  # the run ended (its status decided): the handler is back, for its exit
        os.kill(os.getpid(), signal.SIGTERM)
        assert early_signal() is None
    finally:
        end_early_signals()
    assert note_early_signals(), "a new command notes them again"
    try:
        assert not run_over() and early_signal() is None
        os.kill(os.getpid(), signal.SIGINT)
        assert early_signal() == signal.SIGINT
    finally:
        end_early_signals()


def test_a_keyboard_interrupt_caught_out_of_an_exec_keeps_the_command_s_status() -> None:
    """Without forget_caught_interrupt, CPython 3.11 kills the process with SIGINT at exit."""

    def status(forget: bool) -> int:
        script = textwrap.dedent(
            f"""
            import os, signal
            from beaconflow.delivery.stop import forget_caught_interrupt

            try:
                exec("os.kill(os.getpid(), signal.SIGINT); x = [n for n in range(9)]")
            except KeyboardInterrupt:
                if {forget}:
                    forget_caught_interrupt()
            """
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
        return done.returncode

    assert status(forget=True) == 0
    if sys.version_info[:2] == (3, 11):  # the control: the interpreter's own behaviour
        assert status(forget=False) == -signal.SIGINT
