"""The run's Prometheus metrics: names, what a partial or chunked run has, the textfile's write."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from beaconflow.report.metrics import (
    LAST_SUCCESS,
    Gateway,
    RunMetrics,
    exposition,
    metric_families,
    read_last_success,
    write_textfile,
)
from beaconflow.report.run import RunReport

REPORT = RunReport(
    events_read=10,
    events_invalid=1,
    events_mapped=9,
    messages_built=12,
    messages_delivered=11,
    messages_failed=1,
    invalid_by_stage={"parse": 1},
    by_destination={"kontagent": {"built": 12, "delivered": 11, "failed": 1}},
    by_type={"kontagent/ins": {"built": 2, "delivered": 2}, "kontagent/evt": {"built": 10}},
    destinations=("kontagent", "kissmetrics"),
    elapsed_seconds=2.5,
    exit_status=3,
)


def _samples(run: RunMetrics, last_success: float | None = None) -> dict[str, float]:
    text = exposition(metric_families(run, last_success)).decode()
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_names_follow_prometheus_conventions() -> None:
    families = metric_families(RunMetrics(3, 1_700_000_000.0, 2.5, REPORT), 1_600_000_000.0)
    names = [family.name for family in families]
    assert len(names) == len(set(names))
    for family in families:
        assert re.fullmatch(r"beaconflow_[a-z0-9_]+", family.name), family.name
        if family.type == "counter":
            # prometheus_client writes the samples as NAME_total
            assert all(s.name == f"{family.name}_total" for s in family.samples)
        else:
            assert family.type == "gauge" and not family.name.endswith("_total")
        if "seconds" in family.name or "timestamp" in family.name:
            assert family.name.endswith("_seconds"), family.name


def test_every_outcome_of_every_destination_and_type_has_a_sample() -> None:
    samples = _samples(RunMetrics(3, 1_700_000_000.0, 2.5, REPORT))
    assert (
        samples["beaconflow_messages_delivered_by_destination_total[('destination', 'kontagent')]"]
        == 11
    )
    # a destination of the run with nothing to count is there at 0, as an outcome left out
    assert (
        samples[
            "beaconflow_messages_delivered_by_destination_total[('destination', 'kissmetrics')]"
        ]
        == 0
    )
    assert (
        samples["beaconflow_messages_skipped_by_destination_total[('destination', 'kontagent')]"]
        == 0
    )
    assert (
        samples[
            "beaconflow_messages_delivered_by_type_total[('destination', 'kontagent'), ('type', 'ins')]"
        ]
        == 2
    )
    assert (
        samples[
            "beaconflow_messages_delivered_by_type_total[('destination', 'kontagent'), ('type', 'evt')]"
        ]
        == 0
    )
    assert samples["beaconflow_events_invalid_by_stage_total[('stage', 'parse')]"] == 1
    assert "beaconflow_last_success_timestamp_seconds[]" not in samples


def test_a_run_whose_counts_are_unknown_has_none() -> None:
    partial = RunReport(partial=True, stopped="the run failed: OSError: boom", exit_status=4)
    samples = _samples(RunMetrics(4, 1_700_000_000.0, 2.5, partial), 1_600_000_000.0)
    assert samples["beaconflow_run_counts_known[]"] == 0
    assert samples["beaconflow_run_stopped[]"] == 1
    assert samples[f"{LAST_SUCCESS}[]"] == 1_600_000_000.0
    assert not [name for name in samples if "_total" in name]


def test_a_run_without_a_report_has_its_status_only() -> None:
    samples = _samples(RunMetrics(75, 1_700_000_000.0, 0.5, labels={"pipeline": "a"}))
    assert samples == {
        "beaconflow_run_exit_status[('pipeline', 'a')]": 75,
        "beaconflow_run_end_timestamp_seconds[('pipeline', 'a')]": 1_700_000_000.0,
        "beaconflow_run_duration_seconds[('pipeline', 'a')]": 0.5,
        "beaconflow_run_counts_known[('pipeline', 'a')]": 0,
        next(name for name in samples if name.startswith("beaconflow_build_info")): 1,
    }


def test_a_chunked_run_counts_its_chunks_per_status() -> None:
    rows = [{"chunk": 1, "status": "resumed"}, {"chunk": 2, "status": "done"},
            {"chunk": 3, "status": "done"}]  # fmt: skip
    chunked = RunReport(chunking={"unit": "day", "chunks": rows}, exit_status=0)
    samples = _samples(RunMetrics(0, 1.0, 1.0, chunked))
    assert samples["beaconflow_chunks[('status', 'done')]"] == 2
    assert samples["beaconflow_chunks[('status', 'resumed')]"] == 1


def test_the_last_success_time_is_read_for_the_runs_own_labels() -> None:
    text = (
        f'{LAST_SUCCESS}{{pipeline="a"}} 100\n{LAST_SUCCESS}{{pipeline="b"}} 200\n'
        "beaconflow_run_exit_status 3\n"
    )
    assert read_last_success(text, {"pipeline": "b"}) == 200
    assert read_last_success(text, {}) is None
    with pytest.raises(ValueError):
        read_last_success("this is { not prometheus", {})


def test_a_textfile_that_cannot_be_renamed_leaves_no_temporary_file(tmp_path: Path) -> None:
    in_the_way = tmp_path / "beaconflow.prom"
    in_the_way.mkdir()
    with pytest.raises(OSError):
        write_textfile(str(in_the_way), RunMetrics(0, 1.0, 1.0, REPORT), warn=print)
    assert [p.name for p in tmp_path.iterdir()] == ["beaconflow.prom"]


def test_an_unreadable_earlier_textfile_loses_the_time_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "beaconflow.prom"
    path.write_bytes(b"\xff\xfe not text")
    said: list[str] = []
    write_textfile(str(path), RunMetrics(3, 5.0, 1.0, REPORT), warn=said.append)
    assert said == [
        f"the last success time of {path} is lost: it could not be read: UnicodeDecodeError: "
        "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"
    ]
    assert read_last_success(path.read_text(), {}) is None
    write_textfile(str(path), RunMetrics(0, 7.0, 1.0, REPORT), warn=said.append)
    write_textfile(str(path), RunMetrics(4, 9.0, 1.0, REPORT), warn=said.append)
    assert read_last_success(path.read_text(), {}) == 7.0
    assert len(said) == 1


@pytest.mark.parametrize(
    ("given", "url", "username", "password"),
    [
        ("http://gw:9091", "http://gw:9091", None, None),
        ("https://u:p%40ss@gw.example/base/", "https://gw.example/base", "u", "p@ss"),
        ("http://[::1]:9091", "http://[::1]:9091", None, None),
    ],
)
def test_a_gateway_keeps_its_credentials_apart(
    given: str, url: str, username: str | None, password: str | None
) -> None:
    gateway = Gateway.parse(given)
    assert (gateway.url, gateway.username, gateway.password) == (url, username, password)
    assert "p%40ss" not in repr(gateway) and "p@ss" not in repr(gateway)
