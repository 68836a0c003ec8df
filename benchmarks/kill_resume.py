"""Measure how many messages a SIGKILL mid-run makes the next run send twice.

Starts the sandbox collector with some latency, runs the backfill with a ledger in a child
process, kills it with SIGKILL once the collector has accepted a given number of messages,
runs it again, and counts the messages the collector received more often than a complete
run sends them. Run::

    python -m benchmarks.kill_resume --events 2000 --concurrency 4 64 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from beaconflow.model.message import Message
from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector, Faults

KEYS = ("--kontagent-api-key=bench-kontagent", "--kissmetrics-api-key=bench-kissmetrics")


def _cli(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "beaconflow", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _flags(base: str, work: Path, source: Path, *extra: str) -> list[str]:
    return [
        f"--input={source}",
        *KEYS,
        f"--kontagent-url={base}",
        f"--kissmetrics-url={base}",
        f"--report={work / 'report.json'}",
        f"--dead-letter={work / 'dead.jsonl'}",
        *extra,
    ]


def expected(source: Path, work: Path) -> Counter[str]:
    dry = work / "dry.jsonl"
    _cli(_flags("http://unused.invalid", work, source, f"--dry-run={dry}")).wait()
    views = [json.loads(line) for line in dry.read_text().splitlines()]
    return Counter(
        Message(v["destination"], v["kind"], tuple(v["params"].items())).key for v in views
    )


def once(source: Path, concurrency: int, kill_at: int, want: Counter[str]) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp, Collector(faults=Faults(latency=0.01)) as collector:
        work = Path(tmp)
        flags = _flags(collector.base_url, work, source, f"--ledger={work / 'ledger'}",
                       f"--concurrency={concurrency}")  # fmt: skip
        process = _cli(flags)
        while len(collector.accepted()) < kill_at and process.poll() is None:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        _cli(flags).wait()
        got = Counter(r.key for r in collector.accepted())
        return (got - want).total(), (want - got).total()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "events.jsonl"
        write_jsonl(generate_events(args.events, start=datetime(2025, 6, 1, tzinfo=UTC),
                                    end=datetime(2025, 6, 8, tzinfo=UTC)), source)  # fmt: skip
        want = expected(source, Path(tmp))
        print(f"{want.total()} messages per complete run")
        print("concurrency  resent-twice (per kill)  lost")
        for concurrency in args.concurrency:
            kill_at = want.total() // 3
            results = [once(source, concurrency, kill_at, want) for _ in range(args.repeat)]
            resent = [twice for twice, _ in results]
            lost = sum(missing for _, missing in results)
            print(f"{concurrency:>11}  {resent!s:>23}  {lost}")


if __name__ == "__main__":
    main()
