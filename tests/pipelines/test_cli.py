"""The command (``beaconflow.pipelines.cli``): its help, exit statuses, one-line errors, advice."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from beaconflow.report.run import RunReport
from tests.conftest import run_cli


def test_help_lists_every_exit_status() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    for line in ("0    done", "2    nothing was sent", "3    done, but", "4    stopped early"):
        assert line in done.stdout


def test_the_advice_after_a_stop_never_invites_a_double_send() -> None:
    from beaconflow.pipelines.cli import _advice

    base = RunReport(dead_letter="out/dead.jsonl", messages_not_attempted=5)
    with_ledger = _advice(replace(base, ledger="/l"))
    assert "same --ledger" in with_ledger
    without = _advice(base)
    assert "replay the dead letter (out/dead.jsonl)" in without and "same command" not in without
    partial = _advice(replace(base, partial=True))
    assert "running it again sends everything again" in partial
    nothing_left = _advice(replace(base, messages_not_attempted=0))
    assert "Everything was sent or is in the dead letter" in nothing_left


def test_the_advice_after_a_chunked_run_stopped_early_names_the_chunk_it_goes_on_at() -> None:
    """The chunks not run are in no dead letter: replaying it would lose them."""
    from beaconflow.pipelines.cli import _advice

    rows = [{"status": "done", "messages_delivered": 40},
            {"status": "stopped", "messages_delivered": 7},
            {"status": "not run", "messages_delivered": 0}]  # fmt: skip
    base = RunReport(
        dead_letter="out/dead.jsonl",
        messages_delivered=47,
        messages_not_attempted=5,
        interrupted=True,
        chunking={"work_dir": "out/report.work", "chunks": rows},
    )
    where = "it goes on at chunk 2 of 3 (its plan is in out/report.work)"
    assert _advice(replace(base, ledger="/l")) == (
        f"47 messages were delivered. To finish the job, run the same command with the same "
        f"--ledger: {where} and sends only what the ledger does not hold"
    )
    without = _advice(base)
    assert f"run the same command: {where}" in without and "dead letter" not in without
    assert "without --ledger, that chunk runs again whole and sends its 7 messages" in without
    rows[1] = {"status": "done", "messages_delivered": 7}
    assert "sends its" not in _advice(base), "chunk 3 delivered nothing yet"
    spill_stopped = replace(base, messages_delivered=0, chunking={"chunks": []})
    assert _advice(spill_stopped) == "Nothing was sent: run the same command again to do the job"
    rows[2] = {"status": "done", "messages_delivered": 3}
    assert "replay the dead letter" in _advice(base), "every chunk done: as an unchunked run"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input=/nonexistent/*.jsonl", "--sandbox"], "no file matches"),
        (["--sandbox"], "--input is required"),
        (["--input=sample_data/game_events.jsonl"], "no destination"),
        (["--input=sample_data/game_events.jsonl", "--sandbox", "--max-rps=0"], "--max-rps"),
        (
            ["--input=sample_data/game_events.jsonl", "--sandbox", "--concurrency=1.5"],
            "must be a whole number above 0, got '1.5'",
        ),
        (
            ["--input=sample_data/game_events.jsonl", "--sandbox", "--no-such-flag"],
            "unrecognized argument",
        ),
        (
            # an unquoted glob, expanded by the shell: only the first file had --input
            [
                "--input",
                "sample_data/game_events.jsonl",
                "sample_data/game_events.parquet",
                "--sandbox",
            ],
            "unexpected argument 'sample_data/game_events.parquet': give each input its own",
        ),
        (
            ["--input=sample_data/game_events.jsonl", "--sandbox", "--since=yesterday-ish"],
            "--since",
        ),
        (["--input=sample_data/legacy_mapping.toml", "--sandbox"], "neither .jsonl"),
        (
            ["--input=sample_data/game_events.jsonl", "--sandbox", "--mapping=/nope.toml"],
            "--mapping",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    done = run_cli(*args, env=env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_bad_lock_limit_in_the_environment_is_one_line_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "BEACONFLOW_LEDGER_LOCK_HEARTBEAT_SECONDS": "often"}
    done = run_cli(
        "--input=sample_data/game_events.jsonl",
        "--sandbox",
        f"--ledger={tmp_path / 'ledger'}",
        f"--report={tmp_path / 'report.json'}",
        f"--dead-letter={tmp_path / 'dead.jsonl'}",
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "beaconflow: error: BEACONFLOW_LEDGER_LOCK_HEARTBEAT_SECONDS must be a number of "
        "seconds above 0, got 'often'\n"
    )
    assert not (tmp_path / "report.json").exists()
