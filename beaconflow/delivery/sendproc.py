"""Sending from child processes: the bulk sender on cores of its own.

A Python process runs on one core at a time, and in a local run that process also does all of
Beam's work: reading, parsing, building messages, the shuffles. A :class:`SenderPool` moves the
HTTP side out to child processes, each holding a
:class:`~beaconflow.delivery.sender.SendEngine` on its own event loop with its own
connections, so that on a machine with several cores the pipeline builds messages while the
children send them.

Callers send through a :class:`PoolClient`, which satisfies the send step's
:class:`~beaconflow.delivery.sender.Sender` protocol (``submit_many``, ``take_finished``,
``flush``, ``stats``, ``close``) as an in-process BulkSender does, plus ``seal`` for the
ledger; :func:`shared_client` gives every send step of a process a client of one shared
pool. Requests cross to a child in batches over a pipe as ``(tag, destination, kind, url,
ledger key, event day)``; outcomes come back in batches as ``(tag, delivered, status, error,
attempts, stop, ambiguous, ambiguous_resent, reconnects)``. The parent keeps the messages;
a child sees only URLs. In the child each wire tuple rides with its request as the
request's own token, through the engine's public interface, so its outcome finds its tag
again: nothing of the parent's bookkeeping travels inside a message.

- ``concurrency`` and the per-destination rates are divided among the children: together
  they never have more requests in flight, nor send faster, than one BulkSender would.
- With a ledger, each child records its deliveries in a journal of its own as each answer
  comes in, exactly as an in-process sender does, so a kill loses at most the requests in
  flight.
- Secrets reach the children over the pipe, never on a command line or in the environment;
  the children's error texts and library logs are redacted as the parent's are.
- A child exits when its pipe closes, so a killed pipeline leaves no sender behind; it
  ignores Ctrl-C, which its parent handles.
- A child that dies makes the parent's next call raise RuntimeError naming its exit code.
- A child whose ledger journal cannot be written halts its sender and says why in its
  outcomes (never with a traceback); the pool then trips the run's
  :class:`~beaconflow.delivery.stop.RunStop`, which it passes on to every child: no child starts a
  new request, and the rest come back as "not attempted".
- A child whose circuit breaker (:mod:`beaconflow.delivery.breaker`) declares a destination
  down says so; the pool declares it down on the run's stop, which tells every child (and
  every other sender of the process) to send no more to it. Each child also keeps the
  run's deadline on its own clock.
- Each child checks the run's ledger lease before every request (its config's ``lease``): a
  child that finds the run's lock taken over (it woke from a freeze) halts and tells the
  parent (``("stopped", reason)``), which trips the run's stop and so halts the others.

A child runs :func:`child_main` under the same interpreter and ``sys.path`` as its parent; it
imports aiohttp and the sender, not Beam. Tested with::

    python -m pytest tests/delivery/test_sendproc.py
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any, cast

from beaconflow.delivery.ledger import LedgerError, LedgerWriter, ledger_key
from beaconflow.delivery.logline import install
from beaconflow.delivery.ratelimit import Clock
from beaconflow.delivery.redact import Redactor, redact_library_logs
from beaconflow.delivery.retry import classify
from beaconflow.delivery.sender import (
    Delivery,
    ProgressLog,
    RedirectWatch,
    Request,
    SendEngine,
    SenderConfig,
    SenderStats,
)
from beaconflow.delivery.stop import (
    DEADLINE,
    RunStop,
    ignore_stop_signals,
    run_stop,
    signals_held,
)
from beaconflow.model.message import Destination, Message

logger = logging.getLogger("beaconflow.send")

#: Seconds a closing child gets to finish before it is killed.
_EXIT_WAIT = 10.0
#: Requests a child may have outstanding (sent to it, outcome not back), per request it
#: may have in flight: enough that it always has the next ones queued.
_OUTSTANDING_PER_SLOT = 4
#: The command that starts a child: ``-P`` keeps the working directory off its path, so a
#: folder of the user's own that holds a ``beaconflow`` (or ``transforms``) package cannot
#: stand in for ours.
_CHILD = ("-P", "-c", "from beaconflow.delivery.sendproc import child_main; child_main()")

#: One request on the wire: tag, destination, kind, URL, ledger key ("" without a ledger),
#: and the message's event day (None: unknown), which its ledger entry is filed under.
_Wire = tuple[int, str, str, str, str, int | None]
#: One outcome on the wire: tag, delivered, status, error, attempts, stop reason, ambiguous
#: attempts, whether a request went out again after one of them, and free reconnects.
_Outcome = tuple[int, bool, int | None, str | None, int, str | None, int, bool, int]
#: A child's counters on the wire: sent, delivered, retries, failed, outcomes, reconnects.
_Stats = tuple[int, int, int, int, Mapping[str, int], int]


@dataclass(frozen=True)
class _Setup:
    """What a child is told first, over its pipe."""

    config: SenderConfig
    secrets: tuple[str, ...]
    ledger: str | None
    log_level: int


def split_config(config: SenderConfig, processes: int) -> list[SenderConfig]:
    """The configs of the children sharing ``config``: concurrency and rates divided.

    There are ``processes`` children, or fewer when ``concurrency`` is lower (each needs a
    request slot); the children's concurrencies add up to ``concurrency`` exactly. They
    log no progress of their own: the parent logs the sum.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    count = min(processes, config.concurrency)
    base, extra = divmod(config.concurrency, count)
    rates = {d: None if rate is None else rate / count for d, rate in config.rates.items()}
    return [
        replace(config, concurrency=base + (i < extra), rates=rates, progress_interval=math.inf)
        for i in range(count)
    ]


