"""The ``beaconflow`` command: logging, garbage-collector tuning, the run, its exit status.

``beaconflow mapping show|explain`` is :mod:`beaconflow.pipelines.mapping_cli`;
``beaconflow ledger verify|repair`` is :mod:`beaconflow.pipelines.ledger_cli`.

``main`` sets up logging before Beam is imported (Beam logs "apitools not found" through
the root logger at import), runs :func:`beaconflow.pipelines.backfill.run`, prints the
summary and turns every expected problem into one line on stderr and an exit status:

- 0 done; invalid events + invalid messages + failed messages <= --max-errors
- 2 nothing was sent: a usage or whole-run error
- 3 done, but invalid events + invalid messages + failed messages > --max-errors
- 4 stopped early after sending began (the report says why in ``stopped``: for instance
  ``deadline`` after --deadline, ``destination down: NAME (...)`` after its circuit breaker)
- 75 nothing done, try again later: another run holds the ledger for an endpoint of this
  run, or the --date day's input has not landed (no report is written)
- 130, 143 interrupted by Ctrl-C (SIGINT) or SIGTERM: the first signal stops the sending
  gracefully and the run writes its report (``"interrupted": true``) and dead letter; a
  second one stops at once, without a report

``--log-format json`` (since issue 18) makes every stderr line one JSON object
(:mod:`beaconflow.delivery.logline`; the lines other code writes to descriptor 2, Beam's
worker processes' among them, are wrapped by :mod:`beaconflow.pipelines.stderr_relay`) and
the last line of stdout the report in one JSON line
(:mod:`beaconflow.report.oneline`); the human summary then goes to stderr, as one
``summary`` event. On a terminal, in the text format, progress is a live display
(:mod:`beaconflow.pipelines.live`). ``--version`` prints ``beaconflow X.Y.Z``.

Importing this module configures nothing: an application that calls ``run`` keeps its own
logging.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from beaconflow.delivery.logline import FORMAT_VARIABLE, FORMATS, formatter, install
from beaconflow.delivery.redact import Redactor
from beaconflow.delivery.stop import (
    DEADLINE,
    clear_interrupt,
    early_signal,
    end_early_signals,
    forget_caught_interrupt,
    ignored_at_start,
    interrupt,
    interrupted_by,
    mark_over,
    note_early_signals,
    run_over,
)
from beaconflow.model.words import plural
from beaconflow.pipelines.console import say
from beaconflow.pipelines.live import LiveProgress, wanted
from beaconflow.pipelines.stderr_relay import StderrRelay
from beaconflow.report.html import html_path
from beaconflow.report.oneline import summary_line
from beaconflow.report.run import RunReport, summary

if TYPE_CHECKING:
    from beaconflow.pipelines.options import MetricsConfig

#: sysexits' EX_TEMPFAIL: nothing was done, the same command later may succeed.
EX_TEMPFAIL = 75


class _HideOverwriteWarning(logging.Filter):
    """Hides Beam's "Deleting 1 existing files in target path matching: " (an empty glob).

    Beam says it when a single-file output exists already; beaconflow names the file instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Deleting %d existing files in target path")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``beaconflow`` command: run, print the summary, return the exit status.

    Ctrl-C and SIGTERM are noted from here (or from the entry point, beaconflow/command.py)
    until the run handles them: one met before the run starts ends the command with 130 or
    143 and nothing done.
    """
    noted_here = note_early_signals()
    try:
        return _command(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # a second signal to the run's handler before the run began
        return _not_started(interrupted_by() or early_signal() or signal.SIGINT)
    finally:
        mark_over()  # the status is decided: a signal from now on leaves it alone
        forget_caught_interrupt()  # a second signal's KeyboardInterrupt was dealt with
        if noted_here:
            end_early_signals()


def _not_started(signum: int) -> int:
    """The command met ``signum`` before its run started: nothing was done."""
    mark_over()
    name = signal.Signals(signum).name
    _say(
        f"beaconflow: interrupted by {name} before the run started: nothing was done",
        error=True,
        event="interrupted",
        fields={"exit_status": 128 + signum, "signal": name},
    )
    return 128 + signum


def _command(args: list[str]) -> int:
    """The command with its arguments (see :func:`main`)."""
    if "--version" in args[: args.index("--") if "--" in args else len(args)]:
        say(f"beaconflow {_package_version()}")
        return 0
    try:
        log_format, args = _log_format(args)
    except ValueError as error:
        say(f"beaconflow: error: {error}", error=True)
        return 2
    with _log_format_for_children(log_format):
        # the lines other processes write to stderr (Beam's worker processes, gRPC, the
        # sender processes) go through a relay: as JSON lines in json, above the live
        # display on a terminal
        relay: StderrRelay | None = None
        live: LiveProgress | None = None
        if wanted(sys.stderr, log_format):
            relay = StderrRelay(Redactor())
            relay.start()
            live = LiveProgress(relay.real_stream())
            relay.sink = live.print_line
        elif log_format == "json":
            relay = StderrRelay(Redactor())
            relay.start()
        handler = install(log_format, stream=sys.stderr, handler=live)
        logging.getLogger().setLevel(logging.ERROR)  # Beam's import: "apitools not found"
        try:
            secrets = _secrets_in(args)
            handler.setFormatter(formatter(log_format, secrets))  # imports Beam
            if relay is not None:
                relay.redact = Redactor.of(secrets)
            return _main(args, log_format, live)
        finally:
            if relay is not None:
                relay.stop()
            if live is not None:
                live.close()


def _main(args: list[str], log_format: str, live: LiveProgress | None) -> int:
    """The command once its log format is chosen and logging is set up."""
    root = logging.getLogger()
    root.setLevel(logging.ERROR)  # Beam's import says "apitools not found" at WARNING
    try:
        import beaconflow.pipelines.backfill  # noqa: F401 - Beam's import, with its noise hidden
        from beaconflow.pipelines.options import UsageError, metrics_config
    finally:
        root.setLevel(logging.WARNING)
    logging.getLogger("beaconflow").setLevel(logging.INFO)
    logging.getLogger("apache_beam.io.filebasedsink").addFilter(_HideOverwriteWarning())
    if not os.environ.get("BEACONFLOW_DEBUG"):
        # a failing step is re-raised to run() and reported in one line below; Beam would
        # also log it with a traceback
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    if args[:1] in (["mapping"], ["ledger"]):
        return _run_subcommand(args, log_format)
    began = time.monotonic()
    try:
        metrics = metrics_config(args)
    except UsageError as error:
        _say(f"beaconflow: error: {error}", error=True, fields={"exit_status": 2})
        return 2
    _tune_gc()
    previous = _handle_signals()
    try:
        # a signal is now the run's; one met before (it was noted) means no run
        signum = early_signal()
        if signum is not None:
            return _not_started(signum)
        return _run(args, log_format, live, metrics, began)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_subcommand(args: list[str], log_format: str) -> int:
    """``beaconflow mapping ...`` or ``beaconflow ledger ...``: Ctrl-C and SIGTERM stop it.

    Each ends it where it is (as Ctrl-C always did), with one line and 130 or 143: these
    commands send nothing, and ``ledger repair`` writes its files whole, the salvaged
    entries before anything is set aside.
    """
    got: list[int] = []

    def stop(signum: int, frame: object) -> None:
        got.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)
                if s not in ignored_at_start()}  # fmt: skip
    try:
        signum = early_signal()  # met during the start-up: it does not start
        if signum is not None:
            return _not_started(signum)
        if args[0] == "mapping":
            from beaconflow.pipelines.mapping_cli import main as subcommand
        else:
            from beaconflow.pipelines.ledger_cli import main as subcommand
        return _subcommand(subcommand, args[1:], log_format)
    except KeyboardInterrupt:
        signum = got[0] if got else signal.SIGINT
        name = signal.Signals(signum).name
        _say(f"beaconflow: interrupted by {name}", error=True, event="interrupted",
             fields={"exit_status": 128 + signum, "signal": name})  # fmt: skip
        return 128 + signum
    finally:
        mark_over()
        for each, handler in previous.items():
            signal.signal(each, handler)


def _run(
    args: list[str],
    log_format: str,
    live: LiveProgress | None,
    metrics: MetricsConfig,
    began: float,
) -> int:
    """The run, its summary and its metrics, with the run's signal handlers in place."""
    from beaconflow.model.errors import TryLaterError
    from beaconflow.pipelines.backfill import interrupted, run
    from beaconflow.pipelines.metrics_out import publish_metrics
    from beaconflow.pipelines.options import UsageError

    report: RunReport | None = None
    try:
        status, report = run(args)
    except UsageError as error:
        _say(f"beaconflow: error: {error}", error=True, fields={"exit_status": 2})
        status = 2
    except TryLaterError as error:
        _say(
            f"beaconflow: {error}",
            error=True,
            event="try_later",
            level="warning",
            fields={"exit_status": EX_TEMPFAIL},
        )
        status = EX_TEMPFAIL
    except KeyboardInterrupt:
        status = _hard_interrupt()
    except Exception as error:
        if interrupted(error):
            status = _hard_interrupt()
        else:
            if os.environ.get("BEACONFLOW_DEBUG"):
                raise
            secrets = _secrets_in(args)
            reason = Redactor.of(secrets)(f"{type(error).__name__}: {error}".splitlines()[0])
            _say(f"beaconflow: error: the run failed: {reason} (BEACONFLOW_DEBUG=1 shows more)",
                 error=True, fields={"exit_status": 2})  # fmt: skip
            status = 2
    if live is not None:
        live.close()  # the summary goes below the display's last state
    if report is not None:
        _tell(report, status, log_format)
    if metrics.wanted:
        duration = report.elapsed_seconds if report is not None else time.monotonic() - began
        publish_metrics(metrics, status, report, duration)
    return status


