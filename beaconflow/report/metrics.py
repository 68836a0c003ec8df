"""The run's metrics for Prometheus: a node-exporter textfile and a Pushgateway push.

:func:`metric_families` turns a :class:`~beaconflow.report.run.RunReport` (or only the exit
status of a run that ended without one) into Prometheus metric families, built with the
official ``prometheus_client`` library in a private registry. :func:`write_textfile`
writes them atomically for the node-exporter textfile collector, keeping the last success
time of the file it replaces when the run failed; :func:`push` sends them to a Pushgateway,
replacing the group on success and leaving the gateway's last success time alone on failure.
Every name is listed in docs/outputs.md, "Metrics". Try it with::

    beaconflow --sandbox --input 'sample_data/game_events*' --metrics-textfile out/beaconflow.prom
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    push_to_gateway,
    pushadd_to_gateway,
)
from prometheus_client.parser import text_string_to_metric_families

from beaconflow.report.run import COUNTERS, RunReport

#: The Pushgateway's job label: fixed, so that every night lands in the same group.
JOB = "beaconflow"
#: The label --metrics-pipeline sets on every metric (and in the Pushgateway's grouping key).
PIPELINE_LABEL = "pipeline"
#: Set on success (exit 0) only; a failed run carries the earlier value over.
LAST_SUCCESS = "beaconflow_last_success_timestamp_seconds"
#: Seconds a push may take before it is given up (a warning; the run's status stands).
PUSH_TIMEOUT = 10.0

#: The outcomes of a message that report.json breaks down per destination and per type
#: (``by_destination``, ``by_type``): the ``messages_*`` counters without their prefix.
MESSAGE_OUTCOMES = tuple(
    name.removeprefix("messages_") for name in COUNTERS if name.startswith("messages_")
)

#: report.json's keys that have no metric, and why (the rest all have one).
NOT_EXPORTED: Mapping[str, str] = {
    "messages_by_day": "a label per event day would start new series every night",
    "dead_letter_reasons": "free text: a label per reason would have no bound",
    "send_timeline": "a series within the run; Prometheus samples the run's end",
    "properties_left_out": "property names come from the data: a label per name has no bound",
    "chunking": "per-chunk rows, whose sums are the report's counts; see beaconflow_chunks",
    "invariant_errors": "texts; beaconflow_run_invariant_errors counts them",
    "mapping_rules_unmatched": "their rules are beaconflow_mapping_rule_records_total at 0",
    "stopped": "a text; beaconflow_run_stopped says whether",
    "lookback_days_missing": "dates; beaconflow_lookback_days_missing counts them",
    "network": "a proxy's URL and CA bundles' paths: texts of the run's configuration",
    "inputs": "paths",
    "report": "a path",
    "dead_letter": "a path",
    "dry_run": "a path; beaconflow_run_dry_run says whether",
    "ledger": "a path",
    "date": "a date label would start new series every night",
    "deadline": "an instant given on the command line",
    "destinations": "the destination label of the per-destination metrics",
    "sandbox": "beaconflow_run_sandbox",
    "partial": "beaconflow_run_counts_known",
    "interrupted": "beaconflow_run_interrupted",
    "exit_status": "beaconflow_run_exit_status",
    "elapsed_seconds": "beaconflow_run_duration_seconds",
    "messages_per_second": "beaconflow_run_messages_per_second",
    "started_at": "beaconflow_run_end_timestamp_seconds less beaconflow_run_duration_seconds",
    "ended_at": "beaconflow_run_end_timestamp_seconds",
    "version": "beaconflow_build_info's version label",
    "command": "a text (secrets masked)",
    "since": "a date label would start new series with every window",
    "until": "a date label would start new series with every window",
}


@dataclass(frozen=True)
class RunMetrics:
    """What the metrics say of one run: its status, when it ended, how long it took.

    ``report``: None for a run that ended without one (a usage error, exit 75, a second
    signal): only the run's own gauges are written then. ``labels``: added to every sample
    (``{"pipeline": NAME}`` with --metrics-pipeline; empty by default).
    """

    status: int
    ended: float
    duration: float
    report: RunReport | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == 0


def _version() -> str:
    try:
        return version("beaconflow")
    except PackageNotFoundError:
        return "unknown"


class _Families:
    """Metric families sharing the run's labels."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.names = tuple(labels)
        self.values = tuple(labels.values())
        self.made: list[Metric] = []

    def gauge(self, name: str, doc: str, value: float) -> None:
        family = GaugeMetricFamily(name, doc, labels=self.names)
        family.add_metric(self.values, value)
        self.made.append(family)

    def counter(self, name: str, doc: str, value: float) -> None:
        family = CounterMetricFamily(name, doc, labels=self.names)
        family.add_metric(self.values, value)
        self.made.append(family)

    def counters(
        self, name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], int]]
    ) -> None:
        family = CounterMetricFamily(name, doc, labels=(*self.names, *labels))
        for values, value in rows:
            family.add_metric((*self.values, *values), value)
        self.made.append(family)


