"""The cost of a large ledger: the driver's integrity check, the pipeline's read, a whole run.

Builds a ledger of N entries with the ledger's own writer (:class:`LedgerWriter`: sealed
shards of ``--per-shard`` entries, one manifest per writer of ``--per-writer`` entries, as
runs' sender processes leave them; several writers at once, one process per core), then
times, each in a fresh process (its own peak RSS):

- ``check``: what a run does before sending (``ledger_check.prepare``), and its parts: the
  seal records alone (each shard read and hashed, no entry parsed) and every entry parsed;
- ``keys``: the pipeline's read of the ledger keys (``LedgerKeys`` over every file, no Beam);
- ``run``: a whole ``--dry-run`` (or ``--sandbox``) of a small input with that ledger and
  without it.

and prints entries/s, MB/s and peak RSS. ``--keep DIR`` builds the ledger there once and
reuses it on later runs (a sandbox run adds its few deliveries to it). Run::

    .venv/bin/python -m benchmarks.ledger_check --entries 5000000
    .venv/bin/python -m benchmarks.ledger_check --entries 10000000 --keep /tmp/ledger-10m --skip-run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from beaconflow.delivery.ledger import (
    SHARD_SUFFIX,
    LedgerKeys,
    LedgerWriter,
    file_entries,
    ledger_files,
    write_atomically,
)
from beaconflow.delivery.ledger_check import LEDGER_JSON, prepare, shard_damage
from beaconflow.delivery.ledger_identity import LedgerIdentity, descriptor_name
from beaconflow.pipelines.options import configure
from beaconflow.samples.gamelog import generate_events, write_jsonl

#: Message kinds per destination, roughly in the proportions a game's logs give.
KINDS = {"kontagent": ("apa", "pgr", "evt", "cpu", "mtu"), "kissmetrics": ("e", "s")}
#: When the generated deliveries happened (the entries' ``at``).
AT = 1_750_000_000


def sandbox_identity() -> LedgerIdentity:
    """The fingerprints of a ``--sandbox`` run: the ledger is one its runs would have written."""
    config = configure(["--sandbox", "--input=unused"], now=AT)
    return LedgerIdentity.of(config.endpoints, sandbox=True)


def _write_writer(job: tuple[str, int, int, int, dict[str, str]]) -> int:
    """One writer's entries, as one sender of one run records them; how many were written."""
    directory, seed, entries, per_shard, fingerprints = job
    rng = random.Random(seed)
    writer = LedgerWriter(directory, fingerprints, max_entries=per_shard, sync_seconds=None)
    destinations = sorted(fingerprints)
    for index in range(entries):
        destination = destinations[index % len(destinations)]
        kinds = KINDS[destination]
        key = f"{fingerprints[destination]}:{rng.getrandbits(128):032x}"
        writer.record_keyed(key, destination, kinds[index % len(kinds)], AT + index // 1000)
    writer.close()
    return entries


def build(directory: Path, entries: int, per_shard: int, per_writer: int) -> float:
    """Write a ledger of ``entries`` entries into ``directory``; the seconds it took."""
    identity = sandbox_identity()
    directory.mkdir(parents=True, exist_ok=True)
    jobs = []
    for seed, start in enumerate(range(0, entries, per_writer)):
        count = min(per_writer, entries - start)
        jobs.append((str(directory), seed, count, per_shard, identity.fingerprints))
    started = time.monotonic()
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        written = sum(pool.imap_unordered(_write_writer, jobs))
    write_atomically(str(directory), LEDGER_JSON, b'{"format": 2}\n')
    for fingerprint in identity.descriptors:
        write_atomically(
            str(directory), descriptor_name(fingerprint), identity.descriptor_bytes(fingerprint)
        )
    assert written == entries
    return time.monotonic() - started


def ledger_size(directory: Path) -> tuple[int, int]:
    """The ledger's shard and journal files, and their bytes."""
    files = ledger_files(str(directory))
    return len(files), sum(os.path.getsize(path) for path in files)


def _timed(phase: str, directory: str) -> dict[str, Any]:
    """One phase, in this process: wall and CPU seconds, entries seen (-1: not said).

    The files are listed before the clock starts (``ledger_files`` imports Beam, which a
    run has done by then); ``prepare`` lists them itself, without Beam, on a local disk.
    """
    files = ledger_files(directory)
    identity = sandbox_identity()
    started, cpu = time.monotonic(), time.process_time()
    entries = 0
    if phase == "check":
        prepare(directory, identity, write=False)
        entries = -1  # prepare does not say; the caller knows
    elif phase == "seals":
        for path in files:
            if path.endswith(SHARD_SUFFIX):
                reason, count = shard_damage(Path(path).read_bytes())
                assert reason is None, (path, reason)
                entries += count or 0
    elif phase == "parse":
        for path in files:
            read, _ = file_entries(path, Path(path).read_bytes())
            entries += len(read)
    elif phase == "keys":
        keys = LedgerKeys(identity.legacy)
        for path in files:
            for _ in keys(path):
                entries += 1
    else:
        raise ValueError(phase)
    return {
        "seconds": time.monotonic() - started,
        "cpu_s": time.process_time() - cpu,
        "entries": entries,
    }


def measure(phase: str, directory: Path) -> dict[str, Any]:
    """Run one phase in a fresh process; its result with its peak RSS in MB."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ledger_check", "--phase", phase, str(directory)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


#: Runs the command as its only child, then prints the child tree's largest peak RSS
#: (getrusage of children cannot be reset: a fresh parent per run gives each run's own).
_MEASURE = """
import json, resource, subprocess, sys, time
started = time.monotonic()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
elapsed = time.monotonic() - started
if done.returncode not in (0, 3):
    sys.stderr.write(done.stderr.decode(errors="replace"))
    sys.exit(1)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": elapsed, "cpu_s": usage.ru_utime + usage.ru_stime,
                  "peak_mb": usage.ru_maxrss / 1024}))
