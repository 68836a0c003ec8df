"""Run beaconflow under a scheduler that retries on any failure, such as Airflow's BashOperator.

beaconflow's exit status says whether running the same command again can help (docs/cli.md):
75 (nothing done, try again later) and 130/143 (interrupted; the same command with the same
``--ledger`` finishes the job) can; 2, 3 and 4 need a person (a usage error, more errors than
``--max-errors``, a run stopped early), and a retry would only repeat them. Airflow retries a
failed task whatever its exit status, so this wrapper runs the command and turns its status
into one of three:

- **0** done (beaconflow said 0);
- **75** try again: beaconflow said 75, 130 or 143, or died otherwise (a signal, a crash:
  Airflow's own default, a retry);
- **99** failed, do not retry, alert: beaconflow said 2, 3 or 4. 99 is the status
  BashOperator turns into a skip (its ``skip_on_exit_code``); the example DAG turns that
  skip into ``AirflowFailException``, Airflow's failure without retry
  (examples/airflow/README.md). ``--final-status`` chooses another.

The command's stdout and stderr pass through unchanged (BashOperator pushes the last stdout
line to XCom); the wrapper adds one line on stderr saying what the status means. It ignores
SIGINT and SIGTERM itself: schedulers signal the whole process group, so beaconflow gets the
signal directly and stops gracefully; a second copy from the wrapper would stop it at once.

Run::

    python -m beaconflow.pipelines.wrap -- beaconflow --date 2025-06-01 --input 'logs/{date}/*'
"""

from __future__ import annotations

import argparse
import enum
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

#: beaconflow's status for "nothing done, try again later" (sysexits' EX_TEMPFAIL).
EX_TEMPFAIL = 75
#: BashOperator's default ``skip_on_exit_code``.
DEFAULT_FINAL_STATUS = 99
#: beaconflow's statuses that a retry cannot mend: a person must look.
FINAL_STATUSES: frozenset[int] = frozenset({2, 3, 4})
#: beaconflow's statuses after which the same command later does the job.
RETRY_STATUSES: frozenset[int] = frozenset({EX_TEMPFAIL, 130, 143})


class Outcome(enum.Enum):
    """What a scheduler should do after a run."""

    DONE = "done"
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True)
class Verdict:
    """A run's outcome and why, in words for the scheduler's log."""

    outcome: Outcome
    status: int
    reason: str


_REASONS = {
    0: "done",
    2: "nothing was sent: a usage or whole-run error (see the line above)",
    3: "done, but more errors than --max-errors: read the dead letter and the report",
    4: "stopped early after sending began: the report's 'stopped' says why",
    EX_TEMPFAIL: "nothing done, try again later (input not landed, or the ledger is in use)",
    130: "interrupted by SIGINT: the same command with the same --ledger finishes the job",
    143: "interrupted by SIGTERM: the same command with the same --ledger finishes the job",
}


def verdict(status: int) -> Verdict:
    """The outcome of beaconflow's exit status (a negative one: killed by that signal)."""
    if status == 0:
        return Verdict(Outcome.DONE, status, _REASONS[0])
    if status in FINAL_STATUSES:
        return Verdict(Outcome.FAIL, status, _REASONS[status])
    if status in RETRY_STATUSES:
        return Verdict(Outcome.RETRY, status, _REASONS[status])
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else -status
        return Verdict(Outcome.RETRY, status, f"killed by signal {name}")
    return Verdict(Outcome.RETRY, status, f"unexpected exit status {status}")


def run(command: Sequence[str]) -> Verdict:
    """Run ``command`` with this process's stdin, stdout and stderr; its verdict.

    SIGINT and SIGTERM are ignored here while it runs (the process group's copy reaches it).
    """
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            child = subprocess.Popen(
                list(command),
                restore_signals=True,
                # the child handles the signals itself (SIG_IGN would be inherited)
                preexec_fn=_default_signals,
            )
        except OSError as error:
            return Verdict(
                Outcome.FAIL, 2, f"{command[0]}: cannot be started: {error.strerror or error}"
            )
        return verdict(child.wait())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def status_for(result: Verdict, final_status: int = DEFAULT_FINAL_STATUS) -> int:
    """The wrapper's own exit status: 0, 75 or ``final_status``."""
    return {Outcome.DONE: 0, Outcome.RETRY: EX_TEMPFAIL, Outcome.FAIL: final_status}[result.outcome]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m beaconflow.pipelines.wrap [--final-status N] -- COMMAND...``."""
    parser = argparse.ArgumentParser(
        prog="python -m beaconflow.pipelines.wrap",
        description="Run a beaconflow command and exit 0 (done), 75 (retry) or 99 (fail, "
        "do not retry) for schedulers that retry on any failure (Airflow).",
    )
    parser.add_argument(
        "--final-status",
        type=int,
        default=DEFAULT_FINAL_STATUS,
        metavar="N",
        help="the status for 'failed, do not retry' (beaconflow's 2, 3, 4); default 99, "
        "BashOperator's skip_on_exit_code",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if not 1 <= args.final_status <= 255 or args.final_status == EX_TEMPFAIL:
        parser.error("--final-status must be 1..255 and not 75")
    result = run(command)
    status = status_for(result, args.final_status)
    action = {Outcome.DONE: "done", Outcome.RETRY: "retry", Outcome.FAIL: "fail, do not retry"}
    print(
        f"beaconflow-wrap: exit {result.status}: {result.reason}; "
        f"{action[result.outcome]} (exit {status})",
        file=sys.stderr,
        flush=True,
    )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
