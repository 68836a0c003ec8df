"""Throughput benchmark: the pipeline end to end against the Python limit and a requests loop.

Generates N canonical events (``--shape``: ``light``, the sample log's, or ``heavy``, 5 to 10
KISSmetrics properties each with unicode and URL-reserved characters; see
:mod:`benchmarks.shapes`) and starts a fast local HTTP server answering the 1x1 GIF on the
last core: nginx (``empty_gif``, C, a few percent of a core) when it is installed, else a
bare aiohttp app (which needs most of that core itself). Then it measures, in the same run:

a. the pipeline end to end, as a whole process from start to exit (messages delivered/s),
   free to use every core, as a user's run is (Beam's work in one process, sending in
   ``--send-processes``, by default one per core);
b. a raw aiohttp client sending the same URLs at its best concurrency, pinned to core 0:
   the limit of one Python process;
b2. the same raw client as one process per core, each sending its share of the URLs: the
   Python limit of the whole machine;
c. a plain ``requests.Session`` loop over the same URLs, pinned to core 0 (on a sample:
   it is slow).

Each is run ``--repeat`` times; the table shows medians: messages/s, the ratios a/b, a/b2
and a/c, CPU seconds per 1,000 messages (every process of the run, children included) and
peak RSS (of the largest process). Run::

    python -m benchmarks.throughput --events 50000 --repeat 3
    python -m benchmarks.throughput --events 50000 --repeat 3 --shape heavy
    python -m benchmarks.throughput --events 20000 --latency 0.02 --sweep 1 4 16 64 256

``--sweep`` runs only the pipeline, once per ``--concurrency`` value (with the aiohttp
server answering after ``--latency`` seconds), to show throughput growing with concurrency.
``--server aiohttp`` forces the aiohttp server; ``--pipeline-args`` passes flags to (a).
``--against REV`` runs (a) a second time per repeat as git revision REV (a0, from a ``git
worktree``), alternating which goes first, on the same events: before and after a change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from beaconflow.sandbox.collector import PIXEL_GIF, unused_port
from benchmarks.shapes import SHAPES

KONTAGENT_KEY = "bench0000000000000000000000000001"
KISSMETRICS_KEY = "bench-kissmetrics"
GIF = PIXEL_GIF


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


def raw_aiohttp(
    urls_file: str, concurrency: int, share: int = 0, shares: int = 1
) -> dict[str, float]:
    """Send the URLs with aiohttp at a fixed concurrency: the best Python can do here.

    ``share`` of ``shares``: send only every ``shares``-th URL from the ``share``-th on (one
    process's part when several send together).
    """
    import aiohttp

    urls = Path(urls_file).read_text().split()[share::shares]

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


_free_port = unused_port


def _measured(
    args: list[str],
    core: int | None,
    code: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], float, float, float]:
    """Run a child (pinned to ``core`` unless None); its JSON output, wall, CPU s, peak RSS MB.

    CPU counts the child and its own children (sender processes); peak RSS is the largest
    single process's. ``code``: the source tree the child imports beaconflow from (None:
    this one). ``env``: variables added to this process's environment for the child.
    """
    ((result, cpu, rss),), wall = _measured_together([args], [core], code, env)
    return result, wall, cpu, rss


def _measured_together(
    commands: Sequence[list[str]],
    cores: Sequence[int | None],
    code: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[list[tuple[dict[str, Any], float, float]], float]:
    """Run children at once: each one's JSON output, CPU s and peak RSS MB; the wall time.

    The wall time runs from the first start to the last exit. ``code`` and ``env`` as in
    :func:`_measured`.
    """
    # another tree's package first on the path: its own beaconflow, not the installed one
    added = {**(env or {}), **({} if code is None else {"PYTHONPATH": str(code)})}
    child_env = {**os.environ, **added} if added else None
    started = time.monotonic()
    children = [
        subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            preexec_fn=None if core is None else (lambda core=core: _pin(core)),
            cwd=code,
            env=child_env,
        )
        for args, core in zip(commands, cores, strict=True)
    ]
    results = []
    for args, child in zip(commands, children, strict=True):
        assert child.stdout is not None
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode not in (0, 3):
            raise RuntimeError(f"{args[:3]} exited {child.returncode}")
        lines = output.decode().strip().splitlines()
        result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        results.append((result, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024))
    return results, time.monotonic() - started


def _write_inputs(
    events: int, directory: Path, base: str, shape: str = "light"
) -> tuple[Path, Path, int]:
    """The events of ``shape`` as JSONL, the URLs of their messages (one a line), how many."""
    from beaconflow.model.events import messages_for
    from beaconflow.model.message import Endpoint
    from beaconflow.model.records import validate
    from beaconflow.model.render import render_url
    from beaconflow.samples.gamelog import write_jsonl
    from benchmarks.shapes import generate

    source = directory / "events.jsonl"
    records = list(
        generate(
            shape,
            events,
            start=datetime(2025, 6, 1, tzinfo=UTC),
            end=datetime(2025, 6, 8, tzinfo=UTC),
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
        "beaconflow",
        f"--input={source}",
        f"--kontagent-api-key={KONTAGENT_KEY}",
        f"--kontagent-url={base}",
        f"--kissmetrics-api-key={KISSMETRICS_KEY}",
        f"--kissmetrics-url={base}",
        f"--report={out / 'report.json'}",
        f"--dead-letter={out / 'dead.jsonl'}",
        *extra,
    ]


def _pipeline_once(
    source: Path,
    base: str,
    out: Path,
    core: int | None,
    *extra: str,
    code: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, float]:
    _, wall, cpu, rss = _measured(_pipeline_args(source, base, out, *extra), core, code, env)
    report = json.loads((out / "report.json").read_text())
    delivered = report["messages_delivered"]
    return {"messages": delivered, "seconds": wall, "cpu": cpu, "rss": rss}


def _summarise(name: str, runs: Sequence[dict[str, float]]) -> dict[str, float]:
    rate = statistics.median(r["messages"] / r["seconds"] for r in runs)
    cpu = statistics.median(1000 * r["cpu"] / max(1, r["messages"]) for r in runs)
    rss = statistics.median(r["rss"] for r in runs)
    return {"name": name, "rate": rate, "cpu_per_1000": cpu, "rss_mb": rss}  # type: ignore[dict-item]


_NGINX_CONF = """
worker_processes 1;
daemon off;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
    uwsgi_temp_path {dir}; scgi_temp_path {dir};
{http}
}}
"""

# The http block of the plain GIF server; benchmarks/https.py gives its own (TLS, a status port).
_NGINX_GIF = """
    log_format stamp '$msec';
    {access_log}
    keepalive_requests 10000000;
    server {{ listen 127.0.0.1:{port}; location / {{ empty_gif; }} }}
