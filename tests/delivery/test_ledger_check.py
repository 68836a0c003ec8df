"""The ledger's integrity (``beaconflow.delivery.ledger_check``) on real files.

Sealed shards damaged every way the issue lists (truncated, zero-filled, a byte changed,
listed but missing, renamed away), found and repaired; journals of killed runs truncated at
every byte offset, which are never damage; the writer's syncs of journals and directory; a
file that cannot be read, and a ledger that cannot be written, named with the system's reason.
Whole runs and the ``beaconflow ledger`` command are in tests/e2e/test_ledger_integrity.py.
"""

from __future__ import annotations

import json
import os
import stat
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from beaconflow.delivery.ledger import (
    LedgerError,
    LedgerWriter,
    checked_entry,
    entry_line,
    file_entries,
    ledger_files,
    legacy_entry,
    read_ledger_file,
)
from beaconflow.delivery.ledger_check import (
    LedgerDamaged,
    LedgerUnreadable,
    inspect,
    prepare,
    repair,
    seal_endpoints,
    shard_damage,
    verify_lines,
)
from beaconflow.delivery.ledger_identity import LedgerIdentity
from beaconflow.model.message import Endpoint, Message
from beaconflow.model.words import plural
from tests.fs_faults import unwritable

FINGERPRINT = "f" * 12


def _messages(n: int, start: int = 0) -> list[Message]:
    return [Message("kontagent", "apa", (("s", str(i)),)) for i in range(start, start + n)]


def _sealed_ledger(directory: Path, shards: int = 2, per_shard: int = 5) -> list[Message]:
    """A ledger of ``shards`` sealed shards of one writer; the messages it holds."""
    writer = LedgerWriter(str(directory), {"kontagent": FINGERPRINT}, sync_seconds=None)
    messages = []
    for i in range(shards):
        batch = _messages(per_shard, i * per_shard)
        writer.record(batch)
        writer.seal()
        messages += batch
    writer.close()
    return messages


def _keys(directory: Path) -> set[str]:
    return {key for path in ledger_files(str(directory)) for key in read_ledger_file(path)}


def _shards(directory: Path) -> list[Path]:
    return sorted(directory.glob("shard-*.v2.jsonl"))


def test_a_sealed_ledger_is_intact_and_lists_its_shards(tmp_path: Path) -> None:
    messages = _sealed_ledger(tmp_path)
    state = inspect(str(tmp_path))
    assert state.damaged == [] and state.shards == 2 and state.entries == len(messages)
    assert len(state.manifests) == 1
    [listed] = state.manifests.values()
    assert [name for name, _ in listed] == [p.name for p in _shards(tmp_path)]
    assert all(entries == 5 for _, entries in listed)
    assert _keys(tmp_path) == {f"{FINGERPRINT}:{m.key}" for m in messages}
    assert verify_lines(state)[-1].startswith(f"{tmp_path}: intact: ")


