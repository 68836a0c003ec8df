"""The scheduler wrapper (beaconflow.pipelines.wrap): real exit statuses -> the right outcome.

Airflow is not installed: the wrapper is tested as the DAG uses it, a process whose status
BashOperator reads (0 done, 75 retry, 99 fail without retry).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from beaconflow.pipelines.wrap import Outcome, run, status_for, verdict

ROOT = Path(__file__).resolve().parents[2]
BEACONFLOW = str(Path(sys.executable).parent / "beaconflow")


def _exits(status: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.exit({status})"]


@pytest.mark.parametrize(
    ("status", "outcome", "wrapped"),
    [
        (0, Outcome.DONE, 0),
        (2, Outcome.FAIL, 99),
        (3, Outcome.FAIL, 99),
        (4, Outcome.FAIL, 99),
        (75, Outcome.RETRY, 75),
        (130, Outcome.RETRY, 75),
        (143, Outcome.RETRY, 75),
        (1, Outcome.RETRY, 75),  # a crash: Airflow's own default, a retry
    ],
)
def test_a_real_exit_status_gives_its_outcome(status: int, outcome: Outcome, wrapped: int) -> None:
    result = run(_exits(status))
    assert (result.outcome, result.status) == (outcome, status)
    assert status_for(result) == wrapped
    assert status_for(result, final_status=42) == (42 if outcome is Outcome.FAIL else wrapped)


def test_a_killed_command_is_retried() -> None:
    result = run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert result.outcome is Outcome.RETRY and result.status == -signal.SIGKILL
    assert result.reason == "killed by signal SIGKILL"


def test_a_command_that_cannot_start_fails_without_retry(tmp_path: Path) -> None:
    result = run([str(tmp_path / "no-such-beaconflow")])
    assert result.outcome is Outcome.FAIL
    assert result.reason.endswith("cannot be started: No such file or directory")


def test_verdict_reasons_name_what_to_do() -> None:
    assert "dead letter" in verdict(3).reason
    assert "stopped" in verdict(4).reason
    assert "try again later" in verdict(75).reason


def _wrap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beaconflow.pipelines.wrap", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith(("KONTAGENT", "KISS"))},
    )


def test_the_wrapper_around_real_beaconflow_runs(tmp_path: Path) -> None:
    """Done -> 0 with the summary still the last stdout line; not landed -> 75; usage -> 99."""
    out = tmp_path / "out"
    done = _wrap(
        "--",
        BEACONFLOW,
        "--sandbox",
        f"--input={ROOT / 'sample_data' / 'game_events.jsonl'}",
        "--max-errors=3",
        f"--report={out / 'report.json'}",
        f"--dead-letter={out / 'dead.jsonl'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "report.json").read_text())["exit_status"] == 0
    assert done.stdout.strip()  # beaconflow's summary passes through
    assert done.stderr.rstrip().splitlines()[-1] == "beaconflow-wrap: exit 0: done; done (exit 0)"

    landing = _wrap(
        "--",
        BEACONFLOW,
        "--date=2025-06-01",
        f"--input={tmp_path / 'logs' / '{date}' / '*.jsonl'}",
        f"--dry-run={out / 'dry.jsonl'}",
        cwd=tmp_path,
    )
    assert landing.returncode == 75, landing.stderr
    assert "has not landed" in landing.stderr
    assert landing.stderr.rstrip().endswith("retry (exit 75)")

    usage = _wrap("--final-status", "98", "--", BEACONFLOW, "--dry-run=x", cwd=tmp_path)
    assert usage.returncode == 98, usage.stderr
    assert "--input is required" in usage.stderr
    assert usage.stderr.rstrip().endswith("fail, do not retry (exit 98)")


def test_the_wrapper_refuses_no_command_and_a_final_status_of_75(tmp_path: Path) -> None:
    assert _wrap("--", cwd=tmp_path).returncode == 2
    refused = _wrap("--final-status", "75", "--", "true", cwd=tmp_path)
    assert refused.returncode == 2 and "not 75" in refused.stderr
