"""The HTML report page: ``beaconflow.report.html.render_html``.

Unit tests on fabricated reports (charts, escaping, no network, empty data, bounding), and one
test that renders the page in headless Chromium and checks the drawn DOM and the screenshot's
pixels. That test skips when ``/usr/bin/chromium`` is absent, unless
``BEACONFLOW_REQUIRE_CHROMIUM=1`` (as in CI), when it fails instead.
Run with ``.venv/bin/python -m pytest tests/report/test_html.py -q``.
"""

from __future__ import annotations

import copy
import math
import re
import subprocess
from collections.abc import Callable
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from beaconflow.report.html import (
    DELIVERED_LINE_COLOURS,
    FAILED_LINE_COLOURS,
    MAX_BARS,
    MAX_POINTS,
    MAX_REASONS,
    MAX_TYPES,
    OTHER_COLOUR,
    OUTCOME_COLOURS,
    STAGE_COLOURS,
    TYPE_PALETTE,
    render_html,
)
from beaconflow.report.run import RunReport
from tests.conftest import debian_program

CHARTS = ("by-day", "outcomes", "reasons", "send-rate")
CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = "<script>alert('x')</script>"
HOSTILE = SCRIPT + "<img src=http://evil.example/x.png onerror=alert(1)>"

DAYS = 30
TYPES = {"kontagent/evt": 200, "kissmetrics/e": 150, "kontagent/ins": 60, "kissmetrics/s": 25}


def page_of(report: dict[str, Any]) -> str:
    """The page of a report as report.json holds it, read back as a tool would."""
    return render_html(RunReport.from_json(report))


def full_report() -> dict[str, Any]:
    """A realistic report of a run that sent to both destinations with some failures."""
    first = date(2025, 1, 1)
    by_day = {
        (first + timedelta(days=i)).isoformat(): {
            kind: base + (i * 7 + j * 13) % 40 for j, (kind, base) in enumerate(TYPES.items())
        }
        for i in range(DAYS)
    }
    buckets = 90
    return {
        "events_read": 20_000,
        "events_invalid": 185,
        "events_duplicate": 30,
        "events_out_of_range": 5,
        "events_mapped": 19_780,
        "messages_built": 19_800,
        "messages_duplicate": 40,
        "messages_skipped": 0,
        "messages_delivered": 17_560,
        "messages_failed": 2_200,
        "messages_dry_run": 0,
        "elapsed_seconds": 91.532,
        "messages_per_second": 192.9,
        "exit_status": 1,
        "invariant_errors": [],
        "destinations": ["kontagent", "kissmetrics"],
        "inputs": ["logs/2025-01-*.jsonl"],
        "dead_letter": "out/dead-letter.jsonl",
        "dry_run": None,
        "sandbox": False,
        "by_type": {
            "kissmetrics/e": {"built": 6000, "delivered": 5400, "failed": 580, "duplicate": 20},
            "kissmetrics/s": {"built": 800, "delivered": 800},
            "kontagent/evt": {"built": 9800, "delivered": 8300, "failed": 1500},
            "kontagent/ins": {"built": 3200, "delivered": 3060, "failed": 120, "duplicate": 20},
        },
        "messages_by_day": by_day,
        "dead_letter_reasons": [
            {
                "stage": "parse",
                "reason": "field 'uid' must be a string of 1 to 64 characters",
                "count": 120,
            },
            {"stage": "send", "reason": "HTTP 503 after 5 attempts", "count": 95},
            {"stage": "map", "reason": "unknown event name " + SCRIPT, "count": 45},
            {"stage": "read", "reason": "line is not UTF-8", "count": 20},
        ],
        "send_timeline": {
            "start": 1_763_900_000,
            "bucket_seconds": 1,
            "delivered": {
                "kontagent": [min(i * 20, 300) for i in range(buckets)],
                "kissmetrics": [min(i * 12, 180) for i in range(buckets)],
            },
            "failed": {"kontagent": [60 if 30 <= i < 70 else 0 for i in range(buckets)]},
        },
    }


# --- reading the page ---------------------------------------------------------------------


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    parser.close()
    return parser


def chart(page: str, name: str) -> str:
    """The one ``<svg class="chart">`` named ``name``."""
    found = re.findall(rf'<svg class="chart" data-chart="{name}".*?</svg>', page, re.S)
    assert len(found) == 1, f"{name}: {len(found)} charts"
    return str(found[0])


def section(page: str, name: str) -> str:
    found = re.findall(
        rf'<section class="chart-block" data-chart="{name}".*?</section>', page, re.S
    )
    assert len(found) == 1, f"{name}: {len(found)} sections"
    return str(found[0])


def has_chart(page: str, name: str) -> bool:
    return f'<svg class="chart" data-chart="{name}"' in page


def first(pattern: str, text: str) -> str:
    """The first group of ``pattern``'s first match in ``text``."""
    found = re.search(pattern, text)
    assert found, pattern
    return found[1]


