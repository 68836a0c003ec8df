"""Delivery: everything about sending, and no Beam.

The response policy, rate and concurrency limits, the send engine, the sender processes,
the ledger, redaction and the run's stop flag. The ledger reaches ``gs://`` and ``s3://``
through Beam's FileSystems, imported only for such paths.
"""
