"""Backfills of any size on one machine: memory, time to the first send, and throughput.

Generates ``--events`` game events spread over ``--days`` days (cached under ``--data``,
one folder per shape), either partitioned by day (``--layout dated``: one ``dt=DAY`` folder
per day, read with ``{date}``) or as ``--files`` undated files in time order (``--layout
undated``: read once by the spill pass), and runs the whole command as a user does:

- ``--mode dry``: a dry run (``--dry-run``), nothing sent;
- ``--mode send``: a real send to the local nginx server (``empty_gif``, pinned to the last
  core, as benchmarks/throughput.py starts it), whose access log (``$msec``) gives the time of
  the first request.

Prints, per run: wall seconds, messages per second, the peak RSS of every process of the run
(the largest; read from each process's ``VmHWM`` while it runs) and of the sum, the time from
the start to the first request, and for undated input the spill pass's end and lines/s
(from its log line). Run::

    python -m benchmarks.backfill_scale --events 1000000 --layout dated --mode dry
    python -m benchmarks.backfill_scale --events 10000000 --layout dated --mode dry
    python -m benchmarks.backfill_scale --events 3000000 --layout undated --mode send
    python -m benchmarks.backfill_scale --events 3000000 --layout undated --mode send \
        --args=--deadline=150s    # the spill pass and the first send only: stops after 150 s

Generating 10,000,000 events takes a few minutes and about 2.5 GB of disk, once.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from beaconflow.sandbox.collector import unused_port
from benchmarks.throughput import KISSMETRICS_KEY, KONTAGENT_KEY, _start_server

START = datetime(2022, 1, 1, tzinfo=UTC)


def _write_data(events: int, days: int, layout: str, files: int, root: Path) -> Path:
    """The events in ``root`` (made once); the --input pattern that reads them."""
    from beaconflow.model.records import parse_time
    from beaconflow.samples.gamelog import generate_events

    done = root / "done"
    pattern = root / ("dt={date}/*.jsonl" if layout == "dated" else "events-*.jsonl")
    if done.exists():
        return pattern
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    end = START + timedelta(days=days)
    records = generate_events(events, seed=17, start=START, end=end)
    if layout == "dated":
        handles: dict[str, Any] = {}
        current = None
        for record in records:  # in time order: one file open at a time
            day = datetime.fromtimestamp(parse_time(record["time"]), UTC).date().isoformat()
            if day != current:
                if current is not None:
                    handles.pop(current).close()
                folder = root / f"dt={day}"
                folder.mkdir(exist_ok=True)
                handles[day] = (folder / "events.jsonl").open("a", encoding="utf-8")
                current = day
            handles[day].write(json.dumps(record, separators=(",", ":")) + "\n")
        for handle in handles.values():
            handle.close()
    else:
        per_file = -(-events // files)
        out = None
        for i, record in enumerate(records):
            if i % per_file == 0:
                if out is not None:
                    out.close()
                out = (root / f"events-{i // per_file:04d}.jsonl").open("w", encoding="utf-8")
            assert out is not None
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
        if out is not None:
            out.close()
    done.write_text("")
    return pattern


class _PeakWatch:
    """Polls the run's process tree: the highest VmHWM of any process, and of their sum."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks: dict[int, int] = {}
        self.summed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _tree(self) -> list[int]:
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
                    todo.extend(int(c) for c in handle.read().split())
            except OSError:
                continue
        return found

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = 0
            for pid in self._tree():
                try:
                    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
                        for line in handle:
                            if line.startswith("VmHWM:"):
                                peak = int(line.split()[1]) * 1024
                                self.peaks[pid] = max(self.peaks.get(pid, 0), peak)
                            elif line.startswith("VmRSS:"):
                                now += int(line.split()[1]) * 1024
                except OSError:
                    continue
            self.summed = max(self.summed, now)
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _first_request(log: Path) -> float | None:
    try:
        with log.open(encoding="ascii") as handle:
            line = handle.readline().strip()
    except OSError:
        return None
    return float(line) if line else None


