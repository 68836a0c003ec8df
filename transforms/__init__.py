"""Beam transforms and DoFns: reading, parsing, building, dedup, sending, tallies, line files.

Importing Beam logs "apitools not found" through :func:`logging.warning`, which configures
the root logger (a stderr handler) when it has none: an import side effect that would make a
host application's own ``logging.basicConfig()`` do nothing. Beam is imported here first,
with a handler that drops that line and is removed at once, so importing beaconflow
configures nothing.
"""

import logging as _logging

_root = _logging.getLogger()
if not _root.handlers:
    _guard = _logging.NullHandler()
    _root.addHandler(_guard)
    try:
        import apache_beam  # noqa: F401 - imported for its side effect, contained here
    finally:
        _root.removeHandler(_guard)