def metric_families(run: RunMetrics, last_success: float | None) -> list[Metric]:
    """The run's metric families; ``last_success``: the time to write, None for none."""
    made = _Families(run.labels)
    made.gauge("beaconflow_run_exit_status", "The exit status of the last run.", run.status)
    made.gauge(
        "beaconflow_run_end_timestamp_seconds",
        "When the last run ended (Unix time).",
        run.ended,
    )
    made.gauge(
        "beaconflow_run_duration_seconds", "How long the last run took.", round(run.duration, 3)
    )
    if last_success is not None:
        made.gauge(
            LAST_SUCCESS,
            "When a run last ended with exit status 0 (Unix time).",
            last_success,
        )
    info = GaugeMetricFamily(
        "beaconflow_build_info",
        "The beaconflow version of the last run.",
        labels=(*made.names, "version"),
    )
    info.add_metric((*made.values, _version()), 1)
    made.made.append(info)
    report = run.report
    made.gauge(
        "beaconflow_run_counts_known",
        "1 when the counts below are the last run's; 0 when it ended without them.",
        0 if report is None or report.partial else 1,
    )
    if report is None:
        return made.made
    _run_gauges(made, report)
    if not report.partial:
        _counts(made, report)
    return made.made


def _run_gauges(made: _Families, report: RunReport) -> None:
    flags = (
        ("beaconflow_run_stopped", "1 when the last run stopped early (exit 4).", report.stopped),
        ("beaconflow_run_interrupted", "1 when a signal stopped the last run.", report.interrupted),
        ("beaconflow_run_dry_run", "1 when the last run was a dry run.", report.dry_run),
        ("beaconflow_run_sandbox", "1 when the last run sent to the sandbox.", report.sandbox),
    )
    for name, doc, value in flags:
        made.gauge(name, doc, 1 if value else 0)
    made.gauge(
        "beaconflow_run_invariant_errors",
        "The report's invariants that did not hold in the last run.",
        len(report.invariant_errors),
    )


def _counts(made: _Families, report: RunReport) -> None:
    made.gauge(
        "beaconflow_run_messages_per_second",
        "Messages delivered per second of the last run.",
        report.messages_per_second,
    )
    for name in COUNTERS:
        made.counter(
            f"beaconflow_{name}", f"The last run's {name} (report.json).", getattr(report, name)
        )
    made.counter("beaconflow_input_files", "Input files the last run read.", report.files)
    made.counter(
        "beaconflow_dead_letter_salvaged",
        "Dead-letter entries of a killed earlier run kept in the last run's dead letter.",
        report.dead_letter_salvaged,
    )
    made.gauge(
        "beaconflow_lookback_days_missing",
        "--lookback days whose input matched no file in the last run.",
        len(report.lookback_days_missing),
    )
    made.counters(
        "beaconflow_events_invalid_by_stage",
        "The last run's invalid events per stage.",
        ("stage",),
        (((stage,), n) for stage, n in report.invalid_by_stage.items()),
    )
    destinations = dict.fromkeys((*report.destinations, *report.by_destination))
    for outcome in MESSAGE_OUTCOMES:
        made.counters(
            f"beaconflow_messages_{outcome}_by_destination",
            f"The last run's messages_{outcome} per destination.",
            ("destination",),
            (
                ((name,), report.by_destination.get(name, {}).get(outcome, 0))
                for name in destinations
            ),
        )
        made.counters(
            f"beaconflow_messages_{outcome}_by_type",
            f"The last run's messages_{outcome} per destination and message type.",
            ("destination", "type"),
            (
                (_type_labels(key), counts.get(outcome, 0))
                for key, counts in (report.by_type or {}).items()
            ),
        )
    rules = {**dict.fromkeys(report.mapping_rules_unmatched, 0), **report.mapping_rules_matched}
    made.counters(
        "beaconflow_mapping_rule_records",
        "Records in which a rule of the --mapping found a value, in the last run.",
        ("rule",),
        (((rule,), n) for rule, n in rules.items()),
    )
    if report.sandbox_collector is not None:
        made.counters(
            "beaconflow_sandbox_collector_requests",
            "Requests the sandbox collector accepted, rejected and faulted in the last run.",
            ("outcome",),
            (((name,), n) for name, n in report.sandbox_collector.items()),
        )
    if report.chunking is not None:
        statuses: dict[str, int] = {}
        for row in report.chunking.get("chunks", ()):
            status = str(row.get("status", ""))
            statuses[status] = statuses.get(status, 0) + 1
        family = GaugeMetricFamily(
            "beaconflow_chunks",
            "The last run's chunks per status (done, resumed, stopped, not run).",
            labels=(*made.names, "status"),
        )
        for status, n in statuses.items():
            family.add_metric((*made.values, status), n)
        made.made.append(family)


