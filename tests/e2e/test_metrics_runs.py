"""--metrics-textfile and --pushgateway, end to end: the command as a user runs it.

The textfile is parsed with prometheus_client's own parser and every value is checked
against report.json; a failed run keeps the last success time; a real Pushgateway
(Debian's ``prometheus-pushgateway``, started here on loopback) receives the pushes.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from beaconflow.report.metrics import NOT_EXPORTED
from beaconflow.sandbox.collector import unused_port
from tests.conftest import debian_program, run_cli
from tests.fs_faults import SmallDisk

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"

#: report.json's integer keys whose metric is not named beaconflow_<key>_total
_RENAMED = {
    "files": "beaconflow_input_files_total",
    "exit_status": "beaconflow_run_exit_status",
}
#: report.json's breakdowns: metric name pattern and label names
_BREAKDOWN_LABELS = {
    "invalid_by_stage": ("beaconflow_events_invalid_by_stage_total", ("stage",)),
    "mapping_rules_matched": ("beaconflow_mapping_rule_records_total", ("rule",)),
    "sandbox_collector": ("beaconflow_sandbox_collector_requests_total", ("outcome",)),
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str, drop: tuple[str, ...] = ()) -> Samples:
    """Every sample of an exposition, by name and labels (``drop``: labels left out)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k not in drop)
            key = (sample.name, labels)
            assert key not in found, f"twice: {key}"
            found[key] = sample.value
    return found


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def _flags(out: Path, *extra: str) -> list[str]:
    return [
        "--sandbox",
        f"--input={SAMPLES / 'game_events.jsonl'}",
        f"--input={SAMPLES / 'game_events_day2.jsonl.gz'}",
        f"--report={out / 'report.json'}",
        f"--dead-letter={out / 'dead.jsonl'}",
        "--chunk=none",
        "--progress-interval=60",
        *extra,
    ]


def _expected(report: dict[str, Any], labels: dict[str, str]) -> Samples:
    """What the textfile must hold for report.json (beside the times and build_info)."""
    own = frozenset(labels.items())
    expected: Samples = {}
    for key, value in report.items():
        if isinstance(value, int) and not isinstance(value, bool):
            name = _RENAMED.get(key, f"beaconflow_{key}_total")
            expected[(name, own)] = value
    expected[("beaconflow_run_duration_seconds", own)] = report["elapsed_seconds"]
    expected[("beaconflow_run_messages_per_second", own)] = report["messages_per_second"]
    for flag in ("sandbox", "interrupted"):
        expected[(f"beaconflow_run_{flag}", own)] = 1 if report.get(flag) else 0
    expected[("beaconflow_run_dry_run", own)] = 1 if report["dry_run"] else 0
    expected[("beaconflow_run_stopped", own)] = 1 if report["stopped"] else 0
    expected[("beaconflow_run_counts_known", own)] = 0 if report.get("partial") else 1
    expected[("beaconflow_run_invariant_errors", own)] = len(report["invariant_errors"])
    expected[("beaconflow_lookback_days_missing", own)] = len(report["lookback_days_missing"])
    for key, (name, label_names) in _BREAKDOWN_LABELS.items():
        for item, n in (report.get(key) or {}).items():
            expected[(name, own | {(label_names[0], item)})] = n
    for row in (report.get("chunking") or {}).get("chunks", ()):
        chunks = ("beaconflow_chunks", own | {("status", row["status"])})
        expected[chunks] = expected.get(chunks, 0) + 1
    for rule in report["mapping_rules_unmatched"]:
        expected[("beaconflow_mapping_rule_records_total", own | {("rule", rule)})] = 0
    for destination, counts in report["by_destination"].items():
        for outcome, n in counts.items():
            name = f"beaconflow_messages_{outcome}_by_destination_total"
            expected[(name, own | {("destination", destination)})] = n
    for key, counts in report["by_type"].items():
        destination, kind = key.split("/", 1)
        for outcome, n in counts.items():
            name = f"beaconflow_messages_{outcome}_by_type_total"
            expected[(name, own | {("destination", destination), ("type", kind)})] = n
    return expected


