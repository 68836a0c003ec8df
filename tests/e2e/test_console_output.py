"""The command's everyday output (issue 18), through the real command on the sample data.

``--log-format json``: every stderr line one JSON object with the fixed fields, the last
stdout line the report in one JSON line; progress as plain lines without a terminal and as
a live display on a real pseudo-terminal; the dead letter named; ``--version``; ``--help``;
contradictory flags refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from datetime import datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from beaconflow.sandbox.collector import Collector, Faults
from tests.conftest import KISSMETRICS_KEY, KONTAGENT_KEY, KONTAGENT_SECRET, backfill_flags, run_cli

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "game_events.jsonl"  # 311 events, 3 of them invalid
FIXED = ("time", "level", "event", "message")
SECRETS = (KONTAGENT_KEY, KONTAGENT_SECRET, KISSMETRICS_KEY)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object with the fixed fields (asserted)."""
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        assert list(line)[:4] == list(FIXED), line
        assert line["time"].endswith("Z") and datetime.fromisoformat(
            line["time"]
        ).utcoffset() == timedelta(0)
        assert line["level"] in ("debug", "info", "warning", "error")
        assert isinstance(line["event"], str) and line["event"]
        assert isinstance(line["message"], str)
    return lines


def test_json_mode_every_stderr_line_is_json_and_stdout_ends_with_the_report(
    collector: Collector, tmp_path: Path
) -> None:
    flags = backfill_flags(collector.base_url, tmp_path, SAMPLE,
                           extra=("--log-format=json", "--progress-interval=0.001",
                                  "--send-processes=2"))  # fmt: skip
    done = run_cli(*flags)
    assert done.returncode == 3, done.stderr  # the sample's 3 invalid events > --max-errors 0
    for secret in SECRETS:
        assert secret not in done.stderr + done.stdout
    lines = json_lines(done.stderr)
    events = [line["event"] for line in lines]
    progress = [line for line in lines if line["event"] == "progress"]
    assert progress, "no progress line"
    for line in progress:
        assert {"sent", "rate", "retries", "failed", "total", "done", "percent"} <= set(line)
        assert line["done"] <= line["total"]
    assert events.count("summary") == 1 and events[-1] == "max_errors_exceeded"
    (error,) = [line for line in lines if line["level"] == "error"]
    assert error["message"].startswith("3 invalid events + 0 failed messages exceed")
    assert error["exit_status"] == 3
    # stdout holds one line only: the report in JSON, its numbers those of report.json
    (last,) = done.stdout.splitlines()
    summary = json.loads(last)
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert summary["event"] == "summary" and summary["exit_status"] == report["exit_status"] == 3
    for key, value in summary.items():
        if key in report:
            assert value == report[key], key
    assert summary["messages_delivered"] == 596 and summary["events_invalid"] == 3
    assert summary["dead_letter"] == str(tmp_path / "dead.jsonl")
    assert summary["dead_letter_entries"] == 3 and summary["report_written"] is True


def test_json_mode_beam_worker_processes_lines_are_json_too(
    collector: Collector, tmp_path: Path
) -> None:
    # each of Beam's worker processes prints lines of its own as it starts, before any
    # beaconflow code runs in it: the relay on descriptor 2 wraps them
    flags = backfill_flags(collector.base_url, tmp_path, SAMPLE,
                           extra=("--log-format=json", "--max-errors=3",
                                  "--direct_running_mode=multi_processing",
                                  "--direct_num_workers=2"))  # fmt: skip
    done = run_cli(*flags)
    assert done.returncode == 0, done.stderr
    lines = json_lines(done.stderr)
    for line in lines:
        if line["event"] == "output":  # Beam's own: their level and logger kept
            assert "logger" in line or line["level"] == "warning", line
    assert [line["event"] for line in lines].count("summary") == 1
    assert json.loads(done.stdout)["messages_delivered"] == 596
    for secret in SECRETS:
        assert secret not in done.stderr + done.stdout


