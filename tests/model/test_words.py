"""Counts with their nouns (beaconflow.model.words.plural)."""

from __future__ import annotations

import pytest

from beaconflow.model.words import plural


@pytest.mark.parametrize(
    ("count", "noun", "many", "expected"),
    [
        (1, "invalid event", None, "1 invalid event"),
        (2, "invalid event", None, "2 invalid events"),
        (0, "failed message", None, "0 failed messages"),
        (1, "entry", "entries", "1 entry"),
        (3, "entry", "entries", "3 entries"),
        (12345, "message", None, "12345 messages"),
    ],
)
def test_plural(count: int, noun: str, many: str | None, expected: str) -> None:
    assert plural(count, noun, many) == expected
