"""Ambiguous outcomes: whether a failed attempt's request went out before it failed.

An attempt that fails without an answer is one of two things:

- a **connection error**: the request never left (refused, no route, a name that does not
  resolve, no connection within the timeout). Nothing reached the service; trying again is
  always safe.
- an **ambiguous outcome**: the request was written and no answer came back (a timeout, a
  reset, a connection the server closed before answering, a reused keep-alive connection
  that turned out closed, an answer cut off before its status). The service may have
  received it, and Kontagent counts a request on receipt: trying again may count it twice.

aiohttp's exceptions do not tell the two apart by themselves (the attempt's total timeout
raises the same ``TimeoutError`` while connecting as after writing), so the sender marks the
moment itself: :class:`MarkingConnector` sets the running attempt's :class:`AttemptMark`
when it hands aiohttp a connection. aiohttp writes a GET's request on that connection at
once, without yielding to the event loop in between, so "a connection was handed over" is
"the request was written" as far as any timeout can tell. The one failure in between, a
write onto a connection that was closing already, is taken as ambiguous too: when in doubt,
"it may have been received". The mark costs one context-variable read per request (a
``TraceConfig`` hook, aiohttp's documented way, costs about a fifth more CPU per request).

The mark also says whether the connection was **reused** (it carried a request before): a
reused keep-alive connection the server had closed (an idle timeout, a used-up connection)
fails on the request written to it, which a fresh connection would not. The connector knows
it, not by guessing from the error, but by the connection's protocol object (aiohttp's
public ``Connection.protocol``): the pool hands back the same object for the same socket, and
the connector remembers, weakly, every one it has handed out before. The sender gives such a
failure a free reconnect (:mod:`beaconflow.delivery.sender`); a connection that fails on its
first request is a failure like any other.

Each of a sender's workers holds one mark (:func:`mark_attempts`), resets it before each
attempt and reads it when the attempt fails: ``classify(status, error, sent=mark.sent)``
(:func:`beaconflow.delivery.retry.classify`) says whether the outcome is ambiguous. Tested
with real servers on loopback::

    python -m pytest tests/delivery/test_ambiguity.py
"""

from __future__ import annotations

import errno
import socket
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

#: What a failed attempt's reason says when its request went out without an answer.
MAY_HAVE_BEEN_RECEIVED = "sent, no answer: the service may have received it"
#: What the reason adds when such an attempt is not tried again (``--no-retry-ambiguous``).
NOT_RETRIED = "not retried (--no-retry-ambiguous)"
#: How the reason of an attempt whose request never left starts: nothing reached the service.
NEVER_REACHED = "never reached the service"
#: errnos of a connection the server closed under a request written to it (reset, broken pipe).
_STALE_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE})
#: aiohttp's own class for a name that does not resolve (3.10 on; before, a gaierror says it).
_DNS_ERRORS: tuple[type[BaseException], ...] = tuple(
    error for error in (getattr(aiohttp, "ClientConnectorDNSError", None),) if error is not None
)


def never_reached(error: BaseException, timeout: float) -> str | None:
    """The reason of a failed attempt whose request never left, or None when ``error`` says not.

    A name that does not resolve (``never reached the service: could not resolve host
    nosuch.invalid``), a refused connection (``...: connection refused by 127.0.0.1:9``; by
    ``proxy 127.0.0.1:3128`` when it is the proxy that could not be reached),
    another failure to connect, or the attempt's ``timeout`` (seconds) over before a
    connection came. A TLS failure is left to its own reason: it names what failed.
    """
    if isinstance(error, aiohttp.ClientSSLError):
        return None
    if isinstance(error, aiohttp.ClientConnectorError):
        # an IPv6 address in brackets, as in its URL: [::1]:9
        host = f"[{error.host}]" if ":" in error.host else error.host
        where = f"{host}:{error.port}"
        if isinstance(error, aiohttp.ClientProxyConnectionError):
            # the address is the proxy's, not the service's: say so (its host and port
            # only, never its credentials)
            where = f"proxy {where}"
        cause = error.os_error
        if isinstance(error, _DNS_ERRORS) or isinstance(cause, socket.gaierror):
            detail = f" ({cause.strerror})" if cause.strerror else ""
            return f"{NEVER_REACHED}: could not resolve host {error.host}{detail}"
        if isinstance(cause, ConnectionRefusedError):
            return f"{NEVER_REACHED}: connection refused by {where}"
        return f"{NEVER_REACHED}: could not connect to {where} ({cause.strerror or cause})"
    if isinstance(error, ConnectionRefusedError):
        return f"{NEVER_REACHED}: connection refused"
    if isinstance(error, TimeoutError):
        return f"{NEVER_REACHED}: no connection within {timeout:g} s"
    return None


def stale_connection(error: BaseException, mark: AttemptMark) -> bool:
    """Whether an attempt failed on a reused keep-alive connection the server had closed.

    The server closed it while it lay in the pool (an idle timeout, a used-up connection)
    and the request written to it met the close: a disconnection, a reset or a broken pipe,
    on a connection that had carried a request before (``mark.reused``). A fresh connection
    would not have met it. One that fails on its first request, or fails otherwise (a
    timeout: the service may be slow), is an ordinary failure.
    """
    if not (mark.sent and mark.reused):
        return False
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return True
    return isinstance(error, OSError) and error.errno in _STALE_ERRNOS


class AttemptMark:
    """Whether the running attempt of one task has had its connection (its request went out).

    ``sent`` is set by :class:`MarkingConnector`, and ``reused`` when that connection had
    carried a request before (a pooled keep-alive connection), ``uses`` how many (0: a new
    connection); the task resets them before each attempt.
    """

    __slots__ = ("reused", "sent", "uses")

    def __init__(self) -> None:
        self.sent = False
        self.reused = False
        self.uses = 0

    def reset(self) -> None:
        """Before an attempt: nothing handed over yet."""
        self.sent = False
        self.reused = False
        self.uses = 0


#: The mark of the task running an attempt (each of a sender's workers sets its own).
_CURRENT: ContextVar[AttemptMark | None] = ContextVar("beaconflow_attempt_mark", default=None)


def mark_attempts() -> AttemptMark:
    """A mark for the attempts the calling task makes from now on (call it in the task).

    A task runs in a copy of the context it was created in, so each worker's mark is its
    own, and aiohttp's request, run inside the worker's task, sees the worker's mark.
    """
    mark = AttemptMark()
    _CURRENT.set(mark)
    return mark


class MarkingConnector(aiohttp.TCPConnector):
    """aiohttp's TCP connector, marking the running attempt once its connection is handed over.

    Everything before that (resolving the name, connecting, waiting for a pooled
    connection) cannot have reached the service; what fails after it may have. It marks too
    whether the connection was handed out before (``reused``) and how often (``uses``), by
    its protocol object: weakly held, so a closed connection's is forgotten with it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handed_out: weakref.WeakKeyDictionary[ResponseHandler, int] = (
            weakref.WeakKeyDictionary()
        )

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        uses = 0
        if protocol is not None:
            handed_out = self._handed_out
            uses = handed_out.get(protocol, 0)
            handed_out[protocol] = uses + 1
        mark = _CURRENT.get()
        if mark is not None:
            mark.sent = True
            mark.reused = uses > 0
            mark.uses = uses
        return connection