def run_once(
    pattern: Path, layout: str, mode: str, days: int, work: Path, extra: Sequence[str]
) -> dict[str, Any]:
    """One whole run of the command; what it measured."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = [sys.executable, "-m", "beaconflow", f"--input={pattern}",
            f"--report={out / 'report.json'}", f"--dead-letter={out / 'dead.jsonl'}",
            "--progress-interval=10", *extra]  # fmt: skip
    if layout == "dated":
        until = (START + timedelta(days=days)).date().isoformat()
        args += [f"--since={START.date().isoformat()}", f"--until={until}"]
    server = None
    access = work / "access.log"
    if mode == "dry":
        args.append(f"--dry-run={out / 'dry.jsonl'}")
    else:
        nginx = shutil.which("nginx")
        if nginx is None:
            raise SystemExit("--mode send needs nginx (apt-get install nginx-light)")
        port = unused_port()
        access.unlink(missing_ok=True)
        last = (os.cpu_count() or 1) - 1
        server = _start_server("nginx", port, 0.0, last, work, access_log=True)
        time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        args += [
            f"--kontagent-api-key={KONTAGENT_KEY}",
            f"--kontagent-url={base}",
            f"--kissmetrics-api-key={KISSMETRICS_KEY}",
            f"--kissmetrics-url={base}",
        ]
    started = time.time()
    spill_end: float | None = None
    spill_rate: float | None = None
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watch = _PeakWatch(child.pid)
    assert child.stderr is not None
    tail: list[str] = []
    for line in child.stderr:
        tail = [*tail[-20:], line]
        found = re.search(r"read (\d+) records in .* \((\d+)/s\)", line)
        if found:
            spill_end, spill_rate = time.time(), float(found.group(2))
    child.wait()
    ended = time.time()
    watch.stop()
    if server is not None:
        server.terminate()
        server.wait()
    # --deadline (in --args) stops a long send on purpose, exit 4: its first send and spill
    # pass are measured all the same
    stopped_on_purpose = child.returncode == 4 and any(a.startswith("--deadline") for a in extra)
    if child.returncode not in (0, 3) and not stopped_on_purpose:
        raise RuntimeError(f"the run exited {child.returncode}:\n{''.join(tail)}")
    report = json.loads((out / "report.json").read_text())
    messages = report["messages_dry_run"] if mode == "dry" else report["messages_delivered"]
    first = _first_request(access) if mode == "send" else None
    return {
        "events": report["events_read"],
        "messages": messages,
        "seconds": ended - started,
        "rate": messages / (ended - started),
        "peak_process_mb": max(watch.peaks.values()) / 2**20,
        "peak_sum_mb": watch.summed / 2**20,
        "first_send_s": None if first is None else first - started,
        "spill_end_s": None if spill_end is None else spill_end - started,
        "spill_lines_per_s": spill_rate,
        "chunks": len((report.get("chunking") or {}).get("chunks", [])) or 1,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--layout", choices=("dated", "undated"), default="dated")
    parser.add_argument("--files", type=int, default=16, help="undated layout: how many files")
    parser.add_argument("--mode", choices=("dry", "send"), default="dry")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "beaconflow-scale"))
    parser.add_argument("--args", nargs="*", default=[], help="extra beaconflow flags")
    args = parser.parse_args(argv)
    shape = f"{args.layout}-{args.events}-{args.days}-{args.files}"
    pattern = _write_data(args.events, args.days, args.layout, args.files, Path(args.data) / shape)
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeat):
            result = run_once(pattern, args.layout, args.mode, args.days, Path(scratch),
                              args.args)  # fmt: skip
            print(json.dumps({"shape": shape, "mode": args.mode, **result}), flush=True)


if __name__ == "__main__":
    main()
