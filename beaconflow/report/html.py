"""A self-contained HTML page of a run's report, for people.

:func:`render_html` turns a run's :class:`~beaconflow.report.run.RunReport` (the run's own, or
one read back from ``report.json``) into one HTML page that needs
nothing else: no network (no CDN, fonts, scripts or images), inline CSS, and charts drawn as
inline SVG here in Python, so the page also works with JavaScript off. It shows the run's
headline numbers and four charts, each an ``<svg class="chart" data-chart="NAME">`` inside a
``<section data-chart="NAME">``:

- ``by-day``: messages per day and type (stacked bars, from ``messages_by_day``);
- ``outcomes``: delivered, failed, duplicate, skipped, too old and dry-run messages by type
  (from ``by_type``); a dry run's chart shows the messages written (and the others' fates),
  never empty delivered and failed rows;
- ``reasons``: the top dead-letter reasons (from ``dead_letter_reasons``);
- ``send-rate``: messages/s per destination over the run (from ``send_timeline``).

The header says what the run covers (its ``--date``, or its ``--since``/``--until`` window,
and the days of its events), when it started and ended (UTC), the beaconflow version and the
command line (secrets masked when the run wrote the report: report/command.py). A table
gives the messages per destination (written, for a dry run).

A chart without data is replaced by a "nothing to show: <why>" paragraph. Breakdowns missing
from an older report (None) say so; their values stay checked here one by one, as a report
read back may hold anything. Every string from the report is HTML-escaped. The page stays
bounded whatever the input: at most :data:`MAX_BARS` bars (days beyond that are aggregated
into weeks, months or years, and the chart says so), :data:`MAX_POINTS` points per line,
:data:`MAX_REASONS` reasons and :data:`MAX_TYPES` types per chart (the rest as "other").
"""

from __future__ import annotations

import html
import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from beaconflow.report.counts import TIMELINE_POINTS, TOP_REASONS
from beaconflow.report.run import RunReport

__all__ = [
    "DELIVERED_LINE_COLOURS",
    "FAILED_LINE_COLOURS",
    "MAX_BARS",
    "MAX_POINTS",
    "MAX_REASONS",
    "MAX_TYPES",
    "OTHER_COLOUR",
    "OUTCOME_COLOURS",
    "STAGE_COLOURS",
    "TYPE_PALETTE",
    "render_html",
]

#: Most bars in the per-day chart; longer spans are shown by week, month or year.
MAX_BARS = 400
#: Most points of one line in the send-rate chart; longer timelines are averaged (reports
#: built by beaconflow already hold no more).
MAX_POINTS = TIMELINE_POINTS
#: Most dead-letter reasons shown (as many as a report lists).
MAX_REASONS = TOP_REASONS
#: Most types (or destinations) in one chart, "other" included.
MAX_TYPES = 12

#: Colours of message types, by rank (most messages first).
TYPE_PALETTE: tuple[str, ...] = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#1f3b73",
    "#8cd17d",
    "#d37295",
)
#: Colour of the "other" series (types or destinations beyond the palette).
OTHER_COLOUR = "#a0a0a0"
#: Colours of message outcomes in the ``outcomes`` chart.
OUTCOME_COLOURS: Mapping[str, str] = {
    "delivered": "#2e8b57",
    "failed": "#c0392b",
    "duplicate": "#e0a526",
    "skipped": "#7f8fa6",
    "too_old": "#5d6d7e",
    "dry_run": "#b39ddb",
}
#: Colours of dead-letter stages in the ``reasons`` chart (others: ``OTHER_COLOUR``).
STAGE_COLOURS: Mapping[str, str] = {
    "read": "#6d4c41",
    "parse": "#d35400",
    "map": "#7d3c98",
    "send": "#117a65",
}
#: Colours of the delivered lines in the ``send-rate`` chart, by destination rank.
DELIVERED_LINE_COLOURS: tuple[str, ...] = (
    "#1f77b4",
    "#2ca02c",
    "#17becf",
    "#8c564b",
    "#bcbd22",
    "#393b79",
)
#: Colours of the failed lines (dashed) in the ``send-rate`` chart, by destination rank.
FAILED_LINE_COLOURS: tuple[str, ...] = (
    "#d62728",
    "#ff7f0e",
    "#e377c2",
    "#9467bd",
    "#b8860b",
    "#843c39",
)

_OUTCOME_LABELS: Mapping[str, str] = {
    "delivered": "delivered",
    "failed": "failed",
    "duplicate": "duplicate",
    "skipped": "already delivered",
    "too_old": "too old for Kontagent",
    "dry_run": "dry run",
}
_OPTIONAL_OUTCOMES = ("duplicate", "skipped", "too_old", "dry_run")
#: What a dry run's messages became, in the order its outcome chart lists them.
_DRY_RUN_OUTCOMES = ("dry_run", "duplicate", "skipped", "too_old")

_WIDTH = 1000  # every chart's width in SVG units (px at 100 %)
_TEXT_PX = 6.6  # rough width of one character of 11-12 px text, for layout
_LONG_TEXT = 500  # longest text from the report shown in a table cell
_MAX_LIST = 20  # most inputs, destinations or invariant errors listed in the header
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


# --- values from the report -------------------------------------------------------------


def _clean(value: object) -> str:
    """``value`` as text without control characters or lone surrogates."""
    return _UNSAFE.sub("\ufffd", str(value))


def _esc(value: object, limit: int | None = None) -> str:
    """``value`` as escaped text, cut to ``limit`` characters (an ellipsis marks the cut)."""
    text = _clean(value)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 1)] + "\u2026"
    return html.escape(text, quote=True)


def _number(value: object) -> float:
    """A finite number, else 0 (booleans, strings, NaN and None are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


def _count(value: object) -> int:
    """A count: a whole number of at least 0."""
    return max(int(_number(value)), 0)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _fmt(value: float) -> str:
    """A number for people: thousands separated, few decimals."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _f(value: float) -> str:
    """A coordinate for SVG."""
    return f"{value:.1f}".removesuffix(".0")


# --- SVG pieces -------------------------------------------------------------------------


