"""The report's counters, invariants and the series behind report.html."""

from __future__ import annotations

import pytest

from beaconflow.report.counts import (
    BY_DAY,
    DEAD_LETTER_REASON,
    DELIVERED_AT,
    MAPPING_RULE,
    PROPERTY_LEFT_OUT,
    TIMELINE_POINTS,
    Tally,
    TallyKey,
    build_report,
    reason_group,
    send_timeline,
    tally,
)
from beaconflow.transforms.tallies import SumTallies, read_sums


def sums_of(*tallies: Tally) -> dict[TallyKey, int]:
    """The tallies summed as a run sums them, through the line the report is read from."""
    combine = SumTallies()
    accumulator = combine.create_accumulator()
    for each in tallies:
        accumulator = combine.add_input(accumulator, each)
    return dict(read_sums(combine.extract_output(accumulator)))


def test_reason_groups_drop_the_values_that_vary() -> None:
    assert reason_group("field 'n': must be an integer, got 'x'") == reason_group(
        "field 'n': must be an integer, got 'y'"
    )
    assert (
        reason_group("malformed JSON: Expecting ',' delimiter: line 2 column 1 (char 116)")
        == "malformed JSON: Expecting ',' delimiter"
    )
    assert reason_group("field 'time': is in the future: 19 > now (18)") == (
        "field 'time': is in the future"
    )
    assert reason_group("HTTP 400") == "HTTP 400"


@pytest.mark.parametrize(
    ("reasons", "group"),
    [
        # the service's explanation, with the values that vary per request as #
        (
            ["HTTP 400: user '42' is refused", "HTTP 400: user 'a7f3' is refused"],
            "HTTP 400: user '#' is refused",
        ),
        (
            [
                'HTTP 400: {"error":"bad s","request_id":"9f8e7d"}',
                'HTTP 400: {"error":"bad s","request_id":"0a1b"}',
            ],
            'HTTP 400: {"error":"bad s","request_id":"#"}',
        ),
        # a long answer is grouped by its start
        (
            [f"HTTP 500: <html><title>Error</title>{'p' * 60} at {end}" for end in ("A", "B")],
            f"HTTP 500: <html><title>Error</title>{'p' * 53}…",
        ),
        # a redirect's reason names a host, not an answer: kept as it is
        (
            ["HTTP 302: redirected to http://h:8080 (redirects are not followed)"],
            "HTTP 302: redirected to http://h:8080 (redirects are not followed)",
        ),
    ],
)
def test_reasons_quoting_an_answer_group_by_its_status_and_start(
    reasons: list[str], group: str
) -> None:
    assert {reason_group(reason) for reason in reasons} == {group}
    assert len(reason_group("x" * 5000)) == 200


def test_series_are_kept_out_of_the_counters() -> None:
    sums = sums_of(
        tally("messages_built", 3, "kontagent", "ins"),
        tally("messages_delivered", 3, "kontagent", "ins"),
        tally(BY_DAY, 2, "kontagent", "ins", detail="2025-06-01"),
        tally(BY_DAY, 1, "kontagent", "ins", detail="2025-06-02"),
        tally(DELIVERED_AT, 2, "kontagent", detail="1000"),
        tally(DELIVERED_AT, 1, "kontagent", detail="1002"),
        tally(DEAD_LETTER_REASON, 4, stage="parse", detail="is required | or not"),
        tally(DEAD_LETTER_REASON, 7, stage="send", detail="HTTP 400"),
        tally("events_read", 11),
        tally("events_invalid", 11, stage="parse"),
    )
    report = build_report(sums, 2.0).to_json()
    assert report["invariant_errors"] == []
    assert report["invalid_by_stage"] == {"parse": 11}
    assert "series_by_day" not in report and report["messages_built"] == 3
    assert report["messages_by_day"] == {
        "2025-06-01": {"kontagent/ins": 2},
        "2025-06-02": {"kontagent/ins": 1},
    }
    assert report["dead_letter_reasons"] == [
        {"stage": "send", "reason": "HTTP 400", "count": 7},
        {"stage": "parse", "reason": "is required | or not", "count": 4},
    ]
    assert report["send_timeline"] == {
        "start": 1000,
        "bucket_seconds": 1,
        "delivered": {"kontagent": [2, 0, 1]},
        "failed": {},
    }


