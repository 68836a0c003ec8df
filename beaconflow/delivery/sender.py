"""The bulk sender: many HTTP GETs in flight from one thread's point of view, no Beam inside.

Three parts, one on top of the other:

- :class:`SendEngine` sends on the running asyncio event loop with one keep-alive
  ``aiohttp`` session: lanes, workers, limits, retries. It has no thread of its own and a
  small public interface (``async with``, ``submit``, ``halt``, ``halt_destination``,
  ``counts``, and the ``on_finished`` / ``on_delivered`` callbacks it is built with).
- :class:`BulkSender` runs an engine on a background thread for a synchronous caller (a
  Beam ``DoFn``), which hands it :class:`Request` objects with :meth:`BulkSender.submit_many`
  and collects one :class:`Delivery` per request with :meth:`BulkSender.take_finished` and
  :meth:`BulkSender.flush`. A sender process (:mod:`beaconflow.delivery.sendproc`) holds an
  engine on its own loop instead, fed from its pipe.
- :class:`Sender` is the protocol the send step is written against: BulkSender and the
  sender processes' ``PoolClient`` both satisfy it.

Each request takes the destination's shared rate limiter before every attempt, is classified
by ``beaconflow.delivery.retry.classify`` and retried per the
:class:`~beaconflow.delivery.retry.RetryPolicy`, honouring ``Retry-After``; the same
classification is the back-pressure the adaptive limits and pacing follow. Retry happens
here and nowhere else.

How it is cheap per message: requests cross from the caller's thread to the loop a batch at
a time (one wake-up of the loop per batch) and wait in one queue per destination. At most
``concurrency`` long-lived worker coroutines take them from those queues in turn, each
destination only while it is under its adaptive concurrency limit; a worker with nothing it
may send parks until requests arrive or a limit grows. Waits that do not occupy a request
slot (backoff before a retry, the adaptive rate) move the request out of the queue and
back, so no worker sleeps through them. Finished deliveries and counters are handed back
under one lock once per turn of the event loop, and a blocked caller is woken only when a
whole batch fits again or everything is done, not once per message.

**Networks** (:mod:`beaconflow.delivery.network`): the session verifies TLS with the
config's :attr:`SenderConfig.network` context (the system's trust store plus the run's CA
bundles) and sends each destination's requests through the proxy its network names for the
destination's URL (an https:// URL through an HTTP proxy is a CONNECT tunnel). A TLS
certificate that is not trusted or a proxy that refuses the tunnel is *blocked*
(:func:`~beaconflow.delivery.retry.classify`): permanent, with a one-line reason naming the
host and what failed, and a destination whose attempts are nothing but that
(:class:`BlockedWatch`) is declared down as its circuit breaker would: its messages not sent
end as "not attempted", and the run stops early (exit 4).

Redirects are never followed: a tracking GET answered with a 3xx did not reach the service (a
captive portal, a login proxy, a mistyped URL), so it is a permanent failure naming the status
and the target's host. A destination is misconfigured when its answers are nothing but
redirects: at least :data:`REDIRECT_WINDOW` in a row (5xx, 429 and transport errors neither
count nor break the run), and either it has delivered nothing yet or the redirects have gone on
for :data:`REDIRECT_SECONDS` (a portal that appears mid-run). Its lane halts, and its messages
not yet sent end as "not attempted" without a request. A whole sender halts when a delivery
cannot be recorded in the ledger (the next run would send it again), when the run's
:class:`~beaconflow.delivery.stop.RunStop` trips, or at the run's deadline
(:attr:`SenderConfig.deadline`): no new request starts, what is in flight finishes, and the
rest end as "not attempted". A destination whose circuit breaker
(:mod:`beaconflow.delivery.breaker`) declares it down halts alone, like a misconfigured
one, and the run's stop tells the other senders of the process. Every such outcome carries
the stop's reason (:attr:`Delivery.stop`), so the run can report why it stopped.
With a ledger's locks (:attr:`SenderConfig.lease`) each request first checks that they
are still the run's (:class:`~beaconflow.delivery.lease_watch.LeaseWatch`): a run that was
frozen while another took them over halts when it wakes, before it sends anything more.

**Ambiguous outcomes** (:mod:`beaconflow.delivery.ambiguity`). An attempt that got no answer
is a connection error when its request never left (always retried: nothing reached the
service) and ambiguous when it went out (a timeout, a reset, a connection closed before the
answer, a reused keep-alive connection the server had closed): the service may have
received it. Ambiguous attempts are retried unless the policy says otherwise
(:attr:`~beaconflow.delivery.retry.RetryPolicy.retry_ambiguous`, ``--no-retry-ambiguous``);
then the message fails at once, its reason saying that it may have been received. Every
:class:`Delivery` counts its ambiguous attempts, and says whether one of its requests went
out again after one of them (the service may have counted it more than once); the ledger
hook gets the count of a delivered message.

**Connections that come and go.** One keep-alive pool per engine, at most ``concurrency``
connections. A request that fails on a *reused* connection the server had closed (an idle
timeout, a used-up connection: :func:`~beaconflow.delivery.ambiguity.stale_connection`) is
sent again at once on another, within the same attempt: a *free reconnect*, no attempt,
no backoff, no outcome for the breaker or the adaptive limits, but ambiguous all the same
(the server may have read it). At most :data:`FREE_RECONNECTS` per message; none with
``retry_ambiguous`` off; a connection that fails on its first request is no reconnect.
:attr:`SenderStats.reconnects` counts them. A request that never left says so in its
reason (:func:`~beaconflow.delivery.ambiguity.never_reached`).

Of an answer's body at most :data:`~beaconflow.delivery.body.READ_LIMIT` bytes are read
(:mod:`beaconflow.delivery.body`): a longer body's connection is closed instead, and a 2xx is
delivered whatever its size. A failure's reason quotes the start of its body, redacted and
on one line (``HTTP 400: {"error":"invalid parameter s"}``); the status stays a field of its
own.

URLs carry API keys, so they never reach a log line, an exception or a :class:`Delivery`:
error texts go through a :class:`~beaconflow.delivery.redact.Redactor` built from the endpoint
secrets.
Tested against a local aiohttp server::

    python -m pytest tests/delivery/test_sender.py
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from yarl import URL

from beaconflow.delivery.aiohttp_internals import disable_silent_resend
from beaconflow.delivery.ambiguity import (
    MAY_HAVE_BEEN_RECEIVED,
    NOT_RETRIED,
    AttemptMark,
    MarkingConnector,
    mark_attempts,
    never_reached,
    stale_connection,
)
from beaconflow.delivery.body import Body, read_capped, reason_text, with_body
from beaconflow.delivery.breaker import DEFAULT_WINDOW, Breaker, down_reason
from beaconflow.delivery.concurrency import AdaptiveLimit, AdaptiveRate, AimdPolicy
from beaconflow.delivery.lease_watch import LeaseWatch, Standing
from beaconflow.delivery.ledger_lock import Lease
from beaconflow.delivery.network import (
    Network,
    certificate_detail,
    certificate_reason,
    handshake_failure,
    handshake_reason,
    proxy_auth_reason,
    proxy_refused_reason,
    shown_proxy,
)
from beaconflow.delivery.ratelimit import Clock, RateLimiter, Sleep, shared_limiter
from beaconflow.delivery.redact import Redactor
from beaconflow.delivery.retry import (
    NOT_FOLLOWED,
    Classification,
    RetryPolicy,
    Verdict,
    classify,
    parse_retry_after,
    redirect_reason,
)
from beaconflow.delivery.stop import DEADLINE, RunStop
from beaconflow.model.duration import format_duration
from beaconflow.model.message import Message
from beaconflow.model.pace import percent, rate_eta_seconds
from beaconflow.model.words import plural

logger = logging.getLogger("beaconflow.send")

#: Seconds a blocked caller waits between checks that the sender thread is still alive.
_LIVENESS_POLL = 1.0
#: Seconds a request waits between looks at the run's ledger locks while its heartbeat is
#: behind (the run was frozen, and its heartbeat thread is about to beat or find it lost).
_LEASE_POLL_SECONDS = 0.1
#: Seconds a resolved host name is reused: a backfill talks to one or two hosts for hours.
_DNS_CACHE_SECONDS = 300
#: Exceptions that mean "this attempt got no usable answer", as opposed to a bug.
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ValueError)
#: Free reconnects a message gets: its request met a reused keep-alive connection the
#: server had closed, and is sent again at once on another, as no attempt. A few, since
#: several pooled connections may have been closed at once (an idle timeout); past them,
#: such a failure counts as any other.
FREE_RECONNECTS = 3
#: A destination whose connections meet a close under their second request this often (at
#: least so many, and at least half of its requests sent on a connection's second use) is
#: one whose server or proxy closes every connection after one answer without saying so
#: (tinyproxy forwarding plain http:// does): its requests then go one connection each,
#: which the other side closes anyway, instead of meeting each close with an ambiguous
#: resend. Closes of connections that served more (nginx's used-up ones, an idle timeout
#: closing the whole pool after a pause) do not count.
ONE_SHOT_CLOSES = 4
#: Consecutive redirect answers from one destination that declare it misconfigured. Enough
#: that a stray redirect cannot stop a run; few, so that a wrong URL costs little.
REDIRECT_WINDOW = 10
#: Seconds of nothing but redirects that declare a destination misconfigured even after it
#: delivered (a login proxy whose session expired): a few users whose requests happen to
#: redirect, in a row, do not stop it.
REDIRECT_SECONDS = 30.0
#: Blocked attempts in a row (an untrusted TLS certificate, a proxy refusing the tunnel) that
#: stop a destination that delivered nothing yet: each fails at once and the same way, so a
#: few are enough to be sure, and the rest of its messages are kept for a replay.
BLOCKED_WINDOW = 3


@dataclass(frozen=True)
class Request:
    """One message and its rendered URL; the URL carries credentials and is kept out of repr.

    ``token`` is the caller's own, opaque to the sender: it comes back beside the request's
    :class:`Delivery` (:data:`OnFinished`) and reaches ``on_delivered``, so that a caller can
    match outcomes to what it sent (a sender process: its pipe's tag and ledger key). The
    in-process pipeline leaves it None: its :class:`Delivery` carries the message itself.
    """

    message: Message
    url: str = field(repr=False)
    token: object = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Delivery:
    """The outcome of one message: delivered or not, the last status or error, and the tries.

    ``status`` is None when no HTTP answer came back; ``error`` is None when delivered, and is
    always redacted. ``attempts`` is 0 only for messages that were never sent. ``stop`` is
    the reason a stop gives when this outcome declared it (the delivery the ledger could not
    record, the last redirect of a misconfigured destination) or was cut short by it (not
    attempted, not retried); None otherwise.

    The ``error`` of an answer quotes the start of its body (``HTTP 400: {...}``).

    ``ambiguous`` counts the attempts whose request went out and got no answer (the
    service may have received each of them); ``ambiguous_resent`` is True when a request
    of the message went out again after such an attempt (answered or ambiguous itself):
    the service may have counted the message more than once. ``reconnects`` counts its free
    reconnects (its request met a reused keep-alive connection the server had closed and
    went out again at once; each is ambiguous too, and none is an attempt).
    """

    message: Message
    delivered: bool
    status: int | None
    error: str | None
    attempts: int
    stop: str | None = None
    ambiguous: int = 0
    ambiguous_resent: bool = False
    reconnects: int = 0


@dataclass(frozen=True)
class SenderConfig:
    """How one process sends.

    ``concurrency``: requests in flight (>= 1). ``timeout``: seconds per attempt, from the start
    of the request to the end of its body (> 0; there is no "no timeout", a hung server would
    hold the pipeline). ``rates``: requests/s per destination for this process; a destination
    that is absent or maps to None is unlimited. ``progress_interval``: seconds between progress
    lines; 0 logs after every attempt. ``adaptive``: find the concurrency each destination
    takes, up to ``concurrency`` (see :mod:`beaconflow.delivery.concurrency`); False keeps
    ``concurrency`` requests in flight whatever the service answers. ``deadline``: the
    wall-clock instant (epoch seconds) from which no new request starts, every process
    judging it on its own clock; None: no deadline. ``breaker_window``: seconds of nothing
    but failure answers that declare a destination down
    (:class:`~beaconflow.delivery.breaker.Breaker`, > 0); None: no breaker. ``lease``: the
    run's hold on its ledger locks, checked before every request (a run frozen while another
    took its locks over sends nothing more when it wakes); None: nothing to check.
    ``network``: the proxies and the TLS trust to send with
    (:class:`~beaconflow.delivery.network.Network`, resolved once in the driver); by default
    direct connections trusting the system's store alone.
    """

    concurrency: int
    timeout: float
    retry: RetryPolicy
    rates: Mapping[str, float | None] = field(default_factory=dict)
    progress_interval: float = 10.0
    adaptive: bool = True
    deadline: float | None = None
    breaker_window: float | None = DEFAULT_WINDOW
    lease: Lease | None = None
    network: Network = field(default_factory=Network)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.progress_interval < 0:
            raise ValueError(f"progress_interval must be >= 0, got {self.progress_interval}")
        for destination, rate in self.rates.items():
            if rate is not None and not rate > 0:
                raise ValueError(f"rate for {destination} must be > 0 or None, got {rate}")
        if self.breaker_window is not None and not self.breaker_window > 0:
            raise ValueError(f"breaker_window must be > 0 or None, got {self.breaker_window}")


@dataclass(frozen=True)
class SenderStats:
    """Counters so far. ``outcomes`` counts attempts by status code or error class name.

    ``reconnects`` counts the free reconnects: requests sent again at once because a reused
    keep-alive connection turned out closed by the server. They are neither attempts nor
    retries, and ``sent`` and ``outcomes`` do not count them.
    """

    sent: int
    delivered: int
    retries: int
    failed: int
    outcomes: Mapping[str, int]
    reconnects: int = 0

    def log_done(self, detail: str = "", stopped: str | None = None) -> None:
        """The totals line a sender logs when it closes (nothing when nothing was sent).

        A run that was stopped (``stopped``: why) says so instead of "done".
        """
        if self.sent:
            fields = {
                "sent": self.sent,
                "delivered": self.delivered,
                "retries": self.retries,
                "failed": self.failed,
            }
            if self.reconnects:
                fields["reconnects"] = self.reconnects
                detail = f", reconnects {self.reconnects}{detail}"
            logger.info(
                "%s: sent %d, delivered %d, retries %d, failed %d%s",
                "done" if stopped is None else "stopped",
                self.sent,
                self.delivered,
                self.retries,
                self.failed,
                detail,
                extra={"event": "done" if stopped is None else "stopped", "fields": fields},
            )


#: What a run adds to every progress line, given the messages sent so far: the text (a chunked
#: run's chunk, events done and time left) and its numbers, the line's JSON fields.
ProgressNote = Callable[[int], tuple[str, Mapping[str, object]]]

#: The run's note; None: nothing. See :func:`set_progress_note`.
_progress_note: ProgressNote | None = None


def set_progress_note(note: ProgressNote | None) -> None:
    """Have every progress line of this process end with ``note(sent)`` (None: nothing)."""
    global _progress_note
    _progress_note = note


class ProgressLog:
    """A progress line every ``interval`` seconds (BulkSender's, or a pool's for its children).

    The line: sent so far (attempts), the rate since the last line, retries, failures; then,
    when the sender says how many messages it was given so far (``total``: the messages built
    so far), how many of them are finished (delivered or failed), the percent and the time
    left for them at the pace since the last line; then the destinations declared down, and
    the time left before the run's ``deadline`` (epoch seconds, read on ``wall_clock``) when
    it has one. ``now`` is the clock's reading at the start. The record carries the numbers
    as ``fields`` (event ``progress``) for the json log format and the live display.
    """

    __slots__ = ("_at", "_deadline", "_done", "_interval", "_sent", "_wall_clock")

    def __init__(
        self,
        interval: float,
        now: float,
        *,
        deadline: float | None = None,
        wall_clock: Clock = time.time,
    ) -> None:
        self._interval = interval
        self._at = now
        self._sent = 0
        self._done = 0
        self._deadline = deadline
        self._wall_clock = wall_clock

    def due(self, now: float) -> bool:
        """Whether a line is due (cheap: called after every attempt)."""
        return now - self._at >= self._interval

    def line(
        self,
        now: float,
        sent: int,
        retries: int,
        failed: int,
        down: Sequence[str] = (),
        *,
        delivered: int | None = None,
        total: int | None = None,
    ) -> None:
        """Log the line for these counts and start the next interval."""
        elapsed = now - self._at
        rate = (sent - self._sent) / elapsed if elapsed > 0 else 0.0
        fields: dict[str, object] = {
            "sent": sent,
            "rate": round(rate, 1),
            "retries": retries,
            "failed": failed,
        }
        notes = ""
        if delivered is not None and total is not None:
            done = delivered + failed
            pace = (done - self._done) / elapsed if elapsed > 0 else 0.0
            share = percent(done, total)
            eta = rate_eta_seconds(total - done, pace)
            self._done = done
            fields.update(delivered=delivered, done=done, total=total)
            fields["percent"] = None if share is None else round(share, 1)
            fields["eta_seconds"] = None if eta is None else round(eta, 1)
            notes += f"; {done:,} of {total:,} built so far"
            if share is not None:
                notes += f" ({share:.0f}%"
                notes += f", ETA {_eta_text(eta)})" if eta is not None else ")"
        self._at, self._sent = now, sent
        if down:
            notes += f"; down: {', '.join(sorted(down))}"
            fields["down"] = sorted(down)
        if self._deadline is not None:
            left = self._deadline - self._wall_clock()
            fields["deadline_seconds"] = round(max(0.0, left), 1)
            notes += (
                f"; deadline in {format_duration(left)}"
                if left > 0
                else "; deadline passed: no new request starts"
            )
        note = _progress_note
        if note is not None:
            text, numbers = note(sent)
            notes += text
            fields.update(numbers)
        logger.info(
            "sent %d (%.1f/s), retries %d, failed %d%s",
            sent,
            rate,
            retries,
            failed,
            notes,
            extra={"event": "progress", "fields": fields},
        )


def _eta_text(seconds: float) -> str:
    """``ETA 3m20s``'s time: below a second, ``<1s`` (a fraction would be noise)."""
    return format_duration(seconds) if seconds >= 1 else "<1s"