def points(polyline: str) -> list[tuple[float, float]]:
    coordinates = re.search(r'points="([^"]*)"', polyline)
    assert coordinates
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in coordinates[1].split())]


# --- charts and values --------------------------------------------------------------------


def test_every_chart_is_drawn_with_a_title_and_axis_labels() -> None:
    page = page_of(full_report())
    assert page.startswith("<!DOCTYPE html>")
    titles = {
        "by-day": "Messages per day and type",
        "outcomes": "Delivered and failed by type",
        "reasons": "Top dead-letter reasons",
        "send-rate": "Send rate over the run",
    }
    for name, title in titles.items():
        svg = chart(page, name)
        assert f"<title>{title}</title>" in svg
        assert 'class="axis-label"' in svg
        assert "nothing to show" not in section(page, name)
    assert ">day (UTC)</text>" in chart(page, "by-day")
    assert ">messages</text>" in chart(page, "by-day")
    assert ">messages/s</text>" in chart(page, "send-rate")
    assert "seconds since 2025-11-23 12:13:20 UTC" in chart(page, "send-rate")


def test_header_shows_the_headline_numbers() -> None:
    page = page_of(full_report())
    header = page[page.index("<header>") : page.index("</header>")]
    text = " ".join(parse(header).text)
    for value in ("20,000", "19,780", "185", "30", "5", "19,800", "17,560", "2,200", "40"):
        assert re.search(rf"(^|\s){re.escape(value)}(\s|$)", text), value
    for label in ("read", "mapped", "invalid", "out of range", "built", "delivered", "failed"):
        assert f'<div class="name">{label}</div>' in header
    assert "already delivered" in header
    assert "dry run" in header
    assert "91.5" in text and "193" in text
    assert "exit status 1" in text
    assert "out/dead-letter.jsonl" in text
    assert 'class="warning"' not in page


def facts(page: str) -> dict[str, str]:
    """The header's run facts: name -> the text shown."""
    found = re.findall(r'<dd data-fact="([a-z]+)">(.*?)</dd>', page, re.S)
    return {name: " ".join("".join(parse(value).text).split()) for name, value in found}


def test_header_says_what_the_run_covers_when_it_ran_its_version_and_command() -> None:
    report = {
        **full_report(),
        "date": "2025-06-01",
        "since": "2025-05-31T00:00:00Z",
        "until": "2025-06-02T00:00:00Z",
        "started_at": "2025-06-02T01:30:00.250Z",
        "ended_at": "2025-06-02T01:42:07.000Z",
        "version": "0.1.0",
        "command": ["beaconflow", "--date", "yesterday", "--kontagent-api-key=***",
                    "--input", "logs/{date}/*.jsonl"],
    }  # fmt: skip
    shown = facts(page_of(report))
    assert list(shown) == ["covers", "started", "ended", "version", "command"]
    assert shown["covers"].startswith(
        "--date 2025-06-01 (events from 2025-05-31 00:00:00 UTC to before 2025-06-02 00:00:00 UTC)"
    )
    assert shown["covers"].endswith("messages built from events of 2025-01-01 to 2025-01-30")
    assert shown["started"] == "2025-06-02 01:30:00 UTC"
    assert shown["ended"] == "2025-06-02 01:42:07 UTC"
    assert shown["version"] == "beaconflow 0.1.0"
    assert shown["command"] == (
        "beaconflow --date yesterday '--kontagent-api-key=***' --input 'logs/{date}/*.jsonl'"
    )


def test_a_window_or_no_window_is_said_and_an_older_report_lacks_the_facts() -> None:
    windowed = {**full_report(), "since": "2025-01-01T00:00:00Z", "until": None}
    assert facts(page_of(windowed))["covers"].startswith(
        "events from 2025-01-01 00:00:00 UTC to the last event;"
    )
    older = facts(page_of(full_report()))
    assert older["covers"].startswith("every event of the input (no --date, --since or --until)")
    assert older["started"] == older["ended"] == "not recorded"
    assert older["version"] == "not recorded"
    assert older["command"] == "not recorded (an older report)"
    hostile = facts(page_of({**full_report(), "command": ["beaconflow", SCRIPT],
                             "started_at": SCRIPT}))  # fmt: skip
    assert SCRIPT not in page_of({**full_report(), "command": ["beaconflow", SCRIPT]})
    assert hostile["started"] == SCRIPT  # shown as text, escaped


