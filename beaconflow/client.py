"""A small synchronous client for applications, mirroring the Ruby Kontagent library.

One call sends one message, validated first by the same builders the pipeline uses, over a
``requests`` session with a timeout on every call. HTTP failures raise typed exceptions
(:class:`TransportError` for connection problems and timeouts, :class:`HTTPStatusError` for
non-2xx answers) whose messages never contain the API key or the secret: URLs are redacted
and the original exception, which would carry the URL, is not chained. Redirects are never
followed: a 3xx raises HTTPStatusError naming the target's host. A TransportError says
whether the request may have been received (``.ambiguous``: it went out and no answer came
back, so calling again may count the message twice, as Kontagent counts every request it
receives) or never left (a refused connection, a connect timeout: safe to call again).
The client reaches the network as the ``beaconflow`` command does
(:mod:`beaconflow.delivery.network`): the same proxies (``HTTPS_PROXY``, ``HTTP_PROXY``,
``NO_PROXY``, or a ``network=`` given to it) and the same TLS context (the system's trust
store plus ``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE`` or the network's CA bundles, added,
never replacing it: requests alone would replace it). A certificate that is not trusted or
a proxy refusing the tunnel raises :class:`TransportError` with the same one-line reason
as the pipeline's dead letter (``TLS certificate of host:443 not trusted: ...``).
HTTPStatusError quotes the start of the answer's body (``.body``: the service's explanation,
redacted, on one line), as the pipeline's dead letter does; at most 64 KiB of any body are
read (:mod:`beaconflow.delivery.body`).

Example::

    from beaconflow.client import KontagentClient, KissmetricsClient

    kontagent = KontagentClient(api_key="...", secret="...")  # Kontagent's test server
    kontagent.notify_new_install(123456)
    kontagent.notify_custom_event(123456, "harvest", value=3, level=2, st1="crops")

    kissmetrics = KissmetricsClient(api_key="...")
    kissmetrics.record("bob", "Signed Up", properties={"plan": "free"})
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from beaconflow.delivery.ambiguity import NEVER_REACHED
from beaconflow.delivery.body import READ_LIMIT, Body, charset_of, reason_text, with_body
from beaconflow.delivery.network import (
    Network,
    build_ssl_context,
    certificate_detail,
    certificate_reason,
    handshake_failure,
    handshake_reason,
    proxy_refused_reason,
    shown_proxy,
    wrapped_errors,
)
from beaconflow.delivery.redact import Redactor, redact_library_logs
from beaconflow.delivery.retry import Verdict, classify, redirect_reason
from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.errors import BeaconflowError
from beaconflow.model.message import Endpoint, Message
from beaconflow.model.render import render_url

log = logging.getLogger("beaconflow.client")

#: Seconds a call may take, connecting and reading, unless the client is given another.
DEFAULT_TIMEOUT = 10.0
#: Bytes asked of the connection at a time while an answer's body is read.
_CHUNK_BYTES = 8 * 1024
#: How urllib3 says that a proxy answered a CONNECT with something else than 200.
_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3})\s*([^'\")]*)")


class NetworkAdapter(HTTPAdapter):
    """A requests adapter that reaches the network as the bulk sender does.

    Every connection verifies with the network's one TLS context (the system's store plus
    its CA bundles): requests would otherwise load certifi's bundle or
    ``REQUESTS_CA_BUNDLE`` into it, replacing the system's store. The proxy of each request
    is the network's choice for its URL (:meth:`Network.proxy_for`), whatever the session's
    ``proxies`` and environment say, so that the client and the sender agree.
    """

    def __init__(self, network: Network) -> None:
        self._network = network
        # built by the same function as the sender's, but its own: urllib3 sets options on
        # the context it is given, which must not reach the sender's of this process
        self._context = build_ssl_context(network.ca_pem())
        super().__init__()

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str | None, cert: Any = None
    ) -> Any:  # (host parameters, pool keyword arguments): typed privately by the stubs
        """The pool's key: always verifying, with the network's context, never a CA file."""
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, True, cert)
        pool_kwargs["ssl_context"] = self._context
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        """Verification on, with the context alone: no CA file loaded into it."""
        super().cert_verify(conn, url, True, cert)
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """Send through the network's proxy for this URL (or directly), verifying always."""
        url = request.url or ""
        proxy = self._network.proxy_for(url)
        kwargs["proxies"] = {urlsplit(url).scheme: proxy} if proxy else {}
        kwargs["verify"] = True
        return super().send(request, *args, **kwargs)


class TrackingError(BeaconflowError):
    """A message could not be delivered. The text is redacted: no key, no secret.

    ``source``: the message's :attr:`~beaconflow.model.message.Message.source` (where it came
    from, ``file:position``), or None when it has none; the text ends with it then.
    """

    def __init__(self, text: str, source: str | None = None) -> None:
        super().__init__(f"{text} (from {source})" if source else text)
        self.source = source


