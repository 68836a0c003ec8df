"""The ledger's read (``beaconflow.transforms.ledger``): only the files of the messages' days.

A ledger of many old days' shards, the shard of the run's day, a shard of entries of no day,
a journal a killed run left and a file of ledger format 1; each test counts the files the
read opened (``read_ledger_file``, which ``LedgerKeys`` reads them with, in this process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beaconflow.delivery import ledger as ledger_module
from beaconflow.delivery.ledger import LedgerWriter, ledger_files, ledger_key
from beaconflow.delivery.ledger_days import file_days
from beaconflow.model.message import Message
from beaconflow.report.counts import TallyKey
from beaconflow.transforms.coders import MessageCoder
from beaconflow.transforms.coders import register as register_coders
from beaconflow.transforms.dedup import SKIPPED, DedupByKey
from beaconflow.transforms.ledger import KEYS, TALLY, ReadDelivered, days_seen

FINGERPRINT = "f" * 12
FINGERPRINTS = {"kontagent": FINGERPRINT, "kissmetrics": "e" * 12}
RUN_DAY = 20_240  # 2025-06-01
OLD_DAYS = range(RUN_DAY - 40, RUN_DAY - 10)


def kontagent(user: int, day: int | None) -> Message:
    return Message("kontagent", "apa", (("s", str(user)),), occurrence=f"{user:032x}", day=day)


def alias(user: int) -> Message:
    return Message("kissmetrics", "a", (("_p", str(user)), ("_n", f"u{user}")), day=RUN_DAY)


def key(message: Message) -> str:
    return ledger_key(FINGERPRINTS[message.destination], message)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """30 old days' shards; the run's day; an alias (no day); a journal; a format-1 file."""
    directory = tmp_path / "ledger"
    writer = LedgerWriter(str(directory), FINGERPRINTS, sync_seconds=None)
    for day in OLD_DAYS:
        writer.record([kontagent(day * 100 + n, day) for n in range(5)])
        writer.seal()
    writer.record([kontagent(1, RUN_DAY), kontagent(2, RUN_DAY), alias(3)])
    writer.close()
    killed = LedgerWriter(str(directory), FINGERPRINTS, sync_seconds=None)
    killed.record([kontagent(4, RUN_DAY)])  # never sealed: a journal, as after a SIGKILL
    legacy = directory / "shard-0123456789ab-000000.jsonl"
    legacy.write_text(f'{{"ledger": "{key(kontagent(5, RUN_DAY))}", "destination": "kontagent"}}\n')
    return directory


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The ledger files the pipeline's read opens (the runner runs in this process)."""
    paths: list[str] = []
    read = ledger_module.read_ledger_file

    def counting(path: str, legacy: object = None) -> Iterator[str]:
        paths.append(path.rpartition("/")[2])
        return read(path, legacy)  # type: ignore[arg-type]

    monkeypatch.setattr(ledger_module, "read_ledger_file", counting)
    yield paths


def _run(
    ledger: Path,
    messages: list[Message],
    keys: list[str],
    tallies: dict[str, int],
    fingerprints: list[str] | None = None,
) -> None:
    """Check the keys ReadDelivered gives for these messages, and its tallies."""
    register_coders()
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        seen = p | beam.Create(messages).with_output_types(Message) | beam.Map(days_seen)
        read = seen | ReadDelivered(ledger_files(str(ledger)), {}, fingerprints)
        assert_that(read[KEYS], equal_to(keys), label="keys")
        summed = (
            read[TALLY]
            | beam.Map(lambda tally: (TallyKey(*tally[0]).counter, tally[1]))
            | beam.CombinePerKey(sum)
        )
        assert_that(summed, equal_to(list(tallies.items())), label="tallies")


def _names(ledger: Path) -> tuple[set[str], set[str]]:
    """The ledger's files with a range of days, and those without."""
    names = {path.rpartition("/")[2] for path in ledger_files(str(ledger))}
    ranged = {name for name in names if file_days(name) is not None}
    return ranged, names - ranged


def test_a_run_of_one_day_reads_that_days_shard_and_the_files_without_a_range(
    ledger: Path, opened: list[str]
) -> None:
    ranged, unranged = _names(ledger)
    assert len(ranged) == len(OLD_DAYS) + 1 and len(unranged) == 3  # no day, journal, format 1
    expected = [kontagent(n, RUN_DAY) for n in (1, 2, 4, 5)] + [alias(3)]
    _run(
        ledger,
        [kontagent(1, RUN_DAY), kontagent(9, RUN_DAY), alias(3)],
        [key(m) for m in expected],
        {"ledger_files_read": 4, "ledger_files_skipped": len(OLD_DAYS)},
    )
    [today] = [name for name in ranged if file_days(name) == (RUN_DAY, RUN_DAY)]
    assert sorted(opened) == sorted({today} | unranged)