def test_timeline_buckets_widen_to_stay_bounded() -> None:
    # ten hours of sends, one message a second
    seconds = {1_000_000 + s: 1 for s in range(36_000)}
    timeline = send_timeline({("delivered", "kissmetrics"): seconds, ("failed", "kissmetrics"): {}})
    values = timeline["delivered"]["kissmetrics"]
    assert timeline["bucket_seconds"] == 60
    assert len(values) <= TIMELINE_POINTS and sum(values) == 36_000
    assert timeline["failed"] == {"kissmetrics": [0] * len(values)}
    # a month: hour-wide buckets or wider
    month = send_timeline({("delivered", "k"): {0: 1, 31 * 86_400: 1}})
    assert month["bucket_seconds"] >= 3600 and len(month["delivered"]["k"]) <= TIMELINE_POINTS


def test_timeline_of_a_dry_run_is_empty() -> None:
    assert send_timeline({}) == {"start": None, "bucket_seconds": 1, "delivered": {}, "failed": {}}


def test_only_the_top_reasons_are_listed() -> None:
    sums = sums_of(
        *(tally(DEAD_LETTER_REASON, n, stage="parse", detail=f"reason {n}") for n in range(1, 30))
    )
    reasons = build_report(sums, 1.0).to_json()["dead_letter_reasons"]
    assert [r["count"] for r in reasons] == list(range(29, 19, -1))


def test_a_tally_of_an_unknown_counter_is_reported_not_lost_nor_fatal() -> None:
    # found after a run has sent: the report is still written, and says it
    report = build_report(sums_of(tally("messages_mislaid", 3)), 1.0)
    assert report.invariant_errors == ("a tally of an unknown counter: 'messages_mislaid' (3)",)


def test_a_sums_line_that_is_not_one_is_a_value_error() -> None:
    for line in ('[["events_read", 1]]', '{"a": 1}', "[5]"):
        with pytest.raises(ValueError):
            read_sums(line)


def test_mapping_rules_and_properties_left_out_are_kept_out_of_the_counters() -> None:
    sums = sums_of(
        tally("events_read", 3),
        tally("events_mapped", 3),
        tally(MAPPING_RULE, 2, detail="user_id = userId or anonymousId"),
        tally(MAPPING_RULE, 1, detail="user_id = userId or anonymousId"),
        tally(MAPPING_RULE, 1, detail="properties from properties, traits"),
        tally(PROPERTY_LEFT_OUT, 1, detail="tags"),
        tally(PROPERTY_LEFT_OUT, 2, detail="cart"),
        tally(PROPERTY_LEFT_OUT, 1, detail="cart"),
        tally(PROPERTY_LEFT_OUT, 3, detail="a.b"),
        tally(PROPERTY_LEFT_OUT, 1, detail="gone"),
    )
    report = build_report(sums, 1.0).to_json()
    assert report["invariant_errors"] == []
    assert report["events_read"] == report["events_mapped"] == 3
    assert report["mapping_rules_matched"] == {
        "properties from properties, traits": 1,
        "user_id = userId or anonymousId": 3,
    }
    # most frequent first, then by name
    assert list(report["properties_left_out"].items()) == [
        ("a.b", 3),
        ("cart", 3),
        ("gone", 1),
        ("tags", 1),
    ]
    # the driver fills mapping_rules_unmatched in from the mapping's required labels
    assert report["mapping_rules_unmatched"] == []


def test_no_properties_left_out_is_an_empty_object() -> None:
    report = build_report(sums_of(tally("events_read", 1), tally("events_mapped", 1)), 1.0)
    assert report.to_json()["properties_left_out"] == {}
