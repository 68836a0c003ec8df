"""Rate benchmark: is --max-rps exact, and does adaptive concurrency settle under a server's limit?

Two measurements against the sandbox collector (in this process, on loopback), the pipeline
running as a separate process:

* ``cap``: the backfill with ``--max-rps R``, with 1 worker and with DirectRunner
  multi_processing and 2 workers. From the collector's arrival times: the most requests any
  sliding 1-second window saw per destination (goal: <= 1.1 R), and the mean rate while
  sending (goal: >= 0.9 R).
* ``adaptive``: the collector answers 429 (Retry-After: 1) above R requests/s per
  destination; the backfill runs without --max-rps, adapting its concurrency. Reported:
  the share of requests rejected after the first 5 seconds (goal: < 5%) and the delivered
  rate (goal: >= 0.8 R).

Run::

    python -m benchmarks.rate_cap --events 6000 --rate 500
"""

from __future__ import annotations

import argparse
import bisect
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from beaconflow.samples.gamelog import generate_events, write_jsonl
from beaconflow.sandbox.collector import Collector, Faults

KEYS = ("--kontagent-api-key=rate-kontagent", "--kissmetrics-api-key=rate-kissmetrics")


def _run(source: Path, base: str, work: Path, *extra: str) -> None:
    subprocess.run(
        [
            sys.executable, "-m", "beaconflow", f"--input={source}", *KEYS,
            f"--kontagent-url={base}", f"--kissmetrics-url={base}",
            f"--report={work / 'report.json'}", f"--dead-letter={work / 'dead.jsonl'}",
            "--max-attempts=20", *extra,
        ],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _max_window(times: Sequence[float]) -> int:
    """The most arrivals in any window [t, t + 1 s)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


def cap(source: Path, rate: float, workers: int) -> None:
    extra = [f"--max-rps={rate}"]
    if workers > 1:
        extra += ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    with tempfile.TemporaryDirectory() as tmp, Collector() as collector:
        _run(source, collector.base_url, Path(tmp), *extra)
        arrivals: dict[str, list[float]] = defaultdict(list)
        for record in collector.accepted():
            arrivals[record.destination].append(record.monotonic)
    for destination, times in sorted(arrivals.items()):
        span = max(times) - min(times)
        mean = (len(times) - 1) / span if span > 0 else float("nan")
        peak = _max_window(times)
        print(
            f"cap  workers={workers} {destination:<11} {len(times):>6} requests  "
            f"max 1-s window {peak:>5} = {peak / rate:.3f} R   "
            f"mean {mean:7.1f}/s = {mean / rate:.3f} R"
        )


def adaptive(source: Path, rate: float, settle: float, *extra: str) -> None:
    faults = Faults(rate_limit=rate)
    with tempfile.TemporaryDirectory() as tmp, Collector(faults=faults) as collector:
        _run(source, collector.base_url, Path(tmp), *extra)
        started = collector.records.started
        accepted = collector.accepted()
        rejected_total = collector.counts().get("faulted/rate_limit", 0)
        arrived = {d: collector.per_second(d) for d in ("kontagent", "kissmetrics")}
    for destination in ("kontagent", "kissmetrics"):
        seconds = sorted(arrived[destination])
        if not seconds:
            continue
        ok: dict[int, int] = defaultdict(int)
        for record in accepted:
            if record.destination == destination:
                ok[int(record.monotonic - started)] += 1
        # steady state: from `settle` seconds after this destination's first request, to
        # the second before its last (which is partial)
        steady = [s for s in seconds if seconds[0] + settle <= s < seconds[-1]]
        came = sum(arrived[destination][s] for s in steady)
        rejected = came - sum(ok[s] for s in steady)
        delivered = sum(ok[s] for s in steady) / len(steady) if steady else float("nan")
        share = rejected / came if came else float("nan")
        print(
            f"adaptive {destination:<11} delivered {delivered:7.1f}/s = {delivered / rate:.3f} R"
            f"   rejected once adapted (after {settle:.0f} s): {share:.1%}"
        )
    print(f"adaptive: {rejected_total} requests rejected with 429 in all")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=500.0, help="R, requests/s per destination")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--only", choices=["cap", "adaptive"])
    parser.add_argument("--pipeline-args", nargs="*", default=[], help="extra backfill flags")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "events.jsonl"
        write_jsonl(
            generate_events(
                args.events,
                start=datetime(2025, 6, 1, tzinfo=UTC),
                end=datetime(2025, 6, 8, tzinfo=UTC),
            ),
            source,
        )
        if args.only != "adaptive":
            for workers in args.workers:
                cap(source, args.rate, workers)
        if args.only != "cap":
            adaptive(source, args.rate, args.settle, *args.pipeline_args)


if __name__ == "__main__":
    main()