def _type_labels(key: str) -> tuple[str, str]:
    """``kontagent/ins`` as its destination and type labels."""
    destination, _, kind = key.partition("/")
    return destination, kind


class _Registered:
    """A collector handing the registry families made beforehand."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def registry_of(families: Sequence[Metric]) -> CollectorRegistry:
    """A private registry (not the library's global one) holding ``families``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Registered(families))
    return registry


def exposition(families: Sequence[Metric]) -> bytes:
    """The families in Prometheus' text exposition format."""
    return generate_latest(registry_of(families))


def read_last_success(text: str, labels: Mapping[str, str]) -> float | None:
    """The last success time a textfile holds for ``labels``; None when it has none.

    Raises ValueError when the text is not Prometheus' text format.
    """
    for family in text_string_to_metric_families(text):
        if family.name != LAST_SUCCESS:
            continue
        for sample in family.samples:
            if sample.name == LAST_SUCCESS and dict(sample.labels) == dict(labels):
                return float(sample.value)
    return None


def write_textfile(path: str, run: RunMetrics, *, warn: Callable[[str], None]) -> None:
    """Write the run's metrics to ``path`` whole, or not at all (OSError).

    A temporary file beside ``path`` (not ending in ``.prom``: the collector reads only
    those) is written, flushed to disk and renamed over ``path``. A failed run carries the
    last success time of the file it replaces over; ``warn`` is told when that file cannot
    be read.
    """
    last_success = run.ended if run.succeeded else _carried(path, run.labels, warn)
    data = exposition(metric_families(run, last_success))
    folder = os.path.dirname(path) or "."
    temporary = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # the collector may run as another user: readable by all, as node-exporter's
            # textfile examples are (no secret is in it)
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(folder)


def _sync_folder(folder: str) -> None:
    """The rename itself reaches the disk (best effort: some filesystems refuse it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _carried(path: str, labels: Mapping[str, str], warn: Callable[[str], None]) -> float | None:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        warn(f"the last success time of {path} is lost: it could not be read: {_why(error)}")
        return None
    try:
        return read_last_success(text, labels)
    except ValueError as error:
        warn(f"the last success time of {path} is lost: it is not Prometheus' text: {error}")
        return None


def _why(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class Gateway:
    """A Pushgateway's address, its credentials apart (never printed)."""

    url: str
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> Gateway:
        """The gateway of a --pushgateway URL; ValueError when it is not one."""
        try:
            parts = urlsplit(text)
        except ValueError as error:
            raise ValueError(f"is not a URL: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has a port that is not a number") from None
        if parts.query or parts.fragment:
            raise ValueError("must not have a ?query or a #fragment")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = host if port is None else f"{host}:{port}"
        url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        username = None if parts.username is None else unquote(parts.username)
        password = None if parts.password is None else unquote(parts.password)
        return cls(url, username, password)

    @staticmethod
    def shown(text: str) -> str:
        """A --pushgateway URL as it may be printed: without its user name and password."""
        try:
            parts = urlsplit(text)
        except ValueError:
            return "(the URL given)"
        if "@" not in parts.netloc:
            return text
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.username, self.password) if s)

    def _handler(self) -> Callable[..., Callable[[], None]]:
        if self.username is None and self.password is None:
            return default_handler
        username, password = self.username or "", self.password or ""

        def handler(
            url: str, method: str, timeout: float | None, headers: Any, data: bytes
        ) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, username, password)

        return handler


def push(gateway: Gateway, run: RunMetrics, *, timeout: float = PUSH_TIMEOUT) -> None:
    """Push the run's metrics to the gateway's group ``job="beaconflow"`` (+ the labels).

    Success: the group is replaced (PUT) and holds the new last success time. Failure:
    the metrics are added (POST) without the last success time, so the gateway keeps the
    earlier one. Raises whatever the push raised (an OSError, an HTTP error).
    """
    # the grouping key carries the labels: the samples themselves do not repeat them
    bare = RunMetrics(run.status, run.ended, run.duration, run.report)
    registry = registry_of(metric_families(bare, run.ended if run.succeeded else None))
    send = push_to_gateway if run.succeeded else pushadd_to_gateway
    send(
        gateway.url,
        job=JOB,
        registry=registry,
        grouping_key=dict(run.labels),
        timeout=timeout,
        handler=gateway._handler(),
    )
