"""CPU per message of building, shuffling and rendering messages, by data shape.

Generates N events of each ``--shape`` (:mod:`benchmarks.shapes`: ``light``, the sample
log's; ``heavy``, 5 to 10 KISSmetrics properties each) and times, in a fresh process, what
the pipeline's own process does to every message of a backfill without a ledger (the model's
functions and the coders, no Beam runner):

- ``parse``: decode the line, map, validate and build the event's messages (the parse step);
- ``events``: encode and decode each event (the event dedup's grouping);
- ``messages``: the ledger key, encode and decode of each KISSmetrics message (the message
  dedup's grouping; Kontagent messages skip it);
- ``render``: each message's URL (the send step).

Printed: CPU microseconds per message of each step and their sum, medians of ``--repeat``
runs. ``--pipeline`` measures whole backfills instead, against a local nginx (``empty_gif``)
pinned to the last core: CPU seconds per 1,000 messages delivered, of the pipeline's own
process and of its sender processes (``/proc``), and the wall time. ``--against REV`` runs a
``git worktree`` of REV on the same files, alternating with this tree, and prints the ratios.
CPU time, unlike throughput, hardly depends on what else the machine runs. Run::

    .venv/bin/python -m benchmarks.message_cpu --events 20000 --repeat 5 --against HEAD~3
    .venv/bin/python -m benchmarks.message_cpu --pipeline --events 50000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import datapath
from benchmarks.shapes import SHAPES, generate
from benchmarks.throughput import _free_port, _pipeline_args, _start_server

ROOT = datapath.ROOT

#: The steps, timed in a child process under the code being measured (PYTHONPATH): only
#: functions that every revision measured has.
_STEPS = r"""
import json, sys, time
from beaconflow.delivery.ledger import ledger_key
from beaconflow.model.convert import convert_record
from beaconflow.model.mapping import RecordMapping
from beaconflow.model.message import Endpoint
from beaconflow.model.records import parse_line
from beaconflow.model.render import render_url
from beaconflow.transforms.coders import MappedEventCoder, MessageCoder

lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
import gc  # the collector as the command tunes it (pipelines/cli.py)
gc.freeze()
gc.set_threshold(50_000, 20, 100)
endpoints = {
    "kontagent": Endpoint("kontagent", "http://127.0.0.1:8080", "k" * 32),
    "kissmetrics": Endpoint("kissmetrics", "http://127.0.0.1:8080", "bench-kissmetrics"),
}
mapping, clock = RecordMapping(), time.process_time
started = clock()
events = [
    convert_record(parse_line(line), mapping, now=1.9e9, source_name=f"events.jsonl:{n}",
                   destinations=("kontagent", "kissmetrics")).mapped
    for n, line in enumerate(lines)
]
parse = clock() - started
event_coder, message_coder = MappedEventCoder(), MessageCoder()
started = clock()
events = [event_coder.decode(event_coder.encode(event)) for event in events]
shuffle_events = clock() - started
messages = [message for event in events for message in event.messages]
started = clock()
for message in messages:
    if message.destination == "kissmetrics":
        ledger_key("fingerprint", message)
        message_coder.decode(message_coder.encode(message))
shuffle_messages = clock() - started
started = clock()
for message in messages:
    render_url(message, endpoints[message.destination], 0)
render = clock() - started
print(json.dumps({"messages": len(messages), "parse": parse, "events": shuffle_events,
                  "messages_step": shuffle_messages, "render": render}))
"""

_STEP_NAMES = {
    "parse": "parse", "events": "events", "messages_step": "messages", "render": "render",
}  # fmt: skip


def _steps_once(code: Path, lines: Path) -> dict[str, float]:
    """CPU microseconds per message of each step, in a fresh process running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", _STEPS, str(lines)],
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the steps failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    count = result.pop("messages")
    return {_STEP_NAMES[name]: 1e6 * seconds / count for name, seconds in result.items()}