def dry_run_report() -> dict[str, Any]:
    """A dry run's report: messages written to the dry-run file, some too old for Kontagent."""
    report = full_report()
    report.update(
        dry_run="out/dry-run.jsonl",
        messages_delivered=0,
        messages_failed=0,
        messages_dry_run=19_500,
        messages_too_old=260,
        messages_duplicate=40,
        messages_per_second=0.0,
        exit_status=0,
        send_timeline={"start": None, "bucket_seconds": 1, "delivered": {}, "failed": {}},
        dead_letter_reasons=report["dead_letter_reasons"][:1],
        by_type={
            "kissmetrics/e": {"built": 6000, "dry_run": 5980, "duplicate": 20},
            "kissmetrics/s": {"built": 800, "dry_run": 800},
            "kontagent/evt": {"built": 9800, "dry_run": 9600, "too_old": 200},
            "kontagent/ins": {"built": 3200, "dry_run": 3120, "too_old": 60, "duplicate": 20},
        },
        by_destination={
            "kissmetrics": {"built": 6800, "dry_run": 6780, "duplicate": 20},
            "kontagent": {"built": 13000, "dry_run": 12720, "too_old": 260, "duplicate": 20},
        },
    )
    return report


def test_a_dry_run_shows_what_it_wrote_per_type_and_destination() -> None:
    page = page_of(dry_run_report())
    header = page[page.index("<header>") : page.index("</header>")]
    names = re.findall(r'<div class="name">([^<]*)</div>', header)
    assert "written (dry run)" in names and "too old for Kontagent (not sent)" in names
    assert "delivered" not in names and "failed" not in names
    assert "messages/s written" in names and "messages/s delivered" not in names
    block = section(page, "outcomes")
    assert "<h2>Messages written by type (dry run)</h2>" in block
    svg = chart(page, "outcomes")
    groups = dict(re.findall(r'<g class="outcome-group" data-type="([^"]+)">(.*?)</g>', svg, re.S))
    assert list(groups) == ["kontagent/evt", "kissmetrics/e", "kontagent/ins", "kissmetrics/s"]
    for kind, group in groups.items():
        labels = re.findall(r'text-anchor="end">([^<]*)</text>', group)
        assert labels[0] == "dry run", kind
        assert "delivered" not in labels and "failed" not in labels, kind
    assert re.findall(r'text-anchor="end">([^<]*)</text>', groups["kontagent/ins"]) == [
        "dry run", "duplicate", "too old for Kontagent"
    ]  # fmt: skip
    table = section(page, "destinations")
    assert "<h2>Messages written per destination (dry run)</h2>" in table
    head = re.findall(r'<th class="num">([^<]*)</th>', table)
    assert head == ["built", "written (dry run)", "duplicate", "too old (not sent)"]
    row = first(r'<tr data-destination="kontagent">(.*?)</tr>', table)
    assert re.findall(r'<td class="num">([^<]*)</td>', row) == ["13,000", "12,720", "20", "260"]


def test_a_run_that_sends_has_delivered_and_failed_per_destination() -> None:
    report = full_report()
    report["by_destination"] = {
        "kontagent": {"built": 13000, "delivered": 11360, "failed": 1620, "duplicate": 20},
        "kissmetrics": {"built": 6800, "delivered": 6200, "failed": 580, "duplicate": 20},
    }
    table = section(page_of(report), "destinations")
    assert "<h2>Messages per destination</h2>" in table
    head = re.findall(r'<th class="num">([^<]*)</th>', table)
    assert head == ["built", "delivered", "failed", "duplicate"]
    assert "too old" not in section(page_of(full_report()), "outcomes")


def test_ambiguous_messages_have_a_card_of_their_own() -> None:
    page = page_of({**full_report(), "messages_ambiguous": 1234})
    header = page[: page.index("</header>")]
    assert (
        '<div class="stat warn"><div class="value">1,234</div>'
        '<div class="name">ambiguous (may be counted twice)</div></div>'
    ) in header


def test_invariant_errors_are_a_visible_warning() -> None:
    report = full_report()
    report["invariant_errors"] = ["events_read 20000 != the sum of its outcomes 19999", HOSTILE]
    page = page_of(report)
    warning = re.search(r'<div class="warning" role="alert">.*?</div>', page, re.S)
    assert warning
    assert "2 invariant errors" in warning[0]
    assert "events_read 20000 != the sum of its outcomes 19999" in warning[0]
    assert "&lt;script&gt;" in warning[0]


def test_a_stopped_run_says_why_and_how_to_finish() -> None:
    report = full_report()
    report["stopped"] = f"ledger not writable: /var/lib/l: No space left on device {HOSTILE}"
    report["exit_status"] = 4
    page = page_of(report)
    warning = re.search(
        r'<div class="warning" role="alert"><strong>Stopped early.*?</div>', page, re.S
    )
    assert warning
    assert "ledger not writable: /var/lib/l: No space left on device" in warning[0]
    assert "&lt;script&gt;" in warning[0] and "<script>" not in page
    assert "same <code>--ledger</code>" in warning[0] and "partial" not in warning[0]
    report["partial"] = True
    assert "The counts below are partial" in page_of(report)


