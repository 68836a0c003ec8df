"""``beaconflow ledger verify|repair DIR``: check a delivery ledger, or salvage a damaged one.

``beaconflow ledger verify DIR`` reads every file of the ledger and prints one line per
damaged file (a sealed shard truncated, zero-filled or changed; a shard its manifest lists
that is missing; an unreadable manifest), one per journal with torn lines (tolerated), and
a last line with the verdict. ``beaconflow ledger repair DIR`` copies every intact entry of
the damaged shards into a new sealed shard, renames the damaged files aside
(``<name>.damaged-<time>``, never deleted), takes missing shards out of their manifests and
says how many entries were lost: the messages the next run sends again
(:mod:`beaconflow.delivery.ledger_check`).

Exit status: verify 0 intact, 1 damaged; repair 0 repaired (or nothing to repair), 1 still
damaged afterwards; both 2 for a usage error (no such ledger, a newer ledger format, an
I/O error naming its path: ``ledger file not readable: DIR/shard-...: Is a directory``,
``ledger not writable: DIR: Read-only file system (setting shard-... aside)``) or a standard
output that cannot be written.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from beaconflow.delivery.ledger import is_local, local_path
from beaconflow.delivery.ledger_check import inspect, repair, verify_lines
from beaconflow.model.errors import BeaconflowError, io_problem
from beaconflow.pipelines.console import say, say_all


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beaconflow ledger",
        description="Check a delivery ledger, or salvage the intact entries of a damaged one.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="verify|repair")
    verify = commands.add_parser(
        "verify", help="check every shard and manifest (exit 0 intact, 1 damaged)"
    )
    verify.add_argument("directory", metavar="DIR", help="the --ledger directory")
    mend = commands.add_parser(
        "repair",
        help="salvage every intact entry of the damaged shards, set the damaged files aside "
        "and say how many entries were lost",
    )
    mend.add_argument("directory", metavar="DIR", help="the --ledger directory")
    return parser


def main(argv: Sequence[str]) -> int:
    """``beaconflow ledger ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    directory = args.directory
    if is_local(directory) and not os.path.isdir(local_path(directory)):
        say(f"beaconflow: error: no ledger directory at {directory}", error=True)
        return 2
    try:
        if args.command == "verify":
            state = inspect(directory)
            return say_all(verify_lines(state)) or (1 if state.damaged else 0)
        lines, _ = repair(directory)
        printed = say_all(lines)
        after = inspect(directory)
    except BeaconflowError as error:  # damaged beyond reading, unreadable, not writable
        say(f"beaconflow: error: {error}", error=True)
        return 2
    except OSError as error:  # what the ledger's own errors do not cover: still named
        problem = io_problem("ledger", error.filename or directory, error)
        say(f"beaconflow: error: {problem}", error=True)
        return 2
    if printed:
        return printed
    if after.damaged:
        return say_all(verify_lines(after)) or 1
    return 0
