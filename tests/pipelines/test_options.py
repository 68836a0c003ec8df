"""The flags and their checks (``beaconflow.pipelines.options``): dates, paths, URLs, outputs.

--date, {date} in paths and --lookback, relative paths, destination URLs, colliding outputs,
the mapping file and --send-processes. Some checks are seen through the command (a usage
error is one line on stderr and exit 2).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from beaconflow.pipelines.options import UsageError, configure, expand_date, parse_day
from tests.conftest import run_cli


def test_a_stray_word_after_a_secret_is_not_echoed(tmp_path: Path) -> None:
    done = run_cli(
        "--input=x.jsonl",
        "--kissmetrics-api-key",
        "first-half",
        "second-half-of-key",
        "--dry-run=y",
    )
    assert done.returncode == 2
    assert "second-half-of-key" not in done.stderr and "first-half" not in done.stderr
    assert "after the value of --kissmetrics-api-key" in done.stderr


@pytest.mark.parametrize("url", ["notaurl", "ftp://host/x", "http://", "http:///path"])
def test_a_destination_url_that_is_no_http_url_is_a_usage_error(tmp_path: Path, url: str) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"time": 1750000000, "user_id": 1, "event": "apa"}\n')
    done = run_cli(f"--input={events}", "--kontagent-api-key=k" * 1, f"--kontagent-url={url}")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"beaconflow: error: --kontagent-url {url!r}: not an http:// or https:// URL with a host"
    )


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--report={d}/x.json", "--dead-letter={d}/x.json"), "would be one file"),
        (("--dry-run={d}/x.jsonl", "--dead-letter={d}/x.jsonl"), "would be one file"),
        (("--report={d}/r.json", "--dead-letter={d}/r.html"), "would be one file"),
        (("--report={d}",), "is a folder, not a file"),
    ],
)
def test_outputs_that_collide_or_are_folders_are_usage_errors(
    tmp_path: Path, flags: tuple[str, ...], says: str
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"time": 1750000000, "user_id": 1, "event": "apa"}\n')
    given = [f.format(d=tmp_path) for f in flags]
    done = run_cli(f"--input={events}", "--kissmetrics-api-key=k", *given)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1


def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("--input=x.jsonl", "--kissmetrics-api-key=k", "--kissmetrics-url=http://h:99999")
    assert done.returncode == 2 and "not an http:// or https:// URL" in done.stderr


# 2025-06-05T12:00:00Z: "yesterday" is 2025-06-04
NOW = int(datetime(2025, 6, 5, 12, tzinfo=UTC).timestamp())


def _midnight(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


def test_parse_day_names_and_iso() -> None:
    assert parse_day("2025-01-31", NOW) == date(2025, 1, 31)
    assert parse_day("yesterday", NOW) == date(2025, 6, 4)
    assert parse_day("today", NOW) == date(2025, 6, 5)
    # just after midnight UTC, yesterday is the day that just ended
    assert parse_day("yesterday", _midnight("2025-01-01") + 1) == date(2024, 12, 31)


@pytest.mark.parametrize("text", ["2025-13-01", "20250101", "last night", "2025-1-1", ""])
def test_parse_day_refuses_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(UsageError, match="expected YYYY-MM-DD, 'yesterday' or 'today'"):
        parse_day(text, NOW)


def test_expand_date_iso_and_strftime() -> None:
    day = date(2025, 3, 7)
    assert (
        expand_date("logs/dt={date}/*.jsonl.gz", day, "--input") == "logs/dt=2025-03-07/*.jsonl.gz"
    )
    assert expand_date("logs/{date:%Y/%m/%d}/*", day, "--input") == "logs/2025/03/07/*"
    assert expand_date("a/{date}/{date:%Y%m%d}", day, "--input") == "a/2025-03-07/20250307"
    assert expand_date("no placeholder", day, "--input") == "no placeholder"
    with pytest.raises(UsageError, match=r"--input 'x/\{date:YYYY\}': .*strftime"):
        expand_date("x/{date:YYYY}", day, "--input")


def test_date_sets_the_window_and_expands_inputs_and_outputs() -> None:
    config = configure(
        [
            "--dry-run=/o/{date}/dry.jsonl",
            "--input=/l/dt={date}/*.jsonl",
            "--input=gs://b/static/*.parquet",
            "--date=yesterday",
            "--report=/r/{date:%Y%m%d}.json",
            "--dead-letter=/d/{date}.jsonl",
        ],
        now=NOW,
    )
    assert config.day == date(2025, 6, 4)
    assert config.inputs == ("/l/dt=2025-06-04/*.jsonl", "gs://b/static/*.parquet")
    assert (config.since, config.until) == (_midnight("2025-06-04"), _midnight("2025-06-05"))
    assert config.report == "/r/20250604.json"
    assert config.dead_letter == "/d/2025-06-04.jsonl"
    assert config.dry_run == "/o/2025-06-04/dry.jsonl"


def test_relative_paths_become_absolute_for_workers_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = configure(
        [
            "--dry-run=d.jsonl",
            "--input=logs/*.jsonl",
            "--ledger=l",
            "--setup_file",
            "pyproject.toml",
            "--requirements_file=r.txt",
        ]
    )
    assert config.inputs == (f"{tmp_path}/logs/*.jsonl",)
    assert config.dry_run == f"{tmp_path}/d.jsonl" and config.ledger == f"{tmp_path}/l"
    assert config.report == f"{tmp_path}/beaconflow-output/report.json"
    assert config.beam_args == (
        "--setup_file",
        f"{tmp_path}/pyproject.toml",
        f"--requirements_file={tmp_path}/r.txt",
    )


def test_lookback_reads_the_days_before_and_widens_the_window() -> None:
    config = configure(
        [
            "--dry-run=d",
            "--input=/l/dt={date}/*",
            "--date=2025-06-04",
            "--lookback=2",
            "--ledger=ledger",
        ]
    )
    assert config.inputs == tuple(f"/l/dt=2025-06-0{d}/*" for d in (2, 3, 4))
    assert (config.since, config.until) == (_midnight("2025-06-02"), _midnight("2025-06-05"))


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--date=2025-06-04", "--since=2025-06-01"], "--date sets the time window itself"),
        (["--date=2025-06-04", "--until=2025-06-01"], "--date sets the time window itself"),
        (["--date=2025-06-04", "--lookback=1"], "--lookback .* needs --ledger"),
        (["--lookback=1", "--ledger=l"], "--lookback needs --date"),
        (["--date=2025-06-04", "--ledger=l/{date}"], "--ledger must be the same directory"),
        (["--input=logs/{date}/*"], r"--input 'x/\*.jsonl' has no \{date\} while another"),
        (["--report=r/{date}.json"], r"--report 'r/\{date\}.json' has \{date\} but no --date"),
        (["--date=2025-06-04", "--lookback=-1"], "must be a whole number 0 or more"),
    ],
)
def test_date_flag_misuse_is_a_usage_error(flags: list[str], error: str) -> None:
    with pytest.raises(UsageError, match=error):
        configure(["--dry-run=d", "--input=x/*.jsonl", *flags], now=NOW)


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ([], r"give --date for a nightly run, or --since and --until"),
        (["--since=2025-01-01"], r"give --date for a nightly run, or --since and --until"),
        (["--since=2025-01-01", "--until=2025-02-01", "--report=r/{date}.json"],
         r"--report 'r/\{date\}.json' has \{date\}, which only --date fills in"),
        (["--since=2025-01-01", "--until=2025-02-01", "--work-dir=gs://b/w"],
         "--work-dir gs://b/w: must be a local folder"),
    ],
)  # fmt: skip
def test_a_dated_backfill_needs_its_window(flags: list[str], error: str) -> None:
    with pytest.raises(UsageError, match=error):
        configure(["--dry-run=d", "--input=logs/dt={date}/*", *flags], now=NOW)


def test_a_dated_backfill_keeps_its_patterns_and_a_work_dir_beside_the_report() -> None:
    config = configure(
        ["--dry-run=d", "--input=/l/dt={date}/*", "--since=2025-01-01", "--until=2025-02-01",
         "--lookback=2", "--report=/out/report.json", "--chunk=week"],
        now=NOW,
    )  # fmt: skip
    assert config.inputs == () and config.dated_inputs == ("/l/dt={date}/*",)
    assert (config.lookback, config.chunk, config.work_dir) == (2, "week", "/out/report.work")


def test_the_flag_refuses_a_negative_count(tmp_path: Path) -> None:
    from beaconflow.pipelines.options import UsageError, configure

    with pytest.raises((SystemExit, UsageError)):
        configure(["--sandbox", "--input=x.jsonl", "--send-processes=-1"], now=0.0)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "--mapping .*missing.toml: cannot be read: No such file or directory"),
        (b"\xff\xfe[fields]", r"--mapping .*: not UTF-8 text \(byte 0\): a TOML file"),
    ],
)
def test_unreadable_mapping_is_a_usage_error(
    tmp_path: Path, content: bytes | None, error: str
) -> None:
    path = tmp_path / "missing.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError, match=error):
        configure(["--dry-run=d", "--input=x/*.jsonl", f"--mapping={path}"])


# --mapping NAME and --source-timezone -------------------------------------------------------

BUILTIN_LIST = "built-ins: segment, mixpanel, amplitude, ga4"


def test_a_builtin_mapping_by_name() -> None:
    from beaconflow.model.builtin import builtin_mapping

    config = configure(["--dry-run=d", "--input=x/*.jsonl", "--mapping=segment"])
    assert config.mapping == builtin_mapping("segment")


def test_an_unknown_builtin_name_lists_the_builtins() -> None:
    with pytest.raises(UsageError) as error:
        configure(["--dry-run=d", "--input=x/*.jsonl", "--mapping=nosuch"])
    assert str(error.value) == (
        f"--mapping 'nosuch' is not a built-in mapping; {BUILTIN_LIST} "
        "(a mapping file's name has a / or ends in .toml: ./nosuch.toml)"
    )


@pytest.mark.parametrize(
    ("zone", "offset"),
    [("America/Los_Angeles", -7 * 3600), ("-07:00", -7 * 3600), ("UTC", 0), ("+05:30", 19800)],
)
def test_the_source_timezone_is_the_mappings(zone: str, offset: int) -> None:
    config = configure(["--dry-run=d", "--input=x/*.jsonl", f"--source-timezone={zone}"])
    naive = config.mapping.apply({"time": "2024-07-04T12:00:00"})["time"]
    assert isinstance(naive, datetime)
    assert naive.utcoffset() == timedelta(seconds=offset)
    # a built-in's cases get it too
    segment = configure(
        ["--dry-run=d", "--input=x/*.jsonl", "--mapping=segment", f"--source-timezone={zone}"]
    ).mapping
    assert {case.mapping.source_zone for case in segment.cases} == {segment.source_zone}


def test_without_a_source_timezone_a_naive_time_is_left_for_validation_to_refuse() -> None:
    config = configure(["--dry-run=d", "--input=x/*.jsonl"])
    assert config.mapping.plain
    assert config.mapping.apply({"time": "2024-07-04T12:00:00"}) == {"time": "2024-07-04T12:00:00"}


@pytest.mark.parametrize(
    ("zone", "error"),
    [
        (
            "Mars/Olympus",
            "--source-timezone: zone 'Mars/Olympus' is neither an IANA time zone name nor an "
            "offset like +02:00",
        ),
        ("+25:00", "--source-timezone: zone '+25:00' is not an offset of less than 24 hours"),
    ],
)
def test_an_unknown_source_timezone_is_a_usage_error(zone: str, error: str) -> None:
    with pytest.raises(UsageError) as raised:
        configure(["--dry-run=d", "--input=x/*.jsonl", f"--source-timezone={zone}"])
    assert str(raised.value) == error


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--mapping=nosuch", f"--mapping 'nosuch' is not a built-in mapping; {BUILTIN_LIST}"),
        ("--source-timezone=Mars/Olympus", "--source-timezone: zone 'Mars/Olympus' is neither"),
    ],
)
def test_the_command_refuses_them_in_one_line_with_exit_2(
    tmp_path: Path, flag: str, says: str
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"time": 1750000000, "user_id": 1, "event": "apa"}\n')
    done = run_cli(f"--input={events}", f"--dry-run={tmp_path / 'd.jsonl'}", flag)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"beaconflow: error: {says}")
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://admin:PASSW0RDXYZ@host/", "--kontagent-url http://host/: a user name or password"),
        ("http://admin@host/", "--kontagent-url http://host/: a user name or password"),
        ("http://host/?a=1", "--kontagent-url 'http://host/?a=1': a base URL takes no ?query"),
        ("http://host/#x", "--kontagent-url 'http://host/#x': a base URL takes no ?query"),
    ],
)
def test_a_destination_url_with_credentials_or_a_query_is_a_usage_error(
    tmp_path: Path, url: str, says: str
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"time": 1750000000, "user_id": 1, "event": "apa"}\n')
    done = run_cli(f"--input={events}", f"--dry-run={tmp_path / 'd'}", f"--kontagent-url={url}")
    assert done.returncode == 2
    assert done.stderr.startswith(f"beaconflow: error: {says}")
    assert "PASSW0RDXYZ" not in done.stderr and not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("flags", "deadline", "window"),
    [
        ([], None, 60.0),
        (["--deadline=6h"], 21600.0, 60.0),
        (["--deadline", "45m", "--breaker-window", "90s"], 2700.0, 90.0),
        (["--deadline=1h30m", "--breaker-window=2.5"], 5400.0, 2.5),
        (["--deadline=90"], 90.0, 60.0),
        (["--breaker-window=0"], None, None),  # 0 turns the breaker off
    ],
)
def test_deadline_and_breaker_window_take_durations(
    flags: list[str], deadline: float | None, window: float | None
) -> None:
    config = configure(["--sandbox", "--input=x.jsonl", *flags], now=NOW)
    assert (config.deadline, config.breaker_window) == (deadline, window)


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--deadline=6 hours", "argument --deadline: must be a duration above 0 such as 90s"),
        ("--deadline=0", "argument --deadline: must be a duration above 0, got '0'"),
        ("--deadline=-5m", "argument --deadline: must be a duration above 0 such as 90s"),
        ("--breaker-window=soon", "argument --breaker-window: must be a duration 0 or more"),
    ],
)
def test_a_bad_duration_is_a_usage_error_naming_its_flag(
    tmp_path: Path, flag: str, says: str
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text('{"time": 1750000000, "user_id": 1, "event": "apa"}\n')
    done = run_cli(f"--input={events}", "--sandbox", f"--report={tmp_path / 'r.json'}", flag)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"beaconflow: error: {says}")
    assert len(done.stderr.strip().splitlines()) == 1


def test_help_lists_the_deadline_and_the_breaker() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--deadline DURATION stop sending DURATION after the run's start" in text
    assert "'not attempted: deadline'" in text and '"stopped": "deadline"' in text
    assert "--breaker-window DURATION declare a destination down" in text
    assert "'not attempted: destination down'" in text and "(default: 60s)" in text
    assert "the --deadline was reached, a destination is down" in text


@pytest.mark.parametrize(
    ("flags", "retry_ambiguous"), [([], True), (["--no-retry-ambiguous"], False)]
)
def test_no_retry_ambiguous_turns_off_retries_of_requests_that_went_out(
    flags: list[str], retry_ambiguous: bool
) -> None:
    config = configure(["--sandbox", "--input=x.jsonl", "--max-attempts=7", *flags], now=NOW)
    assert config.retry.retry_ambiguous is retry_ambiguous
    assert config.retry.max_attempts == 7, "the other retries are kept"


def test_help_explains_no_retry_ambiguous() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--no-retry-ambiguous do not try again a request that went out and got no answer" in text
    assert "messages_ambiguous" in text and "Connection errors (the request never left)" in text


def test_kontagent_max_age_needs_a_run_that_sends_kontagent() -> None:
    flags = ["--input=x/*.jsonl", "--kontagent-max-age=5"]
    with pytest.raises(UsageError, match="--kontagent-max-age limits the Kontagent messages"):
        configure([*flags, "--kissmetrics-api-key=k"], now=NOW)
    sending = configure([*flags, "--kontagent-api-key=k"], now=NOW)
    assert sending.kontagent_max_age == 5
    dry = configure([*flags, "--dry-run=d"], now=NOW)  # a dry run shows both destinations
    assert dry.kontagent_max_age == 5
