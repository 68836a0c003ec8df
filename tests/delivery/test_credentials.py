"""Secrets from files (beaconflow.delivery.credentials): the order, the files, the errors.

The run's own use of them (every output redacted) is in tests/e2e/test_secrets.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from beaconflow.delivery.credentials import (
    KISSMETRICS_API_KEY,
    KONTAGENT_API_KEY,
    KONTAGENT_SECRET,
    MAX_BYTES,
    CredentialError,
    known_values,
    read_secret_file,
    resolve,
)
from beaconflow.pipelines.cli import _secrets_in
from beaconflow.pipelines.options import UsageError, configure

VALUE = "Km-file-key_5c1e é"


def _file(tmp_path: Path, content: str | bytes, name: str = "key") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "value"),
    [
        (VALUE, VALUE),
        (VALUE + "\n", VALUE),
        (VALUE + "\r\n", VALUE),
        (" " + VALUE + " \n", " " + VALUE + " "),  # only the newline is the file's
    ],
)
def test_a_file_gives_its_content_without_one_trailing_newline(
    tmp_path: Path, content: str, value: str
) -> None:
    path = _file(tmp_path, content)
    assert resolve(KISSMETRICS_API_KEY, None, {"KISSMETRICS_API_KEY_FILE": str(path)}) == value


def test_the_order_is_flag_variable_file_credentials_directory(tmp_path: Path) -> None:
    folder = tmp_path / "creds"
    folder.mkdir()
    _file(folder, "from-directory\n", "kontagent_api_key")
    path = _file(tmp_path, "from-file\n")
    everything = {
        "KONTAGENT_API_KEY_FILE": str(path),
        "CREDENTIALS_DIRECTORY": str(folder),
    }
    assert resolve(KONTAGENT_API_KEY, "from-flag", everything) == "from-flag"
    assert resolve(KONTAGENT_API_KEY, None, everything) == "from-file"
    assert resolve(KONTAGENT_API_KEY, None, {"CREDENTIALS_DIRECTORY": str(folder)}) == (
        "from-directory"
    )
    variable = {"KONTAGENT_API_KEY": "from-variable", "CREDENTIALS_DIRECTORY": str(folder)}
    assert resolve(KONTAGENT_API_KEY, None, variable) == "from-variable"
    # a flag wins even over a variable and its file both set
    both = {"KONTAGENT_API_KEY": "from-variable", "KONTAGENT_API_KEY_FILE": str(path)}
    assert resolve(KONTAGENT_API_KEY, "from-flag", both) == "from-flag"
    # an empty variable is not set
    empty = {"KONTAGENT_API_KEY": "", "KONTAGENT_API_KEY_FILE": str(path)}
    assert resolve(KONTAGENT_API_KEY, None, empty) == "from-file"


def test_nothing_anywhere_is_none_and_a_credential_not_loaded_is_absent(tmp_path: Path) -> None:
    assert resolve(KONTAGENT_SECRET, None, {}) is None
    # the service loaded only the KISSmetrics key: the others are not there, not an error
    _file(tmp_path, "km\n", "kissmetrics_api_key")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert resolve(KONTAGENT_SECRET, None, environ) is None
    assert resolve(KISSMETRICS_API_KEY, None, environ) == "km"


def test_a_variable_and_its_file_both_set_are_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, VALUE)
    environ = {"KONTAGENT_SECRET": "other-secret-value", "KONTAGENT_SECRET_FILE": str(path)}
    with pytest.raises(CredentialError) as caught:
        resolve(KONTAGENT_SECRET, None, environ)
    assert str(caught.value) == (
        "KONTAGENT_SECRET and KONTAGENT_SECRET_FILE are both set: unset one of them"
    )


def _unreadable(tmp_path: Path) -> tuple[Path, str]:
    if os.geteuid() == 0:  # root reads a mode-000 file: a folder is unreadable as a file
        path = tmp_path / "a-folder"
        path.mkdir()
        return path, "cannot be read: Is a directory"
    path = _file(tmp_path, VALUE)
    path.chmod(0)
    return path, "cannot be read: Permission denied"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot be read: No such file or directory"),
        ("unreadable", ""),
        ("", "is empty"),
        ("\n", "is empty"),
        ("  \n", "is empty"),
        (VALUE + "\n" + VALUE + "\n", "holds more than one line (one value expected)"),
        (VALUE.encode("latin-1") + b"\n", "is not UTF-8 text"),
        (b"x" * (MAX_BYTES + 1), f"longer than {MAX_BYTES} bytes: not a key"),
    ],
)
def test_an_unusable_file_names_the_variable_and_the_path_never_the_content(
    tmp_path: Path, content: str | bytes | None, reason: str
) -> None:
    if content is None:
        path = tmp_path / "missing"
    elif content == "unreadable":
        path, reason = _unreadable(tmp_path)
    else:
        path = _file(tmp_path, content)
    with pytest.raises(CredentialError) as caught:
        resolve(KONTAGENT_API_KEY, None, {"KONTAGENT_API_KEY_FILE": str(path)})
    assert str(caught.value) == f"KONTAGENT_API_KEY_FILE: {path}: {reason}"
    assert "Km-file-key" not in str(caught.value)


def test_an_unusable_file_in_the_credentials_directory_names_it(tmp_path: Path) -> None:
    _file(tmp_path, "\n", "kontagent_secret")
    with pytest.raises(CredentialError) as caught:
        resolve(KONTAGENT_SECRET, None, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert str(caught.value) == (
        f"CREDENTIALS_DIRECTORY/kontagent_secret: {tmp_path / 'kontagent_secret'}: is empty"
    )


def test_read_secret_file_reads_a_fifo_as_a_file(tmp_path: Path) -> None:
    """Process substitution (``KEY_FILE=<(pass show km)``) gives a pipe, read once."""
    read, write = os.pipe()
    os.write(write, b"piped-value\n")
    os.close(write)
    try:
        assert read_secret_file("X_FILE", f"/dev/fd/{read}") == "piped-value"
    finally:
        os.close(read)


def test_configure_uses_the_files_and_a_bad_one_is_a_usage_error(tmp_path: Path) -> None:
    key, secret, km = (
        _file(tmp_path, "kt-file-key\n", "a"),
        _file(tmp_path, "kt-file-secret\n", "b"),
        _file(tmp_path, "km-file-key\n", "c"),
    )
    environ = {
        "KONTAGENT_API_KEY_FILE": str(key),
        "KONTAGENT_SECRET_FILE": str(secret),
        "KISSMETRICS_API_KEY_FILE": str(km),
    }
    config = configure(["--input=x.jsonl"], environ=environ)
    assert config.endpoints["kontagent"].api_key == "kt-file-key"
    assert config.endpoints["kontagent"].secret == "kt-file-secret"
    assert config.endpoints["kissmetrics"].api_key == "km-file-key"
    assert set(config.secrets()) == {"kt-file-key", "kt-file-secret", "km-file-key"}
    # --sandbox uses its demo keys and reads nothing
    broken = {"KONTAGENT_API_KEY_FILE": str(tmp_path / "missing")}
    sandbox = configure(["--sandbox", "--input=x.jsonl"], environ=broken)
    assert "kt-file-key" not in sandbox.secrets()
    with pytest.raises(UsageError, match=r"^KONTAGENT_API_KEY_FILE: .*/missing: cannot be read"):
        configure(["--input=x.jsonl"], environ=broken)


def test_the_commands_error_line_knows_the_values_of_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected failure's one line is redacted with the values read from files too."""
    folder = tmp_path / "creds"
    folder.mkdir()
    _file(folder, "directory-secret\n", "kontagent_secret")
    path = _file(tmp_path, "file-key-value\n")
    for name in ("KONTAGENT_API_KEY", "KONTAGENT_SECRET", "KISSMETRICS_API_KEY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name + "_FILE", raising=False)
    monkeypatch.setenv("KISSMETRICS_API_KEY_FILE", str(path))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    assert sorted(_secrets_in(["--kontagent-api-key", "flag-key"])) == [
        "directory-secret",
        "file-key-value",
        "flag-key",
    ]
    # a file that cannot be read gives nothing here (the run said so already)
    monkeypatch.setenv("KISSMETRICS_API_KEY_FILE", str(tmp_path / "missing"))
    assert known_values(os.environ) == ["directory-secret"]