class TransportError(TrackingError):
    """The service could not be reached or did not answer in time; worth retrying later.

    ``ambiguous``: True when the request went out and no answer came back (a read timeout,
    a reset or a connection closed before the answer): the service may have received it,
    and sending it again may count it twice. False when it never left (no connection).
    """

    def __init__(self, text: str, source: str | None = None, *, ambiguous: bool = False) -> None:
        super().__init__(text, source)
        self.ambiguous = ambiguous


#: urllib3's steps that make a connection ready before any request is written on it: the
#: TLS handshake (``_validate_conn``) and the proxy's CONNECT tunnel (``_prepare_proxy``).
#: urllib3 reports a timeout in them as a *read* timeout; raised there, nothing was sent.
#: Should an urllib3 upgrade rename them, such timeouts fall back to "may have been
#: received" (safe, only wordier), and tests/delivery/test_network_real.py fails.
_BEFORE_THE_REQUEST = frozenset({"_validate_conn", "_prepare_proxy"})


def _timed_out_before_sending(error: BaseException) -> bool:
    """Whether a timeout was raised while the connection was being made ready (see above).

    The frames of ``error``'s chain (requests wraps urllib3's error, which was raised while
    handling the socket's timeout) say where the socket timed out.
    """
    for item in wrapped_errors(error):
        frame = item.__traceback__
        while frame is not None:
            if frame.tb_frame.f_code.co_name in _BEFORE_THE_REQUEST:
                return True
            frame = frame.tb_next
    return False


def _never_left(error: requests.RequestException) -> bool:
    """Whether a failed call's request never left: no connection was made for it.

    A connect timeout, a refused or unresolvable connection, a TLS or proxy failure, a
    timeout in the TLS handshake or the proxy's tunnel (a server or a proxy that accepts
    and never answers). Any other failure without an answer (a read timeout, a connection
    reset or closed before the answer) may have come after the request went out.
    """
    if isinstance(
        error,
        requests.ConnectTimeout | requests.exceptions.SSLError | requests.exceptions.ProxyError,
    ):
        return True
    if isinstance(error, requests.ConnectionError):
        # requests wraps urllib3's: MaxRetryError(reason=NewConnectionError(...)) when no
        # connection was made (NewConnectionError is a ConnectTimeoutError)
        cause = error.args[0] if error.args else None
        return isinstance(getattr(cause, "reason", cause), ConnectTimeoutError)
    return not isinstance(error, requests.Timeout) or _timed_out_before_sending(error)


def _never_reached(error: requests.RequestException) -> str | None:
    """The sender's reason for a name that does not resolve or a refused connection.

    ``never reached the service: could not resolve host nosuch.invalid (Name or service not
    known)``, ``...: connection refused by 127.0.0.1:9``, as
    :func:`beaconflow.delivery.ambiguity.never_reached` words the bulk sender's; None for
    any other failure. requests wraps urllib3's ``MaxRetryError(reason=NewConnectionError)``
    (``NameResolutionError`` for a name), whose cause is the system's error.
    """
    cause = error.args[0] if error.args else None
    failed = getattr(cause, "reason", cause)
    if not isinstance(failed, NewConnectionError):
        return None
    connection = getattr(failed, "conn", None)
    host = str(getattr(connection, "host", "") or "?")
    system = failed.__cause__ or failed.__context__
    if isinstance(failed, NameResolutionError) or isinstance(system, socket.gaierror):
        detail = f" ({system.strerror})" if isinstance(system, OSError) and system.strerror else ""
        return f"{NEVER_REACHED}: could not resolve host {host}{detail}"
    where = f"[{host}]" if ":" in host else host
    port = getattr(connection, "port", None)
    if port is not None:
        where += f":{port}"
    if isinstance(system, ConnectionRefusedError):
        return f"{NEVER_REACHED}: connection refused by {where}"
    what = system.strerror if isinstance(system, OSError) and system.strerror else str(system)
    return f"{NEVER_REACHED}: could not connect to {where} ({what})"


class HTTPStatusError(TrackingError):
    """The service answered with a non-2xx status.

    ``body``: the start of the answer's body as the dead letter quotes it (one line,
    redacted, at most :data:`~beaconflow.delivery.body.SHOWN_CHARS` characters; ``""`` when
    empty or unreadable); the text ends with it too.
    """

    def __init__(self, text: str, status: int, body: str = "", source: str | None = None) -> None:
        super().__init__(with_body(text, body), source)
        self.status = status
        self.body = body
        #: True for 408, 429 and 5xx other than 501: the same call may succeed later.
        self.retriable = classify(status, None).verdict is Verdict.RETRIABLE


