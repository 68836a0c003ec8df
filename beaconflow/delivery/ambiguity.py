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

Each of a sender's workers holds one mark (:func:`mark_attempts`), resets it before each
attempt and reads it when the attempt fails: ``classify(status, error, sent=mark.sent)``
(:func:`beaconflow.delivery.retry.classify`) says whether the outcome is ambiguous. Tested
with real servers on loopback::

    python -m pytest tests/delivery/test_ambiguity.py
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

#: What a failed attempt's reason says when its request went out without an answer.
MAY_HAVE_BEEN_RECEIVED = "sent, no answer: the service may have received it"
#: What the reason adds when such an attempt is not tried again (``--no-retry-ambiguous``).
NOT_RETRIED = "not retried (--no-retry-ambiguous)"


class AttemptMark:
    """Whether the running attempt of one task has had its connection (its request went out).

    ``sent`` is set by :class:`MarkingConnector`; the task resets it before each attempt.
    """

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


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
    connection) cannot have reached the service; what fails after it may have.
    """

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        mark = _CURRENT.get()
        if mark is not None:
            mark.sent = True
        return connection
