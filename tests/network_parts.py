"""Real network parts for the proxy and CA tests: a test CA, an HTTPS collector, tinyproxy.

- :class:`TestCA`: a certificate authority made by ``trustme``, its PEM written to a file
  (what ``--ca-bundle`` is given), and the server context of a certificate it issued for
  127.0.0.1 and localhost.
- :func:`tls_collector`: the sandbox collector serving HTTPS with such a certificate.
- :class:`Tinyproxy`: Debian's tinyproxy on a loopback port of its own, with its own
  config file and log (``ConnectPort`` lines say where it lets a CONNECT go: any other port
  is refused with 403, which is how a test gets "a proxy that refuses CONNECT").

The tinyproxy fixture skips without the program locally and fails in CI
(``BEACONFLOW_REQUIRE_TINYPROXY=1``, set by .ci/run, which installs it).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import trustme

from beaconflow.sandbox.collector import HOST, Collector, unused_port
from tests.conftest import KISSMETRICS_KEY, KONTAGENT_KEY, KONTAGENT_SECRET, debian_program

TINYPROXY = Path("/usr/bin/tinyproxy")
#: Seconds tinyproxy gets to start listening (it takes milliseconds; a bound, not a timing).
_START_SECONDS = 30.0


class TestCA:
    """A trustme CA with a server certificate for 127.0.0.1 and localhost."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, directory: Path, name: str = "ca.pem") -> None:
        self.ca = trustme.CA()
        self.pem_path = directory / name
        self.ca.cert_pem.write_to_path(str(self.pem_path))
        self._server = self.ca.issue_cert(HOST, "localhost")

    def server_context(self) -> ssl.SSLContext:
        """The context a server presents this CA's certificate with."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server.configure_cert(context)
        return context


def tls_collector(ca: TestCA) -> Collector:
    """A collector knowing the test keys, serving HTTPS with ``ca``'s certificate."""
    return Collector(
        kontagent_key=KONTAGENT_KEY,
        kissmetrics_key=KISSMETRICS_KEY,
        kontagent_secret=KONTAGENT_SECRET,
        ssl_context=ca.server_context(),
    )


class Tinyproxy:
    """A running tinyproxy: :attr:`url`, :meth:`log` (what it logged), :meth:`tunnels`.

    ``connect_ports``: the ports it lets a CONNECT through to (none: only 443, so that a
    CONNECT to a test server's port is refused with 403). ``user``/``password``: basic
    authentication it demands (407 without it).
    """

    def __init__(
        self,
        directory: Path,
        *,
        connect_ports: Sequence[int] = (),
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        program = debian_program(TINYPROXY, "tinyproxy", "BEACONFLOW_REQUIRE_TINYPROXY")
        self.port = unused_port()
        self.log_path = directory / "tinyproxy.log"
        lines = [
            f"Port {self.port}",
            f"Listen {HOST}",
            "Timeout 60",
            f'LogFile "{self.log_path}"',
            "LogLevel Info",
            "MaxClients 200",
            *(f"ConnectPort {port}" for port in (connect_ports or (443,))),
        ]
        if user is not None:
            lines.append(f"BasicAuth {user} {password}")
        config = directory / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._process = subprocess.Popen(
            [str(program), "-d", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_listening()
        credentials = "" if user is None else f"{user}:{password}@"
        self.url = f"http://{credentials}{HOST}:{self.port}"
        #: The URL without credentials, as beaconflow shows it.
        self.shown = f"http://{HOST}:{self.port}"

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + _START_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"tinyproxy exited at start: {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("tinyproxy did not start listening")
            time.sleep(0.02)

    def log(self) -> str:
        """Everything tinyproxy logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tunnels(self, port: int) -> int:
        """How many CONNECT requests to ``127.0.0.1:port`` tinyproxy received."""
        return self.log().count(f"CONNECT {HOST}:{port} HTTP/1.")  # aiohttp 1.1, urllib3 1.0

    def requests(self) -> int:
        """How many requests of any kind tinyproxy received."""
        return self.log().count("Request (file descriptor")

    def stop(self) -> None:
        """Stop it and wait for it."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@contextlib.contextmanager
def tinyproxy(
    directory: Path,
    *,
    connect_ports: Sequence[int] = (),
    user: str | None = None,
    password: str | None = None,
) -> Iterator[Tinyproxy]:
    """A :class:`Tinyproxy` for the ``with`` block."""
    proxy = Tinyproxy(directory, connect_ports=connect_ports, user=user, password=password)
    try:
        yield proxy
    finally:
        proxy.stop()


def port_of(base_url: str) -> int:
    """The port of a collector's base URL."""
    return int(base_url.rsplit(":", 1)[1])
