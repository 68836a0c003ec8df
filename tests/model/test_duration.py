"""Durations on the command line (``beaconflow.model.duration``): 90s, 45m, 6h, 1h30m, seconds.

Run with ``.venv/bin/python -m pytest tests/model/test_duration.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beaconflow.model.duration import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("90s", 90.0),
        ("45m", 2700.0),
        ("6h", 21600.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("1h30m", 5400.0),
        ("2h0m5s", 7205.0),
        (" 6h ", 21600.0),
    ],
)
def test_parse_duration_reads_units_and_plain_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "h", "6 h", "6H", "-5", "-5s", "1e3", "inf", "nan", "6x", "30m1h", "1h1h", "5s.", "1.h"],
)
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.01, "0.01s"),
        (0.5, "0.5s"),
        (12.345, "12.3s"),
        (59.4, "59.4s"),
        (60.0, "1m"),
        (90.0, "1m30s"),
        (3600.0, "1h"),
        (21599.6, "6h"),
        (86400.0 + 61, "1d1m1s"),
    ],
)
def test_format_duration_writes_what_people_read(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=60, max_value=10**7))
def test_whole_durations_go_back_and_forth(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
