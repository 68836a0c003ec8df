"""The backfill's command-line flags and the frozen configuration they are converted into, once.

beaconflow's own flags are parsed here with help on every one; whatever is left goes to
Beam's ``PipelineOptions`` unchanged (``--runner``, ``--direct_num_workers``, ...). The
flags are deliberately not a ``PipelineOptions`` subclass: Beam serialises its options into
the job (and runners such as Dataflow show them in their UI), and API keys must not travel
that way.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beaconflow.delivery import credentials
from beaconflow.delivery.breaker import DEFAULT_WINDOW
from beaconflow.delivery.network import Network, NetworkError
from beaconflow.delivery.retry import RetryPolicy
from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.builtin import BUILTINS, builtin_mapping, is_builtin_name
from beaconflow.model.duration import parse_duration
from beaconflow.model.errors import BeaconflowError, TryLaterError
from beaconflow.model.field_rules import RuleError, parse_zone
from beaconflow.model.mapping import MappingError, RecordMapping, parse_mapping
from beaconflow.model.message import Destination, Endpoint
from beaconflow.model.source import FORMATS, JSONL_SUFFIXES, PARQUET_SUFFIXES
from beaconflow.report.command import redacted_command

#: Keys the sandbox uses; they mean nothing anywhere else.
SANDBOX_KONTAGENT_KEY = "5a4db0c5a4db0c5a4db0c5a4db0c5a4d"
SANDBOX_KONTAGENT_SECRET = "sandbox-secret"
SANDBOX_KISSMETRICS_KEY = "sandbox-kissmetrics-key"

DEFAULT_OUTPUT = "beaconflow-output"

#: --chunk's choices.
CHUNK_CHOICES = ("auto", "none", "day", "week", "month")
#: ``{date}`` or ``{date:FORMAT}`` (strftime) in --input and output paths, with --date.
_DATE_PLACEHOLDER = re.compile(r"\{date(?::([^{}]*))?\}")


class UsageError(BeaconflowError, ValueError):
    """A flag, a file or a pattern is unusable: one clear line, exit status 2."""


class InputNotLanded(TryLaterError):
    """With --date, the day's own --input matches nothing yet: exit 75, try again later."""


@dataclass(frozen=True)
class BackfillConfig:
    """Everything a run needs, converted and checked once from the command line."""

    inputs: tuple[str, ...]
    mapping: RecordMapping
    endpoints: dict[Destination, Endpoint] = field(repr=False)
    since: int | None
    until: int | None
    max_rps: float | None
    concurrency: int
    retry: RetryPolicy
    timeout: float
    dead_letter: str
    report: str
    dry_run: str | None
    sandbox: bool
    max_errors: int
    progress_interval: float
    ledger: str | None
    adaptive: bool
    beam_args: tuple[str, ...]
    #: --send-processes; None: chosen by the runner (beaconflow.pipelines.runners)
    send_processes: int | None = None
    #: the --date day (UTC) of a nightly run, None for an ordinary run
    day: date | None = None
    #: --format: how to read every input; None: by each file name's ending
    file_format: str | None = None
    #: With --date, the day each --input pattern written with {date} was expanded for (the
    #: target day or a --lookback day); patterns without {date} are not in it.
    input_days: dict[str, date] = field(default_factory=dict)
    #: --ledger-app: the name that stands for the API key in the ledger's fingerprints
    ledger_app: str | None = None
    #: --deadline: seconds from the run's start after which no request starts; None: none
    deadline: float | None = None
    #: What the --mapping and --source-timezone were (a digest of the file's bytes, or the
    #: built-in's name): a chunked run's plan is for one mapping
    mapping_digest: str = ""
    #: --chunk: none, day, week, month or auto
    chunk: str = "auto"
    #: --work-dir (absolute): where a chunked run keeps its plan and results
    work_dir: str = ""
    #: A dated backfill's --input patterns, {date} left in (``inputs`` is empty then)
    dated_inputs: tuple[str, ...] = ()
    #: --lookback
    lookback: int = 0
    #: --breaker-window: seconds of nothing but failures that declare a destination down;
    #: None: no circuit breaker (--breaker-window 0)
    breaker_window: float | None = DEFAULT_WINDOW
    #: --kontagent-max-age: days; Kontagent gets the messages of newer events only (None: all)
    kontagent_max_age: float | None = None
    #: The command line, secrets masked (the report's ``command``)
    command: tuple[str, ...] = ()
    #: When the run started, epoch seconds (the report's ``started_at``); None: not known
    started_at: float | None = None
    #: --proxy, --ca-bundle and the environment's proxies and CA bundles, resolved once here
    #: and carried to every sender (since issue 19)
    network: Network = field(default_factory=Network, repr=False)

    @property
    def destinations(self) -> tuple[Destination, ...]:
        return tuple(self.endpoints)

    def secrets(self) -> tuple[str, ...]:
        """The keys, the secret and the proxies' credentials: what every text masks."""
        keys = tuple(s for endpoint in self.endpoints.values() for s in endpoint.secrets())
        return keys + self.network.secrets()


