"""Kontagent and old events: which Kontagent messages are too old to send, and which are old.

Kontagent's API takes no timestamps (only ``pgr`` carries one): it counts every message on
the day it receives it. A backfill of old events therefore lands in Kontagent's counts as
one spike on the day it runs. :class:`KontagentAge` holds the two rules beaconflow applies,
both relative to the run's ``now`` (injected, so that tests fix it):

- ``--kontagent-max-age DAYS`` (:meth:`KontagentAge.too_old`): a Kontagent message whose
  event is ``DAYS`` days old or older is not sent (counted as ``messages_too_old``); judged on
  the event's own time, in the messages step.
- the warning (:meth:`KontagentAge.is_old`): a Kontagent message that goes on to be sent (or
  written, in a dry run) from an event of a UTC day that ended two days or more before
  ``now`` (:data:`OLD_AFTER_DAYS`) is counted as ``messages_from_old_days``. It is judged on
  the message's event day (:attr:`~beaconflow.model.message.Message.day`), which messages
  carry past the message dedup, so that what an earlier run delivered already (skipped by the
  ledger) never warns: a nightly run with ``--lookback 1`` does not warn, a backfill does.

KISSmetrics messages are backdated (``_t``) and are never judged here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from beaconflow.model.message import SECONDS_PER_DAY, Message, epoch_day

#: Kontagent messages of events of a UTC day that ended this many days or more before the
#: run's now are "old": the run warns about them.
OLD_AFTER_DAYS = 2


@dataclass(frozen=True)
class KontagentAge:
    """The age rules of a run's Kontagent messages.

    ``now``: the run's now, epoch seconds. ``max_age_days``: --kontagent-max-age, days (a
    fraction too) above 0; None sends Kontagent messages of any age.
    """

    now: float
    max_age_days: float | None = None

    def __post_init__(self) -> None:
        limit = self.max_age_days
        if limit is not None and not (math.isfinite(limit) and limit > 0):
            raise ValueError(f"max_age_days must be a number of days above 0, got {limit!r}")

    def too_old(self, event_time: float) -> bool:
        """Whether a Kontagent message of an event at ``event_time`` is not to be sent.

        An event exactly ``max_age_days`` days old is too old: Kontagent gets the messages of
        events *newer* than that. Never with no --kontagent-max-age.
        """
        if self.max_age_days is None:
            return False
        return self.now - event_time >= self.max_age_days * SECONDS_PER_DAY

    @property
    def old_before_day(self) -> int:
        """The first event day (days since 1970-01-01) whose messages are not old.

        A day before it ended at least :data:`OLD_AFTER_DAYS` days before ``now``.
        """
        return epoch_day(math.floor(self.now) - OLD_AFTER_DAYS * SECONDS_PER_DAY)

    def is_old(self, message: Message) -> bool:
        """Whether ``message`` goes to Kontagent from an event of an old day (see above).

        A message whose event day is unknown (replayed from a dead letter) is not judged.
        """
        return (
            message.destination == "kontagent"
            and message.day is not None
            and message.day < self.old_before_day
        )
