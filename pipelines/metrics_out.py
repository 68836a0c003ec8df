"""The command's metrics at the end of a run: the --metrics-textfile and the --pushgateway push.

Called by :func:`beaconflow.pipelines.cli.main` once the run's exit status is known, on
every exit that ran (0, 2, 3, 4, 75, 130, 143; with the report's counts when the run has a
report). Neither output changes the status: a textfile that cannot be written or a push
that fails is one warning line on stderr, with the Pushgateway's credentials masked. The
metrics themselves are :mod:`beaconflow.report.metrics`.
"""

from __future__ import annotations

import time
from urllib.error import HTTPError

from beaconflow.delivery.redact import Redactor
from beaconflow.model.errors import io_problem
from beaconflow.pipelines.console import say
from beaconflow.pipelines.options import MetricsConfig
from beaconflow.report.metrics import (
    PIPELINE_LABEL,
    PUSH_TIMEOUT,
    Gateway,
    RunMetrics,
    push,
    write_textfile,
)
from beaconflow.report.run import RunReport


def publish_metrics(
    config: MetricsConfig,
    status: int,
    report: RunReport | None,
    duration: float,
    *,
    now: float | None = None,
    push_timeout: float = PUSH_TIMEOUT,
) -> None:
    """Write and push the run's metrics as ``config`` asks; problems are warnings only."""
    labels = {PIPELINE_LABEL: config.pipeline} if config.pipeline else {}
    run = RunMetrics(
        status=status,
        ended=time.time() if now is None else now,
        duration=duration,
        report=report,
        labels=labels,
    )
    if config.textfile:
        try:
            write_textfile(config.textfile, run, warn=_warn)
        except Exception as error:
            _warn(f"{io_problem('metrics textfile', config.textfile, error)}; {_STANDS}")
    if config.pushgateway:
        gateway = Gateway.parse(config.pushgateway)
        try:
            push(gateway, run, timeout=push_timeout)
        except Exception as error:
            redact = Redactor.of(gateway.secrets())
            reason = redact(_reason(error))
            _warn(f"metrics not pushed to {gateway.url}: {reason}; {_STANDS}")


#: Said after a metrics problem: the run itself is judged by its own outcome.
_STANDS = "the run's exit status stands"


def _reason(error: BaseException) -> str:
    """A push's failure in one line: the gateway's answer, or the system's reason."""
    if isinstance(error, HTTPError):
        try:
            body = error.read(512).decode("utf-8", "replace").strip()
        except Exception:
            body = ""
        said = f": {body.splitlines()[0][:200]}" if body else ""
        return f"HTTP {error.code} {error.reason}{said}"
    cause = getattr(error, "reason", None)  # urllib's URLError wraps the socket's error
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _warn(text: str) -> None:
    say(f"beaconflow: warning: {text}", error=True)
