"""The dead letter: one JSON object per record or message that could not go on, and why.

Every entry has the ``stage`` it stopped at (``read``, ``parse``, ``map``, ``send``), the
``reason``, where it came from (``source``: file and line or row), and either the original
``record`` as read (the raw ``line`` when it was not JSON), or the ``message`` it became, with
status and attempts for send failures. A dead-letter file given back as --input replays:
records go through parsing and mapping again (what was invalid stays invalid, with the same
reason), messages are validated and sent again with the same identity.
Messages never carry credentials; each entry's values still pass through the run's
redactor before the entry is encoded (never the encoded line: a mask must not cut JSON).
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote

from beaconflow.delivery.redact import Redactor
from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.message import Message, MessageError
from beaconflow.model.source import RawRecord


def message_view(message: Message) -> dict[str, Any]:
    """A message as the dead letter and the dry-run file show it (no credentials)."""
    return {
        "destination": message.destination,
        "kind": message.kind,
        "params": dict(message.params),
        "occurrence": message.occurrence,
        "key": message.key,
    }


def is_entry(record: dict[str, Any]) -> bool:
    """Whether a record read from the input is a dead-letter entry (a replay)."""
    return (
        isinstance(record.get("stage"), str)
        and "reason" in record
        and isinstance(record.get("source", {}), dict)
        and any(name in record for name in ("record", "line", "message"))
    )


def replayed_message(view: dict[str, Any]) -> Message:
    """The message of a send-stage dead-letter entry, validated again by its builder."""
    destination, kind, params = view.get("destination"), view.get("kind"), view.get("params")
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise MessageError(str(kind), None, "the dead-letter message has no parameter object")
    occurrence = str(view.get("occurrence") or "")
    if destination == "kontagent" and isinstance(kind, str):
        return kontagent.build(kind, params, occurrence=occurrence)
    if destination == "kissmetrics" and kind in kissmetrics.KINDS:
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
        message, _ = kissmetrics.parse_url(f"/{kind}?_k=replay&{query}")
        return message
    raise MessageError(str(kind), None, f"unknown destination {destination!r} in the dead letter")


def record_entry(stage: str, reason: str, raw: RawRecord, record: object = None) -> dict[str, Any]:
    """A dead-letter entry for an input record that is invalid at ``stage``."""
    entry: dict[str, Any] = {"stage": stage, "reason": reason, "source": raw.location()}
    if record is not None and (_strict_json(record) or raw.text is None):
        entry["record"] = record
    elif raw.row is not None:
        entry["record"] = raw.row
    elif raw.text is not None:
        entry["line"] = raw.text.rstrip("\r\n")
    return entry


def _strict_json(value: object) -> bool:
    """Whether strict JSON can hold the value (no NaN or Infinity, which json.loads accepts)."""
    try:
        json.dumps(value, allow_nan=False, default=str)
    except ValueError:
        return False
    return True


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


#: The entry fields that hold data, which redaction must not rewrite by URL position.
_DATA_FIELDS = frozenset({"record", "line", "message"})


def to_json(entry: dict[str, Any], redact: Redactor | None = None) -> str:
    """One dead-letter line of strict JSON that never fails: odd values are written as text.

    ``redact`` masks secrets in the entry's values before it is encoded. A record holding
    NaN or Infinity is kept as its original ``line`` when there is one (so a replay fails
    for the same reason), else with those numbers written as text.
    """
    if redact is not None:
        # texts (the reason, a URL) by URL position too; data (the record, the raw line,
        # the message) by known secrets only, so that a replay sends it unchanged
        entry = {key: redact.value(value, data=key in _DATA_FIELDS) for key, value in entry.items()}
    try:
        return json.dumps(entry, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(entry), ensure_ascii=False, sort_keys=True, default=str)