def _package_version() -> str:
    """The installed version, from the package metadata."""
    try:
        return version("beaconflow")
    except PackageNotFoundError:
        return "unknown"


def _log_format(args: Sequence[str]) -> tuple[str, list[str]]:
    """``--log-format``'s value (default text) and the arguments without it.

    Taken out here, before anything is parsed, so that the subcommands and the run's first
    lines (a usage error too) follow it; ValueError for a value that is not a format.
    """
    chosen = FORMATS[0]
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":
            rest.append(word)
            rest.extend(words)
            break
        if word == "--log-format":
            value = next(words, None)
            if value is None:
                raise ValueError("--log-format needs a value: text or json")
        elif word.startswith("--log-format="):
            value = word.split("=", 1)[1]
        else:
            rest.append(word)
            continue
        if value not in FORMATS:
            raise ValueError(f"--log-format must be text or json, got {value!r}")
        chosen = value
    return chosen, rest


@contextlib.contextmanager
def _log_format_for_children(log_format: str) -> Iterator[None]:
    """The format in the environment for the processes the run starts, restored after."""
    before = os.environ.get(FORMAT_VARIABLE)
    os.environ[FORMAT_VARIABLE] = log_format
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FORMAT_VARIABLE, None)
        else:
            os.environ[FORMAT_VARIABLE] = before


