"""A ledger of a previous large run, and a real send of one day's events against it.

Builds a ledger as a year of nightly runs leaves it: ``--entries`` deliveries (5,000,000 by
default) spread over the ``--days`` days (365) before the run's day, written by the
ledger's own writer (:class:`~beaconflow.delivery.ledger.LedgerWriter`, one process per
core), each day's entries sealed into a shard named with its day. Then sends ``--events``
events of one day (50,000) with the ``beaconflow`` command, each run a fresh process, to
nginx answering the 1x1 GIF on loopback (the server of ``benchmarks/throughput.py``; the
aiohttp server of the same module when nginx is not installed):

- ``empty``: with an empty ledger;
- ``large``: with the large ledger (the files the run adds are removed after each run, so
  every run finds the same ledger);
- ``unranged``: with the same ledger as a release before shards by day would have left it
  (the same files, hard-linked without the range in their names, manifests to match): what
  every run paid before (``--skip-unranged`` leaves it out).

For each run it prints the wall time, the CPU seconds of the run and its sender processes,
the peak RSS of every process of the run (sampled from ``/proc`` every 0.1 s) and of the
largest one (exact, from ``wait4``), and the report's ledger files read and passed over.
The cases alternate, so that load from other work on the machine falls on each alike. Run::

    .venv/bin/python -m benchmarks.ledger_days
    .venv/bin/python -m benchmarks.ledger_days --entries 1000000 --repeat 1 --keep /tmp/ledger-1m
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from beaconflow.delivery.ledger import LedgerWriter, ledger_files, manifest_bytes, write_atomically
from beaconflow.delivery.ledger_check import LEDGER_JSON
from beaconflow.delivery.ledger_days import file_days
from beaconflow.delivery.ledger_identity import LedgerIdentity, descriptor_name
from beaconflow.pipelines.options import configure
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import unused_port
from benchmarks.throughput import _start_server

#: The run's day: its events are of this UTC day; the ledger's days are the ones before.
RUN_DAY = date(2025, 6, 1)
KONTAGENT_KEY = "bench0000000000000000000000000001"
KISSMETRICS_KEY = "bench-kissmetrics"
#: Message kinds per destination, roughly in the proportions a game's logs give.
KINDS = {"kontagent": ("apa", "pgr", "evt", "cpu", "mtu"), "kissmetrics": ("e", "s")}
#: Where a kept ledger remembers the port its fingerprints were made with.
_PORT_FILE = "benchmark-port"


def run_flags(events: Path, base: str, out: Path, ledger: Path) -> list[str]:
    """The command's flags: both destinations to ``base``, the ledger, outputs in ``out``."""
    return [
        f"--input={events}",
        f"--kontagent-api-key={KONTAGENT_KEY}",
        f"--kontagent-url={base}",
        f"--kissmetrics-api-key={KISSMETRICS_KEY}",
        f"--kissmetrics-url={base}",
        f"--report={out / 'report.json'}",
        f"--dead-letter={out / 'dead.jsonl'}",
        f"--ledger={ledger}",
    ]


def _epoch_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def _write_days(job: tuple[str, int, list[tuple[int, int]], dict[str, str]]) -> int:
    """One writer's days: each day's entries, then a seal (a shard a day)."""
    directory, seed, days, fingerprints = job
    rng = random.Random(seed)
    writer = LedgerWriter(directory, fingerprints, max_entries=1 << 30, sync_seconds=None)
    destinations = sorted(fingerprints)
    written = 0
    for day, count in days:
        at = day * 86_400 + 90_000  # the next day's early morning: a nightly run
        for index in range(count):
            destination = destinations[index % len(destinations)]
            kinds = KINDS[destination]
            key = f"{fingerprints[destination]}:{rng.getrandbits(128):032x}"
            writer.record_keyed(key, destination, kinds[index % len(kinds)], at, day=day)
        writer.seal()
        written += count
    writer.close()
    return written