"""


def whole_run(events: Path, out: Path, ledger: Path | None, *, sandbox: bool) -> dict[str, Any]:
    """One run of the command on ``events``, with ``ledger`` or none; wall s, CPU s, peak MB."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "beaconflow",
        f"--input={events}",
        f"--dead-letter={out / 'dead.jsonl'}",
        f"--report={out / 'report.json'}",
        "--max-errors=1000000",
        "--direct_running_mode=in_memory",
    ]  # fmt: skip
    # --sandbox --dry-run is refused since issue 18: the dry run's endpoints are the default
    # URLs with placeholder keys, so the ledger's sandbox entries are other endpoints' to it
    argv.append("--sandbox" if sandbox else f"--dry-run={out / 'dry-run.jsonl'}")
    if ledger is not None:
        argv.append(f"--ledger={ledger}")
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"the run failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _rate(entries: int, size: int, result: dict[str, Any]) -> str:
    """Rates per CPU second: on a shared machine the wall clock says more of the others."""
    seconds, cpu = result["seconds"], result["cpu_s"]
    return (
        f"{seconds:6.2f} s wall {cpu:6.2f} CPU s  {entries / cpu:>10,.0f} entries/CPU s  "
        f"{size / cpu / 1e6:5.0f} MB/CPU s  peak RSS {result['peak_mb']:5.0f} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=5_000_000, help="default 5,000,000")
    parser.add_argument(
        "--per-shard", type=int, default=20_000, help="entries per sealed shard (default 20,000)"
    )
    parser.add_argument(
        "--per-writer",
        type=int,
        default=200_000,
        help="entries per writer, i.e. per manifest (default 200,000)",
    )
    parser.add_argument("--keep", type=Path, help="build the ledger here once, reuse it after")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each phase (default 3)")
    parser.add_argument("--events", type=int, default=300, help="events of the small input")
    parser.add_argument("--sandbox", action="store_true", help="send to the collector")
    parser.add_argument("--skip-run", action="store_true", help="no whole runs")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("directory", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        result = _timed(args.phase, args.directory)
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="ledger-check-") as scratch:
        base = Path(scratch)
        ledger = args.keep or base / "ledger"
        if not ledger.exists():
            seconds = build(ledger, args.entries, args.per_shard, args.per_writer)
            print(f"built {args.entries:,} entries in {seconds:.1f} s", flush=True)
        files, size = ledger_size(ledger)
        entries = measure("keys", ledger)["entries"]
        print(
            f"ledger: {entries:,} entries, {files:,} files, {size / 1e6:,.0f} MB "
            f"({size / entries:.0f} bytes/entry), {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} (other work on the machine slows the wall clock)",
            flush=True,
        )
        labels = {
            "check": "a. the driver's check (prepare)",
            "seals": "   a1. seal records only (read, SHA-256)",
            "parse": "   a2. every entry parsed (read, CRC, JSON)",
            "keys": "b. the pipeline's read (LedgerKeys)",
        }
        medians: dict[str, float] = {}
        for phase, label in labels.items():
            runs = [measure(phase, ledger) for _ in range(args.repeat)]
            for run in runs:
                print(f"{label:<46} {_rate(entries, size, run)}", flush=True)
            medians[phase] = statistics.median(r["cpu_s"] for r in runs)
        if args.skip_run:
            return 0
        what = "sandbox run" if args.sandbox else "dry run"
        runs_with: list[float] = []  # CPU seconds
        for turn in range(args.repeat):
            # a sandbox run records its deliveries: new events each turn, or it sends nothing
            events = base / f"events-{turn}.jsonl"
            seed = 7 + turn if args.sandbox else 7
            start = datetime(2025, 6, 1, tzinfo=UTC)
            write_jsonl(generate_events(args.events, seed=seed, start=start), events)
            without = whole_run(events, base / f"out-{turn}", None, sandbox=args.sandbox)
            with_ledger = whole_run(events, base / f"out-{turn}", ledger, sandbox=args.sandbox)
            runs_with.append(with_ledger["cpu_s"])
            for label, result in (("without", without), ("with the ledger", with_ledger)):
                print(
                    f"c. {what} of {args.events} events, {label:<16} "
                    f"{result['seconds']:7.2f} s wall  {result['cpu_s']:7.2f} CPU s  "
                    f"peak RSS {result['peak_mb']:5.0f} MB",
                    flush=True,
                )
        share = medians["check"] / statistics.median(runs_with)
        print(f"the check's share of a {what}'s CPU with the ledger (medians): {share:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