def test_one_bar_per_day_stacked_by_type_with_a_legend() -> None:
    page = page_of(full_report())
    svg = chart(page, "by-day")
    assert f'data-bars="{DAYS}"' in svg and 'data-period="day"' in svg
    bars = re.findall(r'<g class="bar">.*?</g>', svg, re.S)
    assert len(bars) == DAYS
    # every day has every type: one segment per type, largest type at the bottom
    for bar in bars:
        fills = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"', bar)
        assert fills == list(TYPE_PALETTE[: len(TYPES)])
    assert "<title>2025-01-01: " in svg
    legend = re.search(r'<g class="legend">.*?</g>', svg, re.S)
    assert legend
    assert re.findall(r">([^<>]+)</text>", legend[0]) == list(TYPES)


def test_days_without_messages_leave_a_gap() -> None:
    report = full_report()
    report["messages_by_day"] = {
        "2025-03-01": {"kontagent/ins": 3},
        "2025-03-10": {"kontagent/ins": 5, "kissmetrics/e": 0},
        "2025-03-04": {},
    }
    svg = chart(page_of(report), "by-day")
    assert 'data-bars="10"' in svg
    assert len(re.findall(r'<g class="bar">', svg)) == 2


def test_outcomes_by_type_show_nonzero_extras_only() -> None:
    svg = chart(page_of(full_report()), "outcomes")
    groups = dict(re.findall(r'<g class="outcome-group" data-type="([^"]+)">(.*?)</g>', svg, re.S))
    assert list(groups) == ["kontagent/evt", "kissmetrics/e", "kontagent/ins", "kissmetrics/s"]
    for kind, group in groups.items():
        fills = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"', group)
        expected = [OUTCOME_COLOURS["delivered"], OUTCOME_COLOURS["failed"]]
        if kind in ("kissmetrics/e", "kontagent/ins"):
            expected.append(OUTCOME_COLOURS["duplicate"])
        assert fills == expected, kind
    assert ">8,300</text>" in groups["kontagent/evt"]
    assert ">1,500</text>" in groups["kontagent/evt"]
    assert ">0</text>" in groups["kissmetrics/s"]
    assert "already delivered" not in svg and "dry run" not in svg


def test_outcomes_of_a_dry_run_and_skipped_messages() -> None:
    report = full_report()
    report["by_type"] = {
        "kontagent/ins": {"built": 10, "dry_run": 7, "skipped": 3},
        "kissmetrics/e": {},
    }
    svg = chart(page_of(report), "outcomes")
    assert svg.count('<g class="outcome-group"') == 1
    assert "dry run" in svg and "already delivered" in svg
    assert f'fill="{OUTCOME_COLOURS["dry_run"]}"' in svg


def test_reasons_are_bars_with_escaped_text_and_the_dead_letter_file() -> None:
    page = page_of(full_report())
    block = section(page, "reasons")
    svg = chart(page, "reasons")
    assert svg.count('<g class="reason">') == 4
    assert ">parse</tspan>" in svg and "field &#x27;uid&#x27; must be" in svg
    assert f'fill="{STAGE_COLOURS["parse"]}"' in svg
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in svg
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in block.split("</svg>")[1]
    assert "280 dead-letter entries with 4 distinct reasons." in block
    assert "Dead-letter file: <code>out/dead-letter.jsonl</code>" in block
    assert len(re.findall(r"<tr><td", block)) == 4


def test_send_rate_lines_per_destination_with_failed_when_any() -> None:
    svg = chart(page_of(full_report()), "send-rate")
    lines = re.findall(r"<polyline [^>]*>", svg)
    colours = [first(r'stroke="(#[0-9a-f]{6})"', line) for line in lines]
    assert colours == [*DELIVERED_LINE_COLOURS[:2], FAILED_LINE_COLOURS[0]]
    assert "stroke-dasharray" in lines[2] and "stroke-dasharray" not in lines[0]
    assert all(len(points(line)) == 90 for line in lines)
    assert "kontagent delivered" in svg and "kissmetrics delivered" in svg
    assert "kontagent failed" in svg and "kissmetrics failed" not in svg


def test_send_rate_is_per_second_of_the_bucket() -> None:
    report = full_report()
    report["send_timeline"] = {
        "start": 1_763_900_000,
        "bucket_seconds": 5,
        "delivered": {"kontagent": [100, 100, 100, 100]},
    }
    block = section(page_of(report), "send-rate")
    assert "kontagent delivered: 400 messages, peak 20/s" in block
    line = points(re.findall(r"<polyline [^>]*>", block)[0])
    assert len({y for _, y in line}) == 1
    assert len(line) == 4


def test_a_single_bucket_is_a_flat_segment() -> None:
    report = full_report()
    report["send_timeline"] = {"start": 0, "bucket_seconds": 1, "delivered": {"kissmetrics": [7]}}
    block = section(page_of(report), "send-rate")
    line = points(re.findall(r"<polyline [^>]*>", block)[0])
    assert len(line) == 2 and line[0][1] == line[1][1] and line[0][0] < line[1][0]
    assert "seconds since start" in block