def outcome_names(outcomes: Mapping[int | type, int]) -> dict[str, int]:
    """Attempts by status code or error class, keyed by the code or the class's name."""
    named: dict[str, int] = {}
    for key, count in outcomes.items():
        name = str(key) if isinstance(key, int) else key.__name__
        named[name] = named.get(name, 0) + count
    return named


#: What a :class:`SendEngine` hands back once per turn of its loop: the deliveries finished in
#: that turn, and their requests' tokens in the same order.
OnFinished = Callable[[Sequence[Delivery], Sequence[object]], None]


class Sender(Protocol):
    """What a send step talks to: the seam between the Beam ``DoFn`` and HTTP.

    :class:`BulkSender` (an engine on a thread of this process) and
    :class:`~beaconflow.delivery.sendproc.PoolClient` (sender processes) both satisfy it, as
    Beam's ``requestresponse.Caller`` is satisfied by each client: the ``DoFn`` submits in
    batches, takes what has finished, flushes at the end of a bundle and closes in teardown.
    """

    def submit_many(self, requests: Sequence[Request]) -> None:
        """Queue requests; may block while enough are pending."""
        ...

    def take_finished(self) -> list[Delivery]:
        """The deliveries finished since the last call; never blocks."""
        ...

    def flush(self) -> list[Delivery]:
        """Wait until every submitted request has finished; the remaining deliveries."""
        ...

    def stats(self) -> SenderStats:
        """The counters so far."""
        ...

    def close(self) -> None:
        """Stop sending; what was not flushed is abandoned."""
        ...


