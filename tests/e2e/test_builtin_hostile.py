"""The built-in mappings on what real exports also hold: the review of issue 14's findings.

Each test is one record (or a few) that a hostile review found to crash the run, to lose an
event, or to fail an ordinary night; each runs the whole pipeline as a dry run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import backfill_flags, read_dead_letter, run_json

NOW = 1_800_000_000
T = "2024-03-04T09:15:02.168Z"


def _segment(**call: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": "m-1", "timestamp": T, "anonymousId": "anon-1", **call}


def _run(
    tmp_path: Path, mapping: str, records: list[dict[str, Any]] | Path
) -> tuple[int, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    if isinstance(records, Path):
        source = records
    else:
        source = tmp_path / "in.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out"
    flags = backfill_flags(
        "http://127.0.0.1:9",
        out,
        source,
        extra=(f"--mapping={mapping}", f"--dry-run={out / 'messages.jsonl'}"),
    )
    status, report = run_json(flags, now=NOW)
    assert report["invariant_errors"] == []
    text = (out / "messages.jsonl").read_text(encoding="utf-8")
    return status, report, [json.loads(line) for line in text.splitlines()], read_dead_letter(out)


def _ga4_row(value: float) -> dict[str, Any]:
    return {
        "event_timestamp": 1_718_370_011_000_000,
        "event_name": "purchase",
        "user_pseudo_id": "1843092215.1718370011",
        "event_params": [{"key": "value", "value": {"double_value": value}}],
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1.7e308])
def test_a_non_finite_or_huge_amount_is_a_dead_letter_not_a_crash(
    tmp_path: Path, value: float
) -> None:
    source = tmp_path / "ga4.parquet"
    pq.write_table(pa.Table.from_pylist([_ga4_row(value), _ga4_row(9.99)]), source)
    status, report, messages, dead = _run(tmp_path, "ga4", source)
    assert status == 3  # one error, over the default --max-errors of 0: never a crash (2)
    assert report["events_read"] == 2
    assert [m["params"].get("v") for m in messages if m["kind"] == "evt"][-1] == "999"
    (entry,) = dead
    assert "value" in entry["reason"] and "event_params.value" in entry["reason"]


def test_an_identify_without_traits_sends_nothing_and_is_not_an_error(tmp_path: Path) -> None:
    calls = [_segment(type="identify", userId="u1", traits={}), _segment(messageId="m-2")]
    calls[1]["event"] = "Opened"
    status, report, messages, dead = _run(tmp_path, "segment", calls)
    assert (status, dead) == (0, [])
    assert report["events_unrouted"] == 1 and report["events_mapped"] == 2
    assert {m["kind"] for m in messages} == {"evt", "e"}


def test_reserved_and_non_object_properties_are_left_out_and_counted(tmp_path: Path) -> None:
    calls = [
        _segment(event="Opened", properties={"_source": "x", "plan": "pro"}),
        _segment(messageId="m-2", event="Opened", properties="not an object"),
    ]
    status, report, messages, _ = _run(tmp_path, "segment", calls)
    assert status == 0
    assert report["properties_left_out"] == {"_source": 1, "properties": 1}
    (first, second) = [m["params"] for m in messages if m["kind"] == "e"]
    assert first.get("plan") == "pro" and "_source" not in first and "plan" not in second


def test_an_empty_user_id_falls_back_to_the_anonymous_id(tmp_path: Path) -> None:
    status, _, messages, _ = _run(tmp_path, "segment", [_segment(event="Opened", userId="")])
    assert status == 0
    assert [m["params"]["_p"] for m in messages if m["kind"] == "e"] == ["anon-1"]


def test_a_url_too_long_for_a_request_is_refused_before_sending(tmp_path: Path) -> None:
    call = _segment(event="Opened", properties={"note": "é" * 3000})
    status, report, messages, dead = _run(tmp_path, "segment", [call])
    assert status == 3 and report["messages_invalid"] == 1
    assert [m["destination"] for m in messages] == ["kontagent"]  # it still went
    assert "as a URL query" in dead[0]["reason"] and "'note'" in dead[0]["reason"]


def test_a_route_names_the_product_s_own_event_names(tmp_path: Path) -> None:
    mapping = tmp_path / "mixpanel.toml"
    builtin = Path(__file__).resolve().parents[2] / "beaconflow/model/mappings/mixpanel.toml"
    mapping.write_text(
        builtin.read_text() + '\n[destinations.kontagent]\nexclude = ["Song Played"]\n'
    )
    events = [
        {"event": name, "properties": {"time": 1_716_000_000, "distinct_id": "u1",
                                       "$insert_id": name}}
        for name in ("Song Played", "Logged In")
    ]  # fmt: skip
    status, _, messages, _ = _run(tmp_path, str(mapping), events)
    assert status == 0
    assert [m["params"]["n"] for m in messages if m["kind"] == "evt"] == ["Logged_In"]
    assert len([m for m in messages if m["kind"] == "e"]) == 2


def test_an_alias_without_its_previous_id_names_where_it_was_read(tmp_path: Path) -> None:
    call = _segment(type="alias", userId="u1", previousId=None)
    status, _, _, dead = _run(tmp_path, "segment", [call])
    assert status == 3
    assert "(alias, read from previousId)" in dead[0]["reason"]


def test_mixpanels_create_alias_is_an_alias(tmp_path: Path) -> None:
    event = {
        "event": "$create_alias",
        "properties": {"time": 1_716_000_000, "distinct_id": "anon-9", "alias": "u_9",
                       "$insert_id": "x1"},
    }  # fmt: skip
    status, _, messages, _ = _run(tmp_path, "mixpanel", [event])
    assert status == 0
    assert [(m["kind"], m["params"]) for m in messages] == [("a", {"_p": "anon-9", "_n": "u_9"})]
