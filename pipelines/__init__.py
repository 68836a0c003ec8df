"""Pipelines: the backfill's wiring (``backfill``), its options, runner sizing and the command.

Importing it configures nothing (see :mod:`beaconflow.transforms` for Beam's import).
"""

import beaconflow.transforms  # noqa: F401 - Beam's import, without its logging side effect