#: A queued request: the request, the attempts made so far, whether its wait for the
#: destination's adaptive rate is already over (it is then sent without a new reservation),
#: its ambiguous attempts so far, whether a request went out after one of them, and the
#: free reconnects it has had (:data:`FREE_RECONNECTS`).
_Item = tuple[Request, int, bool, int, bool, int]
#: What :meth:`SendEngine.counts` counts attempts by: the status, or the error's class.
_OutcomeKey = int | type


class RedirectWatch:
    """Whether one destination's answers say its URL does not reach the service.

    Misconfigured: at least :data:`REDIRECT_WINDOW` redirects in a row (5xx, 429 and
    transport errors neither count nor break the row; a 2xx or another 4xx does), and either
    nothing delivered yet or the redirects lasting :data:`REDIRECT_SECONDS`. One watch sees
    every answer of its destination in a process: a BulkSender's own, or, with sender
    processes, the pool's, which sees all its children's answers.
    """

    __slots__ = ("delivered", "redirected_at", "redirects")

    def __init__(self) -> None:
        self.redirects = 0
        self.redirected_at = 0.0
        self.delivered = False

    def answer(self, answer: Classification, now: float) -> bool:
        """Count one answer (an attempt that got a status); True if it is the misconfiguring one."""
        if answer.delivered:
            self.redirects = 0
            self.delivered = True
            return False
        if answer.redirect:
            if self.redirects == 0:
                self.redirected_at = now
            self.redirects += 1
            return self.redirects >= REDIRECT_WINDOW and (
                not self.delivered or now - self.redirected_at >= REDIRECT_SECONDS
            )
        if answer.reached:
            self.redirects = 0
        return False

    def reason(self, destination: str, redirect: str) -> str:
        """The stop's reason, from the last redirect's."""
        return (
            f"{destination} is misconfigured: its last {self.redirects} answers were redirects "
            f"({redirect.removesuffix(NOT_FOLLOWED)}): check its URL"
        )


