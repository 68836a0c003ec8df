"""The Beam side of delivery: a PTransform that sends messages and splits the outcomes.

:class:`SendMessages` takes a ``PCollection[Message]``, spreads it over workers with
``Reshuffle`` (unless ``reshuffle=False``: input just grouped by key is spread already) and
sends it through one :class:`~beaconflow.delivery.sender.Sender` per ``DoFn`` instance, opened
in ``setup`` and closed in ``teardown``: a :class:`~beaconflow.delivery.sender.BulkSender` (the
send engine on a thread of the worker) or, with sender processes, the worker's
:class:`~beaconflow.delivery.sendproc.PoolClient`. Its main output ``delivered`` holds the delivered
:class:`~beaconflow.delivery.sender.Delivery` records, the tagged output ``failed`` the others,
each with a redacted reason: nothing is dropped. A message the service may have counted
more than once (a request of it went out again after one that got no answer:
:attr:`~beaconflow.delivery.sender.Delivery.ambiguous_resent`) is counted in
``messages_ambiguous`` besides its outcome; its free reconnects (requests sent again at
once because a reused keep-alive connection was closed under them) in ``reconnects``.
Counters live in the ``beaconflow`` namespace. Run its test with::

    python -m pytest tests/transforms/test_send.py

``--max-rps`` is a run-wide rate: each of ``workers`` processes sends at ``max_rps/workers``,
shared by every sender thread of the process. The input is expected in the global window
(a batch run), as outputs finished at the end of a bundle are emitted there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import apache_beam as beam
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import DoOutputsTuple, PCollection, TaggedOutput
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from beaconflow.delivery.breaker import DEFAULT_WINDOW
from beaconflow.delivery.ledger import LedgerError, LedgerWriter
from beaconflow.delivery.ledger_identity import endpoint_fingerprint
from beaconflow.delivery.ledger_lock import Lease
from beaconflow.delivery.logline import adopt as adopt_log_format
from beaconflow.delivery.network import Network
from beaconflow.delivery.redact import Redactor, redact_library_logs
from beaconflow.delivery.retry import RetryPolicy
from beaconflow.delivery.sender import BulkSender, Delivery, Request, Sender, SenderConfig
from beaconflow.delivery.sendproc import PoolClient, shared_client
from beaconflow.delivery.stop import RunStop, run_stop
from beaconflow.model.message import Destination, Endpoint, Message
from beaconflow.model.render import render_url
from beaconflow.report.counts import (
    AMBIGUOUS,
    DELIVERED_AT,
    FAILED_AT,
    NOT_ATTEMPTED,
    RECONNECTS,
    STOPPED,
)
from beaconflow.transforms.old_messages import FROM_OLD_DAYS, warn_first_old
from beaconflow.transforms.tallies import CountsTallies

#: The tag of the output holding messages that were not delivered.
FAILED = "failed"
#: The tag of the main output, delivered messages.
DELIVERED = "delivered"
#: The tag of the output holding per-bundle counts of delivered and failed messages.
TALLY = CountsTallies.tally_tag
#: Messages handed to the sender's loop at once: one wake-up per batch, not per message.
_BATCH = 32
#: The namespace of every beaconflow counter.
NAMESPACE = "beaconflow"

_Failed = TaggedOutput[str, Delivery]


@dataclass(frozen=True)
class SendConfig:
    """Where to send and how hard, for the whole run.

    ``endpoints``: the destinations that can be sent to; messages for any other destination
    fail with a reason. ``concurrency``: requests in flight per sender (one sender per worker
    thread). ``timeout``: seconds per attempt. ``retry``: the retry policy. ``max_rps``:
    requests/s per destination for the whole run; absent or None means unlimited.
    ``workers``: how many worker processes share ``max_rps`` (>= 1). ``progress_interval``:
    seconds between progress lines of each sender. ``ledger``: a delivery-ledger directory
    that every delivered message is recorded in, or None. ``adaptive``: adapt the concurrency
    per destination up to ``concurrency`` (False: always ``concurrency``). ``emit_delivered``:
    False leaves the main output empty (a backfill only counts deliveries, through the
    ``tally`` output: ``(counter, destination, kind, n)`` per bundle). ``processes``: send
    from this many child processes per worker (:mod:`beaconflow.delivery.sendproc`), sharing its
    ``concurrency`` and rates; 0 sends from a thread of the worker itself. ``lease``: the
    run's hold on its ledger locks, which every sender checks before each request (None:
    none to check). ``run_id``
    names the run's :func:`~beaconflow.delivery.stop.run_stop` flag, which every sender of a
    worker obeys (a ledger that cannot be written trips it). ``fingerprints``: destination ->
    the ledger fingerprint its deliveries are recorded under (the pipeline's, see
    :class:`~beaconflow.delivery.ledger_identity.LedgerIdentity`); empty: each endpoint's
    own, by its URL and key. ``deadline``: the wall-clock instant (epoch seconds) from which
    no request starts, None for none; ``breaker_window``: the circuit breaker's window in
    seconds, None for no breaker (:class:`~beaconflow.delivery.sender.SenderConfig`).
    ``network``: the proxies and CA bundles every sender uses, resolved in the driver
    (:class:`~beaconflow.delivery.network.Network`: the CA certificates travel as text).
    """

    endpoints: Mapping[Destination, Endpoint]
    concurrency: int
    timeout: float
    retry: RetryPolicy
    max_rps: Mapping[Destination, float | None] = field(default_factory=dict)
    workers: int = 1
    progress_interval: float = 10.0
    ledger: str | None = None
    adaptive: bool = True
    emit_delivered: bool = True
    processes: int = 0
    run_id: str = ""
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    deadline: float | None = None
    breaker_window: float | None = DEFAULT_WINDOW
    lease: Lease | None = None
    #: Kontagent messages of events of days before this one (days since 1970-01-01) are
    #: counted as messages_from_old_days, the first said on stderr; None: not judged
    old_before_day: int | None = None
    network: Network = field(default_factory=Network)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.processes < 0:
            raise ValueError(f"processes must be >= 0, got {self.processes}")
        for destination, endpoint in self.endpoints.items():
            if endpoint.destination != destination:
                raise ValueError(
                    f"the {endpoint.destination} endpoint is configured for {destination}"
                )
        # Validates the per-process values (concurrency, timeout, rates) early, at
        # construction time, rather than on a worker.
        self.sender_config()

    def sender_config(self) -> SenderConfig:
        """The per-process sender configuration: each run-wide rate divided by ``workers``."""
        rates: dict[str, float | None] = {
            destination: None if rate is None else rate / self.workers
            for destination, rate in self.max_rps.items()
        }
        return SenderConfig(
            concurrency=self.concurrency,
            timeout=self.timeout,
            retry=self.retry,
            rates=rates,
            progress_interval=self.progress_interval,
            adaptive=self.adaptive,
            deadline=self.deadline,
            breaker_window=self.breaker_window,
            lease=self.lease,
            network=self.network,
        )

    def secrets(self) -> tuple[str, ...]:
        """Every endpoint secret and the proxies' credentials, for redaction."""
        return (
            tuple(secret for endpoint in self.endpoints.values() for secret in endpoint.secrets())
            + self.network.secrets()
        )

    def ledger_fingerprints(self) -> dict[str, str]:
        """Destination -> the fingerprint its deliveries are recorded under."""
        return dict(self.fingerprints) or {
            str(d): endpoint_fingerprint(e) for d, e in self.endpoints.items()
        }

    def pool_client(self) -> PoolClient:
        """A client of this process's sender processes for this configuration (``processes``).

        The first call starts them; every later one, from any send step of the process with
        an equal configuration, shares them (:func:`~beaconflow.delivery.sendproc.shared_client`).
        """
        return shared_client(
            self.sender_config(),
            self.secrets(),
            processes=self.processes,
            ledger=self.ledger,
            fingerprints=self.ledger_fingerprints(),
            run_id=self.run_id,
        )


