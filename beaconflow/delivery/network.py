"""How beaconflow reaches the network: its proxy, and the certificate authorities it trusts.

A :class:`Network` is resolved once, in the driver (:meth:`Network.resolve`), from
``--proxy``, ``--ca-bundle`` and the environment, and travels as a value inside the sender's
configuration to every sender process and Beam worker: a remote worker needs neither the
driver's environment nor its files, since the value carries the proxy URLs and the CA
certificates' PEM text, not their paths. The bulk sender (aiohttp) and the small client
(requests) take the same value, so they go through the same proxy and trust the same CAs.

**Proxies.** ``HTTPS_PROXY`` for https:// URLs, ``HTTP_PROXY`` for http:// ones, and
``NO_PROXY`` (hosts, domain suffixes, ``.domain``, ``host:port``, IPv4 addresses and
networks, ``*``), each in either case; when both cases are set the lower-case one wins, as
in requests (urllib's ``getproxies_environment``) and curl. ``--proxy URL`` replaces both
variables for both schemes; ``NO_PROXY`` still applies to it. ``--proxy none`` turns proxies
off whatever the environment says. :meth:`Network.proxy_for` decides per URL, as requests'
``should_bypass_proxies`` does (tests/delivery/test_network.py compares them case by case).
A proxy URL may carry ``user:password@``: it is sent as the proxy's basic authentication
and :meth:`Network.secrets` gives it to the redactor, so it is never shown.

**Certificate authorities.** Verification is always on. :meth:`Network.ssl_context` is the
one TLS context both clients use: the system's trust store plus every bundle of
``--ca-bundle`` (repeatable), ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE``, added, never
replacing it. OpenSSL itself would let ``SSL_CERT_FILE`` (and ``SSL_CERT_DIR``) replace
the system store, and requests would let ``REQUESTS_CA_BUNDLE`` replace it: the context is
therefore built from OpenSSL's compiled-in default locations, never from those variables,
and the client's requests adapter is kept from loading any file of its own.

A proxy URL that is not ``http(s)://host[:port]`` or a CA file that is missing, not PEM or
holds no certificate is a :class:`NetworkError` whose one line names the flag or variable
(and the path); the command turns it into a usage error (exit 2). No network, no Beam::

    python -m pytest tests/delivery/test_network.py
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

#: What ``--proxy`` takes to turn proxies off, whatever the environment says.
NO_PROXY_WORD = "none"
#: The variables a :class:`Network` reads, in the order ``--help`` lists them.
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
#: Schemes a proxy URL may have (an https:// proxy is reached over TLS itself).
_PROXY_SCHEMES = ("http", "https")
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


class NetworkError(ValueError):
    """A proxy or CA setting that cannot be used; the text is one line naming its source."""


@dataclass(frozen=True)
class Proxy:
    """A proxy URL and where it came from (``--proxy``, ``HTTPS_PROXY``, ``https_proxy``...).

    ``url`` may hold ``user:password@`` and is kept out of repr; :attr:`shown` never holds it.
    """

    url: str = field(repr=False)
    source: str

    @property
    def shown(self) -> str:
        """The URL without its credentials: ``http://proxy.corp:3128``."""
        return shown_proxy(self.url)

    @property
    def credentials(self) -> tuple[str, str] | None:
        """The user name and password (percent-decoded), or None when the URL has none."""
        parts = urlsplit(self.url)
        if parts.username is None and parts.password is None:
            return None
        return unquote(parts.username or ""), unquote(parts.password or "")


@dataclass(frozen=True)
class CABundle:
    """One CA bundle added to the trust store: where it was named, and its certificates."""

    source: str
    path: str
    pem: str = field(repr=False)
    certificates: int