# --- safety -------------------------------------------------------------------------------


def hostile_report() -> dict[str, Any]:
    """Every string of the report, keys included, carries markup."""
    report = full_report()
    report["inputs"] = [HOSTILE]
    report["destinations"] = [HOSTILE]
    report["dead_letter"] = HOSTILE
    report["dry_run"] = HOSTILE
    report["invariant_errors"] = [HOSTILE]
    report["exit_status"] = HOSTILE
    report["by_type"][HOSTILE] = {"delivered": 5, "failed": 1}
    report["messages_by_day"]["2025-01-02"][HOSTILE] = 9
    report["messages_by_day"][HOSTILE] = {"x": 1}
    report["dead_letter_reasons"].append({"stage": HOSTILE, "reason": HOSTILE, "count": 2})
    report["send_timeline"]["delivered"][HOSTILE] = [1] * 90
    return report


def test_every_string_from_the_report_is_escaped() -> None:
    page = page_of(hostile_report())
    elements = parse(page)
    assert {tag for tag, _ in elements.tags} <= {
        "html", "head", "meta", "title", "style", "body", "main", "header", "h1", "h2", "h3",
        "p", "span", "div", "strong", "ul", "li", "dl", "dt", "dd", "code", "section", "svg",
        "g", "rect", "line", "polyline", "text", "tspan", "table", "colgroup", "col", "thead",
        "tbody", "tr", "th", "td", "footer",
    }  # fmt: skip
    for tag, attrs in elements.tags:
        assert not [name for name in attrs if name.startswith("on")], tag
        assert "src" not in attrs and "href" not in attrs, tag
    assert "<script" not in page and "<img" not in page
    assert page.count("&lt;script&gt;") >= 8


def test_the_page_loads_nothing_from_the_network() -> None:
    page = page_of(full_report())
    assert "http://" not in page and "https://" not in page
    assert "url(" not in page and "@import" not in page
    for tag, attrs in parse(page).tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed", "image", "use")
        assert not {"src", "href", "xlink:href"} & set(attrs), tag
    # and a browser that honours it refuses any load that might slip in
    assert "default-src 'none'" in page


def test_malformed_values_do_not_break_the_page() -> None:
    report = full_report()
    report.update(
        events_read="many", messages_failed=math.nan, elapsed_seconds=None, exit_status=True,
        inputs="one.jsonl", destinations=None, invariant_errors=None,
    )  # fmt: skip
    report["by_type"]["kontagent/evt"]["delivered"] = -5
    report["messages_by_day"]["2025-01-03"] = {"kontagent/ins": "7", "kissmetrics/e": 1.5e300}
    report["messages_by_day"]["not a day"] = {"kontagent/ins": 4}
    report["dead_letter_reasons"].extend([{"reason": "\ud800 lone \x00 surrogate", "count": 3}, 7])
    report["send_timeline"]["bucket_seconds"] = 0
    report["send_timeline"]["delivered"]["kontagent"][3] = "x"
    page = page_of(report)
    page.encode("utf-8")
    for name in CHARTS:
        assert has_chart(page, name), name
    assert "exit status unknown" in page
    assert "1 message under keys" in page_of({"messages_by_day": {"?": {"a": 1}}})
    assert "4 messages under keys that are not dates are not shown." in page
    assert "\x00" not in page


# --- nothing to show ----------------------------------------------------------------------


def assert_nothing(page: str, name: str, why: str) -> None:
    assert not has_chart(page, name), name
    assert f'<p class="empty">nothing to show: {why}</p>' in section(page, name)


def test_a_dry_run_has_no_send_rate() -> None:
    report = full_report()
    report["dry_run"] = "out/dry-run.jsonl"
    report["send_timeline"] = {"start": 1_763_900_000, "bucket_seconds": 1}
    report["by_type"] = {"kontagent/ins": {"built": 3, "dry_run": 3}}
    page = page_of(report)
    assert_nothing(page, "send-rate", "a dry run sends nothing")
    assert has_chart(page, "outcomes") and has_chart(page, "by-day")
    assert "dry run \u2192 <code>out/dry-run.jsonl</code>" in page


def test_a_clean_run_has_no_dead_letter_reasons_but_names_the_file() -> None:
    report = full_report()
    report["dead_letter_reasons"] = []
    block = section(page_of(report), "reasons")
    assert_nothing(block, "reasons", "no dead letters in this run")
    assert "Dead-letter file: <code>out/dead-letter.jsonl</code>" in block


