"""The run report: counts computed from the pipeline's own outputs, and their invariants.

Each stage's outputs are turned into small tallies ``(TallyKey, n)`` and summed by one
``CombineGlobally`` (:mod:`beaconflow.transforms.tallies`); the driver reads
the sum after the run and builds the report here, with no Beam. This does not depend on Beam
metrics, which some runners do not provide. The two invariants are checked on every report:

- events_read = events_invalid + events_duplicate + events_out_of_range + events_mapped
- messages_built = messages_duplicate + messages_skipped + messages_too_old
  + messages_delivered + messages_failed + messages_dry_run

(``messages_ambiguous`` is in neither sum: it counts delivered and failed messages again,
those the service may have received more than once; nor is ``messages_from_old_days``, the
Kontagent messages of old events that were sent or written; ``reconnects`` counts requests.)

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
from dataclasses import replace
from typing import Any, NamedTuple

from beaconflow.report.run import COUNTERS, RunReport, invariant_errors


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

#: Messages built from events of a UTC day: detail = the day, ``YYYY-MM-DD``.
BY_DAY = "series_by_day"
#: Messages delivered, and failed, per wall-clock second: detail = the epoch second.
DELIVERED_AT = "series_delivered_at"
FAILED_AT = "series_failed_at"
#: Dead letters: stage, and detail = the reason's group (:func:`reason_group`).
DEAD_LETTER_REASON = "series_dead_letter"
#: Records a mapping rule found a value in: detail = the rule's label.
MAPPING_RULE = "mapping_rule_matched"
#: Properties a mapping's [properties] left out (not scalars): detail = the property's name.
PROPERTY_LEFT_OUT = "property_left_out"
#: Why the run stopped early (a step says so once or more): detail = the reason.
STOPPED = "run_stopped"
#: Failed messages that a stop kept from being sent at all (part of messages_failed).
NOT_ATTEMPTED = "messages_not_attempted"
#: Messages a request of which went out again after one that got no answer: the service
#: may have counted them more than once (delivered or failed: part of neither sum).
AMBIGUOUS = "messages_ambiguous"
#: Requests sent again at once because a reused keep-alive connection was closed under them
#: (free reconnects: no attempt, no failure; each is ambiguous too). Requests, not messages.
RECONNECTS = "reconnects"
#: How many dead-letter reason groups the report lists.
TOP_REASONS = 10
#: Most points in the report's send timeline; longer runs get wider buckets.
TIMELINE_POINTS = 600
_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)

#: The counters a report has a field for.
_COUNTS = frozenset(COUNTERS)
#: The send outcome of each per-second series.
_OUTCOME_AT = {DELIVERED_AT: "delivered", FAILED_AT: "failed"}

_VARYING = (
    (re.compile(r"(, got|: got) .*$", re.S), r"\1 …"),
    (re.compile(r": line \d+ column \d+ \(char \d+\)"), ""),
    (re.compile(r"(is in the future|do not take|is not [^:]*): .*$", re.S), r"\1"),
)


#: A send failure's reason quoting the service's answer (``HTTP 400: {"error": ...}``),
#: not a redirect's (``HTTP 302: redirected to ...``).
_QUOTED_ANSWER = re.compile(r"(HTTP \d{3}): (?!redirected to )(.*)", re.S)
#: Characters of a quoted answer its group keeps: its start says what the service objects to.
GROUP_ANSWER_CHARS = 80
#: Words holding a digit (ids, counts, times, a user's number): they vary per request.
_WITH_DIGIT = re.compile(r"[\w.:-]*\d[\w.:-]*")


def reason_group(reason: str) -> str:
    """A dead-letter reason without the values that vary from record to record.

    ``"field 'n': must be an integer, got 'x'"`` and ``... got 'y'`` are one group, so the
    report can list the commonest problems; the dead letter keeps every value. A reason
    quoting a service's answer keeps its status and the answer's first
    :data:`GROUP_ANSWER_CHARS` characters, each word holding a digit as ``#``:
    ``HTTP 400: user '#' is refused`` for every user.
    """
    for pattern, replacement in _VARYING:
        reason = pattern.sub(replacement, reason)
    quoted = _QUOTED_ANSWER.fullmatch(reason)
    if quoted is not None:
        answer = _WITH_DIGIT.sub("#", quoted.group(2))
        if len(answer) > GROUP_ANSWER_CHARS:
            answer = answer[: GROUP_ANSWER_CHARS - 1] + "…"
        reason = f"{quoted.group(1)}: {answer}"
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


def build_report(
    sums: Mapping[TallyKey, int], elapsed: float, stopped: Iterable[str] = ()
) -> RunReport:
    """The report's counts, from summed tallies and the run's elapsed seconds.

    ``stopped`` adds reasons the run stopped early for that the driver knows of itself; the
    report's ``stopped`` joins them with the tallies' (None when the run was not stopped).
    What the run is (inputs, outputs, status) the driver adds with ``dataclasses.replace``.
    """
    counts: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
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
        if counter == MAPPING_RULE:
            rules[key.detail] += n
            continue
        if counter == PROPERTY_LEFT_OUT:
            left_out[key.detail] += n
            continue
        if counter not in _COUNTS:
            # a bug, found after the run has sent: said in the report, which is still written
            unknown[counter] += n
            continue
        counts[counter] += n
        if counter == "events_invalid":
            invalid_by_stage[key.stage] = invalid_by_stage.get(key.stage, 0) + n
        if destination and counter.startswith("messages_"):
            short = counter.removeprefix("messages_")
            per_destination = by_destination.setdefault(destination, {})
            per_destination[short] = per_destination.get(short, 0) + n
            per_type = by_type.setdefault(f"{destination}/{kind}", {})
            per_type[short] = per_type.get(short, 0) + n
    top = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
    counted: dict[str, Any] = dict(counts)
    report = RunReport(
        **counted,
        invalid_by_stage=dict(sorted(invalid_by_stage.items())),
        by_destination=dict(sorted(by_destination.items())),
        by_type=dict(sorted(by_type.items())),
        messages_by_day={day: dict(sorted(by_day[day].items())) for day in sorted(by_day)},
        dead_letter_reasons=tuple(
            {"stage": stage, "reason": reason, "count": n} for (stage, reason), n in top
        ),
        send_timeline=send_timeline(sent_at),
        mapping_rules_matched=dict(sorted(rules.items())),
        properties_left_out=dict(sorted(left_out.items(), key=lambda item: (-item[1], item[0]))),
        stopped="; ".join(sorted(stopped)) or None,
        elapsed_seconds=round(elapsed, 3),
        messages_per_second=(
            round(counts["messages_delivered"] / elapsed, 1) if elapsed > 0 else 0.0
        ),
    )
    errors = invariant_errors(report) + tuple(
        f"a tally of an unknown counter: {name!r} ({n})" for name, n in sorted(unknown.items())
    )
    return replace(report, invariant_errors=errors)


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
