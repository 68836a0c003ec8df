"""Stopping a run early, on purpose: one flag per run that every sender of a process obeys.

Some failures make going on worse than stopping: a ledger that cannot be written (every
further delivery would be sent again by the next run) or a dead letter that cannot be
written (every further failure would be lost), or a signal (Ctrl-C, SIGTERM:
:func:`interrupt`). Whoever meets such a failure calls
:meth:`RunStop.trip` with a reason; from then on no new request starts, what is in flight
finishes, and every message not yet sent ends in the dead letter as "not attempted" (so a
replay, or the same command with the same ``--ledger``, finishes the job). The run then
reports ``"stopped": <reason>`` and exits 4.

A :class:`RunStop` lives in a process-wide registry keyed by the run's id, because Beam
DoFns are pickled and unpickled: each carries the id and looks its run's stop up where it
runs. Senders subscribe to it. The flag is per process: on a runner with several worker
processes, each worker stops when it meets the failure itself (a full or read-only disk is
met by all of them). :meth:`RunStop.note_sending` records that a request was handed to a
sender in this process, so that the command never reports "nothing was sent" (exit 2)
after a run that may have sent something.

One destination can stop while the run goes on for the other: a sender whose circuit
breaker (:mod:`beaconflow.delivery.breaker`) declares it down calls
:meth:`RunStop.destination_down`, and every sender of the process that subscribed with
:meth:`RunStop.subscribe_down` sends no more to it. The run then reports that reason in
``stopped`` too and exits 4, once the other destination is done.

The processes a run starts (sender, parse and spill processes) ignore Ctrl-C and SIGTERM: the
run's own process handles both, and a group's signal reaches them too. They are started
under :func:`signals_held` and call :func:`ignore_stop_signals` first, so that a signal
sent as one is born waits until it is ignored, instead of running the parent's handler in
the child or killing it before it could ignore it. Forked ones also call
:func:`end_with_parent`: a run killed outright (SIGKILL, the OOM killer) leaves none behind
to go on reading, writing its scratch files and holding its work directory's lock.

No Beam, no HTTP::

    python -m pytest tests/delivery/test_stop.py
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("beaconflow")

#: Linux's prctl option: the signal a process gets when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1

#: The signals that stop a run gracefully, handled by the run's own process only.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})

#: The stop reason of a run's ``--deadline``: what the report's ``stopped`` says, and the
#: dead letter after "not attempted: ". Senders judge the deadline themselves
#: (:attr:`beaconflow.delivery.sender.SenderConfig.deadline`), each on its own clock.
DEADLINE = "deadline"


class RunStop:
    """The stop flag of one run in this process; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._later: list[str] = []
        self._listeners: list[Callable[[str], None]] = []
        self._down: dict[str, str] = {}
        self._down_listeners: list[Callable[[str, str], None]] = []
        self._sending = False

    @property
    def reason(self) -> str | None:
        """Why the run stopped, or None while it goes on."""
        return self._reason

    @property
    def down(self) -> dict[str, str]:
        """The destinations declared down so far, each with its reason (a copy)."""
        with self._lock:
            return dict(self._down)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every distinct reason the run was stopped for, the first first (empty: going on).

        A second output that fails after the first (the dead letter after the ledger, on
        the same full disk) is a problem of its own the report must name.
        """
        with self._lock:
            first = () if self._reason is None else (self._reason,)
            return (*first, *self._later)

    @property
    def sending_began(self) -> bool:
        """Whether a request was handed to a sender of this process during the run."""
        return self._sending

    def note_sending(self) -> None:
        """Record that a request was handed to a sender (cheap: called per batch)."""
        self._sending = True

    def trip(self, reason: str) -> bool:
        """Stop the run for ``reason``; True when this call stopped it (the first reason wins).

        Every subscriber is called with the reason, outside the lock. A later, different
        reason is kept in :attr:`reasons` and said once.
        """
        with self._lock:
            if self._reason is not None:
                if reason == self._reason or reason in self._later:
                    return False
                self._later.append(reason)
                listeners = None
            else:
                self._reason = reason
                listeners = list(self._listeners)
        if listeners is None:
            log.error("%s", reason)
            return False
        log.error("stopping: %s; no new request starts", reason)
        for listener in listeners:
            listener(reason)
        return True

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(reason)`` when the run stops (at once when it has stopped already)."""
        with self._lock:
            reason = self._reason
            if reason is None:
                self._listeners.append(listener)
                return
        listener(reason)

    def unsubscribe(self, listener: Callable[[str], None]) -> None:
        """Stop calling ``listener`` (a sender that closes)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def destination_down(self, destination: str, reason: str) -> bool:
        """Send no more to ``destination`` for ``reason``; the run goes on for the others.

        True when this call declared it (the first reason wins). Every down subscriber is
        called with the destination and the reason, outside the lock.
        """
        with self._lock:
            if destination in self._down:
                return False
            self._down[destination] = reason
            listeners = list(self._down_listeners)
        log.warning(
            "%s: no more requests go to it, its messages not sent go to the dead letter as not "
            "attempted, and the run goes on for the others",
            reason,
        )
        for listener in listeners:
            listener(destination, reason)
        return True

    def subscribe_down(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(destination, reason)`` for each destination declared down.

        Those declared already are passed at once.
        """
        with self._lock:
            self._down_listeners.append(listener)
            down = list(self._down.items())
        for destination, reason in down:
            listener(destination, reason)

    def unsubscribe_down(self, listener: Callable[[str, str], None]) -> None:
        """Stop calling ``listener`` (a sender that closes)."""
        with self._lock:
            if listener in self._down_listeners:
                self._down_listeners.remove(listener)


