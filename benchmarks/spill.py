"""The spill pass of a chunked backfill: lines per second and peak memory, by input size.

Generates ``--events`` sample game events (beaconflow.samples' generator, every event with
an ``event_id``, times spread over three years: some 1,100 days) as JSON lines in
``--files`` files of consecutive times, then runs :func:`beaconflow.pipelines.spill.spill`
on them in a fresh process, ``--repeat`` times for each ``--processes`` value, and
:func:`~beaconflow.pipelines.spill.resolve` once with one chunk per day. Prints the
medians: lines/s (the pass's wall clock, without Python's start), CPU seconds per million
lines (every process of the pass), and the peak RSS of the pass's process and of its
largest child (the shares' processes), next to that of a process that only imports the
module (Beam included). Run::

    .venv/bin/python -m benchmarks.spill --events 1000000 5000000 --keep /tmp/spill-inputs

``--keep DIR`` generates each input there once and reuses it.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

START = datetime(2022, 6, 1, tzinfo=UTC)
END = datetime(2025, 6, 1, tzinfo=UTC)


def generate(directory: Path, events: int, files: int) -> list[str]:
    """``files`` JSON-lines files of ``events`` events in all, made once in ``directory``."""
    from beaconflow.samples.gamelog import generate_events

    folder = directory / f"events-{events}-{files}"
    done = folder / "complete"
    paths = [folder / f"events-{n:03d}.jsonl" for n in range(files)]
    if done.exists():
        return [str(path) for path in paths]
    folder.mkdir(parents=True, exist_ok=True)
    records = generate_events(events, start=START, end=END)
    per_file = -(-events // files)
    for path in paths:
        with path.open("w", encoding="utf-8") as out:
            for _, record in zip(range(per_file), records, strict=False):
                out.write(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")))
                out.write("\n")
    done.touch()
    return [str(path) for path in paths]


def _cpu() -> float:
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def child(inputs: list[str], work: str, processes: int, resolve_too: bool) -> dict[str, Any]:
    """One spill pass in this process: its figures."""
    from beaconflow.model.mapping import RecordMapping
    from beaconflow.pipelines.spill import resolve, spill

    began, cpu = time.perf_counter(), _cpu()
    spilled = spill(
        inputs,
        None,
        RecordMapping(),
        now=time.time(),
        destinations=("kontagent", "kissmetrics"),
        work_dir=work,
        processes=processes,
    )
    seconds, cpu_s = time.perf_counter() - began, _cpu() - cpu
    result: dict[str, Any] = {
        "records": spilled.records,
        "days": len(spilled.days),
        "seconds": seconds,
        "cpu_s": cpu_s,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "child_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if resolve_too:
        began = time.perf_counter()
        resolve(spilled, lambda day: -1 if day is None else day, work)
        result["resolve_s"] = time.perf_counter() - began
        result["resolve_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run_child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.spill", *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--files", type=int, default=1, help="input files (default 1)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", help="generate inputs here once and reuse them")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--child-import", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--resolve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_import:
        import beaconflow.pipelines.spill  # noqa: F401 - what the pass's process holds first

        print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.work, args.processes[0], args.resolve)))
        return 0
    keep = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="spill-inputs-"))
    work = tempfile.mkdtemp(prefix="spill-work-")
    try:
        imported = _run_child(["--child-import"])["peak_mb"]
        print(f"a process that imports the spill module (Beam included): {imported:.0f} MB")
        header = (
            f"{'events':>10} {'procs':>5} {'lines/s':>9} {'CPU s/1M':>9} "
            f"{'peak MB':>8} {'child MB':>8} {'days':>5} {'resolve s':>9} {'its MB':>6}"
        )
        print(header)
        for events in args.events:
            began = time.perf_counter()
            inputs = generate(keep, events, args.files)
            made = time.perf_counter() - began
            if made > 1:
                print(f"(generated {events:,} events in {made:.0f} s)", file=sys.stderr)
            for processes in args.processes:
                runs = []
                for repeat in range(args.repeat):
                    extra = ["--resolve"] if repeat == 0 and processes == args.processes[0] else []
                    runs.append(
                        _run_child(
                            [
                                "--child",
                                *inputs,
                                "--work",
                                work,
                                "--processes",
                                str(processes),
                                *extra,
                            ]
                        )
                    )
                resolved = next((run for run in runs if "resolve_s" in run), None)
                rate = statistics.median(run["records"] / run["seconds"] for run in runs)
                cpu = statistics.median(run["cpu_s"] for run in runs) / events * 1e6
                peak = max(run["peak_mb"] for run in runs)
                child_peak = max(run["child_peak_mb"] for run in runs)
                shown = (
                    f"{resolved['resolve_s']:9.1f} {resolved['resolve_peak_mb']:6.0f}"
                    if resolved is not None
                    else ""
                )
                print(
                    f"{events:>10,} {processes:>5} {rate:>9,.0f} {cpu:>9.1f} "
                    f"{peak:>8.0f} {child_peak:>8.0f} {runs[0]['days']:>5} {shown}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(keep, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
