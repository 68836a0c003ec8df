"""Line files a person asks for by name (dead letter, dry run): written as the run goes.

``WriteToText(num_shards=1)`` funnels every line through one key of a GroupByKey, so a large
dead letter or dry run would be held in memory whole; and a sink that fails fails the whole
pipeline, after or in the middle of sending. :class:`WriteLines` lets each bundle write its
own shard, as its lines arrive, in the target's private folder ``DIR/.NAME.beaconflow/``
(:mod:`~beaconflow.transforms.staging`: finding the shards again never lists the target's
own folder, however crowded): ``NAME.tmp<part>-<id>`` while the bundle runs, renamed to
``NAME.parts<part>-<id>`` when it ends. :func:`merge_parts` streams the shards into
``DIR/NAME`` once the pipeline is done, then deletes them and the folder, once empty. Both go
through Beam's FileSystems.

The files hold users' records: on a local filesystem every shard and the merged file are
created readable and writable by their owner only (mode 0600, whatever the umask), in a
private folder only its owner may enter (0700).

A shard that cannot be written (a full disk, a read-only mount) does not fail the pipeline: the
run's :class:`~beaconflow.delivery.stop.RunStop` trips with the reason, so no new request
starts, and the step's output says why (a ``run_stopped`` tally), so the report does too. On a
runner that retries a failed bundle, the retry writes a shard of its own; the shard of a bundle
that failed before its end stays a ``.tmp`` file and is never merged.

With ``render``, the step takes any element and makes its line and its tallies itself (a
dead-letter entry and its reason, a dry-run message and its counts): one step where a
format step, the write and a counting step would be three, each with its cost in every run
(Beam builds, translates and starts each step; a 311-event run has some fifty).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from beaconflow.delivery.stop import run_stop
from beaconflow.model.errors import io_problem
from beaconflow.report.counts import STOPPED, Tally, TallyKey, tally
from beaconflow.transforms.staging import (
    Listed,
    make_staging,
    matching,
    old_pieces,
    remove_staging,
    staged,
    temporary,
)

#: Copy shards in pieces of this size: memory stays flat whatever their size.
_CHUNK = 1 << 20


def parts_prefix(path: str, part: str = "") -> str:
    """Where the finished shards of ``path`` are written (``part`` names one of several writers).

    In its private folder: ``DIR/.NAME.beaconflow/NAME.parts<part>``.
    """
    return f"{staged(path)}.parts{part}"


def tmp_prefix(path: str) -> str:
    """What the names of the unfinished pieces of ``path`` start with, in its private folder."""
    return f"{staged(path)}.tmp"


def create_private(path: str) -> IO[bytes]:
    """A new file at ``path`` for writing; local files readable by their owner only."""
    if "://" in path:  # gs://, s3://: the store's own access control applies
        handle: IO[bytes] = FileSystems.create(path)
        return handle
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an earlier file at the path keeps its mode otherwise
    return os.fdopen(descriptor, "wb")


def create_staged(output: str, path: str) -> IO[bytes]:
    """:func:`create_private` for ``path`` in the private folder of ``output``, made if missing."""
    try:
        return create_private(path)
    except FileNotFoundError:  # no private folder yet, or not any more
        make_staging(output)
        return create_private(path)


#: What ``render`` makes of an element: its line, and its tallies.
Rendered = tuple[str, Iterable[Tally]]


class _WriteShard(beam.DoFn):
    """Writes each bundle's lines to a shard of its own; see the module docstring."""

    def __init__(
        self,
        path: str,
        part: str,
        what: str,
        shown: str,
        run_id: str,
        render: Callable[[Any], Rendered] | None = None,
    ) -> None:
        super().__init__()
        self._path = path
        self._shown = shown
        self._part = part
        self._what = what
        self._run_id = run_id
        self._render = render

    def start_bundle(self) -> None:
        self._handle: IO[bytes] | None = None
        self._name = ""
        self._failed: str | None = None
        self._tallies: Counter[TallyKey] = Counter()

    def process(self, element: Any) -> None:
        if self._render is None:
            line = element
        else:
            # counted whether or not the line can be written: what the run met
            line, tallies = self._render(element)
            for key, n in tallies:
                self._tallies[key] += n
        if self._failed is not None:
            return
        try:
            if self._handle is None:
                self._name = f"{self._part}-{uuid.uuid4().hex[:16]}"
                unfinished = tmp_prefix(self._path) + self._name
                self._handle = create_staged(self._path, unfinished)
            self._handle.write(line.encode("utf-8") + b"\n")
        except Exception as error:  # OSError locally, the filesystem's own error elsewhere
            self._fail(error)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
                if self._failed is None:
                    unfinished = tmp_prefix(self._path) + self._name
                    finished = parts_prefix(self._path) + self._name
                    FileSystems.rename([unfinished], [finished])
            except Exception as error:
                self._fail(error)
        counted, self._tallies = self._tallies, Counter()
        for key, n in counted.items():
            yield GlobalWindows.windowed_value((key, n))
        if self._failed is not None:
            yield GlobalWindows.windowed_value(tally(STOPPED, detail=self._failed))

    def _fail(self, error: BaseException) -> None:
        self._failed = io_problem(self._what, self._shown, error)
        run_stop(self._run_id).trip(self._failed)
        handle, self._handle = self._handle, None
        if handle is not None:
            # it failed already: the shard stays a .tmp file, never merged
            with contextlib.suppress(Exception):
                handle.close()