_runs: dict[str, RunStop] = {}
_runs_lock = threading.Lock()
#: The signal that interrupted the runs of this process (SIGINT, SIGTERM), or None.
_interrupted: int | None = None


def _interrupt_reason(signum: int) -> str:
    return f"interrupted by {signal.Signals(signum).name}"


def run_stop(run_id: str) -> RunStop:
    """The stop flag of the run ``run_id`` in this process (made on first use).

    A run whose flag is made after an interrupt is stopped already.
    """
    with _runs_lock:
        stop = _runs.get(run_id)
        if stop is None:
            stop = _runs[run_id] = RunStop()
            if _interrupted is not None:
                stop.trip(_interrupt_reason(_interrupted))
        return stop


def interrupt(signum: int) -> None:
    """Stop every run of this process because of a signal (Ctrl-C, SIGTERM).

    Each run's stop is tripped with a reason naming the signal; :func:`interrupted_by`
    names it too.

    Safe from a signal handler: the stops are tripped on a thread of their own (a handler
    runs between two bytecodes of the main thread, which may hold a lock a listener needs).
    """
    global _interrupted
    if _interrupted is not None:
        return
    _interrupted = signum
    with _runs_lock:
        stops = list(_runs.values())
    reason = _interrupt_reason(signum)

    def trip() -> None:
        for stop in stops:
            stop.trip(reason)

    threading.Thread(target=trip, name="beaconflow-interrupt", daemon=True).start()


def interrupted_by() -> int | None:
    """The signal that interrupted this process's runs, or None."""
    return _interrupted


def clear_interrupt() -> None:
    """Forget an earlier interrupt (a new run of the command in the same process)."""
    global _interrupted, _over
    _interrupted = None
    _over = False


#: Whether the run's outcome is decided (:func:`mark_over`): a signal can stop nothing now.
_over = False


def mark_over() -> None:
    """The run's exit status is decided: a signal from now on changes nothing.

    The command's handler then says so instead of "stopping" (the run writes its report,
    prints its summary and exits with that status).
    """
    global _over
    _over = True


def run_over() -> bool:
    """Whether :func:`mark_over` was called since the last :func:`clear_interrupt`."""
    return _over


#: The first signal met during the command's start-up (:func:`note_early_signals`).
_early: int | None = None
#: The handlers :func:`note_early_signals` replaced, until :func:`end_early_signals`.
_before_early: dict[int, Any] | None = None
#: The stop signals ignored when the command started (:func:`ignored_at_start`).
_ignored: frozenset[int] = frozenset()


