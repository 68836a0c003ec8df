"""Kontagent messages of old events, as the send and dry-run steps meet them.

:class:`~beaconflow.model.kontagent_age.KontagentAge` says which Kontagent messages are old
(their event's day ended two days or more before the run's now). The send step and the
dry-run step count each one they meet (``messages_from_old_days``) and, with
:func:`warn_first_old`, say it on stderr when the first is met: once per run and process,
before that message is sent. The summary gives the total.
"""

from __future__ import annotations

import logging
import threading

from beaconflow.model.events import utc_day
from beaconflow.model.kontagent_age import OLD_AFTER_DAYS
from beaconflow.model.message import SECONDS_PER_DAY, Message

#: The counter of Kontagent messages of old days that went on to be sent or written.
FROM_OLD_DAYS = "messages_from_old_days"

_warned: set[str] = set()
_lock = threading.Lock()


def warn_first_old(run_id: str, message: Message, *, dry_run: bool = False) -> None:
    """Say once per run (and process) that Kontagent gets messages of old events.

    ``dry_run``: the messages are written to the dry-run file, not sent.
    """
    with _lock:
        if run_id in _warned:
            return
        _warned.add(run_id)
    day = "an unknown day" if message.day is None else utc_day(message.day * SECONDS_PER_DAY)
    logging.getLogger("beaconflow").warning(
        "kontagent: %s messages of events older than %d days (the first met is of %s): "
        "Kontagent counts each on the day it is sent, not on its event's day; the summary "
        "says how many (--kontagent-max-age DAYS sends it only newer ones; docs/backfill.md)",
        "would send (dry run)" if dry_run else "sending",
        OLD_AFTER_DAYS,
        day,
    )


def forget_warned(run_id: str) -> None:
    """Let the run's warning be said again (a finished run: its id is not reused)."""
    with _lock:
        _warned.discard(run_id)
