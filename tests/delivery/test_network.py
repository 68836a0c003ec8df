"""The network value: where proxies and CA bundles come from, NO_PROXY, the TLS context.

No network here but one real TLS handshake on loopback (the bundle's CA is trusted); the
proxy and the HTTPS collector end to end are in tests/delivery/test_network_real.py and
tests/e2e/test_networks.py.
"""

from __future__ import annotations

import os
import pickle
import socket
import ssl
import threading
from pathlib import Path

import aiohttp
import pytest
import requests.utils
from yarl import URL

from beaconflow.delivery.network import (
    Network,
    NetworkError,
    build_ssl_context,
    bypasses_proxy,
    certificate_reason,
    proxy_refused_reason,
    proxy_secrets_in,
)
from beaconflow.delivery.redact import Redactor
from beaconflow.delivery.retry import Verdict, classify
from beaconflow.delivery.sender import BLOCKED_WINDOW, REDIRECT_SECONDS, BlockedWatch
from tests.network_parts import TestCA

# -- where the proxy comes from --------------------------------------------------------------


def test_the_environment_names_a_proxy_per_scheme() -> None:
    network = Network.resolve(
        environ={"HTTPS_PROXY": "http://secure:3128", "HTTP_PROXY": "http://plain:3128"}
    )
    assert network.proxy_for("https://trk.kissmetrics.io/e?_k=k") == "http://secure:3128"
    assert network.proxy_for("http://api.geo.kontagent.net/api/v1/k/evt/") == "http://plain:3128"
    assert network.https_proxy is not None and network.https_proxy.source == "HTTPS_PROXY"


def test_the_lower_case_variable_wins_as_in_requests_and_curl() -> None:
    environ = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"}
    network = Network.resolve(environ=environ)
    assert network.proxy_for("https://x.example/") == "http://lower:2"
    assert network.https_proxy is not None and network.https_proxy.source == "https_proxy"


def test_lower_case_wins_as_requests_reads_the_real_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("https_proxy", "http://lower:2")
    assert requests.utils.get_environ_proxies("https://x.example/")["https"] == "http://lower:2"
    assert Network.resolve().proxy_for("https://x.example/") == "http://lower:2"


def test_an_empty_lower_case_variable_hides_the_upper_case_one() -> None:
    network = Network.resolve(environ={"HTTPS_PROXY": "http://upper:1", "https_proxy": ""})
    assert network.proxy_for("https://x.example/") is None


def test_the_flag_replaces_both_variables_and_no_proxy_still_applies() -> None:
    environ = {
        "HTTPS_PROXY": "http://env:1",
        "HTTP_PROXY": "http://env:2",
        "NO_PROXY": "internal.corp",
    }
    network = Network.resolve("http://flag:3128", environ=environ)
    assert network.proxy_for("https://trk.kissmetrics.io/") == "http://flag:3128"
    assert network.proxy_for("http://api.geo.kontagent.net/") == "http://flag:3128"
    assert network.proxy_for("https://collector.internal.corp/") is None
    assert network.https_proxy is not None and network.https_proxy.source == "--proxy"


@pytest.mark.parametrize("word", ["none", "NONE", " none "])
def test_proxy_none_turns_off_the_environments_proxies(word: str) -> None:
    network = Network.resolve(word, environ={"HTTPS_PROXY": "http://env:1"})
    assert network.proxy_for("https://trk.kissmetrics.io/") is None
    assert network.proxies() == ()


