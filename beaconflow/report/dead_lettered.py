"""The ledger's memory of dead-lettered records, so that a ``--lookback`` night alerts once.

A nightly run with ``--lookback 1`` reads the day before again; its bad records are in the
day before's dead letter already. So a run with a ledger records, once its dead letter is
written whole, which records it holds: ``dead-lettered-<run id>.txt`` in the ledger, a JSON
first line naming the dead letter (and, with ``--date``, the days the run read), then one
identity per line (:func:`~beaconflow.report.deadletter.entry_identity`: the hash of the
stage, for a map entry its destination, and the record's content). A later run reading the
same records (:func:`recall`) counts them as already dead-lettered instead of dead-lettering
them again, as long as the dead letter that holds them is still there.

The memory stays small (:func:`remember` and :func:`recall` drop what cannot serve again):

- the memory of a dead letter that is gone, or that a later run replaced (the same path),
  is removed: those records would be dead-lettered again anyway;
- a ``--date`` run removes the memory of nights whose days are all before the first day it
  reads (its ``--date`` minus ``--lookback``): no run on that schedule reads them again.
  A manual run over those days dead-letters their bad records again (never loses them).

A failure here only loses memory (a record dead-lettered twice), never a record: it is
logged, and the run goes on. No HTTP; Beam's FileSystems for ``gs://`` and ``s3://``::

    python -m pytest tests/report/test_dead_lettered.py
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from beaconflow.delivery.ledger import beam_filesystems, write_atomically
from beaconflow.model.errors import io_problem, os_reason
from beaconflow.report.deadletter import DeadLetterEntry, entry_identity

log = logging.getLogger("beaconflow")

#: The ledger's files of dead-lettered records: ``dead-lettered-<run id>.txt``.
PREFIX = "dead-lettered-"
SUFFIX = ".txt"


@dataclass(frozen=True)
class Memory:
    """One memory file: its path, the dead letter it speaks of and the days its run read."""

    path: str
    dead_letter: str
    days: tuple[str, ...]
    identities: tuple[str, ...]

    @classmethod
    def read(cls, path: str) -> Memory:
        """The memory file at ``path``; ValueError (or OSError) when it is not one."""
        with beam_filesystems().open(path) as handle:
            lines = handle.read().decode("utf-8").splitlines()
        if not lines:
            raise ValueError("empty")
        header = json.loads(lines[0])
        if not isinstance(header, dict) or not isinstance(header.get("dead_letter"), str):
            raise ValueError("its first line names no dead letter")
        days = header.get("days", [])
        return cls(
            path,
            header["dead_letter"],
            tuple(str(day) for day in days) if isinstance(days, list) else (),
            tuple(line for line in lines[1:] if line),
        )


def _memories(ledger: str) -> list[str]:
    filesystems = beam_filesystems()
    pattern = filesystems.join(ledger.rstrip("/"), f"{PREFIX}*{SUFFIX}")
    try:
        return sorted(m.path for m in filesystems.match([pattern])[0].metadata_list)
    except Exception:  # Beam raises when the directory does not exist yet
        return []


def _forget(paths: Iterable[str]) -> None:
    paths = list(paths)
    if not paths:
        return
    try:
        beam_filesystems().delete(paths)
    except Exception as error:  # the next run tries again
        log.warning(
            "the ledger's memory %s was not removed: %s", ", ".join(paths), os_reason(error)
        )


def identities_in(dead_letter: str) -> set[str]:
    """The identities of the records the dead letter at ``dead_letter`` holds."""
    identities: set[str] = set()
    with beam_filesystems().open(dead_letter) as handle:
        for line in io.TextIOWrapper(handle, encoding="utf-8"):
            if line.strip():
                identity = entry_identity(DeadLetterEntry.read(json.loads(line)))
                if identity is not None:
                    identities.add(identity)
    return identities


def remember(ledger: str, dead_letter: str, run_id: str, days: Iterable[date] = ()) -> None:
    """Record in the ledger which records the committed ``dead_letter`` holds.

    ``days``: the days a ``--date`` run read. The memory of an earlier dead letter at the
    same path is removed: this run's replaced it.
    """
    own = ""
    try:
        identities = identities_in(dead_letter)
    except Exception as error:
        _not_remembered(dead_letter, io_problem("dead letter", dead_letter, error, "not readable"))
        return
    if identities:
        header: dict[str, Any] = {"dead_letter": dead_letter}
        if days:
            header["days"] = sorted({day.isoformat() for day in days})
        text = "\n".join((json.dumps(header, ensure_ascii=False), *sorted(identities)))
        own = f"{PREFIX}{run_id}{SUFFIX}"
        try:
            write_atomically(ledger, own, (text + "\n").encode("utf-8"))
        except Exception as error:
            _not_remembered(dead_letter, f"{io_problem('ledger', ledger, error)} (writing {own})")
            return
    replaced = []
    for path in _memories(ledger):
        if own and path.endswith("/" + own):
            continue
        try:
            if Memory.read(path).dead_letter == dead_letter:
                replaced.append(path)
        except Exception:  # recall warns about it
            continue
    _forget(replaced)


def _not_remembered(dead_letter: str, why: str) -> None:
    log.warning(
        "the ledger could not record what %s holds (%s): a later run reading the same "
        "records dead-letters them again",
        dead_letter,
        why,
    )


def recall(ledger: str, own_dead_letter: str, first_day: date | None = None) -> frozenset[str]:
    """The records earlier runs with this ledger dead-lettered, in dead letters still there.

    Those of a dead letter at ``own_dead_letter`` are not: this run replaces that file.
    With ``first_day`` (a ``--date`` run's first day), memories of nights before it are
    dropped. Memories that cannot serve again are removed.
    """
    found: set[str] = set()
    stale: list[str] = []
    filesystems = beam_filesystems()
    for path in _memories(ledger):
        try:
            memory = Memory.read(path)
        except Exception as error:  # a damaged memory only costs a repeat dead letter
            log.warning("ignoring the ledger's memory %s: %s", path, os_reason(error))
            continue
        if first_day is not None and memory.days and max(memory.days) < first_day.isoformat():
            stale.append(path)
            continue
        if memory.dead_letter == own_dead_letter:
            continue
        try:
            there = filesystems.exists(memory.dead_letter)
        except Exception as error:  # unknown: keep the memory, do not use it this time
            log.warning("ignoring the ledger's memory %s: %s", path, os_reason(error))
            continue
        if not there:
            stale.append(path)
            continue
        found.update(memory.identities)
    _forget(stale)
    return frozenset(found)
