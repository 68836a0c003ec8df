"""The progress arithmetic (beaconflow.model.pace): percent and time left, no clock."""

from __future__ import annotations

import pytest

from beaconflow.model.pace import eta_seconds, percent, rate_eta_seconds


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [(0, 10, 0.0), (5, 10, 50.0), (10, 10, 100.0), (12, 10, 100.0), (1, 3, 100 / 3),
     (3, 0, None), (3, -1, None)],
)  # fmt: skip
def test_percent(done: float, total: float, expected: float | None) -> None:
    assert percent(done, total) == expected


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "expected"),
    [
        (2_000, 5_000, 20.0, 30.0),  # 100 a second, 3,000 to go
        (5_000, 5_000, 20.0, 0.0),
        (6_000, 5_000, 20.0, 0.0),  # an estimate of the total passed: nothing left
        (0, 5_000, 20.0, None),  # no pace yet
        (10, 5_000, 0.0, None),
        (10, 0, 5.0, None),  # total unknown
    ],
)
def test_eta_from_the_pace_so_far(
    done: float, total: float, elapsed: float, expected: float | None
) -> None:
    assert eta_seconds(done, total, elapsed) == expected


@pytest.mark.parametrize(
    ("remaining", "rate", "expected"),
    [(100, 50.0, 2.0), (0, 0.0, 0.0), (-3, 10.0, 0.0), (100, 0.0, None)],
)
def test_eta_from_a_rate(remaining: float, rate: float, expected: float | None) -> None:
    assert rate_eta_seconds(remaining, rate) == expected
