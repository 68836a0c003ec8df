r"""The API keys and the Kontagent secret, from a flag, a variable, a file or systemd.

Services are given secrets as files rather than as environment variables (which every
process of the user can read in ``/proc/PID/environ`` and which end up in crash dumps):
Docker and Kubernetes secrets are files, and systemd's ``LoadCredential=`` puts each
credential in a private directory named by ``$CREDENTIALS_DIRECTORY``. Each secret is
looked up in this order, the first found wins:

1. its flag (``--kontagent-api-key``, ...);
2. its variable (``KONTAGENT_API_KEY``, ...), when set and not empty;
3. its ``_FILE`` variable (``KONTAGENT_API_KEY_FILE``, ...): the path of a file whose
   content is the value, one trailing newline removed;
4. the file of its credential name (``kontagent_api_key``, ...) in ``$CREDENTIALS_DIRECTORY``,
   when that directory holds one (a service may load only some of them).

A variable and its ``_FILE`` variable both set (without the flag) is refused: which one
the operator meant cannot be known. A ``_FILE`` path that cannot be read, a file that is
empty, holds more than one line or is not UTF-8, is a :class:`CredentialError` naming the
variable and the path, never the content.

Try it::

    printf '%s\n' "$KEY" > /run/user/$UID/km_key && chmod 600 /run/user/$UID/km_key
    KISSMETRICS_API_KEY_FILE=/run/user/$UID/km_key beaconflow --input ... --dry-run out/m.jsonl
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from beaconflow.model.errors import BeaconflowError, os_reason

#: systemd's variable naming the directory of a service's credentials (``LoadCredential=``).
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
#: A secret file longer than this is not a key: refused without reading the rest.
MAX_BYTES = 64 * 1024


class CredentialError(BeaconflowError, ValueError):
    """A secret's file cannot be used: the text names the variable and the path, not the value."""


@dataclass(frozen=True)
class Secret:
    """Where one secret can come from."""

    #: the command-line flag
    flag: str
    #: the environment variable holding the value
    variable: str
    #: the file's name in ``$CREDENTIALS_DIRECTORY`` (systemd's credential name)
    credential: str

    @property
    def file_variable(self) -> str:
        """The environment variable holding the path of a file with the value."""
        return self.variable + "_FILE"


KONTAGENT_API_KEY = Secret("--kontagent-api-key", "KONTAGENT_API_KEY", "kontagent_api_key")
KONTAGENT_SECRET = Secret("--kontagent-secret", "KONTAGENT_SECRET", "kontagent_secret")
KISSMETRICS_API_KEY = Secret("--kissmetrics-api-key", "KISSMETRICS_API_KEY", "kissmetrics_api_key")
#: Every secret, in the order of the flags.
SECRETS = (KONTAGENT_API_KEY, KONTAGENT_SECRET, KISSMETRICS_API_KEY)


def resolve(secret: Secret, flag_value: str | None, environ: Mapping[str, str]) -> str | None:
    """The secret's value by the order above, or None when nowhere; CredentialError if unusable."""
    if flag_value:
        return flag_value
    value = environ.get(secret.variable, "")
    path = environ.get(secret.file_variable, "")
    if value and path:
        raise CredentialError(
            f"{secret.variable} and {secret.file_variable} are both set: unset one of them"
        )
    if value:
        return value
    if path:
        return read_secret_file(secret.file_variable, path)
    directory = environ.get(CREDENTIALS_DIRECTORY, "")
    if directory:
        candidate = Path(directory) / secret.credential
        if candidate.exists() or candidate.is_symlink():
            return read_secret_file(f"{CREDENTIALS_DIRECTORY}/{secret.credential}", candidate)
    return None


def read_secret_file(what: str, path: str | os.PathLike[str]) -> str:
    r"""A secret file's content without one trailing newline (``\n`` or ``\r\n``).

    ``what`` names where the path came from (a variable), for the error.
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise CredentialError(f"{what}: {shown}: cannot be read: {os_reason(error)}") from None
    if len(raw) > MAX_BYTES:
        raise CredentialError(f"{what}: {shown}: longer than {MAX_BYTES} bytes: not a key")
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw.strip():
        raise CredentialError(f"{what}: {shown}: is empty")
    if b"\n" in raw or b"\r" in raw:
        raise CredentialError(f"{what}: {shown}: holds more than one line (one value expected)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"{what}: {shown}: is not UTF-8 text") from None


def known_values(environ: Mapping[str, str]) -> list[str]:
    """Every secret value the environment gives, by variable or file, for a redactor.

    Never raises: a file that cannot be read gives nothing (the run reported that already).
    """
    values: list[str] = []
    for secret in SECRETS:
        values.append(environ.get(secret.variable, ""))
        places: list[tuple[str, str | os.PathLike[str]]] = []
        if environ.get(secret.file_variable):
            places.append((secret.file_variable, environ[secret.file_variable]))
        if environ.get(CREDENTIALS_DIRECTORY):
            places.append(
                (secret.credential, Path(environ[CREDENTIALS_DIRECTORY]) / secret.credential)
            )
        for what, path in places:
            with contextlib.suppress(CredentialError):
                values.append(read_secret_file(what, path))
    return [value for value in values if value]
