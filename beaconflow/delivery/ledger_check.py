"""A ledger's integrity: what a run checks before sending, ``ledger verify`` and ``repair``.

Every sealed shard of ledger format 2 ends with a seal record, ``{"sealed": {"entries": N,
"bytes": B, "sha256": H, "endpoints": {fingerprint: {destination: n}}}}``, over the B bytes
of entry lines before it, and every writer keeps a manifest (``manifest-<writer>.json``)
listing the shards it sealed with their entries' counts. So a shard that was truncated,
zero-filled or changed in any byte, and a shard its manifest lists that is no longer there
(deleted, renamed by logrotate), is **damaged**: :func:`inspect` finds it and a run stops
before sending (exit 2), naming it.

A run's check (:func:`prepare`) reads every file but parses no entry of a sealed shard whose
seal record gives its endpoints: the SHA-256 over its bytes says they are what was written,
and the seal record says whose deliveries they are (what :func:`mismatches` warns from). The
pipeline parses the entries once, when it reads the ledger's keys, each line checked by its
CRC. Parsing them here too was 18-20 of the check's 21-22 CPU seconds on a ledger of 5
million entries; without it the check takes about 1 s (``benchmarks/ledger_check.py``,
docs/performance.md).

A shard whose name gives a range of event days (``shard-<id>-<n>.d<first>-<last>.v2.jsonl``,
:mod:`beaconflow.delivery.ledger_days`) is read only by runs with messages of those days:
its seal record says the same range (``"days": [first, last]``), and a shard whose name
and seal record disagree (a file renamed by hand) is damage, since runs would pass over
entries it holds; ``repair`` salvages its entries into a shard named by their own days.

Journals (``*.jsonl.open``, a run that is running or was killed) have no seal: their
intact lines count, a torn or zeroed line is skipped (each line has its own CRC). Files of
ledger format 1 (names without ``.v2``) were written without seals and are read as before.

A file the system will not let be read (its permissions, a directory in its place, an I/O
error) is not damage, it may be whole: :class:`LedgerUnreadable` names it and the system's
reason, and a run stops before sending (exit 2) as for damage. A write that fails (a
read-only or full disk) is a :class:`~beaconflow.delivery.ledger.LedgerError` naming the
ledger, the file and the reason.

:func:`repair` copies every entry whose CRC holds out of the damaged shards into a new
sealed shard, sets the damaged files aside (renamed ``<name>.damaged-<time>``, never
deleted), takes the missing shards out of their manifests, and says how many entries were
lost (their messages are what the next run sends again) or that it cannot be known::

    beaconflow ledger verify /var/lib/beaconflow/ledger
    beaconflow ledger repair /var/lib/beaconflow/ledger
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from beaconflow.delivery.ledger import (
    FORMAT,
    JOURNAL_SUFFIX,
    SEAL_PREFIX,
    SHARD_SUFFIX,
    LedgerError,
    LedgerWriter,
    beam_filesystems,
    checked_entry,
    entry_endpoint,
    file_entries,
    is_format2,
    is_local,
    local_path,
    manifest_bytes,
    manifest_name,
    seal_line,
    sync_directory,
    write_atomically,
)
from beaconflow.delivery.ledger_days import MAX_DAY, MIN_DAY, day_iso, days_mark, file_days
from beaconflow.delivery.ledger_identity import LedgerIdentity, descriptor_name, mismatches
from beaconflow.model.errors import BeaconflowError, io_problem
from beaconflow.model.words import plural

#: The ledger's own description: ``{"format": 2}``. Without it a ledger is of format 1.
LEDGER_JSON = "ledger.json"
DAMAGED_MARK = ".damaged-"


class LedgerDamaged(BeaconflowError, ValueError):
    """The ledger cannot be trusted as it is: one line naming the damage and the way out."""


class LedgerUnreadable(BeaconflowError, OSError):
    """A file of the ledger, or its directory, cannot be read; the text names it and why.

    Not damage: the file may be whole, the system would not let it be read (permissions,
    a directory where a file should be, an I/O error).
    """


@dataclass(frozen=True)
class Damage:
    """A damaged file of the ledger: its name, why, and what it should hold.

    ``expected``: the entries it was sealed with (from its seal record or its manifest), or
    None when nothing says; ``intact``: the entries in it whose CRC holds (0 when missing);
    ``manifest``: the manifest that lists it, if any.
    """

    name: str
    reason: str
    expected: int | None = None
    intact: int = 0
    manifest: str | None = None
    missing: bool = False

    @property
    def lost(self) -> int | None:
        """Entries that cannot be salvaged; None when it cannot be known."""
        return None if self.expected is None else max(0, self.expected - self.intact)


@dataclass
class LedgerState:
    """What :func:`inspect` found in a ledger directory."""

    directory: str
    format: int = 1
    shards: int = 0
    journals: int = 0
    legacy_files: int = 0
    entries: int = 0
    #: (fingerprint, destination, format of its file) -> entries
    counts: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    damaged: list[Damage] = field(default_factory=list)
    #: file name -> unreadable lines, in journals and format-1 files (tolerated)
    torn: dict[str, int] = field(default_factory=dict)
    descriptors: dict[str, dict[str, str]] = field(default_factory=dict)
    #: manifest name -> its shards' (name, entries)
    manifests: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def _names(directory: str) -> list[str]:
    """The names of the files in the ledger directory (none when it does not exist)."""
    if is_local(directory):
        try:
            return sorted(os.listdir(local_path(directory)))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise LedgerUnreadable(io_problem("ledger", directory, error, "not readable")) from None
    filesystems = beam_filesystems()
    try:
        matched = filesystems.match([filesystems.join(directory, "*")])[0].metadata_list
    except Exception:  # the directory does not exist
        return []
    return sorted(m.path.rstrip("/").rpartition("/")[2] for m in matched)


def _path(directory: str, name: str) -> str:
    if is_local(directory):
        return os.path.join(local_path(directory), name)
    return str(beam_filesystems().join(directory, name))


def _read(directory: str, name: str) -> bytes:
    """A file of the ledger, whole; LedgerUnreadable naming it when it cannot be read."""
    path = _path(directory, name)
    try:
        with beam_filesystems().open(path) as handle:
            return bytes(handle.read())
    except OSError as error:
        raise LedgerUnreadable(io_problem("ledger file", path, error, "not readable")) from None


def shard_damage(data: bytes) -> tuple[str | None, int | None]:
    """Why a sealed shard of format 2 is damaged (None when intact), and its entries.

    The entries are what its seal record says it holds (None when that is unreadable).
    """
    if not data:
        return "truncated to 0 bytes", None
    zeros = data.count(0)
    if zeros == len(data):
        return f"zero-filled ({len(data)} bytes of zeros, what a power loss can leave)", None
    note = f" ({zeros} zero bytes in it)" if zeros else ""
    if not data.endswith(b"\n"):
        return f"truncated: it does not end with its seal record{note}", None
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    body, last = data[:cut], data[cut:-1]
    if not last.startswith(SEAL_PREFIX):
        where = "data after its seal record" if SEAL_PREFIX in body else "no seal record at its end"
        return f"truncated or overwritten: {where}{note}", None
    try:
        seal = json.loads(last)["sealed"]
        entries, length, digest = int(seal["entries"]), int(seal["bytes"]), str(seal["sha256"])
    except (ValueError, KeyError, TypeError):
        return f"its seal record is unreadable{note}", None
    if length != len(body):
        return f"{len(body)} bytes of entries where its seal record says {length}{note}", entries
    if hashlib.sha256(body).hexdigest() != digest:
        return f"its bytes are not what was written (SHA-256 mismatch){note}", entries
    return None, entries


def seal_endpoints(data: bytes) -> Counter[tuple[str, str]] | None:
    """An intact shard's entries per (fingerprint, destination), as its seal record says.

    None when the seal record does not say (a shard sealed before seal records carried
    them) or says something that does not add up to its entries: the caller parses them.
    """
    last = data[data.rfind(b"\n", 0, len(data) - 1) + 1 : -1]
    try:
        seal = json.loads(last)["sealed"]
        counts: Counter[tuple[str, str]] = Counter()
        for fingerprint, destinations in seal["endpoints"].items():
            for destination, count in destinations.items():
                if not isinstance(count, int) or count < 0:
                    return None
                counts[(str(fingerprint), str(destination))] += count
        entries = int(seal["entries"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return counts if counts.total() == entries else None


def seal_days(data: bytes) -> tuple[int, int] | None:
    """The first and last event day an intact shard's seal record gives, or None."""
    last = data[data.rfind(b"\n", 0, len(data) - 1) + 1 : -1]
    try:
        days = json.loads(last)["sealed"].get("days")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if (
        isinstance(days, list)
        and len(days) == 2
        and all(isinstance(day, int) and not isinstance(day, bool) for day in days)
    ):
        return days[0], days[1]
    return None


