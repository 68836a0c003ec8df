"""The sandbox: a local collector that speaks both services' APIs (``--sandbox``, the tests)."""
