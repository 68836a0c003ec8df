"""The run report: counts computed from the pipeline's own outputs, and their invariants.

Each stage's outputs are turned into small tallies ``(TallyKey, n)`` and summed by one
``CombineGlobally`` (:mod:`beaconflow.transforms.tallies`); the driver reads
the sum after the run and builds the report here, with no Beam. This does not depend on Beam
metrics, which some runners do not provide. The two invariants are checked on every report:

- events_read = events_invalid + events_duplicate + events_out_of_range + events_mapped
- messages_built = messages_duplicate + messages_skipped + messages_delivered
  + messages_failed + messages_dry_run

Besides the counters, four series feed the charts of report.html: messages built per
event day and type (:data:`BY_DAY`), deliveries and failures per wall-clock second
(:data:`DELIVERED_AT`, :data:`FAILED_AT`) and dead letters per stage and reason group
(:data:`DEAD_LETTER_REASON`). Their tallies carry the day, the second or the reason in the
key's ``detail``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple


class TallyKey(NamedTuple):
    """What a tally counts: the counter and, where it applies, what of it.

    ``destination`` and ``kind``: the message's (counters of messages). ``stage``: where an
    event or entry stopped (``events_invalid``, :data:`DEAD_LETTER_REASON`). ``detail``: a
    series' sub-key (a day, an epoch second, a reason).
    """

    counter: str
    destination: str = ""
    kind: str = ""
    stage: str = ""
    detail: str = ""


#: A tally: what it counts, and how many.
Tally = tuple[TallyKey, int]

EVENT_COUNTERS = (
    "events_read",
    "events_invalid",
    "events_duplicate",
    "events_out_of_range",
    "events_mapped",
)
MESSAGE_COUNTERS = (
    "messages_built",
    "messages_duplicate",
    "messages_skipped",
    "messages_delivered",
    "messages_failed",
    "messages_dry_run",
)


#: Messages built from events of a UTC day: detail = the day, ``YYYY-MM-DD``.
BY_DAY = "series_by_day"
#: Messages delivered, and failed, per wall-clock second: detail = the epoch second.
DELIVERED_AT = "series_delivered_at"
FAILED_AT = "series_failed_at"
#: Dead letters: stage, and detail = the reason's group (:func:`reason_group`).
DEAD_LETTER_REASON = "series_dead_letter"
#: Why the run stopped early (a step says so once or more): detail = the reason.
STOPPED = "run_stopped"
#: Failed messages that a stop kept from being sent at all (part of messages_failed).
NOT_ATTEMPTED = "messages_not_attempted"
#: How many dead-letter reason groups the report lists.
TOP_REASONS = 10
#: Most points in the report's send timeline; longer runs get wider buckets.
TIMELINE_POINTS = 600
_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)

#: The send outcome of each per-second series.
_OUTCOME_AT = {DELIVERED_AT: "delivered", FAILED_AT: "failed"}

_VARYING = (
    (re.compile(r"(, got|: got) .*$", re.S), r"\1 …"),
    (re.compile(r": line \d+ column \d+ \(char \d+\)"), ""),
    (re.compile(r"(is in the future|do not take|is not [^:]*): .*$", re.S), r"\1"),
)


def reason_group(reason: str) -> str:
    """A dead-letter reason without the values that vary from record to record.

    ``"field 'n': must be an integer, got 'x'"`` and ``... got 'y'`` are one group, so the
    report can list the commonest problems; the dead letter keeps every value.
    """
    for pattern, replacement in _VARYING:
        reason = pattern.sub(replacement, reason)
    return reason[:200]


def tally(
    counter: str,
    n: int = 1,
    destination: str = "",
    kind: str = "",
    *,
    stage: str = "",
    detail: str = "",
) -> Tally:
    """One tally element."""
    return (TallyKey(counter, destination, kind, stage, detail), n)


def invariant_errors(report: Mapping[str, Any]) -> list[str]:
    """The invariants that do not hold (empty when the report adds up)."""
    errors = []
    events = sum(report[name] for name in EVENT_COUNTERS[1:])
    if report["events_read"] != events:
        errors.append(f"events_read {report['events_read']} != the sum of its outcomes {events}")
    messages = sum(report[name] for name in MESSAGE_COUNTERS[1:])
    if report["messages_built"] != messages:
        errors.append(
            f"messages_built {report['messages_built']} != the sum of its outcomes {messages}"
        )
    return errors


def build_report(
    sums: Mapping[TallyKey, int],
    elapsed: float,
    extra: Mapping[str, Any],
    stopped: Iterable[str] = (),
) -> dict[str, Any]:
    """The report dict from summed tallies, the run's elapsed seconds and descriptive extras.

    ``stopped`` adds reasons the run stopped early for that the driver knows of itself; the
    report's ``stopped`` joins them with the tallies' (None when the run was not stopped).
    """
    report: dict[str, Any] = {name: 0 for name in EVENT_COUNTERS + MESSAGE_COUNTERS}
    invalid_by_stage: dict[str, int] = {}
    by_destination: dict[str, dict[str, int]] = {}
    by_type: dict[str, dict[str, int]] = {}
    by_day: dict[str, dict[str, int]] = {}
    sent_at: dict[tuple[str, str], dict[int, int]] = {}
    reasons: Counter[tuple[str, str]] = Counter()
    stopped = set(stopped)
    for key, n in sums.items():
        counter, destination, kind = key.counter, key.destination, key.kind
        if counter == STOPPED:
            stopped.add(key.detail)
            continue
        if counter == BY_DAY:
            per_day = by_day.setdefault(key.detail, {})
            per_day[f"{destination}/{kind}"] = per_day.get(f"{destination}/{kind}", 0) + n
            continue
        if counter in _OUTCOME_AT:
            at = sent_at.setdefault((_OUTCOME_AT[counter], destination), {})
            at[int(key.detail)] = at.get(int(key.detail), 0) + n
            continue
        if counter == DEAD_LETTER_REASON:
            reasons[(key.stage, key.detail)] += n
            continue
        report[counter] = report.get(counter, 0) + n
        if counter == "events_invalid":
            invalid_by_stage[key.stage] = invalid_by_stage.get(key.stage, 0) + n
        if destination and counter.startswith("messages_"):
            short = counter.removeprefix("messages_")
            per_destination = by_destination.setdefault(destination, {})
            per_destination[short] = per_destination.get(short, 0) + n
            per_type = by_type.setdefault(f"{destination}/{kind}", {})
            per_type[short] = per_type.get(short, 0) + n
    report["invalid_by_stage"] = dict(sorted(invalid_by_stage.items()))
    report["by_destination"] = dict(sorted(by_destination.items()))
    report["by_type"] = dict(sorted(by_type.items()))
    report["messages_by_day"] = {day: dict(sorted(by_day[day].items())) for day in sorted(by_day)}
    report["dead_letter_reasons"] = [
        {"stage": stage, "reason": reason, "count": n}
        for (stage, reason), n in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[
            :TOP_REASONS
        ]
    ]
    report["send_timeline"] = send_timeline(sent_at)
    report["stopped"] = "; ".join(sorted(stopped)) or None
    report.setdefault(NOT_ATTEMPTED, 0)
    report["elapsed_seconds"] = round(elapsed, 3)
    report["messages_per_second"] = (
        round(report["messages_delivered"] / elapsed, 1) if elapsed > 0 else 0.0
    )
    report.update(extra)
    report["invariant_errors"] = invariant_errors(report)
    return report


def send_timeline(sent_at: Mapping[tuple[str, str], Mapping[int, int]]) -> dict[str, Any]:
    """Sends per bucket of seconds, per outcome and destination, in at most TIMELINE_POINTS.

    ``sent_at`` maps (outcome, destination) to {epoch second: messages}. The result has the
    first second (``start``), the bucket width and one list per outcome and destination, all
    of one length; empty lists when nothing was sent (a dry run).
    """
    seconds = [second for counts in sent_at.values() for second in counts]
    if not seconds:
        return {"start": None, "bucket_seconds": 1, "delivered": {}, "failed": {}}
    start, end = min(seconds), max(seconds)
    span = end - start + 1
    width = next((b for b in _BUCKETS if span / b <= TIMELINE_POINTS), None)
    if width is None:
        width = 3600 * math.ceil(span / (3600 * TIMELINE_POINTS))
    points = math.ceil(span / width)
    timeline: dict[str, Any] = {"start": start, "bucket_seconds": width}
    for outcome in ("delivered", "failed"):
        series: dict[str, list[int]] = {}
        for (each, destination), counts in sorted(sent_at.items()):
            if each != outcome:
                continue
            values = series.setdefault(destination, [0] * points)
            for second, n in counts.items():
                values[(second - start) // width] += n
        timeline[outcome] = series
    return timeline


def summary(report: Mapping[str, Any]) -> str:
    """A few lines for stdout."""
    dry_run = report["messages_dry_run"]
    lines = [
        f"events: {report['events_read']} read, {report['events_mapped']} mapped, "
        f"{report['events_invalid']} invalid, {report['events_duplicate']} duplicate, "
        f"{report['events_out_of_range']} out of range",
        f"messages: {report['messages_built']} built, {report['messages_delivered']} delivered, "
        f"{report['messages_failed']} failed, {report['messages_duplicate']} duplicate, "
        f"{report['messages_skipped']} already delivered"
        + (f", {dry_run} written (dry run)" if dry_run else ""),
    ]
    for destination, counts in report["by_destination"].items():
        parts = ", ".join(f"{n} {name}" for name, n in counts.items())
        lines.append(f"  {destination}: {parts}")
    if report.get("partial"):
        # the counters above are zeros standing for "unknown", not for "nothing"
        lines = ["counts unknown: the run's counts could not be written or added up"]
    elapsed = report["elapsed_seconds"]
    if dry_run and not report["messages_delivered"]:
        # a dry run delivers nothing: its pace is the messages it wrote
        pace = f"{dry_run / elapsed if elapsed > 0 else 0.0:.0f} messages/s written (dry run)"
    else:
        pace = f"{report['messages_per_second']:.0f} messages/s"
    lines.append(f"elapsed {elapsed:.1f}s, {pace}")
    if report.get("stopped"):
        not_attempted = report.get(NOT_ATTEMPTED, 0)
        lines.append(f"STOPPED EARLY: {report['stopped']} ({not_attempted} messages not attempted)")
    for error in report["invariant_errors"]:
        lines.append(f"WARNING: the report does not add up: {error}")
    return "\n".join(lines)