"""


def _start_server(
    kind: str,
    port: int,
    latency: float,
    core: int,
    work: Path,
    *,
    access_log: bool = False,
    http: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start the GIF server (``nginx`` or ``aiohttp``) pinned to ``core``.

    ``access_log``: nginx writes each request's time (epoch seconds) to ``work/access.log``.
    ``http``: nginx's http block instead of the plain GIF server's on ``port`` (its temp paths
    are set already).
    """
    if kind == "nginx":
        conf = work / "nginx.conf"
        if http is None:
            logged = f"access_log {work}/access.log stamp buffer=256k flush=1s;"
            http = _NGINX_GIF.format(
                port=port, access_log=logged if access_log else "access_log off;"
            )
        conf.write_text(_NGINX_CONF.format(dir=work, http=http))
        command = [str(shutil.which("nginx")), "-c", str(conf), "-p", str(work)]
    else:
        command = [
            sys.executable,
            "-c",
            f"from benchmarks.throughput import serve; serve({port}, {latency})",
        ]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: _pin(core),
    )


def _raw(urls: Path, concurrency: int, share: int = 0, shares: int = 1) -> list[str]:
    return ["-m", "benchmarks.throughput", "--raw-aiohttp", str(urls), str(concurrency),
            f"--share={share}", f"--shares={shares}"]  # fmt: skip