def test_a_run_that_sent_nothing() -> None:
    report = full_report()
    report["send_timeline"] = {"start": 0, "bucket_seconds": 1, "delivered": {"kontagent": [0]}}
    report["by_type"] = {}
    report["messages_by_day"] = {}
    page = page_of(report)
    assert_nothing(page, "send-rate", "no messages were sent")
    assert_nothing(page, "outcomes", "no messages were built")
    assert_nothing(page, "by-day", "no messages were built from dated events")


def test_an_older_report_without_the_new_keys() -> None:
    report = full_report()
    for key in ("by_type", "messages_by_day", "dead_letter_reasons", "send_timeline"):
        del report[key]
    page = page_of(report)
    for name in CHARTS:
        assert not has_chart(page, name)
        assert "this report has no" in section(page, name)
    assert "20,000" in page


def test_an_empty_report() -> None:
    page = page_of({})
    assert "exit status unknown" in page
    assert "The report does not say where the dead-letter file is." in page
    assert page.count('<p class="empty">nothing to show: ') == 5  # four charts, a table


# --- bounding -----------------------------------------------------------------------------


def test_a_thousand_days_become_weeks() -> None:
    report = full_report()
    start = date(2022, 1, 1)
    report["messages_by_day"] = {
        (start + timedelta(days=i)).isoformat(): {"kontagent/ins": 1 + i % 5} for i in range(1000)
    }
    block = section(page_of(report), "by-day")
    svg = chart(block, "by-day")
    bars = int(first(r'data-bars="(\d+)"', svg))
    assert bars <= MAX_BARS
    assert bars == 144  # 2022-01-01 is a Saturday: 143 weeks and a bit
    assert 'data-period="week"' in svg
    assert svg.count('<g class="bar">') == bars
    assert "1,000 days span more than 400 days: shown as 144 bars, one per week" in block
    assert ">week (UTC, starting Monday)</text>" in svg
    # the total is kept
    title_totals = re.findall(r"<title>[0-9-]+: ([0-9,]+) messages", svg)
    assert sum(int(t.replace(",", "")) for t in title_totals) == sum(1 + i % 5 for i in range(1000))


def test_decades_of_days_become_months_or_years() -> None:
    report = full_report()
    report["messages_by_day"] = {"2000-01-01": {"a": 1}, "2030-12-31": {"a": 1}}
    svg = chart(page_of(report), "by-day")
    assert 'data-period="month"' in svg and 'data-bars="372"' in svg
    report["messages_by_day"] = {"0001-01-01": {"a": 1}, "9999-12-31": {"a": 1}}
    svg = chart(page_of(report), "by-day")
    bars = int(first(r'data-bars="(\d+)"', svg))
    assert bars <= MAX_BARS and 'data-period="26-year period"' in svg


def test_ten_thousand_buckets_are_downsampled() -> None:
    report = full_report()
    buckets = 10_000
    report["send_timeline"] = {
        "start": 1_763_900_000,
        "bucket_seconds": 2,
        "delivered": {
            "kontagent": [100] * buckets,
            "kissmetrics": [i % 50 for i in range(buckets)],
        },
        "failed": {"kontagent": [1] * buckets},
    }
    block = section(page_of(report), "send-rate")
    lines = re.findall(r"<polyline [^>]*>", block)
    assert len(lines) == 3
    for line in lines:
        assert 0 < len(points(line)) <= MAX_POINTS
    assert int(first(r'data-points="(\d+)"', block)) <= MAX_POINTS
    assert "each point is the mean rate over 17 buckets (34 s)" in block
    # a constant rate stays constant: 100 per 2 s bucket is 50/s
    assert len({y for _, y in points(lines[0])}) == 1
    assert "kontagent delivered: 1,000,000 messages, peak 50/s" in block
    assert max(x for x, _ in points(lines[0])) < 1000 - 20 + 0.1


def test_fifty_types_stack_at_most_twelve() -> None:
    report = full_report()
    kinds = [f"kontagent/type{i:02d}" for i in range(50)]
    report["messages_by_day"] = {
        (date(2025, 1, 1) + timedelta(days=d)).isoformat(): {k: i + 1 for i, k in enumerate(kinds)}
        for d in range(20)
    }
    report["by_type"] = {k: {"delivered": i + 1, "failed": 1} for i, k in enumerate(kinds)}
    page = page_of(report)
    svg = chart(page, "by-day")
    for bar in re.findall(r'<g class="bar">.*?</g>', svg, re.S):
        fills = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"', bar)
        assert fills == [*TYPE_PALETTE[: MAX_TYPES - 1], OTHER_COLOUR]
    legend = re.search(r'<g class="legend">.*?</g>', svg, re.S)
    assert legend and legend[0].count("<rect") == MAX_TYPES
    assert ">other</text>" in legend[0] and ">kontagent/type49</text>" in legend[0]
    assert "39 less frequent types are shown together as \u201cother\u201d." in section(
        page, "by-day"
    )
    outcomes = chart(page, "outcomes")
    assert outcomes.count('<g class="outcome-group"') == MAX_TYPES
    assert 'data-type="other (39 types)"' in outcomes