def days_damage(name: str, data: bytes) -> str | None:
    """Why an intact shard's name and seal record disagree on its days (None: they agree).

    Only a name with a range is checked: a shard without one is read by every run.
    """
    named = file_days(name)
    if named is None:
        return None
    sealed = seal_days(data)
    if sealed == named:
        return None
    says = "no days" if sealed is None else f"{day_iso(sealed[0])} to {day_iso(sealed[1])}"
    return (
        f"its name gives the event days {day_iso(named[0])} to {day_iso(named[1])}, its seal "
        f"record {says} (renamed?): runs of other days would not read entries it holds"
    )


def _read_json(directory: str, name: str) -> Any:
    """A JSON file of the ledger; None when it is not JSON (LedgerUnreadable: see _read)."""
    try:
        return json.loads(_read(directory, name))
    except ValueError:
        return None


def inspect(directory: str, *, parse_sealed: bool = True) -> LedgerState:
    """Read the whole ledger once: its format, damage, and entries per fingerprint.

    ``parse_sealed=False`` (a run's check before sending): an intact sealed shard whose seal
    record gives its endpoints is counted from it, its entries not parsed; ``torn`` then
    covers the other files only. Raises LedgerDamaged for a ledger of a newer format than
    this release reads.
    """
    state = LedgerState(directory)
    names = _names(directory)
    present = set(names)
    if LEDGER_JSON in present:
        description = _read_json(directory, LEDGER_JSON)
        version = description.get("format") if isinstance(description, dict) else None
        if not isinstance(version, int):
            state.damaged.append(Damage(LEDGER_JSON, "unreadable (no format number in it)"))
        elif version > FORMAT:
            raise LedgerDamaged(
                f"the ledger {directory} is of format {version}, written by a newer "
                f"beaconflow; this one reads formats 1 to {FORMAT}: upgrade beaconflow"
            )
        else:
            state.format = version
    listed: dict[str, tuple[str, int]] = {}
    for name in names:
        if name.startswith("manifest-") and name.endswith(".json"):
            manifest = _read_json(directory, name)
            try:
                shards = [(str(s["name"]), int(s["entries"])) for s in manifest["shards"]]
            except (KeyError, TypeError, ValueError):
                state.damaged.append(Damage(name, "unreadable manifest"))
                continue
            state.manifests[name] = shards
            for shard, entries in shards:
                listed[shard] = (name, entries)
                if shard not in present:
                    state.damaged.append(
                        Damage(shard, f"missing (listed in {name})", entries, 0, name, True)
                    )
        elif name.startswith("endpoint-") and name.endswith(".json"):
            descriptor = _read_json(directory, name)
            if isinstance(descriptor, dict) and isinstance(descriptor.get("fingerprint"), str):
                state.descriptors[descriptor["fingerprint"]] = descriptor
    for name in names:
        if not name.endswith((SHARD_SUFFIX, JOURNAL_SUFFIX)) or name.startswith("."):
            continue
        data = _read(directory, name)
        version = 2 if is_format2(name) else 1
        if version == 2 and name.endswith(SHARD_SUFFIX):
            state.shards += 1
            reason, expected = shard_damage(data)
            if reason is None:
                reason = days_damage(name, data)
            if reason is not None:
                manifest, in_manifest = listed.get(name, (None, None))
                expected = expected if expected is not None else in_manifest
                intact = len(file_entries(name, data)[0])
                state.damaged.append(Damage(name, reason, expected, intact, manifest))
                continue
            sealed = None if parse_sealed else seal_endpoints(data)
            if sealed is not None:
                state.entries += sealed.total()
                for (fingerprint, destination), count in sealed.items():
                    state.counts[(fingerprint, destination, version)] += count
                continue
        elif version == 2:
            state.journals += 1
        else:
            state.legacy_files += 1
        read, unreadable = file_entries(name, data)
        if unreadable:
            state.torn[name] = unreadable
        state.entries += len(read)
        for entry in read:
            fingerprint, destination = entry_endpoint(
                entry["ledger"], str(entry.get("destination"))
            )
            state.counts[(fingerprint, destination, version)] += 1
    return state