def _number(kind: type[int] | type[float], *, positive: bool) -> Callable[[str], float]:
    """An argparse type: an int or a number, > 0 or >= 0, refused with a plain reason."""
    noun = "a whole number" if kind is int else "a number"
    bound = "above 0" if positive else "0 or more"

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun} {bound}, got {text!r}") from None
        if not (value > 0 if positive else value >= 0):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be {noun} {bound}, got {text!r}")
        return value

    return convert


_positive_int = _number(int, positive=True)
_non_negative_int = _number(int, positive=False)
_positive_float = _number(float, positive=True)
_non_negative_float = _number(float, positive=False)


def _duration(*, positive: bool) -> Callable[[str], float]:
    """An argparse type: a duration (90s, 45m, 6h, 1h30m, seconds), > 0 or >= 0, in seconds."""
    bound = "above 0" if positive else "0 or more"

    def convert(text: str) -> float:
        try:
            value = parse_duration(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a duration {bound} such as 90s, 45m, 6h or 1h30m (a plain number is "
                f"seconds), got {text!r}"
            ) from None
        if positive and not value > 0:
            raise argparse.ArgumentTypeError(f"must be a duration {bound}, got {text!r}")
        return value

    return convert


def parse_instant(text: str, flag: str) -> int:
    """Epoch seconds of an ISO-8601 date (midnight UTC) or time (UTC unless it has an offset)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: not an ISO-8601 date or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


#: The exit statuses, as --help lists them (docs/cli.md's table says the same).
EXIT_STATUSES = """exit status:
  0    done; invalid events + invalid messages + failed messages
       <= --max-errors
  2    nothing was sent: a usage or whole-run error (bad flag, no file matching
       an --input, an output or the ledger not writable, the ledger damaged: see
       'beaconflow ledger verify|repair DIR'); one line on stderr
  3    done, but invalid events + invalid messages + failed messages
       > --max-errors; see the dead letter
  4    stopped early after sending began (the ledger or the dead letter could not
       be written, a destination answers only with redirects, a destination cannot
       be reached: its TLS certificate is not trusted (--ca-bundle) or the proxy
       refuses the CONNECT, the --deadline was reached, a destination is down: see
       --breaker-window, the run failed):
       a report with "stopped" is written ("deadline", "destination down: NAME
       (...)"); the same command with the same --ledger finishes the job
  75   nothing done, try again later: another run holds the --ledger for an
       endpoint of this run, or with --date the day's --input matches nothing
       yet (it has not landed); one line on stderr, no report
  130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: what was in flight finished, the
       report says "interrupted": true, the rest is in the dead letter as not attempted;
       the same command with the same --ledger finishes the job (a second signal stops at
       once, without a report)
"""


#: The input files --help lists: the reader's own endings (beaconflow/model/source.py).
INPUT_FILES = (
    "\ninput files (by name; --format reads others):\n  JSON lines: "
    + ", ".join(JSONL_SUFFIXES)
    + "\n  Parquet: "
    + ", ".join(PARQUET_SUFFIXES)
    + "\n"
)

#: The environment variables --help lists.
ENVIRONMENT = """
environment:
  KONTAGENT_API_KEY, KONTAGENT_SECRET, KISSMETRICS_API_KEY
       the keys, when their flags are not given (flags are visible in ps)
  KONTAGENT_API_KEY_FILE, KONTAGENT_SECRET_FILE, KISSMETRICS_API_KEY_FILE
       the keys read from a file (a systemd credential, a mounted secret)
  CREDENTIALS_DIRECTORY
       systemd's credentials folder, where the keys' files are looked for
  HTTPS_PROXY, HTTP_PROXY, NO_PROXY (or lower case, which wins)
       the proxy of https:// and http:// URLs, and the hosts reached directly;
       --proxy replaces the first two (docs/networks.md)
  SSL_CERT_FILE, REQUESTS_CA_BUNDLE
       CA bundles added to the system's trust store, as --ca-bundle
  BEACONFLOW_DEBUG=1
       a traceback for unexpected failures instead of one line
  BEACONFLOW_LEDGER_LOCK_STALE_SECONDS, BEACONFLOW_LEDGER_LOCK_HEARTBEAT_SECONDS
       when a --ledger lock is taken over (default 300), its heartbeat (default 10)
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``beaconflow`` (Beam's options are accepted besides these)."""
    p = _Parser(
        prog="beaconflow",
        description="Backfill application event logs into Kontagent and KISSmetrics "
        "(an Apache Beam batch pipeline; Beam's options such as --runner and "
        "--direct_num_workers are accepted too).",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_STATUSES + ENVIRONMENT + INPUT_FILES,
    )
    read = p.add_argument_group("input")
    read.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="PATTERN",
        help="a path or glob of .jsonl, .ndjson, .json (JSON lines; each also .gz) or .parquet "
        "files (listed below); repeatable",
    )
    read.add_argument(
        "--format",
        choices=FORMATS,
        help="read every input as JSON lines or as Parquet, whatever its name says "
        "(default: by the file name's ending)",
    )
    read.add_argument(
        "--mapping",
        metavar="FILE|NAME",
        help="TOML describing how another log schema maps onto the canonical "
        "record, and which events go where (see docs/input.md); or a built-in mapping's "
        f"name: {', '.join(BUILTINS)} (beaconflow mapping show NAME prints it)",
    )
    read.add_argument(
        "--source-timezone",
        metavar="ZONE",
        help="the time zone of input times that have no offset (an IANA name such as "
        "America/Los_Angeles, or an offset such as -07:00); a mapping rule's zone wins "
        "(default: such times are refused)",
    )
    read.add_argument(
        "--since", metavar="WHEN", help="keep events at or after this ISO-8601 date or time (UTC)"
    )
    read.add_argument(
        "--until", metavar="WHEN", help="keep events before this ISO-8601 date or time (UTC)"
    )
    read.add_argument(
        "--date",
        metavar="DAY",
        help="a nightly run over one UTC day, YYYY-MM-DD, 'yesterday' or 'today': {date} "
        "(or {date:FORMAT}, strftime) in --input, --report, --dead-letter and --dry-run "
        "becomes that day, and only that day's events are kept (instead of --since/--until)",
    )
    read.add_argument(
        "--lookback",
        type=_non_negative_int,
        default=0,
        metavar="DAYS",
        help="with --date: also read the DAYS days before it and keep their events, for "
        "events that reach a later day's logs; a day before whose {date} input matches "
        "nothing is skipped and named in the report; needs --ledger, which skips what "
        "earlier nights delivered. In a dated backfill ({date} in --input with --since "
        "and --until): events land in the partitions of up to DAYS days after their own, "
        "and each chunk reads those too (default: 0)",
    )
    read.add_argument(
        "--chunk",
        choices=CHUNK_CHOICES,
        default="auto",
        help="run the window in chunks of event time, one after the other, each a pipeline "
        "of its own events only, with one ledger, report and dead letter: memory stays "
        "flat in the history's size and the first messages go out early; a stopped run "
        "resumes at its unfinished chunk (see --work-dir). auto: one chunk when the input "
        "is small, else chunks of consecutive days sized to the memory; none: one pipeline "
        "for everything (default: auto; docs/backfill.md)",
    )
    read.add_argument(
        "--work-dir",
        metavar="DIR",
        help="where a chunked run keeps its plan, its per-chunk results and the events of "
        "undated input cut by day; the same command resumes from it (default: beside "
        "--report, REPORT.work; removed when the run ends done)",
    )
    dest = p.add_argument_group(
        "destinations (a destination is used if and only if its key is given)"
    )
    dest.add_argument(
        "--kontagent-api-key",
        metavar="KEY",
        help="Kontagent API key (default: $KONTAGENT_API_KEY, or the file named by "
        "$KONTAGENT_API_KEY_FILE, or kontagent_api_key in $CREDENTIALS_DIRECTORY)",
    )
    dest.add_argument(
        "--kontagent-secret",
        metavar="SECRET",
        help="Kontagent secret; requests are signed when set (default: $KONTAGENT_SECRET, "
        "or the file named by $KONTAGENT_SECRET_FILE, or kontagent_secret in "
        "$CREDENTIALS_DIRECTORY)",
    )
    dest.add_argument(
        "--kontagent-url",
        default=kontagent.PRODUCTION_URL,
        metavar="BASE",
        help=f"Kontagent API base URL (default: {kontagent.PRODUCTION_URL})",
    )
    dest.add_argument(
        "--kissmetrics-api-key",
        metavar="KEY",
        help="KISSmetrics API key (default: $KISSMETRICS_API_KEY, or the file named by "
        "$KISSMETRICS_API_KEY_FILE, or kissmetrics_api_key in $CREDENTIALS_DIRECTORY)",
    )
    dest.add_argument(
        "--kissmetrics-url",
        default=kissmetrics.DEFAULT_URL,
        metavar="BASE",
        help=f"KISSmetrics base URL (default: {kissmetrics.DEFAULT_URL})",
    )
    # issue 18: Kontagent counts a message on the day it receives it (docs/backfill.md)
    dest.add_argument(
        "--kontagent-max-age",
        type=_number(float, positive=True),
        metavar="DAYS",
        help="send Kontagent only the messages of events newer than DAYS days (a fraction "
        "too: 1.5) before the run's start; the others are counted as messages_too_old and "
        "not sent (KISSmetrics, backdated, still gets every event). Kontagent has no "
        "timestamps: it counts each message on the day it is sent (default: any age)",
    )
    send = p.add_argument_group("sending")
    send.add_argument(
        "--max-rps",
        type=_positive_float,
        metavar="N",
        help="requests per second per destination over the whole run, however "
        "many workers (default: unlimited)",
    )
    send.add_argument(
        "--concurrency",
        type=_positive_int,
        default=64,
        metavar="N",
        help="most requests in flight per worker (default: 64)",
    )
    send.add_argument(
        "--fixed-concurrency",
        action="store_true",
        help="keep --concurrency requests in flight whatever the service answers, instead of "
        "adapting (start low, grow while answers stay fast, back off on 429/503/timeouts)",
    )
    send.add_argument(
        "--send-processes",
        type=_non_negative_int,
        metavar="N",
        help="send from N processes of their own per worker (at most --concurrency), sharing "
        "--concurrency and --max-rps, so that sending uses other cores than Beam's work; 0 "
        "sends from the worker's own process (default: one per CPU on DirectRunner's "
        "in-memory mode, else 0)",
    )
    send.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=5,
        metavar="N",
        help="tries per message, the first included (default: 5)",
    )
    send.add_argument(
        "--no-retry-ambiguous",
        action="store_true",
        help="do not try again a request that went out and got no answer (a timeout or a "
        "reset after it was sent: the service may have received it); the message goes to "
        "the dead letter saying so. For services that count every request they receive "
        "(Kontagent). By default such requests are retried (at least once: a message may "
        "be counted twice) and counted in the report's messages_ambiguous. Connection "
        "errors (the request never left) are retried either way",
    )
    send.add_argument(
        "--backoff",
        type=_non_negative_float,
        default=0.5,
        metavar="SECONDS",
        help="base of the exponential backoff between tries, full jitter, capped at 30 s "
        "(default: 0.5)",
    )
    send.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds per request (default: 10)",
    )
    send.add_argument(
        "--deadline",
        type=_duration(positive=True),
        metavar="DURATION",
        help="stop sending DURATION after the run's start (90s, 45m, 6h, 1h30m; a plain "
        "number is seconds), reading included: no new request starts, what is in flight "
        "finishes, the rest goes to the dead letter as 'not attempted: deadline', the report "
        'says "stopped": "deadline" and the run exits 4 (default: no deadline)',
    )
    send.add_argument(
        "--breaker-window",
        type=_duration(positive=False),
        default=DEFAULT_WINDOW,
        metavar="DURATION",
        help="declare a destination down when every answer it gave for DURATION was a "
        "timeout, a connection error or a 5xx (any other answer, a 4xx too, starts the "
        "window again): nothing more is sent to it, the rest of its messages go to the dead "
        "letter as 'not attempted: destination down' (replayable), the other destination "
        f"goes on, and the run exits 4; 0 turns the breaker off (default: {DEFAULT_WINDOW:g}s)",
    )
    # since issue 19
    network = p.add_argument_group("network")
    network.add_argument(
        "--proxy",
        metavar="URL|none",
        help="send through this HTTP proxy (http://[user:password@]host:port), https:// URLs "
        "through a CONNECT tunnel; it replaces HTTPS_PROXY and HTTP_PROXY for both schemes, "
        "NO_PROXY still applies; 'none' turns proxies off whatever the environment says. "
        "Credentials are sent as the proxy's basic authentication and never shown "
        "(default: HTTPS_PROXY/HTTP_PROXY/NO_PROXY; with --sandbox, no proxy)",
    )
    network.add_argument(
        "--ca-bundle",
        action="append",
        default=[],
        metavar="PATH",
        help="a PEM file of CA certificates to trust besides the system's (a company CA "
        "that re-signs TLS at its proxy); repeatable; SSL_CERT_FILE and REQUESTS_CA_BUNDLE "
        "are added the same way. Verification is always on",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--dead-letter",
        default=f"{DEFAULT_OUTPUT}/dead-letter.jsonl",
        metavar="PATH",
        help="JSONL of every record or message that could not go on, with the "
        f"reason (default: {DEFAULT_OUTPUT}/dead-letter.jsonl)",
    )
    out.add_argument(
        "--report",
        default=f"{DEFAULT_OUTPUT}/report.json",
        metavar="PATH",
        help="JSON report of the run, and beside it the same as a page with charts "
        f"(report.json -> report.html; default: {DEFAULT_OUTPUT}/report.json)",
    )
    out.add_argument(
        "--ledger",
        metavar="DIR",
        help="delivery ledger directory: messages it records are not sent again (counted as "
        "already delivered) and every delivery is recorded in it; use the same DIR for every run",
    )
    out.add_argument(
        "--ledger-app",
        metavar="NAME",
        help="identify this app in the ledger by NAME instead of its API keys, so that a "
        "key rotation keeps the ledger's memory (the destination and its URL still count); "
        "needs --ledger",
    )
    out.add_argument(
        "--dry-run",
        metavar="PATH",
        help="write the messages that would be sent (redacted) to PATH and send nothing",
    )
    out.add_argument(
        "--sandbox",
        action="store_true",
        help="start the bundled local collector and send there with demo keys; "
        "nothing reaches the real services",
    )
    out.add_argument(
        "--max-errors",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="exit 0 when invalid events + invalid messages + failed messages <= N, else 3 "
        "(default: 0)",
    )
    out.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress lines on stderr (default: 10)",
    )
    add_metrics_flags(p)
    # since issue 18: what the command writes (read by cli.main before anything is parsed)
    console = p.add_argument_group("console")
    console.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text: 'beaconflow: ...' lines on stderr (a live progress display on a "
        "terminal); json: every stderr line one JSON object (time, level, event, message "
        "and the numbers) and the last stdout line the report in JSON (default: text)",
    )
    console.add_argument(
        "--version", action="version", version=f"beaconflow {_version()}", help="print it"
    )
    return p