def _subcommand(command: Any, args: list[str], log_format: str) -> int:
    """Run ``beaconflow mapping|ledger``; in the json format, argparse's error is a JSON line."""
    if log_format != "json":
        return int(command(args))
    caught = io.StringIO()  # argparse writes its usage and error there, then exits
    try:
        with contextlib.redirect_stderr(caught):
            status = int(command(args))
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 2
        lines = [line for line in caught.getvalue().splitlines() if line.strip()]
        if lines:
            _say(lines[-1], error=True, fields={"exit_status": status})
        return status
    sys.stderr.write(caught.getvalue())  # the subcommand's own lines, JSON already
    return status


def _handle_signals() -> dict[int, Any]:
    """Ctrl-C and SIGTERM stop the run gracefully; a second one stops it at once.

    The first stops the sending as a failed ledger write does (no new request starts, what
    is in flight finishes, the rest goes to the dead letter as "not attempted") and the run
    ends with its report, exit 130 or 143. The second raises KeyboardInterrupt: the run
    ends where it is, without a report. Returns the handlers it replaced.
    """
    clear_interrupt()
    said_over: list[int] = []

    def handle(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if run_over():  # its report is being written: nothing is left to stop
            if not said_over:
                said_over.append(signum)
                said = "the run has ended; it exits with its own status"
                _say(f"beaconflow: {name}: {said}", error=True, event="ended_already",
                     level="warning", fields={"signal": name})  # fmt: skip
            return
        if interrupted_by() is not None:
            raise KeyboardInterrupt
        said = ("stopping; no new request starts, what is in flight finishes (send the signal "
                "again to stop at once)")  # fmt: skip
        _say(f"beaconflow: {name}: {said}", error=True, event="stopping", level="warning",
             fields={"signal": name})  # fmt: skip
        interrupt(signum)

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signum not in ignored_at_start():  # ignored by whoever started it: it stays so
            previous[signum] = signal.signal(signum, handle)
    return previous


def _hard_interrupt() -> int:
    """A second signal (or one before the run could stop gracefully): no report."""
    mark_over()  # its status is decided: a third signal while metrics are pushed keeps it
    signum = interrupted_by() or signal.SIGINT
    _say(
        f"beaconflow: interrupted by {signal.Signals(signum).name} before the run could write "
        "its report; the same command with the same --ledger sends what was not delivered",
        error=True,
        event="interrupted",
        fields={"exit_status": 128 + signum, "signal": signal.Signals(signum).name},
    )
    return 128 + signum


def _tell(report: RunReport, status: int, log_format: str = "text") -> None:
    """The summary on stdout, and on stderr what the status means and what to do.

    In the json format the human lines go to stderr as JSON lines (a ``summary`` event, the
    report's paths, the dead letter) and stdout gets one line: the report in JSON.
    """
    entries = _dead_letter_entries(report.dead_letter)
    lines = [summary(report)]
    written = report.report_written
    path = report.report
    if written is True and report.report_html_written is False:
        lines.append(f"report: {path} ({html_path(path)} could not be written)")
    elif written is True:
        lines.append(f"report: {path} and {html_path(path)}")
    elif written is False:
        lines.append(f"report: not written ({path} could not be written)")
    if entries:
        lines.append(f"dead letter: {plural(entries, 'entry', 'entries')} in {report.dead_letter}")
    if log_format == "json":
        _say(
            "\n".join(lines),
            error=True,
            event="summary",
            level="info",
            # the proxy and CA bundles used, without credentials (since issue 19)
            fields={
                "exit_status": status,
                "dead_letter_entries": entries,
                "network": report.network,
            },
        )
    else:
        for line in lines:
            _say(line)
    if report.stopped:
        _say(
            f"beaconflow: stopped early: {report.stopped}. {_advice(report)}",
            error=True,
            event="stopped",
            fields={"exit_status": status, "stopped": report.stopped},
        )
    elif status:
        _say(
            f"beaconflow: {plural(report.events_invalid, 'invalid event')} + "
            + (
                f"{plural(report.messages_invalid, 'invalid message')} + "
                if report.messages_invalid
                else ""
            )
            + f"{plural(report.messages_failed, 'failed message')} exceed --max-errors; "
            f"see {report.dead_letter}",
            error=True,
            event="max_errors_exceeded",
            fields={"exit_status": status, "errors": report.errors},
        )
    if log_format == "json":
        _say(summary_line(report, status, entries))


def _dead_letter_entries(path: str) -> int | None:
    """How many lines the dead letter holds (0: none, or no such file; None: unreadable)."""
    if not path:
        return 0
    from apache_beam.io.filesystems import FileSystems

    try:
        if not FileSystems.exists(path):
            return 0
        count = 0
        with FileSystems.open(path) as stream:
            while block := stream.read(1 << 20):
                count += block.count(b"\n")
        return count
    except (OSError, ValueError):
        return None


def _advice(report: RunReport) -> str:
    """What to do after a run that stopped early."""
    if report.partial:
        if report.ledger:
            return (
                "Its counts are unknown. Mend that, then run the same command with the same "
                "--ledger: it sends only what the ledger does not hold"
            )
        return (
            "Its counts are unknown, and without --ledger nothing records what was sent: "
            "running it again sends everything again"
        )
    delivered = report.messages_delivered
    first = (
        f"{plural(delivered, 'message')} {'was' if delivered == 1 else 'were'} delivered. "
        "To finish the job,"
        if report.interrupted or report.stopped == DEADLINE
        else "Mend that, then"
    )
    resume = _chunks_advice(report, first)
    if resume is not None:
        return resume
    if not report.messages_not_attempted:
        if report.interrupted:
            return "Everything was sent or is in the dead letter"
        return "Everything was sent or is in the dead letter; mend that before the next run"
    if report.ledger:
        return (
            f"{first} run the same command with the same --ledger: it sends only what the "
            "ledger does not hold"
        )
    return (
        f"{first} replay the dead letter ({report.dead_letter}) as --input: its "
        "'not attempted' entries are what this run did not send"
    )


def _chunks_advice(report: RunReport, first: str) -> str | None:
    """What to do after a chunked run that stopped before its last chunk was done.

    The events of the chunks not run are in no dead letter: the work directory's plan holds
    them, and only the same command goes on with it.
    """
    if report.chunking is None:
        return None
    rows = [row for row in report.chunking.get("chunks", ()) if isinstance(row, Mapping)]
    if not rows:  # stopped in the spill pass, before any chunk
        return "Nothing was sent: run the same command again to do the job"
    left = [n for n, row in enumerate(rows, 1) if row.get("status") in ("stopped", "not run")]
    if not left:
        return None
    work_dir = report.chunking.get("work_dir")
    where = f"it goes on at chunk {left[0]} of {len(rows)} (its plan is in {work_dir})"
    if report.ledger:
        return (
            f"{first} run the same command with the same --ledger: {where} and sends only "
            "what the ledger does not hold"
        )
    again = rows[left[0] - 1].get("messages_delivered") or 0
    tail = (
        f"; without --ledger, that chunk runs again whole and sends its {plural(again, 'message')} "
        "delivered again"
        if again
        else ""
    )
    return f"{first} run the same command: {where}{tail}"


def _say(
    text: str,
    *,
    error: bool = False,
    event: str = "error",
    level: str = "error",
    fields: dict[str, object] | None = None,
) -> None:
    """Print a line; a stream that cannot be written (a full disk, /dev/full) is let go.

    The report on disk says everything; the run's status stands. On stderr in the json
    format, the line is a JSON object of ``event``, ``level`` and ``fields``.
    """
    say(text, error=error, event=event, level=level, fields=fields)


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
    """The key and secret values given on the command line, in the environment or in files.

    And the credentials of the proxy URLs of --proxy and the environment.

    Files: the ``_FILE`` variables' and ``$CREDENTIALS_DIRECTORY``'s (docs/deploy.md).
    """
    from beaconflow.delivery.credentials import known_values
    from beaconflow.delivery.network import proxy_secrets_in
    from beaconflow.pipelines.options import SECRET_FLAGS

    flags = SECRET_FLAGS
    values = known_values(os.environ)
    # a proxy URL's user name and password (since issue 19)
    values.extend(proxy_secrets_in(args, os.environ))
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                values.append(args[i + 1])
            elif arg.startswith(flag + "="):
                values.append(arg.split("=", 1)[1])
    return [v for v in values if v]