def damage_line(state: LedgerState) -> str:
    """The one line a run stops with when the ledger is damaged."""
    first = state.damaged[0]
    more = len(state.damaged) - 1
    also = f" (and {more} more damaged file{'s' if more > 1 else ''})" if more else ""
    return (
        f"the ledger is damaged: {first.name}: {first.reason}{also}; nothing was sent. "
        f"'beaconflow ledger verify {state.directory}' lists the damage, 'beaconflow ledger "
        f"repair {state.directory}' salvages every intact entry and says how many were lost"
    )


def prepare(directory: str, identity: LedgerIdentity, *, write: bool) -> list[str]:
    """Check the ledger before a run sends: LedgerDamaged when it is damaged.

    With ``write`` (a run that sends), marks the ledger as of format 2 and writes the
    descriptors of this run's fingerprints. Returns the warnings to give before sending
    (:func:`beaconflow.delivery.ledger_identity.mismatches`).
    """
    state = inspect(directory, parse_sealed=False)
    if state.damaged:
        raise LedgerDamaged(damage_line(state))
    warnings = mismatches(identity, state.counts, state.descriptors)
    if write:
        present = set(_names(directory))
        if LEDGER_JSON not in present or state.format < FORMAT:
            _write_whole(directory, LEDGER_JSON, b'{"format": %d}\n' % FORMAT)
        for fingerprint in identity.descriptors:
            if descriptor_name(fingerprint) not in present:
                data = identity.descriptor_bytes(fingerprint)
                _write_whole(directory, descriptor_name(fingerprint), data)
        adopt_format1(directory, identity, state)
    return warnings