#: A started child waiting for its setup: its process, command pipe, results pipe, and env.
_Spare = tuple[subprocess.Popen[bytes], int, int, dict[str, str]]
_spares: list[_Spare] = []
_spares_lock = threading.Lock()


def _spawn(env: Mapping[str, str]) -> _Spare:
    """A new child process: it imports its libraries, then waits for its setup."""
    command_read, command_write = os.pipe()
    result_read, result_write = os.pipe()
    try:
        with signals_held():  # until the child ignores them (ignore_stop_signals)
            process = subprocess.Popen(
                [sys.executable, *_CHILD], stdin=command_read, stdout=result_write, env=dict(env)
            )
    except BaseException:
        os.close(command_write)
        os.close(result_read)
        raise
    finally:
        os.close(command_read)
        os.close(result_write)
    return process, command_write, result_read, dict(env)


def prestart(count: int) -> None:
    """Start ``count`` sender processes now, for the next pools of this process to take.

    A child spends about 0.4 CPU seconds importing its libraries before it can send. The
    command starts its children as soon as it knows it will send from them, so that they
    import while it plans the run and builds the pipeline (half a second on one core, the
    other idle) instead of while the pipeline parses on every core. A pool takes them in
    place of new ones (when the environment it would give its children is theirs); call
    :func:`discard_spares` when the run is over for those no pool took.
    """
    env = dict(os.environ, PYTHONPATH=_child_path())
    with _spares_lock:
        while len(_spares) < count:
            _spares.append(_spawn(env))


def _take_spare(env: Mapping[str, str]) -> _Spare | None:
    with _spares_lock:
        while _spares:
            spare = _spares.pop(0)
            if spare[3] == env and spare[0].poll() is None:
                return spare
            _discard(spare)
    return None


def discard_spares() -> None:
    """Stop the processes :func:`prestart` started that no pool took."""
    with _spares_lock:
        while _spares:
            _discard(_spares.pop())