def test_a_message_of_unknown_day_makes_the_run_read_every_file(
    ledger: Path, opened: list[str]
) -> None:
    every = [kontagent(day * 100 + n, day) for day in OLD_DAYS for n in range(5)]
    every += [kontagent(n, RUN_DAY) for n in (1, 2, 4, 5)] + [alias(3)]
    _run(
        ledger,
        [kontagent(1, RUN_DAY), kontagent(7, None)],
        [key(m) for m in every],
        {"ledger_files_read": len(OLD_DAYS) + 4},
    )
    assert sorted(opened) == sorted(p.rpartition("/")[2] for p in ledger_files(str(ledger)))


def test_a_run_of_other_days_reads_only_their_shards(ledger: Path, opened: list[str]) -> None:
    old = OLD_DAYS[3]
    shards = [kontagent(day * 100 + n, day) for day in (old, old + 1) for n in range(5)]
    unranged = [kontagent(n, RUN_DAY) for n in (4, 5)] + [alias(3)]
    _run(
        ledger,
        [kontagent(old * 100, old), kontagent(1, old + 1)],
        [key(m) for m in shards + unranged],
        {"ledger_files_read": 5, "ledger_files_skipped": len(OLD_DAYS) - 1},
    )
    assert sorted(span for name in opened if (span := file_days(name))) == [
        (old, old),
        (old + 1, old + 1),
    ]


def test_no_message_reads_only_the_files_without_a_range(ledger: Path, opened: list[str]) -> None:
    unranged = [kontagent(n, RUN_DAY) for n in (4, 5)] + [alias(3)]
    _run(
        ledger,
        [],
        [key(m) for m in unranged],
        {"ledger_files_read": 3, "ledger_files_skipped": len(OLD_DAYS) + 1},
    )
    assert len(opened) == 3 and all(file_days(name) is None for name in opened)


def test_with_the_dedup_the_messages_delivered_before_are_skipped(ledger: Path) -> None:
    """What the wiring does: the keys read join the dedup; delivered messages are skipped."""
    register_coders()
    messages = [kontagent(n, RUN_DAY) for n in (1, 2, 4, 5, 6)] + [alias(3), alias(8)]
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        keyed = p | beam.Create([(key(m), m) for m in messages]).with_output_types(
            tuple[str, Message]
        )
        read = (
            p
            | "Messages" >> beam.Create(messages).with_output_types(Message)
            | beam.Map(days_seen)
            | ReadDelivered(ledger_files(str(ledger)), {})
        )
        out = keyed | DedupByKey(MessageCoder(), delivered=read[KEYS])
        assert_that(
            out.unique | beam.Map(lambda kv: kv[1].param("s") or kv[1].param("_p")),
            equal_to(["6", "8"]),
            label="sent",
        )
        assert_that(
            out[SKIPPED] | beam.Map(lambda kept: kept[0].param("s") or kept[0].param("_p")),
            equal_to(["1", "2", "4", "5", "3"]),
            label="skipped",
        )


def test_another_endpoints_entries_of_the_same_days_are_left_out(ledger: Path) -> None:
    """A ledger shared with another app: its entries cannot match; the join does not hold them."""
    other = {"kontagent": "0" * 12, "kissmetrics": "1" * 12}
    writer = LedgerWriter(str(ledger), other, sync_seconds=None)
    writer.record([kontagent(n, RUN_DAY) for n in (1, 2, 50, 51)])
    writer.close()
    ours = [kontagent(n, RUN_DAY) for n in (1, 2, 4, 5)] + [alias(3)]
    theirs = [ledger_key(other["kontagent"], kontagent(n, RUN_DAY)) for n in (1, 2, 50, 51)]
    read = {"ledger_files_read": 5, "ledger_files_skipped": len(OLD_DAYS)}
    _run(ledger, [kontagent(1, RUN_DAY)], [key(m) for m in ours], read, list(FINGERPRINTS.values()))
    # without the run's fingerprints, every key of the files read
    _run(ledger, [kontagent(1, RUN_DAY)], [key(m) for m in ours] + theirs, read)