def adoption_name(legacy: str, fingerprint: str) -> str:
    """The file saying format-1 entries of ``legacy`` were copied under ``fingerprint``."""
    return f"adopted-{legacy}-{fingerprint}.json"


def adopt_format1(directory: str, identity: LedgerIdentity, state: LedgerState) -> int:
    """Copy format-1 entries made with this run's key under its ``--ledger-app`` fingerprint.

    A format-1 entry is recognised by its API key only. With ``--ledger-app``, the first run
    that still has the key that made them copies them, once, into a sealed format-2 shard
    under the app's fingerprint (``adopted-<old>-<new>.json`` records that it was done), so
    that they count after a key rotation too. The format-1 files stay as they are. Returns
    the entries copied.
    """
    todo = {
        legacy: fingerprint
        for legacy, fingerprint in identity.legacy.items()
        if identity.descriptors.get(fingerprint, {}).get("identified_by") == "app"
        and any(v == 1 and f == legacy for f, _, v in state.counts)
    }
    present = set(_names(directory))
    todo = {old: new for old, new in todo.items() if adoption_name(old, new) not in present}
    if not todo:
        return 0
    writer = LedgerWriter(directory, {}, sync_seconds=None)
    copied: Counter[str] = Counter()
    for name in sorted(present):
        if not name.endswith((SHARD_SUFFIX, JOURNAL_SUFFIX)) or is_format2(name):
            continue
        entries, _ = file_entries(name, _read(directory, name))
        for entry in entries:
            old, colon, rest = entry["ledger"].partition(":")
            if colon and old in todo:
                at = entry.get("at")
                writer.record_keyed(
                    f"{todo[old]}:{rest}",
                    str(entry.get("destination")),
                    str(entry.get("kind")),
                    at if isinstance(at, int) else None,
                )
                copied[old] += 1
    writer.close()
    for old, new in todo.items():
        note = {"format1_fingerprint": old, "fingerprint": new, "entries": copied[old]}
        _write_whole(directory, adoption_name(old, new), json.dumps(note).encode() + b"\n")
    return sum(copied.values())


def _entry_day(entry: dict[str, Any]) -> int | None:
    """The day an entry read back is filed under (None: none, or none a name can give)."""
    day = entry.get("day")
    if isinstance(day, int) and not isinstance(day, bool) and MIN_DAY <= day <= MAX_DAY:
        return day
    return None


def _write_whole(directory: str, name: str, data: bytes) -> None:
    """:func:`write_atomically`, its failure a LedgerError naming the ledger and the file."""
    try:
        write_atomically(directory, name, data)
    except Exception as error:  # OSError locally, the filesystem's own error elsewhere
        raise LedgerError(f"{io_problem('ledger', directory, error)} (writing {name})") from None


def verify_lines(state: LedgerState) -> list[str]:
    """What ``beaconflow ledger verify`` prints."""
    lines = [f"{d.name}: damaged: {d.reason}" + _known(d) for d in state.damaged]
    for name, unreadable in sorted(state.torn.items()):
        lines.append(
            f"{name}: {plural(unreadable, 'unreadable line')} skipped (a journal or a format-1 "
            "file: a torn write, tolerated)"
        )
    verdict = "damaged" if state.damaged else "intact"
    lines.append(
        f"{state.directory}: {verdict}: format {state.format}, {state.shards} sealed shards, "
        f"{state.journals} journals, {state.legacy_files} format-1 files, "
        f"{plural(state.entries, 'entry', 'entries')} readable"
    )
    return lines