def test_at_most_ten_reasons() -> None:
    report = full_report()
    report["dead_letter_reasons"] = [
        {"stage": "parse", "reason": f"reason {i}", "count": 100 + i} for i in range(30)
    ]
    block = section(page_of(report), "reasons")
    assert chart(block, "reasons").count('<g class="reason">') == MAX_REASONS
    assert len(re.findall(r"<tr><td", block)) == MAX_REASONS
    assert "reason 29" in block and "reason 19" not in block  # the largest, sorted again
    assert "30 distinct reasons; the top 10 are shown." in block


def test_everything_large_at_once_stays_small() -> None:
    report = full_report()
    start = date(2020, 1, 1)
    kinds = [f"kissmetrics/t{i}" for i in range(50)]
    report["messages_by_day"] = {
        (start + timedelta(days=d)).isoformat(): {k: 1 for k in kinds} for d in range(1000)
    }
    report["by_type"] = {k: {"delivered": 1000, "failed": 10, "duplicate": 1} for k in kinds}
    report["dead_letter_reasons"] = [
        {"stage": "map", "reason": "x" * 10_000, "count": 1} for _ in range(1000)
    ]
    report["send_timeline"]["delivered"] = {k: [5] * 10_000 for k in kinds}
    report["send_timeline"]["failed"] = {k: [1] * 10_000 for k in kinds}
    report["inputs"] = [f"in/{i}.jsonl" for i in range(10_000)]
    page = page_of(report)
    assert len(page) < 1_000_000
    assert "and 9,980 more" in page


def test_chart_colours_are_distinct_between_charts() -> None:
    """The Chromium test tells charts apart by colour: no two colours may be alike.

    (People must tell them apart too: 20 per channel at least, far above ``TOLERANCE``.)
    """
    colours = [
        *TYPE_PALETTE,
        OTHER_COLOUR,
        *OUTCOME_COLOURS.values(),
        *STAGE_COLOURS.values(),
        *DELIVERED_LINE_COLOURS,
        *FAILED_LINE_COLOURS,
    ]
    rgb = [rgb_of(colour) for colour in colours]
    for i, a in enumerate(rgb):
        for b in rgb[i + 1 :]:
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) >= 20


# --- in a browser -------------------------------------------------------------------------

TOLERANCE = 3  # per channel, for colours in the screenshot
#: Most pixels a legend swatch can have: a chart's colour must cover more than that.
SWATCH_PIXELS = 12 * 12