def _discard(spare: _Spare) -> None:
    process, command_write, result_read, _ = spare
    os.close(command_write)  # a child that reads the end of its pipe first exits at once
    os.close(result_read)
    try:
        process.wait(_EXIT_WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Child:
    """The parent's end of one child: the process, its two pipes and its counts."""

    def __init__(self, index: int, setup: _Setup, env: Mapping[str, str]) -> None:
        self.index = index
        self.bound = _OUTSTANDING_PER_SLOT * setup.config.concurrency
        self.outstanding = 0
        self.stats: _Stats = (0, 0, 0, 0, {}, 0)
        self.process, command_write, result_read, _ = _take_spare(env) or _spawn(env)
        self.commands = Connection(command_write, readable=False)
        self.results = Connection(result_read, writable=False)
        # one poll object per pipe, made once: Connection.poll and connection.wait make and
        # fill a selector each call, several times per batch of outcomes
        self.pending = select.poll()
        self.pending.register(result_read, select.POLLIN)
        self.send(setup)

    def send(self, command: object) -> None:
        # Connection.send's framing, without a ForkingPickler (and its buffer) per call
        data = pickle.dumps(command, pickle.HIGHEST_PROTOCOL)
        try:
            self.commands.send_bytes(data)
        except OSError:
            raise self.died() from None

    def has_more(self) -> bool:
        """Whether the results pipe has more to read now (or has closed)."""
        return bool(self.pending.poll(0))

    def died(self) -> RuntimeError:
        """The error for a child that is gone: its own last word, else its exit code."""
        try:
            while self.results.poll(0):
                kind, payload, _ = self.results.recv()
                if kind == "fatal":
                    return RuntimeError(f"sender process {self.index}: {payload}")
        except (EOFError, OSError):
            pass
        try:
            code: int | None = self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            how = "stopped answering"
        elif code < 0:
            how = f"was killed (signal {-code})"
        else:
            how = f"exited with code {code}; see its error above"
        return RuntimeError(f"sender process {self.index} {how}")

    def close(self) -> None:
        """Close the command pipe, take the child's last counts and reap it."""
        self.commands.close()
        deadline = time.monotonic() + _EXIT_WAIT
        try:
            while self.results.poll(max(0.0, deadline - time.monotonic())):
                _, _, stats = self.results.recv()
                if stats is not None:
                    self.stats = stats
        except (EOFError, OSError):
            pass  # the child has finished
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("sender process %d did not exit; killing it", self.index)
            self.process.kill()
            self.process.wait()
        self.results.close()


def _child_path() -> str:
    """The children's PYTHONPATH: where this beaconflow was imported from, then ours."""
    import beaconflow

    home = os.path.dirname(os.path.dirname(os.path.abspath(beaconflow.__file__)))
    rest = [p for p in sys.path if p and os.path.abspath(p) != home]
    return os.pathsep.join([home, *rest])


class SenderPool:
    """The sender processes of one process; see the module docstring.

    ``config`` is what one in-process BulkSender would get; ``secrets`` the endpoint secrets.
    ``ledger`` is a ledger directory each child writes its own journal in, and
    ``fingerprints`` the endpoint fingerprints its keys are made with (required with a
    ledger). ``stop`` is the run's stop flag: a child's stop trips it, and its trip halts
    every child. ``clock`` times the progress lines. Callers send through :meth:`client`
    handles; all methods may be called from several threads (one at a time goes on).
    """

    def __init__(
        self,
        config: SenderConfig,
        secrets: tuple[str, ...] = (),
        *,
        processes: int,
        ledger: str | None = None,
        fingerprints: Mapping[str, str] | None = None,
        stop: RunStop | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if ledger is not None and fingerprints is None:
            raise ValueError("a ledger needs the endpoint fingerprints")
        self._config = config
        self._fingerprints = dict(fingerprints or {})
        self._ledger = ledger is not None
        self._clock = clock
        self._lock = threading.RLock()
        self._messages: dict[int, tuple[PoolClient, Message]] = {}
        self._tag = 0
        self._closed = False
        self._progress = ProgressLog(config.progress_interval, clock(), deadline=config.deadline)
        self._deadline_met = False  # a child cut something short at the deadline
        self._children: list[_Child] = []
        env = dict(os.environ, PYTHONPATH=_child_path())
        level = logging.getLogger("beaconflow").getEffectiveLevel()
        try:
            for index, child_config in enumerate(split_config(config, processes)):
                setup = _Setup(child_config, secrets, ledger, level)
                self._children.append(_Child(index, setup, env))
        except BaseException:
            self.close()
            raise
        self._by_fd = {child.results.fileno(): child for child in self._children}
        self._ready = select.poll()
        for fd in self._by_fd:
            self._ready.register(fd, select.POLLIN)
        self._stop = stop if stop is not None else RunStop()
        self._halted = False
        self._watches: dict[str, RedirectWatch] = {}
        self._misconfigured: set[str] = set()
        self._stop.subscribe(self._halt_children)
        self._stop.subscribe_down(self._down_children)

    def __enter__(self) -> SenderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def processes(self) -> int:
        """How many children send."""
        return len(self._children)

    def client(self) -> PoolClient:
        """A new handle to send through, with deliveries of its own."""
        return PoolClient(self)

    def seal(self) -> None:
        """Have every child seal its ledger journal into a shard, and wait until they have."""
        with self._lock:
            for child in self._children:
                child.send(("seal", None))
            waiting = set(self._children)
            while waiting:
                for child in self._receive(block=True):
                    waiting.discard(child)

    def _halt_children(self, reason: str) -> None:
        """The run stopped: no child starts a new request (told once, over each pipe)."""
        with self._lock:
            if self._halted or self._closed:
                return
            self._halted = True
            for child in self._children:
                # a child that is gone says so at the next call that needs it
                with contextlib.suppress(RuntimeError):
                    child.send(("stop", reason))

    def _down_children(self, destination: str, reason: str) -> None:
        """A destination is down: no child sends to it any more (told once, over each pipe)."""
        with self._lock:
            if self._closed:
                return
            for child in self._children:
                with contextlib.suppress(RuntimeError):
                    child.send(("down", (destination, reason)))

    def _misconfigure(self, destination: str, reason: str) -> str:
        """Every child sends no more to ``destination``; returns the reason."""
        self._misconfigured.add(destination)
        logger.warning("%s; no more requests go to it", reason)
        for child in self._children:
            with contextlib.suppress(RuntimeError):
                child.send(("halt", (destination, reason)))
        return reason

    def stats(self) -> SenderStats:
        """The children's counters added up, as of their last report."""
        sent = delivered = retries = failed = reconnects = 0
        outcomes: dict[str, int] = {}
        for child in self._children:
            s, d, r, f, kinds, c = child.stats
            sent, delivered, retries, failed = sent + s, delivered + d, retries + r, failed + f
            reconnects += c
            for name, count in kinds.items():
                outcomes[name] = outcomes.get(name, 0) + count
        return SenderStats(sent, delivered, retries, failed, outcomes, reconnects)

    def close(self) -> None:
        """Stop every child; requests not flushed are abandoned (each child logs how many)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if hasattr(self, "_stop"):
                self._stop.unsubscribe(self._halt_children)
                self._stop.unsubscribe_down(self._down_children)
            for child in self._children:
                child.close()
        count = len(self._children)
        stopped = self._stop.reason if hasattr(self, "_stop") else None
        if stopped is None and self._deadline_met:
            stopped = DEADLINE
        self.stats().log_done(f" ({count} sender process{'es' if count != 1 else ''})", stopped)

    def _submit(self, client: PoolClient, requests: Sequence[Request]) -> None:
        """Hand requests to the child with the fewest outstanding; blocks while all are full."""
        fingerprints, messages = self._fingerprints, self._messages
        with self._lock:
            if self._closed:
                raise RuntimeError("the sender processes are closed")
            wires: list[_Wire] = []
            for request in requests:
                message = request.message
                tag = self._tag = self._tag + 1
                messages[tag] = (client, message)
                key = ledger_key(fingerprints[message.destination], message) if self._ledger else ""
                wires.append(
                    (tag, message.destination, message.kind, request.url, key, message.day)
                )
            client.outstanding += len(wires)
            children = self._children
            while wires:
                child = min(children, key=lambda c: c.outstanding)
                room = child.bound - child.outstanding
                if room < min(len(wires), child.bound // 2 or 1):
                    self._receive(block=True)
                    continue
                chunk, wires = wires[:room], wires[room:]
                child.send(("send", chunk))
                child.outstanding += len(chunk)

    def _flush(self, client: PoolClient) -> None:
        with self._lock:
            while client.outstanding:
                self._receive(block=True)

    def _receive(self, *, block: bool) -> list[_Child]:
        """Take in what the children have sent back; returns the children that acked a seal.

        ``block``: wait until at least one child has something. Called under the lock.
        """
        sealed: list[_Child] = []
        # a closed pipe is ready too (POLLHUP): its recv says the child is gone
        ready = self._ready.poll(None if block else 0)
        for fd, _ in ready:
            child = self._by_fd[fd]
            results = child.results
            while True:
                try:
                    kind, payload, stats = results.recv()
                except (EOFError, OSError):
                    raise child.died() from None
                if kind == "done":
                    self._take(child, payload)
                elif kind == "sealed":
                    sealed.append(child)
                    if payload is not None:  # the journal could not be sealed
                        self._stop.trip(payload)
                elif kind == "down":  # the child's breaker: (destination, reason)
                    self._stop.destination_down(*payload)
                elif kind == "stopped":  # the child found the run's ledger lock lost
                    self._stop.trip(payload)
                elif kind == "fatal":
                    raise RuntimeError(f"sender process {child.index}: {payload}")
                child.stats = stats
                if not child.has_more():
                    break
        now = self._clock()
        if self._progress.due(now):
            stats = self.stats()
            self._progress.line(
                now,
                stats.sent,
                stats.retries,
                stats.failed,
                tuple(self._stop.down),
                delivered=stats.delivered,
                total=self._tag,
            )
        return sealed

    def _take(self, child: _Child, outcomes: list[_Outcome]) -> None:
        messages = self._messages
        stopped: str | None = None
        watches, now = self._watches, self._clock()
        for tag, delivered, status, error, attempts, stop, ambiguous, resent, again in outcomes:
            client, message = messages.pop(tag)
            destination = message.destination
            watch = watches.get(destination) or watches.setdefault(destination, RedirectWatch())
            judged = status is not None and watch.answer(classify(status, None), now)
            if judged and destination not in self._misconfigured:
                stop = self._misconfigure(destination, watch.reason(destination, error or ""))
            client.finished.append(
                Delivery(
                    message, delivered, status, error, attempts, stop, ambiguous, resent, again
                )
            )
            client.outstanding -= 1
            if stop == DEADLINE:
                self._deadline_met = True
            if stop is not None and delivered:
                # a delivery the child's ledger could not record: the whole run stops
                stopped = stop
        child.outstanding -= len(outcomes)
        if stopped is not None:
            self._stop.trip(stopped)


class PoolClient:
    """One caller's way into a :class:`SenderPool`: BulkSender's interface, its own outcomes.

    A Beam process may run several send steps (one per DoFn instance); each has a client,
    and all share the process's sender processes, so their rates and concurrency add up
    to the configured ones as they would with one in-process sender.
    """

    def __init__(self, pool: SenderPool) -> None:
        self.pool = pool
        self.finished: list[Delivery] = []
        self.outstanding = 0
        self._closed = False

    def submit_many(self, requests: Sequence[Request]) -> None:
        """Queue requests; blocks while the sender processes have enough outstanding."""
        if self._closed:
            raise RuntimeError("the sender client is closed")
        if requests:
            self.pool._submit(self, requests)

    def take_finished(self) -> list[Delivery]:
        """The client's deliveries finished since the last call; never blocks."""
        with self.pool._lock:
            self.pool._receive(block=False)
            finished, self.finished = self.finished, []
        return finished

    def flush(self) -> list[Delivery]:
        """Wait until this client's requests have finished; return the remaining deliveries."""
        with self.pool._lock:
            self.pool._flush(self)
            finished, self.finished = self.finished, []
        return finished

    def seal(self) -> None:
        """Seal the ledger journals of every sender process (see :meth:`SenderPool.seal`)."""
        self.pool.seal()

    def stats(self) -> SenderStats:
        """The pool's counters (all its clients together)."""
        return self.pool.stats()

    def close(self) -> None:
        """Done with the pool: a shared pool closes with its last client."""
        if not self._closed:
            self._closed = True
            _release(self.pool)


#: The process's shared pools by configuration, each with its count of open clients.
_pools: dict[bytes, tuple[SenderPool, int]] = {}
_pools_lock = threading.Lock()
#: While above 0 (:func:`pools_kept`), a shared pool whose last client leaves stays open.
_keepers = 0


@contextlib.contextmanager
def pools_kept() -> Iterator[None]:
    """Keep this process's shared pools open between pipelines, closing them at the end.

    A chunked run (:mod:`beaconflow.pipelines.chunks`) runs one pipeline per chunk: its
    senders' adaptive concurrency, rate limits and progress counts span the whole run
    instead of starting again with each chunk.
    """
    global _keepers
    with _pools_lock:
        _keepers += 1
    try:
        yield
    finally:
        with _pools_lock:
            _keepers -= 1
            idle = [] if _keepers else [k for k, (_, users) in _pools.items() if users == 0]
            closing = [_pools.pop(key)[0] for key in idle]
        for pool in closing:
            pool.close()


def shared_client(
    config: SenderConfig,
    secrets: tuple[str, ...],
    *,
    processes: int,
    ledger: str | None = None,
    fingerprints: Mapping[str, str] | None = None,
    run_id: str = "",
) -> PoolClient:
    """A client of this process's pool for this configuration, started on first use.

    Every send step of a process with the same configuration shares one pool, as they share
    one rate limiter per destination in-process
    (:func:`~beaconflow.delivery.ratelimit.shared_limiter`). ``run_id`` names the run whose
    :func:`~beaconflow.delivery.stop.run_stop` the pool obeys and trips.
    """
    items = sorted((fingerprints or {}).items())
    key = pickle.dumps((config, secrets, processes, ledger, items, run_id))
    with _pools_lock:
        pool, users = _pools.get(key, (None, 0))
        if pool is None:
            pool = SenderPool(
                config,
                secrets,
                processes=processes,
                ledger=ledger,
                fingerprints=fingerprints,
                stop=run_stop(run_id),
            )
        _pools[key] = (pool, users + 1)
        return pool.client()


def _release(pool: SenderPool) -> None:
    """One client fewer: a shared pool closes with its last (an unshared one stays open)."""
    with _pools_lock:
        for key, (shared, users) in list(_pools.items()):
            if shared is pool:
                if users > 1 or _keepers:
                    _pools[key] = (shared, users - 1)
                    return
                del _pools[key]
                break
        else:
            return
    pool.close()


# -- the child ---------------------------------------------------------------------------


#: glibc's mallopt parameters, and the values a sender process sets (see below).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 1 << 20
_TRIM_THRESHOLD = 4 << 20


def raise_malloc_thresholds() -> bool:
    """Have glibc serve the sockets' 256 KiB read buffers from its heap; False where it cannot.

    asyncio reads a socket into a fresh 256 KiB buffer (its transports' ``max_size``) and
    shrinks it to what arrived. glibc maps allocations above its mmap threshold (128 KiB at
    start) with mmap, and returns a freed heap top above its trim threshold to the kernel:
    until something raises them, every HTTP answer costs an mmap, an mremap, a munmap and a
    page fault (strace -c on a sender process: 100,000 of each for 100,000 answers, about a
    third of its system time). glibc raises both thresholds by itself once a large block is
    freed, which a Beam worker does early on and a fresh sender process may never do.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # trim first: glibc keeps the trim threshold at least the mmap threshold
    return bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) and mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    )


def child_main() -> None:
    """A sender process: its setup and requests come on stdin, the outcomes go to stdout."""
    # the parent handles Ctrl-C and SIGTERM (sent to the whole process group by systemd,
    # Kubernetes and Airflow): it stops the sending and tells this process, which finishes
    # what is in flight; a child that died on the signal would lose its in-flight requests
    ignore_stop_signals()
    raise_malloc_thresholds()
    results_fd = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the results pipe
    sys.exit(asyncio.run(_child(results_fd)))


class _ChildStop(RunStop):
    """A child's stop flag: its first reason goes to the parent, which stops the run.

    Said by the parent (and logged there), not here: the parent's line is the run's.
    """

    def __init__(self, tell: Callable[[str], None]) -> None:
        super().__init__()
        self._tell = tell

    def trip(self, reason: str) -> bool:
        if self.reason is not None:
            return False
        self._reason = reason
        self._tell(reason)
        return True


class _ChildSender:
    """The child's end of the pipe protocol, around a send engine on the child's own loop.

    There is no thread: requests come straight from the pipe reader on the same loop, each
    with its wire tuple as its :attr:`~beaconflow.delivery.sender.Request.token` (the tag
    that matches its outcome in the parent, the ledger key its delivery is recorded under),
    and each turn's finished deliveries go straight back down the results pipe.
    """

    def __init__(
        self,
        config: SenderConfig,
        secrets: tuple[str, ...],
        ledger: LedgerWriter | None,
        reply: Callable[[str, object, _Stats], None],
    ) -> None:
        self._reply = reply
        # what stops this child of itself (its run's ledger lock found lost) stops the run:
        # the parent is told, and tells every other child
        stop = _ChildStop(lambda reason: reply("stopped", reason, self.counts()))
        # what the engine needs of a message, one per destination and kind: the child sees
        # URLs, never parameters
        self._messages: dict[tuple[str, str], Message] = {}
        self.engine = SendEngine(
            config,
            secrets,
            on_finished=self._finished,
            on_delivered=None if ledger is None else _recorder(ledger),
            # the pool tells every sender of its process, this one included
            on_down=lambda destination, reason: reply("down", (destination, reason), self.counts()),
            stop=stop,
            # the pool sees every child's answers: it judges redirects, and says "halt"
            judge_redirects=False,
        )

    def take(self, wires: list[_Wire]) -> None:
        """Queue requests as they came down the pipe."""
        messages = self._messages
        requests = []
        for wire in wires:
            _, destination, kind, url, _, _ = wire
            message = messages.get((destination, kind))
            if message is None:
                message = messages[destination, kind] = Message(
                    cast(Destination, destination), kind, ()
                )
            requests.append(Request(message, url, wire))
        self.engine.submit(requests)

    def counts(self) -> _Stats:
        counts = self.engine.counts()
        return (
            counts.sent,
            counts.delivered,
            counts.retries,
            counts.failed,
            counts.outcomes,
            counts.reconnects,
        )

    def _finished(self, done: Sequence[Delivery], tokens: Sequence[object]) -> None:
        if done:
            wires = cast("Sequence[_Wire]", tokens)
            outcomes: list[_Outcome] = [
                (
                    wire[0],
                    d.delivered,
                    d.status,
                    d.error,
                    d.attempts,
                    d.stop,
                    d.ambiguous,
                    d.ambiguous_resent,
                    d.reconnects,
                )
                for wire, d in zip(wires, done, strict=True)
            ]
            self._reply("done", outcomes, self.counts())


async def _read(reader: asyncio.StreamReader) -> Any:
    """One object sent by the parent's Connection.send (its framing), None at the end."""
    try:
        header = await reader.readexactly(4)
        (size,) = struct.unpack("!i", header)
        if size == -1:
            (size,) = struct.unpack("!Q", await reader.readexactly(8))
        return pickle.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None


async def _child(results_fd: int) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
    )
    transport, _ = await loop.connect_write_pipe(
        asyncio.BaseProtocol, os.fdopen(results_fd, "wb", buffering=0)
    )
    # a parent that is gone is the ordinary way for a child to end: no error for it
    loop.set_exception_handler(_quiet_broken_pipe)

    def reply(kind: str, payload: object, stats: _Stats | None) -> None:
        if not transport.is_closing():
            data = pickle.dumps((kind, payload, stats), pickle.HIGHEST_PROTOCOL)
            transport.write(struct.pack("!i", len(data)) + data)

    async def drain() -> None:
        transport.close()  # writes what is buffered first
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.01)

    setup: _Setup | None = await _read(reader)
    if setup is None:
        return 0
    # the command's --log-format reaches a child through the environment it inherits
    install(stream=sys.stderr, secrets=setup.secrets)
    logging.getLogger().setLevel(logging.WARNING)
    # the parent logs progress and the totals; a child speaks only of problems, or of every
    # attempt when the parent logs at DEBUG
    level = setup.log_level
    logging.getLogger("beaconflow").setLevel(
        level if level <= logging.DEBUG else max(level, logging.WARNING)
    )
    redact_library_logs(setup.secrets)
    ledger: LedgerWriter | None = None
    try:
        if setup.ledger is not None:
            ledger = LedgerWriter(setup.ledger, {})
        sender = _ChildSender(setup.config, setup.secrets, ledger, reply)
        await sender.engine.open()
    except Exception as error:
        text = Redactor.of(setup.secrets)(f"cannot start: {type(error).__name__}: {error}")
        reply("fatal", text, None)
        await drain()
        return 1
    try:
        while (command := await _read(reader)) is not None:
            kind, payload = command
            if kind == "send":
                sender.take(payload)
            elif kind == "stop":
                sender.engine.halt(payload)
            elif kind == "halt":
                sender.engine.halt_destination(*payload)
            elif kind == "down":
                sender.engine.destination_down(*payload)
            elif kind == "seal":
                reply("sealed", _seal(ledger, sender), sender.counts())
    finally:
        await sender.engine.close()
        problem = _seal(ledger, sender)
        if problem is not None:
            logger.error("%s", problem)
        reply("closed", None, sender.counts())
        await drain()
    return 0


def _quiet_broken_pipe(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), (BrokenPipeError, ConnectionResetError)):
        return
    loop.default_exception_handler(context)


def _seal(ledger: LedgerWriter | None, sender: _ChildSender) -> str | None:
    """Seal the child's journal; the reason it could not be (the sender then halts)."""
    if ledger is None:
        return None
    try:
        ledger.seal()
    except LedgerError as error:
        sender.engine.halt(str(error))
        return str(error)
    return None


def _recorder(ledger: LedgerWriter) -> Callable[[Request, int], None]:
    """The engine's ``on_delivered``: records a request under the parent's ledger key.

    A message delivered after ambiguous attempts is marked with their count.
    """

    def record(request: Request, ambiguous: int) -> None:
        _, destination, kind, _, key, day = cast(_Wire, request.token)
        ledger.record_keyed(key, destination, kind, ambiguous=ambiguous, day=day)

    return record
