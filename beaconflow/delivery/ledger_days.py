"""Event days in the delivery ledger: the day an entry is filed under, and which files a run reads.

Every message knows the UTC day of the event it was built from
(:attr:`~beaconflow.model.message.Message.day`); its ledger entry is filed under that day
(:func:`entry_day`: ``"day": N`` in the entry, days since 1970-01-01), and each sealed shard
holds the entries of one writer's journal of dated entries, named with their range of days::

    shard-<writer>-<n>.d20250601-20250603.v2.jsonl

while entries of no day (a timeless message such as a KISSmetrics alias, or one whose
event's day is unknown) go into shards without a range (``shard-<writer>-<n>.v2.jsonl``).
A message delivered before has the same identity, so the same event, so the same day: its
entry is in a shard whose range holds its day, or in a file without a range. So a run reads
only the files that may hold its messages' entries (:meth:`LedgerDays.reads`): a shard whose
range meets one of its messages' days, and every file without a range (shards of no day,
journals, files of earlier releases). A message whose day is unknown (a Kontagent message
replayed from a dead letter) may have been filed under any day: a run with one reads every
file. Tested with::

    python -m pytest tests/delivery/test_ledger_days.py
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from beaconflow.model.message import TIMELESS_KINDS, Message

_EPOCH = date(1970, 1, 1)
#: The days a shard's name can give (``date``'s range): an entry of another day has none.
MIN_DAY = (date.min - _EPOCH).days
MAX_DAY = (date.max - _EPOCH).days
#: A sealed shard's range of event days in its name: ``.d<first>-<last>`` (``YYYYMMDD``).
_RANGED_SHARD = re.compile(r"shard-.*\.d(\d{8})-(\d{8})\.v2\.jsonl")


def entry_day(destination: str, kind: str, day: int | None) -> int | None:
    """The day a delivery of this message is filed under in the ledger, or None.

    ``day``: the message's :attr:`~beaconflow.model.message.Message.day`. None for a
    timeless message (:data:`~beaconflow.model.message.TIMELESS_KINDS`: the same message
    whichever day asked for it), for an unknown day, and for a day no date can name.
    """
    if day is None or (destination, kind) in TIMELESS_KINDS or not MIN_DAY <= day <= MAX_DAY:
        return None
    return day


def day_text(day: int) -> str:
    """A day (days since 1970-01-01) as ``YYYYMMDD``, the form shard names give it in."""
    return (_EPOCH + timedelta(days=day)).strftime("%Y%m%d")


def day_iso(day: int) -> str:
    """A day (days since 1970-01-01) as ``YYYY-MM-DD``, for messages to people.

    A number no date can name is given as it is (``day 99999999``).
    """
    if not MIN_DAY <= day <= MAX_DAY:
        return f"day {day}"
    return (_EPOCH + timedelta(days=day)).isoformat()


def days_mark(first: int, last: int) -> str:
    """What a shard's name carries for entries of the days ``first`` to ``last``."""
    return f".d{day_text(first)}-{day_text(last)}"


def _day_of(text: str) -> int | None:
    try:
        return (date(int(text[:4]), int(text[4:6]), int(text[6:])) - _EPOCH).days
    except ValueError:
        return None


def file_days(path: str) -> tuple[int, int] | None:
    """The range of event days a ledger file's name gives, or None: it may hold any day.

    Only sealed shards of format 2 carry one; a journal, a file of an earlier release, a
    shard of entries of no day, or a mark that names no real day, has none.
    """
    match = _RANGED_SHARD.fullmatch(path.rpartition("/")[2])
    if match is None:
        return None
    first, last = _day_of(match[1]), _day_of(match[2])
    if first is None or last is None or first > last:
        return None
    return first, last


@dataclass(frozen=True)
class LedgerDays:
    """The days a run's messages are filed under in the ledger: which of its files to read.

    ``days``: the distinct days of messages that have one, sorted. ``unknown``: some message
    (not a timeless one) has no known day, so its delivery may be filed under any day.
    """

    days: tuple[int, ...] = ()
    unknown: bool = False

    @classmethod
    def of(cls, messages: Iterable[Message]) -> LedgerDays:
        """The days of these messages."""
        seen = DaysSeen()
        for message in messages:
            seen.add(message)
        return seen.result()

    def reads(self, path: str) -> bool:
        """Whether a run with these messages reads this ledger file: it may hold theirs."""
        span = file_days(path)
        if span is None or self.unknown:
            return True
        first, last = span
        at = bisect.bisect_left(self.days, first)
        return at < len(self.days) and self.days[at] <= last

    def describe(self) -> str:
        """The days for a log line: ``2025-06-01 to 2025-06-03 (3 days)``, or ``any day``."""
        if self.unknown:
            return "any day (a message's day is unknown)"
        if not self.days:
            return "no day"
        first, last = day_iso(self.days[0]), day_iso(self.days[-1])
        count = len(self.days)
        return first if count == 1 else f"{first} to {last} ({count} days)"


class DaysSeen:
    """The days of messages seen so far, one at a time (a Beam combiner's accumulator)."""

    def __init__(self) -> None:
        self.days: set[int] = set()
        self.unknown = False

    def add(self, message: Message) -> None:
        """Count one message's day in."""
        day = entry_day(message.destination, message.kind, message.day)
        if day is not None:
            self.days.add(day)
        elif message.day is None and (message.destination, message.kind) not in TIMELESS_KINDS:
            self.unknown = True

    def merge(self, other: DaysSeen) -> None:
        """Count another accumulator's days in."""
        self.days |= other.days
        self.unknown = self.unknown or other.unknown

    def result(self) -> LedgerDays:
        """The days seen."""
        return LedgerDays(tuple(sorted(self.days)), self.unknown)