class BlockedWatch:
    """Whether one destination's attempts say that this network cannot reach it at all.

    Blocked attempts (:attr:`~beaconflow.delivery.retry.Classification.blocked`: a TLS
    certificate that is not trusted, a proxy refusing the tunnel) count in a row; an answer
    with a status breaks it, other transport errors neither count nor break it. The
    destination is stopped after :data:`BLOCKED_WINDOW` of them while it has delivered
    nothing, or after a row lasting :data:`REDIRECT_SECONDS` once it has (a proxy whose CA
    changed mid-run). Each sender (each sender process) judges its own attempts: a blocked
    attempt fails the same way in every one, and the first to stop the destination tells
    the others as its breaker would.
    """

    __slots__ = ("blocked", "blocked_at", "delivered")

    def __init__(self) -> None:
        self.blocked = 0
        self.blocked_at = 0.0
        self.delivered = False

    def attempt(self, answer: Classification, status: int | None, now: float) -> bool:
        """Count one attempt; True if it is the one that stops the destination."""
        if answer.blocked:
            if self.blocked == 0:
                self.blocked_at = now
            self.blocked += 1
            return self.blocked >= BLOCKED_WINDOW and (
                not self.delivered or now - self.blocked_at >= REDIRECT_SECONDS
            )
        if answer.delivered:
            self.delivered = True
        if status is not None:
            self.blocked = 0
        return False

    def reason(self, destination: str, blocked: str) -> str:
        """The stop's reason, from the last blocked attempt's."""
        return f"{destination} cannot be reached: {blocked}"


class _Lane:
    """One destination: its queued requests and the limits each attempt goes through.

    ``limit`` (adaptive concurrency) and ``pace`` (adaptive rate) are None when the sender
    is not adaptive; ``cap`` is the --max-rps limiter, None when uncapped. ``watch`` judges
    its redirects (None when someone else does: a sender process's pool); ``blocked``
    whether the network lets its requests through; ``breaker`` whether it is down (None:
    no breaker); ``halted`` is why it sends no more. ``proxy`` is the proxy its URL goes
    through (None: direct), known once ``proxy_known``. ``one_shot``: its server or proxy
    closes every connection after one answer, so each request opens its own
    (:data:`ONE_SHOT_CLOSES`).
    """

    __slots__ = (
        "blocked",
        "breaker",
        "cap",
        "closed_second_uses",
        "destination",
        "halted",
        "limit",
        "one_shot",
        "pace",
        "proxy",
        "proxy_known",
        "queue",
        "second_uses",
        "watch",
    )

    def __init__(
        self,
        destination: str,
        limit: AdaptiveLimit | None,
        pace: AdaptiveRate | None,
        cap: RateLimiter | None,
    ) -> None:
        self.destination = destination
        self.queue: deque[_Item] = deque()
        self.limit = limit
        self.pace = pace
        self.cap = cap
        self.watch: RedirectWatch | None = RedirectWatch()
        self.blocked = BlockedWatch()
        self.breaker: Breaker | None = None
        self.halted: str | None = None
        self.proxy: str | None = None
        self.proxy_known = False
        # requests on a connection's second use, and those that met a close: ONE_SHOT_CLOSES
        self.second_uses = 0
        self.closed_second_uses = 0
        self.one_shot = False  # its requests go one connection each

    def demand(self) -> int:
        """How many more requests of this lane could be sent right now."""
        queued = len(self.queue)
        if self.limit is None or not queued:
            return queued
        return min(queued, self.limit.available)


class BulkSender:
    """Sends requests concurrently from a private event loop; see the module docstring.

    A :class:`SendEngine` on a thread of its own, and the caller's side of it: requests cross
    to the loop a batch at a time, deliveries come back once per turn of the loop, under one
    lock. ``secrets`` are the endpoint secrets to mask in every error text and log line.
    ``clock`` (monotonic, for progress lines), ``wall_clock`` (epoch seconds, for
    ``Retry-After`` dates), ``sleep`` (backoff and rate-limit waits), ``rng`` (backoff jitter)
    and ``limiters`` (per destination; by default the process-wide
    :func:`~beaconflow.delivery.ratelimit.shared_limiter` for each rate in the config) are
    injectable for tests. ``on_delivered`` is called on the sender's thread with each
    delivered message the moment its answer is in (the delivery ledger records it there, so
    a kill loses at most the requests in flight); when it raises, the delivery could not be
    recorded and the sender halts (the error's text is the reason); its second argument is
    the message's ambiguous attempts before it was delivered (the ledger marks the entry).
    ``stop`` is the run's stop flag: the sender halts when it trips, and trips it when the
    ledger fails; a destination this sender's breaker declares down is declared down on it,
    and one declared down on it (by another sender of the process) is halted here.

    Use as a context manager, or call :meth:`close`; :meth:`flush` first, as closing abandons
    unfinished requests.
    """

    def __init__(
        self,
        config: SenderConfig,
        secrets: tuple[str, ...] = (),
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        limiters: Mapping[str, RateLimiter] | None = None,
        on_delivered: Callable[[Message, int], None] | None = None,
        stop: RunStop | None = None,
    ) -> None:
        self._concurrency = config.concurrency
        # Bounds memory: submit() blocks while twice the concurrency is pending.
        self._bound = 2 * config.concurrency
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # -- shared with the loop's thread, under self._lock
        self._pending = 0
        # waiting callers are woken once _pending is down to this (-1: nobody waits)
        self._wake_at = -1
        self._finished: list[Delivery] = []
        self._stats = SenderStats(0, 0, 0, 0, {})
        self._closed = False
        self._stop = stop
        hook = None
        if on_delivered is not None:
            record = on_delivered

            def hook(request: Request, ambiguous: int) -> None:
                record(request.message, ambiguous)

        self._engine = SendEngine(
            config,
            secrets,
            on_finished=self._publish,
            on_delivered=hook,
            on_down=None if stop is None else stop.destination_down,
            stop=stop,
            clock=clock,
            wall_clock=wall_clock,
            sleep=sleep,
            rng=rng,
            limiters=limiters,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name="beaconflow-sender", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._engine.open(), self._loop).result()
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
            raise
        if stop is not None:
            stop.subscribe(self.halt)
            stop.subscribe_down(self._down)

    def __enter__(self) -> BulkSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(self, request: Request) -> None:
        """Queue ``request``; blocks while about twice the concurrency is already pending."""
        self.submit_many((request,))

    def submit_many(self, requests: Sequence[Request]) -> None:
        """Queue several requests with one wake-up of the sender's loop (cheaper per request).

        Blocks while about twice the concurrency is already pending. A blocked caller waits
        until a whole chunk fits (the rest of ``requests``, at most the concurrency), so it
        wakes once per chunk rather than once per finished request.
        """
        if self._closed:
            raise RuntimeError("BulkSender is closed")
        bound, total, start = self._bound, len(requests), 0
        submit = self._engine.submit
        while start < total:
            need = min(total - start, self._concurrency)
            with self._lock:
                while bound - self._pending < need:
                    self._wake_at = max(self._wake_at, bound - need)
                    if not self._changed.wait(_LIVENESS_POLL):
                        self._check_alive()
                count = min(bound - self._pending, total - start)
                self._pending += count
            # a copy: the caller may reuse its sequence
            self._loop.call_soon_threadsafe(submit, tuple(requests[start : start + count]))
            start += count

    def take_finished(self) -> list[Delivery]:
        """The deliveries finished since the last call; never blocks."""
        with self._lock:
            finished, self._finished = self._finished, []
        return finished

    def flush(self) -> list[Delivery]:
        """Wait until every submitted request has finished; return the remaining deliveries."""
        with self._lock:
            while self._pending:
                self._wake_at = max(self._wake_at, 0)
                if not self._changed.wait(_LIVENESS_POLL):
                    self._check_alive()
            finished, self._finished = self._finished, []
        return finished

    def stats(self) -> SenderStats:
        """A snapshot of the counters, as of the loop's last turn."""
        with self._lock:
            return self._stats

    def close(self) -> None:
        """Stop the loop and close the session; unfinished requests are abandoned (logged)."""
        if self._closed:
            return
        self._closed = True
        if self._stop is not None:
            self._stop.unsubscribe(self.halt)
            self._stop.unsubscribe_down(self._down)
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._engine.close(), self._loop).result()
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
        self._loop.close()
        stopped = None if self._stop is None else self._stop.reason
        self.stats().log_done(stopped=stopped or self._engine.halted)

    def concurrency_limits(self) -> dict[str, int]:
        """The adaptive concurrency each destination has reached (empty when not adaptive)."""
        return self._engine.concurrency_limits()

    def adaptive_rates(self) -> dict[str, float | None]:
        """The adaptive rate of each destination, None while the service has not pushed back."""
        return self._engine.adaptive_rates()

    def halt(self, reason: str) -> None:
        """Start no new request (any thread); see :meth:`SendEngine.halt`."""
        if not self._loop.is_closed():
            # the loop may close meanwhile: then there is nothing left to halt
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._engine.halt, reason)

    def _down(self, destination: str, reason: str) -> None:
        """A destination is down (any thread): send no more to it."""
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._engine.destination_down, destination, reason)

    def _check_alive(self) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the sender thread has stopped")

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _publish(self, done: Sequence[Delivery], tokens: Sequence[object]) -> None:
        """The engine's turn is over (loop side): hand its deliveries to the callers."""
        stats = self._engine.counts()
        with self._lock:
            if done:
                if self._finished:
                    self._finished.extend(done)
                else:
                    self._finished = list(done)
                self._pending -= len(done)
            self._stats = stats
            if self._pending <= self._wake_at:
                self._wake_at = -1
                self._changed.notify_all()