# --- metrics (issue 18): read by the command before the run, so that every exit has them --


@dataclass(frozen=True)
class MetricsConfig:
    """Where the command puts the run's Prometheus metrics (docs/outputs.md, "Metrics")."""

    textfile: str | None = None
    #: --pushgateway as given; it may hold credentials: never printed
    pushgateway: str | None = field(default=None, repr=False)
    pipeline: str | None = None

    @property
    def wanted(self) -> bool:
        return bool(self.textfile or self.pushgateway)


def add_metrics_flags(p: argparse.ArgumentParser) -> None:
    """The metrics flags, in their own group of ``p``."""
    metrics = p.add_argument_group("metrics (docs/outputs.md, Metrics)")
    metrics.add_argument(
        "--metrics-textfile",
        metavar="PATH",
        help="after the run, write its counts, duration, exit status and (on exit 0) "
        "beaconflow_last_success_timestamp_seconds in Prometheus' text format to PATH, "
        "atomically, for node-exporter's textfile collector (name it *.prom); a failed run "
        "keeps the file's last success time",
    )
    metrics.add_argument(
        "--pushgateway",
        metavar="URL",
        help="after the run, push the same metrics to this Pushgateway (job 'beaconflow'): "
        "exit 0 replaces the group, another status adds to it without the last success "
        "time; a push that fails is a warning",
    )
    metrics.add_argument(
        "--metrics-pipeline",
        metavar="NAME",
        help="label every metric pipeline=NAME (and group the Pushgateway's metrics by it), "
        "for several beaconflow jobs on one host or gateway (default: no such label)",
    )


