"""aiohttp's private internals that beaconflow relies on, in one place.

aiohttp silently sends an idempotent request (a GET) a second time when a reused keep-alive
connection turns out closed: a tracking GET is not idempotent (Kontagent counts every
request), and retries belong to one layer, the sender, where they are counted and backed
off. aiohttp has no public switch for it; the private ``ClientSession._retry_connection``
is the switch (aiohttp 3.9 to 3.14 at least). pyproject.toml bounds aiohttp to the versions
the suite ran with, and ``tests/delivery/test_aiohttp_internals.py`` fails loudly, with a
real server that closes a kept-alive connection, when an upgrade changes this.
"""

from __future__ import annotations

import aiohttp

from beaconflow.model.errors import BeaconflowError


class UnsupportedAiohttpError(BeaconflowError, RuntimeError):
    """The installed aiohttp has no switch for its silent resend: a send could count twice."""


def disable_silent_resend(session: aiohttp.ClientSession) -> None:
    """Keep ``session`` from resending a request on a keep-alive connection that closed.

    Raises UnsupportedAiohttpError when the switch is gone (an aiohttp upgrade): sending
    on would risk every such request being counted twice.
    """
    if not hasattr(session, "_retry_connection"):
        raise UnsupportedAiohttpError(
            f"aiohttp {aiohttp.__version__} has no ClientSession._retry_connection: beaconflow "
            "cannot turn off its silent resend; install the aiohttp versions pyproject.toml "
            "names (see beaconflow/delivery/aiohttp_internals.py)"
        )
    session._retry_connection = False
