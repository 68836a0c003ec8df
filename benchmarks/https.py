"""HTTPS benchmark: the whole run and the raw aiohttp limit over TLS 1.3, beside plain HTTP.

Issue 19's goal: a/b over HTTPS within 10% of a/b over HTTP. One nginx (``empty_gif``,
pinned to the last core, started by :func:`benchmarks.throughput._start_server`) serves the
GIF on two loopback ports: plain HTTP, and HTTPS with TLS 1.3 only and a certificate for
``127.0.0.1`` from a test CA made by ``trustme`` at start. On the same events (``--shape``),
each turn runs, interleaved and alternating which scheme goes first:

a. the ``beaconflow`` command, end to end (as :mod:`benchmarks.throughput`'s a), once per scheme;
b. raw aiohttp, one process pinned to core 0, at each ``--aiohttp-concurrency`` (the best
   counts), once per scheme;
b2. the same as one process per core, each sending its share.

The table shows medians of ``--repeat`` turns, their spread, and a/b and a/b2 per scheme; the
load average is printed at each turn. Raw aiohttp trusts the test CA through
``SSL_CERT_FILE`` (its default context reads it); the pipeline through ``--ca-bundle``
(:func:`pipeline_trust`).

It also counts connections, which over HTTPS are TLS handshakes (aiohttp resumes no TLS
session: every new connection is a full handshake; nginx's ``$ssl_session_reused`` shows
it). nginx logs ``$server_port $connection $connection_requests $ssl_protocol
$ssl_session_reused`` per request, and its ``stub_status`` (on a third port) counts every
connection accepted, requests or not. After each run the benchmark waits until nginx holds
no connection but the status request's own (so every request of the run is logged), then
counts the run's distinct connections and checks the bound of issue 19: at most the
connections in flight (the pipeline's ``--concurrency``, which its sender processes divide
among themselves; b's concurrency times its processes) plus the reconnects, the connections
the server closed after ``keepalive_requests`` requests. ``--keepalive-requests N`` (default
10,000,000: never) makes nginx close every connection after N requests, to show the
reconnects; ``keepalive_timeout`` is 300 s (``--keepalive-timeout``), longer than any run,
so nginx closes no idle connection. Run::

    python -m benchmarks.https --events 50000 --repeat 3
    python -m benchmarks.https --events 50000 --repeat 3 --keepalive-requests 1000
    python -m benchmarks.https --events 50000 --repeat 3 --shape heavy

It needs nginx with its ssl and stub_status modules (Debian's ``nginx-light`` has both).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.shapes import SHAPES
from benchmarks.throughput import (
    _free_port,
    _measured_together,
    _pipeline_once,
    _raw,
    _start_server,
    _write_inputs,
)

SCHEMES = ("http", "https")

# The http block of nginx.conf: the GIF over HTTP and over HTTPS, and a status port.
_HTTP_BLOCK = """
    log_format conns '$server_port $connection $connection_requests $ssl_protocol '
                     '$ssl_session_reused';
    # unbuffered: a request is in the log once nginx has sent its answer, and the
    # benchmark reads the log only when nginx holds no connection any more
    access_log {log} conns;
    keepalive_requests {keepalive_requests};
    keepalive_timeout {keepalive_timeout}s;
    ssl_protocols TLSv1.3;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    server {{ listen 127.0.0.1:{http_port}; location / {{ empty_gif; }} }}
    server {{ listen 127.0.0.1:{https_port} ssl; location / {{ empty_gif; }} }}
    server {{ listen 127.0.0.1:{status_port}; access_log off; location / {{ stub_status; }} }}
"""


def pipeline_trust(ca: Path) -> tuple[list[str], dict[str, str]]:
    """How the pipeline (a) trusts the test CA: its extra flags and environment variables.

    ``--ca-bundle``, as a user behind a private CA gives it (since issue 19).
    """
    return [f"--ca-bundle={ca}"], {}


def make_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate it signs for 127.0.0.1: ca.pem, the chain, the key."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem, chain, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca.cert_pem.write_to_path(str(ca_pem))
    with chain.open("wb") as out:
        for blob in issued.cert_chain_pems:
            out.write(blob.bytes())
    issued.private_key_pem.write_to_path(str(key))
    return ca_pem, chain, key


@dataclass(frozen=True)
class Connections:
    """What one run did to the server, from nginx's access log and its stub_status.

    ``connections``: distinct connections that carried a request (over HTTPS, handshakes).
    ``accepted``: connections nginx accepted during the run, requests or not. ``used_up``:
    connections that served ``keepalive_requests`` requests, after which nginx closes them.
    ``resumed``: TLS connections whose session was resumed (no full handshake).
    """

    requests: int
    connections: int
    accepted: int
    used_up: int
    resumed: int
    protocols: frozenset[str]

    @property
    def per_connection(self) -> float:
        return self.requests / max(1, self.connections)

    def within(self, in_flight: int) -> bool:
        """Issue 19's bound: at most the connections in flight plus the reconnects."""
        return max(self.connections, self.accepted) <= in_flight + self.used_up


