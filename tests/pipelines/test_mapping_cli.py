"""``beaconflow mapping show|explain`` (``beaconflow.pipelines.mapping_cli``).

In this process through ``mapping_cli.main`` (its output captured), and once each as a
user runs it, through ``beaconflow mapping ...`` in a process of its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from beaconflow.model.builtin import BUILTINS, builtin_text
from beaconflow.pipelines import mapping_cli
from tests.conftest import run_cli

T0 = 1_750_000_000

MAPPING = """
[fields]
user_id = ["userId", "anonymousId"]
time = "ts"
event = "event"
city = { path = "loc.city", optional = true }

[properties]
from = ["properties"]

[[when]]
field = "type"
is = "identify"
[when.fields]
event = false
[when.constants]
event = "user_information"
"""

RECORDS = [
    {"type": "track", "ts": T0, "anonymousId": "anon-1", "event": "level_up",
     "properties": {"plan": "pro", "cart": {"n": 2}}},
    {"type": "identify", "ts": T0 + 1, "userId": 42, "properties": {"age": 30, "tags": ["a"]}},
    {"type": "track", "ts": T0 + 2, "userId": 43, "event": "never explained: past --limit"},
]  # fmt: skip


def _files(tmp_path: Path, records: Sequence[object] = RECORDS) -> tuple[Path, Path]:
    mapping = tmp_path / "m.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    source = tmp_path / "in.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return mapping, source


@pytest.mark.parametrize("name", BUILTINS)
def test_show_prints_the_packaged_toml(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert mapping_cli.main(["show", name]) == 0
    out, err = capsys.readouterr()
    assert out == builtin_text(name)
    assert err == ""


def test_show_an_unknown_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        mapping_cli.main(["show", "nosuch"])
    assert exit_.value.code == 2
    assert "invalid choice: 'nosuch' (choose from 'segment', 'mixpanel', 'amplitude', 'ga4')" in (
        capsys.readouterr().err
    )


def test_explain_prints_cases_records_urls_problems_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping, source = _files(tmp_path)
    status = mapping_cli.main(
        ["explain", "--mapping", str(mapping), "--input", str(source), "--limit", "2"]
    )
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"{source}:1:",
        '  canonical: {"event": "level_up", "properties": {"plan": "pro"}, "time": 1750000000, '
        '"type": "track", "user_id": "anon-1"}',
        "  time: 2025-06-15T15:06:40Z (1750000000)",
        "  kissmetrics/e: https://trk.kissmetrics.io/e?_k=***&_d=1&_n=level_up&_p=anon-1"
        "&_t=1750000000&plan=pro",
        "  kontagent: not built: evt: parameter 's' (user_id, read from userId or anonymousId): "
        "must be a numeric user id, got 'anon-1'",
        f"{source}:2:",
        "  rules: [[when]] type is identify",
        '  canonical: {"event": "user_information", "properties": {"age": 30}, '
        '"time": 1750000001, "type": "identify", "user_id": 42}',
        "  time: 2025-06-15T15:06:41Z (1750000001)",
        "  kissmetrics/s: https://trk.kissmetrics.io/s?_k=***&_d=1&_p=42&_t=1750000001&age=30",
        "",
        "rules: records with a value, of the 2 explained",
        "       2  user_id = userId or anonymousId",
        "           1  with a value at userId",
        "           1  with a value at anonymousId",
        "       2  time = ts",
        "       1  event = event",
        "       0  city = loc.city (optional)",
        "       2  properties from properties",
        "properties left out (objects, lists, nulls):",
        "       1  cart",
        "       1  tags",
    ]
    assert "dry-run" not in out


def test_explain_says_what_is_not_an_event_and_what_goes_nowhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping, source = _files(
        tmp_path,
        [
            "{not json",
            {"type": "track", "ts": T0, "event": "level_up"},
            [1, 2],
        ],
    )
    mapping.write_text(
        MAPPING + '[destinations.kontagent]\nexclude = ["apa"]\n'
        '[destinations.kissmetrics]\nexclude = ["apa"]\n',
        encoding="utf-8",
    )
    with source.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"ts": T0, "userId": 1, "event": "apa"}) + "\n")
    assert mapping_cli.main(["explain", "--mapping", str(mapping), "--input", str(source)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:9] == [
        f"{source}:1:",
        "  invalid: malformed JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        f"{source}:2:",
        "  invalid: field 'user_id': is required (read from userId or anonymousId)",
        f"{source}:3:",
        "  invalid: a record must be a JSON object, got list",
        f"{source}:4:",
        '  canonical: {"event": "apa", "time": 1750000000, "user_id": 1}',
        "  time: 2025-06-15T15:06:40Z (1750000000)",
    ]
    assert lines[9] == "  no destination takes this event (counted as unrouted)"
    assert lines[11] == "rules: records with a value, of the 4 explained"
    assert "properties left out (objects, lists, nulls):" not in lines


def test_explain_a_builtin_with_a_source_timezone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "mixpanel.jsonl"
    # a legacy project's wall clock: 2024-07-04 12:00 in Los Angeles is 19:00Z
    record = {"event": "Signed Up", "properties": {"time": 1_720_094_400, "distinct_id": "7"}}
    source.write_text(json.dumps(record) + "\n", encoding="utf-8")
    argv = ["explain", "--mapping", "mixpanel", "--input", str(source)]
    assert mapping_cli.main([*argv, "--source-timezone", "America/Los_Angeles"]) == 0
    out = capsys.readouterr().out
    assert '"time": "2024-07-04T12:00:00-07:00"' in out
    assert "_t=1720119600" in out
    assert mapping_cli.main(argv) == 0
    assert "_t=1720094400" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--mapping", "{mapping}", "--input", "{dir}/missing.jsonl"],
            "beaconflow: error: --input {dir}/missing.jsonl: no file matches",
        ),
        (
            ["--mapping", "nosuch", "--input", "{source}"],
            "beaconflow: error: --mapping 'nosuch' is not a built-in mapping; built-ins: "
            "segment, mixpanel, amplitude, ga4 (a mapping file's name has a / or ends in "
            ".toml: ./nosuch.toml)",
        ),
        (
            ["--mapping", "{dir}/missing.toml", "--input", "{source}"],
            "beaconflow: error: --mapping {dir}/missing.toml: cannot be read: "
            "No such file or directory",
        ),
        (
            ["--mapping", "{mapping}", "--input", "{source}", "--source-timezone", "Mars/Olympus"],
            "beaconflow: error: --source-timezone: zone 'Mars/Olympus' is neither an IANA time "
            "zone name nor an offset like +02:00",
        ),
    ],
)
def test_explain_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    mapping, source = _files(tmp_path)
    given = [a.format(mapping=mapping, source=source, dir=tmp_path) for a in argv]
    assert mapping_cli.main(["explain", *given]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == error.format(dir=tmp_path) + "\n"


def test_explain_needs_a_limit_of_one_or_more(tmp_path: Path) -> None:
    mapping, source = _files(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        mapping_cli.main(
            ["explain", "--mapping", str(mapping), "--input", str(source), "--limit", "0"]
        )
    assert exit_.value.code == 2


# as a user runs it --------------------------------------------------------------------------


def test_the_command_shows_a_builtin() -> None:
    done = run_cli("mapping", "show", "segment")
    assert done.returncode == 0, done.stderr
    assert done.stdout == builtin_text("segment")


def test_the_command_explains_a_file(tmp_path: Path) -> None:
    mapping, source = _files(tmp_path)
    done = run_cli(
        "mapping", "explain", "--mapping", str(mapping), "--input", str(source), "--limit", "2"
    )
    assert done.returncode == 0, done.stderr
    assert "  rules: [[when]] type is identify" in done.stdout.splitlines()
    assert "       0  city = loc.city (optional)" in done.stdout.splitlines()


def test_the_command_with_a_missing_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    mapping, _ = _files(tmp_path)
    missing = tmp_path / "missing.jsonl"
    done = run_cli("mapping", "explain", "--mapping", str(mapping), "--input", str(missing))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"beaconflow: error: --input {missing}: no file matches\n"
    assert "Traceback" not in done.stderr