class _ProcWatch:
    """Polls a process's own CPU seconds (``/proc/<pid>/stat``) and its children's."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._path = f"/proc/{pid}/stat"
        self._tick = os.sysconf("SC_CLK_TCK")
        self.own = self.children = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(interval,), daemon=True)
        self._thread.start()

    def _poll(self, interval: float) -> None:
        while not self._done.is_set():
            try:
                with open(self._path) as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                return
            # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 after the name
            self.own = (int(fields[11]) + int(fields[12])) / self._tick
            self.children = (int(fields[13]) + int(fields[14])) / self._tick
            time.sleep(interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _pipeline_once(
    code: Path, source: Path, base: str, out: Path, extra: Sequence[str] = ()
) -> dict[str, float]:
    """One backfill of ``source`` by ``code``: CPU of its process and of its senders."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, *_pipeline_args(source, base, out, *extra)],
        cwd=code,
        env={**os.environ, "PYTHONPATH": str(code)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    watch = _ProcWatch(child.pid)
    _, stderr = child.communicate()
    wall = time.monotonic() - started
    watch.stop()
    if child.returncode not in (0, 3):
        raise SystemExit(f"the backfill failed:\n{stderr.decode(errors='replace')[-2000:]}")
    delivered = json.loads((out / "report.json").read_text())["messages_delivered"]
    return {
        "delivered": delivered,
        "wall": wall,
        "own": 1000 * watch.own / delivered,
        "senders": 1000 * watch.children / delivered,
    }


def _write_lines(shape: str, events: int, path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in generate(shape, events):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _median_table(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shape", choices=SHAPES, nargs="+", default=list(SHAPES))
    parser.add_argument("--pipeline", action="store_true", help="whole backfills instead")
    parser.add_argument("--against", metavar="REV", help="also run this git revision, paired")
    parser.add_argument("--pipeline-args", nargs="*", default=[], help="extra backfill flags")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="message-cpu-") as scratch:
        work = Path(scratch)
        trees = {"this tree": ROOT}
        datapath.compile_tree(ROOT)
        if args.against:
            trees[args.against] = datapath._checkout(args.against, work / "against")
        try:
            for shape in args.shape:
                lines = work / f"{shape}.jsonl"
                _write_lines(shape, args.events, lines)
                if args.pipeline:
                    _compare_pipelines(trees, lines, shape, args, work)
                else:
                    _compare_steps(trees, lines, shape, args)
        finally:
            if args.against:
                datapath.remove_checkout(work / "against")
    return 0


def _compare_steps(
    trees: dict[str, Path], lines: Path, shape: str, args: argparse.Namespace
) -> None:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for turn in range(args.repeat):
        order = list(trees.items()) if turn % 2 == 0 else list(reversed(trees.items()))
        for name, code in order:
            run = _steps_once(code, lines)
            run["total"] = sum(run.values())
            results[name].append(run)
    print(f"{shape}, {args.events:,} events: CPU us per message (medians of {args.repeat})")
    medians = {name: _median_table(runs) for name, runs in results.items()}
    columns = list(next(iter(medians.values())))
    print(f"{'':>12}" + "".join(f"{column:>10}" for column in columns))
    for name, table in medians.items():
        print(f"{name:>12}" + "".join(f"{table[column]:>10.2f}" for column in columns))
    if args.against:
        mine, theirs = medians["this tree"], medians[args.against]
        print(f"{'ratio':>12}" + "".join(f"{mine[c] / theirs[c]:>10.2f}" for c in columns))


def _compare_pipelines(
    trees: dict[str, Path], lines: Path, shape: str, args: argparse.Namespace, work: Path
) -> None:
    if shutil.which("nginx") is None:
        raise SystemExit("--pipeline needs nginx (apt-get install nginx-light)")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start_server("nginx", port, 0.0, (os.cpu_count() or 1) - 1, work)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    try:
        time.sleep(1.0)
        for turn in range(args.repeat):
            order = list(trees.items()) if turn % 2 == 0 else list(reversed(trees.items()))
            for name, code in order:
                out = work / f"out-{shape}"
                run = _pipeline_once(code, lines, base, out, args.pipeline_args)
                run["total"] = run["own"] + run["senders"]
                results[name].append(run)
                print(
                    f"  {name:>12}: {run['delivered']} delivered, {run['wall']:.1f} s, CPU s per "
                    f"1,000: {run['own']:.4f} own + {run['senders']:.4f} senders",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait()
    print(f"{shape}, {args.events:,} events, whole backfills (medians of {args.repeat}):")
    medians = {name: _median_table(runs) for name, runs in results.items()}
    for name, table in medians.items():
        print(
            f"{name:>12}: CPU s per 1,000 messages {table['total']:.4f} (pipeline process "
            f"{table['own']:.4f}, sender processes {table['senders']:.4f}); "
            f"{table['delivered'] / table['wall']:.0f} messages/s"
        )
    if args.against:
        mine, theirs = medians["this tree"], medians[args.against]
        print(
            f"{'ratio':>12}: total {mine['total'] / theirs['total']:.2f}, pipeline process "
            f"{mine['own'] / theirs['own']:.2f}, senders {mine['senders'] / theirs['senders']:.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
