"""The report of one run, typed: what report.json holds, the stdout summary, report.html.

A :class:`RunReport` is built once, from the run's summed tallies
(:func:`beaconflow.report.counts.build_report`) and what the run knows of itself; report.json
is its :meth:`~RunReport.to_json`, the lines on stdout its :func:`summary` and the page
:func:`beaconflow.report.html.render_html` of it. :meth:`RunReport.from_json` reads a
report.json back (one of an older version, or edited by hand: a value of the wrong type is
taken as absent, never an error), so that a report can be rendered again. The keys are
documented in docs/outputs.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from beaconflow.model.words import plural

#: The outcomes of a read event, in the order the report lists them; they add up to read.
EVENT_COUNTERS = (
    "events_read",
    "events_invalid",
    "events_duplicate",
    "events_out_of_range",
    "events_already_dead_lettered",
    "events_mapped",
)
#: The outcomes of a built message; they add up to built.
MESSAGE_COUNTERS = (
    "messages_built",
    "messages_duplicate",
    "messages_skipped",
    "messages_too_old",
    "messages_delivered",
    "messages_failed",
    "messages_dry_run",
)

#: Every counter a report has a field for: the outcomes above, and the others.
COUNTERS = (
    *EVENT_COUNTERS,
    *MESSAGE_COUNTERS,
    "messages_from_old_days",
    "events_unrouted",
    "messages_not_attempted",
    "messages_invalid",
    "messages_already_dead_lettered",
    "messages_ambiguous",
    "reconnects",
    "ledger_files_read",
    "ledger_files_skipped",
)


@dataclass(frozen=True)
class RunReport:
    """Everything a run reports. Counts are 0 and descriptions empty when not known.

    The per-destination, per-type, per-day, reason and timeline breakdowns are JSON-shaped
    mappings, as report.json holds them; None stands for "this report has none" (an older
    report read back). ``report_written`` and ``report_html_written`` are the run's own
    knowledge of whether report.json and report.html reached the disk; they are not part of
    report.json.
    """

    events_read: int = 0
    events_invalid: int = 0
    events_duplicate: int = 0
    events_out_of_range: int = 0
    #: Records an earlier run with the same --ledger dead-lettered already (a --lookback
    #: night reading the day before again): not invalid again, not in this dead letter.
    events_already_dead_lettered: int = 0
    events_mapped: int = 0
    #: Mapped events that no configured destination takes (part of events_mapped).
    events_unrouted: int = 0
    messages_built: int = 0
    messages_duplicate: int = 0
    messages_skipped: int = 0
    #: Kontagent messages not sent because their events were --kontagent-max-age days old or
    #: older (an outcome of messages_built; not "already delivered")
    messages_too_old: int = 0
    messages_delivered: int = 0
    messages_failed: int = 0
    messages_dry_run: int = 0
    #: Failed messages that a stop kept from being sent at all (part of messages_failed).
    messages_not_attempted: int = 0
    #: Messages that could not be built for one destination (not part of messages_built);
    #: the event's other messages went on.
    messages_invalid: int = 0
    #: Messages that could not be built for one destination, whose map-stage entry an earlier
    #: run with the same --ledger dead-lettered already (not part of messages_invalid).
    messages_already_dead_lettered: int = 0
    #: Messages the service may have counted more than once: a request of theirs went out
    #: again after one that went out and got no answer (a timeout, a reset). Delivered or
    #: failed, so part of neither sum: they are counted there too.
    messages_ambiguous: int = 0
    #: Requests sent again at once because a reused keep-alive connection was closed under
    #: them (free reconnects: no attempt, no retry, no failure; each is ambiguous too, and
    #: its message counted in messages_ambiguous). Requests, not messages: in no sum.
    reconnects: int = 0
    #: Kontagent messages sent (or written, in a dry run) from events of a UTC day that ended
    #: two days or more before the run's now: Kontagent counts them on the day it gets them.
    #: Part of neither sum (they are delivered, failed or written too).
    messages_from_old_days: int = 0
    #: With --ledger: its files the run read, and those it passed over because their range of
    #: event days meets no day of the run's messages (docs/ledger.md, "Shards by event day").
    ledger_files_read: int = 0
    ledger_files_skipped: int = 0
    invalid_by_stage: Mapping[str, int] = field(default_factory=dict)
    by_destination: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    by_type: Mapping[str, Mapping[str, int]] | None = field(default_factory=dict)
    messages_by_day: Mapping[str, Mapping[str, int]] | None = field(default_factory=dict)
    dead_letter_reasons: Sequence[Mapping[str, Any]] | None = ()
    send_timeline: Mapping[str, Any] | None = None
    #: Per rule of the --mapping (``user_id = userId or anonymousId``), the records it found
    #: a value in; and the rules that found none in the whole run (a typo, or another export).
    mapping_rules_matched: Mapping[str, int] = field(default_factory=dict)
    mapping_rules_unmatched: tuple[str, ...] = ()
    #: Per property name, how many events' [properties] left it out (an object, a list, a
    #: null): the events went on without it. Most frequent first.
    properties_left_out: Mapping[str, int] = field(default_factory=dict)
    stopped: str | None = None
    elapsed_seconds: float = 0.0
    messages_per_second: float = 0.0
    invariant_errors: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    files: int = 0
    report: str = ""
    dead_letter: str = ""
    dry_run: str | None = None
    sandbox: bool = False
    ledger: str | None = None
    date: str | None = None
    #: The window the run covers: events with since <= time < until, ISO-8601 UTC
    #: (``2025-06-01T00:00:00Z``; with --date, its day and its --lookback days); None: open
    since: str | None = None
    until: str | None = None
    #: With --deadline: the instant from which no request started (ISO-8601 UTC, to the
    #: millisecond), whether or not the run reached it.
    deadline: str | None = None
    #: With --date and --lookback: the days before it whose input matched nothing, skipped
    #: (ISO dates, oldest first).
    lookback_days_missing: tuple[str, ...] = ()
    #: Dead-letter entries an earlier, killed run left unfinished at the same path, kept in
    #: this run's dead letter (not counted in this run's other counts).
    dead_letter_salvaged: int = 0
    destinations: tuple[str, ...] = ()
    #: What the sandbox collector counted (sandbox runs only).
    sandbox_collector: Mapping[str, int] | None = None
    #: A chunked run's unit, work directory and one row per chunk (None: not chunked)
    chunking: Mapping[str, Any] | None = None
    #: How the run reached the network (since issue 19): the proxy of each scheme without
    #: its credentials and where it came from, NO_PROXY, the CA bundles added to the
    #: system's trust store (beaconflow.delivery.network.Network.report); None: a dry run
    network: Mapping[str, Any] | None = None
    #: The run failed before its counts were added up: the counts are not to be trusted.
    partial: bool = False
    #: A signal (Ctrl-C, SIGTERM) stopped the run: ``stopped`` names it (exit 130 or 143).
    interrupted: bool = False
    exit_status: int | None = None
    #: When the run started and ended, ISO-8601 UTC to the millisecond; None: not known
    started_at: str | None = None
    ended_at: str | None = None
    #: The beaconflow version that made the report
    version: str | None = None
    #: The command line, ``beaconflow`` first, every secret masked (report/command.py)
    command: tuple[str, ...] = ()
    report_written: bool | None = field(default=None, compare=False)
    report_html_written: bool | None = field(default=None, compare=False)

    @property
    def errors(self) -> int:
        """What --max-errors is compared with: invalid events, invalid and failed messages."""
        return self.events_invalid + self.messages_invalid + self.messages_failed

    def to_json(self) -> dict[str, Any]:
        """report.json's object.

        Every field but ``report_written`` and ``report_html_written``; ``partial``,
        ``interrupted`` and
        ``sandbox_collector`` and ``chunking`` only when
        they apply.
        """
        data = asdict(self)
        del data["report_written"], data["report_html_written"]
        data["invariant_errors"] = list(self.invariant_errors)
        data["inputs"] = list(self.inputs)
        data["destinations"] = list(self.destinations)
        data["mapping_rules_unmatched"] = list(self.mapping_rules_unmatched)
        data["lookback_days_missing"] = list(self.lookback_days_missing)
        data["command"] = list(self.command)
        reasons = self.dead_letter_reasons
        data["dead_letter_reasons"] = None if reasons is None else [dict(r) for r in reasons]
        if not self.partial:
            del data["partial"]
        if not self.interrupted:
            del data["interrupted"]
        if self.sandbox_collector is None:
            del data["sandbox_collector"]
        if self.chunking is None:
            del data["chunking"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunReport:
        """A report read back from report.json; values of the wrong type are taken as absent."""
        # a breakdown an older report does not have is None ("none"), not empty
        values: dict[str, Any] = dict.fromkeys(_BREAKDOWNS)
        for each in fields(cls):
            if each.name not in data or each.name in ("report_written", "report_html_written"):
                continue
            value = _coerce(each.name, data[each.name])
            if value is not _ABSENT:
                values[each.name] = value
        return cls(**values)


_ABSENT = object()

_BREAKDOWNS = ("by_type", "messages_by_day", "dead_letter_reasons", "send_timeline")

_INTS = frozenset({*COUNTERS, "files", "dead_letter_salvaged"})
_FLOATS = frozenset({"elapsed_seconds", "messages_per_second"})
_TEXTS = frozenset({"report", "dead_letter"})
_OPTIONAL_TEXTS = frozenset(
    {
        "stopped",
        "dry_run",
        "ledger",
        "date",
        "deadline",
        "started_at",
        "ended_at",
        "version",
        "since",
        "until",
    }
)
_TEXT_LISTS = frozenset(
    {
        "invariant_errors",
        "inputs",
        "destinations",
        "mapping_rules_unmatched",
        "lookback_days_missing",
        "command",
    }
)
_MAPPINGS = frozenset(
    {
        "invalid_by_stage",
        "by_destination",
        "by_type",
        "messages_by_day",
        "send_timeline",
        "mapping_rules_matched",
        "properties_left_out",
    }
)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _coerce(name: str, value: object) -> Any:
    """``value`` as field ``name`` holds it, or _ABSENT when it cannot be."""
    if name in _INTS:
        number = _number(value)
        return _ABSENT if number is None else max(int(number), 0)
    if name in _FLOATS:
        number = _number(value)
        return _ABSENT if number is None else number
    if name == "exit_status":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if name in _TEXTS:
        return value if isinstance(value, str) else _ABSENT
    if name in _OPTIONAL_TEXTS:
        return value if isinstance(value, str) else None
    if name in _TEXT_LISTS:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list | tuple):
            return tuple(str(item) for item in value)
        return ()
    if name in _MAPPINGS:
        if isinstance(value, Mapping):
            return value
        return None if name in _BREAKDOWNS else _ABSENT
    if name == "dead_letter_reasons":
        if not isinstance(value, list | tuple):
            return None
        return tuple(item for item in value if isinstance(item, Mapping))
    if name in ("sandbox_collector", "chunking", "network"):
        return value if isinstance(value, Mapping) else None
    if name in ("sandbox", "partial", "interrupted"):
        return value is True
    return _ABSENT


def invariant_errors(report: RunReport) -> tuple[str, ...]:
    """The invariants that do not hold (empty when the report adds up)."""
    errors = []
    events = sum(getattr(report, name) for name in EVENT_COUNTERS[1:])
    if report.events_read != events:
        errors.append(f"events_read {report.events_read} != the sum of its outcomes {events}")
    messages = sum(getattr(report, name) for name in MESSAGE_COUNTERS[1:])
    if report.messages_built != messages:
        errors.append(
            f"messages_built {report.messages_built} != the sum of its outcomes {messages}"
        )
    return tuple(errors)


#: The words a person reads for a per-destination count whose key says it otherwise
#: (report.json keeps its keys: ``skipped`` means already delivered, by the ledger).
_SAID = {
    "skipped": "already delivered",
    "dry_run": "written (dry run)",
    "too_old": "too old (--kontagent-max-age)",
    "from_old_days": "of events older than 2 days",
}


def _network_lines(network: Mapping[str, Any] | None) -> list[str]:
    """The summary's proxy and CA lines (none for a direct run trusting the system alone).

    ``proxy: http://proxy.corp:3128 (HTTPS_PROXY)``: the report holds no credentials.
    """
    if not network:
        return []
    lines = []
    https, http = network.get("https_proxy"), network.get("http_proxy")
    said = [
        f"{proxy['url']} ({proxy['source']})" + (f" for {scheme}://" if https != http else "")
        for scheme, proxy in (("https", https), ("http", http))
        if isinstance(proxy, Mapping)
    ]
    if said:
        no_proxy = network.get("no_proxy")
        bypass = f"; not for NO_PROXY={no_proxy}" if no_proxy else ""
        lines.append("proxy: " + ", ".join(dict.fromkeys(said)) + bypass)
    bundles = [b for b in network.get("ca_bundles") or () if isinstance(b, Mapping)]
    if bundles:
        lines.append(
            "CA bundles added to the system's trust store: "
            + ", ".join(
                f"{b.get('path')} ({b.get('source')}, "
                f"{plural(int(b.get('certificates') or 0), 'certificate')})"
                for b in bundles
            )
        )
    return lines


def summary(report: RunReport) -> str:
    """A few lines for stdout."""
    dry_run = report.messages_dry_run
    lines = [
        f"events: {report.events_read} read, {report.events_mapped} mapped, "
        f"{report.events_invalid} invalid, {report.events_duplicate} duplicate, "
        f"{report.events_out_of_range} out of range"
        + (
            f", {report.events_already_dead_lettered} dead-lettered by an earlier run"
            if report.events_already_dead_lettered
            else ""
        ),
        f"messages: {report.messages_built} built, {report.messages_delivered} delivered, "
        f"{report.messages_failed} failed, {report.messages_duplicate} duplicate, "
        f"{report.messages_skipped} already delivered"
        + (
            f", {report.messages_too_old} too old for Kontagent (--kontagent-max-age)"
            if report.messages_too_old
            else ""
        )
        + (f", {report.messages_invalid} invalid" if report.messages_invalid else "")
        + (
            f", {report.messages_already_dead_lettered} not built, dead-lettered by an earlier run"
            if report.messages_already_dead_lettered
            else ""
        )
        + (f", {dry_run} written (dry run)" if dry_run else ""),
    ]
    for destination, counts in report.by_destination.items():
        parts = ", ".join(f"{n} {_SAID.get(name, name)}" for name, n in counts.items())
        lines.append(f"  {destination}: {parts}")
    if report.partial:
        # the counters above are zeros standing for "unknown", not for "nothing"
        lines = ["counts unknown: the run's counts could not be written or added up"]
    elapsed = report.elapsed_seconds
    if dry_run and not report.messages_delivered:
        # a dry run delivers nothing: its pace is the messages it wrote
        pace = f"{dry_run / elapsed if elapsed > 0 else 0.0:.0f} messages/s written (dry run)"
    else:
        pace = f"{report.messages_per_second:.0f} messages/s"
    lines.append(f"elapsed {elapsed:.1f}s, {pace}")
    if report.stopped:
        lines.append(
            f"STOPPED EARLY: {report.stopped} "
            f"({plural(report.messages_not_attempted, 'message')} not attempted)"
        )
    if report.messages_ambiguous:
        lines.append(
            f"ambiguous: {plural(report.messages_ambiguous, 'message')} "
            f"{'was' if report.messages_ambiguous == 1 else 'were'} sent again after a request "
            "that went out and got no answer (a timeout, a reset, a kept-alive connection the "
            "server closed): the service may have counted them more than once "
            "(--no-retry-ambiguous sends no such request again)"
        )
    if report.reconnects:
        lines.append(
            f"reconnects: {plural(report.reconnects, 'request')} met a kept-alive connection "
            "the server had closed and went out again at once on a new one (no failure, no "
            "retry; docs/networks.md)"
        )
    if report.messages_from_old_days:
        n = report.messages_from_old_days
        noun = "message" if n == 1 else "messages"
        verb = "would go (dry run)" if report.dry_run else "went"
        lines.append(
            f"WARNING: {n} {noun} of events older than 2 days {verb} to Kontagent, which "
            "counts each on the day it is sent, not on its event's day "
            "(--kontagent-max-age DAYS sends it only newer ones; docs/backfill.md)"
        )
    if report.ledger_files_skipped:
        total = report.ledger_files_read + report.ledger_files_skipped
        lines.append(
            f"ledger: {report.ledger_files_read} of {total} files read; the others hold "
            "deliveries of other event days only"
        )
    if report.dead_letter_salvaged:
        lines.append(
            f"dead letter: {plural(report.dead_letter_salvaged, 'entry', 'entries')} kept from "
            "an earlier run "
            "that was killed before it finished"
        )
    lines.extend(_network_lines(report.network))
    if report.lookback_days_missing:
        days = ", ".join(report.lookback_days_missing)
        lines.append(f"lookback: no input for {days} (skipped)")
    for rule in report.mapping_rules_unmatched:
        lines.append(f"WARNING: the mapping's rule '{rule}' found a value in no record")
    left_out = report.properties_left_out
    if left_out:
        names = ", ".join(f"{name} ({n:,})" for name, n in list(left_out.items())[:5])
        more = f" and {len(left_out) - 5:,} more" if len(left_out) > 5 else ""
        lines.append(
            f"properties left out (objects, lists or nulls; the events went on): {names}{more}"
        )
    for error in report.invariant_errors:
        lines.append(f"WARNING: the report does not add up: {error}")
    return "\n".join(lines)
