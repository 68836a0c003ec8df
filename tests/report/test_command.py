"""The command line a report shows: ``beaconflow.report.command.redacted_command``."""

from __future__ import annotations

import pytest

from beaconflow.report.command import is_secret_flag, redacted_command

KEY = "k3y-0f-the-kontagent-app"
SECRET = "s3cret-of-the-kontagent-app"


def test_secret_flags_lose_their_values_by_name_in_both_forms() -> None:
    shown = redacted_command(
        [
            "--input", "logs/*.jsonl",
            "--kontagent-api-key", "abc",  # short: the redactor alone would not find it
            f"--kontagent-secret={SECRET}",
            "--kissmetrics-api-key=xyz",
            "--s3_secret_access_key", "AWSSECRET",
            "--s3_session_token=TOKEN",
            "--max-rps", "500",
        ],
        [KEY, SECRET],
    )  # fmt: skip
    assert shown == (
        "beaconflow",
        "--input", "logs/*.jsonl",
        "--kontagent-api-key", "***",
        "--kontagent-secret=***",
        "--kissmetrics-api-key=***",
        "--s3_secret_access_key", "***",
        "--s3_session_token=***",
        "--max-rps", "500",
    )  # fmt: skip


def test_secrets_elsewhere_and_credentials_in_urls_are_masked() -> None:
    shown = redacted_command(
        [
            f"--dry-run=out/{KEY}.jsonl",
            "--pushgateway", "https://bob:hunter2@push.example:9091/x",
            "--input", "s3://AKIA:wJalr@bucket/logs/*.jsonl",
            "--kontagent-url=http://api.example/api/v1/0123456789abcdef/",
        ],
        [KEY],
    )  # fmt: skip
    text = " ".join(shown)
    for secret in (KEY, "hunter2", "bob", "wJalr", "0123456789abcdef"):
        assert secret not in text
    assert "https://***@push.example:9091/x" in shown
    assert "s3://***@bucket/logs/*.jsonl" in shown
    assert "--dry-run=out/***.jsonl" in shown


def test_a_secret_flag_last_on_the_line_has_nothing_to_mask() -> None:
    assert redacted_command(["--kontagent-secret"]) == ("beaconflow", "--kontagent-secret")


@pytest.mark.parametrize(
    ("flag", "secret"),
    [
        ("--kontagent-api-key", True),
        ("--s3_access_key_id", True),
        ("--hdfs_password", True),
        ("--kontagent-max-age", False),
        ("--ledger-app", False),
        ("--input", False),
    ],
)
def test_which_flags_are_secret(flag: str, secret: bool) -> None:
    assert is_secret_flag(flag) is secret