class SendEngine:
    """The send engine: lanes, workers, limits and retries on the running event loop.

    It has no thread of its own and nothing in it is thread-safe: every method is called on
    the loop it was opened on. :class:`BulkSender` runs one on a thread of its own; a sender
    process (:mod:`beaconflow.delivery.sendproc`) runs one on its main loop, fed straight from
    its pipe. Its public interface is all either uses:

    - ``async with engine`` (or :meth:`open` / :meth:`close`): the HTTP session; closing
      abandons what is unfinished, with a warning naming how many;
    - :meth:`submit` a batch of requests; :meth:`halt` (everything),
      :meth:`halt_destination` (one lane) or :meth:`destination_down` (one lane, declared
      down by a breaker); :meth:`counts`;
    - ``on_finished(deliveries, tokens)``, called once per turn of the loop in which
      something finished or was counted (:data:`OnFinished`);
    - ``on_delivered(request, ambiguous)``, called with each delivered request and its
      ambiguous attempts while it still holds its slot (the ledger records it there); when
      it raises, the delivery could not be recorded, the engine halts and trips ``stop``;
    - ``on_down(destination, reason)``, called when its own breaker declares a destination
      down (after halting it), for whoever tells the other senders.

    With a ``deadline`` in its config it halts itself at that instant (at once when it opens
    after it), with the reason :data:`~beaconflow.delivery.stop.DEADLINE`.

    ``judge_redirects`` False leaves judging redirects to someone who sees more answers (a
    sender pool over all its processes, which then calls :meth:`halt_destination`). The
    other arguments are :class:`BulkSender`'s.
    """

    def __init__(
        self,
        config: SenderConfig,
        secrets: tuple[str, ...] = (),
        *,
        on_finished: OnFinished,
        on_delivered: Callable[[Request, int], None] | None = None,
        on_down: Callable[[str, str], object] | None = None,
        stop: RunStop | None = None,
        judge_redirects: bool = True,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        limiters: Mapping[str, RateLimiter] | None = None,
    ) -> None:
        self._config = config
        self._concurrency = config.concurrency
        self._on_finished = on_finished
        self._on_delivered = on_delivered
        self._on_down = on_down
        self._stop = stop
        self._judge_redirects = judge_redirects
        # the proxies' credentials are masked wherever a text could show them
        self._redact = Redactor.of((*secrets, *config.network.secrets()))
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._limiters: dict[str, RateLimiter] = {
            destination: shared_limiter(destination, rate)
            for destination, rate in config.rates.items()
            if rate is not None
        }
        self._limiters.update(limiters or {})
        # set by open(), before any other call
        self._loop: asyncio.AbstractEventLoop
        self._session: aiohttp.ClientSession
        self._one_shot: aiohttp.ClientSession | None = None  # see _judge_reuse
        self._lanes: dict[str, _Lane] = {}
        self._lane_list: list[_Lane] = []
        self._turn = 0  # the lane a worker looks at first: turns keep destinations fair
        self._workers: list[asyncio.Task[None]] = []
        self._idle: list[asyncio.Future[None]] = []  # parked workers, the last parked first
        self._waking = 0  # workers woken or started that have not looked for work yet
        # requests out waiting to requeue, with their lane
        self._delayed: dict[asyncio.Task[None], tuple[_Lane, _Item]] = {}
        self._halted: str | None = None  # why the whole engine sends no more
        self._down: dict[str, str] = {}  # destinations declared down, and why
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._outstanding = 0  # submitted, not finished
        # finished this turn of the loop, handed to on_finished at its end
        self._done: list[Delivery] = []
        self._tokens: list[object] = []
        self._publishing = False
        self._tally_sent = self._tally_delivered = self._tally_retries = self._tally_failed = 0
        self._tally_reconnects = 0  # free reconnects (never attempts)
        self._submitted = 0  # messages given to the engine so far (the built ones)
        self._tally_outcomes: dict[_OutcomeKey, int] = {}
        self._progress = ProgressLog(
            config.progress_interval, clock(), deadline=config.deadline, wall_clock=wall_clock
        )
        lease = config.lease
        self._lease = None if lease is None else LeaseWatch(lease, wall_clock)

    async def __aenter__(self) -> SendEngine:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the HTTP session on the running loop, the one every later call is made on.

        With a deadline, arm it (a deadline already passed halts the engine now: nothing
        submitted later is sent).
        """
        self._loop = asyncio.get_running_loop()
        self._session = await self._open_session()
        deadline = self._config.deadline
        if deadline is not None:
            left = deadline - self._wall_clock()
            if left > 0:
                self._deadline_timer = self._loop.call_later(left, self._deadline_reached)
            else:
                self._deadline_reached()

    @property
    def halted(self) -> str | None:
        """Why the whole engine sends no more, or None while it sends."""
        return self._halted

    def submit(self, requests: Sequence[Request]) -> None:
        """Queue a batch of requests (one call per batch: the loop wakes once for it)."""
        self._outstanding += len(requests)
        self._submitted += len(requests)
        self._intake(requests)

    def counts(self) -> SenderStats:
        """The counters so far."""
        return SenderStats(
            self._tally_sent,
            self._tally_delivered,
            self._tally_retries,
            self._tally_failed,
            outcome_names(self._tally_outcomes),
            self._tally_reconnects,
        )

    def concurrency_limits(self) -> dict[str, int]:
        """The adaptive concurrency each destination has reached (empty when not adaptive).

        Safe from another thread: it reads, and copies the lanes before iterating.
        """
        return {
            destination: lane.limit.limit
            for destination, lane in list(self._lanes.items())
            if lane.limit is not None
        }

    def adaptive_rates(self) -> dict[str, float | None]:
        """The adaptive rate of each destination, None while the service has not pushed back.

        Safe from another thread, as :meth:`concurrency_limits`.
        """
        return {
            destination: lane.pace.rate
            for destination, lane in list(self._lanes.items())
            if lane.pace is not None
        }

    async def _open_session(self) -> aiohttp.ClientSession:
        """The session of every request, made on the running loop."""
        return self._new_session()

    def _new_session(self, *, one_shot: bool = False) -> aiohttp.ClientSession:
        """A session (called on the loop); ``one_shot``: one connection per request."""
        # marks each attempt whose request went out: what makes its failure ambiguous
        # one TLS context for the process (the system's store plus the run's CA bundles):
        # verification is always on
        connector = MarkingConnector(
            limit=self._config.concurrency,
            ttl_dns_cache=_DNS_CACHE_SECONDS,
            ssl=self._config.network.ssl_context(),
            force_close=one_shot,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._config.timeout),
            # Tracking APIs set cookies on every answer; keeping them would grow without end.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # aiohttp silently resends an idempotent request once when a reused connection drops.
        # A tracking GET is not idempotent (Kontagent counts every request), and retries
        # belong to one layer, this one, where they are counted and backed off.
        disable_silent_resend(session)
        # No other gate is needed: at most `concurrency` workers exist, and a request queues
        # for a worker, not for a pooled connection, so the total timeout covers the attempt.
        return session

    async def close(self) -> None:
        """Cancel what is in flight or waiting, hand back what finished, close the session."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        tasks = [*self._workers, *self._delayed]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._publish()
        abandoned = self._outstanding
        await self._session.close()
        if self._one_shot is not None:
            await self._one_shot.close()
        if abandoned:
            logger.warning("closed with %s abandoned", plural(abandoned, "unfinished request"))

    def _intake(self, requests: Sequence[Request]) -> None:
        """Queue a batch from a caller (one loop callback per batch)."""
        lanes = self._lanes
        for request in requests:
            destination = request.message.destination
            lane = lanes.get(destination)
            if lane is None:
                lane = self._open_lane(destination)
            if lane.halted is not None:
                self._cut_short((request, 0, False, 0, False, 0), lane.halted)
                continue
            lane.queue.append((request, 0, False, 0, False, 0))
        self._kick()

    def _open_lane(self, destination: str) -> _Lane:
        limit: AdaptiveLimit | None = None
        pace: AdaptiveRate | None = None
        if self._config.adaptive:
            policy = AimdPolicy(maximum=self._config.concurrency)
            limit = AdaptiveLimit(policy, self._clock)
            pace = AdaptiveRate(
                RateLimiter(None, self._clock),
                policy,
                ceiling=self._config.rates.get(destination),
                clock=self._clock,
            )
        lane = _Lane(destination, limit, pace, self._limiters.get(destination))
        if not self._judge_redirects:
            lane.watch = None
        window = self._config.breaker_window
        if window is not None:
            lane.breaker = Breaker(window, self._clock)
        lane.halted = self._halted or self._down.get(destination)
        self._lanes[destination] = lane
        self._lane_list.append(lane)
        return lane

    def halt(self, reason: str) -> None:
        """Halt every lane, and lanes opened later: no new request starts.

        What is in flight finishes; what is queued or waiting to retry ends now, cut short
        by ``reason``.
        """
        if self._halted is not None:
            return
        self._halted = reason
        for lane in self._lane_list:
            self._halt_lane(lane, reason)

    def halt_destination(self, destination: str, reason: str) -> None:
        """Send no more to ``destination``: a pool judged it misconfigured."""
        lane = self._lanes.get(destination) or self._open_lane(destination)
        self._halt_lane(lane, reason)

    def destination_down(self, destination: str, reason: str) -> None:
        """Send no more to ``destination``: a breaker (this engine's or another's) says down."""
        if destination in self._down:
            return
        self._down[destination] = reason
        self.halt_destination(destination, reason)

    def _deadline_reached(self) -> None:
        self._deadline_timer = None
        logger.debug("the deadline is reached: no new request starts")
        self.halt(DEADLINE)

    def _judge_down(self, lane: _Lane, status: int | None, answer: Classification) -> str | None:
        """Feed one attempt to the lane's breaker; the stop reason if it declares it down."""
        breaker = lane.breaker
        if breaker is None or not breaker.answer(status, answer):
            return None
        destination = lane.destination
        reason = down_reason(destination, breaker.window)
        # whoever hears of it tells the run (which says so once, for every sender)
        logger.log(
            logging.DEBUG if self._on_down is not None else logging.WARNING,
            "%s is down: nothing but timeouts, connection errors and 5xx for %s (%d answers); "
            "no more requests go to it",
            destination,
            format_duration(breaker.window),
            breaker.failures,
        )
        self.destination_down(destination, reason)
        if self._on_down is not None:
            self._on_down(destination, reason)
        return reason

    def _halt_lane(self, lane: _Lane, reason: str) -> None:
        """Send no more to ``lane``: its queued and waiting requests end, cut short by reason."""
        if lane.halted is None:
            lane.halted = reason
        while lane.queue:
            self._cut_short(lane.queue.popleft(), reason)
        for task, (waiting_lane, item) in list(self._delayed.items()):
            # a task that is done has put its request back in the lane (or cut it short)
            # already: it is in the queue, in flight or finished, and only its done-callback,
            # a turn of the loop later, has not forgotten it yet; cut short again, it was
            # finished twice (the sender pool's KeyError)
            if waiting_lane is lane and not task.done():
                del self._delayed[task]
                task.cancel()
                self._cut_short(item, reason)

    def _cut_short(self, item: _Item, reason: str) -> None:
        """Finish a request that a stop kept from being sent (again)."""
        request, attempts, _, ambiguous, resent, reconnects = item
        text = f"not attempted: {reason}" if attempts == 0 else f"not retried: {reason}"
        delivery = Delivery(
            request.message, False, None, text, attempts, reason, ambiguous, resent, reconnects
        )
        self._finish(request, delivery)

    def _kick(self) -> None:
        """Wake (or start) as many workers as there are requests that may be sent now."""
        demand = -self._waking
        for lane in self._lane_list:
            demand += lane.demand()
        idle = self._idle
        while demand > 0:
            if idle:
                waiter = idle.pop()
                if waiter.done():  # cancelled by close()
                    continue
                waiter.set_result(None)
            elif len(self._workers) < self._concurrency:
                self._workers.append(self._loop.create_task(self._work()))
            else:
                return
            self._waking += 1
            demand -= 1

    async def _work(self) -> None:
        """One worker: send whatever may be sent, park when nothing may."""
        self._waking -= 1
        mark = mark_attempts()  # this worker's: whether its attempt's request went out
        while True:
            picked = self._next()
            if picked is None:
                waiter = self._loop.create_future()
                self._idle.append(waiter)
                await waiter
                self._waking -= 1
                continue
            lane, item = picked
            try:
                await self._send(lane, item, mark)
            except Exception as error:
                # A bug, not a network outcome: still accounted for, never silently lost.
                self._internal_error(item[0], error)

    def _next(self) -> tuple[_Lane, _Item] | None:
        """The next request to send and its lane, its slot taken; None when nothing may go.

        Lanes take turns, and a lane is skipped while at its adaptive concurrency limit.
        """
        lanes = self._lane_list
        count = len(lanes)
        for offset in range(count):
            index = (self._turn + offset) % count
            lane = lanes[index]
            queue, limit, pace = lane.queue, lane.limit, lane.pace
            while queue and (limit is None or limit.available):
                item = queue.popleft()
                if pace is not None and not item[2]:
                    wait = pace.limiter.reserve()
                    if wait > 0:
                        # waiting for the adaptive rate is not being in flight: outside the
                        # slot, and outside the worker
                        self._later(lane, _paced(item), wait)
                        continue
                if limit is not None and not limit.try_acquire():
                    queue.appendleft(_paced(item))
                    break
                self._turn = index + 1
                return lane, item
        return None

    async def _lease_lost(self) -> str | None:
        """Why the run's locks are no longer its own (send nothing), or None: go on.

        Waits while its heartbeat is behind (the run was frozen), holding the request's slot
        so that nothing else is sent meanwhile.
        """
        watch = self._lease
        if watch is None:
            return None
        while (standing := watch.check()) is Standing.BEHIND:
            await self._sleep(_LEASE_POLL_SECONDS)
        if standing is Standing.LOST:
            return watch.reason
        return None

    async def _send(self, lane: _Lane, item: _Item, mark: AttemptMark) -> None:
        """One attempt of ``item`` (its slot taken by :meth:`_next`), then its outcome.

        ``mark`` is the worker's: it tells an ambiguous failure from a connection error.
        """
        request, attempts, _, ambiguous, resent, reconnects = item
        limit = lane.limit
        status: int | None = None
        error: BaseException | None = None
        retry_after: str | None = None  # or the Location of a redirect
        body: Body | None = None
        now: float | None = None
        stopped: str | None = None
        lost: str | None = None
        try:
            cap = lane.cap
            if cap is not None:
                # the --max-rps cap is taken inside the slot, right before the send, so that
                # sends are spaced exactly as their reservations
                wait = cap.reserve()
                if wait > 0:
                    await self._sleep(wait)
                    if lane.halted is not None:  # halted meanwhile: this one never starts
                        self._cut_short(item, lane.halted)
                        return
            # right before the request: a freeze may have ended a moment ago (a clock reading
            # while the lease is surely held; no coroutine for that)
            lease = self._lease
            if lease is not None and lease.check() is not Standing.HELD:
                lost = await self._lease_lost()
                if lost is not None:
                    return
            attempts += 1
            started = self._clock() if limit is not None else 0.0
            while True:
                mark.reset()
                try:
                    # encoded=True: the URL is sent byte for byte as rendered (signatures cover
                    # it). A redirect is never followed: it did not reach the service.
                    proxy = lane.proxy if lane.proxy_known else self._lane_proxy(lane, request.url)
                    session = self._one_shot_session if lane.one_shot else self._session
                    async with session.get(
                        URL(request.url, encoded=True), allow_redirects=False, proxy=proxy
                    ) as response:
                        status = response.status
                        answer = classify(status, None)
                        if not answer.delivered:
                            retry_after = response.headers.get(
                                "Location" if answer.redirect else "Retry-After"
                            )
                        # never more than 64 KiB of a body in memory, whatever its size
                        body = await read_capped(response)
                except _TRANSPORT_ERRORS as caught:
                    error = caught
                    answer = classify(status, caught, sent=mark.sent)
                # the service may have counted this message more than once: a request went
                # out again after one that went out without an answer
                if ambiguous and (status is not None or answer.ambiguous):
                    resent = True
                if answer.ambiguous:
                    ambiguous += 1
                if mark.uses == 1 and not lane.one_shot:
                    self._judge_reuse(lane, error is not None and stale_connection(error, mark))
                if (
                    error is None
                    or status is not None  # answered: the status says what came of it
                    or reconnects >= FREE_RECONNECTS
                    or not self._config.retry.retry_ambiguous
                    or lane.halted is not None
                    or not stale_connection(error, mark)
                ):
                    break
                # A reused connection the server had closed (idle, used up): not the
                # service failing, so at once, on another connection, and no attempt, no
                # back-pressure, no breaker; still ambiguous (counted above): the server
                # may have read the request before it closed.
                reconnects += 1
                self._tally_reconnects += 1
                logger.debug(
                    "reconnecting for %s/%s: %s",
                    request.message.destination,
                    request.message.kind,
                    self._redact(f"{type(error).__name__}: {error}"),
                )
                error = None
            delivered = answer.delivered
            if limit is not None:
                now = self._clock()
                pushed_back = answer.push_back
                before = limit.limit
                limit.record(now - started, pushed_back, now)
                if lane.pace is not None:
                    lane.pace.record(delivered and error is None, pushed_back, now)
                if limit.limit > before:
                    # at most once per round trip: wake or start workers for the new room
                    self._kick()
            if delivered and self._on_delivered is not None:
                # a 2xx counts as delivered even when its body was cut short: the service has
                # counted it, so the ledger must know it too. Still holding the slot: a kill
                # now loses at most the slots in flight
                try:
                    self._on_delivered(request, ambiguous)
                except Exception as hook_error:
                    # delivered, but the next run would send it again: stop sending
                    stopped = self._redact(str(hook_error) or type(hook_error).__name__)
        finally:
            if limit is not None:
                limit.release()
            if lost is not None:
                self._lose_lease(item, lost)
        self._record(status, error, now)
        message = request.message
        watch = lane.watch
        misconfigured = False
        if watch is not None and status is not None:
            # only a redirect's time matters: no clock reading for the others
            if answer.redirect and now is None:
                now = self._clock()
            misconfigured = watch.answer(answer, now or 0.0)
        down = None if lane.breaker is None else self._judge_down(lane, status, answer)
        blocked = lane.blocked
        cut_off = False
        # the hot path (delivered before, no row going on) skips the watch
        if answer.blocked or blocked.blocked or not blocked.delivered:
            if answer.blocked and now is None:
                now = self._clock()
            cut_off = blocked.attempt(answer, status, now or 0.0)
        if delivered:
            delivery = Delivery(
                message, True, status, None, attempts, stopped, ambiguous, resent, reconnects
            )
            self._finish(request, delivery)
            if stopped is not None:
                self.halt(stopped)
                if self._stop is not None:
                    self._stop.trip(stopped)
            return
        policy = self._config.retry
        verdict = answer.verdict
        if answer.redirect and status is not None:
            reason = self._redact(redirect_reason(status, request.url, retry_after))
            if misconfigured and watch is not None and lane.halted is None:
                stopped = watch.reason(message.destination, reason)
                logger.warning("%s; no more requests go to it", stopped)
                delivery = Delivery(
                    message, False, status, reason, attempts, stopped, ambiguous, resent, reconnects
                )
                self._finish(request, delivery)
                self._halt_lane(lane, stopped)
                return
        elif answer.blocked:
            reason = self._redact(self._blocked_reason(error, request.url, lane.proxy))
            if cut_off and lane.halted is None and message.destination not in self._down:
                stopped = lane.blocked.reason(message.destination, reason)
                # whoever hears of it tells the run (which says so once, for every sender)
                logger.log(
                    logging.DEBUG if self._on_down is not None else logging.WARNING,
                    "%s; no more requests go to it",
                    stopped,
                )
                delivery = Delivery(
                    message, False, status, reason, attempts, stopped, ambiguous, resent
                )
                self._finish(request, delivery)
                # as a breaker's: every sender of the run (every sender process) stops it
                self.destination_down(message.destination, stopped)
                if self._on_down is not None:
                    self._on_down(message.destination, stopped)
                return
        else:
            reason = self._describe(status, error, body, answer.ambiguous, lane.proxy)
        halted = lane.halted
        again = policy.retries(answer, attempts)
        if halted is not None and again:
            text = f"{reason}; not retried: {halted}"
            delivery = Delivery(
                message, False, status, text, attempts, halted, ambiguous, resent, reconnects
            )
            self._finish(request, delivery)
            return
        if not again:
            if answer.ambiguous and verdict is Verdict.RETRIABLE and policy.can_retry(attempts):
                # sent again, it could be counted twice: the user decides (a replay)
                reason = f"{reason}; {NOT_RETRIED}"
            logger.debug(
                "failed %s/%s after %d attempts: %s",
                message.destination,
                message.kind,
                attempts,
                reason,
            )
            delivery = Delivery(
                message, False, status, reason, attempts, down, ambiguous, resent, reconnects
            )
            self._finish(request, delivery)
            return
        wait = policy.delay(
            attempts - 1, self._rng, parse_retry_after(retry_after, self._wall_clock())
        )
        self._tally_retries += 1
        logger.debug(
            "retrying %s/%s in %.3f s after attempt %d: %s",
            message.destination,
            message.kind,
            wait,
            attempts,
            reason,
        )
        self._later(lane, (request, attempts, False, ambiguous, resent, reconnects), wait)

    @property
    def _one_shot_session(self) -> aiohttp.ClientSession:
        """The session of the lanes whose connections serve one answer each (made once)."""
        if self._one_shot is None:
            raise RuntimeError("no lane is one-shot")  # _judge_reuse opens it first
        return self._one_shot

    def _judge_reuse(self, lane: _Lane, closed: bool) -> None:
        """Count a request on a connection's second use; make ``lane`` one-shot past the ratio.

        ``closed``: it met a close the server or proxy had not announced.
        """
        lane.second_uses += 1
        if not closed:
            return
        lane.closed_second_uses += 1
        closes = lane.closed_second_uses
        if closes < ONE_SHOT_CLOSES or 2 * closes < lane.second_uses:
            return
        if self._one_shot is None:
            self._one_shot = self._new_session(one_shot=True)
        lane.one_shot = True
        via = "its proxy" if lane.proxy else "its server"
        logger.warning(
            "%s: %s closes connections after each answer without saying so (%d of %d "
            "connections were closed under their second request): each request now opens "
            "its own",
            lane.destination,
            via,
            closes,
            lane.second_uses,
        )

    def _lane_proxy(self, lane: _Lane, url: str) -> str | None:
        """The proxy of ``lane``'s requests, from its first URL (a destination has one base)."""
        lane.proxy = self._config.network.proxy_for(url)
        lane.proxy_known = True
        return lane.proxy

    @staticmethod
    def _blocked_reason(error: BaseException | None, url: str, proxy: str | None) -> str:
        """The one line of a blocked attempt: the host, and what refused it.

        ``error`` None: the answer was a proxy's 407 (a forwarded http:// request).
        """
        target = URL(url, encoded=True)
        host, port = target.host or "?", target.port
        if error is None:
            return proxy_auth_reason(shown_proxy(proxy) if proxy else None, host, port)
        if isinstance(error, aiohttp.ClientHttpProxyError):
            shown = shown_proxy(proxy) if proxy else "?"
            return proxy_refused_reason(shown, host, port, error.status, error.message)
        if isinstance(error, aiohttp.ClientSSLError):  # the TLS peer: the service, never a proxy
            host, port = error.host, error.port
        handshake = handshake_failure(error)
        if handshake is not None:
            return handshake_reason(host, port, handshake)
        detail = certificate_detail(error) or str(error)
        return certificate_reason(host, port, detail)

    def _lose_lease(self, item: _Item, reason: str) -> None:
        """The run's lock is another's: ``item`` is not sent, and the whole run stops."""
        self._cut_short(item, reason)
        self.halt(reason)
        if self._stop is not None:
            self._stop.trip(reason)

    def _later(self, lane: _Lane, item: _Item, wait: float) -> None:
        """Put ``item`` back at the head of its lane after ``wait`` seconds (always slept)."""
        task = self._loop.create_task(self._requeue(lane, item, wait))
        self._delayed[task] = (lane, item)
        task.add_done_callback(self._forget_delayed)

    def _forget_delayed(self, task: asyncio.Task[None]) -> None:
        self._delayed.pop(task, None)

    async def _requeue(self, lane: _Lane, item: _Item, wait: float) -> None:
        await self._sleep(wait)
        if lane.halted is not None:
            self._cut_short(item, lane.halted)
            return
        lane.queue.appendleft(item)
        self._kick()

    def _internal_error(self, request: Request, error: Exception) -> None:
        text = self._redact(f"internal error: {type(error).__name__}: {error}")
        logger.error("%s (%s)", text, request.message.kind)
        self._finish(request, Delivery(request.message, False, None, text, 0))

    def _record(self, status: int | None, error: BaseException | None, now: float | None) -> None:
        """Count one attempt; log a progress line when one is due (``now``: a fresh reading)."""
        key: _OutcomeKey = status if status is not None else type(error)
        outcomes = self._tally_outcomes
        outcomes[key] = outcomes.get(key, 0) + 1
        self._tally_sent += 1
        if not self._publishing:
            self._publishing = True
            self._loop.call_soon(self._publish)
        if now is None:
            now = self._clock()
        if self._progress.due(now):
            self._progress.line(
                now,
                self._tally_sent,
                self._tally_retries,
                self._tally_failed,
                tuple(self._down),
                delivered=self._tally_delivered,
                total=self._submitted,
            )

    def _finish(self, request: Request, delivery: Delivery) -> None:
        self._done.append(delivery)
        self._tokens.append(request.token)
        if delivery.delivered:
            self._tally_delivered += 1
        else:
            self._tally_failed += 1
        if not self._publishing:
            self._publishing = True
            self._loop.call_soon(self._publish)

    def _publish(self) -> None:
        """Hand what finished this turn of the loop, and the counts, to ``on_finished``."""
        self._publishing = False
        done, self._done = self._done, []
        tokens, self._tokens = self._tokens, []
        self._outstanding -= len(done)
        self._on_finished(done, tokens)

    def _describe(
        self,
        status: int | None,
        error: BaseException | None,
        body: Body | None = None,
        ambiguous: bool = False,
        proxy: str | None = None,
    ) -> str:
        """A redacted reason for a non-delivered attempt, quoting the start of its body.

        An ambiguous attempt's reason says that the service may have received it; one whose
        request never left says that it never reached the service, and why
        (:func:`~beaconflow.delivery.ambiguity.never_reached`), and through which proxy
        when the connection did not come in time (``proxy``: the lane's, credentials and
        all; only its shown form is written).
        """
        parts = []
        if status is not None:
            text = "" if body is None else reason_text(body, self._redact)
            parts.append(with_body(f"HTTP {status}", text))
        unreached = None
        if error is not None and status is None and not ambiguous:
            unreached = never_reached(error, self._config.timeout)
        if unreached is not None:
            if proxy is not None and isinstance(error, TimeoutError):
                # the proxy (or its tunnel) is what kept the connection from coming
                unreached += f" (through proxy {shown_proxy(proxy)})"
            parts.append(unreached)
        elif error is not None:
            detail = str(error)
            if not detail and isinstance(error, TimeoutError):
                detail = f"no response within {self._config.timeout:g} s"
            parts.append(f"{type(error).__name__}: {detail}" if detail else type(error).__name__)
        if ambiguous:
            parts.append(MAY_HAVE_BEEN_RECEIVED)
        return self._redact("; ".join(parts))


def _paced(item: _Item) -> _Item:
    """``item`` with its wait for the adaptive rate over."""
    request, attempts, _, ambiguous, resent, reconnects = item
    return request, attempts, True, ambiguous, resent, reconnects
