"""The ``beaconflow`` command: logging, garbage-collector tuning, the run, its exit status.

``main`` sets up logging before Beam is imported (Beam logs "apitools not found" through
the root logger at import), runs :func:`beaconflow.pipelines.backfill.run`, prints the
summary and turns every expected problem into one line on stderr and an exit status:

- 0 done; invalid events + failed messages <= --max-errors
- 2 nothing was sent: a usage or whole-run error
- 3 done, but invalid events + failed messages > --max-errors
- 4 stopped early after sending began (the report says why in ``stopped``)
- 130 interrupted

Importing this module configures nothing: an application that calls ``run`` keeps its own
logging.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from beaconflow.delivery.redact import Redactor
from beaconflow.report.counts import summary
from beaconflow.report.html import html_path


class _HideOverwriteWarning(logging.Filter):
    """Hides Beam's "Deleting 1 existing files in target path matching: " (an empty glob).

    Beam says it when a single-file output exists already; beaconflow names the file instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Deleting %d existing files in target path")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``beaconflow`` command: run, print the summary, return the exit status."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="beaconflow: %(message)s", force=True
    )
    root = logging.getLogger()
    root.setLevel(logging.ERROR)  # Beam's import says "apitools not found" at WARNING
    try:
        from beaconflow.pipelines.backfill import interrupted, run
        from beaconflow.pipelines.options import UsageError
    finally:
        root.setLevel(logging.WARNING)
    logging.getLogger("beaconflow").setLevel(logging.INFO)
    logging.getLogger("apache_beam.io.filebasedsink").addFilter(_HideOverwriteWarning())
    if not os.environ.get("BEACONFLOW_DEBUG"):
        # a failing step is re-raised to run() and reported in one line below; Beam would
        # also log it with a traceback
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    args = list(sys.argv[1:] if argv is None else argv)
    _tune_gc()
    try:
        status, report = run(args)
    except UsageError as error:
        print(f"beaconflow: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("beaconflow: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if interrupted(error):
            print("beaconflow: interrupted", file=sys.stderr)
            return 130
        if os.environ.get("BEACONFLOW_DEBUG"):
            raise
        secrets = _secrets_in(args)
        reason = Redactor.of(secrets)(f"{type(error).__name__}: {error}".splitlines()[0])
        print(f"beaconflow: error: the run failed: {reason} (BEACONFLOW_DEBUG=1 shows more)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        _tell(report, status)
    except OSError:
        # stdout or stderr cannot be written (a full disk, /dev/full, a closed pipe): the
        # report on disk says everything; the run's status stands
        devnull = open(os.devnull, "w")  # noqa: SIM115 - for the interpreter's exit flush
        sys.stdout = sys.stderr = devnull
    return status


def _tell(report: dict[str, Any], status: int) -> None:
    """The summary on stdout, and on stderr what the status means and what to do."""
    print(summary(report))
    print(f"report: {report['report']} and {html_path(report['report'])}")
    if report.get("stopped"):
        if report.get("ledger"):
            then = "run the same command with the same --ledger: it sends what this run did not"
        else:
            then = (
                "replay the dead letter (--input it), or run the same command again, which "
                "without --ledger sends everything again"
            )
        print(f"beaconflow: stopped early: {report['stopped']}. Mend that, then {then}",
              file=sys.stderr)  # fmt: skip
    elif status:
        print(
            f"beaconflow: {report['events_invalid']} invalid events + {report['messages_failed']} "
            f"failed messages exceed --max-errors; see {report['dead_letter']}",
            file=sys.stderr,
        )
    sys.stdout.flush()
    sys.stderr.flush()


def _tune_gc() -> None:
    """Fewer cyclic garbage collections for the command's one long batch run.

    Beam's in-memory runner holds each shuffle's elements, hundreds of thousands of
    long-lived objects, and CPython's collector scans them again and again; the modules
    loaded so far are frozen out of its scans too. Measured: 6-8% less CPU for a 50,000
    event backfill, 21% less time and a lower peak for 1,000,000 events
    (docs/performance.md). The command only: ``run()`` called from an application leaves
    the application's collector alone.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _secrets_in(args: Sequence[str]) -> list[str]:
    """The key and secret values given on the command line or in the environment."""
    from beaconflow.pipelines.options import SECRET_FLAGS

    flags = SECRET_FLAGS
    values = [os.environ.get(name, "") for name in
              ("KONTAGENT_API_KEY", "KONTAGENT_SECRET", "KISSMETRICS_API_KEY")]  # fmt: skip
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                values.append(args[i + 1])
            elif arg.startswith(flag + "="):
                values.append(arg.split("=", 1)[1])
    return [v for v in values if v]
