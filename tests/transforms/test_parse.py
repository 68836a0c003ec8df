"""The parse step (``beaconflow.transforms.parse``) under TestPipeline: good and bad records."""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beaconflow.model.mapping import RecordMapping, parse_mapping
from beaconflow.model.source import RawRecord
from beaconflow.pipelines.backfill import TALLY
from beaconflow.report.counts import MAPPING_RULE, PROPERTY_LEFT_OUT, TallyKey
from beaconflow.transforms.parse import INVALID, REPLAYED, ParseEvents

NOW = 1_800_000_000


T0 = 1_750_000_000  # 2025-06-15T15:06:40Z


def _pipeline() -> BeamTestPipeline:
    return BeamTestPipeline(runner=FnApiRunner())


FINGERPRINTS = {"kontagent": "k" * 12, "kissmetrics": "m" * 12}


def test_parse_events_splits_good_and_bad_records() -> None:
    good = json.dumps({"time": T0, "user_id": 1, "event": "apr"})
    raws = [
        RawRecord("a.jsonl", 1, text=good),
        RawRecord("a.jsonl", 2, text="{not json"),
        RawRecord("a.jsonl", 3, text=json.dumps({"time": T0, "event": "apr"})),
        RawRecord("a.jsonl", 4, problem="line is not valid UTF-8 (byte 3)"),
        RawRecord("b.parquet", 1, row={"time": T0, "user_id": "2", "event": "level_up"}),
        RawRecord("a.jsonl", 5, text=json.dumps({"time": T0, "user_id": "x", "event": "apr"})),
    ]
    with _pipeline() as p:
        out = (
            p
            | beam.Create(raws)
            | beam.ParDo(ParseEvents(RecordMapping(), NOW, FINGERPRINTS)).with_outputs(
                INVALID, TALLY, REPLAYED, main="events"
            )
        )
        assert_that(
            out.events
            | "Sources"
            >> beam.Map(
                lambda keyed: (
                    len(keyed[0]),
                    keyed[1].source,
                    keyed[1].time,
                    [f"{m.destination}/{m.kind}" for m in keyed[1].messages],
                    bool(keyed[1].problems),
                    keyed[1].record,
                )
            ),
            equal_to(
                [
                    (32, "a.jsonl:1", T0, ["kontagent/apr", "kissmetrics/e"], False, None),
                    (32, "b.parquet:1", T0, ["kontagent/evt", "kissmetrics/e"], False, None),
                    # a Kontagent user id must be numeric: the event carries why, and its record
                    # Kontagent's message cannot be built, KISSmetrics' can: the event says why
                    # for Kontagent and keeps its record for the dead letter
                    (
                        32,
                        "a.jsonl:5",
                        T0,
                        ["kissmetrics/e"],
                        True,
                        {"time": T0, "user_id": "x", "event": "apr"},
                    ),
                ]
            ),
            label="events",
        )
        assert_that(
            out[INVALID] | "Reasons" >> beam.Map(lambda d: (d.stage, d.source, d.reason[:20])),
            equal_to(
                [
                    ("parse", "a.jsonl:2", "malformed JSON: Expe"),
                    ("parse", "a.jsonl:3", "field 'user_id': is "),
                    ("read", "a.jsonl:4", "line is not valid UT"),
                ]
            ),
            label="invalid",
        )
        assert_that(
            out[TALLY],
            equal_to(
                [
                    (TallyKey("events_read"), 6),
                    (TallyKey("events_invalid", stage="parse"), 2),
                    (TallyKey("events_invalid", stage="read"), 1),
                ]
            ),
            label="tallies",
        )


def test_parse_events_tallies_the_rules_matched_and_the_properties_left_out() -> None:
    mapping = parse_mapping(
        '[fields]\nuser_id = ["userId", "anonymousId"]\ntime = "ts"\n'
        'level = { path = "stats.level", optional = true }\n'
        '[properties]\nfrom = ["properties", "traits"]\n'
    )
    records = [
        {"ts": T0, "userId": 1, "event": "apa", "properties": {"a": 1, "cart": {"n": 2}}},
        {"ts": T0, "anonymousId": 2, "event": "apr", "traits": {"tags": [1], "cart": None}},
        {"ts": T0, "userId": 3, "event": "apr"},
        {"ts": T0, "event": "apr", "properties": {"gone": None}},  # invalid: still counted
    ]
    raws = [RawRecord("a.jsonl", n, text=json.dumps(r)) for n, r in enumerate(records, 1)]
    with _pipeline() as p:
        out = (
            p
            | beam.Create(raws)
            | beam.ParDo(ParseEvents(mapping, NOW, FINGERPRINTS)).with_outputs(
                INVALID, TALLY, REPLAYED, main="events"
            )
        )
        rules = (
            out[TALLY]
            | beam.Filter(lambda t: t[0].counter in (MAPPING_RULE, PROPERTY_LEFT_OUT))
            | beam.CombinePerKey(sum)
        )
        assert_that(
            rules,
            equal_to(
                [
                    (TallyKey(MAPPING_RULE, detail="user_id = userId or anonymousId"), 3),
                    (TallyKey(MAPPING_RULE, detail="time = ts"), 4),
                    (TallyKey(MAPPING_RULE, detail="properties from properties, traits"), 3),
                    (TallyKey(PROPERTY_LEFT_OUT, detail="cart"), 2),
                    (TallyKey(PROPERTY_LEFT_OUT, detail="tags"), 1),
                    (TallyKey(PROPERTY_LEFT_OUT, detail="gone"), 1),
                ]
            ),
        )


def test_a_replayed_send_entry_keeps_the_source_of_its_event() -> None:
    message = {"destination": "kontagent", "kind": "apr", "params": {"s": "1"}, "occurrence": ""}
    entries: list[dict[str, Any]] = [
        {"stage": "send", "reason": "HTTP 400", "source": {"file": "logs/a.jsonl", "line": 7}},
        {"stage": "send", "reason": "HTTP 400", "source": {"file": "logs/b.parquet", "row": 2}},
        # written before send entries named their source: the entry's own line
        {"stage": "send", "reason": "HTTP 400"},
    ]
    raws = [
        RawRecord("dead.jsonl", n, text=json.dumps({**entry, "message": message}))
        for n, entry in enumerate(entries, 1)
    ]
    with _pipeline() as p:
        out = (
            p
            | beam.Create(raws)
            | beam.ParDo(ParseEvents(RecordMapping(), NOW, FINGERPRINTS)).with_outputs(
                INVALID, TALLY, REPLAYED, main="events"
            )
        )
        assert_that(
            out[REPLAYED] | beam.Map(lambda keyed: keyed[1].source),
            equal_to(["logs/a.jsonl:7", "logs/b.parquet:2", "dead.jsonl:3"]),
        )