def _nice_ticks(top: float, integer: bool = False, target: int = 5) -> list[float]:
    """Tick values from 0 to at least ``top``, at a round step."""
    top = top if top > 0 else 1.0
    raw = top / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = 10 * magnitude
    for multiple in (1, 2, 2.5, 5, 10):
        candidate = multiple * magnitude
        if integer and (candidate < 1 or candidate != int(candidate)):
            continue
        if candidate >= raw:
            step = candidate
            break
    if integer:
        step = max(step, 1.0)
    steps = math.ceil(top / step - 1e-9)
    return [i * step for i in range(steps + 1)]


@dataclass(frozen=True)
class _Item:
    """One legend entry: a label and its colour, drawn as a box or a (dashed) line."""

    label: str
    colour: str
    line: bool = False
    dashed: bool = False


def _legend(items: Sequence[_Item], x: float, y: float, width: float) -> tuple[str, float]:
    """A legend that wraps at ``width``; its SVG and its height."""
    parts = ['<g class="legend">']
    cx, cy, row = x, y, 20.0
    for item in items:
        label = _esc(item.label, 40)
        item_width = 22 + len(html.unescape(label)) * _TEXT_PX + 18
        if cx > x and cx + item_width > x + width:
            cx, cy = x, cy + row
        if item.line:
            dash = ' stroke-dasharray="6 3"' if item.dashed else ""
            parts.append(
                f'<line x1="{_f(cx)}" y1="{_f(cy + 7)}" x2="{_f(cx + 16)}" y2="{_f(cy + 7)}" '
                f'stroke="{item.colour}" stroke-width="3"{dash}/>'
            )
        else:
            parts.append(
                f'<rect x="{_f(cx)}" y="{_f(cy + 1)}" width="12" height="12" fill="{item.colour}"/>'
            )
        parts.append(f'<text class="label" x="{_f(cx + 20)}" y="{_f(cy + 11)}">{label}</text>')
        cx += item_width
    parts.append("</g>")
    return "".join(parts), (cy - y) + row if items else 0.0


def _svg_open(name: str, title: str, height: float, extra: str = "") -> str:
    return (
        f'<svg class="chart" data-chart="{name}" role="img" viewBox="0 0 {_WIDTH} '
        f'{_f(height)}" width="{_WIDTH}" height="{_f(height)}"{extra}>'
        f"<title>{_esc(title)}</title>"
    )


def _section(name: str, heading: str, body: str, notes: Sequence[str] = ()) -> str:
    """A chart's section: heading, the chart (or why there is none) and notes."""
    note_html = "".join(f'<p class="note">{note}</p>' for note in notes)
    return (
        f'<section class="chart-block" data-chart="{name}" id="chart-{name}">'
        f"<h2>{_esc(heading)}</h2>{body}{note_html}</section>"
    )


def _nothing(name: str, heading: str, why: str, notes: Sequence[str] = ()) -> str:
    body = f'<p class="empty">nothing to show: {_esc(why)}</p>'
    return _section(name, heading, body, notes)


def _y_axis(
    ticks: Sequence[float], left: float, right: float, y_of: Callable[[float], float]
) -> str:
    """Horizontal gridlines with their labels at the left."""
    parts = []
    for tick in ticks:
        y = y_of(tick)
        parts.append(
            f'<line class="grid" x1="{_f(left)}" y1="{_f(y)}" x2="{_f(right)}" y2="{_f(y)}"/>'
            f'<text class="tick" x="{_f(left - 6)}" y="{_f(y + 4)}" '
            f'text-anchor="end">{_fmt(tick)}</text>'
        )
    return "".join(parts)


def _x_ticks(ticks: Sequence[float], bottom: float, x_of: Callable[[float], float]) -> str:
    """Tick marks with labels below ``bottom``."""
    parts = []
    for tick in ticks:
        x = x_of(tick)
        parts.append(
            f'<line class="axis" x1="{_f(x)}" y1="{_f(bottom)}" x2="{_f(x)}" '
            f'y2="{_f(bottom + 5)}"/><text class="tick" x="{_f(x)}" y="{_f(bottom + 18)}" '
            f'text-anchor="middle">{_fmt(tick)}</text>'
        )
    return "".join(parts)


def _axis_titles(
    x_title: str, y_title: str, left: float, right: float, top: float, bottom: float
) -> str:
    middle = (left + right) / 2
    return (
        f'<text class="axis-label" x="{_f(middle)}" y="{_f(bottom + 38)}" '
        f'text-anchor="middle">{_esc(x_title)}</text>'
        f'<text class="axis-label" transform="translate(16 {_f((top + bottom) / 2)}) '
        f'rotate(-90)" text-anchor="middle">{_esc(y_title)}</text>'
    )


def _rank(totals: Mapping[str, float], limit: int) -> tuple[list[str], list[str]]:
    """The names to show on their own (largest first) and those to merge into "other"."""
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    if len(ranked) <= limit:
        return ranked, []
    return ranked[: limit - 1], ranked[limit - 1 :]


# --- header -----------------------------------------------------------------------------

_EVENT_STATS = (
    ("events_read", "read"),
    ("events_mapped", "mapped"),
    ("events_invalid", "invalid"),
    ("events_duplicate", "duplicate"),
    ("events_out_of_range", "out of range"),
    ("events_already_dead_lettered", "dead-lettered before"),
)
_MESSAGE_STATS = (
    ("messages_built", "built"),
    ("messages_delivered", "delivered"),
    ("messages_failed", "failed"),
    ("messages_duplicate", "duplicate"),
    ("messages_skipped", "already delivered"),
    ("messages_too_old", "too old for Kontagent (not sent)"),
    ("messages_dry_run", "dry run"),
    ("messages_invalid", "invalid (not built)"),
    ("messages_already_dead_lettered", "not built, dead-lettered before"),
    ("messages_ambiguous", "ambiguous (may be counted twice)"),
    ("messages_from_old_days", "to Kontagent from events older than 2 days"),
)
#: Cards a dry run has no use for: it sends nothing, so nothing is delivered or failed.
_NOT_IN_A_DRY_RUN = frozenset({"messages_delivered", "messages_failed", "messages_ambiguous"})
_ALERTS = {
    "events_invalid": "warn",
    "messages_invalid": "warn",
    "messages_failed": "bad",
    "messages_ambiguous": "warn",
    "messages_from_old_days": "warn",
}


