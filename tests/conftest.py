"""Shared fixtures: a sandbox collector on loopback, started by the tests themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from beaconflow.collector import Collector

KONTAGENT_KEY = "feedfacefeedfacefeedfacefeedface"
KONTAGENT_SECRET = "kontagent-secret-for-tests"
KISSMETRICS_KEY = "kissmetrics-key-for-tests"


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A collector that knows the test keys and verifies Kontagent signatures."""
    with Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
    ) as running:
        yield running
