"""Whose deliveries a ledger entry records: the endpoint fingerprint, and its upgrades.

A ledger key is ``<fingerprint>:<message key>``. Since ledger format 2 the fingerprint stands
for the destination, its normalised base URL (:func:`normalise_url`) and its API key, or the
``--ledger-app`` name in place of the key (so a key rotation keeps the ledger's memory).
The key itself is never written: the fingerprint is 12 hex characters of a SHA-256.

Each run also writes, once per fingerprint, ``endpoint-<fingerprint>.json``: the destination,
the normalised URL and whether the key or an app name identifies it (never the key). When a
ledger holds a destination's deliveries under other fingerprints only, :func:`mismatches`
reads them to say what differs (the URL, the key, the app) before anything is sent.

Format 1 (releases before it): the fingerprint was the destination and the key only
(:func:`legacy_fingerprint`); the entries of format-1 files are mapped to the same
endpoint's fingerprint of today when read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from beaconflow.model.message import Endpoint

#: What every --sandbox run's URL is normalised to, whatever port its collector took.
SANDBOX_URL = "sandbox:"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_url(url: str, *, sandbox: bool = False) -> str:
    """A base URL as the ledger knows it (the sandbox collector's is :data:`SANDBOX_URL`).

    Scheme and host lower-cased, the scheme's default port and a trailing slash dropped.
    """
    if sandbox:
        return SANDBOX_URL
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def endpoint_fingerprint(
    endpoint: Endpoint, *, app: str | None = None, sandbox: bool = False
) -> str:
    """12 hex characters standing for a destination, its URL and its key (or ``app``)."""
    who = f"app\x00{app}" if app else f"key\x00{endpoint.api_key}"
    url = normalise_url(endpoint.base_url, sandbox=sandbox)
    seed = f"ledger-2\x00{endpoint.destination}\x00{url}\x00{who}".encode()
    return hashlib.sha256(seed).hexdigest()[:12]


def legacy_fingerprint(endpoint: Endpoint) -> str:
    """The fingerprint ledger format 1 gave a destination and its API key (no URL)."""
    seed = f"{endpoint.destination}\x00{endpoint.api_key}".encode()
    return hashlib.sha256(seed).hexdigest()[:12]


def descriptor_name(fingerprint: str) -> str:
    """The file that says what a fingerprint stands for (without the key)."""
    return f"endpoint-{fingerprint}.json"


@dataclass(frozen=True)
class LedgerIdentity:
    """The fingerprints of one run's endpoints, and what each stands for.

    ``fingerprints``: destination -> fingerprint; ``legacy``: format-1 fingerprint -> the
    same endpoint's fingerprint of today; ``descriptors``: fingerprint -> what
    ``endpoint-<fingerprint>.json`` holds.
    """

    fingerprints: dict[str, str]
    legacy: dict[str, str]
    descriptors: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, endpoints: Mapping[Any, Endpoint], *, app: str | None = None, sandbox: bool = False
    ) -> LedgerIdentity:
        fingerprints: dict[str, str] = {}
        legacy: dict[str, str] = {}
        descriptors: dict[str, dict[str, str]] = {}
        for destination, endpoint in endpoints.items():
            fingerprint = endpoint_fingerprint(endpoint, app=app, sandbox=sandbox)
            fingerprints[str(destination)] = fingerprint
            legacy[legacy_fingerprint(endpoint)] = fingerprint
            descriptor = {
                "fingerprint": fingerprint,
                "destination": str(destination),
                "url": normalise_url(endpoint.base_url, sandbox=sandbox),
                "identified_by": "app" if app else "key",
            }
            if app:
                descriptor["app"] = app
            descriptors[fingerprint] = descriptor
        return cls(fingerprints, legacy, descriptors)

    def descriptor_bytes(self, fingerprint: str) -> bytes:
        """The content of ``endpoint-<fingerprint>.json``."""
        return json.dumps(self.descriptors[fingerprint], indent=1, sort_keys=True).encode() + b"\n"


def difference(ours: Mapping[str, str], theirs: Mapping[str, str] | None) -> str:
    """What differs between this run's endpoint and another fingerprint's (key never shown).

    ``theirs`` is None for a fingerprint without a descriptor: a format-1 fingerprint, made
    of the destination and a key only.
    """
    if theirs is None:
        return "another API key (an entry of ledger format 1)"
    differs = []
    if theirs.get("url") != ours.get("url"):
        differs.append(f"another URL ({theirs.get('url')})")
    if theirs.get("identified_by") != ours.get("identified_by"):
        if theirs.get("identified_by") == "app":
            differs.append(f"--ledger-app {theirs.get('app')!r} instead of the API key")
        else:
            differs.append("the API key instead of --ledger-app")
    elif theirs.get("identified_by") == "app" and theirs.get("app") != ours.get("app"):
        differs.append(f"another --ledger-app ({theirs.get('app')!r})")
    elif not differs:
        differs.append("another API key")
    return " and ".join(differs)


def mismatches(
    identity: LedgerIdentity,
    counts: Mapping[tuple[str, str, int], int],
    descriptors: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """A warning per destination whose deliveries the ledger holds under others only.

    ``counts``: (fingerprint, destination, format) -> entries, as the ledger's check counted
    them; ``descriptors``: the ledger's ``endpoint-*.json``, by fingerprint.
    """
    warnings = []
    ours_by_legacy = {new: old for old, new in identity.legacy.items()}
    for destination, fingerprint in identity.fingerprints.items():
        legacy = ours_by_legacy.get(fingerprint)
        held = others = 0
        what: dict[str, int] = {}
        for (other, where, version), n in counts.items():
            if where != destination:
                continue
            if (version >= 2 and other == fingerprint) or (version == 1 and other == legacy):
                held += n
                continue
            others += n
            known = descriptors.get(other) if version >= 2 else None
            text = difference(identity.descriptors[fingerprint], known)
            what[text] = what.get(text, 0) + n
        if held or not others:
            continue
        ours = identity.descriptors[fingerprint]
        shown = "; ".join(f"{n} with {text}" for text, n in sorted(what.items()))
        warnings.append(
            f"the ledger holds {others} {destination} deliveries, none for this run's endpoint "
            f"({ours['url']}, by {ours['identified_by']}): {shown}. They do not count as "
            "already delivered: if they are this app's, this run sends them again (see "
            "--ledger-app in docs/ledger.md)"
        )
    return warnings