def _stat(label: str, value: str, tone: str = "") -> str:
    tone_class = f" {tone}" if tone else ""
    return (
        f'<div class="stat{tone_class}"><div class="value">{value}</div>'
        f'<div class="name">{_esc(label)}</div></div>'
    )


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(f"<code>{_esc(item, 200)}</code>" for item in items[:_MAX_LIST])
    if len(items) > _MAX_LIST:
        shown += f" and {len(items) - _MAX_LIST:,} more"
    return shown or "none"


def _is_dry_run(report: RunReport) -> bool:
    """Whether the report is a dry run's: it names a dry-run file, or wrote messages only."""
    if report.dry_run:
        return True
    return bool(_count(report.messages_dry_run)) and not (
        _count(report.messages_delivered) or _count(report.messages_failed)
    )


def _when(value: object) -> str:
    """An ISO-8601 instant from the report as people read it: ``2025-06-02 08:15:00 UTC``."""
    if not isinstance(value, str) or not value:
        return "not recorded"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _esc(value, 60)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return _esc(moment.strftime("%Y-%m-%d %H:%M:%S UTC"))


def _coverage(report: RunReport) -> str:
    """What the run covers: its --date, or its window, and the days of its events."""
    since, until = report.since, report.until
    if report.date:
        covers = f"<code>--date {_esc(report.date, 40)}</code>"
        if since and until:
            covers += f" (events from {_when(since)} to before {_when(until)})"
    elif since or until:
        start = _when(since) if since else "the first event"
        end = f"before {_when(until)}" if until else "the last event"
        covers = f"events from {start} to {end}"
    else:
        covers = "every event of the input (no --date, --since or --until)"
    days = sorted(
        str(day)
        for day, per_type in _mapping(report.messages_by_day).items()
        if any(_count(n) for n in _mapping(per_type).values())
    )
    if days:
        span = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
        covers += f"; messages built from events of {_esc(span, 60)}"
    return covers


def _run_facts(report: RunReport) -> str:
    """When the run ran, what it covers, which version, with which command."""
    command = report.command
    shown = (
        f"<code>{_esc(shlex.join(command), 2000)}</code>"
        if command
        else "not recorded (an older report)"
    )
    version = report.version
    facts = [
        ("covers", _coverage(report)),
        ("started", _when(report.started_at)),
        ("ended", _when(report.ended_at)),
        ("version", f"beaconflow {_esc(version, 40)}" if version else "not recorded"),
        ("command", shown),
    ]
    items = "".join(f'<dt>{name}</dt><dd data-fact="{name}">{value}</dd>' for name, value in facts)
    return f'<dl class="facts run-facts">{items}</dl>'


def _header(report: RunReport) -> str:
    parts = ["<header>", "<h1>beaconflow run report</h1>"]
    exit_status = report.exit_status
    if exit_status is not None:
        tone = "good" if exit_status == 0 else "bad"
        status = f"exit status {exit_status}" + (" (success)" if exit_status == 0 else "")
        if report.stopped:
            status += " (stopped early)"
    else:
        tone, status = "", "exit status unknown"
    mode = []
    if report.dry_run:
        mode.append(f'<span class="badge">dry run \u2192 <code>{_esc(report.dry_run)}</code>')
        mode[-1] += "</span>"
    if report.sandbox:
        mode.append('<span class="badge">sandbox: sent to the local collector</span>')
    parts.append(f'<p class="status {tone}">{_esc(status)} {" ".join(mode)}</p>')
    parts.append(_run_facts(report))
    stopped = report.stopped
    if stopped:
        partial = (
            " The counts below are partial: the run failed before it could add them up."
            if report.partial
            else ""
        )
        mend = "Run" if report.interrupted else "Mend that, then run"
        parts.append(
            '<div class="warning" role="alert"><strong>Stopped early:</strong> '
            f"{_esc(stopped, _LONG_TEXT)}. {mend} the same command with the same "
            "<code>--ledger</code> to finish; what was not sent is in the dead letter as "
            "\u201cnot attempted\u201d."
            f"{partial}</div>"
        )
    errors = report.invariant_errors
    if errors:
        items = "".join(f"<li>{_esc(error, _LONG_TEXT)}</li>" for error in errors[:_MAX_LIST])
        if len(errors) > _MAX_LIST:
            items += f"<li>and {len(errors) - _MAX_LIST:,} more</li>"
        parts.append(
            '<div class="warning" role="alert"><strong>Warning: the report\'s counts do not '
            f"add up ({len(errors):,} invariant error{'s' if len(errors) != 1 else ''}):"
            f"</strong><ul>{items}</ul></div>"
        )
    unmatched = report.mapping_rules_unmatched
    if unmatched:
        items = "".join(f"<li><code>{_esc(rule, _LONG_TEXT)}</code></li>" for rule in unmatched)
        parts.append(
            '<div class="warning" role="alert"><strong>The mapping has rules that found a '
            f"value in no record of this run:</strong><ul>{items}</ul>A typo in a path, or "
            "logs of another export than the mapping was written for?</div>"
        )
    left_out = report.properties_left_out
    if left_out:
        shown = list(left_out.items())[:_MAX_LIST]
        items = "".join(
            f"<li><code>{_esc(name, _LONG_TEXT)}</code>: {_fmt(_count(n))}</li>"
            for name, n in shown
        )
        if len(left_out) > len(shown):
            items += f"<li>and {len(left_out) - len(shown):,} more</li>"
        parts.append(
            "<div><strong>Properties left out</strong> (objects, lists or nulls; the events "
            f"went on without them):<ul>{items}</ul></div>"
        )
    dry = _is_dry_run(report)
    for title, stats in (("Events", _EVENT_STATS), ("Messages", _MESSAGE_STATS)):
        cards = []
        for key, label in stats:
            value = _count(getattr(report, key))
            if dry and key in _NOT_IN_A_DRY_RUN:
                continue
            if key in ("messages_too_old", "messages_from_old_days") and not value:
                continue  # only runs that have them: most never do
            if dry and key == "messages_dry_run":
                label = "written (dry run)"
            cards.append(_stat(label, _fmt(value), _ALERTS.get(key, "") if value else ""))
        parts.append(f'<h3>{title}</h3><div class="stats">{"".join(cards)}</div>')
    elapsed = _number(report.elapsed_seconds)
    rate = _number(report.messages_per_second)
    if dry:
        written = _count(report.messages_dry_run)
        pace = _stat("messages/s written", _fmt(round(written / elapsed, 1) if elapsed else 0))
    else:
        pace = _stat("messages/s delivered", _fmt(round(rate, 1)))
    run_cards = [
        _stat("elapsed seconds", _fmt(round(elapsed, 1))),
        pace,
        _stat("exit status", _esc(exit_status if tone else "\u2014"), tone),
    ]
    parts.append(f'<h3>Run</h3><div class="stats">{"".join(run_cards)}</div>')
    dead_letter = report.dead_letter
    facts = [
        f"<dt>inputs</dt><dd>{_listing(report.inputs)}</dd>",
        f"<dt>destinations</dt><dd>{_listing(report.destinations)}</dd>",
        "<dt>dead letter</dt><dd>"
        + (f"<code>{_esc(dead_letter)}</code>" if dead_letter else "not recorded")
        + "</dd>",
    ]
    parts.append(f'<dl class="facts">{"".join(facts)}</dl></header>')
    return "".join(parts)