def note_early_signals() -> bool:
    """From the command's first instant until the run handles them: note Ctrl-C and SIGTERM.

    The command starts slowly (Beam's import, about a second). A signal met then is noted,
    and the command exits 130 or 143 at the end of its start-up, without starting the run
    (:func:`early_signal`); a second one changes nothing. Before, Ctrl-C printed a traceback
    from the middle of an import, and SIGTERM killed the command without a word. No
    KeyboardInterrupt is raised: CPython (3.11) turns one raised inside the ``exec`` of a
    string, as dataclasses do on import, into the process's death by SIGINT at exit, even
    when it was caught. False when they are noted already (the entry point did it before
    importing the command).
    """
    global _early, _before_early, _over, _ignored
    if _before_early is not None:
        return False
    _over = False  # a new command

    def note(signum: int, frame: object) -> None:
        global _early
        if _early is None and not _over:  # once the status is decided, it stands
            _early = signum

    _early = None
    # a signal ignored from the start (a background job of a script: `cmd &`) stays ignored
    _ignored = frozenset(s for s in STOP_SIGNALS if signal.getsignal(s) == signal.SIG_IGN)
    _before_early = {s: signal.signal(s, note) for s in STOP_SIGNALS if s not in _ignored}
    return True


def ignored_at_start() -> frozenset[int]:
    """The stop signals the command's process was started with ignored: none handles them."""
    return _ignored


def early_signal() -> int | None:
    """The signal met during the command's start-up, or None."""
    return _early


def end_early_signals() -> int | None:
    """Put back the handlers :func:`note_early_signals` replaced; the signal it met, or None.

    A signal that comes after this goes to those handlers. Calling it again does nothing.
    """
    global _before_early
    if _before_early is not None:
        for signum, handler in _before_early.items():
            signal.signal(signum, handler)
        _before_early = None
    return _early


def forget_run(run_id: str) -> None:
    """Drop the run's flag once the run is over (the driver calls this)."""
    with _runs_lock:
        _runs.pop(run_id, None)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM in this thread while it starts processes that ignore them.

    A process group's signal (systemd, Kubernetes, Airflow) reaches a child as soon as it
    exists. A forked child runs its parent's Python handler until it sets its own, even in
    the middle of the fork's own bookkeeping (it then breaks :mod:`threading`'s, and says so
    with a traceback); an executed one dies of it. A child started in this block inherits
    the signals held, and :func:`ignore_stop_signals` drops them. This process gets its own
    copy of such a signal when the block ends (or on another thread at once).
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to hold
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_stop_signals() -> None:
    """In a child process of a run: ignore Ctrl-C and SIGTERM from now on.

    A copy held since the child was started (:func:`signals_held`) is dropped unhandled.
    The run's own process handles the signals: its first stops the run gracefully, and the
    child finishes what its parent asks; its second ends the run, and its children with it.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def end_with_parent(parent: int) -> None:
    """In a forked child of ``parent``: be killed as soon as the thread that forked it ends.

    Linux's ``PR_SET_PDEATHSIG`` (elsewhere nothing is set: the child's own checks of
    :func:`os.getppid` remain). A parent gone before it was set ends the child at once.
    The thread that forks must outlive the child (it waits for its children to end).
    """
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the getppid checks remain
            pass
    if os.getppid() != parent:
        os._exit(1)


def forget_caught_interrupt() -> None:
    """Undo CPython's note of a KeyboardInterrupt the command has caught and dealt with.

    CPython 3.11 notes a KeyboardInterrupt that leaves the ``exec`` or ``eval`` of a string
    (dataclasses and namedtuples make their methods so) as never caught, even when an outer
    ``except`` catches it, and at exit kills its own process with SIGINT: the command's
    status (143 after a second SIGTERM) became -2 (130). Tried::

        try:
            exec("import os, signal; os.kill(os.getpid(), signal.SIGINT)")
        except KeyboardInterrupt:
            pass  # the process still dies of SIGINT at exit

    The note is the interpreter's ``_Py_UnhandledKeyboardInterrupt``; where it cannot be
    reached (another Python), nothing is done.
    """
    try:
        flag = ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt")
    except (ValueError, AttributeError, OSError):
        return
    flag.value = 0
