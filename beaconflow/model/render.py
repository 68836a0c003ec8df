"""Joining messages with credentials: the request URL of any message, and its inverse.

The pipeline, the sandbox collector and the small client all go through these two
functions, so there is one place that knows which module renders which destination.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.message import Endpoint, Message, MessageError


def render_url(message: Message, endpoint: Endpoint, now: float) -> str:
    """The full request URL of ``message`` at ``endpoint``, signed when it has a secret."""
    if message.destination != endpoint.destination:
        raise ValueError(
            f"a {message.destination} message cannot go to the {endpoint.destination} endpoint"
        )
    if message.destination == "kontagent":
        return kontagent.url(
            message, endpoint.base_url, endpoint.api_key, secret=endpoint.secret, now=now
        )
    return kissmetrics.url(message, endpoint.base_url, endpoint.api_key)


def parse_url(request_url: str) -> tuple[Message, str]:
    """The validated message and API key of a request URL of either service.

    Kontagent paths contain ``/api/v1/``; everything else is read as KISSmetrics.
    Raises MessageError naming what is wrong.
    """
    try:
        if "/api/" in urlsplit(request_url).path:
            return kontagent.parse_url(request_url)
        return kissmetrics.parse_url(request_url)
    except UnicodeDecodeError as error:
        raise MessageError("request", None, "a parameter is not valid UTF-8") from error