# --- chart: messages per day and type ---------------------------------------------------


@dataclass(frozen=True)
class _Periods:
    """How days are grouped into bars: the bar index of a day and the label of an index."""

    name: str  # "day", "week", "month", "year" or "N-year period"
    index: Callable[[date], int]
    label: Callable[[int], str]
    axis: str


def _week_label(index: int) -> str:
    return date.fromordinal(index * 7 + 1).isoformat()


_DAY = _Periods("day", date.toordinal, lambda i: date.fromordinal(i).isoformat(), "day (UTC)")
# date(1, 1, 1) is a Monday of ordinal 1: weeks run Monday to Sunday
_WEEK = _Periods(
    "week", lambda d: (d.toordinal() - 1) // 7, _week_label, "week (UTC, starting Monday)"
)
_MONTH = _Periods(
    "month",
    lambda d: d.year * 12 + d.month - 1,
    lambda i: f"{i // 12:04d}-{i % 12 + 1:02d}",
    "month (UTC)",
)
_YEAR = _Periods("year", lambda d: d.year, lambda i: f"{i:04d}", "year (UTC)")


def _years(size: int) -> _Periods:
    return _Periods(
        f"{size}-year period",
        lambda d: d.year // size,
        lambda i: f"{i * size:04d}\u2013{i * size + size - 1:04d}",
        f"{size}-year period (UTC)",
    )


def _choose_periods(first: date, last: date) -> _Periods:
    for periods in (_DAY, _WEEK, _MONTH, _YEAR):
        if periods.index(last) - periods.index(first) + 1 <= MAX_BARS:
            return periods
    size = math.ceil((last.year - first.year + 1) / (MAX_BARS - 1))
    return _years(size)