def _best_raw(urls: Path, concurrencies: Sequence[int], processes: int, core: int | None
              ) -> dict[str, float]:  # fmt: skip
    """Raw aiohttp as ``processes`` processes at once, at the best of ``concurrencies``."""
    best: dict[str, float] | None = None
    for concurrency in concurrencies:
        commands = [_raw(urls, concurrency, k, processes) for k in range(processes)]
        runs, wall = _measured_together(commands, [core] * processes)
        run = {
            "messages": sum(out["messages"] for out, _, _ in runs),
            "seconds": wall,
            "cpu": sum(cpu for _, cpu, _ in runs),
            "rss": max(rss for _, _, rss in runs),
            "concurrency": concurrency,
        }
        if best is None or run["messages"] / run["seconds"] > best["messages"] / best["seconds"]:
            best = run
    assert best is not None
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--shape", choices=SHAPES, default="light",
                        help="the events: light (the sample log's) or heavy (5-10 "
                        "KISSmetrics properties each; benchmarks/shapes.py)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--aiohttp-concurrency", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--requests-sample", type=int, default=5_000)
    parser.add_argument("--latency", type=float, default=0.0, help="server latency, seconds")
    parser.add_argument("--server", choices=("auto", "nginx", "aiohttp"), default="auto",
                        help="auto: nginx when installed and --latency is 0")  # fmt: skip
    parser.add_argument("--sweep", type=int, nargs="*", help="pipeline --concurrency values")
    parser.add_argument("--pipeline-args", nargs="*", default=[], help="extra backfill flags")
    parser.add_argument("--against", metavar="REV",
                        help="also run (a) as git revision REV (a0), alternating")  # fmt: skip
    parser.add_argument("--raw-aiohttp", nargs=2, metavar=("URLS", "C"), help=argparse.SUPPRESS)
    parser.add_argument("--share", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--shares", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--requests-loop", nargs=2, metavar=("URLS", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_aiohttp:
        urls, concurrency = args.raw_aiohttp[0], int(args.raw_aiohttp[1])
        print(json.dumps(raw_aiohttp(urls, concurrency, args.share, args.shares)))
        return
    if args.requests_loop:
        print(json.dumps(requests_loop(args.requests_loop[0], int(args.requests_loop[1]))))
        return

    server_kind = args.server
    if server_kind == "auto":
        server_kind = "nginx" if shutil.which("nginx") and not args.latency else "aiohttp"
    if server_kind == "nginx" and args.latency:
        parser.error("--latency needs the aiohttp server (nginx answers at once)")
    cores = os.cpu_count() or 1
    server_core, client_core = cores - 1, 0
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = _start_server(server_kind, port, args.latency, server_core, work)
        try:
            time.sleep(1.5)
            if server.poll() is not None:
                raise SystemExit(f"the {server_kind} server did not start")
            from benchmarks.datapath import ROOT, _checkout, compile_tree, remove_checkout

            compile_tree(ROOT)
            against = None
            if args.against:
                against = _checkout(args.against, work / "against")
            _run(args, work, base, server_kind, cores, server_core, client_core, against)
        finally:
            server.terminate()
            server.wait()
            if args.against:
                remove_checkout(work / "against")


def _run(args: argparse.Namespace, work: Path, base: str, server_kind: str, cores: int,
         server_core: int, client_core: int, against: Path | None = None) -> None:  # fmt: skip
    source, urls, count = _write_inputs(args.events, work, base, args.shape)
    print(
        f"{args.events} {args.shape} events -> {count} messages; {cores} cores; {server_kind} "
        f"server on core {server_core}, latency {args.latency * 1000:.0f} ms; b and c on core "
        f"{client_core}, a and b2 on any core"
    )
    if args.sweep:
        print("--concurrency  messages/s  (pipeline, whole process)")
        for concurrency in args.sweep:
            run = _pipeline_once(
                source, base, work, None, f"--concurrency={concurrency}", *args.pipeline_args
            )
            print(f"{concurrency:>13}  {run['messages'] / run['seconds']:>10.0f}")
        return
    results: dict[str, list[dict[str, float]]] = {"a": []}
    if against is not None:
        results["a0"] = []
    results.update(b=[], b2=[], c=[])
    for turn in range(args.repeat):
        # with --against, the two pipelines alternate which goes first
        first = "a0" if against is not None and turn % 2 else "a"
        for name in (first, "a0" if first == "a" else "a") if against is not None else ("a",):
            code = against if name == "a0" else None
            run = _pipeline_once(source, base, work, None, *args.pipeline_args, code=code)
            results[name].append(run)
        results["b"].append(_best_raw(urls, args.aiohttp_concurrency, 1, client_core))
        results["b2"].append(_best_raw(urls, args.aiohttp_concurrency, cores, None))
        out, _, cpu, rss = _measured(
            ["-m", "benchmarks.throughput", "--requests-loop", str(urls),
             str(args.requests_sample)],
            client_core,
        )  # fmt: skip
        results["c"].append(
            {"messages": out["messages"], "seconds": out["seconds"], "cpu": cpu, "rss": rss}
        )
    summaries = {name: _summarise(name, runs) for name, runs in results.items()}
    print(f"{'':40}{'messages/s':>12}{'CPU s/1000':>12}{'peak RSS MB':>13}")
    labels = {
        "a": "a. pipeline, end to end",
        "a0": f"a0. pipeline at {args.against}",
        "b": "b. raw aiohttp, 1 process",
        "b2": f"b2. raw aiohttp, {cores} processes",
        "c": f"c. requests.Session loop ({args.requests_sample} URLs)",
    }
    for key, summary in summaries.items():
        print(
            f"{labels[key]:40}{summary['rate']:>12.0f}{summary['cpu_per_1000']:>12.3f}"
            f"{summary['rss_mb']:>13.0f}"
        )
    for key, runs in results.items():
        rates = ", ".join(f"{r['messages'] / r['seconds']:.0f}" for r in runs)
        print(f"  {key} runs (messages/s): {rates}")
    a, b, b2, c = (summaries[name]["rate"] for name in ("a", "b", "b2", "c"))
    print(
        f"a/b = {a / b:.2f}   a/b2 = {a / b2:.2f}   a/c = {a / c:.1f}   (medians of "
        f"{args.repeat}; best aiohttp concurrency per run: b "
        f"{[int(r['concurrency']) for r in results['b']]}, b2 "
        f"{[int(r['concurrency']) for r in results['b2']]})"
    )
    if against is not None:
        a0 = summaries["a0"]["rate"]
        print(
            f"at {args.against}: a0/b = {a0 / b:.2f}   a0/b2 = {a0 / b2:.2f}   a0/c = {a0 / c:.1f}"
            f"   a/a0 = {a / a0:.2f}; CPU per message, a/a0 = "
            f"{summaries['a']['cpu_per_1000'] / summaries['a0']['cpu_per_1000']:.2f}"
        )


if __name__ == "__main__":
    main()