def _check_against_report(
    text: str,
    report: dict[str, Any],
    *,
    labels: dict[str, str],
    ended: tuple[float, float],
    last_success: float | None = None,
) -> None:
    """Every value of the textfile against report.json, and no sample that is not one."""
    samples = _samples(text)
    expected = _expected(report, labels)
    for key, value in expected.items():
        assert key in samples, f"missing: {key}"
        assert samples[key] == pytest.approx(value), key
    own = frozenset(labels.items())
    end = samples.pop(("beaconflow_run_end_timestamp_seconds", own))
    assert ended[0] <= end <= ended[1]
    # on success the run's end; after a failure, the one carried over
    success = end if report["exit_status"] == 0 else last_success
    assert samples.pop(("beaconflow_last_success_timestamp_seconds", own), None) == success
    info = [key for key in samples if key[0] == "beaconflow_build_info"]
    assert len(info) == 1 and samples.pop(info[0]) == 1
    for key, value in samples.items():
        if key not in expected:
            # a destination's or type's outcome the report leaves out because it is 0
            assert key[0].endswith(("_by_destination_total", "_by_type_total")), key
            assert value == 0, key
    # every key of report.json is checked above or has no metric, for a reason
    checked = {
        *(k for k, v in report.items() if isinstance(v, int) and not isinstance(v, bool)),
        *_BREAKDOWN_LABELS,
        "elapsed_seconds",
        "messages_per_second",
        "sandbox",
        "interrupted",
        "dry_run",
        "stopped",
        "partial",
        "invariant_errors",
        "lookback_days_missing",
        "mapping_rules_unmatched",
        "by_destination",
        "by_type",
    }
    assert set(report) <= checked | set(NOT_EXPORTED), set(report) - checked - set(NOT_EXPORTED)


def test_the_textfile_holds_every_count_of_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prom = tmp_path / "metrics" / "beaconflow.prom"
    prom.parent.mkdir()
    before = time.time()
    done = run_cli(
        *_flags(out, f"--metrics-textfile={prom}", "--metrics-pipeline=game-a", "--max-errors=10")
    )
    after = time.time()
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["messages_delivered"] > 0 and report["by_type"]
    assert report["events_invalid"] > 0 and report["invalid_by_stage"]
    text = prom.read_text()
    _check_against_report(text, report, labels={"pipeline": "game-a"}, ended=(before, after))
    assert "beaconflow_messages_delivered_total" in text
    # readable by node-exporter, whoever it runs as; nothing else left in the folder
    assert prom.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in prom.parent.iterdir()) == ["beaconflow.prom"]


def test_a_failed_run_keeps_the_last_success_time(tmp_path: Path) -> None:
    prom = tmp_path / "beaconflow.prom"
    first = run_cli(*_flags(tmp_path / "one", f"--metrics-textfile={prom}", "--max-errors=10"))
    assert first.returncode == 0, first.stderr
    success = _value(_samples(prom.read_text()), "beaconflow_last_success_timestamp_seconds")

    # the sample data has invalid events: with --max-errors 0 the run exits 3
    before = time.time()
    failed = run_cli(*_flags(tmp_path / "two", f"--metrics-textfile={prom}"))
    after = time.time()
    assert failed.returncode == 3, failed.stderr
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    text = prom.read_text()
    samples = _samples(text)
    assert _value(samples, "beaconflow_last_success_timestamp_seconds") == success
    assert _value(samples, "beaconflow_run_exit_status") == 3
    assert _value(samples, "beaconflow_run_end_timestamp_seconds") > success
    _check_against_report(text, report, labels={}, ended=(before, after), last_success=success)

    # a usage error before anything ran: the status only, the success time still there
    usage = run_cli(
        "--sandbox", f"--input={tmp_path / 'nothing*.jsonl'}", f"--metrics-textfile={prom}"
    )
    assert usage.returncode == 2, usage.stderr
    samples = _samples(prom.read_text())
    assert _value(samples, "beaconflow_run_exit_status") == 2
    assert _value(samples, "beaconflow_run_counts_known") == 0
    assert _value(samples, "beaconflow_last_success_timestamp_seconds") == success
    assert not any(name.endswith("_total") for name, _ in samples)


def test_a_textfile_that_cannot_be_written_is_a_warning(
    tmp_path: Path, read_only_dir: Path
) -> None:
    prom = read_only_dir / "beaconflow.prom"
    done = run_cli(*_flags(tmp_path / "out", f"--metrics-textfile={prom}", "--max-errors=10"))
    assert done.returncode == 0
    assert (
        f"beaconflow: warning: metrics textfile not writable: {prom}: Read-only file system; "
        "the run's exit status stands"
    ) in done.stderr.splitlines()
    assert "Traceback" not in done.stderr
    assert list(read_only_dir.iterdir()) == []