@dataclass(frozen=True)
class Network:
    """The proxies and extra certificate authorities of a run; see the module docstring.

    ``https_proxy``/``http_proxy``: the proxy for each scheme, None for a direct connection.
    ``no_proxy``: the ``NO_PROXY`` entries, comma-separated as given ("" for none).
    ``ca_bundles``: the bundles added to the system's trust store, in the order named.
    The default value is a direct connection trusting the system's store alone.
    """

    https_proxy: Proxy | None = None
    http_proxy: Proxy | None = None
    no_proxy: str = ""
    ca_bundles: tuple[CABundle, ...] = ()

    @classmethod
    def resolve(
        cls,
        proxy: str | None = None,
        ca_bundles: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> Network:
        """The network of ``--proxy`` (None: not given), ``--ca-bundle`` and ``environ``.

        ``environ`` defaults to ``os.environ``. Raises :class:`NetworkError` for a proxy URL
        or a CA file that cannot be used.
        """
        env = os.environ if environ is None else environ
        no_proxy = _variable(env, "NO_PROXY")
        no_proxy_value = "" if no_proxy is None else no_proxy[1]
        if proxy is not None:
            if proxy.strip().lower() == NO_PROXY_WORD:
                https = http = None
            else:
                https = http = _checked_proxy(proxy, "--proxy")
        else:
            https = _proxy_variable(env, "HTTPS_PROXY")
            http = _proxy_variable(env, "HTTP_PROXY")
        bundles = [_read_bundle("--ca-bundle", path) for path in ca_bundles]
        for name in CA_VARIABLES:
            found = _variable(env, name, lower=False)
            if found is not None and found[1]:
                path = found[1]
                # many images set SSL_CERT_FILE to the system's own bundle: nothing to add
                if all(bundle.path != path for bundle in bundles) and not _system_store(path):
                    bundles.append(_read_bundle(name, path))
        return cls(https, http, no_proxy_value, tuple(bundles))

    def proxy_for(self, url: str) -> str | None:
        """The proxy URL (credentials included) to reach ``url`` through, or None: direct."""
        parts = urlsplit(url)
        chosen = self.https_proxy if parts.scheme == "https" else self.http_proxy
        if parts.scheme not in ("http", "https"):
            chosen = None
        if chosen is None or bypasses_proxy(url, self.no_proxy):
            return None
        return chosen.url

    def proxies(self) -> tuple[Proxy, ...]:
        """The distinct proxies in use (one when ``--proxy`` or both variables agree)."""
        found: list[Proxy] = []
        for proxy in (self.https_proxy, self.http_proxy):
            if proxy is not None and all(proxy.url != other.url for other in found):
                found.append(proxy)
        return tuple(found)

    def secrets(self) -> tuple[str, ...]:
        """The proxies' user names and passwords, raw and as the URL writes them."""
        return tuple(value for proxy in self.proxies() for value in url_secrets(proxy.url))

    def report(self) -> dict[str, object]:
        """The report's ``network``: proxies without credentials, NO_PROXY, the CA bundles."""
        return {
            "https_proxy": _reported(self.https_proxy),
            "http_proxy": _reported(self.http_proxy),
            "no_proxy": self.no_proxy or None,
            "ca_bundles": [
                {"source": b.source, "path": b.path, "certificates": b.certificates}
                for b in self.ca_bundles
            ],
        }

    def ca_pem(self) -> str:
        """Every added bundle's certificates, as one PEM text."""
        return "".join(bundle.pem for bundle in self.ca_bundles)

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of this network: verification on, system store plus the bundles.

        One per process and CA text: building one reads the system store (a few ms), and a
        shared context lets OpenSSL reuse what it parsed.
        """
        pem = self.ca_pem()
        with _contexts_lock:
            context = _contexts.get(pem)
            if context is None:
                context = _contexts[pem] = build_ssl_context(pem)
        return context


def _system_store(path: str) -> bool:
    """Whether ``path`` is the file the system's trust store is read from (a link to it too)."""
    store = ssl.get_default_verify_paths().openssl_cafile
    return os.path.isfile(store) and os.path.realpath(path) == os.path.realpath(store)


def _reported(proxy: Proxy | None) -> dict[str, str] | None:
    return None if proxy is None else {"url": proxy.shown, "source": proxy.source}


_contexts: dict[str, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def build_ssl_context(ca_pem: str = "") -> ssl.SSLContext:
    """A verifying client context: the system's trust store, plus the CAs of ``ca_pem``.

    The system's store is read from OpenSSL's compiled-in locations (what
    ``ssl.create_default_context()`` loads when ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` are
    unset): with those variables set, OpenSSL would read them instead, replacing the store,
    while beaconflow documents that a bundle adds to it.
    """
    # PROTOCOL_TLS_CLIENT: CERT_REQUIRED and check_hostname, as create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if sys.platform == "win32":  # the Windows store is not a file
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        paths = ssl.get_default_verify_paths()
        cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
        capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
        if cafile or capath:
            context.load_verify_locations(cafile=cafile, capath=capath)
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    return context


def bypasses_proxy(url: str, no_proxy: str) -> bool:
    """Whether ``url`` is reached directly by ``no_proxy``'s entries; requests' rules.

    An entry matches the host (or ``host:port``) that is it or ends with a dot and it
    (``example.com`` and ``.example.com`` match ``example.com`` and ``www.example.com``,
    not ``notexample.com``; ``host:port`` only that port), ``*`` matches every host, and an
    IPv4 address or network (``10.0.0.0/8``) matches the addresses in it. A URL without a
    host is never proxied.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if host is None:
        return True
    entries = [entry for entry in no_proxy.replace(" ", "").split(",") if entry]
    if not entries:
        return False
    if _is_ipv4(host):
        for entry in entries:
            if "/" in entry:
                try:
                    if ipaddress.IPv4Address(host) in ipaddress.IPv4Network(entry, strict=False):
                        return True
                except ValueError:
                    continue
            elif host == entry:
                return True
    else:
        try:
            port = parts.port
        except ValueError:
            port = None
        with_port = f"{host}:{port}" if port else host
        for entry in entries:
            name = entry.lstrip(".")
            if name in (host, with_port):
                return True
            if host.endswith("." + name) or with_port.endswith("." + name):
                return True
    return _bypass_by_suffix(host, no_proxy)


def _bypass_by_suffix(host: str, no_proxy: str) -> bool:
    """Whether urllib's ``proxy_bypass_environment`` bypasses: ``*``, a DNS suffix at a dot."""
    if no_proxy == "*":
        return True
    host = host.lower()
    for name in no_proxy.split(","):
        name = name.strip().lstrip(".").lower()
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _variable(env: Mapping[str, str], name: str, *, lower: bool = True) -> tuple[str, str] | None:
    """``(spelling, value)`` of the variable ``name``; the lower-case spelling wins.

    The lower-case variable wins when both are set, as urllib (and so requests) and curl
    read them; an empty lower-case one hides the upper-case one, as in urllib.
    """
    if lower and name.lower() in env:
        return name.lower(), env[name.lower()]
    if name in env:
        return name, env[name]
    return None


def _proxy_variable(env: Mapping[str, str], name: str) -> Proxy | None:
    found = _variable(env, name)
    if found is None or not found[1].strip():
        return None
    spelling, value = found
    return _checked_proxy(value.strip(), spelling)


def _checked_proxy(url: str, source: str) -> Proxy:
    """``url`` as a :class:`Proxy`, or NetworkError naming ``source`` (never the password)."""
    if not url.strip():
        # said as given: the http:// a bare host:port gets would show a URL nobody typed
        raise NetworkError(f"{source} '': empty; give http://host:port (or --proxy none: no proxy)")
    if "://" not in url:
        # curl and requests take a bare host:port as http://
        url = "http://" + url
    try:
        parts = urlsplit(url)
        valid = parts.scheme in _PROXY_SCHEMES and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        shown = Proxy(url, source).shown if "@" in url else url
        raise NetworkError(
            f"{source} {shown!r}: not a proxy URL (http://host:port or https://host:port)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise NetworkError(
            f"{source} {Proxy(url, source).shown}: a proxy URL takes no path, ?query or #fragment"
        )
    return Proxy(f"{parts.scheme}://{parts.netloc}", source)


def _read_bundle(source: str, path: str) -> CABundle:
    """The certificates of the PEM file at ``path``, or NetworkError naming ``source``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except IsADirectoryError:
        # requests takes a hashed directory for REQUESTS_CA_BUNDLE; beaconflow carries the
        # certificates as text to every worker, so it wants them in one file
        raise NetworkError(
            f"{source} {path}: cannot be read: Is a directory; give one PEM file "
            "(cat DIR/*.pem > FILE.pem)"
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise NetworkError(f"{source} {path}: cannot be read: {reason}") from None
    text = raw.decode("ascii", errors="replace")
    blocks: list[str] = []
    start = text.find(_PEM_BEGIN)
    while start != -1:
        end = text.find(_PEM_END, start)
        if end == -1:
            # a file cut short (a copy, a paste): said as such, not as "no certificate"
            raise NetworkError(
                f"{source} {path}: a certificate ({_PEM_BEGIN}) is not closed by "
                f"{_PEM_END}: the file is cut short"
            )
        blocks.append(text[start : end + len(_PEM_END)] + "\n")
        start = text.find(_PEM_BEGIN, end)
    if not blocks:
        if "PRIVATE KEY-----" in text:
            hint = "only a private key: give the CA's certificate, never a key"
        else:
            hint = "a DER file converts with: openssl x509 -inform der -in FILE -out FILE.pem"
        raise NetworkError(
            f"{source} {path}: holds no PEM certificate (-----BEGIN CERTIFICATE-----); {hint}"
        )
    pem = "".join(blocks)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem)
    except ssl.SSLError as error:
        raise NetworkError(
            f"{source} {path}: not a valid PEM certificate: {error.reason or error}"
        ) from None
    return CABundle(source, path, pem, len(blocks))


#: How a certificate failure's reason ends: what the user can do about it.
CA_ADVICE = "add your CA with --ca-bundle"
#: ... when the certificate is out of date: no CA added makes it valid.
DATE_ADVICE = "the server's certificate is out of date (or this machine's clock is wrong)"
#: ... when it is for other names: no CA added makes it cover this one.
NAME_ADVICE = "the certificate is for other names: check the URL's host"


def certificate_reason(host: str, port: int | None, detail: str) -> str:
    """The one-line reason of a TLS certificate that is not trusted.

    ``TLS certificate of trk.kissmetrics.io:443 not trusted: self-signed certificate in
    certificate chain; add your CA with --ca-bundle``. The sender and the client both use it.
    The advice fits what failed: adding a CA mends an unknown issuer, not an expired
    certificate nor one for another host name (OpenSSL's words for those are matched).
    """
    where = _where(host, port)
    detail = detail.strip().rstrip(".")
    said = detail.lower()
    if "expired" in said or "not yet valid" in said:
        advice = DATE_ADVICE
    elif "mismatch" in said:
        advice = NAME_ADVICE
    else:
        advice = CA_ADVICE
    return f"TLS certificate of {where} not trusted: {detail}; {advice}"


def _where(host: str, port: int | None) -> str:
    """``host:port``, an IPv6 address in brackets as in its URL (``[::1]:443``)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


#: OpenSSL's reasons for a handshake that cannot succeed with this server, whatever the
#: retries: it does not speak TLS on that port (plain HTTP on an https:// URL answers with
#: bytes that are no TLS record) or shares no protocol version with this machine.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})
_NO_COMMON_PROTOCOL = frozenset(
    {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"}
)


#: Where aiohttp and urllib3 keep the error they wrap: aiohttp's ``os_error`` and
#: ``certificate_error``, urllib3's ``reason`` (besides the arguments and the causes).
_WRAPPED = ("os_error", "reason", "certificate_error")


def wrapped_errors(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception wrapped in it, each once, the wrapper first.

    Its arguments, :data:`_WRAPPED`'s attributes, its cause and its context, and theirs:
    aiohttp, urllib3 and requests each wrap the system's or OpenSSL's error their own way.
    """
    seen: set[int] = set()
    stack: list[object] = [error]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack.extend(item.args)
        stack.extend((item.__context__, item.__cause__))
        stack.extend(getattr(item, name, None) for name in _WRAPPED)


def handshake_failure(error: BaseException) -> str | None:
    """What made the TLS handshake impossible (see :data:`_NOT_TLS`), found in ``error``.

    Looks through the error's arguments, ``os_error``, ``reason`` and causes (aiohttp and
    urllib3 wrap it differently) for an ``ssl.SSLError`` whose reason says the server does
    not speak TLS there, or no version this machine accepts; None otherwise (a certificate
    failure has :func:`certificate_detail`; a handshake cut short may pass: it is retried).
    """
    for item in wrapped_errors(error):
        if isinstance(item, ssl.SSLCertVerificationError):
            return None
        if isinstance(item, ssl.SSLError):
            # aiohttp's own errors are SSLError subclasses without a reason: those inside
            # them are looked at next
            reason = getattr(item, "reason", None) or ""
            if reason in _NOT_TLS:
                return "the server does not speak TLS there (plain HTTP? then use http://)"
            if reason in _NO_COMMON_PROTOCOL:
                return f"no TLS version in common with the server ({reason.lower()})"
    return None


def handshake_reason(host: str, port: int | None, detail: str) -> str:
    """The one-line reason of a TLS handshake that cannot succeed (:func:`handshake_failure`).

    ``TLS handshake with 127.0.0.1:8080 failed: the server does not speak TLS there (plain
    HTTP? then use http://)``. The sender and the client both use it.
    """
    return f"TLS handshake with {_where(host, port)} failed: {detail}"


def proxy_refused_reason(
    proxy: str, host: str, port: int | None, status: int, phrase: str = ""
) -> str:
    """The one-line reason of a proxy that refused the tunnel (``proxy``: credentials masked).

    ``proxy http://proxy:3128 refused CONNECT to trk.kissmetrics.io:443: 403 Forbidden``.
    """
    where = host if port is None else f"{host}:{port}"
    answer = f"{status} {phrase}".strip()
    return f"proxy {proxy} refused CONNECT to {where}: {answer}"


def url_secrets(url: str) -> tuple[str, ...]:
    """The user name and password of a URL, as written and percent-decoded (none: empty)."""
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
        raw = (parts.username, parts.password)
    except ValueError:
        return ()
    values: list[str] = []
    for value in raw:
        if value:
            values.extend(dict.fromkeys((value, unquote(value))))
    return tuple(values)


def proxy_secrets_in(args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The credentials of every proxy URL of a command line's --proxy and of ``environ``.

    For the command's redaction before its flags are parsed (a usage error's line, the log
    formatter): whatever wins later, none of them is ever shown.
    """
    urls = [value for name, value in environ.items() if name.upper() in PROXY_VARIABLES[:2]]
    for i, arg in enumerate(args):
        if arg == "--proxy" and i + 1 < len(args):
            urls.append(args[i + 1])
        elif arg.startswith("--proxy="):
            urls.append(arg.split("=", 1)[1])
    return [value for url in urls for value in url_secrets(url)]


def proxy_auth_reason(proxy: str | None, host: str, port: int | None) -> str:
    """The one-line reason of a proxy asking for credentials on a forwarded http:// request.

    ``proxy http://proxy:3128 asks for credentials (HTTP 407) to reach api.example:80: add a
    user name and password to the proxy's URL (--proxy or HTTP_PROXY)``; ``proxy``: credentials
    masked, None when no proxy was configured (a transparent one answered).
    """
    where = host if port is None else f"{host}:{port}"
    who = f"proxy {proxy}" if proxy else "a proxy on the way"
    return (
        f"{who} asks for credentials (HTTP 407) to reach {where}: add a user name and "
        "password to the proxy's URL (--proxy or HTTP_PROXY)"
    )


def shown_proxy(url: str) -> str:
    """A proxy URL without its credentials, for a reason or a log line."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def certificate_detail(error: BaseException) -> str | None:
    """What the certificate check said (``self-signed certificate``), found in ``error``.

    Looks through the error's arguments, ``reason`` and causes for an
    ``ssl.SSLCertVerificationError`` (aiohttp and urllib3 wrap it differently); None when
    ``error`` is not a certificate failure.
    """
    for item in wrapped_errors(error):
        if getattr(item, "certificate_error", None) is not None:
            continue  # aiohttp's wrapper, itself an SSLCertVerificationError: the one inside
        if isinstance(item, ssl.SSLCertVerificationError):
            said = getattr(item, "verify_message", None) or getattr(item, "reason", None)
            return str(said or item).strip()
    return None
