"""The circuit breaker: when a destination is down, stop sending to it instead of crawling.

A hung or failing service makes every request wait for its timeout and its retries while
the adaptive limits fall to one request in flight: 10,000 messages at the default timeout
would take about 35 hours. A :class:`Breaker` watches one destination's answers and
declares it **down** when every answer for a whole window (:data:`DEFAULT_WINDOW`,
``--breaker-window``) was a failure:

- a failure is a timeout, a connection error (refused, reset, dropped) or a 5xx;
- anything else the service answers (a 2xx, a 3xx, a 4xx, 429 included) shows that it is up
  and starts the window again;
- an attempt that never left (a URL that cannot be sent) says nothing about the service.

The window starts at the first failure answer after the last "up" answer, and the
destination is down at the first failure answer at least a window later: so it got at
least one failure at the window's start and nothing else during the whole window. A service
that answers nothing at all still answers: each request times out after ``--timeout``.

The sender acts on it (:mod:`beaconflow.delivery.sender`): no more requests go to the
destination, the rest of its messages end as "not attempted" with the reason of
:func:`down_reason` (replayable from the dead letter), the other destination goes on, and
the run exits 4. Each sender judges on the answers it gets itself (an in-process sender,
or one sender process); the first to declare a destination down halts it for every sender
of its process. Classification is :func:`beaconflow.delivery.retry.classify`'s; the clock
is injected, so the tests need neither a network nor a sleep::

    python -m pytest tests/delivery/test_breaker.py
"""

from __future__ import annotations

from beaconflow.delivery.ratelimit import Clock
from beaconflow.delivery.retry import Classification, Verdict
from beaconflow.model.duration import format_duration

#: Seconds of nothing but failures that declare a destination down, unless told otherwise.
#: Long enough that a restart or a short outage of the service is ridden out with retries;
#: short enough that a service that is down costs a minute, not a night.
DEFAULT_WINDOW = 60.0
#: How the reason of a destination that is down starts (what the dead letter and the
#: report's ``stopped`` say after "not attempted: ").
DOWN = "destination down"


def is_failure(status: int | None, answer: Classification) -> bool | None:
    """What one attempt says of the service: True down-like, False up, None nothing.

    True for a 5xx or, without a status, a retriable transport error (a timeout, a refused
    or dropped connection); False for any other status; None for an attempt that failed
    for good before it reached the network (an unusable URL).
    """
    if status is not None:
        return status >= 500
    return True if answer.verdict is Verdict.RETRIABLE else None


def down_reason(destination: str, window: float) -> str:
    """The stop reason of a destination declared down (it names the destination)."""
    return (
        f"{DOWN}: {destination} (only timeouts, connection errors and 5xx for "
        f"{format_duration(window)})"
    )


class Breaker:
    """Whether one destination is down; see the module docstring.

    ``window``: seconds (> 0). ``clock``: monotonic seconds, read only on failure answers.
    One breaker sees every answer of its destination in one sender.
    """

    __slots__ = ("_clock", "down", "failing_since", "failures", "window")

    def __init__(self, window: float, clock: Clock) -> None:
        if not window > 0:
            raise ValueError(f"the breaker's window must be > 0 seconds, got {window}")
        self.window = window
        self._clock = clock
        #: When the current run of failures began (the clock's reading), None while up.
        self.failing_since: float | None = None
        #: Failure answers since then.
        self.failures = 0
        #: Declared down (once; it stays down for the rest of the run).
        self.down = False

    def answer(self, status: int | None, answer: Classification) -> bool:
        """Count one attempt's outcome; True if this answer declares the destination down."""
        failed = is_failure(status, answer)
        if failed is None or self.down:
            return False
        if not failed:
            self.failing_since = None
            self.failures = 0
            return False
        now = self._clock()
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
            return False
        if now - self.failing_since >= self.window:
            self.down = True
        return self.down