def test_a_full_disk_leaves_the_earlier_textfile_whole(
    tmp_path: Path, small_disk: SmallDisk
) -> None:
    prom = small_disk.path / "beaconflow.prom"
    first = run_cli(*_flags(tmp_path / "one", f"--metrics-textfile={prom}", "--max-errors=10"))
    assert first.returncode == 0, first.stderr
    earlier = prom.read_bytes()
    small_disk.fill(free=4096)  # less than a textfile of the sample's run
    failed = run_cli(*_flags(tmp_path / "two", f"--metrics-textfile={prom}"))
    assert failed.returncode == 3
    assert (
        f"beaconflow: warning: metrics textfile not writable: {prom}: No space left on device; "
        "the run's exit status stands"
    ) in failed.stderr.splitlines()
    assert prom.read_bytes() == earlier
    assert sorted(p.name for p in small_disk.path.iterdir()) == ["beaconflow.prom", "filler"]


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Pushgateway on a loopback port, for this test only; its base URL."""
    program = debian_program(
        Path(PUSHGATEWAY), "prometheus-pushgateway", "BEACONFLOW_REQUIRE_PUSHGATEWAY"
    )
    port = unused_port()
    log = (tmp_path / "pushgateway.log").open("wb")
    gateway = subprocess.Popen(
        [
            str(program),
            f"--web.listen-address=127.0.0.1:{port}",
            # Debian's build persists to /var/lib/prometheus by default: not a test's
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if gateway.poll() is not None:
                    pytest.fail(f"the pushgateway exited: {gateway.returncode}")
                time.sleep(0.05)
        else:
            pytest.fail("the pushgateway did not start")
        yield url
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        log.close()


def _gateway_samples(url: str) -> Samples:
    """The gateway's beaconflow samples (job="beaconflow"), with their group's labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    ours: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("job") == "beaconflow":
                ours[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return ours


def test_the_pushgateway_keeps_one_group_and_the_last_success_time(
    tmp_path: Path, pushgateway: str
) -> None:
    host = pushgateway.removeprefix("http://")
    # the gateway takes any credentials when it checks none: they must still not be printed
    url = f"http://metrics-user:pushgw-password-42@{host}"
    group = {"job": "beaconflow", "instance": "", "pipeline": "nightly"}
    flags = (f"--pushgateway={url}", "--metrics-pipeline=nightly")

    first = run_cli(*_flags(tmp_path / "one", *flags, "--max-errors=10"))
    assert first.returncode == 0, first.stderr
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    samples = _gateway_samples(pushgateway)
    success = _value(samples, "beaconflow_last_success_timestamp_seconds", **group)
    assert _value(samples, "beaconflow_run_exit_status", **group) == 0
    assert _value(samples, "beaconflow_run_end_timestamp_seconds", **group) == success
    for name in ("events_read", "events_invalid", "messages_built", "messages_delivered"):
        assert _value(samples, f"beaconflow_{name}_total", **group) == report[name]
    assert (
        _value(
            samples,
            "beaconflow_messages_delivered_by_destination_total",
            **group,
            destination="kissmetrics",
        )
        == report["by_destination"]["kissmetrics"]["delivered"]
    )

    second = run_cli(*_flags(tmp_path / "two", *flags))
    assert second.returncode == 3, second.stderr
    samples = _gateway_samples(pushgateway)
    assert _value(samples, "beaconflow_last_success_timestamp_seconds", **group) == success
    assert _value(samples, "beaconflow_run_exit_status", **group) == 3
    assert _value(samples, "beaconflow_run_end_timestamp_seconds", **group) > success
    # two nights, one group: the gateway's own push time has one series for beaconflow
    groups = [key for key in samples if key[0] == "push_time_seconds"]
    assert groups == [("push_time_seconds", frozenset(group.items()))]
    for done in (first, second):
        assert "pushgw-password-42" not in done.stdout + done.stderr
        assert "warning" not in done.stderr


def test_a_push_that_fails_is_a_warning_and_the_status_stands(tmp_path: Path) -> None:
    port = unused_port()  # nothing listens there
    url = f"http://metrics-user:pushgw-password-42@127.0.0.1:{port}"
    done = run_cli(*_flags(tmp_path / "out", f"--pushgateway={url}"))
    assert done.returncode == 3
    warnings = [line for line in done.stderr.splitlines() if "metrics not pushed" in line]
    assert warnings == [
        f"beaconflow: warning: metrics not pushed to http://127.0.0.1:{port}: Connection "
        "refused; the run's exit status stands"
    ]
    assert "pushgw-password-42" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_pushgateway_url_that_is_not_one_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli(*_flags(tmp_path / "out", "--pushgateway=ftp://user:hunter2secret@host/"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "beaconflow: error: --pushgateway ftp://host/: must be an http:// or https:// URL "
        "with a host"
    )
    assert not (tmp_path / "out").exists()


def test_a_chunked_run_writes_its_summed_counts_and_its_chunks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prom = tmp_path / "beaconflow.prom"
    flags = [flag for flag in _flags(out, f"--metrics-textfile={prom}") if flag != "--chunk=none"]
    before = time.time()
    done = run_cli(*flags, "--chunk=day", "--max-errors=10")
    after = time.time()
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    rows = report["chunking"]["chunks"]
    assert len(rows) > 1
    text = prom.read_text()
    _check_against_report(text, report, labels={}, ended=(before, after))
    assert _value(_samples(text), "beaconflow_chunks", status="done") == len(rows)