def metrics_config(argv: Sequence[str]) -> MetricsConfig:
    """The metrics flags of ``argv`` (the others are left to :func:`configure`)."""
    from beaconflow.report.metrics import Gateway

    p = _Parser(prog="beaconflow", add_help=False, allow_abbrev=False)
    add_metrics_flags(p)
    args, _ = p.parse_known_args(list(argv))
    if args.pushgateway is not None:
        try:
            Gateway.parse(args.pushgateway)
        except ValueError as error:
            shown = Gateway.shown(args.pushgateway)
            raise UsageError(f"--pushgateway {shown}: {error}") from None
    for flag, value in (("--metrics-textfile", args.metrics_textfile),
                        ("--metrics-pipeline", args.metrics_pipeline)):  # fmt: skip
        if value is not None and not value.strip():
            raise UsageError(f"{flag} must not be empty")
    return MetricsConfig(args.metrics_textfile, args.pushgateway, args.metrics_pipeline)


def parse_day(text: str, now: float) -> date:
    """The --date value: an ISO date, or ``yesterday``/``today`` in UTC at ``now``."""
    today = datetime.fromtimestamp(now, UTC).date()
    named = {"today": today, "yesterday": today - timedelta(days=1)}
    if text in named:
        return named[text]
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--date {text!r}: expected YYYY-MM-DD, 'yesterday' or 'today'") from None


