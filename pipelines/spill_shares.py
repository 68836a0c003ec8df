"""The spill pass on every core: its input cut into consecutive shares, one process each.

One Python process spills about 50,000 lines a second (benchmarks/spill.py), parsing and
checking each record as the parse step does. :func:`plan_shares` cuts the input into
consecutive shares of about equal size, between files or, within a local uncompressed
JSON-lines file, on a line's start (``transforms/read.py``'s ``line_ranges``: the lines
keep their numbers). :func:`run_shares` spills each share in a forked process into a folder
of its own, then joins the shares' files in share order, appending each to the file of its
name: every file ends up the same, byte for byte, as one process would have written it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.queues
import os
import queue
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from beaconflow.delivery.stop import end_with_parent, ignore_stop_signals, signals_held
from beaconflow.model.errors import BeaconflowError, io_problem
from beaconflow.model.source import format_of
from beaconflow.model.spillfile import SpillError, SpillStopped
from beaconflow.transforms.read import LineRange, line_ranges

Share = tuple[tuple[int, LineRange | None], ...]
"""What one process of the pass reads, in order: (the input's index, a line range of it or
None for the whole file)."""

#: The least input worth a process of its own (about 0.3 s of work, 20,000 lines): less is
#: spilled sooner than a process is forked and its files joined.
MIN_SHARE_BYTES = 4 << 20
#: How often a process of the pass says how far it got, in seconds.
PROGRESS_INTERVAL = 0.5
#: How often the parent looks whether the run was stopped, in seconds.
_POLL = 0.2


@dataclass
class SharePart:
    """What a share of the pass wrote: records per day, undated, per key file; file sizes."""

    days: Counter[int] = field(default_factory=Counter)
    undated: int = 0
    keyed: Counter[int] = field(default_factory=Counter)
    records: int = 0
    #: bytes per file name
    sizes: dict[str, int] = field(default_factory=dict)

    def add(self, other: SharePart) -> None:
        """Count ``other``'s records and bytes with these."""
        self.days.update(other.days)
        self.undated += other.undated
        self.keyed.update(other.keyed)
        self.records += other.records
        for name, size in other.sizes.items():
            self.sizes[name] = self.sizes.get(name, 0) + size


SpillShare = Callable[[Share, str, Callable[[int], None]], SharePart]
"""Spills a share into a folder, saying the records read so far now and then."""


