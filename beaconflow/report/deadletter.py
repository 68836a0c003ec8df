"""The dead letter: one JSON object per record or message that could not go on, and why.

Every entry has the ``stage`` it stopped at (``read``, ``parse``, ``map``, ``send``), the
``reason``, where it came from (``source``: file and line or row), and either the original
``record`` as read (the raw ``line`` when it was not JSON), or the ``message`` it became, with
status and attempts for send failures, and ``ambiguous_attempts`` when some of its requests
went out and got no answer (the service may have received it: a replay may count it again).
A dead-letter file given back as --input replays: records go through parsing and mapping
again (what was invalid stays invalid, with the same reason), messages are validated and
sent again with the same identity.
Messages never carry credentials; each entry's values still pass through the run's
redactor before the entry is encoded (never the encoded line: a mask must not cut JSON).

A :class:`DeadLetterEntry` is the one way an entry is made, and
:meth:`DeadLetterEntry.to_json` the one way it is written.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from beaconflow.delivery.redact import Redactor
from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.message import Message, MessageError
from beaconflow.model.records import plain
from beaconflow.model.source import RawRecord, location


def message_view(message: Message) -> dict[str, Any]:
    """A message as the dead letter and the dry-run file show it (no credentials)."""
    return {
        "destination": message.destination,
        "kind": message.kind,
        "params": dict(message.params),
        "occurrence": message.occurrence,
        "key": message.key,
    }


def entry_identity(entry: DeadLetterEntry) -> str | None:
    """What makes an input record's dead-letter entry the same in another run, or None.

    The stage and the record as read (or its line, when it could not be read as JSON): not
    its place (a nightly ``--lookback`` reads the same record in another run) nor the reason
    (the same record is not news when a later release words its problem otherwise). A
    ``map`` entry's identity also has its destination (the record's message for another
    destination is another problem). Only read-, parse- and map-stage entries have one; a
    message that failed to send is tried again.
    """
    if entry.stage not in ("read", "parse", "map"):
        return None
    if entry.record is not _NO_RECORD:
        what = json.dumps(entry.record, sort_keys=True, ensure_ascii=False, default=plain)
    elif entry.line is not None:
        what = "line\x00" + entry.line
    else:
        return None
    stage = f"map\x00{entry.destination}" if entry.stage == "map" else entry.stage
    seed = f"{stage}\x00{what}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(seed).hexdigest()[:32]


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


class _Absent:
    """The type of :data:`_NO_RECORD`: one instance, which pickles as itself."""

    def __repr__(self) -> str:
        return "<no record>"

    def __reduce__(self) -> str:
        return "_NO_RECORD"


#: Stands for "this entry holds no record" (a record may be JSON null).
_NO_RECORD: Any = _Absent()


@dataclass(frozen=True)
class DeadLetterEntry:
    """One record or message that could not go on: the stage, the reason and the evidence.

    ``stage``: ``read``, ``parse``, ``map`` or ``send``. ``source``: the input's
    ``file:position`` (for a send failure, its message's source: the line of the event it
    was built from, or of the dead-letter entry it was replayed from). Exactly one
    of ``record`` (the record as read), ``line`` (its raw text, when it was not JSON) and
    ``message`` (the message it became, with ``status`` and ``attempts``) is the evidence.
    ``destination``: for a ``map`` entry, the one destination whose message could not be built
    (the event's other messages went on; a replay sends this destination's only).
    ``ambiguous_attempts``: for a ``send`` entry, its attempts whose request went out and got
    no answer (the service may have received the message that many times); None or 0: none.
    """

    stage: str
    reason: str
    source: str | None = None
    record: Any = _NO_RECORD
    line: str | None = None
    message: Message | None = None
    status: int | None = None
    attempts: int | None = None
    destination: str | None = None
    ambiguous_attempts: int | None = None

    @classmethod
    def read(cls, data: dict[str, Any]) -> DeadLetterEntry:
        """An entry read back from its JSON object: its stage, reason and record or line.

        What :func:`entry_identity` needs; a message's evidence is not read back here.
        """
        line, destination = data.get("line"), data.get("destination")
        return cls(
            str(data.get("stage", "")),
            str(data.get("reason", "")),
            record=data.get("record", _NO_RECORD),
            line=line if isinstance(line, str) else None,
            destination=destination if isinstance(destination, str) else None,
        )

    @classmethod
    def of_record(
        cls, stage: str, reason: str, raw: RawRecord, record: object = None
    ) -> DeadLetterEntry:
        """The entry of an input record that is invalid at ``stage``.

        ``record`` is the record as far as it was read; the raw line is kept instead when
        strict JSON cannot hold it (NaN, Infinity), so a replay fails for the same reason.
        """
        if record is not None and (_strict_json(record) or raw.text is None):
            return cls(stage, reason, raw.source, record=record)
        if raw.row is not None:
            return cls(stage, reason, raw.source, record=raw.row)
        if raw.text is not None:
            return cls(stage, reason, raw.source, line=raw.text.rstrip("\r\n"))
        return cls(stage, reason, raw.source)

    @classmethod
    def of_message(
        cls,
        message: Message,
        reason: str,
        status: int | None,
        attempts: int,
        ambiguous_attempts: int = 0,
    ) -> DeadLetterEntry:
        """The entry of a message that was not delivered, with the message's source."""
        return cls(
            "send",
            reason,
            message.source or None,
            message=message,
            status=status,
            attempts=attempts,
            ambiguous_attempts=ambiguous_attempts or None,
        )

    def as_dict(self) -> dict[str, Any]:
        """The entry as the dead-letter file holds it (keys absent when they do not apply)."""
        entry: dict[str, Any] = {"stage": self.stage, "reason": self.reason}
        if self.source is not None:
            entry["source"] = location(self.source)
        if self.destination is not None:
            entry["destination"] = self.destination
        if self.record is not _NO_RECORD:
            entry["record"] = self.record
        if self.line is not None:
            entry["line"] = self.line
        if self.message is not None:
            entry["status"] = self.status
            entry["attempts"] = self.attempts
            if self.ambiguous_attempts:
                entry["ambiguous_attempts"] = self.ambiguous_attempts
            entry["message"] = message_view(self.message)
        return entry

    def to_json(self, redact: Redactor | None = None) -> str:
        """One dead-letter line of strict JSON that never fails: odd values are written as text.

        ``redact`` masks secrets in the entry's values before it is encoded. A record holding
        NaN or Infinity (kept only when it has no raw line) is written with those numbers as
        text.
        """
        entry = self.as_dict()
        if redact is not None:
            # texts (the reason, a URL) by URL position too; data (the record, the raw line,
            # the message) by known secrets only, so that a replay sends it unchanged
            entry = {
                key: redact.value(value, data=key in _DATA_FIELDS) for key, value in entry.items()
            }
        try:
            return json.dumps(
                entry, ensure_ascii=False, sort_keys=True, default=plain, allow_nan=False
            )
        except ValueError:
            return json.dumps(_finite(entry), ensure_ascii=False, sort_keys=True, default=plain)


def _strict_json(value: object) -> bool:
    """Whether strict JSON can hold the value (no NaN or Infinity, which json.loads accepts)."""
    try:
        json.dumps(value, allow_nan=False, default=str)
    except ValueError:
        return False
    return True


def _finite(value: Any) -> Any:
    """``value`` with every float that strict JSON cannot hold written as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


#: The entry fields that hold data, which redaction must not rewrite by URL position.
_DATA_FIELDS = frozenset({"record", "line", "message"})