def _known(damage: Damage) -> str:
    if damage.missing:
        if damage.expected is None:
            return "; how many entries were lost cannot be known"
        return f"; {plural(damage.expected, 'entry', 'entries')} lost"
    if damage.lost is None:
        intact = plural(damage.intact, "intact entry", "intact entries")
        return f"; {intact}, how many were lost cannot be known"
    return f"; {plural(damage.intact, 'intact entry', 'intact entries')}, {damage.lost} lost"


def _aside(directory: str, name: str, stamp: str) -> str:
    """Rename a damaged file out of the ledger's way; its new name."""
    target = f"{name}{DAMAGED_MARK}{stamp}"
    try:
        if is_local(directory):
            os.replace(_path(directory, name), _path(directory, target))
            sync_directory(directory)
        else:
            beam_filesystems().rename([_path(directory, name)], [_path(directory, target)])
    except Exception as error:  # OSError locally, the filesystem's own error elsewhere
        problem = io_problem("ledger", directory, error)
        raise LedgerError(f"{problem} (setting {name} aside)") from None
    return target


def repair(directory: str, *, now: float | None = None) -> tuple[list[str], bool]:
    """Salvage a damaged ledger; the lines to print, and whether any loss is unknown."""
    state = inspect(directory)
    if not state.damaged:
        return [f"{directory}: intact, nothing to repair"], False
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    salvaged: list[bytes] = []
    endpoints: Counter[tuple[str, str]] = Counter()
    days: list[int | None] = []
    for damage in state.damaged:
        if damage.missing or not damage.name.endswith(SHARD_SUFFIX):
            continue
        for line in _read(directory, damage.name).split(b"\n"):
            entry = checked_entry(line)
            if entry is not None:
                salvaged.append(line + b"\n")
                endpoints[entry_endpoint(entry["ledger"], str(entry.get("destination")))] += 1
                days.append(_entry_day(entry))
    lines: list[str] = []
    if salvaged:
        # written and synced before anything is set aside: a crash in between leaves
        # duplicates, which are harmless, never a loss
        writer = uuid.uuid4().hex[:12]
        # named by its entries' days when every one has a day, else read by every run
        dated = [day for day in days if day is not None]
        span = (min(dated), max(dated)) if len(dated) == len(days) else None
        mark = "" if span is None else days_mark(*span)
        shard = f"shard-{writer}-000000{mark}.v2{SHARD_SUFFIX}"
        body = b"".join(salvaged)
        digest = hashlib.sha256(body).hexdigest()
        seal = seal_line(len(salvaged), len(body), digest, endpoints, span)
        _write_whole(directory, shard, body + seal)
        _write_whole(
            directory, manifest_name(writer), manifest_bytes(writer, [(shard, len(salvaged))])
        )
        lines.append(f"{shard}: {len(salvaged)} intact entries salvaged into it")
    unlisted: dict[str, set[str]] = {}
    unknown = False
    lost = 0
    for damage in state.damaged:
        if damage.manifest is not None:
            unlisted.setdefault(damage.manifest, set()).add(damage.name)
        if damage.missing:
            lines.append(
                f"{damage.name}: missing: {damage.expected} entries lost "
                f"(taken out of {damage.manifest})"
            )
            lost += damage.expected or 0
            continue
        aside = _aside(directory, damage.name, stamp)
        if damage.lost is None:
            unknown = True
            count = "how many entries were lost cannot be known"
        else:
            lost += damage.lost
            count = f"{plural(damage.lost, 'entry', 'entries')} lost"
        if damage.name.endswith(SHARD_SUFFIX):
            lines.append(
                f"{damage.name}: {damage.reason}: "
                f"{plural(damage.intact, 'intact entry', 'intact entries')} salvaged, "
                f"{count}; set aside as {aside}"
            )
        else:
            lines.append(f"{damage.name}: {damage.reason}: set aside as {aside}")
            if damage.name.startswith("manifest-"):
                unknown = True  # the shards it listed can no longer be missed
    for manifest, names in unlisted.items():
        if manifest not in state.manifests:
            continue
        kept = [(n, e) for n, e in state.manifests[manifest] if n not in names]
        writer = manifest.removeprefix("manifest-").removesuffix(".json")
        _write_whole(directory, manifest, manifest_bytes(writer, kept))
    total = f"{plural(lost, 'entry', 'entries')} lost" + (
        " at least (some losses cannot be known)" if unknown else ""
    )
    lines.append(
        f"{directory}: repaired: {total}; the next run with this ledger sends their messages "
        "again (Kontagent counts them twice; KISSmetrics recognises its own by _t)"
    )
    return lines, unknown
