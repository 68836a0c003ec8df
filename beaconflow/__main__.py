"""``python -m beaconflow``: the same command as ``beaconflow``."""

from __future__ import annotations

import sys

from beaconflow.command import main

if __name__ == "__main__":
    sys.exit(main())
