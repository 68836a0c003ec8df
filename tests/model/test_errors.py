"""One exception root: every error beaconflow raises on purpose is a BeaconflowError."""

from __future__ import annotations

import pytest

from beaconflow.client import HTTPStatusError, TrackingError, TransportError
from beaconflow.delivery.ledger import LedgerError
from beaconflow.model import kontagent
from beaconflow.model.errors import BeaconflowError
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
