"""The model: canonical records, mappings, Kontagent and KISSmetrics messages, event -> messages.

Pure Python: no Beam, no HTTP. Everything here is a value or a function of values, which is
what makes it testable alone and reusable by the small client and the sandbox collector.
"""
