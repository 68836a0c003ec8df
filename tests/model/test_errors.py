"""One exception root: every error beaconflow raises on purpose is a BeaconflowError.

And every error about a file says the system's reason (:func:`os_reason`), provoked here with
real files, ``/dev/full`` and Beam's FileSystems, whose errors wrap the system's.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from beaconflow.client import HTTPStatusError, TrackingError, TransportError
from beaconflow.delivery.ledger import LedgerError
from beaconflow.delivery.ledger_check import LedgerUnreadable
from beaconflow.model import kontagent
from beaconflow.model.errors import BeaconflowError, io_problem, os_reason
from beaconflow.model.mapping import MappingError, parse_mapping
from beaconflow.model.message import MessageError
from beaconflow.model.records import RecordError
from beaconflow.pipelines.options import UsageError, configure
from beaconflow.transforms.read import InputError, expand_inputs


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (UsageError, ValueError),
        (InputError, ValueError),
        (RecordError, ValueError),
        (MessageError, ValueError),
        (MappingError, ValueError),
        (LedgerError, OSError),
        (LedgerUnreadable, OSError),
        (TrackingError, Exception),
        (TransportError, Exception),
        (HTTPStatusError, Exception),
    ],
)
def test_every_error_is_a_beaconflow_error_and_what_it_was(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, BeaconflowError) and issubclass(error, builtin)


def test_one_except_clause_catches_what_each_layer_raises(tmp_path: object) -> None:
    raised = []
    for action in (
        lambda: configure(["--input"]),
        lambda: expand_inputs([f"{tmp_path}/nothing-*.jsonl"]),
        lambda: kontagent.build("evt", {"s": "not a uid", "n": "x"}),
        lambda: parse_mapping("[tables]\nx = 1\n", "m.toml"),
    ):
        try:
            action()
        except BeaconflowError as error:
            raised.append(type(error).__name__)
    assert raised == ["UsageError", "InputError", "MessageError", "MappingError"]


def _raised(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except BaseException as error:
        return error
    raise AssertionError("it did not fail")


def _write_to_a_full_disk(tmp_path: Path) -> object:
    with open("/dev/full", "wb", buffering=0) as full:
        return full.write(b"x")


def _beam_rename_of_nothing(tmp_path: Path) -> object:
    from apache_beam.io.filesystems import FileSystems

    # BeamIOError({(src, dst): IOError(FileNotFoundError(...))}): the reason two levels down
    return FileSystems.rename([str(tmp_path / "gone")], [str(tmp_path / "there")])


def _beam_create_under_a_file(tmp_path: Path) -> object:
    from apache_beam.io.filesystems import FileSystems

    (tmp_path / "file").write_text("x")
    return FileSystems.create(str(tmp_path / "file" / "dead.jsonl"))


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (lambda tmp: open(tmp / "missing" / "x", "rb"), "No such file or directory"),  # noqa: SIM115
        (lambda tmp: open(tmp, "rb"), "Is a directory"),  # noqa: SIM115
        (_write_to_a_full_disk, "No space left on device"),
        (_beam_rename_of_nothing, "No such file or directory"),
        # os.makedirs's words for a file in the folder's place (make_directories says better)
        (_beam_create_under_a_file, "File exists"),
        (lambda tmp: os.rmdir(tmp / "nothing"), "No such file or directory"),
    ],
    ids=["ENOENT", "EISDIR", "ENOSPC", "beam-rename", "beam-create-under-a-file", "rmdir"],
)
def test_os_reason_is_the_systems_words_even_through_beams_wrappers(
    tmp_path: Path, action: Callable[[Path], object], reason: str
) -> None:
    error = _raised(lambda: action(tmp_path))
    assert os_reason(error) == reason
    assert io_problem("dead letter", "/out/d.jsonl", error) == (
        f"dead letter not writable: /out/d.jsonl: {reason}"
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            ValueError("the run's counts could not be written"),
            "the run's counts could not be written",
        ),
        (OSError(), "OSError"),
        (RuntimeError("first line\nsecond line"), "first line"),
    ],
)
def test_os_reason_of_an_error_that_is_not_the_systems_is_its_own_first_line(
    error: BaseException, reason: str
) -> None:
    assert os_reason(error) == reason


def test_io_problem_says_what_went_wrong() -> None:
    error = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/l/shard")
    assert io_problem("ledger file", "/l/shard", error, "not readable") == (
        "ledger file not readable: /l/shard: No such file or directory"
    )
