"""Words people read: a count with its noun in the right number, one helper used everywhere.

Where a line says how many of something::

    >>> plural(1, "invalid event"), plural(2, "invalid event"), plural(3, "entry", "entries")
    ('1 invalid event', '2 invalid events', '3 entries')
"""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun``, or ``many`` (default ``noun`` + ``s``) unless ``count`` is 1.

    The count is written as report.json holds it (no thousands separators), so that a line
    and the report read the same.
    """
    return f"{count} {noun if count == 1 else (many or noun + 's')}"
