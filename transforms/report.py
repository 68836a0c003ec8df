"""The run report: counts computed from the pipeline's own outputs, and their invariants.

Each stage's outputs are turned into small tallies ``(counter, destination, kind, n)`` and
summed by one ``CombineGlobally``; the driver reads the sum after the run and builds the
report. This does not depend on Beam metrics, which some runners do not provide. The two
invariants are checked on every report:

- events_read = events_invalid + events_duplicate + events_out_of_range + events_mapped
- messages_built = messages_duplicate + messages_skipped + messages_delivered
  + messages_failed + messages_dry_run
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

#: A tally: which counter, for which destination and message kind ("" when not per message), n.
Tally = tuple[str, str, str, int]

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


def tally(counter: str, n: int = 1, destination: str = "", kind: str = "") -> Tally:
    """One tally element."""
    return (counter, destination, kind, n)


class CountsTallies:
    """A DoFn mixin: count in memory, emit one tally per counter at the end of each bundle.

    One element per bundle and counter instead of one per record keeps the tallies off
    Beam's hot path. Tallies go to the tagged output named by :attr:`tally_tag`.
    """

    tally_tag = "tally"

    def start_bundle(self) -> None:
        self._tallies: Counter[tuple[str, str, str]] = Counter()

    def count(self, counter: str, destination: str = "", kind: str = "", n: int = 1) -> None:
        self._tallies[(counter, destination, kind)] += n

    def finish_bundle(self) -> Iterator[Any]:
        for (counter, destination, kind), n in self._tallies.items():
            yield TaggedOutput(
                self.tally_tag, GlobalWindows.windowed_value(tally(counter, n, destination, kind))
            )
        self._tallies.clear()


class SumTallies(beam.CombineFn):
    """Sum tallies into {"counter|destination|kind": n}."""

    def create_accumulator(self) -> Counter[str]:
        return Counter()

    def add_input(self, accumulator: Counter[str], element: Tally) -> Counter[str]:
        counter, destination, kind, n = element
        accumulator[f"{counter}|{destination}|{kind}"] += n
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Counter[str]]) -> Counter[str]:
        merged: Counter[str] = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator: Counter[str]) -> str:
        return json.dumps(dict(sorted(accumulator.items())))


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
    sums: Mapping[str, int], elapsed: float, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The report dict from summed tallies, the run's elapsed seconds and descriptive extras."""
    report: dict[str, Any] = {name: 0 for name in EVENT_COUNTERS + MESSAGE_COUNTERS}
    invalid_by_stage: dict[str, int] = {}
    by_destination: dict[str, dict[str, int]] = {}
    by_type: dict[str, dict[str, int]] = {}
    for compound, n in sums.items():
        counter, destination, kind = compound.split("|")
        report[counter] = report.get(counter, 0) + n
        if counter == "events_invalid":
            invalid_by_stage[destination] = invalid_by_stage.get(destination, 0) + n
        if destination and counter.startswith("messages_"):
            short = counter.removeprefix("messages_")
            per_destination = by_destination.setdefault(destination, {})
            per_destination[short] = per_destination.get(short, 0) + n
            per_type = by_type.setdefault(f"{destination}/{kind}", {})
            per_type[short] = per_type.get(short, 0) + n
    report["invalid_by_stage"] = dict(sorted(invalid_by_stage.items()))
    report["by_destination"] = dict(sorted(by_destination.items()))
    report["by_type"] = dict(sorted(by_type.items()))
    report["elapsed_seconds"] = round(elapsed, 3)
    report["messages_per_second"] = (
        round(report["messages_delivered"] / elapsed, 1) if elapsed > 0 else 0.0
    )
    report.update(extra)
    report["invariant_errors"] = invariant_errors(report)
    return report


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
    lines.append(
        f"elapsed {report['elapsed_seconds']:.1f}s, {report['messages_per_second']:.0f} messages/s"
    )
    for error in report["invariant_errors"]:
        lines.append(f"WARNING: the report does not add up: {error}")
    return "\n".join(lines)
