"""How far along a run is, and how long the rest should take: pure arithmetic, no clock.

The progress lines and the live display say ``2,000 of 5,000 (40%), ETA 30s``: the callers
read their clocks and pass the numbers in, so that tests give them any numbers they like::

    >>> percent(2_000, 5_000), eta_seconds(2_000, 5_000, 20.0)
    (40.0, 30.0)
"""

from __future__ import annotations


def percent(done: float, total: float) -> float | None:
    """``done`` out of ``total`` in percent, at most 100; None when the total is unknown (<= 0)."""
    if total <= 0:
        return None
    return min(100.0, max(0.0, 100.0 * done / total))


def eta_seconds(done: float, total: float, elapsed: float) -> float | None:
    """The seconds left to reach ``total`` at the pace of ``done`` in ``elapsed`` seconds.

    None while nothing is known of the pace (nothing done, no time elapsed) or the total is
    unknown; 0 once ``done`` reaches ``total``.
    """
    if total <= 0 or done <= 0 or elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)


def rate_eta_seconds(remaining: float, rate: float) -> float | None:
    """The seconds ``remaining`` items take at ``rate`` per second; None when the rate is 0."""
    if remaining <= 0:
        return 0.0
    if rate <= 0:
        return None
    return remaining / rate
