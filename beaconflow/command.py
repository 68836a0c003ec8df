"""The ``beaconflow`` command's entry point: Ctrl-C and SIGTERM are handled from its start.

Importing the command imports Apache Beam, about a second. This module imports nothing
heavy: it starts noting signals (:func:`~beaconflow.delivery.stop.note_early_signals`)
before that import, so that a scheduler's SIGTERM or a Ctrl-C during it ends the command
with 143 or 130 (once the import is over) and one line saying nothing was done, instead
of a traceback or a silent death. Once the command's status is decided, further signals
are ignored while the interpreter exits: they could only turn a finished run's status into
143.

``pyproject.toml``'s ``beaconflow`` script and ``python -m beaconflow`` both call
:func:`main`; ``beaconflow.pipelines.cli.main`` is the command itself (tests call it).
"""

from __future__ import annotations

import signal

from beaconflow.delivery.stop import STOP_SIGNALS, note_early_signals


def main() -> int:
    """Run the ``beaconflow`` command with this process's arguments; its exit status."""
    note_early_signals()
    from beaconflow.pipelines.cli import main as command

    status = command()
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    return status