class WriteLines(beam.PTransform[PCollection[Any], PCollection[Tally]]):
    """Write text lines as shards of ``path``; call :func:`merge_parts` after the run.

    Several steps may write to one ``path`` with different ``part`` names: each writes
    where it runs (no Flatten that would hold one step's output for the other). ``what``
    names the file in a failure's reason ("dead letter"); ``run_id`` names the run whose
    stop a failure trips, ``shown`` the path a failure's reason names (default ``path``). The
    output holds a ``run_stopped`` tally per bundle that failed. ``render``: the elements are
    not lines: it gives each one's line and tallies, which the output holds too (summed per
    bundle).
    """

    def __init__(
        self,
        path: str,
        part: str = "",
        *,
        what: str = "output",
        shown: str | None = None,
        run_id: str = "",
        render: Callable[[Any], Rendered] | None = None,
    ) -> None:
        super().__init__()
        self._path = path
        self._shown = path if shown is None else shown
        self._part = part
        self._what = what
        self._run_id = run_id
        self._render = render

    def expand(self, elements: PCollection[Any]) -> PCollection[Tally]:
        written: PCollection[Tally] = elements | beam.ParDo(
            _WriteShard(self._path, self._part, self._what, self._shown, self._run_id, self._render)
        )
        return written


def merge_parts(path: str) -> int:
    """Concatenate the shards of ``path`` into ``path``; return their number.

    The shards are merged into a temporary file that then replaces ``path``: when the merge
    fails (a full disk), ``path`` is as it was and the shards are kept. Once they are merged
    and deleted, the private folder is removed if nothing else is in it.
    """
    shards = matching(parts_prefix(path) + "*")
    merged = temporary(path, "merge")
    try:
        with create_staged(path, merged) as target:
            for shard in shards:
                with FileSystems.open(shard) as source:
                    while chunk := source.read(_CHUNK):
                        target.write(chunk)
    except BaseException:
        with contextlib.suppress(Exception):
            FileSystems.delete([merged])
        raise
    FileSystems.rename([merged], [path])  # replaces an earlier file at once
    if shards:
        FileSystems.delete(shards)
    remove_staging(path)
    return len(shards)


def salvage_leftovers(path: str, listed: Listed | None = None) -> int:
    """Keep what an earlier, killed run of ``path`` wrote: its pieces become one of this run's.

    Every whole line of the earlier run's shards (finished or not; a torn last line is not a
    whole line) is copied into one finished shard of ``path``, which :func:`merge_parts`
    then merges with this run's lines; the pieces are deleted only once copied. Returns the
    number of lines kept. For the dead letter: its entries are records nothing else holds.
    The pieces are those in the private folder, and those a release before it left beside
    ``path`` (:func:`~beaconflow.transforms.staging.old_pieces`; ``listed``: the folders
    listed already).
    """
    leftovers = _leftovers(path, listed)
    if not leftovers:
        return 0
    kept = 0
    salvaging = temporary(path, f"salvage-{uuid.uuid4().hex[:16]}")
    with create_staged(path, salvaging) as target:
        for leftover in leftovers:
            with FileSystems.open(leftover) as source:
                tail = b""
                while chunk := source.read(_CHUNK):
                    lines = (tail + chunk).split(b"\n")
                    tail = lines.pop()  # not ended yet: the next chunk, or a torn line
                    for line in lines:
                        if line.strip():
                            target.write(line + b"\n")
                            kept += 1
    FileSystems.rename([salvaging], [parts_prefix(path) + f"-salvaged-{uuid.uuid4().hex[:16]}"])
    FileSystems.delete(leftovers)
    return kept


def remove_leftovers(path: str, listed: Listed | None = None) -> int:
    """Delete the pieces an earlier run of ``path`` left behind (it was killed or stopped).

    Left in place they would be merged into this run's file. The pieces are those in the
    private folder, and those a release before it left beside ``path`` (``listed``: the
    folders listed already). Returns how many there were.
    """
    leftovers = _leftovers(path, listed)
    if leftovers:
        FileSystems.delete(leftovers)
    return len(leftovers)


def _leftovers(path: str, listed: Listed | None) -> list[str]:
    staged_pieces = matching(parts_prefix(path) + "*") + matching(tmp_prefix(path) + "*")
    return staged_pieces + old_pieces(path, listed)