def plan_shares(
    files: Sequence[str], file_format: str | None, processes: int | None
) -> list[Share]:
    """The input cut into at most ``processes`` consecutive shares of about equal size.

    ``processes`` None: one per core, but none for less than :data:`MIN_SHARE_BYTES`. A cut
    falls between files, or within a local uncompressed JSON-lines file on a line's start;
    one share when the input is not all local (its size is unknown) or is a single file that
    cannot be cut (compressed, Parquet).
    """
    whole: list[Share] = [tuple((index, None) for index in range(len(files)))]
    if processes == 1 or not files or any(_remote(path) for path in files):
        return whole
    weights = [_weight(path, file_format) for path in files]
    total = sum(weights)
    if processes is None:
        processes = min(os.cpu_count() or 1, int(total // MIN_SHARE_BYTES))
    if processes <= 1 or not total:
        return whole
    target = total / processes
    pieces: list[tuple[float, int, LineRange | None]] = []  # (middle, input, range)
    begin = 0.0
    for index, (path, weight) in enumerate(zip(files, weights, strict=True)):
        end = begin + weight
        cuts = [round(k * target - begin) for k in range(1, processes) if begin < k * target < end]
        ranges = None
        if cuts and format_of(path, file_format) == "jsonl":
            ranges = line_ranges(path, cuts)
        if ranges is None or len(ranges) < 2:
            pieces.append(((begin + end) / 2, index, None))
        else:
            pieces.extend((begin + (part.start + part.stop) / 2, index, part) for part in ranges)
        begin = end
    shares: list[list[tuple[int, LineRange | None]]] = [[] for _ in range(processes)]
    for middle, index, part in pieces:
        shares[min(processes - 1, int(middle / target))].append((index, part))
    return [tuple(share) for share in shares if share]


def _remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _weight(path: str, file_format: str | None) -> float:
    """About how much work a file is: its size, more for what is compressed."""
    try:
        size = os.stat(path.removeprefix("file://")).st_size
    except OSError:
        return 0.0
    if format_of(path, file_format) == "parquet":
        return size * 3.0
    return size * 5.0 if path.endswith(".gz") else float(size)


def run_shares(
    shares: Sequence[Share],
    folder: str,
    spill_share: SpillShare,
    progress: Callable[[int], None],
    stopped: Callable[[], str | None] = lambda: None,
) -> SharePart:
    """Spill each share in a process of its own, then join their files into ``folder``.

    Forked, not spawned: a mapping holds functions pickle cannot carry, and a forked process
    needs no second import of Beam. ``progress`` gets the records all processes read so far.
    The files are not made durable here (the caller syncs them once, joined).

    The processes ignore Ctrl-C and SIGTERM (the run's process handles them). Once
    ``stopped()`` gives a reason (the run was stopped), they are killed and
    :class:`SpillStopped` is raised: what they wrote is scratch that the next pass removes.
    A run killed outright takes them with it (on Linux): none goes on writing, or holding
    the work directory's lock, which they inherit.
    """
    context = multiprocessing.get_context("fork")
    messages: multiprocessing.queues.Queue[tuple[str, int, Any]] = context.Queue()
    folders = [os.path.join(folder, f"part-{number}") for number in range(len(shares))]
    workers = [
        context.Process(
            target=_worker,
            args=(number, share, folders[number], spill_share, messages, os.getpid()),
            name=f"beaconflow-spill-{number}",
            daemon=True,
        )
        for number, share in enumerate(shares)
    ]
    parts: dict[int, SharePart] = {}
    read = [0] * len(shares)
    try:
        for part_folder in folders:
            os.makedirs(part_folder, mode=0o700, exist_ok=True)
        with signals_held():
            for worker in workers:
                worker.start()
        while len(parts) < len(shares):
            reason = stopped()
            if reason is not None:
                raise SpillStopped(reason, sum(read))
            try:
                kind, number, value = messages.get(timeout=_POLL)
            except queue.Empty:
                for number, worker in enumerate(workers):
                    if number not in parts and not worker.is_alive():
                        raise SpillError(
                            f"spill process {number} ended with status {worker.exitcode} "
                            "and no result"
                        ) from None
                continue
            if kind == "error":
                raise SpillError(str(value))
            if kind == "progress":
                read[number] = value
            else:
                parts[number] = value
                read[number] = value.records
            progress(sum(read))
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()  # it ignores SIGTERM
            worker.join()
        messages.close()
        messages.join_thread()
    total = SharePart()
    for number, part_folder in enumerate(folders):
        _join(part_folder, folder, parts[number].sizes, first=number == 0)
        total.add(parts[number])
    return total


def remove_parts(folder: str) -> None:
    """Remove what processes of an earlier pass left in ``folder`` (``part-<n>`` folders)."""
    for entry in os.scandir(folder):
        if entry.name.startswith("part-") and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)


def _worker(
    number: int,
    share: Share,
    folder: str,
    spill_share: SpillShare,
    messages: multiprocessing.queues.Queue[tuple[str, int, Any]],
    parent: int,
) -> None:
    """One process of the pass: its share spilled into ``folder``, its SharePart put last."""
    ignore_stop_signals()  # the parent's first stops the pass: it kills this process
    end_with_parent(parent)  # and if it is killed, this one ends too
    last = time.monotonic()

    def progress(records: int) -> None:
        nonlocal last
        moment = time.monotonic()
        if moment - last >= PROGRESS_INTERVAL:
            last = moment
            messages.put(("progress", number, records))

    try:
        part = spill_share(share, folder, progress)
    except BeaconflowError as error:
        messages.put(("error", number, str(error)))
        return
    except BaseException as error:  # a bug: its type and words, for the parent to raise
        messages.put(("error", number, f"spill process {number}: {type(error).__name__}: {error}"))
        return
    messages.put(("done", number, part))


def _join(part_folder: str, folder: str, sizes: Mapping[str, int], *, first: bool) -> None:
    """Move a share's files into ``folder``, appending each to the file of its name there."""
    for name in sizes:
        source = os.path.join(part_folder, name)
        target = os.path.join(folder, name)
        try:
            if first or not os.path.exists(target):
                os.replace(source, target)
                continue
            with open(source, "rb") as reading, open(target, "ab") as writing:
                shutil.copyfileobj(reading, writing, 1 << 20)
            os.remove(source)
        except OSError as error:
            raise SpillError(io_problem("spill file", target, error)) from None
    with contextlib.suppress(OSError):
        os.rmdir(part_folder)
