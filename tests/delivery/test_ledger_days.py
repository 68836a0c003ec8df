"""Event days in the ledger (``beaconflow.delivery.ledger_days``) and the writer's shards by day.

Which day an entry is filed under, the range a shard's name gives, which files a run with
given messages reads; the writer's two journals (dated entries, entries of no day), their
shards' names and seal records, on a local disk and on S3 (moto's server on loopback); the
check's and repair's handling of a shard whose name and seal record disagree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from beaconflow.delivery.ledger import (
    LedgerWriter,
    checked_entry,
    ledger_files,
    ledger_key,
    read_ledger_file,
)
from beaconflow.delivery.ledger_check import inspect, prepare, repair, seal_days, shard_damage
from beaconflow.delivery.ledger_days import (
    MAX_DAY,
    DaysSeen,
    LedgerDays,
    day_iso,
    days_mark,
    entry_day,
    file_days,
)
from beaconflow.delivery.ledger_identity import LedgerIdentity
from beaconflow.model import kissmetrics
from beaconflow.model.message import Endpoint, Message
from tests.fakes.s3 import moto_s3

FINGERPRINTS = {"kontagent": "a" * 12, "kissmetrics": "b" * 12}


def day(text: str) -> int:
    """A ``YYYY-MM-DD`` day as days since 1970-01-01."""
    return (date.fromisoformat(text) - date(1970, 1, 1)).days


JUNE_1 = day("2025-06-01")


def kontagent(user: int, on: int | None) -> Message:
    return Message("kontagent", "apa", (("s", str(user)),), occurrence=f"{user:032x}", day=on)


def alias(user: int, on: int | None) -> Message:
    return Message("kissmetrics", "a", (("_p", str(user)), ("_n", f"u{user}")), day=on)


def shard_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("shard-*.v2.jsonl"))


def entries(directory: Path) -> list[dict[str, object]]:
    lines = [
        checked_entry(line)
        for path in ledger_files(str(directory))
        for line in Path(path).read_bytes().split(b"\n")
    ]
    return [entry for entry in lines if entry is not None]


@pytest.mark.parametrize(
    ("destination", "kind", "on", "filed"),
    [
        ("kontagent", "apa", JUNE_1, JUNE_1),
        ("kissmetrics", "e", JUNE_1, JUNE_1),
        ("kontagent", "apa", None, None),  # unknown: a Kontagent message replayed
        ("kissmetrics", "a", JUNE_1, None),  # an alias is the same message on any day
        ("kontagent", "apa", MAX_DAY + 1, None),  # no date names it
        ("kontagent", "apa", 0, 0),
    ],
)
def test_the_day_an_entry_is_filed_under(
    destination: str, kind: str, on: int | None, filed: int | None
) -> None:
    assert entry_day(destination, kind, on) == filed


@pytest.mark.parametrize(
    ("name", "days"),
    [
        ("shard-0123456789ab-000003.d20250601-20250603.v2.jsonl", ("2025-06-01", "2025-06-03")),
        ("gs://bucket/ledger/shard-ab-000000.d20250601-20250601.v2.jsonl", ("2025-06-01",) * 2),
        ("/var/ledger/shard-ab-000000.d19700101-99991231.v2.jsonl", ("1970-01-01", "9999-12-31")),
        ("shard-0123456789ab-000003.v2.jsonl", None),  # entries of no day, or an earlier release
        ("journal-0123456789ab-000003.v2.jsonl.open", None),  # unsealed: anything
        ("journal-ab-000003.d20250601-20250603.v2.jsonl.open", None),
        ("shard-0123456789ab-000000.jsonl", None),  # format 1
        ("shard-ab-000000.d20250601-20250603.jsonl", None),  # not format 2
        ("shard-ab-000000.d20250631-20250701.v2.jsonl", None),  # no June 31st
        ("shard-ab-000000.d20250603-20250601.v2.jsonl", None),  # backwards
        ("shard-ab-000000.d20250601-20250603.v2.jsonl.damaged-20250604T000000Z", None),
        ("manifest-ab.json", None),
    ],
)
def test_a_files_range_of_days_is_in_its_name(name: str, days: tuple[str, str] | None) -> None:
    expected = None if days is None else (day(days[0]), day(days[1]))
    assert file_days(name) == expected


def test_a_range_is_written_as_its_name_reads_it() -> None:
    mark = days_mark(day("2024-12-31"), day("2025-01-02"))
    assert mark == ".d20241231-20250102"
    assert file_days(f"shard-ab-000001{mark}.v2.jsonl") == (day("2024-12-31"), day("2025-01-02"))
    assert day_iso(JUNE_1) == "2025-06-01" and day_iso(MAX_DAY + 5) == f"day {MAX_DAY + 5}"


RANGED = "shard-ab-000000.d20250601-20250603.v2.jsonl"


@pytest.mark.parametrize(
    ("messages", "read"),
    [
        ([kontagent(1, day("2025-06-02"))], True),
        ([kontagent(1, day("2025-06-01"))], True),  # the range's ends are in it
        ([kontagent(1, day("2025-06-03"))], True),
        ([kontagent(1, day("2025-05-31")), kontagent(2, day("2025-06-04"))], False),
        ([kontagent(1, day("2025-05-31")), kontagent(2, day("2025-06-03"))], True),
        ([], False),  # no message: nothing to match
        ([alias(1, day("2025-06-02"))], False),  # an alias is never in a ranged shard
        ([alias(1, None), kontagent(2, day("2025-07-01"))], False),
        ([kontagent(1, None)], True),  # unknown: may be filed under any day
        ([kontagent(1, day("2025-07-01")), kontagent(2, None)], True),
    ],
)
def test_a_run_reads_a_ranged_shard_only_when_a_message_of_its_days_may_be_in_it(
    messages: list[Message], read: bool
) -> None:
    days = LedgerDays.of(messages)
    assert days.reads(RANGED) is read
    # files without a range may hold anything: always read
    for always in ("shard-ab-000001.v2.jsonl", "journal-ab-000002.v2.jsonl.open", "x.jsonl"):
        assert days.reads(always)


def test_the_days_of_messages_seen_in_parts_add_up_to_the_days_of_all() -> None:
    messages = [kontagent(i, JUNE_1 + i % 3) for i in range(9)] + [alias(1, JUNE_1 + 9)]
    first, second = DaysSeen(), DaysSeen()
    for index, message in enumerate(messages):
        (first if index % 2 else second).add(message)
    first.merge(second)
    assert first.result() == LedgerDays.of(messages) == LedgerDays((JUNE_1, JUNE_1 + 1, JUNE_1 + 2))
    assert LedgerDays.of(messages).describe() == "2025-06-01 to 2025-06-03 (3 days)"
    assert LedgerDays.of([kontagent(1, None)]).describe().startswith("any day")
    assert LedgerDays.of([]).describe() == "no day"


def test_dated_entries_and_entries_of_no_day_are_sealed_into_shards_of_their_own(
    tmp_path: Path,
) -> None:
    writer = LedgerWriter(str(tmp_path), FINGERPRINTS, sync_seconds=None)
    june = [kontagent(i, day("2025-06-01") + i % 3) for i in range(6)]
    timeless = [alias(1, day("2025-06-02")), kontagent(99, None)]
    writer.record([*june[:3], timeless[0]])
    writer.record_one(timeless[1])
    writer.record_one(june[3], ambiguous=1)
    key = ledger_key(FINGERPRINTS["kontagent"], june[4])
    writer.record_keyed(key, "kontagent", "apa", 1_750_000_000, day=june[4].day)
    writer.record([june[5]])
    writer.close()

    dated, undated = shard_names(tmp_path)
    assert dated.endswith(".d20250601-20250603.v2.jsonl")
    assert undated.endswith(".v2.jsonl") and file_days(undated) is None
    by_file = {
        name: [checked_entry(line) for line in (tmp_path / name).read_bytes().splitlines()[:-1]]
        for name in (dated, undated)
    }
    assert [e["day"] for e in by_file[dated] if e] == [m.day for m in june]
    assert all(e is not None and "day" not in e for e in by_file[undated])
    assert len(by_file[undated]) == 2
    # the seal record says the range too; the manifest lists both
    assert seal_days((tmp_path / dated).read_bytes()) == (day("2025-06-01"), day("2025-06-03"))
    assert seal_days((tmp_path / undated).read_bytes()) is None
    [manifest] = tmp_path.glob("manifest-*.json")
    assert sorted(s["name"] for s in json.loads(manifest.read_text())["shards"]) == [
        dated,
        undated,
    ]
    state = inspect(str(tmp_path))
    assert state.damaged == [] and state.shards == 2 and state.entries == 8
    keys = {key for path in ledger_files(str(tmp_path)) for key in read_ledger_file(path)}
    assert keys == {ledger_key(FINGERPRINTS[m.destination], m) for m in [*june, *timeless]}


def test_each_journal_is_sealed_when_it_is_full_and_names_stay_unique(tmp_path: Path) -> None:
    writer = LedgerWriter(str(tmp_path), FINGERPRINTS, max_entries=2, sync_seconds=None)
    for index in range(5):
        writer.record_one(kontagent(index, JUNE_1 + index))
        writer.record_one(alias(index, JUNE_1 + index))
    assert len(shard_names(tmp_path)) == 4, "two full journals of each"
    writer.close()
    names = shard_names(tmp_path)
    assert len(names) == len(set(names)) == 6
    ranges = sorted(span for name in names if (span := file_days(name)) is not None)
    assert ranges == [(JUNE_1, JUNE_1 + 1), (JUNE_1 + 2, JUNE_1 + 3), (JUNE_1 + 4, JUNE_1 + 4)]
    assert inspect(str(tmp_path)).damaged == []


def test_a_kissmetrics_message_replayed_keeps_the_day_of_its_t(tmp_path: Path) -> None:
    sent = kissmetrics.record("bob", "Won", time=1_748_779_200)  # 2025-06-01T12:00:00Z
    replayed, _ = kissmetrics.parse_url(kissmetrics.url(sent, "http://x", "k"))
    assert replayed.day == sent.day == JUNE_1
    writer = LedgerWriter(str(tmp_path), FINGERPRINTS, sync_seconds=None)
    writer.record_one(replayed)
    writer.close()
    [name] = shard_names(tmp_path)
    assert file_days(name) == (JUNE_1, JUNE_1)


def test_a_shard_renamed_to_another_range_is_damage_and_repair_names_it_by_its_days(
    tmp_path: Path,
) -> None:
    writer = LedgerWriter(str(tmp_path), FINGERPRINTS, sync_seconds=None)
    messages = [kontagent(i, day("2025-06-01") + i) for i in range(3)]
    writer.record(messages)
    writer.close()
    [name] = shard_names(tmp_path)
    renamed = name.replace(".d20250601-20250603.", ".d20250601-20250602.")
    (tmp_path / name).rename(tmp_path / renamed)
    assert shard_damage((tmp_path / renamed).read_bytes())[0] is None, "its bytes are whole"

    state = inspect(str(tmp_path), parse_sealed=False)
    reasons = {d.name: d.reason for d in state.damaged}
    assert reasons[renamed] == (
        "its name gives the event days 2025-06-01 to 2025-06-02, its seal record 2025-06-01 to "
        "2025-06-03 (renamed?): runs of other days would not read entries it holds"
    )
    assert reasons[name] == f"missing (listed in {state.damaged[0].manifest})"
    lines, unknown = repair(str(tmp_path))
    assert not unknown
    assert lines[0].endswith(": 3 intact entries salvaged into it")
    [salvaged] = shard_names(tmp_path)
    assert salvaged.endswith(".d20250601-20250603.v2.jsonl")
    assert seal_days((tmp_path / salvaged).read_bytes()) == (day("2025-06-01"), day("2025-06-03"))
    assert inspect(str(tmp_path)).damaged == []
    assert {e["ledger"] for e in entries(tmp_path)} == {
        ledger_key(FINGERPRINTS["kontagent"], m) for m in messages
    }


def test_repair_of_entries_of_no_day_salvages_them_into_a_shard_without_a_range(
    tmp_path: Path,
) -> None:
    writer = LedgerWriter(str(tmp_path), FINGERPRINTS, sync_seconds=None)
    writer.record([kontagent(1, JUNE_1), alias(2, JUNE_1)])
    writer.close()
    for path in tmp_path.glob("shard-*"):
        data = path.read_bytes()
        path.write_bytes(data[: data.rindex(b'{"sealed"')])  # the seal records cut off
    repair(str(tmp_path))
    [salvaged] = shard_names(tmp_path)
    assert file_days(salvaged) is None, "one entry has no day: every run reads it"
    assert len(entries(tmp_path)) == 2


def test_a_ledger_with_shards_by_day_passes_the_check_before_sending(tmp_path: Path) -> None:
    identity = LedgerIdentity.of(
        {
            "kontagent": Endpoint("kontagent", "http://k.invalid", "key"),
            "kissmetrics": Endpoint("kissmetrics", "http://m.invalid", "key"),
        }
    )
    writer = LedgerWriter(str(tmp_path), dict(identity.fingerprints), sync_seconds=None)
    writer.record([kontagent(1, JUNE_1), alias(2, JUNE_1)])
    writer.close()
    assert prepare(str(tmp_path), identity, write=True) == []
    assert inspect(str(tmp_path)).format == 2


@pytest.fixture
def s3_ledger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """An ``s3://`` ledger on moto's S3 server on loopback, Beam's filesystems sent there."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    before = FileSystems._pipeline_options
    with moto_s3(monkeypatch, tmp_path) as (endpoint, bucket):
        try:
            FileSystems.set_options(PipelineOptions([f"--s3_endpoint_url={endpoint}"]))
            yield f"s3://{bucket}/ledger"
        finally:
            FileSystems._pipeline_options = before


def test_on_s3_the_buffered_shards_are_named_by_their_days_too(s3_ledger: str) -> None:
    writer = LedgerWriter(s3_ledger, FINGERPRINTS, sync_seconds=None)
    messages = [kontagent(1, JUNE_1), kontagent(2, JUNE_1 + 1), alias(3, JUNE_1)]
    writer.record(messages)
    writer.close()
    files = ledger_files(s3_ledger)
    [ranged] = [path for path in files if file_days(path)]
    assert file_days(ranged) == (JUNE_1, JUNE_1 + 1) and len(files) == 2
    assert not LedgerDays.of([kontagent(9, JUNE_1 + 5)]).reads(ranged)
    state = inspect(s3_ledger)
    assert state.damaged == [] and state.shards == 2 and state.entries == 3