def expand_date(pattern: str, day: date, flag: str) -> str:
    """``pattern`` with each ``{date}`` (ISO) or ``{date:FORMAT}`` (strftime) filled in."""

    def fill(match: re.Match[str]) -> str:
        form = match.group(1)
        if form is None:
            return day.isoformat()
        if "%" not in form:
            raise UsageError(
                f"{flag} {pattern!r}: {{date:{form}}} needs a strftime format such as %Y/%m/%d"
            )
        return day.strftime(form)

    return _DATE_PLACEHOLDER.sub(fill, pattern)


def _absolute(path: str) -> str:
    """A local path made absolute (``gs://``-style URLs are left as they are)."""
    return path if "://" in path else os.path.abspath(path)


def _absolute_beam_files(args: Sequence[str]) -> list[str]:
    """Beam's --setup_file and --requirements_file made absolute.

    Beam 2.77 changes into the setup file's directory to build the sdist it stages, and
    fails on a bare ``pyproject.toml`` (its directory is the empty string).
    """
    out = list(args)
    for i, arg in enumerate(out):
        for flag in ("--setup_file", "--requirements_file"):
            if arg.startswith(flag + "="):
                out[i] = f"{flag}={_absolute(arg.split('=', 1)[1])}"
            elif arg == flag and i + 1 < len(out):
                out[i + 1] = _absolute(out[i + 1])
    return out


def _beam_flags() -> frozenset[str]:
    return frozenset(PipelineOptions([]).get_all_options(drop_default=False))


#: Flags whose values are secrets: never echoed, not even in part.
#: Flags whose value is never shown (--pushgateway's URL may hold a password; issue 18).
SECRET_FLAGS = (
    "--kontagent-api-key",
    "--kontagent-secret",
    "--kissmetrics-api-key",
    "--pushgateway",
)


def _after_a_secret(word: str, argv: Sequence[str]) -> str | None:
    """The secret flag whose value ``word`` follows in ``argv``, or None.

    The shell splits an unquoted value that holds a space: its second half is a stray word.
    """
    for i, arg in enumerate(argv):
        if arg != word:
            continue
        for flag in SECRET_FLAGS:
            if (i >= 2 and argv[i - 2] == flag) or (i >= 1 and argv[i - 1].startswith(flag + "=")):
                return flag
    return None


