"""The HTTPS benchmark's connection count (``benchmarks/https.py``): what its table rests on.

The count of TLS handshakes per run comes from nginx's access log and stub_status; these
tests check the count on log lines, then against a real nginx serving TLS 1.3 with a trustme
CA, sent to by the benchmark's own raw aiohttp processes: every request logged, connections
counted, and nginx's ``keepalive_requests`` showing up as reconnects within the bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.https import Connections, ServerWatch, count_connections, start_nginx
from benchmarks.throughput import _free_port, _measured_together, _raw
from tests.conftest import debian_program

PORT = 8443


def test_connections_are_the_distinct_connection_numbers_on_the_port() -> None:
    lines = [
        f"{PORT} 7 1 TLSv1.3 .",
        f"{PORT} 8 1 TLSv1.3 .",
        f"{PORT} 7 2 TLSv1.3 .",
        f"{PORT} 7 3 TLSv1.3 .",
        f"{PORT} 9 1 TLSv1.3 r",
        f"{PORT} 9 2 TLSv1.3 r",
        "8080 10 1 - .",  # another port: the plain-HTTP server's
        "garbage",
    ]
    seen = count_connections(lines, PORT, keepalive_requests=3, accepted=3)
    assert seen == Connections(
        requests=6,
        connections=3,
        accepted=3,
        used_up=1,
        resumed=1,
        protocols=frozenset({"TLSv1.3"}),
    )
    assert seen.per_connection == 2


@pytest.mark.parametrize(
    ("connections", "accepted", "used_up", "in_flight", "within"),
    [
        (4, 4, 0, 4, True),
        (5, 5, 0, 4, False),  # one more than could be in flight, and nothing closed
        (9, 9, 5, 4, True),  # five closed after keepalive_requests: five reconnects
        (4, 6, 0, 4, False),  # two connections that carried no request count too
    ],
)
def test_the_bound_is_in_flight_plus_reconnects(
    connections: int, accepted: int, used_up: int, in_flight: int, within: bool
) -> None:
    seen = Connections(100, connections, accepted, used_up, 0, frozenset({"TLSv1.3"}))
    assert seen.within(in_flight) is within


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[dict[str, int], Path, ServerWatch]]:
    debian_program(Path("/usr/sbin/nginx"), "nginx", "BEACONFLOW_REQUIRE_NGINX")
    ports = {"http": _free_port(), "https": _free_port(), "status": _free_port()}
    server, ca, watch = start_nginx(tmp_path, ports, 0, 10, 300)
    try:
        yield ports, ca, watch
    finally:
        server.terminate()
        server.wait()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_real_run_reconnects_after_keepalive_requests_within_the_bound(
    nginx: tuple[dict[str, int], Path, ServerWatch], tmp_path: Path, scheme: str
) -> None:
    ports, ca, watch = nginx
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{scheme}://127.0.0.1:{ports[scheme]}/i?n={n}\n" for n in range(95)))
    watch.start()
    (run,), _ = _measured_together([_raw(urls, 4)], [None], env={"SSL_CERT_FILE": str(ca)})
    seen = watch.finish(ports[scheme])
    assert run[0]["messages"] == 95
    assert seen.requests == 95
    # nginx closes each connection after 10 requests; the (at most 4) connections still open
    # at the end served fewer, so 6 to 9 were used up, and the rest are the 4 in flight
    assert 6 <= seen.used_up <= 95 // 10
    assert seen.connections - seen.used_up <= 4
    assert seen.accepted == seen.connections
    assert seen.within(4)
    assert seen.protocols == {"TLSv1.3" if scheme == "https" else "-"}


def test_a_client_without_the_ca_is_refused_and_counted_by_accepts_alone(
    nginx: tuple[dict[str, int], Path, ServerWatch], tmp_path: Path
) -> None:
    ports, _, watch = nginx
    urls = tmp_path / "urls.txt"
    urls.write_text(f"https://127.0.0.1:{ports['https']}/i\n")
    watch.start()
    with pytest.raises(RuntimeError, match="exited 1"):
        _measured_together([_raw(urls, 1)], [None], env={"SSL_CERT_FILE": str(tmp_path / "none")})
    seen = watch.finish(ports["https"])
    assert (seen.requests, seen.connections, seen.accepted) == (0, 0, 1)