def _truncate(path: Path) -> None:
    """Cut in the middle of the entries (before the seal record, whatever its length)."""
    data = path.read_bytes()
    body = data[: data.rindex(b'{"sealed":')]
    path.write_bytes(body[: len(body) // 2])


def _zero_fill(path: Path) -> None:
    path.write_bytes(b"\0" * path.stat().st_size)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[40] ^= 0x01  # inside the first entry's key
    path.write_bytes(bytes(data))


def _delete(path: Path) -> None:
    path.unlink()


def _logrotate(path: Path) -> None:
    path.rename(path.with_name(path.name + ".1"))


DAMAGES: dict[str, tuple[Callable[[Path], None], str, int | None]] = {
    # how, what the reason says, entries lost (None: cannot be known)
    "truncated": (_truncate, "truncated", 3),
    "zero-filled": (_zero_fill, "zero-filled", 5),
    "flipped byte": (_flip_byte, "SHA-256 mismatch", 1),
    "deleted": (_delete, "missing (listed in manifest-", 5),
    "renamed by logrotate": (_logrotate, "missing (listed in manifest-", 5),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_damage_is_found_named_and_repaired(tmp_path: Path, damage: str) -> None:
    how, reason, lost = DAMAGES[damage]
    messages = _sealed_ledger(tmp_path)
    victim = _shards(tmp_path)[1]
    how(victim)
    state = inspect(str(tmp_path))
    assert [d.name for d in state.damaged] == [victim.name]
    assert reason in state.damaged[0].reason
    identity = LedgerIdentity({"kontagent": FINGERPRINT}, {})
    with pytest.raises(LedgerDamaged, match=f"the ledger is damaged: {victim.name}: "):
        prepare(str(tmp_path), identity, write=True)

    lines, unknown = repair(str(tmp_path))
    assert not unknown and lost is not None
    assert lines[-1].startswith(f"{tmp_path}: repaired: {plural(lost, 'entry', 'entries')} lost;")
    assert inspect(str(tmp_path)).damaged == []
    kept = _keys(tmp_path)
    assert kept <= {f"{FINGERPRINT}:{m.key}" for m in messages}
    assert len(kept) == len(messages) - (lost or 0), "every intact entry is salvaged"
    if damage not in ("deleted", "renamed by logrotate"):
        aside = list(tmp_path.glob(f"{victim.name}.damaged-*"))
        assert len(aside) == 1, "set aside, never deleted"
    prepare(str(tmp_path), identity, write=True)  # a run may go on


def test_a_shard_truncated_at_any_offset_is_damaged(tmp_path: Path) -> None:
    _sealed_ledger(tmp_path, shards=1, per_shard=3)
    data = _shards(tmp_path)[0].read_bytes()
    for offset in range(len(data)):
        reason, _ = shard_damage(data[:offset])
        assert reason is not None, offset
    assert shard_damage(data) == (None, 3)


def test_an_unreadable_manifest_is_damage_whose_loss_cannot_be_known(tmp_path: Path) -> None:
    _sealed_ledger(tmp_path)
    manifest = next(tmp_path.glob("manifest-*.json"))
    manifest.write_bytes(b"\0" * 64)
    assert [d.name for d in inspect(str(tmp_path)).damaged] == [manifest.name]
    lines, unknown = repair(str(tmp_path))
    assert unknown and "some losses cannot be known" in lines[-1]
    assert inspect(str(tmp_path)).damaged == []


def _killed_journal(directory: Path, n: int) -> tuple[Path, list[Message]]:
    """The journal a killed run leaves: recorded, never sealed."""
    writer = LedgerWriter(str(directory), {"kontagent": FINGERPRINT}, sync_seconds=None)
    messages = _messages(n)
    for message in messages:
        writer.record_one(message)
    [journal] = directory.glob("journal-*.v2.jsonl.open")
    return journal, messages


def test_a_journal_truncated_at_every_offset_loses_at_most_the_torn_entry(
    tmp_path: Path,
) -> None:
    """The power-loss bound: whatever prefix of a journal reached the disk survives.

    Every entry in it whole is honoured, the torn one alone is lost, and the run is never
    stopped.
    """
    journal, messages = _killed_journal(tmp_path / "written", 4)
    data = journal.read_bytes()
    line_ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    identity = LedgerIdentity({"kontagent": FINGERPRINT}, {})
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    for offset in range(len(data) + 1):
        (ledger / journal.name).write_bytes(data[:offset])
        # an entry is whole once its last byte is there, with or without its newline
        whole = sum(1 for end in line_ends if end - 1 <= offset)
        assert prepare(str(ledger), identity, write=False) == []  # never stops the run
        state = inspect(str(ledger))
        assert state.damaged == [] and state.entries == whole, offset
        keys = _keys(ledger)
        assert keys == {f"{FINGERPRINT}:{m.key}" for m in messages[:whole]}, offset
        assert len(messages) - len(keys) <= len(messages) - whole
        # a torn line is at most one: the entry whose write was cut
        at_a_boundary = offset == 0 or any(offset in (end - 1, end) for end in line_ends)
        assert sum(state.torn.values()) == (0 if at_a_boundary else 1), offset


def test_a_journal_zeroed_at_its_end_keeps_its_whole_lines(tmp_path: Path) -> None:
    journal, messages = _killed_journal(tmp_path, 4)
    data = journal.read_bytes()
    cut = data.index(b"\n") + 1
    journal.write_bytes(data[:cut] + b"\0" * (len(data) - cut))  # allocated, never written
    state = inspect(str(tmp_path))
    assert state.damaged == [] and state.entries == 1 and state.torn == {journal.name: 1}
    assert _keys(tmp_path) == {f"{FINGERPRINT}:{messages[0].key}"}


def test_a_changed_journal_line_is_skipped_by_its_crc(tmp_path: Path) -> None:
    journal, messages = _killed_journal(tmp_path, 3)
    lines = journal.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"apa"', b'"apb"')  # still JSON: only the CRC tells
    journal.write_bytes(b"\n".join(lines))
    assert _keys(tmp_path) == {f"{FINGERPRINT}:{messages[i].key}" for i in (0, 2)}


def test_format1_files_are_read_and_mapped_to_todays_fingerprint(tmp_path: Path) -> None:
    endpoint = Endpoint("kontagent", "http://api.geo.kontagent.net", "a-key")
    identity = LedgerIdentity.of({"kontagent": endpoint})
    [(old, new)] = identity.legacy.items()
    line = b'{"ledger":"%s:k1","destination":"kontagent","kind":"apa","at":1}\n' % old.encode()
    (tmp_path / "shard-0123456789ab-000000.jsonl").write_bytes(line + b'{"torn')
    assert list(read_ledger_file(str(tmp_path / "shard-0123456789ab-000000.jsonl"))) == [
        f"{old}:k1"
    ]
    keys = list(
        read_ledger_file(str(tmp_path / "shard-0123456789ab-000000.jsonl"), identity.legacy)
    )
    assert keys == [f"{new}:k1"]
    state = inspect(str(tmp_path))
    assert state.damaged == [] and state.format == 1 and state.legacy_files == 1
    assert state.counts == {(old, "kontagent", 1): 1}
    prepare(str(tmp_path), identity, write=True)
    assert (tmp_path / "ledger.json").read_text() == '{"format": 2}\n'
    assert inspect(str(tmp_path)).format == 2


OTHER = "0" * 12


def _two_endpoints_ledger(directory: Path) -> None:
    """Sealed shards holding deliveries of two fingerprints and both destinations."""
    writer = LedgerWriter(
        str(directory), {"kontagent": FINGERPRINT, "kissmetrics": FINGERPRINT}, sync_seconds=None
    )
    writer.record(_messages(3))
    writer.record([Message("kissmetrics", "e", (("_n", "x"),))])
    writer.record_keyed(f"{OTHER}:k1", "kontagent", "apa", 1)
    writer.seal()
    writer.record_keyed(f"{OTHER}:k2", "kontagent", "apa", 1)
    writer.close()


def test_a_seal_record_says_whose_deliveries_its_shard_holds(tmp_path: Path) -> None:
    _two_endpoints_ledger(tmp_path)
    first, second = (json.loads(p.read_bytes().splitlines()[-1]) for p in _shards(tmp_path))
    assert first["sealed"]["endpoints"] == {
        OTHER: {"kontagent": 1},
        FINGERPRINT: {"kissmetrics": 1, "kontagent": 3},
    }
    assert first["sealed"]["entries"] == 5
    assert second["sealed"]["endpoints"] == {OTHER: {"kontagent": 1}}


def test_a_runs_check_counts_sealed_shards_from_their_seal_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the warnings are made of, without parsing the entries the pipeline parses."""
    _two_endpoints_ledger(tmp_path)
    _killed_journal(tmp_path, 2)  # a journal has no seal: its entries are parsed
    parsed = inspect(str(tmp_path))
    parsed_files: list[str] = []

    def counting(path: str, data: bytes) -> tuple[list[dict[str, Any]], int]:
        parsed_files.append(path)
        return file_entries(path, data)

    monkeypatch.setattr("beaconflow.delivery.ledger_check.file_entries", counting)
    checked = inspect(str(tmp_path), parse_sealed=False)
    assert [Path(p).name for p in parsed_files] == [
        p.name for p in tmp_path.glob("journal-*.v2.jsonl.open")
    ]
    assert checked.counts == parsed.counts
    assert checked.counts[(FINGERPRINT, "kontagent", 2)] == 5  # 3 sealed, 2 in the journal
    assert checked.entries == parsed.entries == 8
    ours = LedgerIdentity(
        {"kontagent": "1" * 12}, {}, {"1" * 12: {"url": "u", "identified_by": "key"}}
    )
    [warning] = prepare(str(tmp_path), ours, write=False)
    assert "the ledger holds 7 kontagent deliveries" in warning


def _reseal(path: Path, seal: dict[str, Any]) -> None:
    """Replace a shard's seal record (the bytes it seals are unchanged)."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + json.dumps({"sealed": seal}).encode() + b"\n")


@pytest.mark.parametrize(
    "endpoints",
    [None, {FINGERPRINT: {"kontagent": 4}}, {FINGERPRINT: ["kontagent"]}, "x"],
    ids=["sealed before seal records had them", "not adding up", "garbled", "not an object"],
)
def test_a_seal_record_without_usable_endpoints_is_parsed_instead(
    tmp_path: Path, endpoints: Any
) -> None:
    _sealed_ledger(tmp_path, shards=1)
    [shard] = _shards(tmp_path)
    seal = json.loads(shard.read_bytes().splitlines()[-1])["sealed"]
    if endpoints is None:
        del seal["endpoints"]
    else:
        seal["endpoints"] = endpoints
    _reseal(shard, seal)
    assert seal_endpoints(shard.read_bytes()) is None
    state = inspect(str(tmp_path), parse_sealed=False)
    assert state.damaged == [] and state.counts == {(FINGERPRINT, "kontagent", 2): 5}


def test_a_changed_byte_is_found_by_a_runs_check_without_parsing(tmp_path: Path) -> None:
    """The seal record's SHA-256 covers every entry byte: no entry need be parsed to see it."""
    _sealed_ledger(tmp_path)
    victim = _shards(tmp_path)[0]
    _flip_byte(victim)
    identity = LedgerIdentity({"kontagent": FINGERPRINT}, {})
    with pytest.raises(LedgerDamaged, match=f"{victim.name}: its bytes are not what was written"):
        prepare(str(tmp_path), identity, write=False)


def test_a_repaired_shard_says_whose_deliveries_it_holds(tmp_path: Path) -> None:
    _two_endpoints_ledger(tmp_path)
    before = set(_shards(tmp_path))
    _truncate(_shards(tmp_path)[0])
    repair(str(tmp_path))
    [salvaged] = set(_shards(tmp_path)) - before
    assert seal_endpoints(salvaged.read_bytes()) == {(FINGERPRINT, "kontagent"): 2}
    state = inspect(str(tmp_path), parse_sealed=False)
    assert state.damaged == [] and state.counts == inspect(str(tmp_path)).counts


def test_a_ledger_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ledger.json").write_text('{"format": 3}\n')
    with pytest.raises(LedgerDamaged, match="format 3, written by a newer beaconflow"):
        inspect(str(tmp_path))


def test_entry_lines_carry_a_crc_of_their_bytes() -> None:
    line = entry_line("fp:key", "kontagent", "apa", 5)
    assert line == (
        b'{"ledger":"fp:key","destination":"kontagent","kind":"apa","at":5,"crc":"%08x"}\n'
        % zlib.crc32(b'{"ledger":"fp:key","destination":"kontagent","kind":"apa","at":5')
    )


def test_an_entry_delivered_after_ambiguous_attempts_carries_their_count_under_its_crc() -> None:
    line = entry_line("fp:key", "kontagent", "apa", 5, ambiguous=2)
    body = b'{"ledger":"fp:key","destination":"kontagent","kind":"apa","at":5,"ambiguous":2'
    assert line == body + b',"crc":"%08x"}\n' % zlib.crc32(body)
    entry = checked_entry(line.rstrip(b"\n"))
    assert entry is not None and entry["ambiguous"] == 2 and entry["ledger"] == "fp:key"
    # the mark is covered by the CRC: a changed count is a damaged line
    assert checked_entry(line.replace(b'"ambiguous":2', b'"ambiguous":1').rstrip(b"\n")) is None
    # a reader of the key alone (a format-1 reader, read_ledger_file) is not disturbed
    assert legacy_entry(line.rstrip(b"\n")) is not None


def test_marked_entries_are_read_checked_and_salvaged_like_any_other(tmp_path: Path) -> None:
    ambiguous, plain = _messages(2)
    writer = LedgerWriter(str(tmp_path), {"kontagent": FINGERPRINT}, sync_seconds=None)
    writer.record_one(ambiguous, ambiguous=1)
    writer.record_one(plain)
    writer.seal()
    writer.close()
    (shard,) = _shards(tmp_path)
    lines = shard.read_bytes().splitlines()
    assert b'"ambiguous":1,"crc":' in lines[0] and b'"ambiguous"' not in lines[1]
    state = inspect(str(tmp_path))
    assert state.damaged == [] and state.entries == 2
    assert _keys(tmp_path) == {f"{FINGERPRINT}:{m.key}" for m in (ambiguous, plain)}
    # damaged (its seal cut off) and repaired: the salvaged copy keeps the mark
    shard.write_bytes(b"\n".join(lines[:2]) + b"\n")
    assert [d.name for d in inspect(str(tmp_path)).damaged] == [shard.name]
    repair(str(tmp_path))
    (salvaged,) = _shards(tmp_path)
    assert salvaged.read_bytes().splitlines()[:2] == lines[:2]
    assert _keys(tmp_path) == {f"{FINGERPRINT}:{m.key}" for m in (ambiguous, plain)}


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What os.fsync is called on: "dir" or "file"."""
    calls: list[str] = []
    real = os.fsync

    def fsync(descriptor: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file")
        real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)  # the ledger module calls os.fsync
    yield calls


def test_every_rename_is_followed_by_a_sync_of_the_directory(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    writer = LedgerWriter(str(tmp_path), {"kontagent": FINGERPRINT}, sync_seconds=None)
    writer.record(_messages(2))
    writer.seal()
    # the journal, then its rename into a shard; the manifest, then its rename
    assert fsyncs == ["file", "dir", "file", "dir"]
    writer.close()


def test_a_quiet_journal_is_synced_within_the_sync_interval(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    writer = LedgerWriter(str(tmp_path), {"kontagent": FINGERPRINT}, sync_seconds=0.05)
    writer.record_one(_messages(1)[0])
    assert fsyncs == []  # written through to the OS, not yet to the disk
    deadline = time.monotonic() + 5
    while not fsyncs:
        assert time.monotonic() < deadline, "the journal was never synced"
        time.sleep(0.01)
    assert fsyncs == ["file"]
    time.sleep(0.2)
    assert fsyncs == ["file"], "nothing new: no sync"
    writer.close()


def _directory_in_place_of(name: Callable[[Path], str]) -> Callable[[Path], Path]:
    def make(ledger: Path) -> Path:
        path = ledger / name(ledger)
        if path.exists():
            path.unlink()
        path.mkdir()
        return path

    return make


@pytest.mark.parametrize(
    "name",
    [
        lambda ledger: _shards(ledger)[0].name,
        lambda ledger: "journal-abc-000000.v2.jsonl.open",
        lambda ledger: next(ledger.glob("manifest-*.json")).name,
        lambda ledger: "ledger.json",
    ],
    ids=["shard", "journal", "manifest", "ledger.json"],
)
def test_a_file_that_cannot_be_read_is_named_not_called_damage(
    tmp_path: Path, name: Callable[[Path], str]
) -> None:
    _sealed_ledger(tmp_path)
    path = _directory_in_place_of(name)(tmp_path)
    expected = f"ledger file not readable: {path}: Is a directory"
    with pytest.raises(LedgerUnreadable) as raised:
        inspect(str(tmp_path))
    assert str(raised.value) == expected
    identity = LedgerIdentity({"kontagent": FINGERPRINT}, {})
    with pytest.raises(LedgerUnreadable, match=f"^{expected}$"):
        prepare(str(tmp_path), identity, write=True)


def test_a_ledger_that_cannot_be_written_says_which_file_it_was_writing(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    _sealed_ledger(ledger)
    identity = LedgerIdentity({"kontagent": FINGERPRINT}, {})
    with unwritable(ledger) as reason, pytest.raises(LedgerError) as preparing:
        prepare(str(ledger), identity, write=True)
    not_writable = f"ledger not writable: {ledger}: {reason}"
    assert str(preparing.value) == f"{not_writable} (writing ledger.json)"
    _truncate(_shards(ledger)[1])
    with unwritable(ledger), pytest.raises(LedgerError) as repairing:
        repair(str(ledger))
    assert str(repairing.value).startswith(f"{not_writable} (writing shard-")
    assert inspect(str(ledger)).damaged, "nothing was set aside"