def test_json_mode_warnings_and_usage_errors_are_json_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sandbox = run_cli(f"--input={SAMPLE}", "--sandbox", "--max-errors=5", "--log-format", "json",
                      f"--report={out / 'report.json'}", f"--dead-letter={out / 'dead.jsonl'}")  # fmt: skip
    assert sandbox.returncode == 0, sandbox.stderr
    lines = json_lines(sandbox.stderr)
    (warning,) = [line for line in lines if line["level"] == "warning"]
    assert warning["message"].startswith("SANDBOX MODE")
    assert json.loads(sandbox.stdout.splitlines()[-1])["exit_status"] == 0
    usage = run_cli("--log-format=json", f"--input={SAMPLE}", "--sandbox", "--dry-run=x.jsonl")
    assert usage.returncode == 2 and usage.stdout == ""
    (error,) = json_lines(usage.stderr)
    assert (error["event"], error["level"], error["exit_status"]) == ("error", "error", 2)
    assert "--sandbox and --dry-run contradict each other" in error["message"]
    missing = run_cli("--log-format=json", "--input=/nonexistent/*.jsonl", "--sandbox")
    assert missing.returncode == 2 and "no file matches" in json_lines(missing.stderr)[0]["message"]
    bad = run_cli("--log-format=xml", f"--input={SAMPLE}", "--sandbox")
    assert bad.returncode == 2
    assert bad.stderr == "beaconflow: error: --log-format must be text or json, got 'xml'\n"


def test_json_mode_subcommands_errors(tmp_path: Path) -> None:
    ledger = run_cli("--log-format=json", "ledger", "verify", str(tmp_path / "none"))
    assert ledger.returncode == 2
    (error,) = json_lines(ledger.stderr)
    assert error["message"] == f"error: no ledger directory at {tmp_path / 'none'}"
    usage = run_cli("ledger", "--log-format=json")  # argparse's own error: a JSON line too
    assert usage.returncode == 2
    (error,) = json_lines(usage.stderr)
    assert "the following arguments are required" in error["message"]
    mapping = run_cli("mapping", "explain", "--mapping=/nope.toml", f"--input={SAMPLE}",
                      "--log-format", "json")  # fmt: skip
    assert mapping.returncode == 2 and "/nope.toml" in json_lines(mapping.stderr)[0]["message"]


