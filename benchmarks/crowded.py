"""Outputs in a crowded folder: the sample dry run beside N other files, and in an empty folder.

Issue 17 measured a dry run of the 311-event sample taking 8 to 16 s with its outputs directly
in a temporary folder of 74,000 files, and 1.7 s in an empty folder: Beam's local
``FileSystems.match`` walked the outputs' folder for every shard pattern. This benchmark runs
the README's sample with ``--dry-run`` (issue 17 measured it with ``--sandbox`` too, which
issue 18 refuses with ``--dry-run``: a dry run sends nothing, the sandbox nothing more)::

    beaconflow --dry-run OUT/dry.jsonl --input 'sample_data/game_events*'
               --report OUT/report.json --dead-letter OUT/dl.jsonl

as a child process, ``--repeat`` times with OUT an empty folder and as many with OUT a folder
of N empty files (alternating, in fresh folders made once), and prints each run's wall time
and CPU seconds (user + system, the whole process tree: the figure other processes on a
shared machine disturb least), their medians and the ratios crowded / empty. ``--stats``
also counts the stat system calls of one more run of each (``strace -f -c``; strace slows
that run, which is not timed). ``--against REV`` runs a ``git worktree`` of REV the same
way, for before and after. Run::

    .venv/bin/python -m benchmarks.crowded --files 74000 --repeat 5 --stats --against HEAD~1
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.datapath import _checkout, compile_tree, remove_checkout

ROOT = Path(__file__).resolve().parent.parent
#: The stat calls ``--stats`` counts (strace's names for them on x86-64 Linux).
STAT_CALLS = "newfstatat,statx,stat,lstat"


def _argv(out: Path) -> list[str]:
    return [
        sys.executable, "-m", "beaconflow",
        "--dry-run", str(out / "dry.jsonl"),
        "--input", str(ROOT / "sample_data" / "game_events*"),
        "--report", str(out / "report.json"),
        "--dead-letter", str(out / "dl.jsonl"),
    ]  # fmt: skip


def run_once(code: Path, out: Path, trace: Path | None = None) -> tuple[float, float]:
    """One dry run of the code at ``code`` with its outputs in ``out``: wall and CPU seconds.

    With ``trace``, under ``strace -f -c``, its summary written there.
    """
    argv = _argv(out)
    if trace is not None:
        argv = ["strace", "-f", "-c", "-e", f"trace={STAT_CALLS}", "-o", str(trace), *argv]
    # the worktree's package first: its own beaconflow, not the editable install's
    env = {**os.environ, "PYTHONPATH": str(code)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # sums the children waited for
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode not in (0, 3):  # 3: the sample's deliberate defects exceed --max-errors
        raise SystemExit(f"the run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, cpu


def stat_calls(summary: Path) -> int:
    """The stat calls in an ``strace -c`` summary: the sum of its rows' ``calls`` column."""
    names = set(STAT_CALLS.split(","))
    total = 0
    for line in summary.read_text().splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(fields) >= 5 and fields[-1] in names:
            total += int(fields[3])
    return total


def crowd(folder: Path, files: int) -> None:
    """``files`` empty files in ``folder``, a tenth of them in a subfolder."""
    (folder / "sub").mkdir(parents=True)
    for n in range(files):
        (folder / ("sub" if n % 10 == 0 else "") / f"other-{n:06d}.dat").touch()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=74_000, help="N (default 74,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--stats", action="store_true", help="count stat calls (strace)")
    parser.add_argument("--against", metavar="REV", help="also run this git revision")
    args = parser.parse_args(argv)
    if args.stats and shutil.which("strace") is None:
        parser.error("--stats needs strace (apt-get install strace)")
    with tempfile.TemporaryDirectory(prefix="crowded-") as scratch:
        base = Path(scratch)
        folders = {"empty": base / "empty", "crowded": base / "crowded"}
        folders["empty"].mkdir()
        crowd(folders["crowded"], args.files)
        trees = {"this tree": ROOT}
        if args.against:
            compile_tree(ROOT)  # both trees byte-compiled, as _checkout does the other
            trees[args.against] = _checkout(args.against, base / "against")
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        stats: dict[tuple[str, str], int] = {}
        try:
            for turn in range(args.repeat):
                # alternate the order: a warm page cache favours whatever goes second
                order = list(folders.items())
                if turn % 2:
                    order.reverse()
                for name, code in trees.items():
                    for kind, out in order:
                        elapsed, cpu = run_once(code, out)
                        times.setdefault((name, kind), []).append((elapsed, cpu))
                        print(f"{name:>12} {kind:>8}: {elapsed:.2f} s, {cpu:.2f} CPU s", flush=True)
            if args.stats:
                for name, code in trees.items():
                    for kind, out in folders.items():
                        summary = base / f"strace-{len(stats)}.txt"
                        run_once(code, out, trace=summary)
                        stats[name, kind] = stat_calls(summary)
        finally:
            if args.against:
                remove_checkout(base / "against")
    print(f"\nthe sample dry run, medians of {args.repeat}; crowded: {args.files:,} files beside")
    header = f"{'tree':>12} | wall s: empty, crowded, ratio | CPU s: empty, crowded, ratio"
    if args.stats:
        header += " | stat calls: empty, crowded"
    print(header)
    for name in trees:
        line = f"{name:>12}"
        for which in (0, 1):  # wall, CPU
            empty = statistics.median(t[which] for t in times[name, "empty"])
            crowded = statistics.median(t[which] for t in times[name, "crowded"])
            line += f" | {empty:.2f}, {crowded:.2f}, {crowded / empty:.2f}"
        if args.stats:
            line += f" | {stats[name, 'empty']:,}, {stats[name, 'crowded']:,}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
