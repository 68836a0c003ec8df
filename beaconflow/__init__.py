"""beaconflow: backfill application event logs into Kontagent and KISSmetrics."""

__version__ = "0.1.0"