def _by_day_chart(report: RunReport) -> str:
    name, heading = "by-day", "Messages per day and type"
    if report.messages_by_day is None:
        return _nothing(name, heading, "this report has no per-day counts (an older report)")
    days: dict[date, dict[str, int]] = {}
    undated = 0
    for key, per_type in report.messages_by_day.items():
        counts = {str(t): _count(n) for t, n in _mapping(per_type).items() if _count(n)}
        if not counts:
            continue
        try:
            day = date.fromisoformat(str(key))
        except ValueError:
            undated += sum(counts.values())
            continue
        merged = days.setdefault(day, {})
        for kind, n in counts.items():
            merged[kind] = merged.get(kind, 0) + n
    notes = []
    if undated:
        plural = "message" if undated == 1 else "messages"
        notes.append(f"{undated:,} {plural} under keys that are not dates are not shown.")
    if not days:
        return _nothing(name, heading, "no messages were built from dated events", notes)

    totals: dict[str, float] = {}
    for counts in days.values():
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
    shown, others = _rank(totals, MAX_TYPES)
    series = [*shown, "other"] if others else shown
    colours = {kind: TYPE_PALETTE[i % len(TYPE_PALETTE)] for i, kind in enumerate(shown)}
    colours["other"] = OTHER_COLOUR
    other_set = set(others)

    periods = _choose_periods(min(days), max(days))
    bars: dict[int, dict[str, int]] = {}
    for day, counts in days.items():
        bar = bars.setdefault(periods.index(day), {})
        for kind, n in counts.items():
            key = "other" if kind in other_set else kind
            bar[key] = bar.get(key, 0) + n
    first, last = min(bars), max(bars)
    slots = last - first + 1
    if periods is not _DAY:
        notes.append(
            f"{len(days):,} days span more than {MAX_BARS:,} days: shown as {slots:,} bars, "
            f"one per {periods.name} (the first and last may hold only part of one)."
        )
    if others:
        notes.append(
            f"{len(others):,} less frequent types are shown together as \u201cother\u201d."
        )

    legend, legend_height = _legend(
        [_Item(kind, colours[kind]) for kind in series], 70, 10, _WIDTH - 90
    )
    left, right = 70.0, _WIDTH - 20.0
    top = 10 + legend_height + 10
    plot_height = 260.0
    bottom = top + plot_height
    height = bottom + 50
    peak = max(sum(bar.values()) for bar in bars.values())
    ticks = _nice_ticks(peak, integer=True)
    y_max = ticks[-1]

    def y_of(value: float) -> float:
        return bottom - value / y_max * plot_height

    slot_width = (right - left) / slots
    gap = slot_width * 0.2 if slot_width >= 4 else 0.0
    parts = [
        _svg_open(name, heading, height, f' data-bars="{slots}" data-period="{periods.name}"'),
        legend,
        _y_axis(ticks, left, right, y_of),
    ]
    for index in range(first, last + 1):
        if index not in bars:
            continue
        bar = bars[index]
        x = left + (index - first) * slot_width + gap / 2
        label = periods.label(index)
        total = sum(bar.values())
        detail = ", ".join(f"{_esc(k, 40)} {bar[k]:,}" for k in series if bar.get(k))
        parts.append(f'<g class="bar"><title>{label}: {total:,} messages ({detail})</title>')
        level = 0.0
        for kind in series:
            n = bar.get(kind, 0)
            if not n:
                continue
            y_top, y_bottom = y_of(level + n), y_of(level)
            parts.append(
                f'<rect x="{_f(x)}" y="{_f(y_top)}" width="{_f(slot_width - gap)}" '
                f'height="{_f(y_bottom - y_top)}" fill="{colours[kind]}"/>'
            )
            level += n
        parts.append("</g>")
    label_width = len(periods.label(first)) * _TEXT_PX + 16
    step = max(1, math.ceil(slots / max(1, int((right - left) // label_width))))
    for offset in range(0, slots, step):
        x = left + (offset + 0.5) * slot_width
        parts.append(
            f'<line class="axis" x1="{_f(x)}" y1="{_f(bottom)}" x2="{_f(x)}" '
            f'y2="{_f(bottom + 5)}"/><text class="tick" x="{_f(x)}" y="{_f(bottom + 18)}" '
            f'text-anchor="middle">{periods.label(first + offset)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{_f(left)}" y1="{_f(bottom)}" x2="{_f(right)}" y2="{_f(bottom)}"/>'
    )
    parts.append(_axis_titles(periods.axis, "messages", left, right, top, bottom))
    parts.append("</svg>")
    return _section(name, heading, "".join(parts), notes)


# --- chart: outcomes by type ------------------------------------------------------------


def _outcomes_chart(report: RunReport) -> str:
    name, heading = "outcomes", "Delivered and failed by type"
    dry = _is_dry_run(report)
    if dry:
        heading = "Messages written by type (dry run)"
    if report.by_type is None:
        return _nothing(name, heading, "this report has no per-type counts")
    outcomes = tuple(OUTCOME_COLOURS)
    types: dict[str, dict[str, int]] = {}
    for kind, counts in report.by_type.items():
        values = _mapping(counts)
        types[str(kind)] = {outcome: _count(values.get(outcome)) for outcome in outcomes}
    totals: dict[str, float] = {kind: sum(c.values()) for kind, c in types.items()}
    if not any(totals.values()):
        return _nothing(name, heading, "no messages were built")
    shown, others = _rank({k: v for k, v in totals.items() if v}, MAX_TYPES)
    rows: list[tuple[str, dict[str, int]]] = [(kind, types[kind]) for kind in shown]
    notes = []
    if others:
        merged = {o: sum(types[k][o] for k in others) for o in outcomes}
        rows.append((f"other ({len(others):,} types)", merged))
        notes.append(
            f"{len(others):,} less frequent types are shown together as \u201cother\u201d."
        )

    label_right, left, right = 190.0, 200.0, _WIDTH - 90.0
    peak = max(max(counts.values()) for _, counts in rows)
    ticks = _nice_ticks(peak, integer=True)
    x_max = ticks[-1]

    def x_of(value: float) -> float:
        return left + value / x_max * (right - left)

    body: list[str] = []
    y = 10.0
    for kind, counts in rows:
        body.append(
            f'<text class="group" x="10" y="{_f(y + 14)}">{_esc(kind, 60)}</text>'
            f'<g class="outcome-group" data-type="{_esc(kind, 60)}">'
        )
        y += 20
        if dry:
            # a dry run sends nothing: what it wrote, and why the others were not
            shown_outcomes = ["dry_run"] + [o for o in _DRY_RUN_OUTCOMES[1:] if counts[o]]
        else:
            shown_outcomes = ["delivered", "failed"]
            shown_outcomes += [o for o in _OPTIONAL_OUTCOMES if counts[o]]
        for outcome in shown_outcomes:
            n = counts[outcome]
            width = x_of(n) - left
            if n and width < 2:
                width = 2.0
            body.append(
                f'<text class="tick" x="{_f(label_right)}" y="{_f(y + 12)}" '
                f'text-anchor="end">{_OUTCOME_LABELS[outcome]}</text>'
                f'<rect x="{_f(left)}" y="{_f(y + 2)}" width="{_f(width)}" height="13" '
                f'fill="{OUTCOME_COLOURS[outcome]}"><title>{_esc(kind, 60)} '
                f"{_OUTCOME_LABELS[outcome]}: {n:,}</title></rect>"
                f'<text class="value" x="{_f(left + width + 5)}" y="{_f(y + 12)}">{n:,}</text>'
            )
            y += 18
        body.append("</g>")
        y += 8
    bottom = y + 4
    height = bottom + 50
    parts = [_svg_open(name, heading, height)]
    for tick in ticks:
        x = x_of(tick)
        parts.append(f'<line class="grid" x1="{_f(x)}" y1="10" x2="{_f(x)}" y2="{_f(bottom)}"/>')
    parts.extend(body)
    parts.append(
        f'<line class="axis" x1="{_f(left)}" y1="{_f(bottom)}" x2="{_f(right)}" y2="{_f(bottom)}"/>'
    )
    parts.append(_x_ticks(ticks, bottom, x_of))
    parts.append(
        f'<text class="axis-label" x="{_f((left + right) / 2)}" y="{_f(bottom + 38)}" '
        'text-anchor="middle">messages</text>'
        f'<text class="axis-label" x="10" y="{_f(bottom + 38)}">type and outcome</text>'
    )
    parts.append("</svg>")
    return _section(name, heading, "".join(parts), notes)


# --- chart: dead-letter reasons ---------------------------------------------------------


def _reasons_chart(report: RunReport) -> str:
    name, heading = "reasons", "Top dead-letter reasons"
    dead_letter = report.dead_letter
    where = (
        f"Dead-letter file: <code>{_esc(dead_letter)}</code>"
        if dead_letter
        else "The report does not say where the dead-letter file is."
    )
    raw = report.dead_letter_reasons
    entries: list[tuple[str, str, int]] = []
    if raw is not None:
        for item in raw:
            entry = _mapping(item)
            count = _count(entry.get("count"))
            if count:
                entries.append((str(entry.get("stage", "")), str(entry.get("reason", "")), count))
    if not entries:
        why = (
            "no dead letters in this run"
            if raw is not None
            else "this report has no dead-letter reasons (an older report)"
        )
        return _nothing(name, heading, why, [where])
    entries.sort(key=lambda entry: -entry[2])
    shown = entries[:MAX_REASONS]
    total = sum(entry[2] for entry in entries)
    notes = [
        f"{total:,} dead-letter entries with {len(entries):,} distinct "
        f"reason{'s' if len(entries) != 1 else ''}"
        + (f"; the top {MAX_REASONS} are shown." if len(entries) > MAX_REASONS else "."),
        where,
    ]

    left, right = 10.0, _WIDTH - 90.0
    ticks = _nice_ticks(shown[0][2], integer=True)
    x_max = ticks[-1]

    def x_of(value: float) -> float:
        return left + value / x_max * (right - left)

    row = 44.0
    bottom = 10 + row * len(shown)
    height = bottom + 50
    parts = [_svg_open(name, heading, height)]
    for tick in ticks:
        x = x_of(tick)
        parts.append(f'<line class="grid" x1="{_f(x)}" y1="10" x2="{_f(x)}" y2="{_f(bottom)}"/>')
    max_chars = int((_WIDTH - 30) / _TEXT_PX) - 12
    for rank, (stage, reason, count) in enumerate(shown, 1):
        y = 10 + (rank - 1) * row
        colour = STAGE_COLOURS.get(stage, OTHER_COLOUR)
        width = max(x_of(count) - left, 2.0)
        parts.append(
            f'<g class="reason"><title>{_esc(stage, 40)}: {_esc(reason, _LONG_TEXT)} '
            f"({count:,})</title>"
            f'<text class="label" x="{_f(left)}" y="{_f(y + 14)}">'
            f'<tspan class="stage" fill="{colour}">{_esc(stage, 12)}</tspan>'
            f"<tspan> {_esc(reason, max_chars - min(len(stage), 12))}</tspan></text>"
            f'<rect x="{_f(left)}" y="{_f(y + 20)}" width="{_f(width)}" height="16" '
            f'fill="{colour}"/>'
            f'<text class="value" x="{_f(left + width + 5)}" y="{_f(y + 32)}">{count:,}</text>'
            "</g>"
        )
    parts.append(
        f'<line class="axis" x1="{_f(left)}" y1="{_f(bottom)}" x2="{_f(right)}" y2="{_f(bottom)}"/>'
    )
    parts.append(_x_ticks(ticks, bottom, x_of))
    parts.append(
        f'<text class="axis-label" x="{_f((left + right) / 2)}" y="{_f(bottom + 38)}" '
        'text-anchor="middle">dead-letter entries (reason above each bar)</text></svg>'
    )
    table = [
        '<table class="reasons"><colgroup><col class="rank"><col class="stage"><col>'
        '<col class="count"><col class="share"></colgroup><thead><tr><th>#</th>'
        '<th>stage</th><th>reason</th><th class="num">entries</th><th class="num">share</th>'
        "</tr></thead><tbody>"
    ]
    for rank, (stage, reason, count) in enumerate(shown, 1):
        table.append(
            f'<tr><td class="num">{rank}</td><td>{_esc(stage, 40)}</td>'
            f"<td>{_esc(reason, _LONG_TEXT)}</td><td class='num'>{count:,}</td>"
            f"<td class='num'>{count / total:.1%}</td></tr>"
        )
    table.append("</tbody></table>")
    return _section(name, heading, "".join(parts) + "".join(table), notes)


# --- table: messages per destination ---------------------------------------------------

#: The columns of the per-destination table: (by_destination's key, title); a run that sends
#: always shows delivered and failed, a dry run what it wrote; the others when not 0.
_DESTINATION_COLUMNS = (
    ("built", "built"),
    ("dry_run", "written (dry run)"),
    ("delivered", "delivered"),
    ("failed", "failed"),
    ("duplicate", "duplicate"),
    ("skipped", "already delivered"),
    ("too_old", "too old (not sent)"),
    ("invalid", "invalid (not built)"),
    ("from_old_days", "of events older than 2 days"),
)


def _destinations_table(report: RunReport) -> str:
    """Messages per destination: written for a dry run, delivered and failed otherwise."""
    name = "destinations"
    dry = _is_dry_run(report)
    heading = "Messages written per destination (dry run)" if dry else "Messages per destination"
    rows = {
        str(destination): _mapping(counts)
        for destination, counts in _mapping(report.by_destination).items()
    }
    if not rows:
        return _nothing(name, heading, "no messages were built for any destination")
    always = ("built", "dry_run") if dry else ("built", "delivered", "failed")
    columns = [
        (key, title)
        for key, title in _DESTINATION_COLUMNS
        if key in always or any(_count(counts.get(key)) for counts in rows.values())
    ]
    head = "".join(f'<th class="num">{_esc(title)}</th>' for _, title in columns)
    body = "".join(
        f'<tr data-destination="{_esc(destination, 60)}"><td>{_esc(destination, 60)}</td>'
        + "".join(f'<td class="num">{_count(counts.get(key)):,}</td>' for key, _ in columns)
        + "</tr>"
        for destination, counts in sorted(rows.items())
    )
    table = (
        f'<table class="reasons destinations"><thead><tr><th>destination</th>{head}</tr>'
        f"</thead><tbody>{body}</tbody></table>"
    )
    return _section(name, heading, table)


# --- table: a chunked run's chunks ------------------------------------------------------

_CHUNK_COLUMNS = (
    ("events_read", "events"),
    ("messages_built", "built"),
    ("messages_delivered", "delivered"),
    ("messages_skipped", "already delivered"),
    ("messages_too_old", "too old"),
    ("messages_failed", "failed"),
    ("messages_dry_run", "dry run"),
)


def _chunks_table(report: RunReport) -> str:
    """One row per chunk of a chunked run, and their totals; nothing for another run."""
    chunking = _mapping(report.chunking)
    rows = [_mapping(row) for row in chunking.get("chunks", ()) if isinstance(row, Mapping)]
    if not rows:
        return ""
    dry = any(_count(row.get("messages_dry_run")) for row in rows)
    too_old = any(_count(row.get("messages_too_old")) for row in rows)
    columns = [c for c in _CHUNK_COLUMNS if (c[0] == "messages_dry_run") == dry or
               c[0] in ("events_read", "messages_built")]  # fmt: skip
    # too old only when some chunk had any: most runs never do
    columns = [c for c in columns if c[0] != "messages_too_old"]
    if too_old:
        columns.insert(2 if dry else 4, ("messages_too_old", "too old"))
    head = "".join(f'<th class="num">{_esc(title)}</th>' for _, title in columns)
    body = []
    for row in rows:
        days = f"{_esc(row.get('first_day'))} \u2013 {_esc(row.get('last_day'))}"
        cells = "".join(f'<td class="num">{_count(row.get(key)):,}</td>' for key, _ in columns)
        body.append(
            f'<tr><td class="num">{_count(row.get("chunk"))}</td><td>{days}</td>'
            f"<td>{_esc(row.get('status'), 20)}</td>{cells}"
            f'<td class="num">{_fmt(_number(row.get("seconds")))} s</td></tr>'
        )
    totals = "".join(
        f'<td class="num">{sum(_count(row.get(key)) for row in rows):,}</td>' for key, _ in columns
    )
    table = (
        '<table class="reasons chunks"><thead><tr><th>#</th><th>days</th><th>status</th>'
        f'{head}<th class="num">time</th></tr></thead><tbody>{"".join(body)}'
        f'<tr class="total"><td></td><td>total</td><td></td>{totals}<td></td></tr>'
        "</tbody></table>"
    )
    unit = _esc(chunking.get("unit"), 20)
    notes = [
        f"{len(rows):,} chunks of event time (--chunk {unit}), run one after the other; "
        "\u201cresumed\u201d rows were finished by an earlier run of the same command.",
        f"Work directory: <code>{_esc(chunking.get('work_dir'))}</code>",
    ]
    return _section("chunks", "Chunks", table, notes)


# --- chart: send rate over the run ------------------------------------------------------


def _rates(values: object) -> list[float]:
    if isinstance(values, Sequence) and not isinstance(values, str):
        return [max(_number(value), 0.0) for value in values]
    return []


def _send_rate_chart(report: RunReport) -> str:
    name, heading = "send-rate", "Send rate over the run"
    timeline = _mapping(report.send_timeline)
    delivered = {str(d): _rates(v) for d, v in _mapping(timeline.get("delivered")).items()}
    failed = {str(d): _rates(v) for d, v in _mapping(timeline.get("failed")).items()}
    buckets = max((len(v) for v in (*delivered.values(), *failed.values())), default=0)
    if not buckets or not any(sum(v) for v in (*delivered.values(), *failed.values())):
        if report.dry_run:
            why = "a dry run sends nothing"
        elif report.send_timeline is None:
            why = "this report has no send timeline (an older report)"
        else:
            why = "no messages were sent"
        return _nothing(name, heading, why)
    bucket_seconds = _number(timeline.get("bucket_seconds")) or 1.0
    if bucket_seconds < 0:
        bucket_seconds = 1.0
    totals: dict[str, float] = {}
    for series in (delivered, failed):
        for destination, values in series.items():
            totals[destination] = totals.get(destination, 0) + sum(values)
    shown, others = _rank(totals, len(DELIVERED_LINE_COLOURS))
    notes = []
    if others:
        notes.append(f"{len(others):,} destinations are shown together as \u201cother\u201d.")

    def merged(series: Mapping[str, list[float]], destination: str) -> list[float]:
        names = others if destination == "other" else [destination]
        out = [0.0] * buckets
        for each in names:
            for i, value in enumerate(series.get(each, ())):
                out[i] += value
        return out

    per = math.ceil(buckets / MAX_POINTS)
    if per > 1:
        notes.append(
            f"{buckets:,} buckets of {_fmt(bucket_seconds)} s: each point is the mean rate "
            f"over {per:,} buckets ({_fmt(per * bucket_seconds)} s)."
        )

    def downsample(values: list[float]) -> list[tuple[float, float]]:
        points = []
        for start in range(0, buckets, per):
            chunk = values[start : start + per]
            seconds = len(chunk) * bucket_seconds
            points.append(((start + len(chunk) / 2) * bucket_seconds, sum(chunk) / seconds))
        if len(points) == 1:  # one bucket: a flat segment across it
            points = [(0.0, points[0][1]), (buckets * bucket_seconds, points[0][1])]
        return points

    lines: list[tuple[_Item, list[tuple[float, float]], float]] = []
    destinations = [*shown, "other"] if others else shown
    for rank, destination in enumerate(destinations):
        values = merged(delivered, destination)
        colour = DELIVERED_LINE_COLOURS[rank % len(DELIVERED_LINE_COLOURS)]
        item = _Item(f"{destination} delivered", colour, line=True)
        lines.append((item, downsample(values), sum(values)))
    for rank, destination in enumerate(destinations):
        values = merged(failed, destination)
        if sum(values):
            colour = FAILED_LINE_COLOURS[rank % len(FAILED_LINE_COLOURS)]
            item = _Item(f"{destination} failed", colour, line=True, dashed=True)
            lines.append((item, downsample(values), sum(values)))

    legend, legend_height = _legend([line[0] for line in lines], 70, 10, _WIDTH - 90)
    left, right = 70.0, _WIDTH - 20.0
    top = 10 + legend_height + 10
    plot_height = 260.0
    bottom = top + plot_height
    height = bottom + 50
    duration = buckets * bucket_seconds
    peak = max(rate for _, points, _ in lines for _, rate in points)
    y_ticks = _nice_ticks(peak)
    x_ticks = [t for t in _nice_ticks(duration, target=10) if t <= duration]
    y_max = y_ticks[-1]

    def x_of(seconds: float) -> float:
        return left + seconds / duration * (right - left)

    def y_of(rate: float) -> float:
        return bottom - rate / y_max * plot_height

    parts = [
        _svg_open(name, heading, height, f' data-points="{max(len(p) for _, p, _ in lines)}"'),
        legend,
        _y_axis(y_ticks, left, right, y_of),
    ]
    for item, points, total in lines:
        dash = ' stroke-dasharray="6 3"' if item.dashed else ""
        coordinates = " ".join(f"{_f(x_of(x))},{_f(y_of(y))}" for x, y in points)
        parts.append(
            f'<polyline class="series" fill="none" stroke="{item.colour}" stroke-width="2.5" '
            f'stroke-linejoin="round"{dash} points="{coordinates}">'
            f"<title>{_esc(item.label, 60)}: {_fmt(total)} messages</title></polyline>"
        )
    parts.append(
        f'<line class="axis" x1="{_f(left)}" y1="{_f(bottom)}" x2="{_f(right)}" y2="{_f(bottom)}"/>'
    )
    parts.append(_x_ticks(x_ticks, bottom, x_of))
    start = _number(timeline.get("start"))
    since = "start"
    try:
        if start > 0:
            since = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        pass
    parts.append(_axis_titles(f"seconds since {since}", "messages/s", left, right, top, bottom))
    parts.append("</svg>")
    summary = "; ".join(
        f"{_esc(item.label, 60)}: {_fmt(total)} messages, peak "
        f"{_fmt(round(max(r for _, r in points), 1))}/s"
        for item, points, total in lines
    )
    return _section(name, heading, "".join(parts), [summary, *notes])


# --- page -------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7f9; color: #1d232b;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1060px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 0 0 12px; font-size: 19px; }
h3 { margin: 16px 0 6px; font-size: 13px; text-transform: uppercase; letter-spacing: .06em;
  color: #59616b; }
header, section { background: #fff; border: 1px solid #dde1e6; border-radius: 8px;
  padding: 18px 20px; margin-bottom: 20px; }
.status { margin: 0; color: #59616b; }
.status.good { color: #1b6b3a; } .status.bad { color: #a61b1b; font-weight: 600; }
.badge { display: inline-block; margin-left: 8px; padding: 1px 8px; border-radius: 10px;
  background: #eef1f5; color: #333a44; font-weight: normal; font-size: 13px; }
.warning { margin: 12px 0 4px; padding: 10px 14px; border: 2px solid #a61b1b;
  border-radius: 6px; background: #fdecea; color: #7a1010; }
.warning ul { margin: 6px 0 0; padding-left: 20px; }
.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; }
.stat { border: 1px solid #e3e6ea; border-radius: 6px; padding: 8px 10px; background: #fafbfc; }
.stat .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.stat .name { font-size: 12px; color: #59616b; }
.stat.warn { border-color: #f0c75e; background: #fff8e5; }
.stat.bad { border-color: #e88a80; background: #fdecea; }
.stat.bad .value { color: #a61b1b; } .stat.good .value { color: #1b6b3a; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 14px 0 0;
  font-size: 13px; }
.facts dt { color: #59616b; } .facts dd { margin: 0; overflow-wrap: anywhere; }
code { font: 12.5px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  background: #f0f2f5; padding: 0 4px; border-radius: 3px; overflow-wrap: anywhere; }
svg.chart { display: block; max-width: 100%; height: auto;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
svg.chart text { fill: #2b323b; }
svg.chart .tick { font-size: 11px; fill: #59616b; }
svg.chart .label, svg.chart .value { font-size: 12px; }
svg.chart .value { font-variant-numeric: tabular-nums; }
svg.chart .group { font-size: 13px; font-weight: 600; }
svg.chart .stage { font-weight: 700; }
svg.chart .axis-label { font-size: 12px; fill: #3c444e; }
svg.chart .grid { stroke: #e6e8eb; stroke-width: 1; }
svg.chart .axis { stroke: #79818b; stroke-width: 1; }
.empty { margin: 0; padding: 14px; border: 1px dashed #c4c9cf; border-radius: 6px;
  color: #59616b; background: #fafbfc; }
.note { margin: 8px 0 0; font-size: 13px; color: #59616b; overflow-wrap: anywhere; }
table.reasons { width: 100%; border-collapse: collapse; margin-top: 12px; font-size: 13px;
  table-layout: fixed; }
table.reasons col.rank { width: 36px; } table.reasons col.stage { width: 80px; }
table.reasons col.count { width: 80px; } table.reasons col.share { width: 70px; }
table.reasons th, table.reasons td { text-align: left; padding: 4px 8px;
  border-bottom: 1px solid #e6e8eb; vertical-align: top; overflow-wrap: break-word; }
table.reasons .num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
table.chunks, table.destinations { table-layout: auto; }
table.chunks tr.total td { font-weight: 600; }
footer { font-size: 12px; color: #7a828c; text-align: center; }
"""


def html_path(report_path: str) -> str:
    """Where report.html goes: beside the JSON report, with the same name."""
    stem = report_path.removesuffix(".json")
    return f"{stem}.html"


def render_html(report: RunReport) -> str:
    """One self-contained HTML page (no scripts, no network) of a run's report."""
    failed = report.exit_status not in (None, 0)
    outcome = "stopped early" if report.stopped else "failed"
    title = "beaconflow run report" + (f" \u2014 {outcome}" if failed else "")
    charts = (
        _by_day_chart(report),
        _outcomes_chart(report),
        _destinations_table(report),
        _reasons_chart(report),
        _send_rate_chart(report),
        _chunks_table(report),
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # nothing on this page may load from anywhere: no scripts, no network
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{_header(report)}{''.join(charts)}"
        "<footer>Written by beaconflow from report.json.</footer></main></body></html>\n"
    )