def build(directory: Path, entries: int, days: int, fingerprints: dict[str, str]) -> float:
    """The ledger of ``entries`` deliveries over the ``days`` days before the run's; seconds."""
    directory.mkdir(parents=True, exist_ok=True)
    last = _epoch_day(RUN_DAY) - 1
    per_day = [(last - k, entries // days + (k < entries % days)) for k in range(days)]
    writers = os.cpu_count() or 1
    jobs = [(str(directory), seed, per_day[seed::writers], fingerprints) for seed in range(writers)]
    started = time.monotonic()
    with multiprocessing.Pool(writers) as pool:
        written = sum(pool.imap_unordered(_write_days, jobs))
    assert written == entries
    write_atomically(str(directory), LEDGER_JSON, b'{"format": 2}\n')
    return time.monotonic() - started


def unranged_copy(source: Path, target: Path) -> None:
    """The ledger as a release before shards by day left it: no range in the shards' names."""
    target.mkdir(parents=True)
    renamed: dict[str, str] = {}
    for path in source.iterdir():
        name = path.name
        if name.startswith("shard-") and file_days(name) is not None:
            stem, _, _ = name.partition(".d")
            renamed[name] = f"{stem}.v2.jsonl"
            os.link(path, target / renamed[name])
        elif not name.startswith("manifest-"):
            shutil.copy2(path, target / name)
    for manifest in source.glob("manifest-*.json"):
        listed = json.loads(manifest.read_text())
        shards = [(renamed.get(s["name"], s["name"]), s["entries"]) for s in listed["shards"]]
        (target / manifest.name).write_bytes(manifest_bytes(listed["writer"], shards))


def _children(pid: int) -> list[int]:
    """The live descendants of a process (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _command(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _peak_kb(pid: int, parent: bytes | None) -> tuple[str, int] | None:
    """A process's name (what it runs) and peak RSS so far, in kB (VmHWM).

    None for a process that is gone, one that is changing what it runs, and a fork of the
    run's own process that has not run its command yet (it shows its parent's peak).
    """
    command = _command(pid)
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    if command is None or command != _command(pid) or (parent is not None and command == parent):
        return None
    peak = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    if peak is None:
        return None
    what = "sender" if b"sendproc" in command else "worker"
    return what, int(peak.split()[1])


def measured_run(flags: list[str], log: Path) -> dict[str, Any]:
    """One run of the command: wall s, CPU s, the peak RSS of each process and the largest.

    Its stderr goes to ``log``.
    """
    started = time.monotonic()
    with log.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "beaconflow", *flags], stdout=subprocess.DEVNULL, stderr=stderr
        )
    peaks: dict[int, tuple[str, int]] = {}
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        parent = _command(child.pid)
        for each in (child.pid, *_children(child.pid)):
            seen = _peak_kb(each, None if each == child.pid else parent)
            if seen is not None:
                what = "pipeline" if each == child.pid else seen[0]
                peaks[each] = (what, max(seen[1], peaks.get(each, ("", 0))[1]))
        time.sleep(0.1)
    child.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"the run exited {code}:\n{log.read_text(errors='replace')[-3000:]}")
    return {
        "seconds": time.monotonic() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "largest_mb": usage.ru_maxrss / 1024,
        "processes_mb": sorted(
            ((what, kb / 1024) for what, kb in peaks.values()), key=lambda p: (p[0], -p[1])
        ),
    }


def _reset(ledger: Path, before: set[str]) -> None:
    """Take out what a run added to the ledger, so that the next finds it as it was."""
    for path in ledger.iterdir():
        if path.name not in before:
            path.unlink()


def one_run(case: str, ledger: Path, events: Path, base: str, out: Path) -> dict[str, Any]:
    """A run of ``case`` against ``ledger``, which is as it was afterwards."""
    before = {path.name for path in ledger.iterdir()} if ledger.exists() else set()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    result = measured_run(run_flags(events, base, out, ledger), out.parent / f"{case}.log")
    report = json.loads((out / "report.json").read_text())
    sent = report["messages_delivered"] + report["messages_duplicate"]
    if sent != report["messages_built"] or report["invariant_errors"]:
        raise SystemExit(f"{case}: not every message was delivered: {report}")
    result["case"] = case
    for key in ("messages_delivered", "ledger_files_read", "ledger_files_skipped"):
        result[key] = report[key]
    if ledger.exists():
        _reset(ledger, before)
    return result


def _line(result: dict[str, Any]) -> str:
    processes = ", ".join(f"{what} {mb:.0f}" for what, mb in result["processes_mb"])
    return (
        f"{result['case']:<9} {result['seconds']:7.1f} s wall {result['cpu_s']:7.1f} CPU s  "
        f"largest {result['largest_mb']:5.0f} MB  files read {result['ledger_files_read']:>4}, "
        f"passed over {result['ledger_files_skipped']:>4}  "
        f"({result['messages_delivered']:,} delivered; peak MB: {processes})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=5_000_000, help="default 5,000,000")
    parser.add_argument("--days", type=int, default=365, help="days of the ledger (365)")
    parser.add_argument("--events", type=int, default=50_000, help="events of the run's day")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case (default 3)")
    parser.add_argument("--keep", type=Path, help="build the ledger here once, reuse it after")
    parser.add_argument("--skip-unranged", action="store_true", help="no 'unranged' case")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ledger-days-") as scratch:
        work = Path(scratch)
        ledger = args.keep or work / "ledger"
        port_file = ledger / _PORT_FILE
        # a kept ledger's fingerprints were made with its server's port: the same again
        port = int(port_file.read_text()) if port_file.exists() else unused_port()
        base = f"http://127.0.0.1:{port}"
        events = work / "events.jsonl"
        start = datetime.combine(RUN_DAY, datetime.min.time(), UTC)
        write_jsonl(
            generate_events(args.events, seed=17, start=start, end=start + timedelta(days=1)),
            events,
        )
        kind = "nginx" if shutil.which("nginx") else "aiohttp"
        server = _start_server(kind, port, 0.0, (os.cpu_count() or 1) - 1, work)
        try:
            time.sleep(1.5)
            if server.poll() is not None:
                raise SystemExit(f"the {kind} server did not start")
            if not port_file.exists():
                config = configure(run_flags(events, base, work, ledger), now=time.time())
                identity = LedgerIdentity.of(config.endpoints)
                seconds = build(ledger, args.entries, args.days, dict(identity.fingerprints))
                for fingerprint in identity.descriptors:
                    data = identity.descriptor_bytes(fingerprint)
                    write_atomically(str(ledger), descriptor_name(fingerprint), data)
                port_file.write_text(str(port))
                print(f"built {args.entries:,} entries in {seconds:.1f} s", flush=True)
            files = ledger_files(str(ledger))
            size = sum(os.path.getsize(path) for path in files)
            print(
                f"ledger: {args.entries:,} entries over {args.days} days, {len(files):,} files, "
                f"{size / 1e6:,.0f} MB; a run of {args.events:,} events of {RUN_DAY}; "
                f"{kind} server; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            cases = {"empty": work / "empty", "large": ledger}
            if not args.skip_unranged:
                cases["unranged"] = work / "unranged"
                unranged_copy(ledger, cases["unranged"])
            results: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
            for turn in range(args.repeat):
                for case, directory in cases.items():
                    if case == "unranged" and turn:
                        continue  # once is enough to see what it cost
                    if case == "empty" and directory.exists():
                        shutil.rmtree(directory)
                    result = one_run(case, directory, events, base, work / "out")
                    results[case].append(result)
                    print(_line(result), flush=True)
        finally:
            server.terminate()
            server.wait()
        print("medians:")
        for case, runs in results.items():
            wall = statistics.median(r["seconds"] for r in runs)
            cpu = statistics.median(r["cpu_s"] for r in runs)
            largest = statistics.median(r["largest_mb"] for r in runs)
            print(f"  {case:<9} {wall:7.1f} s wall {cpu:7.1f} CPU s  largest {largest:5.0f} MB")
        empty, large = results["empty"], results["large"]
        for label, key in (("wall", "seconds"), ("CPU", "cpu_s"), ("largest RSS", "largest_mb")):
            ratio = statistics.median(r[key] for r in large) / statistics.median(
                r[key] for r in empty
            )
            print(f"  large / empty, {label}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
