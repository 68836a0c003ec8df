"""CPU per message of the BulkSender against raw aiohttp, in one process, on a local server.

Starts the bare aiohttp server of :mod:`benchmarks.throughput` in a subprocess pinned to the
last core, renders N real message URLs (the throughput benchmark's generated events), and
measures in this process, pinned to core 0, the CPU seconds (``time.process_time``: every
thread of this process, user and system) per 1,000 messages of:

1. raw aiohttp at a fixed concurrency (``benchmarks.throughput.raw_aiohttp``): the floor;
2. a :class:`~beaconflow.delivery.sender.BulkSender` fed from this (plain) thread exactly as
   ``beaconflow.transforms.send`` does: ``submit_many`` in batches of 32, ``take_finished``
   after each, ``flush`` at the end; adaptive concurrency on, an uncapped rate limiter per
   destination and a counting ``on_delivered`` hook.

The two alternate, ``--repeat`` times each; the medians and their ratio are printed. CPU
time, unlike throughput, hardly depends on what else the machine runs. Run::

    .venv/bin/python -m benchmarks.sender_cpu                       # 50,000 messages, 3 runs
    .venv/bin/python -m benchmarks.sender_cpu --messages 20000 --only sender
    .venv/bin/python -m benchmarks.sender_cpu --shape heavy                         # long URLs
    py-spy record -o /tmp/prof.txt -f raw -- .venv/bin/python -m benchmarks.sender_cpu --only sender
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from beaconflow.delivery.ratelimit import RateLimiter
from beaconflow.delivery.retry import RetryPolicy
from beaconflow.delivery.sender import BulkSender, Request, SenderConfig
from beaconflow.model.message import Destination, Message
from benchmarks.shapes import SHAPES
from benchmarks.throughput import _free_port, _pin, _write_inputs, raw_aiohttp

#: Requests per hand-over, as ``beaconflow.transforms.send`` batches them.
BATCH = 32


def _requests(urls: Sequence[str]) -> list[Request]:
    """One request per URL; the destination is told by the URL's shape."""
    requests = []
    for n, url in enumerate(urls):
        destination: Destination = "kontagent" if "/api/v1/" in url else "kissmetrics"
        message = Message(destination, "bench", (("n", str(n)),))
        requests.append(Request(message, url))
    return requests


def run_sender(requests: Sequence[Request], concurrency: int) -> tuple[int, float]:
    """Send every request through a BulkSender; the delivered count and the CPU seconds."""
    delivered = 0

    def on_delivered(_: Message, ambiguous: int) -> None:
        nonlocal delivered
        delivered += 1

    config = SenderConfig(
        concurrency=concurrency,
        timeout=30.0,
        retry=RetryPolicy(),
        rates={"kontagent": None, "kissmetrics": None},
        progress_interval=10.0,
        adaptive=True,
    )
    limiters = {"kontagent": RateLimiter(None), "kissmetrics": RateLimiter(None)}
    finished = 0
    started = time.process_time()
    with BulkSender(config, limiters=limiters, on_delivered=on_delivered) as sender:
        for start in range(0, len(requests), BATCH):
            sender.submit_many(requests[start : start + BATCH])
            finished += sum(d.delivered for d in sender.take_finished())
        finished += sum(d.delivered for d in sender.flush())
    cpu = time.process_time() - started
    if finished != delivered:
        raise RuntimeError(f"{finished} deliveries but {delivered} on_delivered calls")
    return finished, cpu


def run_raw(urls_file: Path, concurrency: int) -> tuple[int, float]:
    """Send every URL with raw aiohttp; the 200 answers and the CPU seconds."""
    started = time.process_time()
    result = raw_aiohttp(str(urls_file), concurrency)
    return int(result["messages"]), time.process_time() - started


def _wait_for(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--shape", choices=SHAPES, default="light", help="benchmarks/shapes.py")
    parser.add_argument("--only", choices=("raw", "sender"), help="measure only one client")
    args = parser.parse_args(argv)

    cores = os.cpu_count() or 1
    server_core = cores - 1
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from benchmarks.throughput import serve, _pin; _pin({server_core}); serve({port}, 0)",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _pin(0)
        _wait_for(port)
        with tempfile.TemporaryDirectory() as tmp:
            # about two messages per event; render a few more and keep the first N
            events = math.ceil(args.messages / 1.9)
            _, all_urls, _ = _write_inputs(events, Path(tmp), base, args.shape)
            urls = all_urls.read_text().split()[: args.messages]
            urls_file = Path(tmp) / "bench-urls.txt"
            urls_file.write_text("\n".join(urls) + "\n")
            requests = _requests(urls)
            count = len(urls)
            print(
                f"{count} messages, concurrency {args.concurrency}, batches of {BATCH}; "
                f"server on core {server_core}, client on core 0"
            )
            clients: dict[str, Callable[[], tuple[int, float]]] = {
                "raw": lambda: run_raw(urls_file, args.concurrency),
                "sender": lambda: run_sender(requests, args.concurrency),
            }
            if args.only:
                clients = {args.only: clients[args.only]}
            per_1000: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.repeat):
                for name, client in clients.items():
                    sent, cpu = client()
                    if sent != count:
                        raise RuntimeError(f"{name}: {sent} of {count} messages answered 200")
                    per_1000[name].append(1000 * cpu / count)
            medians = {name: statistics.median(runs) for name, runs in per_1000.items()}
            labels = {"raw": "raw aiohttp", "sender": "BulkSender"}
            for name, median in medians.items():
                runs = " ".join(f"{run:.4f}" for run in per_1000[name])
                print(f"{labels[name]:12} CPU s per 1,000 messages: {median:.4f}  (runs: {runs})")
            if len(medians) == 2:
                print(f"sender / raw = {medians['sender'] / medians['raw']:.2f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
