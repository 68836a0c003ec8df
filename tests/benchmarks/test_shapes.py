"""The benchmarks' data shapes (``benchmarks/shapes.py``): deterministic, valid, as described.

The heavy shape is what the throughput benchmark's second table measures: it must keep
its promises (5 to 10 KISSmetrics properties per event, unicode, URL-reserved characters,
a few long names) or that table measures something else.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest

from beaconflow.model.events import map_event
from beaconflow.model.records import validate
from beaconflow.samples.gamelog import generate_events
from benchmarks.shapes import LONG_NAMES, generate, heavy_events

NOW = 2_000_000_000
RESERVED = set("&=?#%+/ \"'")


def test_the_same_seed_gives_the_same_records() -> None:
    assert list(heavy_events(300)) == list(heavy_events(300))
    assert list(heavy_events(300, seed=1)) != list(heavy_events(300))
    assert list(generate("light", 50)) == list(generate_events(50))


def test_heavy_events_are_a_games_events_with_5_to_10_properties() -> None:
    names: Counter[str] = Counter()
    counts: Counter[int] = Counter()
    characters: set[str] = set()
    long_names = 0
    for record in heavy_events(2000):
        names[record["event"]] += 1
        event = validate(record, now=NOW)
        mapped = map_event(event, ("kontagent", "kissmetrics"), record)
        assert not mapped.problems, mapped.problems
        (kissmetrics,) = [m for m in mapped.messages if m.destination == "kissmetrics"]
        properties = [(n, v) for n, v in kissmetrics.params if not n.startswith("_")]
        counts[len(properties)] += 1
        long_names += any(100 <= len(n) <= 250 for n, _ in properties)
        for name, value in properties:
            characters.update(name, value)
    assert set(names) == {"application_installed", "revenue_tracking", "level_up", "invite_sent"}
    assert set(counts) == set(range(5, 11))
    assert 0.03 < long_names / 2000 < 0.15
    assert all(100 <= len(name) <= 250 for name in LONG_NAMES)
    assert not RESERVED - characters, RESERVED - characters
    assert any(ord(c) > 0xFFFF for c in characters) and any(
        0x7F < ord(c) < 0x800 for c in characters
    )


def test_an_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown shape 'medium'"):
        list(islice(generate("medium", 1), 1))
