"""The data path's cost: CPU per event and per message, and peak memory, of one dry run.

A dry run does everything but send: read, parse, map, validate, build, the two dedups, the
window, the dry-run and dead-letter files and the report. This benchmark generates N
canonical events (:func:`beaconflow.samples.gamelog.generate_events`, seed 7, with every
tenth event repeated so the dedup has copies to drop), then runs ``beaconflow --dry-run`` on
them as a child process, in Beam's in-memory mode (one process: its peak RSS is the run's)
and prints, per run, the CPU seconds of the whole process tree (user + system), CPU
microseconds per event read and per message built, and the peak RSS.

``--against REV`` makes the runs paired: a ``git worktree`` of REV is checked out beside the
repository, and its code runs on the same file, alternating with this tree's, ``--repeat``
times each; medians of both and their ratios are printed. Run::

    .venv/bin/python -m benchmarks.datapath --events 250000 --repeat 3 --against 5758f3b
    .venv/bin/python -m benchmarks.datapath --events 1000000 --repeat 1 --against 5758f3b
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from beaconflow.samples.gamelog import dumps_record, generate_events

ROOT = Path(__file__).resolve().parent.parent


def write_events(path: Path, n: int) -> None:
    """``n`` canonical events with every tenth one written twice (an exact duplicate line)."""
    with path.open("w", encoding="utf-8") as handle:
        for index, record in enumerate(generate_events(n, seed=7)):
            line = dumps_record(record) + "\n"
            handle.write(line)
            if index % 10 == 0:
                handle.write(line)


def run_once(code: Path, events: Path, out: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One dry run of the code at ``code`` on ``events`` (``extra``: more flags)."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "beaconflow",
        "--input", str(events),
        "--dry-run", str(out / "dry-run.jsonl"),
        "--dead-letter", str(out / "dead-letter.jsonl"),
        "--report", str(out / "report.json"),
        "--kontagent-api-key", "bench0000000000000000000000000001",
        "--kontagent-secret", "benchsecret",
        "--kissmetrics-api-key", "bench-kissmetrics",
        "--max-errors", "1000000000",
        "--direct_running_mode=in_memory",
        *extra,
    ]  # fmt: skip
    # the worktree's package first: its own beaconflow, not the editable install's
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the run failed:\n{done.stderr[-2000:]}")
    usage = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    return {
        "cpu_s": usage["cpu_s"],
        "elapsed_s": elapsed,
        "peak_mb": usage["peak_kib"] / 1024,
        "events": report["events_read"],
        "messages": report["messages_built"],
    }


#: Runs the command as its only child, then prints the child tree's CPU and largest peak RSS
#: (getrusage of children cannot be reset: a fresh parent per run gives each run's own).
_MEASURE = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if done.returncode not in (0, 3):
    sys.stderr.write(done.stderr.decode(errors="replace"))
    sys.exit(1)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime, "peak_kib": usage.ru_maxrss}))
"""


def _checkout(rev: str, where: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), rev],
        check=True,
        capture_output=True,
    )
    compile_tree(where)
    return where


def remove_checkout(where: Path) -> None:
    """Remove a worktree made by :func:`_checkout` (nothing when there is none)."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
        check=False,
        capture_output=True,
    )


def compile_tree(root: Path) -> None:
    """Byte-compile a source tree's packages, as an install does.

    Python recompiles every module that has no up-to-date ``.pyc`` each time a process
    imports it, and with ``PYTHONDONTWRITEBYTECODE`` set it never writes one: a fresh
    worktree, or a module just edited, would pay a second or so of compiling per run that
    the revision it is compared with does not.
    """
    for package in ("beaconflow", "transforms", "pipelines", "benchmarks"):
        if (root / package).is_dir():
            compileall.compile_dir(str(root / package), quiet=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tree (default 3)")
    parser.add_argument("--against", metavar="REV", help="also run this git revision, paired")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="datapath-") as scratch:
        base = Path(scratch)
        events = base / "events.jsonl"
        write_events(events, args.events)
        trees = {"this tree": ROOT}
        compile_tree(ROOT)
        if args.against:
            trees[args.against] = _checkout(args.against, base / "against")
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        try:
            for turn in range(args.repeat):
                # alternate which tree goes first: a warm page cache favours the second
                order = list(trees.items()) if turn % 2 == 0 else list(reversed(trees.items()))
                for name, code in order:
                    result = run_once(code, events, base / f"out-{turn}")
                    results[name].append(result)
                    print(
                        f"{name:>12}: {result['cpu_s']:.1f} CPU s, "
                        f"{1e6 * result['cpu_s'] / result['events']:.0f} us/event, "
                        f"{1e6 * result['cpu_s'] / result['messages']:.0f} us/message, "
                        f"{result['elapsed_s']:.1f} s wall, peak RSS {result['peak_mb']:.0f} MB",
                        flush=True,
                    )
        finally:
            if args.against:
                remove_checkout(base / "against")
    print(f"\n{args.events:,} events + {args.events // 10 + 1:,} duplicate lines; medians:")
    medians = {}
    for name, runs in results.items():
        cpu = statistics.median(r["cpu_s"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        first = runs[0]
        medians[name] = (cpu, peak)
        print(
            f"{name:>12}: {1e6 * cpu / first['events']:.0f} us/event, "
            f"{1e6 * cpu / first['messages']:.0f} us/message, peak RSS {peak:.0f} MB "
            f"({first['events']:,} events, {first['messages']:,} messages)"
        )
    if args.against:
        (cpu, peak), (cpu_before, peak_before) = medians["this tree"], medians[args.against]
        print(
            f"this tree / {args.against}: CPU {cpu / cpu_before:.2f}, peak {peak / peak_before:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