def start_senders(config: SendConfig) -> PoolClient | None:
    """Start the sender processes now, for the send steps that will run in this process.

    Beam sets a send step up when its first bundle comes, after the grouping of every event
    has been read: started then, the processes import their libraries (about 0.3 CPU
    seconds each) while the pipeline waits for them to send. Started before the run (the
    command does it when its workers run in its own process), they do it while the pipeline
    reads and parses, which keeps one core busy of the machine's: the send steps find them
    ready. Close the client after the run (the processes stop with the last client). None
    when ``config`` sends from no processes.
    """
    return config.pool_client() if config.processes else None


class _SendDoFn(CountsTallies, beam.DoFn):
    """Submits each message to a BulkSender and emits deliveries as they finish."""

    def __init__(self, config: SendConfig) -> None:
        super().__init__()
        self._config = config
        self._sender: Sender | None = None
        self._ledger: LedgerWriter | None = None
        # seals the ledger journals at the end of a bundle: ours, or the sender processes'
        self._seal: Callable[[], None] | None = None
        self._redact = Redactor.of(config.secrets())
        self._delivered = Metrics.counter(NAMESPACE, "delivered")
        self._failed = Metrics.counter(NAMESPACE, "failed")
        self._attempts = Metrics.counter(NAMESPACE, "attempts")
        self._retries = Metrics.counter(NAMESPACE, "retries")
        self._unsendable = Metrics.counter(NAMESPACE, "unsendable")
        self._ambiguous = Metrics.counter(NAMESPACE, "ambiguous")

    def setup(self) -> None:
        # on a worker process of its own, the driver's filters and log format are not installed
        config = self._config
        redact_library_logs(config.secrets())
        adopt_log_format(config.secrets())
        fingerprints = config.ledger_fingerprints()
        self._stop: RunStop = run_stop(config.run_id)
        if config.processes:
            # each sender process keeps a ledger journal of its own
            self._sender = config.pool_client()
            self._seal = None if config.ledger is None else self._sender.seal
            return
        if config.ledger is not None:
            self._ledger = LedgerWriter(config.ledger, fingerprints)
            self._seal = self._seal_ledger
        record = None if self._ledger is None else self._ledger.record_one
        self._sender = BulkSender(
            config.sender_config(), config.secrets(), on_delivered=record, stop=self._stop
        )

    def _seal_ledger(self) -> None:
        """Seal this worker's journal; a ledger that cannot be sealed stops the run."""
        assert self._ledger is not None
        try:
            self._ledger.seal()
        except LedgerError as error:
            self._stop.trip(str(error))

    def teardown(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._ledger is not None:
            try:
                self._ledger.close()
            except LedgerError as error:
                logging.getLogger("beaconflow").error("%s", error)
            self._ledger = None

    def start_bundle(self) -> None:
        super().start_bundle()
        self._batch: list[Request] = []

    def process(self, message: Message) -> Iterator[Delivery | _Failed]:
        sender = self._open_sender()
        old_before = self._config.old_before_day
        if (
            old_before is not None
            and message.destination == "kontagent"
            and message.day is not None
            and message.day < old_before
        ):
            self.count(FROM_OLD_DAYS, message.destination, message.kind)
            warn_first_old(self._config.run_id, message)
        endpoint = self._config.endpoints.get(message.destination)
        if endpoint is None:
            self._unsendable.inc()
            reason = f"no endpoint configured for {message.destination}"
            yield from self._outputs([Delivery(message, False, None, reason, 0)])
            return
        try:
            url = render_url(message, endpoint, time.time())
        except ValueError as error:
            self._unsendable.inc()
            reason = self._redact(f"cannot render the request: {error}")
            yield from self._outputs([Delivery(message, False, None, reason, 0)])
            return
        self._batch.append(Request(message, url))
        if len(self._batch) >= _BATCH:
            self._stop.note_sending()
            sender.submit_many(self._batch)
            self._batch = []
            yield from self._outputs(sender.take_finished())

    def finish_bundle(self) -> Iterator[WindowedValue | TaggedOutput[str, WindowedValue]]:
        sender = self._open_sender()
        if self._batch:
            self._stop.note_sending()
            sender.submit_many(self._batch)
            self._batch = []
        for output in self._outputs(sender.flush()):
            if isinstance(output, TaggedOutput):
                yield TaggedOutput(output.tag, GlobalWindows.windowed_value(output.value))
            else:
                yield GlobalWindows.windowed_value(output)
        if self._seal is not None:
            self._seal()
        if self._stop.reason is not None:
            # said once per bundle, even when no outcome of this bundle was cut short
            self.count(STOPPED, detail=self._stop.reason)
        for reason in self._stop.down.values():
            # likewise a destination down, even when it had nothing left to cut short
            self.count(STOPPED, detail=reason)
        yield from CountsTallies.finish_bundle(self)

    def _open_sender(self) -> Sender:
        if self._sender is None:
            raise RuntimeError("the sender is not open: setup() was not called")
        return self._sender

    def _outputs(self, deliveries: Sequence[Delivery]) -> Iterator[Delivery | _Failed]:
        attempts = delivered = failed = ambiguous = 0
        second = str(int(time.time()))
        # deliveries counted per destination and kind once per batch, not once each
        by_kind: dict[tuple[str, str], int] = {}
        for delivery in deliveries:
            attempts += delivery.attempts
            message = delivery.message
            if delivery.stop is not None:
                self.count(STOPPED, detail=delivery.stop)
            if delivery.ambiguous_resent:
                ambiguous += 1
                self.count(AMBIGUOUS, message.destination, message.kind)
            if delivery.reconnects:
                self.count(RECONNECTS, message.destination, message.kind, delivery.reconnects)
            if delivery.delivered:
                delivered += 1
                sent = (message.destination, message.kind)
                by_kind[sent] = by_kind.get(sent, 0) + 1
                if self._config.emit_delivered:
                    yield delivery
            else:
                failed += 1
                self.count("messages_failed", message.destination, message.kind)
                if delivery.stop is not None and delivery.attempts == 0:
                    self.count(NOT_ATTEMPTED, message.destination, message.kind)
                self.count(FAILED_AT, message.destination, detail=second)
                yield TaggedOutput(FAILED, delivery)
        for (destination, kind), n in by_kind.items():
            self.count("messages_delivered", destination, kind, n)
            self.count(DELIVERED_AT, destination, n=n, detail=second)
        if attempts:
            self._attempts.inc(attempts)
            # each message's tries beyond its first (unsendable messages made none)
            self._retries.inc(sum(max(0, d.attempts - 1) for d in deliveries))
        if delivered:
            self._delivered.inc(delivered)
        if failed:
            self._failed.inc(failed)
        if ambiguous:
            self._ambiguous.inc(ambiguous)


class SendMessages(beam.PTransform[PCollection[Message], DoOutputsTuple]):
    """Sends a ``PCollection[Message]``; outputs ``delivered`` (main) and ``failed``."""

    def __init__(
        self, config: SendConfig, label: str | None = None, *, reshuffle: bool = True
    ) -> None:
        super().__init__(label)
        self._config = config
        self._reshuffle = reshuffle

    def expand(self, messages: PCollection[Message]) -> DoOutputsTuple:
        if self._reshuffle:
            messages = messages | "Reshuffle" >> beam.Reshuffle()
        send = beam.ParDo(_SendDoFn(self._config))
        return cast(
            DoOutputsTuple, messages | "Send" >> send.with_outputs(FAILED, TALLY, main=DELIVERED)
        )
