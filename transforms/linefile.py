"""Line files a person asks for by name (dead letter, dry run): written in shards, merged after.

``WriteToText(num_shards=1)`` funnels every line through one key of a GroupByKey, so a large
dead letter or dry run would be held in memory whole. :class:`WriteLines` lets each bundle
write its own shard next to the target (``PATH.parts-SSSSS-of-NNNNN``) and
:func:`merge_parts` streams them into ``PATH`` once the pipeline is done, then deletes them.
Both go through Beam's FileSystems.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PCollection

#: Copy shards in pieces of this size: memory stays flat whatever their size.
_CHUNK = 1 << 20


def parts_prefix(path: str, part: str = "") -> str:
    """Where the shards of ``path`` are written (``part`` names one of several writers)."""
    return f"{path}.parts{part}"


class WriteLines(beam.PTransform[PCollection[str], PCollection[str]]):
    """Write text lines as shards of ``path``; call :func:`merge_parts` after the run.

    Several steps may write to one ``path`` with different ``part`` names: each writes
    where it runs (no Flatten that would hold one step's output for the other).
    """

    def __init__(self, path: str, part: str = "") -> None:
        super().__init__()
        self._path = path
        self._part = part

    def expand(self, lines: PCollection[str]) -> PCollection[str]:
        written: PCollection[str] = lines | beam.io.WriteToText(
            parts_prefix(self._path, self._part)
        )
        return written


def merge_parts(path: str) -> int:
    """Concatenate the shards of ``path`` into ``path`` (replacing it); return their number."""
    pattern = parts_prefix(path) + "*-*-of-*"
    shards = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    with FileSystems.create(path) as target:
        for shard in shards:
            with FileSystems.open(shard) as source:
                while chunk := source.read(_CHUNK):
                    target.write(chunk)
    if shards:
        FileSystems.delete(shards)
    return len(shards)
