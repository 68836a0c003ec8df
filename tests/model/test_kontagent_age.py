"""Kontagent and old events: ``beaconflow.model.kontagent_age.KontagentAge``, now injected."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from beaconflow.model.kontagent_age import OLD_AFTER_DAYS, KontagentAge
from beaconflow.model.message import Message, epoch_day

#: The run's now: 2025-06-10T06:00:00Z.
NOW = int(datetime(2025, 6, 10, 6, tzinfo=UTC).timestamp())
DAY = 86_400
HOUR = 3_600


def message(destination: str, day: int | None) -> Message:
    kind = "evt" if destination == "kontagent" else "e"
    return Message(destination, kind, (("s", "1"),), day=day)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("max_age", "age_seconds", "too_old"),
    [
        (None, 3 * 365 * DAY, False),  # no --kontagent-max-age: any age goes
        (2, 2 * DAY - 1, False),
        (2, 2 * DAY, True),  # exactly DAYS old is not newer than DAYS days
        (2, 2 * DAY + 1, True),
        (0.5, 11 * HOUR, False),
        (0.5, 13 * HOUR, True),
        (30, 29 * DAY, False),
        (30, 400 * DAY, True),
        (2, -HOUR, False),  # an event after now (a clock ahead) is new
    ],
)
def test_too_old_is_judged_on_the_event_time_against_now(
    max_age: float | None, age_seconds: int, too_old: bool
) -> None:
    assert KontagentAge(NOW, max_age).too_old(NOW - age_seconds) is too_old


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_a_max_age_must_be_days_above_zero(bad: float) -> None:
    with pytest.raises(ValueError, match="max_age_days"):
        KontagentAge(NOW, bad)


def test_old_days_are_those_that_ended_two_days_or_more_before_now() -> None:
    age = KontagentAge(NOW)
    today = epoch_day(NOW)  # 2025-06-10
    assert age.old_before_day == today - OLD_AFTER_DAYS
    # 2025-06-07 ended at 06-08T00:00, 54 hours before now: old
    assert age.is_old(message("kontagent", today - 3))
    # 2025-06-08 ended at 06-09T00:00, 30 hours before now: not old (a --lookback 1 night)
    assert not age.is_old(message("kontagent", today - 2))
    assert not age.is_old(message("kontagent", today))
    # KISSmetrics is backdated: never old; a message of no known day is not judged
    assert not age.is_old(message("kissmetrics", today - 300))
    assert not age.is_old(message("kontagent", None))


def test_old_days_move_with_now() -> None:
    today = epoch_day(NOW)
    just_before_midnight = (today + 1) * DAY - 1
    assert KontagentAge(just_before_midnight).old_before_day == today - OLD_AFTER_DAYS
    assert KontagentAge((today + 1) * DAY).old_before_day == today + 1 - OLD_AFTER_DAYS
