"""The messages step under TestPipeline, behind the window step: messages or a dead letter.

``beaconflow.transforms.messages.SplitMessages`` fed by ``beaconflow.transforms.window.InWindow``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beaconflow.delivery.ledger_days import LedgerDays
from beaconflow.model.events import MappedEvent, map_event
from beaconflow.model.kontagent_age import KontagentAge
from beaconflow.model.message import Message
from beaconflow.model.records import validate
from beaconflow.pipelines.backfill import TALLY
from beaconflow.report.counts import BY_DAY, TallyKey
from beaconflow.transforms.coders import MessageCoder
from beaconflow.transforms.ledger import MergeDays
from beaconflow.transforms.messages import DAYS, DIRECT, SplitMessages
from beaconflow.transforms.parse import INVALID
from beaconflow.transforms.window import InWindow

NOW = 1_800_000_000


T0 = 1_750_000_000  # 2025-06-15T15:06:40Z


def _pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(runner=FnApiRunner())


FINGERPRINTS = {"kontagent": "k" * 12, "kissmetrics": "m" * 12}


def _mapped(record: dict[str, Any], source: str) -> tuple[str, MappedEvent]:
    """What the parse step emits for a record it validated: its identity and messages."""
    event = validate(record, now=NOW, source=source)
    return (event.key, map_event(event, ("kontagent", "kissmetrics"), record))


def _decoded(keyed: tuple[str, bytes]) -> tuple[str, Message]:
    """A message as it leaves for the dedup, decoded."""
    return keyed[0], MessageCoder().decode(keyed[1])


def test_window_and_messages_steps_emit_messages_and_a_dead_letter_per_destination() -> None:
    good = _mapped({"time": T0, "user_id": 7, "event": "level_up", "level": 3}, "f:1")
    bad = _mapped({"time": T0, "user_id": "alice", "event": "apr"}, "f:2")
    late = _mapped({"time": T0 + 10, "user_id": 8, "event": "apr"}, "f:3")
    with _pipeline() as p:
        window = (
            p
            | beam.Create([good, bad, late])
            | beam.ParDo(InWindow(since=None, until=T0 + 5)).with_outputs(TALLY, main="events")
        )
        out = window.events | beam.ParDo(SplitMessages(FINGERPRINTS)).with_outputs(
            INVALID, TALLY, DIRECT, main="messages"
        )
        assert_that(
            out.messages
            | beam.Map(_decoded)
            | beam.Map(
                lambda kv: (
                    kv[0] == f"{FINGERPRINTS[kv[1].destination]}:{kv[1].key}",
                    kv[1].destination,
                    kv[1].kind,
                    kv[1].param("n") or kv[1].param("_n"),
                    len(kv[1].key),
                )
            ),
            equal_to(
                [
                    (True, "kontagent", "evt", "level_up", 32),
                    (True, "kissmetrics", "e", "level_up", 32),
                    # alice's Kontagent message cannot be built; her KISSmetrics one goes
                    (True, "kissmetrics", "e", "apr", 32),
                ]
            ),
            label="messages",
        )
        assert_that(
            out[INVALID]
            | beam.Map(
                lambda d: (
                    d.stage,
                    d.destination,
                    d.as_dict()["source"],
                    "numeric user id" in d.reason,
                    d.record["user_id"],
                )
            ),
            equal_to([("map", "kontagent", {"file": "f", "line": 2}, True, "alice")]),
            label="invalid",
        )
        day = datetime.fromtimestamp(T0, UTC).date().isoformat()
        assert_that(
            window[TALLY],
            equal_to([(TallyKey("events_out_of_range"), 1)]),
            label="window tallies",
        )
        assert_that(
            out[TALLY],
            equal_to(
                [
                    (TallyKey("events_mapped"), 2),  # alice's event too: it is mapped
                    (TallyKey("messages_invalid", "kontagent", "apr"), 1),
                    (TallyKey("messages_built", "kontagent", "evt"), 1),
                    (TallyKey("messages_built", "kissmetrics", "e"), 2),
                    (TallyKey(BY_DAY, "kontagent", "evt", detail=day), 1),
                    (TallyKey(BY_DAY, "kissmetrics", "e", detail=day), 2),
                ]
            ),
            label="tallies",
        )


def test_kontagent_messages_of_events_too_old_are_counted_and_go_no_further() -> None:
    """--kontagent-max-age: the old event's Kontagent message stops here; KISSmetrics goes."""
    now = T0 + 10 * 86_400
    old = _mapped({"time": T0, "user_id": 7, "event": "level_up", "level": 3}, "f:1")
    new = _mapped({"time": now - 3_600, "user_id": 8, "event": "level_up", "level": 4}, "f:2")
    age = KontagentAge(now, max_age_days=5)
    with _pipeline() as p:
        out = (
            p
            | beam.Create([old, new])
            | beam.ParDo(SplitMessages(FINGERPRINTS, direct=("kontagent",), age=age)).with_outputs(
                INVALID, TALLY, DIRECT, main="messages"
            )
        )
        assert_that(
            out.messages
            | beam.Map(_decoded)
            | beam.Map(lambda kv: (kv[1].destination, kv[1].param("_p"))),
            equal_to([("kissmetrics", "7"), ("kissmetrics", "8")]),
            label="deduplicated",
        )
        assert_that(
            out[DIRECT] | beam.Map(lambda m: (m.destination, m.param("s"))),
            equal_to([("kontagent", "8")]),
            label="direct",
        )
        old_day = datetime.fromtimestamp(T0, UTC).date().isoformat()
        new_day = datetime.fromtimestamp(now - 3_600, UTC).date().isoformat()
        assert_that(
            out[TALLY],
            equal_to(
                [
                    (TallyKey("events_mapped"), 2),
                    (TallyKey("messages_built", "kontagent", "evt"), 2),
                    (TallyKey("messages_built", "kissmetrics", "e"), 2),
                    (TallyKey("messages_too_old", "kontagent", "evt"), 1),
                    (TallyKey(BY_DAY, "kontagent", "evt", detail=old_day), 1),
                    (TallyKey(BY_DAY, "kissmetrics", "e", detail=old_day), 1),
                    (TallyKey(BY_DAY, "kontagent", "evt", detail=new_day), 1),
                    (TallyKey(BY_DAY, "kissmetrics", "e", detail=new_day), 1),
                ]
            ),
            label="tallies",
        )