def rgb_of(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _pixel_counter(screenshot: Path, size: tuple[int, int] | None = None) -> Callable[[str], int]:
    """How many pixels of a screenshot have a colour (within TOLERANCE); ``size``: checked."""
    from PIL import Image  # only the browser tests need Pillow

    image = Image.open(screenshot).convert("RGB")
    if size is not None:
        assert image.size == size
    histogram = image.getcolors(image.size[0] * image.size[1])
    assert histogram is not None
    counted = [(n, rgb) for n, rgb in histogram if isinstance(rgb, tuple)]

    def pixels(colour: str) -> int:
        want = rgb_of(colour)
        return sum(
            n
            for n, got in counted
            if max(abs(a - b) for a, b in zip(got, want, strict=True)) <= TOLERANCE
        )

    return pixels


def find_chromium() -> Path:
    """Chromium's path; skips the test without it, or fails when CI requires it."""
    return debian_program(CHROMIUM, "chromium", "BEACONFLOW_REQUIRE_CHROMIUM")


@pytest.fixture
def chromium() -> Path:
    return find_chromium()


def run_chromium(chromium: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    command = [
        str(chromium),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--force-device-scale-factor=1",
        "--force-color-profile=srgb",
        "--hide-scrollbars",
        "--window-size=1200,3000",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_chromium_draws_every_chart_in_its_colours(chromium: Path, tmp_path: Path) -> None:

    page = tmp_path / "report.html"
    page.write_text(page_of(full_report()), encoding="utf-8")
    url = page.as_uri()

    dom = run_chromium(chromium, tmp_path, "--dump-dom", url).stdout
    for name in CHARTS:
        svg = chart(dom, name)
        shapes = sum(svg.count(f"<{shape} ") for shape in ("rect", "path", "polyline"))
        assert shapes > 0, f"{name}: nothing drawn in {svg[:300]}"
    assert "<title>Send rate over the run</title>" in dom

    screenshot = tmp_path / "report.png"
    run_chromium(chromium, tmp_path, f"--screenshot={screenshot}", url)
    pixels = _pixel_counter(screenshot, size=(1200, 3000))

    expected = {
        "by-day": TYPE_PALETTE[: len(TYPES)],
        "outcomes": (OUTCOME_COLOURS["delivered"], OUTCOME_COLOURS["failed"]),
        "reasons": tuple(STAGE_COLOURS.values()),
        "send-rate": (*DELIVERED_LINE_COLOURS[:2], FAILED_LINE_COLOURS[0]),
    }
    found = {name: {c: pixels(c) for c in colours} for name, colours in expected.items()}
    for name, colours in found.items():
        for colour, n in colours.items():
            assert n > 2 * SWATCH_PIXELS, f"{name}: {colour} covers {n} pixels: {found}"
    # a colour that no chart of this page uses is not there: the counts are no fluke
    assert pixels(OUTCOME_COLOURS["dry_run"]) < SWATCH_PIXELS


def test_chromium_requirement_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Chromium, the browser test fails (not skips) when CI requires it."""
    monkeypatch.setattr(f"{__name__}.CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.setenv("BEACONFLOW_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="BEACONFLOW_REQUIRE_CHROMIUM=1"):
        find_chromium()
    monkeypatch.delenv("BEACONFLOW_REQUIRE_CHROMIUM")
    with pytest.raises(pytest.skip.Exception):
        find_chromium()


def test_full_report_is_not_changed_by_rendering() -> None:
    report = full_report()
    before = copy.deepcopy(report)
    page_of(report)
    assert report == before


def test_a_chunked_run_has_a_row_per_chunk_and_their_totals() -> None:
    report = full_report()
    rows = [
        {"chunk": 1, "first_day": "2025-01-01", "last_day": "2025-01-31", "status": "resumed",
         "seconds": 61.5, "events_read": 1000, "messages_built": 2000,
         "messages_delivered": 1990, "messages_skipped": 0, "messages_failed": 10},
        {"chunk": 2, "first_day": "2025-02-01", "last_day": "2025-02-28", "status": "done",
         "seconds": 50.0, "events_read": 500, "messages_built": 1000,
         "messages_delivered": 400, "messages_skipped": 600, "messages_failed": 0},
        {"chunk": 3, "first_day": "2025-03-01", "last_day": SCRIPT, "status": "not run",
         "seconds": 0, "events_read": 0, "messages_built": 0},
    ]  # fmt: skip
    report["chunking"] = {"unit": "month", "mode": "dated", "work_dir": "/w", "chunks": rows}
    page = page_of(report)
    assert 'id="chart-chunks"' in page
    table = page[page.index('class="reasons chunks"') :].split("</table>")[0]
    cells = re.findall(r"<tr[^>]*>(.*?)</tr>", table)
    assert len(cells) == 1 + 3 + 1, "head, three chunks, totals"
    assert ">resumed<" in cells[1] and ">not run<" in cells[3]
    assert ">1,500<" in cells[4] and ">2,390<" in cells[4] and ">600<" in cells[4]
    assert ">already delivered<" in cells[0] and ">dry run<" not in cells[0]
    assert SCRIPT not in page
    assert 'id="chart-chunks"' not in page_of(full_report()), "only a chunked run has one"


def test_chromium_draws_a_dry_run_page_without_delivered_or_failed(
    chromium: Path, tmp_path: Path
) -> None:
    """A dry run's page in a browser: its facts, what it wrote, no empty send outcomes."""
    report = {
        **dry_run_report(),
        "started_at": "2025-06-02T01:30:00.250Z",
        "ended_at": "2025-06-02T01:42:07.000Z",
        "version": "0.1.0",
        "command": ["beaconflow", "--dry-run", "out/dry-run.jsonl", "--kontagent-api-key", "***"],
    }
    text = page_of(report)
    # still one self-contained file
    for tag, attrs in parse(text).tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed", "image", "use")
        assert not {"src", "href", "xlink:href"} & set(attrs), tag
    page = tmp_path / "report.html"
    page.write_text(text, encoding="utf-8")
    url = page.as_uri()

    dom = run_chromium(chromium, tmp_path, "--dump-dom", url).stdout
    shown = facts(dom)
    assert shown["started"] == "2025-06-02 01:30:00 UTC"
    assert shown["version"] == "beaconflow 0.1.0"
    assert shown["command"] == "beaconflow --dry-run out/dry-run.jsonl --kontagent-api-key '***'"
    svg = chart(dom, "outcomes")
    assert svg.count("<rect ") == 4 + 2 + 2, "written per type, two duplicate, two too old"
    assert "<h2>Messages written per destination (dry run)</h2>" in dom

    screenshot = tmp_path / "dry-run.png"
    run_chromium(chromium, tmp_path, f"--screenshot={screenshot}", url)
    pixels = _pixel_counter(screenshot)

    assert pixels(OUTCOME_COLOURS["dry_run"]) > 2 * SWATCH_PIXELS
    assert pixels(OUTCOME_COLOURS["too_old"]) > 0
    for outcome in ("delivered", "failed"):
        assert pixels(OUTCOME_COLOURS[outcome]) < SWATCH_PIXELS, outcome
