"""The command line a report shows: the run's arguments with every secret taken out.

A report (report.json's ``command``, report.html's header) says how the run was started, so
that a nightly run can be told from a manual one and repeated. Its secrets never go there:
the value of a flag that holds one (:data:`SECRET_FLAGS`, and any flag whose name says it is
a secret, a password, a token or a key: Beam's ``--s3_secret_access_key``) is replaced by
:data:`~beaconflow.delivery.redact.MASK` by the flag's name, whatever the value; a user name
and password in a URL (``https://user:pw@host``) are masked; and what remains goes through
the run's :class:`~beaconflow.delivery.redact.Redactor` (its keys and secret wherever they
appear, a Kontagent key in a URL's path, ``_k`` and ``an_sig``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from beaconflow.delivery.redact import MASK, URL_CREDENTIALS, Redactor

#: The program's name, first in the command a report shows.
PROGRAM = "beaconflow"
#: beaconflow's flags whose values are secrets.
SECRET_FLAGS = frozenset({"--kontagent-api-key", "--kontagent-secret", "--kissmetrics-api-key"})
#: Any other flag whose name holds one of these words has a secret value (Beam's
#: ``--s3_secret_access_key``, ``--s3_session_token``, ``--s3_access_key_id``).
_SECRET_WORDS = re.compile(r"secret|passw|token|api[-_]?key|access[-_]key|credential", re.I)


def is_secret_flag(flag: str) -> bool:
    """Whether ``flag`` (``--name``, without a value) takes a secret."""
    return flag in SECRET_FLAGS or bool(_SECRET_WORDS.search(flag))


def redacted_command(argv: Sequence[str], secrets: Iterable[str | None] = ()) -> tuple[str, ...]:
    """``beaconflow`` and ``argv`` as a report shows them: every secret masked.

    ``secrets``: the run's keys and secret, masked wherever they appear besides.
    """
    redact = Redactor.of(secrets)
    shown: list[str] = [PROGRAM]
    mask_next = False
    for arg in argv:
        if mask_next:
            shown.append(MASK)
            mask_next = False
            continue
        if arg.startswith("--"):
            flag, equals, _ = arg.partition("=")
            if is_secret_flag(flag):
                if equals:
                    shown.append(f"{flag}={MASK}")
                else:
                    shown.append(flag)
                    mask_next = True
                continue
        masked = URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", arg)
        shown.append(redact(masked))
    return tuple(shown)
