"""Throughput benchmark: the pipeline end to end against the Python limit and a requests loop.

Generates N canonical events, starts a fast local HTTP server (a bare aiohttp app answering
the 1x1 GIF, pinned to the last core) and measures, in the same run, on the other core:

a. the pipeline end to end, as a whole process from start to exit (messages delivered/s);
b. a raw aiohttp client sending the same URLs at its best concurrency: the Python limit;
c. a plain ``requests.Session`` loop over the same URLs (on a sample: it is slow).

Each is run ``--repeat`` times; the table shows medians: messages/s, the ratios a/b and a/c,
CPU seconds per 1,000 messages and peak RSS. Run::

    python -m benchmarks.throughput --events 50000 --repeat 3
    python -m benchmarks.throughput --events 20000 --latency 0.02 --sweep 1 4 16 64 256

``--sweep`` runs only the pipeline, once per ``--concurrency`` value (with the server
answering after ``--latency`` seconds), to show throughput growing with concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KONTAGENT_KEY = "bench0000000000000000000000000001"
KISSMETRICS_KEY = "bench-kissmetrics"
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
    b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core})


def serve(port: int, latency: float) -> None:
    """The fast server: every GET answers the GIF (after ``latency`` seconds)."""
    from aiohttp import web

    async def answer(_: web.Request) -> web.Response:
        if latency:
            await asyncio.sleep(latency)
        return web.Response(body=GIF, content_type="image/gif")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def raw_aiohttp(urls_file: str, concurrency: int) -> dict[str, float]:
    """Send every URL with aiohttp at a fixed concurrency: the best Python can do here."""
    import aiohttp

    urls = Path(urls_file).read_text().split()

    async def main() -> int:
        connector = aiohttp.TCPConnector(limit=concurrency)
        ok = 0
        queue = iter(urls)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal ok
                for url in queue:
                    async with session.get(url) as response:
                        await response.read()
                        ok += response.status == 200

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok

    started = time.monotonic()
    ok = asyncio.run(main())
    return {"messages": ok, "seconds": time.monotonic() - started}


def requests_loop(urls_file: str, sample: int) -> dict[str, float]:
    """What a user would otherwise write: one requests.Session, one GET after another."""
    import requests

    urls = Path(urls_file).read_text().split()[:sample]
    ok = 0
    started = time.monotonic()
    with requests.Session() as session:
        for url in urls:
            ok += session.get(url, timeout=10).status_code == 200
    return {"messages": ok, "seconds": time.monotonic() - started}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _measured(args: list[str], core: int) -> tuple[dict[str, Any], float, float, float]:
    """Run a child pinned to ``core``; return its JSON output, wall, CPU seconds, peak RSS MB."""
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: _pin(core),
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 3):
        raise RuntimeError(f"{args[:3]} exited {child.returncode}")
    cpu = usage.ru_utime + usage.ru_stime
    lines = output.decode().strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return result, wall, cpu, usage.ru_maxrss / 1024


def _write_inputs(events: int, directory: Path, base: str) -> tuple[Path, Path, int]:
    from beaconflow.gamelog import generate_events, write_jsonl
    from transforms.events import messages_for
    from transforms.message import Endpoint
    from transforms.records import validate
    from transforms.render import render_url

    source = directory / "events.jsonl"
    records = list(
        generate_events(
            events, start=datetime(2025, 6, 1, tzinfo=UTC), end=datetime(2025, 6, 8, tzinfo=UTC)
        )
    )
    write_jsonl(records, source)
    endpoints = {
        "kontagent": Endpoint("kontagent", base, KONTAGENT_KEY),
        "kissmetrics": Endpoint("kissmetrics", base, KISSMETRICS_KEY),
    }
    urls = directory / "urls.txt"
    count = 0
    with urls.open("w") as out:
        for record in records:
            event = validate(record, now=time.time())
            for message in messages_for(event, ("kontagent", "kissmetrics")):
                out.write(render_url(message, endpoints[message.destination], 0) + "\n")
                count += 1
    return source, urls, count


def _pipeline_args(source: Path, base: str, out: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "pipelines.backfill",
        f"--input={source}",
        f"--kontagent-api-key={KONTAGENT_KEY}",
        f"--kontagent-url={base}",
        f"--kissmetrics-api-key={KISSMETRICS_KEY}",
        f"--kissmetrics-url={base}",
        f"--report={out / 'report.json'}",
        f"--dead-letter={out / 'dead.jsonl'}",
        *extra,
    ]


def _pipeline_once(source: Path, base: str, out: Path, core: int, *extra: str) -> dict[str, float]:
    _, wall, cpu, rss = _measured(_pipeline_args(source, base, out, *extra), core)
    report = json.loads((out / "report.json").read_text())
    delivered = report["messages_delivered"]
    return {"messages": delivered, "seconds": wall, "cpu": cpu, "rss": rss}


def _summarise(name: str, runs: Sequence[dict[str, float]]) -> dict[str, float]:
    rate = statistics.median(r["messages"] / r["seconds"] for r in runs)
    cpu = statistics.median(1000 * r["cpu"] / max(1, r["messages"]) for r in runs)
    rss = statistics.median(r["rss"] for r in runs)
    return {"name": name, "rate": rate, "cpu_per_1000": cpu, "rss_mb": rss}  # type: ignore[dict-item]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--aiohttp-concurrency", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--requests-sample", type=int, default=5_000)
    parser.add_argument("--latency", type=float, default=0.0, help="server latency, seconds")
    parser.add_argument("--sweep", type=int, nargs="*", help="pipeline --concurrency values")
    parser.add_argument("--pipeline-args", nargs="*", default=[], help="extra backfill flags")
    parser.add_argument("--raw-aiohttp", nargs=2, metavar=("URLS", "C"), help=argparse.SUPPRESS)
    parser.add_argument("--requests-loop", nargs=2, metavar=("URLS", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_aiohttp:
        print(json.dumps(raw_aiohttp(args.raw_aiohttp[0], int(args.raw_aiohttp[1]))))
        return
    if args.requests_loop:
        print(json.dumps(requests_loop(args.requests_loop[0], int(args.requests_loop[1]))))
        return

    cores = os.cpu_count() or 1
    server_core, client_core = cores - 1, 0
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from benchmarks.throughput import serve, _pin; "
            f"_pin({server_core}); serve({port}, {args.latency})",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            source, urls, count = _write_inputs(args.events, work, base)
            print(
                f"{args.events} events -> {count} messages; server on core {server_core}, "
                f"clients on core {client_core}; server latency {args.latency * 1000:.0f} ms"
            )
            if args.sweep:
                print("--concurrency  messages/s  (pipeline, whole process)")
                for concurrency in args.sweep:
                    run = _pipeline_once(
                        source,
                        base,
                        work,
                        client_core,
                        f"--concurrency={concurrency}",
                        *args.pipeline_args,
                    )
                    print(f"{concurrency:>13}  {run['messages'] / run['seconds']:>10.0f}")
                return
            results: dict[str, list[dict[str, float]]] = {"a": [], "b": [], "c": []}
            for _ in range(args.repeat):
                results["a"].append(
                    _pipeline_once(source, base, work, client_core, *args.pipeline_args)
                )
                best: dict[str, float] | None = None
                for concurrency in args.aiohttp_concurrency:
                    out, _, cpu, rss = _measured(
                        [
                            "-m",
                            "benchmarks.throughput",
                            "--raw-aiohttp",
                            str(urls),
                            str(concurrency),
                        ],
                        client_core,
                    )
                    run = {
                        "messages": out["messages"],
                        "seconds": out["seconds"],
                        "cpu": cpu,
                        "rss": rss,
                        "concurrency": concurrency,
                    }
                    if (
                        best is None
                        or run["messages"] / run["seconds"] > best["messages"] / best["seconds"]
                    ):
                        best = run
                assert best is not None
                results["b"].append(best)
                out, _, cpu, rss = _measured(
                    [
                        "-m",
                        "benchmarks.throughput",
                        "--requests-loop",
                        str(urls),
                        str(args.requests_sample),
                    ],
                    client_core,
                )
                results["c"].append(
                    {"messages": out["messages"], "seconds": out["seconds"], "cpu": cpu, "rss": rss}
                )
            a, b, c = (_summarise(name, results[name]) for name in "abc")
            print(f"{'':34}{'messages/s':>12}{'CPU s/1000':>12}{'peak RSS MB':>13}")
            labels = {
                "a": "a. pipeline, end to end",
                "b": "b. raw aiohttp (best concurrency)",
                "c": f"c. requests.Session loop ({args.requests_sample} URLs)",
            }
            for key, summary in zip("abc", (a, b, c), strict=True):
                print(
                    f"{labels[key]:34}{summary['rate']:>12.0f}{summary['cpu_per_1000']:>12.3f}"
                    f"{summary['rss_mb']:>13.0f}"
                )
            print(
                f"a/b = {a['rate'] / b['rate']:.2f}   a/c = {a['rate'] / c['rate']:.1f}   "
                f"(medians of {args.repeat}; best aiohttp concurrency per run: "
                f"{[int(r['concurrency']) for r in results['b']]})"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
