"""The ledger's integrity and identity, through whole runs and the command.

A damaged ledger stops the run before sending; ``beaconflow ledger verify|repair``; the
ledger's identity (URL, key, ``--ledger-app``, the sandbox) and the upgrade from format 1.
Real files, real processes where the command is involved, the collector counting what
arrives.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from beaconflow.sandbox.collector import Collector
from tests.conftest import (
    KISSMETRICS_KEY,
    KONTAGENT_KEY,
    KONTAGENT_SECRET,
    backfill_flags,
    june_events,
    run_cli,
    run_json,
)

NOW = 1_800_000_000
FIXTURE = Path(__file__).parent.parent / "fixtures" / "ledger_v1"


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return june_events(tmp_path_factory.mktemp("logs"), 120, seed=7, days=3)


def _shards(ledger: Path) -> list[Path]:
    return sorted(ledger.glob("shard-*.v2.jsonl"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _zero_fill(path: Path) -> None:
    path.write_bytes(b"\0" * path.stat().st_size)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


def _delete(path: Path) -> None:
    path.unlink()


DAMAGES: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "zero-filled": _zero_fill,
    "flipped byte": _flip_byte,
    "listed but missing": _delete,
}


def _first_run(collector: Collector, events_file: Path, out: Path, ledger: Path) -> int:
    flags = backfill_flags(collector.base_url, out, events_file, extra=(f"--ledger={ledger}",))
    status, report = run_json(flags, now=NOW)
    assert status == 0 and report["messages_delivered"] > 100
    assert _shards(ledger)
    return int(report["messages_delivered"])


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_shard_stops_the_run_then_repair_resends_only_what_was_lost(
    collector: Collector, events_file: Path, tmp_path: Path, damage: str
) -> None:
    ledger = tmp_path / "ledger"
    delivered = _first_run(collector, events_file, tmp_path, ledger)
    victim = max(_shards(ledger), key=lambda p: p.stat().st_size)
    DAMAGES[damage](victim)
    before = len(collector.accepted())
    flags = backfill_flags(collector.base_url, tmp_path, events_file, extra=(f"--ledger={ledger}",))

    stopped = run_cli(*flags)
    assert stopped.returncode == 2, stopped.stderr
    assert len(stopped.stderr.splitlines()) == 1, stopped.stderr
    [line] = stopped.stderr.splitlines()
    assert line.startswith(f"beaconflow: error: the ledger is damaged: {victim.name}: ")
    assert "nothing was sent" in line and "beaconflow ledger repair" in line
    assert len(collector.accepted()) == before and collector.counts().get("arrived", 0) == before

    verify = run_cli("ledger", "verify", str(ledger))
    assert verify.returncode == 1
    assert verify.stdout.splitlines()[0].startswith(f"{victim.name}: damaged: ")
    assert verify.stdout.splitlines()[-1].startswith(f"{ledger}: damaged: ")

    repaired = run_cli("ledger", "repair", str(ledger))
    assert repaired.returncode == 0, repaired.stderr
    last = repaired.stdout.splitlines()[-1]
    assert last.startswith(f"{ledger}: repaired: ") and "cannot be known" not in last
    lost = int(last.split(": repaired: ")[1].split()[0])
    assert lost > 0
    if damage != "listed but missing":
        assert list(ledger.glob(f"{victim.name}.damaged-*")), "set aside, never deleted"
    assert run_cli("ledger", "verify", str(ledger)).returncode == 0

    status, report = run_json(flags, now=NOW)
    assert status == 0 and report["invariant_errors"] == []
    assert report["messages_delivered"] == lost, "only the lost entries are sent again"
    assert report["messages_skipped"] == delivered - lost
    assert len(collector.accepted()) == before + lost


def test_a_journal_torn_by_a_kill_is_tolerated(
    collector: Collector, events_file: Path, tmp_path: Path
) -> None:
    """What a killed run leaves (an unsealed journal, its last line torn) stops nothing."""
    ledger = tmp_path / "ledger"
    delivered = _first_run(collector, events_file, tmp_path, ledger)
    shard = max(_shards(ledger), key=lambda p: p.stat().st_size)
    # as if the run had been killed before sealing it: a journal, which no manifest lists
    lines = shard.read_bytes().split(b"\n")[:-2]  # its entries, without the seal record
    journal = ledger / shard.name.replace("shard-", "journal-").replace(".jsonl", ".jsonl.open")
    journal.write_bytes(b"\n".join(lines)[:-7])  # the last line torn
    shard.unlink()
    for manifest in ledger.glob("manifest-*.json"):
        listing = json.loads(manifest.read_text())
        listing["shards"] = [s for s in listing["shards"] if s["name"] != shard.name]
        manifest.write_text(json.dumps(listing))
    flags = backfill_flags(collector.base_url, tmp_path, events_file, extra=(f"--ledger={ledger}",))
    done = run_cli(*flags)
    assert done.returncode == 0, done.stderr
    assert "1 unreadable line skipped (a torn write)" in done.stderr
    assert len(collector.accepted()) == delivered + 1, "the torn entry alone is sent again"


def test_a_ledger_written_by_the_release_before_is_honoured(
    collector: Collector, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    shutil.copytree(FIXTURE / "ledger", ledger)
    legacy = {p.name: p.read_bytes() for p in ledger.iterdir()}
    flags = backfill_flags(
        collector.base_url, tmp_path, FIXTURE / "events.jsonl", extra=(f"--ledger={ledger}",)
    )
    done = run_cli(*flags)
    assert done.returncode == 0, done.stderr
    assert "the ledger holds" not in done.stderr
    assert collector.accepted() == [], "nothing the old ledger holds is sent again"
    assert (ledger / "ledger.json").read_text() == '{"format": 2}\n'
    assert {p.name: p.read_bytes() for p in ledger.iterdir() if p.name in legacy} == legacy
    verify = run_cli("ledger", "verify", str(ledger))
    assert verify.returncode == 0
    assert "0 sealed shards, 0 journals, 1 format-1 files, 119 entries" in verify.stdout


def test_ledger_app_adopts_format1_entries_so_a_key_rotation_keeps_them(tmp_path: Path) -> None:
    """Format-1 entries are known by their key only: --ledger-app copies them, once."""
    ledger = tmp_path / "ledger"
    shutil.copytree(FIXTURE / "ledger", ledger)
    extra = (f"--ledger={ledger}", "--ledger-app=space-game")
    events = FIXTURE / "events.jsonl"
    with Collector() as collector:  # takes any key
        flags = backfill_flags(collector.base_url, tmp_path / "first", events, extra=extra)
        first = run_cli(*flags)
        assert first.returncode == 0, first.stderr
        assert collector.accepted() == []
        copied = sum(json.loads(p.read_text())["entries"] for p in ledger.glob("adopted-*"))
        assert copied == 119  # every entry of the fixture, both destinations
        rotated = [
            flag.replace(KONTAGENT_KEY, "rotated-kt-key-0123456789").replace(
                KISSMETRICS_KEY, "rotated-km-key-0123456789"
            )
            for flag in backfill_flags(collector.base_url, tmp_path / "next", events, extra=extra)
        ]
        second = run_cli(*rotated)
        assert second.returncode == 0, second.stderr
        assert collector.accepted() == [], "a rotated key resends nothing the old ledger holds"
        assert "the ledger holds" not in second.stderr
    # adopted once: the second run (another key) had nothing of format 1 to adopt
    assert len(list(ledger.glob("adopted-*"))) == 2
    for path in ledger.iterdir():
        assert KONTAGENT_KEY.encode() not in path.read_bytes(), path.name


def _flags(url: str, key: str, out: Path, events: Path, *extra: str) -> list[str]:
    """A run to both destinations at ``url`` with ``key`` as both API keys."""
    return [
        f"--input={events}",
        f"--kontagent-api-key={key}",
        f"--kontagent-url={url}",
        f"--kissmetrics-api-key={key}",
        f"--kissmetrics-url={url}",
        f"--report={out / 'report.json'}",
        f"--dead-letter={out / 'dead.jsonl'}",
        *extra,
    ]


def test_ledger_app_keeps_the_ledger_across_a_key_rotation(
    events_file: Path, tmp_path: Path
) -> None:
    ledger = f"--ledger={tmp_path / 'ledger'}"
    app = "--ledger-app=space-game"
    with Collector() as collector:  # takes any key
        url = collector.base_url
        first = run_cli(
            *_flags(url, "old-key-0123456789abcdef", tmp_path, events_file, ledger, app)
        )
        assert first.returncode == 0, first.stderr
        sent = len(collector.accepted())
        rotated = run_cli(
            *_flags(url, "new-key-fedcba9876543210", tmp_path, events_file, ledger, app)
        )
        assert rotated.returncode == 0, rotated.stderr
        assert len(collector.accepted()) == sent, (
            "a key rotation under --ledger-app resends nothing"
        )
        assert "the ledger holds" not in rotated.stderr

        # without --ledger-app, another key is another app: warned, then sent
        other = run_cli(*_flags(url, "third-key-00000000000000", tmp_path, events_file, ledger))
        assert other.returncode == 0, other.stderr
        warnings = [line for line in other.stderr.splitlines() if "the ledger holds" in line]
        assert len(warnings) == 2  # one per destination
        assert "--ledger-app 'space-game' instead of the API key" in warnings[0]
        assert len(collector.accepted()) == 2 * sent
    for path in (tmp_path / "ledger").iterdir():
        data = path.read_bytes()
        for key in ("old-key-0123456789abcdef", "new-key-fedcba9876543210", "third-key"):
            assert key.encode() not in data, f"a key in {path.name}"


def test_a_url_change_warns_before_sending_and_normalised_urls_are_one(
    events_file: Path, tmp_path: Path
) -> None:
    ledger = f"--ledger={tmp_path / 'ledger'}"
    with Collector() as collector:
        url = collector.base_url  # http://127.0.0.1:PORT
        first = run_cli(*_flags(url, "a-key-0123456789", tmp_path, events_file, ledger))
        assert first.returncode == 0, first.stderr
        sent = len(collector.accepted())
        same = url.replace("http://", "HTTP://") + "/"
        again = run_cli(*_flags(same, "a-key-0123456789", tmp_path, events_file, ledger))
        assert again.returncode == 0 and "the ledger holds" not in again.stderr
        assert len(collector.accepted()) == sent

        moved = url.replace("127.0.0.1", "localhost")
        other = run_cli(*_flags(moved, "a-key-0123456789", tmp_path, events_file, ledger))
        assert other.returncode == 0, other.stderr
        warnings = [line for line in other.stderr.splitlines() if "the ledger holds" in line]
        assert len(warnings) == 2
        assert f"another URL ({url})" in warnings[0] and "a-key" not in other.stderr
        assert "none for this run's endpoint" in warnings[0]
        assert len(collector.accepted()) == 2 * sent


def test_sandbox_runs_keep_their_ledger_whatever_the_collectors_port(tmp_path: Path) -> None:
    sample = Path(__file__).parent.parent.parent / "sample_data"
    flags = [
        "--sandbox",
        f"--input={sample}/game_events*",
        "--max-errors=3",
        f"--ledger={tmp_path / 'ledger'}",
        f"--report={tmp_path / 'report.json'}",
        f"--dead-letter={tmp_path / 'dead.jsonl'}",
    ]
    status, first = run_json(flags, now=NOW)
    assert status == 0 and first["messages_delivered"] > 0
    status, second = run_json(flags, now=NOW)  # another collector, another port
    assert status == 0
    assert second["messages_delivered"] == 0
    assert second["messages_skipped"] == first["messages_delivered"]


def test_the_test_keys_are_never_written_into_the_ledger(
    collector: Collector, events_file: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    _first_run(collector, events_file, tmp_path, ledger)
    for path in ledger.iterdir():
        data = path.read_bytes()
        for secret in (KONTAGENT_KEY, KISSMETRICS_KEY, KONTAGENT_SECRET):
            assert secret.encode() not in data, f"a secret in {path.name}"
