"""The metrics flags, read by the command before the run (pipelines/options.py)."""

from __future__ import annotations

import pytest

from beaconflow.pipelines.options import UsageError, metrics_config
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--pushgateway", "gw:9091"],
            "--pushgateway gw:9091: must be an http:// or https:// URL with a host",
        ),
        (
            ["--pushgateway", "http://u:secret@gw:x"],
            "--pushgateway http://gw:x: has a port that is not a number",
        ),
        (
            ["--pushgateway", "http://gw/?a=1"],
            "--pushgateway http://gw/?a=1: must not have a ?query or a #fragment",
        ),
        (["--metrics-pipeline="], "--metrics-pipeline must not be empty"),
        (["--metrics-textfile", " "], "--metrics-textfile must not be empty"),
    ],
)
def test_bad_metrics_flags_are_usage_errors(argv: list[str], error: str) -> None:
    with pytest.raises(UsageError) as raised:
        metrics_config(["--input", "x.jsonl", *argv])
    assert str(raised.value) == error


def test_metrics_flags_are_read_among_the_others() -> None:
    config = metrics_config(
        ["--input", "x.jsonl", "--metrics-textfile=m.prom", "--metrics-pipeline", "a", "--sandbox"]
    )
    assert (config.textfile, config.pushgateway, config.pipeline) == ("m.prom", None, "a")
    assert config.wanted
    assert not metrics_config(["--input", "x.jsonl"]).wanted


def test_a_stray_word_after_the_pushgateway_url_is_not_echoed() -> None:
    done = run_cli(
        "--input=x.jsonl", "--dry-run=y", "--pushgateway", "http://u:pass@gw", "word-of-it"
    )
    assert done.returncode == 2
    assert "pass@gw" not in done.stderr and "word-of-it" not in done.stderr
    assert "after the value of --pushgateway" in done.stderr