def _read_capped(response: requests.Response) -> Body | None:
    """The start of a streamed answer's body (see :mod:`beaconflow.delivery.body`).

    At most :data:`~beaconflow.delivery.body.READ_LIMIT` bytes: closing the response then
    drops a connection whose body was not read to its end. None when reading failed: the
    status has come, and decides.
    """
    chunks: list[bytes] = []
    size = 0
    charset = charset_of(response.headers.get("Content-Type"))
    try:
        for chunk in response.iter_content(_CHUNK_BYTES):
            chunks.append(chunk)
            size += len(chunk)
            if size > READ_LIMIT:
                return Body(b"".join(chunks)[:READ_LIMIT], True, charset)
    except requests.RequestException:
        return None
    return Body(b"".join(chunks), False, charset)


class _Client:
    """What both clients share: one session per thread, the timeout and redaction."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout: float,
        clock: Callable[[], float],
        session_factory: Callable[[], requests.Session],
        network: Network | None = None,
    ) -> None:
        if not endpoint.api_key:
            raise ValueError(f"{endpoint.destination}: an API key is required")
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self._endpoint = endpoint
        self._timeout = timeout
        self._clock = clock
        self._session_factory = session_factory
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        # the environment's proxies and CA bundles, as the command reads them
        self._network = network if network is not None else Network.resolve()
        secrets = (*endpoint.secrets(), *self._network.secrets())
        self._redact = Redactor.of(secrets)
        redact_library_logs(secrets)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            # the network decides proxies and trust, not requests' reading of the environment
            session.trust_env = False
            adapter = NetworkAdapter(self._network)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def send_message(self, message: Message) -> Message:
        """Send one built message; return it on a 2xx answer, raise TrackingError otherwise."""
        request_url = render_url(message, self._endpoint, self._clock())
        shown = self._redact(request_url)
        source = message.source or None
        try:
            # a redirect is never followed: it did not reach the service. stream: the body
            # is read here, 64 KiB at most
            response = self._session().get(
                request_url, timeout=self._timeout, allow_redirects=False, stream=True
            )
        except requests.RequestException as error:
            raise self._transport_error(error, shown, source) from None
        with response:
            status = response.status_code
            answer = classify(status, None)
            body = _read_capped(response)
        if not answer.delivered:
            log.debug("HTTP %d for GET %s", status, shown)
            if answer.redirect:
                reason = redirect_reason(status, request_url, response.headers.get("Location"))
                raise HTTPStatusError(self._redact(f"{reason}: GET {shown}"), status, "", source)
            text = "" if body is None else reason_text(body, self._redact)
            raise HTTPStatusError(f"HTTP {status}: GET {shown}", status, text, source)
        log.debug("sent GET %s", shown)
        return message

    def _transport_error(
        self, error: requests.RequestException, shown: str, source: str | None
    ) -> TransportError:
        """The TransportError of a call that got no answer, saying if it may have been received."""
        if not _never_left(error):
            what = (
                f"timed out after {self._timeout}s waiting for the answer"
                if isinstance(error, requests.Timeout)
                else "the connection failed before the answer: "
                + self._redact(f"{type(error).__name__}: {error}")
            )
            return TransportError(
                f"no answer, the request was sent (the service may have received it: sending "
                f"it again may count it twice): GET {shown}: {what}",
                source,
                ambiguous=True,
            )
        if isinstance(error, requests.Timeout):
            proxy = self._network.proxy_for(self._endpoint.base_url)
            via = f" through proxy {shown_proxy(proxy)}" if proxy else ""
            return TransportError(
                self._redact(
                    f"{NEVER_REACHED}: no connection within {self._timeout:g} s{via}: GET {shown}"
                ),
                source,
            )
        blocked = self._blocked_reason(error)
        if blocked is not None:
            return TransportError(f"{self._redact(blocked)}: GET {shown}", source)
        unreachable = self._proxy_unreachable(error)
        if unreachable is not None:
            return TransportError(self._redact(f"{unreachable}: GET {shown}"), source)
        reached = _never_reached(error)
        if reached is not None:
            return TransportError(f"{self._redact(reached)}: GET {shown}", source)
        reason = self._redact(f"{type(error).__name__}: {error}")
        return TransportError(f"{NEVER_REACHED}: GET {shown}: {reason}", source)

    def _proxy_unreachable(self, error: requests.RequestException) -> str | None:
        """``could not reach proxy http://proxy:3128: connection refused``, or None.

        urllib3 says it in a nested repr of its pool, the URL and the socket's error; the
        line keeps the proxy (without credentials) and the socket's words.
        """
        if not isinstance(error, requests.exceptions.ProxyError):
            return None
        proxy = self._network.proxy_for(self._endpoint.base_url)
        if proxy is None:
            return None
        for item in wrapped_errors(error):
            if type(item).__module__ == "builtins" and isinstance(item, OSError):
                said = (item.strerror or str(item)).lower()
                return f"could not reach proxy {shown_proxy(proxy)}: {said}"
        return None

    def _blocked_reason(self, error: requests.RequestException) -> str | None:
        """The one line of an untrusted certificate or a refused tunnel, as the sender's."""
        target = urlsplit(self._endpoint.base_url)
        host = target.hostname or "?"
        port = target.port or (443 if target.scheme == "https" else 80)
        if isinstance(error, requests.exceptions.SSLError):
            detail = certificate_detail(error)
            if detail is not None:
                return certificate_reason(host, port, detail)
            handshake = handshake_failure(error)
            if handshake is not None:
                return handshake_reason(host, port, handshake)
        if isinstance(error, requests.exceptions.ProxyError):
            refused = _TUNNEL_REFUSED.search(str(error))
            proxy = self._network.proxy_for(self._endpoint.base_url)
            if refused is not None and proxy is not None:
                status, phrase = int(refused.group(1)), refused.group(2).strip()
                return proxy_refused_reason(shown_proxy(proxy), host, port, status, phrase)
        return None

    def close(self) -> None:
        """Close every session this client opened, in any thread."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class KontagentClient(_Client):
    """Sends Kontagent messages, like ``Kontagent::Tracking`` of the Ruby library.

    ``base_url`` defaults to Kontagent's test server, as that library does; pass
    :data:`beaconflow.model.kontagent.PRODUCTION_URL` for production. With a ``secret`` every
    request is signed (``ts``, ``an_sig``). ``network``: the proxies and CA bundles to use
    (:class:`~beaconflow.delivery.network.Network`); by default the environment's, resolved
    as the command resolves them (NetworkError, a ValueError, for an unusable one).
    """

    def __init__(
        self,
        api_key: str,
        secret: str | None = None,
        base_url: str = kontagent.TEST_SERVER_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        session_factory: Callable[[], requests.Session] = requests.Session,
        network: Network | None = None,
    ) -> None:
        super().__init__(
            Endpoint("kontagent", base_url, api_key, secret),
            timeout=timeout,
            clock=clock,
            session_factory=session_factory,
            network=network,
        )

    def send(self, message_type: str, params: Mapping[str, object]) -> Message:
        """Build and send any message: a type code (``ins``) or an event name (``invite_sent``)."""
        return self.send_message(kontagent.build(message_type, params))

    def notify_new_install(
        self,
        user_id: int | str,
        tracking_tag: str | None = None,
        short_tracking_tag: str | None = None,
    ) -> Message:
        """Tell Kontagent that ``user_id`` installed the application (apa)."""
        return self.send("apa", {"s": user_id, "u": tracking_tag, "su": short_tracking_tag})

    def notify_uninstall(self, user_id: int | str) -> Message:
        """Tell Kontagent that ``user_id`` removed the application (apr)."""
        return self.send("apr", {"s": user_id})

    def notify_custom_event(
        self,
        user_id: int | str,
        event_name: str,
        value: int | None = None,
        level: int | None = None,
        st1: str | None = None,
        st2: str | None = None,
        st3: str | None = None,
    ) -> Message:
        """Send a custom event (evt) with optional value, level and up to three subtypes."""
        params = {"s": user_id, "n": event_name, "v": value, "l": level}
        return self.send("evt", {**params, "st1": st1, "st2": st2, "st3": st3})


class KissmetricsClient(_Client):
    """Sends KISSmetrics record, set and alias calls; ``time`` backdates with ``_t``/``_d=1``.

    ``network`` as :class:`KontagentClient`'s.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = kissmetrics.DEFAULT_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        session_factory: Callable[[], requests.Session] = requests.Session,
        network: Network | None = None,
    ) -> None:
        super().__init__(
            Endpoint("kissmetrics", base_url, api_key),
            timeout=timeout,
            clock=clock,
            session_factory=session_factory,
            network=network,
        )

    def record(
        self,
        person: str | int,
        event: str,
        *,
        time: int | datetime | None = None,
        properties: Mapping[str, object] | None = None,
    ) -> Message:
        """Record that ``person`` did ``event``."""
        return self.send_message(
            kissmetrics.record(person, event, time=time, properties=properties)
        )

    def set(
        self,
        person: str | int,
        properties: Mapping[str, object],
        *,
        time: int | datetime | None = None,
    ) -> Message:
        """Set properties of ``person``."""
        return self.send_message(kissmetrics.set_properties(person, properties, time=time))

    def alias(self, person: str | int, identity: str | int) -> Message:
        """Tell KISSmetrics that ``person`` and ``identity`` are one person."""
        return self.send_message(kissmetrics.alias(person, identity))
