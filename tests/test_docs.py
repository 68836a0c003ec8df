"""The docs keep up with the code: every flag, report key, exit status and variable is documented.

Reference material lives in docs/ (docs/cli.md: flags, environment, exit statuses;
docs/outputs.md: report.json), and the README stays short with its two commands on top.
These checks read the code's own lists (the argparse parser ``beaconflow --help`` prints, the
report's fields and a real run's report.json, the statuses ``--help`` lists, the variables
the code reads), so a flag or a key added without its line in the docs fails here.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from beaconflow.pipelines import cli
from beaconflow.pipelines.options import EXIT_STATUSES, parser
from beaconflow.report.run import RunReport
from tests.conftest import run_json

ROOT = Path(__file__).resolve().parents[1]
CLI_MD = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
OUTPUTS_MD = (ROOT / "docs" / "outputs.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
NOW = 1_800_000_000


def _long_flags() -> list[str]:
    return sorted(
        option
        for action in parser()._actions
        for option in action.option_strings
        if option.startswith("--")
    )


def test_every_flag_of_beaconflow_help_is_in_docs_cli_md() -> None:
    flags = _long_flags()
    assert "--input" in flags and "--dry-run" in flags
    missing = [flag for flag in flags if f"`{flag}" not in CLI_MD]
    assert missing == [], f"flags of `beaconflow --help` not in docs/cli.md: {missing}"


def _exit_statuses() -> set[int]:
    """The statuses --help lists and those the command's docstring names."""
    listed = {int(n) for n in re.findall(r"^\s{2}(\d+)\s", EXIT_STATUSES, re.MULTILINE)}
    listed |= {int(n) for n in re.findall(r"\b(\d{3}) by SIGTERM", EXIT_STATUSES)}
    doc = cli.__doc__ or ""
    for first, second in re.findall(r"^- (\d+)(?:, (\d+))?\s", doc, re.MULTILINE):
        listed |= {int(first), *([int(second)] if second else [])}
    return listed


def _documented_statuses() -> set[int]:
    section = CLI_MD.split("## Exit codes", 1)[1]
    cells = re.findall(r"^\|\s*([\d, ]+?)\s*\|", section, re.MULTILINE)
    return {int(n) for cell in cells for n in cell.split(",")}


def test_every_exit_status_is_in_docs_cli_md() -> None:
    statuses = _exit_statuses()
    assert {0, 2, 3, 4, 75, 130, 143} <= statuses
    missing = statuses - _documented_statuses()
    assert not missing, f"exit statuses not in docs/cli.md's table: {sorted(missing)}"


def _variables_read() -> set[str]:
    """The environment variables beaconflow's code reads by name."""
    names: set[str] = set()
    for path in [*(ROOT / "beaconflow").rglob("*.py"), *(ROOT / "pipelines").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"environ(?:\.get)?\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
        names |= set(re.findall(r"environ\[\"([A-Z][A-Z0-9_]+)\"\]", text))
        names |= set(re.findall(r"getenv\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    from beaconflow.delivery.credentials import CREDENTIALS_DIRECTORY, SECRETS

    names |= {CREDENTIALS_DIRECTORY}
    names |= {s.variable for s in SECRETS} | {s.file_variable for s in SECRETS}
    return names


def test_every_environment_variable_is_in_docs_cli_md() -> None:
    names = _variables_read()
    assert {"BEACONFLOW_DEBUG", "KONTAGENT_API_KEY_FILE"} <= names
    # variables of other programs that beaconflow passes on or reads for them
    names -= {"PATH", "HOME", "PYTHONPATH", "TMPDIR", "TERM", "NO_COLOR", "COLUMNS"}
    missing = sorted(name for name in names if name not in CLI_MD)
    assert missing == [], f"environment variables not in docs/cli.md: {missing}"


@pytest.fixture(scope="module")
def chunked_sandbox_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("report")
    status, report = run_json(
        [
            "--sandbox",
            f"--input={ROOT / 'sample_data'}/game_events*",
            "--max-errors=3",
            "--chunk=day",
            f"--report={out / 'report.json'}",
            f"--dead-letter={out / 'dead.jsonl'}",
        ],
        now=NOW,
    )
    assert status == 0, report
    return report


def _keys(report: dict[str, Any]) -> tuple[set[str], set[str]]:
    """report.json's own keys, and the keys of its records (per destination, per chunk...)."""
    top = set(report) | {f.name for f in fields(RunReport)}
    top -= {"report_written", "report_html_written"}  # not in report.json
    inner: set[str] = set()
    for breakdown in ("by_destination", "by_type"):
        for counts in report[breakdown].values():
            inner |= set(counts)
    for each in ("sandbox_collector", "chunking", "send_timeline"):
        inner |= set(report.get(each) or {})
    for row in (report.get("chunking") or {}).get("chunks", []):
        inner |= set(row)
    for row in report.get("dead_letter_reasons") or []:
        inner |= set(row)
    return top, inner - top


def test_every_report_key_is_in_docs_outputs_md(chunked_sandbox_report: dict[str, Any]) -> None:
    top, inner = _keys(chunked_sandbox_report)
    assert {"events_read", "by_destination", "chunking", "exit_status"} <= top
    assert {"built", "delivered", "first_day", "accepted"} <= inner
    missing = sorted(key for key in top if f"`{key}`" not in OUTPUTS_MD)
    assert missing == [], f"report.json keys not in docs/outputs.md: {missing}"
    missing = sorted(key for key in inner if not re.search(rf"\b{key}\b", OUTPUTS_MD))
    assert missing == [], f"report.json keys (in records) not in docs/outputs.md: {missing}"


def test_the_readme_starts_with_the_two_commands_and_stays_short() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.DOTALL)
    assert blocks[0].strip() == (
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/beaconflow "
        "--sandbox --input 'sample_data/game_events*' --max-errors 3"
    )
    assert blocks[1].strip() == (
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && "
        ".venv/bin/python -m pytest -q"
    )
    first_lines = README.splitlines()[:15]
    assert "```bash" in first_lines  # the first command is at the very top
    assert len(README.splitlines()) < 250
    # every docs/ page is linked from the README
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    unlinked = [page for page in pages if f"docs/{page}" not in README]
    assert unlinked == [], f"docs pages the README does not link: {unlinked}"
    for example in ("examples/airflow", "examples/systemd"):
        assert example in README


def test_every_link_to_a_file_of_the_repository_exists() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (page.parent / target).exists(), f"{page.name} links to {target}: missing"