def count_connections(
    lines: Iterable[str], port: int, keepalive_requests: int, accepted: int
) -> Connections:
    """Count the connections of the log ``lines`` (format ``conns``) on ``port``."""
    served: dict[str, int] = {}
    requests = resumed = 0
    protocols: set[str] = set()
    for line in lines:
        fields = line.split()
        if len(fields) != 5 or fields[0] != str(port):
            continue
        _, connection, number, protocol, reused = fields
        requests += 1
        served[connection] = max(served.get(connection, 0), int(number))
        protocols.add(protocol)
        # "r" once per connection: its first request's line carries it as well as the rest
        resumed += reused == "r" and number == "1"
    return Connections(
        requests=requests,
        connections=len(served),
        accepted=accepted,
        used_up=sum(count >= keepalive_requests for count in served.values()),
        resumed=resumed,
        protocols=frozenset(protocols),
    )


class ServerWatch:
    """Reads what nginx logged and accepted between :meth:`start` and :meth:`finish`."""

    def __init__(
        self, log: Path, status_port: int, keepalive_requests: int, *, patience: float = 120.0
    ) -> None:
        self._log = log
        self._status = f"http://127.0.0.1:{status_port}/"
        self._keepalive_requests = keepalive_requests
        self._patience = patience
        self._offset = 0
        self._accepts = 0
        self._pids: list[int] = []
        self._cpu = 0.0
        #: CPU seconds nginx used between the last start() and finish()
        self.server_cpu = 0.0

    def _poll(self) -> tuple[int, int]:
        """The open connections of nginx and its accepts so far (this request's included)."""
        with urllib.request.urlopen(self._status, timeout=10) as answer:
            text = answer.read().decode()
        lines = text.splitlines()
        return int(lines[0].split(":")[1]), int(lines[2].split()[0])

    def _quiet(self) -> tuple[int, int]:
        """Wait until nginx holds only the status request; its accepts, the polls made."""
        polls = 0
        waited = time.monotonic()
        while True:
            active, accepts = self._poll()
            polls += 1
            if active == 1:
                return accepts, polls
            if time.monotonic() - waited > self._patience:
                raise SystemExit(f"nginx still holds {active - 1} connections after the run")
            time.sleep(0.05)

    def wait_up(self, server: subprocess.Popen[bytes]) -> None:
        """Wait until nginx answers on its status port; stop if it exits first."""
        waited = time.monotonic()
        while True:
            try:
                self._poll()
                children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
                self._pids = [server.pid, *map(int, children.read_text().split())]
                return
            except OSError:
                if server.poll() is not None or time.monotonic() - waited > self._patience:
                    error = self._log.with_name("error.log")
                    said = error.read_text().strip()[-300:] if error.exists() else ""
                    raise SystemExit(f"nginx did not start: {said}") from None
                time.sleep(0.05)

    def _nginx_cpu(self) -> float:
        """CPU seconds nginx's master and worker have used so far (0 where /proc has none)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self._pids:
            with contextlib.suppress(OSError):
                # the fields after the command's closing parenthesis; utime and stime are 14, 15
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def start(self) -> None:
        self._accepts, _ = self._quiet()
        self._cpu = self._nginx_cpu()
        self._offset = self._log.stat().st_size if self._log.exists() else 0

    def finish(self, port: int) -> Connections:
        accepts, polls = self._quiet()
        self.server_cpu = self._nginx_cpu() - self._cpu
        with self._log.open() as log:
            log.seek(self._offset)
            lines = log.read().splitlines()
        # every poll is a connection of its own: the last one's count includes itself
        return count_connections(
            lines, port, self._keepalive_requests, accepts - self._accepts - polls
        )


@dataclass(frozen=True)
class Run:
    """One measured run: messages, wall seconds, CPU seconds, what it did to the server."""

    messages: float
    seconds: float
    cpu: float
    connections: Connections
    in_flight: int
    concurrency: int = 0
    #: nginx's CPU seconds during the run
    server_cpu: float = 0.0
    #: the pipeline's report: messages_failed and messages_ambiguous (None for raw aiohttp)
    failed: int | None = None
    ambiguous: int | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _median_spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):>8.0f} ({min(values):.0f}-{max(values):.0f})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--shape", choices=SHAPES, default="light")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64,
                        help="the pipeline's --concurrency (its default)")  # fmt: skip
    parser.add_argument("--aiohttp-concurrency", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--keepalive-requests", type=int, default=10_000_000,
                        help="nginx closes a connection after this many requests")  # fmt: skip
    parser.add_argument("--keepalive-timeout", type=int, default=300,
                        help="nginx closes a connection idle this many seconds")  # fmt: skip
    parser.add_argument("--pipeline-args", nargs="*", default=[], help="extra backfill flags")
    args = parser.parse_args(argv)
    if args.keepalive_requests < 1 or args.concurrency < 1 or args.repeat < 1:
        parser.error("--keepalive-requests, --concurrency and --repeat must be >= 1")
    if not shutil.which("nginx"):
        raise SystemExit("benchmarks.https needs nginx (apt-get install nginx-light)")
    cores = os.cpu_count() or 1
    ports = {"http": _free_port(), "https": _free_port(), "status": _free_port()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server, ca, watch = start_nginx(
            work, ports, cores - 1, args.keepalive_requests, args.keepalive_timeout
        )
        try:
            from benchmarks.datapath import ROOT, compile_tree

            compile_tree(ROOT)
            _run(args, work, ports, ca, watch, cores)
        finally:
            server.terminate()
            server.wait()


def start_nginx(
    work: Path, ports: dict[str, int], core: int, keepalive_requests: int, keepalive_timeout: int
) -> tuple[subprocess.Popen[bytes], Path, ServerWatch]:
    """Start nginx on ``ports`` (http, https, status) pinned to ``core``, once it answers.

    Returns nginx, the test CA's ca.pem (in ``work``) and the watch on its log.
    """
    ca, chain, key = make_ca(work)
    http = _HTTP_BLOCK.format(
        log=work / "access.log",
        keepalive_requests=keepalive_requests,
        keepalive_timeout=keepalive_timeout,
        cert=chain,
        key=key,
        http_port=ports["http"],
        https_port=ports["https"],
        status_port=ports["status"],
    )
    server = _start_server("nginx", ports["http"], 0.0, core, work, http=http)
    watch = ServerWatch(work / "access.log", ports["status"], keepalive_requests)
    try:
        watch.wait_up(server)
    except BaseException:
        server.terminate()
        server.wait()
        raise
    return server, ca, watch


def _run(args: argparse.Namespace, work: Path, ports: dict[str, int], ca: Path,
         watch: ServerWatch, cores: int) -> None:  # fmt: skip
    bases = {scheme: f"{scheme}://127.0.0.1:{ports[scheme]}" for scheme in SCHEMES}
    source, https_urls, count = _write_inputs(args.events, work, bases["https"], args.shape)
    # the same URLs over plain HTTP: only the scheme and port differ
    urls = {"https": https_urls, "http": work / "urls-http.txt"}
    urls["http"].write_text(https_urls.read_text().replace(bases["https"], bases["http"]))
    flags, pipeline_env = pipeline_trust(ca)
    # raw aiohttp trusts the CA as aiohttp's default context does: through SSL_CERT_FILE
    raw_env = {"SSL_CERT_FILE": str(ca)}
    print(
        f"{args.events} {args.shape} events -> {count} messages; {cores} cores; nginx on core "
        f"{cores - 1} (TLS 1.3, a trustme CA; keepalive_requests {args.keepalive_requests}, "
        f"keepalive_timeout {args.keepalive_timeout}s); b on core 0, a and b2 on any core"
    )

    def pipeline(scheme: str) -> Run:
        out = work / f"out-{scheme}"
        out.mkdir(exist_ok=True)
        watch.start()
        run = _pipeline_once(
            source, bases[scheme], out, None, f"--concurrency={args.concurrency}",
            *flags, *args.pipeline_args, env=pipeline_env,
        )  # fmt: skip
        seen = watch.finish(ports[scheme])
        report = json.loads((out / "report.json").read_text())
        return Run(
            run["messages"], run["seconds"], run["cpu"], seen, args.concurrency,
            server_cpu=watch.server_cpu, failed=report["messages_failed"],
            ambiguous=report["messages_ambiguous"],
        )  # fmt: skip

    def raw(scheme: str, processes: int) -> Run:
        best: Run | None = None
        for concurrency in args.aiohttp_concurrency:
            commands = [_raw(urls[scheme], concurrency, k, processes) for k in range(processes)]
            watch.start()
            runs, wall = _measured_together(
                commands, [0 if processes == 1 else None] * processes, env=raw_env
            )
            seen = watch.finish(ports[scheme])
            run = Run(
                sum(out["messages"] for out, _, _ in runs), wall,
                sum(cpu for _, cpu, _ in runs), seen, concurrency * processes, concurrency,
                server_cpu=watch.server_cpu,
            )  # fmt: skip
            if best is None or run.rate > best.rate:
                best = run
        assert best is not None
        return best

    steps: dict[str, Callable[[str], Run]] = {
        "a": pipeline,
        "b": lambda scheme: raw(scheme, 1),
        "b2": lambda scheme: raw(scheme, cores),
    }
    results: dict[tuple[str, str], list[Run]] = {
        (step, scheme): [] for step in steps for scheme in SCHEMES
    }
    loads: list[str] = []
    for turn in range(args.repeat):
        loads.append("/".join(f"{load:.2f}" for load in os.getloadavg()))
        order = SCHEMES if turn % 2 == 0 else SCHEMES[::-1]
        for step, measure in steps.items():
            for scheme in order:
                results[step, scheme].append(measure(scheme))
        loads[-1] += " -> " + "/".join(f"{load:.2f}" for load in os.getloadavg())
    _report(args, results, loads, cores)


def _report(args: argparse.Namespace, results: dict[tuple[str, str], list[Run]],
            loads: list[str], cores: int) -> None:  # fmt: skip
    labels = {"a": "a. pipeline, end to end", "b": "b. raw aiohttp, 1 process",
              "b2": f"b2. raw aiohttp, {cores} processes"}  # fmt: skip
    print(
        f"\nmessages/s, median (min-max) of {args.repeat} turns; CPU s per 1,000 messages of "
        "the client's processes and of nginx"
    )
    print(
        f"{'':32}{'HTTP':>22}{'HTTPS':>22}{'HTTPS/HTTP':>12}{'CPU HTTP':>10}{'HTTPS':>7}"
        f"{'nginx HTTP':>12}{'HTTPS':>7}"
    )
    medians: dict[tuple[str, str], float] = {}
    for step, label in labels.items():
        cells = []
        for scheme in SCHEMES:
            runs = results[step, scheme]
            medians[step, scheme] = statistics.median(r.rate for r in runs)
            cells.append(_median_spread([r.rate for r in runs]))
        cpu = [
            statistics.median(1000 * r.cpu / max(1, r.messages) for r in results[step, s])
            for s in SCHEMES
        ]
        server = [
            statistics.median(1000 * r.server_cpu / max(1, r.messages) for r in results[step, s])
            for s in SCHEMES
        ]
        ratio = medians[step, "https"] / medians[step, "http"]
        print(
            f"{label:32}{cells[0]:>22}{cells[1]:>22}{ratio:>12.2f}{cpu[0]:>10.3f}{cpu[1]:>7.3f}"
            f"{server[0]:>12.3f}{server[1]:>7.3f}"
        )
    for limit in ("b", "b2"):
        # per turn: a and its limit ran back to back, so the turn's ratio shares its load
        per_turn = {
            scheme: [
                a.rate / b.rate
                for a, b in zip(results["a", scheme], results[limit, scheme], strict=True)
            ]
            for scheme in SCHEMES
        }
        http, https = (medians["a", s] / medians[limit, s] for s in SCHEMES)
        print(
            f"a/{limit}: HTTP {http:.2f}, HTTPS {https:.2f}: HTTPS's is {https / http:.2f}x "
            f"HTTP's (per turn: HTTP "
            f"{', '.join(f'{r:.2f}' for r in per_turn['http'])}; HTTPS "
            f"{', '.join(f'{r:.2f}' for r in per_turn['https'])})"
        )
    goal = (medians["a", "https"] / medians["b", "https"]) / (
        medians["a", "http"] / medians["b", "http"]
    )
    print(f"goal (issue 19): a/b over HTTPS within 10% of a/b over HTTP: "
          f"{'met' if goal >= 0.9 else 'NOT met'} ({goal:.2f})")  # fmt: skip
    print(f"load average (1/5/15 min) at each turn's start -> end: {'; '.join(loads)}")
    print(
        "\nconnections per run (over HTTPS: TLS handshakes); bound: at most the connections in "
        "flight plus the reconnects (connections nginx closed after keepalive_requests)"
    )
    failed = False
    for step, label in labels.items():
        for scheme in SCHEMES:
            for run in results[step, scheme]:
                seen = run.connections
                ok = seen.within(run.in_flight)
                failed |= not ok
                at = f" at concurrency {run.concurrency}" if run.concurrency else ""
                if run.failed is not None:
                    # requests beyond the messages delivered would be retries
                    at += (
                        f" ({run.messages:.0f} delivered, {run.failed} failed, "
                        f"{run.ambiguous} ambiguous)"
                    )
                print(
                    f"  {label}{at}, {scheme}: {seen.requests} requests, {seen.connections} "
                    f"connections ({seen.accepted} accepted), {seen.per_connection:.0f} "
                    f"requests per connection, {seen.used_up} closed after keepalive_requests, "
                    f"{seen.resumed} resumed; {','.join(sorted(seen.protocols))}; <= "
                    f"{run.in_flight} + {seen.used_up}: {'ok' if ok else 'EXCEEDED'}"
                )
    if failed:
        raise SystemExit("a run made more connections than the bound")


if __name__ == "__main__":
    main()
