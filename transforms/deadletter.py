"""The dead letter: one JSON object per record or message that could not go on, and why.

Every entry has the ``stage`` it stopped at (``read``, ``parse``, ``map``, ``send``), the
``reason``, where it came from (``source``: file and line or row), and either the original
``record`` (so that, once its cause is fixed, the dead-letter file can be given back as
--input) or the ``message`` it became, with status, error and attempts for send failures.
Messages never carry credentials; each line still passes through the run's redactor.
"""

from __future__ import annotations

import json
from typing import Any

from transforms.message import Message
from transforms.read import RawRecord


def message_view(message: Message) -> dict[str, Any]:
    """A message as the dead letter and the dry-run file show it (no credentials)."""
    return {
        "destination": message.destination,
        "kind": message.kind,
        "params": dict(message.params),
        "key": message.key,
    }


def record_entry(stage: str, reason: str, raw: RawRecord, record: object = None) -> dict[str, Any]:
    """A dead-letter entry for an input record that is invalid at ``stage``."""
    entry: dict[str, Any] = {"stage": stage, "reason": reason, "source": raw.location()}
    if record is not None:
        entry["record"] = record
    elif raw.row is not None:
        entry["record"] = raw.row
    elif raw.text is not None:
        entry["line"] = raw.text.rstrip("\r\n")
    return entry


def to_json(entry: dict[str, Any]) -> str:
    """One dead-letter line: JSON that never fails (odd values are written as text)."""
    return json.dumps(entry, ensure_ascii=False, sort_keys=True, default=str)
