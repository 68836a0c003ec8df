"""The small client (``beaconflow.client``) never follows a redirect, and names only its host.

Beside tests/test_client.py, whose own ``server`` fixture is a plain HTTP server: these tests
use the sandbox collector's scripted redirects (the ``server`` fixture of tests/conftest.py).
"""

from __future__ import annotations

import pytest
import requests

from beaconflow.client import HTTPStatusError, KissmetricsClient, KontagentClient
from beaconflow.model.message import Message
from beaconflow.sandbox.collector import Collector, Faults
from tests.conftest import KEY, KONTAGENT_KEY


def test_the_client_never_follows_a_redirect(server: Collector) -> None:
    client = KissmetricsClient(KEY, base_url=f"{server.base_url}")
    login_hits = server.counts().get("faulted/login_page", 0)
    with client, pytest.raises(HTTPStatusError) as raised:
        # a scripted /redirect answers 302 to the collector's login page
        client.send_message(Message("kissmetrics", "redirect", (("token", "c-1"),)))
    assert raised.value.status == 302 and not raised.value.retriable
    assert f"redirected to {server.base_url}" in str(raised.value)
    assert KEY not in str(raised.value)
    assert server.counts().get("faulted/login_page", 0) == login_hits


def test_the_client_names_the_host_of_an_absolute_redirect() -> None:
    with Collector(faults=Faults(redirect_destinations=frozenset({"kontagent"}))) as collector:
        client = KontagentClient("feedfacefeedfacefeedfacefeedface", base_url=collector.base_url)
        with client, pytest.raises(HTTPStatusError, match=r"redirected to http://127\.0\.0\.1:"):
            client.notify_new_install(123)
        assert collector.counts().get("faulted/login_page", 0) == 0
    # requests itself would have followed it to the login page's 200
    with Collector(faults=Faults(redirect_destinations=frozenset({"kontagent"}))) as collector:
        url = f"{collector.base_url}/api/v1/{KONTAGENT_KEY}/apa/?s=1"
        assert requests.get(url, timeout=5).status_code == 200