def test_text_mode_without_a_terminal_plain_progress_lines_and_the_dead_letter_named(
    tmp_path: Path,
) -> None:
    done = run_cli(f"--input={SAMPLE}", "--sandbox", "--max-errors=5", "--progress-interval=0.001",
                   f"--report={tmp_path / 'report.json'}", f"--dead-letter={tmp_path / 'dead.jsonl'}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stderr  # no terminal: no display codes
    progress = [line for line in done.stderr.splitlines() if line.startswith("beaconflow: sent ")]
    assert progress and all(" built so far (" in line for line in progress)
    stdout = done.stdout.splitlines()
    assert stdout[-1] == f"dead letter: 3 entries in {tmp_path / 'dead.jsonl'}"  # exit 0 too
    assert not any(line.startswith("{") for line in stdout)
    assert "already delivered" in done.stdout and "skipped" not in done.stdout


def _read_all(fd: int, process: subprocess.Popen[str]) -> bytes:
    """Everything written to the pseudo-terminal until the process has ended."""
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    return b"".join(chunks)


def run_on_a_terminal(
    tmp_path: Path, *extra: str, flags: list[str] | None = None
) -> tuple[int, str, str]:
    """A run of the sample with stderr on a real pseudo-terminal: status, screen, stdout.

    ``flags``: the run's flags (default: a sandbox run of the sample, its outputs in
    ``tmp_path``), then ``extra``.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "beaconflow",
         *(flags if flags is not None else [
             f"--input={SAMPLE}", "--sandbox", "--max-errors=5", "--progress-interval=0.001",
             f"--report={tmp_path / 'report.json'}", f"--dead-letter={tmp_path / 'dead.jsonl'}"]),
         *extra],
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    os.close(slave)
    try:
        screen = _read_all(master, process).decode("utf-8", "replace")
        stdout, _ = process.communicate(timeout=300)
    finally:
        os.close(master)
    return process.returncode, screen, stdout


def test_on_a_terminal_progress_is_a_live_display(tmp_path: Path) -> None:
    status, screen, stdout = run_on_a_terminal(tmp_path)
    assert status == 0, screen
    assert "\x1b[?25l" in screen, "the live display hides the cursor while it draws"
    assert "━" in screen and "% " in screen and " sent, " in screen  # its bar, percent, numbers
    assert "beaconflow: sent " not in screen  # no plain progress lines
    assert "beaconflow: SANDBOX MODE" in screen  # the other lines printed as they are
    assert stdout.splitlines()[-1] == f"dead letter: 3 entries in {tmp_path / 'dead.jsonl'}"


def test_on_a_terminal_other_processes_lines_are_printed_above_the_display(
    tmp_path: Path,
) -> None:
    # a server closing every connection after one answer makes each sender process warn
    # (docs/networks.md): through the relay, the display prints those lines above itself
    # (after erasing its own line), never through it
    with Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
        faults=Faults(close_every=1),
    ) as closing:
        flags = backfill_flags(closing.base_url, tmp_path, SAMPLE,
                               extra=("--max-errors=5", "--progress-interval=0.001",
                                      "--send-processes=2", "--concurrency=2"))  # fmt: skip
        status, screen, _ = run_on_a_terminal(tmp_path, flags=flags)
    assert status == 0, screen
    assert "\x1b[?25l" in screen  # the live display ran
    said = "closes connections after each answer without saying so"
    at = [i for i in range(len(screen)) if screen.startswith(said, i)]
    assert at, screen  # from the sender processes
    for i in at:
        line_start = screen.rfind("\n", 0, i) + 1
        before = screen[line_start:i]
        # printed by the display: its line erased first, then the whole line of the child
        children = ("beaconflow: kissmetrics: its server ", "beaconflow: kontagent: its server ")
        assert "\x1b[2K" in before and before.endswith(children), repr(screen[line_start - 60 : i])


def test_on_a_terminal_the_json_format_stays_plain_json_lines(tmp_path: Path) -> None:
    status, screen, stdout = run_on_a_terminal(tmp_path, "--log-format=json")
    assert status == 0, screen
    assert "\x1b[" not in screen
    lines = json_lines(screen.replace("\r\n", "\n"))  # the terminal's line ends
    assert any(line["event"] == "progress" for line in lines)
    assert json.loads(stdout)["dead_letter_entries"] == 3


def test_version_and_help() -> None:
    shown = run_cli("--version")
    assert (shown.returncode, shown.stdout) == (0, f"beaconflow {version('beaconflow')}\n")
    helped = run_cli("--help")
    assert helped.returncode == 0
    for word in ("exit status:", "  75 ", "130", "BEACONFLOW_DEBUG", "KONTAGENT_API_KEY_FILE",
                 "KONTAGENT_SECRET_FILE", "KISSMETRICS_API_KEY_FILE", "CREDENTIALS_DIRECTORY",
                 ".jsonl", ".ndjson", ".ndjson.gz", ".json.gz", ".parquet", "--log-format"):  # fmt: skip
        assert word in helped.stdout, word


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--dry-run=dry.jsonl",), "--sandbox and --dry-run contradict each other"),
        (("--kontagent-url=http://127.0.0.1:9",), "--sandbox and --kontagent-url contradict"),
        (("--kissmetrics-api-key", "k" * 20), "--sandbox and --kissmetrics-api-key contradict"),
    ],
)
def test_contradictory_flags_are_refused_with_a_reason(extra: tuple[str, ...], named: str) -> None:
    done = run_cli(f"--input={SAMPLE}", "--sandbox", *extra)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"beaconflow: error: {named}") and done.stderr.count("\n") == 1
    assert "k" * 20 not in done.stderr