def test_with_days_each_bundle_gives_the_days_of_the_messages_it_let_through() -> None:
    """The ledger's files are chosen by these days: direct messages are not among them."""
    day = T0 // 86_400
    events = [
        _mapped({"time": T0, "user_id": 7, "event": "level_up", "level": 3}, "f:1"),
        _mapped({"time": T0 + 2 * 86_400, "user_id": 8, "event": "apr"}, "f:2"),
    ]
    with _pipeline() as p:
        out = (
            p
            | beam.Create(events)
            | beam.ParDo(SplitMessages(FINGERPRINTS, days=True)).with_outputs(
                INVALID, TALLY, DIRECT, DAYS, main="messages"
            )
        )
        assert_that(
            out[DAYS] | beam.CombineGlobally(MergeDays()),
            equal_to([LedgerDays((day, day + 2), False)]),
            label="days",
        )
        assert_that(out.messages | beam.Map(lambda kv: type(kv[1])), equal_to([bytes] * 4))
    with _pipeline() as p:
        out = (
            p
            | beam.Create(events)
            | beam.ParDo(SplitMessages(FINGERPRINTS, direct=("kontagent",))).with_outputs(
                INVALID, TALLY, DIRECT, DAYS, main="messages"
            )
        )
        assert_that(out[DAYS], equal_to([]), label="no days asked")
