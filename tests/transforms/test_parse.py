"""The parse step (``beaconflow.transforms.parse``) under TestPipeline: good and bad records."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
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


ROOT = Path(__file__).resolve().parents[2]
EXPORTS = ROOT / "tests" / "fixtures" / "exports"

#: (mapping, input files): every record the project ships, each read with its mapping
SHIPPED: list[tuple[RecordMapping | str, list[str]]] = [
    (RecordMapping(), ["sample_data/game_events.jsonl", "sample_data/game_events.parquet",
                       "sample_data/game_events_day2.jsonl.gz"]),
    ("sample_data/legacy_mapping.toml", ["sample_data/legacy/orchard_legacy.jsonl"]),
    ("segment", ["tests/fixtures/exports/segment/calls.jsonl"]),
    ("mixpanel", ["tests/fixtures/exports/mixpanel/export.jsonl",
                  "tests/fixtures/exports/mixpanel/export_time_in_ms.jsonl"]),
    ("amplitude", ["tests/fixtures/exports/amplitude/export.json.gz"]),
    ("ga4", ["tests/fixtures/exports/ga4/events.parquet"]),
]  # fmt: skip

#: Records at the edges of what the parse step takes, replays among them
EDGES: list[dict[str, Any] | str] = [
    {"time": T0, "user_id": 1, "event": "apr"},  # no event_id: a content key
    {"event_id": "", "time": T0, "user_id": 1, "event": "apr"},  # "" is none
    {"event_id": 7, "time": f"{T0}", "user_id": 1, "event": "apr"},
    {"event_id": "e1", "time": "2025-06-15T15:06:40.999+02:00", "user_id": 1, "event": "apr"},
    {"event_id": "e1", "time": "2025-06-15t15:06:40z", "user_id": 1, "event": "apr"},
    {"event_id": "e1", "time": "2025-06-15T15:06:40", "user_id": 1, "event": "apr"},  # naive
    {"event_id": "e2", "time": NOW + 1, "user_id": 1, "event": "apr"},  # after now
    {"event_id": "e3", "time": 1_000_000_000, "user_id": 1, "event": "apr"},  # before 2009
    {"event_id": True, "time": T0, "user_id": 1, "event": "apr"},
    {"event_id": "e4", "time": T0, "user_id": 1, "event": "apr", "level": "high"},
    {"event_id": "e5", "time": T0, "user_id": 1, "event": "alias"},  # no alias: map problem
    {"stage": "map", "reason": "r", "destination": "kissmetrics",
     "record": {"event_id": "e6", "time": T0, "user_id": 1, "event": "apr"}},
    {"stage": "parse", "reason": "r", "line": json.dumps({"time": T0, "user_id": 2, "event": "x"})},
    {"stage": "parse", "reason": "r", "line": "{not json"},
    {"stage": "parse", "reason": "r", "record": None},  # neither record nor line
    {"stage": "send", "reason": "HTTP 400",
     "message": {"destination": "kontagent", "kind": "apr", "params": {"s": "1"}}},
    "[1, 2]",
    "{not json",
]  # fmt: skip


def _shipped_records() -> list[tuple[RecordMapping, RawRecord]]:
    from beaconflow.model.builtin import builtin_mapping
    from beaconflow.transforms.read import read_file

    pairs: list[tuple[RecordMapping, RawRecord]] = []
    for given, paths in SHIPPED:
        if isinstance(given, RecordMapping):
            mapping = given
        elif given.endswith(".toml"):
            mapping = parse_mapping((ROOT / given).read_text(encoding="utf-8"))
        else:
            mapping = builtin_mapping(given)
        for path in paths:
            pairs.extend((mapping, raw) for raw in read_file(str(ROOT / path)))
    edges = [e if isinstance(e, str) else json.dumps(e) for e in EDGES]
    pairs.extend((RecordMapping(), RawRecord("edge.jsonl", n, text=t)) for n, t in enumerate(edges))
    pairs.append((RecordMapping(), RawRecord("edge.jsonl", 99, problem="line is not valid UTF-8")))
    return pairs


def test_event_place_says_what_the_parse_step_does_with_every_shipped_record() -> None:
    from beaconflow.transforms.parse import event_place

    parse: dict[int, ParseEvents] = {}
    places: Counter[str] = Counter()
    for mapping, raw in _shipped_records():
        step = parse.setdefault(id(mapping), ParseEvents(mapping, NOW, FINGERPRINTS))
        step.start_bundle()
        outputs = list(step.process(raw))
        place = event_place(raw, mapping, NOW)
        events = [out for out in outputs if not isinstance(out, TaggedOutput)]
        if not events:
            assert place is None, raw
            places["none"] += 1
            continue
        [(key, mapped)] = events
        assert place is not None, raw
        seconds, explicit = place
        assert seconds == mapped.time, raw
        assert explicit in (None, key), raw
        places["event_id" if explicit else "content"] += 1
    # every kind was met
    assert places["none"] >= 10 and places["content"] >= 5 and places["event_id"] >= 300, places


def test_a_dead_letter_entry_with_neither_record_nor_line_is_invalid() -> None:
    step = ParseEvents(RecordMapping(), NOW, FINGERPRINTS)
    step.start_bundle()
    entry = {"stage": "parse", "reason": "r", "record": None}
    [out] = step.process(RawRecord("dead.jsonl", 3, text=json.dumps(entry)))
    assert isinstance(out, TaggedOutput) and out.tag == INVALID
    assert "a dead-letter entry needs its record (an object) or line" in out.value.reason


def test_a_record_kept_in_another_chunk_is_counted_as_its_dedup_would_count_it() -> None:
    records = [
        {"event_id": "e1", "time": T0, "user_id": 1, "event": "apr"},
        {"event_id": "e1", "time": T0 + 86_400, "user_id": 1, "event": "apr"},
        {"time": T0, "user_id": "", "event": "apr"},  # invalid all the same
    ]
    raws = [RawRecord("a.jsonl", n, text=json.dumps(r)) for n, r in enumerate(records, 1)]

    def run(elsewhere: frozenset[str]) -> tuple[list[str], Counter[TallyKey]]:
        step = ParseEvents(RecordMapping(), NOW, FINGERPRINTS, elsewhere=elsewhere)
        step.start_bundle()
        sources = []
        for raw in raws:
            for out in step.process(raw):
                if not isinstance(out, TaggedOutput):
                    sources.append(out[1].source)
        tallies: Counter[TallyKey] = Counter()
        for out in step.finish_bundle():
            key, n = out.value.value
            tallies[key] += n
        return sources, tallies

    everything, counted = run(frozenset())
    chunked, counted_chunked = run(frozenset({"a.jsonl:2", "a.jsonl:3"}))
    assert everything == ["a.jsonl:1", "a.jsonl:2"]
    assert chunked == ["a.jsonl:1"]
    # the same tallies, and the duplicate the dedup would have counted
    assert counted_chunked == counted + Counter({TallyKey("events_duplicate"): 1})