def test_a_bare_host_and_port_is_an_http_proxy_as_in_curl() -> None:
    network = Network.resolve(environ={"https_proxy": "proxy.corp:3128"})
    assert network.proxy_for("https://x.example/") == "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("flag", "environ", "named"),
    [
        ("socks5://proxy:1080", {}, "--proxy 'socks5://proxy:1080'"),
        ("http://", {}, "--proxy 'http://'"),
        ("http://proxy:99999", {}, "--proxy"),
        (None, {"HTTPS_PROXY": "ftp://proxy:21"}, "HTTPS_PROXY 'ftp://proxy:21'"),
        (None, {"http_proxy": "http://proxy:3128/path"}, "http_proxy http://proxy:3128"),
    ],
)
def test_a_proxy_url_that_cannot_be_used_is_named_with_its_source(
    flag: str | None, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(NetworkError) as caught:
        Network.resolve(flag, environ=environ)
    text = str(caught.value)
    assert text.startswith(named), text
    assert "\n" not in text


def test_a_bad_proxy_url_never_shows_its_password() -> None:
    with pytest.raises(NetworkError) as caught:
        Network.resolve("socks5://alice:hunter2-secret@proxy:1080")
    assert "hunter2" not in str(caught.value)
    assert "alice" not in str(caught.value)


# -- credentials -----------------------------------------------------------------------------


def test_proxy_credentials_are_secrets_and_never_shown() -> None:
    network = Network.resolve("http://alice:p%40ss-w0rd@proxy.corp:3128", environ={})
    assert network.proxy_for("https://x.example/") == "http://alice:p%40ss-w0rd@proxy.corp:3128"
    assert set(network.secrets()) == {"alice", "p%40ss-w0rd", "p@ss-w0rd"}
    assert network.https_proxy is not None
    assert network.https_proxy.shown == "http://proxy.corp:3128"
    assert network.https_proxy.credentials == ("alice", "p@ss-w0rd")
    assert "p%40ss" not in repr(network) and "alice" not in repr(network)
    report = str(network.report())
    assert "alice" not in report and "p%40ss" not in report


def test_the_command_finds_proxy_credentials_before_parsing_its_flags() -> None:
    found = proxy_secrets_in(
        ["--proxy", "http://bob:flag-pass@p:1", "--input=x"],
        {"https_proxy": "http://carol:env-pass@p:2", "NO_PROXY": "x"},
    )
    assert set(found) == {"bob", "flag-pass", "carol", "env-pass"}
    assert proxy_secrets_in(["--proxy=http://dave:eq-pass@p:1"], {}) == ["dave", "eq-pass"]


@pytest.mark.parametrize(
    "text",
    [
        "proxy http://alice:pw@proxy:3128 refused",
        "ProxyError: Cannot connect to proxy https://alice@proxy:3128/ (x)",
        "url=URL('http://a:b@127.0.0.1:3128')",
    ],
)
def test_the_redactor_masks_credentials_in_any_url(text: str) -> None:
    masked = Redactor().text(text)
    assert "://***@" in masked
    assert "alice" not in masked and ":pw@" not in masked and "a:b@" not in masked


# -- NO_PROXY, as requests decides it ---------------------------------------------------------

_URLS = [
    "https://trk.kissmetrics.io/e",
    "https://kissmetrics.io/e",
    "http://api.geo.kontagent.net/api/v1/k/evt/",
    "http://api.geo.kontagent.net:8080/api/v1/k/evt/",
    "https://notkissmetrics.io/",
    "http://127.0.0.1:8080/",
    "http://10.1.2.3/",
    "http://192.168.0.7:3128/",
    "http://localhost:9000/",
    "http://[::1]:9000/",
    "https://INTERNAL.Corp/x",
    "https://a.b.internal.corp/x",
]
_NO_PROXIES = [
    "",
    "*",
    "kissmetrics.io",
    ".kissmetrics.io",
    "trk.kissmetrics.io",
    "kontagent.net:8080",
    "api.geo.kontagent.net:80",
    "127.0.0.1",
    "10.0.0.0/8",
    "192.168.0.0/16, localhost",
    "::1",
    "internal.corp",
    ".internal.corp,kontagent.net",
    " localhost , 127.0.0.1 ",
    "io",
    "corp:443",
]


@pytest.mark.parametrize("no_proxy", _NO_PROXIES)
@pytest.mark.parametrize("url", _URLS)
def test_no_proxy_decides_as_requests_should_bypass_proxies(
    url: str, no_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests also reads the environment's no_proxy through urllib: keep it out
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    expected = requests.utils.should_bypass_proxies(url, no_proxy=no_proxy or None)
    assert bypasses_proxy(url, no_proxy) is expected


# -- CA bundles ------------------------------------------------------------------------------


def test_a_missing_ca_file_is_named_with_its_flag(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(NetworkError, match=rf"^--ca-bundle {missing}: cannot be read: No such"):
        Network.resolve(ca_bundles=[str(missing)], environ={})


def test_a_file_without_a_certificate_is_named(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n", encoding="utf-8")
    with pytest.raises(NetworkError, match=r"holds no PEM certificate") as caught:
        Network.resolve(environ={"SSL_CERT_FILE": str(text)})
    assert str(caught.value).startswith(f"SSL_CERT_FILE {text}: ")


def test_a_broken_pem_block_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        encoding="utf-8",
    )
    with pytest.raises(NetworkError, match=r"^REQUESTS_CA_BUNDLE .*: not a valid PEM certificate"):
        Network.resolve(environ={"REQUESTS_CA_BUNDLE": str(broken)})


def test_bundles_come_from_the_flag_and_both_variables_once_each(tmp_path: Path) -> None:
    first, second = TestCA(tmp_path, "first.pem"), TestCA(tmp_path, "second.pem")
    network = Network.resolve(
        ca_bundles=[str(first.pem_path)],
        environ={"SSL_CERT_FILE": str(second.pem_path), "REQUESTS_CA_BUNDLE": str(first.pem_path)},
    )
    assert [(b.source, b.path) for b in network.ca_bundles] == [
        ("--ca-bundle", str(first.pem_path)),
        ("SSL_CERT_FILE", str(second.pem_path)),
    ]
    assert network.report()["ca_bundles"] == [
        {"source": "--ca-bundle", "path": str(first.pem_path), "certificates": 1},
        {"source": "SSL_CERT_FILE", "path": str(second.pem_path), "certificates": 1},
    ]


def test_the_value_travels_without_its_files(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    network = Network.resolve("http://u:p@proxy:1", [str(ca.pem_path)], environ={})
    ca.pem_path.unlink()  # a remote worker has no such file
    copy = pickle.loads(pickle.dumps(network))
    assert copy == network
    assert _subjects(copy.ssl_context()) >= _subjects_of_pem(ca)


def _subjects(context: ssl.SSLContext) -> set[object]:
    return {repr(cert["subject"]) for cert in context.get_ca_certs()}


def _subjects_of_pem(ca: TestCA) -> set[object]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca.ca.cert_pem.bytes().decode())
    return _subjects(context)


def _system_subjects() -> set[object]:
    paths = ssl.get_default_verify_paths()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=paths.openssl_cafile)
    except (OSError, ssl.SSLError):
        pytest.skip(f"no system CA file at {paths.openssl_cafile}")
    subjects = _subjects(context)
    if not subjects:
        pytest.skip("the system's CA file is empty")
    return subjects


def test_a_bundle_is_added_to_the_system_store_even_where_openssl_would_replace_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = _system_subjects()
    ca = TestCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.pem_path))
    # what OpenSSL makes of SSL_CERT_FILE: the bundle instead of the system's store
    assert not system & _subjects(ssl.create_default_context())
    context = Network.resolve(environ={"SSL_CERT_FILE": str(ca.pem_path)}).ssl_context()
    assert system <= _subjects(context), "the system's store is kept"
    assert _subjects_of_pem(ca) <= _subjects(context), "and the bundle is added"
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_the_context_verifies_a_server_of_the_bundles_ca_and_refuses_another(
    tmp_path: Path,
) -> None:
    ca, other = TestCA(tmp_path, "ca.pem"), TestCA(tmp_path, "other.pem")
    trusted = Network.resolve(ca_bundles=[str(ca.pem_path)], environ={}).ssl_context()
    assert _handshake(ca, trusted) is None
    untrusted = build_ssl_context(other.ca.cert_pem.bytes().decode())
    failure = _handshake(ca, untrusted)
    assert isinstance(failure, ssl.SSLCertVerificationError)