def _check_url(flag: str, url: str) -> None:
    """An http:// or https:// URL with a host, or UsageError naming the flag."""
    try:
        parts = urlsplit(url)
        # .port raises for a port out of range or not a number
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise UsageError(f"{flag} {url!r}: not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # shown without them: a password must not reach the terminal or a log
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        raise UsageError(
            f"{flag} {shown}: a user name or password in the URL is not supported (it would "
            "be written into the dry-run file and every URL shown)"
        )
    if parts.query or parts.fragment:
        raise UsageError(f"{flag} {url!r}: a base URL takes no ?query or #fragment")


def _check_beam_args(rest: Sequence[str], argv: Sequence[str] = ()) -> None:
    """Refuse what neither beaconflow nor Beam knows, which Beam would silently ignore.

    A word that is not a flag is accepted only as the value of a Beam flag written without
    ``=`` just before it (``--runner DirectRunner``); anywhere else it is most often a file
    the shell expanded from an unquoted ``--input`` glob, of which only the first was taken.
    """
    known = _beam_flags()
    previous = ""
    for arg in rest:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            if name.replace("-", "_") not in known:
                raise UsageError(f"unrecognized argument: {arg.split('=', 1)[0]}")
        elif arg.startswith("-"):
            raise UsageError(f"unrecognized argument: {arg}")
        elif not (previous.startswith("--") and "=" not in previous):
            flag = _after_a_secret(arg, argv)
            if flag is not None:
                raise UsageError(
                    f"unexpected argument after the value of {flag} (not shown: it may be part "
                    "of the secret): quote a value that holds a space"
                )
            raise UsageError(
                f"unexpected argument {arg!r}: give each input its own --input, and quote a "
                "glob (--input 'logs/*.jsonl') so that beaconflow expands it, not the shell"
            )
        previous = arg


def read_mapping(path: str | None, source_timezone: str | None = None) -> RecordMapping:
    """The --mapping (a file or a built-in's name) with --source-timezone; UsageError if bad."""
    zone = None
    if source_timezone is not None:
        try:
            zone = parse_zone(source_timezone)
        except RuleError as error:
            raise UsageError(f"--source-timezone: {error}") from None
    return _read_mapping(path).with_source_zone(zone)


def _mapping_digest(path: str | None, source_timezone: str | None) -> str:
    """What names the mapping for a chunked run's plan: its file's bytes, or its name."""
    if path is None or is_builtin_name(path):
        described = f"builtin:{path}:{_version()}"
    else:
        try:
            if "://" in path:
                with FileSystems.open(path) as handle:
                    raw = handle.read()
            else:
                raw = Path(path).read_bytes()
        except OSError:  # read already by read_mapping: only a file gone since
            raw = b""
        described = "file:" + hashlib.sha256(raw).hexdigest()
    return hashlib.sha256(f"{described}|{source_timezone}".encode()).hexdigest()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("beaconflow")
    except PackageNotFoundError:
        return "unknown"


def _read_mapping(path: str | None) -> RecordMapping:
    if path is None:
        return RecordMapping()
    if is_builtin_name(path):
        try:
            return builtin_mapping(path)
        except MappingError as error:
            raise UsageError(f"--mapping {error}") from None
    try:
        if "://" in path:  # gs://, s3://, ...: through Beam's FileSystems
            with FileSystems.open(path) as handle:
                raw = handle.read()
        else:
            raw = Path(path).read_bytes()
    except OSError as error:
        reason = error.strerror or str(error).splitlines()[0]
        raise UsageError(f"--mapping {path}: cannot be read: {reason}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"--mapping {path}: not UTF-8 text (byte {error.start}): a TOML file is expected"
        ) from None
    try:
        return parse_mapping(text, path)
    except MappingError as error:
        raise UsageError(str(error)) from None


def _flag(dest: str) -> str:
    """The command-line spelling of an argparse destination: dead_letter -> --dead-letter."""
    return "--" + dest.replace("_", "-")


def _nightly(
    args: argparse.Namespace, now: float
) -> tuple[date | None, list[str], dict[str, date]]:
    """Apply --date and --lookback to ``args`` in place.

    The day, the expanded inputs, and the day each input written with {date} stands for.
    """
    if args.date is None:
        if any(_DATE_PLACEHOLDER.search(pattern) for pattern in args.input):
            _dated_backfill(args)
            return None, list(args.input), {}
        if args.lookback:
            raise UsageError("--lookback needs --date, or {date} in --input (a dated backfill)")
        for flag in ("input", "report", "dead_letter", "dry_run"):
            values = getattr(args, flag)
            for value in values if isinstance(values, list) else [values]:
                if value and _DATE_PLACEHOLDER.search(value):
                    raise UsageError(f"{_flag(flag)} {value!r} has {{date}} but no --date is given")
        return None, list(args.input), {}
    if args.since is not None or args.until is not None:
        raise UsageError("--date sets the time window itself: drop --since/--until")
    if args.lookback and not args.ledger:
        raise UsageError(
            "--lookback reads days that earlier nights sent already: it needs --ledger"
        )
    if args.ledger and _DATE_PLACEHOLDER.search(args.ledger):
        raise UsageError("--ledger must be the same directory every night: no {date} in it")
    day = parse_day(args.date, now)
    days = [day - timedelta(days=back) for back in range(args.lookback, -1, -1)]
    inputs: list[str] = []
    input_days: dict[str, date] = {}
    for pattern in args.input:
        dated = bool(_DATE_PLACEHOLDER.search(pattern))
        for each in days if dated else [day]:
            expanded = expand_date(pattern, each, "--input")
            if expanded not in inputs:
                inputs.append(expanded)
            if dated:  # the days run up to the target day: a pattern of several is its
                input_days[expanded] = each
    for flag in ("report", "dead_letter", "dry_run"):
        value = getattr(args, flag)
        if value:
            setattr(args, flag, expand_date(value, day, _flag(flag)))
    args.since = days[0].isoformat()
    args.until = (day + timedelta(days=1)).isoformat()
    return day, inputs, input_days


def _dated_backfill(args: argparse.Namespace) -> None:
    """Check a dated backfill: {date} in every --input, with --since and --until.

    Each chunk of the window reads its days' partitions (docs/backfill.md).
    """
    undated = [pattern for pattern in args.input if not _DATE_PLACEHOLDER.search(pattern)]
    if undated:
        raise UsageError(
            f"--input {undated[0]!r} has no {{date}} while another --input has one: in a "
            "dated backfill every --input is partitioned by day"
        )
    if args.since is None or args.until is None:
        raise UsageError(
            "--input has {date}: give --date for a nightly run, or --since and --until for a "
            "backfill of those days' partitions"
        )
    for flag in ("report", "dead_letter", "dry_run", "ledger", "work_dir"):
        value = getattr(args, flag)
        if value and _DATE_PLACEHOLDER.search(value):
            raise UsageError(f"{_flag(flag)} {value!r} has {{date}}, which only --date fills in")


def _read_secrets(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Fill in the keys and the secret from their variables or files (docs/deploy.md).

    With --sandbox the demo keys are used and nothing is read.
    """
    if args.sandbox:
        return
    for secret in credentials.SECRETS:
        dest = secret.flag[2:].replace("-", "_")
        try:
            setattr(args, dest, credentials.resolve(secret, getattr(args, dest), environ))
        except credentials.CredentialError as error:
            raise UsageError(str(error)) from None


#: The flags --sandbox replaces with its own values (a real key or URL given with it would
#: suggest that something reaches the real services).
_SANDBOX_REPLACES = (
    "--kontagent-api-key",
    "--kontagent-secret",
    "--kontagent-url",
    "--kissmetrics-api-key",
    "--kissmetrics-url",
)


def _refuse_contradictions(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """UsageError for flags that contradict each other, naming both and why (since issue 18)."""
    if args.sandbox and args.dry_run:
        raise UsageError(
            "--sandbox and --dry-run contradict each other: --sandbox sends every message to "
            "the bundled collector, --dry-run sends nothing and writes the messages to a file; "
            "give one of them"
        )
    if args.sandbox:
        given = [
            flag for flag in _SANDBOX_REPLACES
            if any(word == flag or word.startswith(flag + "=") for word in argv)
        ]  # fmt: skip
        if given:
            raise UsageError(
                f"--sandbox and {given[0]} contradict each other: --sandbox sends to the bundled "
                "collector with its own demo keys, never to a real service; leave out "
                f"{', '.join(given)} or --sandbox"
            )


def default_work_dir(report: str) -> str:
    """Where a chunked run keeps its work without --work-dir: beside the report."""
    stem = report[: -len(".json")] if report.endswith(".json") else report
    return f"{stem}.work"


def configure(
    argv: Sequence[str], now: float | None = None, environ: Mapping[str, str] | None = None
) -> BackfillConfig:
    """The run's configuration from the command line, or UsageError naming what is wrong.

    ``now`` (epoch seconds, default the current time) is what ``--date yesterday`` counts from;
    ``environ`` (default ``os.environ``) is where the keys' variables and files are found.
    """
    args, rest = parser().parse_known_args(list(argv))
    _check_beam_args(rest, argv)
    _read_secrets(args, os.environ if environ is None else environ)
    if not args.input:
        raise UsageError("--input is required (a path or glob of event logs)")
    day, inputs, input_days = _nightly(args, time.time() if now is None else now)
    # Workers of a portable or remote runner do not share the driver's working directory.
    inputs = [_absolute(pattern) for pattern in inputs]
    input_days = {_absolute(pattern): each for pattern, each in input_days.items()}
    for flag in ("dead_letter", "report", "dry_run", "ledger", "work_dir"):
        if getattr(args, flag):
            setattr(args, flag, _absolute(getattr(args, flag)))
    rest = _absolute_beam_files(rest)
    _refuse_contradictions(args, argv)
    endpoints: dict[Destination, Endpoint] = {}
    if args.sandbox:
        # the collector's URL is filled in when it starts
        endpoints["kontagent"] = Endpoint(
            "kontagent", "", SANDBOX_KONTAGENT_KEY, SANDBOX_KONTAGENT_SECRET
        )
        endpoints["kissmetrics"] = Endpoint("kissmetrics", "", SANDBOX_KISSMETRICS_KEY)
    else:
        for flag, url in (("--kontagent-url", args.kontagent_url),
                          ("--kissmetrics-url", args.kissmetrics_url)):  # fmt: skip
            _check_url(flag, url)
        if args.kontagent_api_key:
            endpoints["kontagent"] = Endpoint(
                "kontagent",
                args.kontagent_url,
                args.kontagent_api_key,
                args.kontagent_secret or None,
            )
        if args.kissmetrics_api_key:
            endpoints["kissmetrics"] = Endpoint(
                "kissmetrics", args.kissmetrics_url, args.kissmetrics_api_key
            )
        if not endpoints and not args.dry_run:
            raise UsageError(
                "no destination: give --kontagent-api-key and/or --kissmetrics-api-key "
                "(or the KONTAGENT_API_KEY / KISSMETRICS_API_KEY environment variables, or "
                "their _FILE variables naming a file), "
                "or use --sandbox or --dry-run"
            )
        if not endpoints:  # a dry run without keys shows what both destinations would get
            endpoints["kontagent"] = Endpoint("kontagent", args.kontagent_url, "dry-run")
            endpoints["kissmetrics"] = Endpoint("kissmetrics", args.kissmetrics_url, "dry-run")
    if args.kontagent_max_age is not None and not math.isfinite(args.kontagent_max_age):
        raise UsageError(
            f"--kontagent-max-age must be a number of days, got {args.kontagent_max_age}"
        )
    if args.kontagent_max_age is not None and "kontagent" not in endpoints:
        raise UsageError(
            "--kontagent-max-age limits the Kontagent messages, but this run sends none: give "
            "--kontagent-api-key (or KONTAGENT_API_KEY) or leave out --kontagent-max-age"
        )
    if args.ledger_app is not None and not args.ledger:
        raise UsageError("--ledger-app names this app in a ledger: it needs --ledger")
    if args.ledger_app is not None and not args.ledger_app.strip():
        raise UsageError("--ledger-app must not be empty")
    since = None if args.since is None else parse_instant(args.since, "--since")
    until = None if args.until is None else parse_instant(args.until, "--until")
    if since is not None and until is not None and since >= until:
        raise UsageError(f"--since {args.since} is not before --until {args.until}")
    dated = day is None and any(_DATE_PLACEHOLDER.search(p) for p in inputs)
    work_dir = args.work_dir or default_work_dir(args.report)
    if "://" in work_dir and not work_dir.startswith("file://"):
        raise UsageError(f"--work-dir {work_dir}: must be a local folder")
    network = _network(args, os.environ if environ is None else environ)
    return BackfillConfig(
        network=network,
        mapping_digest=_mapping_digest(args.mapping, args.source_timezone),
        file_format=args.format,
        inputs=() if dated else tuple(inputs),
        dated_inputs=tuple(inputs) if dated else (),
        lookback=args.lookback,
        chunk=args.chunk,
        work_dir=work_dir.removeprefix("file://"),
        mapping=read_mapping(args.mapping, args.source_timezone),
        endpoints=endpoints,
        since=since,
        until=until,
        max_rps=args.max_rps,
        concurrency=args.concurrency,
        retry=RetryPolicy(
            max_attempts=args.max_attempts,
            base_delay=args.backoff,
            retry_ambiguous=not args.no_retry_ambiguous,
        ),
        timeout=args.timeout,
        dead_letter=args.dead_letter,
        report=args.report,
        dry_run=args.dry_run,
        sandbox=args.sandbox,
        max_errors=args.max_errors,
        progress_interval=args.progress_interval,
        ledger=args.ledger,
        ledger_app=args.ledger_app,
        adaptive=not args.fixed_concurrency,
        beam_args=tuple(rest),
        day=day,
        input_days=input_days,
        send_processes=args.send_processes,
        deadline=args.deadline,
        breaker_window=args.breaker_window or None,
        kontagent_max_age=args.kontagent_max_age,
        command=redacted_command(
            argv,
            [s for endpoint in endpoints.values() for s in endpoint.secrets()]
            + list(network.secrets()),
        ),
    )


def _network(args: argparse.Namespace, environ: Mapping[str, str]) -> Network:
    """The run's :class:`~beaconflow.delivery.network.Network`, or UsageError naming the flag.

    With --sandbox the environment's proxies are not used (the collector is on this
    machine's loopback, which a proxy elsewhere cannot reach); --proxy still is, for a user
    who tests a proxy of their own with the sandbox.
    """
    if args.sandbox:
        environ = {
            name: value
            for name, value in environ.items()
            if name.upper() not in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
        }
    try:
        return Network.resolve(args.proxy, args.ca_bundle, environ)
    except NetworkError as error:
        raise UsageError(str(error)) from None