def _handshake(server: TestCA, client: ssl.SSLContext) -> BaseException | None:
    """A real TLS handshake on loopback: None when it succeeds, else the client's error."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    context = server.server_context()

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            connection.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"x")
        return None
    except ssl.SSLError as error:
        return error
    finally:
        thread.join()
        listener.close()


# -- classification and reasons --------------------------------------------------------------


def _certificate_error() -> aiohttp.ClientConnectorCertificateError:
    verification = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verification.verify_message = "self-signed certificate in certificate chain"
    key = aiohttp.client_reqrep.ConnectionKey(
        "trk.kissmetrics.io", 443, True, True, None, None, None
    )
    return aiohttp.ClientConnectorCertificateError(key, verification)


def _proxy_error(status: int) -> aiohttp.ClientHttpProxyError:
    info = aiohttp.RequestInfo(URL("http://proxy:3128"), "CONNECT", {}, URL("http://proxy:3128"))  # type: ignore[arg-type]
    return aiohttp.ClientHttpProxyError(info, (), status=status, message="refused")


def test_an_untrusted_certificate_is_blocked_and_permanent() -> None:
    answer = classify(None, _certificate_error(), sent=False)
    assert answer.blocked and answer.verdict is Verdict.PERMANENT
    assert not answer.ambiguous and not answer.push_back


@pytest.mark.parametrize("status", [400, 403, 407])
def test_a_proxy_refusing_the_tunnel_is_blocked(status: int) -> None:
    answer = classify(None, _proxy_error(status), sent=False)
    assert answer.blocked and answer.verdict is Verdict.PERMANENT


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_a_proxys_5xx_or_timeout_stays_retriable(status: int) -> None:
    answer = classify(None, _proxy_error(status), sent=False)
    assert not answer.blocked and answer.verdict is Verdict.RETRIABLE
    assert not answer.ambiguous


def test_the_reasons_are_one_line_naming_the_host_and_what_failed() -> None:
    assert certificate_reason(
        "trk.kissmetrics.io", 443, "self-signed certificate in certificate chain"
    ) == (
        "TLS certificate of trk.kissmetrics.io:443 not trusted: self-signed certificate in "
        "certificate chain; add your CA with --ca-bundle"
    )
    assert (
        proxy_refused_reason("http://proxy:3128", "trk.kissmetrics.io", 443, 403, "Forbidden")
        == "proxy http://proxy:3128 refused CONNECT to trk.kissmetrics.io:443: 403 Forbidden"
    )


# -- the watch that stops a destination -------------------------------------------------------

_BLOCKED = classify(None, _certificate_error(), sent=False)
_OK = classify(200, None)
_FAILED = classify(500, None)
_REFUSED = classify(None, ConnectionRefusedError(), sent=False)


def test_a_short_row_of_blocked_attempts_stops_a_destination_that_delivered_nothing() -> None:
    watch = BlockedWatch()
    said = [watch.attempt(_BLOCKED, None, float(i)) for i in range(BLOCKED_WINDOW)]
    assert said == [False] * (BLOCKED_WINDOW - 1) + [True]


def test_answers_break_the_row_and_connection_errors_neither_count_nor_break_it() -> None:
    watch = BlockedWatch()
    for _ in range(BLOCKED_WINDOW - 1):
        assert not watch.attempt(_BLOCKED, None, 0.0)
    assert not watch.attempt(_FAILED, 500, 0.0)  # an answer: the network let it through
    for _ in range(BLOCKED_WINDOW - 1):
        assert not watch.attempt(_BLOCKED, None, 0.0)
        assert not watch.attempt(_REFUSED, None, 0.0)
    assert watch.attempt(_BLOCKED, None, 0.0)


def test_after_a_delivery_only_a_lasting_row_stops_it() -> None:
    watch = BlockedWatch()
    assert not watch.attempt(_OK, 200, 0.0)
    for i in range(BLOCKED_WINDOW * 5):
        assert not watch.attempt(_BLOCKED, None, 1.0 + i / 100)
    assert watch.attempt(_BLOCKED, None, 1.0 + REDIRECT_SECONDS)


def test_an_empty_proxy_flag_is_said_as_given() -> None:
    """Not as ``'http://'``, the URL a bare host:port would become."""
    with pytest.raises(NetworkError, match=r"^--proxy '': empty; give http://host:port"):
        Network.resolve("", environ={})


def test_a_certificate_cut_short_is_named(tmp_path: Path) -> None:
    """A block without its END line: the file is cut short, not "no certificate" nor DER."""
    ca_pem = TestCA(tmp_path).ca.cert_pem.bytes().decode()
    cut = tmp_path / "cut.pem"
    cut.write_text(ca_pem + ca_pem[: len(ca_pem) // 2], encoding="utf-8")
    with pytest.raises(NetworkError) as caught:
        Network.resolve(ca_bundles=[str(cut)], environ={})
    assert str(caught.value) == (
        f"--ca-bundle {cut}: a certificate (-----BEGIN CERTIFICATE-----) is not closed by "
        "-----END CERTIFICATE-----: the file is cut short"
    )


def test_a_variable_naming_the_system_store_itself_adds_nothing(tmp_path: Path) -> None:
    store = ssl.get_default_verify_paths().openssl_cafile
    if not os.path.isfile(store):
        pytest.skip(f"this machine's OpenSSL has no store file at {store}")
    link = tmp_path / "store.pem"
    link.symlink_to(os.path.realpath(store))
    for path in (store, str(link)):
        assert Network.resolve(environ={"SSL_CERT_FILE": path}).ca_bundles == ()
    # named with the flag, it is the user's explicit choice: read as any bundle
    (flagged,) = Network.resolve(ca_bundles=[store], environ={}).ca_bundles
    assert flagged.source == "--ca-bundle" and flagged.certificates > 0
