"""Batch deduplication by an explicit string key, keeping one element and counting the rest.

Beam's ``Deduplicate`` declares a processing-time timer, which forces the single-threaded
BundleBasedDirectRunner; a ``GroupByKey`` on an explicit key parallelises on every runner
and tells how many copies each key had. (A lifted ``CombinePerKey`` was measured slower here:
nearly every key is unique, so pre-combining only adds work.)

Values cross the grouping as the bytes of their deterministic coder
(:mod:`beaconflow.transforms.coders`) and are decoded once after it: Beam's in-memory runner
holds grouped values as decoded Python objects, and a message or an event as objects costs
several times its encoded bytes (benchmarks/datapath.py measures it). The copy kept is the
one with the smallest ``order`` value (then the smallest encoding), so which copy survives
does not depend on bundle order.

With a delivery ledger, the ledger's keys join the same grouping as the marker
:data:`DELIVERED_BEFORE`: a key that has it is not sent again but counted as skipped, in the
same shuffle as the dedup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import DoOutputsTuple, PCollection, TaggedOutput

#: The tag of the output holding (kept, number of dropped copies), for keys with copies.
DUPLICATES = "duplicates"
#: The tag of the output holding (kept, copies) for keys the ledger says were delivered.
SKIPPED = "skipped"
#: Among a key's values, stands for "the ledger has this key" (no value encodes to nothing).
DELIVERED_BEFORE = b""


def encode_keyed(item: tuple[str, Any], coder: beam.coders.Coder) -> tuple[str, bytes]:
    """A (key, value) as the dedup groups it: (key, the value's encoding by ``coder``)."""
    return item[0], coder.encode(item[1])


class _KeepFirst:
    """One key's encoded values -> the kept value, decoded, or a duplicates/skipped record."""

    def __init__(self, coder: beam.coders.Coder, order: Callable[[Any], Any] | None) -> None:
        self._decode = coder.decode
        self._order = order

    def __call__(self, item: tuple[str, Iterable[bytes]]) -> Iterator[Any]:
        key, grouped = item
        values = list(grouped)  # a key has a few values: the runner may give them only once
        encoded = [value for value in values if value != DELIVERED_BEFORE]
        if not encoded:  # a ledger entry with no message in this run
            return
        delivered_before = len(encoded) < len(values)
        copies = len(encoded)
        if copies == 1:
            kept = self._decode(encoded[0])
        elif self._order is None:
            kept = self._decode(min(encoded))
        else:
            order = self._order
            kept = min(
                ((self._decode(value), value) for value in encoded),
                key=lambda pair: (order(pair[0]), pair[1]),
            )[0]
        if delivered_before:
            yield TaggedOutput(SKIPPED, (kept, copies))
            return
        yield (key, kept)
        if copies > 1:
            yield TaggedOutput(DUPLICATES, (kept, copies - 1))


class DedupByKey(beam.PTransform[PCollection[Any], DoOutputsTuple]):
    """Keep one value per key of a ``(key, value)`` PCollection.

    ``coder``: the values' deterministic coder. ``order``: what makes a copy the one kept
    (smallest first; None: the smallest encoding). Outputs ``unique`` (main, ``(key, kept
    value)``), ``duplicates`` (``(kept, copies dropped)``) and ``skipped``. ``delivered``:
    optional PCollection of keys already delivered (the ledger); values with such a key go to
    ``skipped`` as (kept, copies) instead. ``encoded``: the values are the coder's bytes
    already (the parse processes of :mod:`beaconflow.transforms.parse_pool` encode them).
    """

    def __init__(
        self,
        coder: beam.coders.Coder,
        order: Callable[[Any], Any] | None = None,
        delivered: PCollection[str] | None = None,
        *,
        encoded: bool = False,
    ) -> None:
        super().__init__()
        self._encoded = encoded
        self._coder = coder
        self._order = order
        self._delivered = delivered

    def expand(self, keyed: PCollection[Any]) -> DoOutputsTuple:
        encoded = keyed
        if not self._encoded:
            encoded = keyed | "Encode" >> beam.Map(encode_keyed, self._coder).with_output_types(
                tuple[str, bytes]
            )
        if self._delivered is not None:
            marks = self._delivered | "MarkDelivered" >> beam.Map(
                lambda k: (k, DELIVERED_BEFORE)
            ).with_output_types(tuple[str, bytes])
            encoded = (encoded, marks) | "WithLedger" >> beam.Flatten()
        # the kept values are typed again: Beam encodes them with their coder, not pickle
        value_type = self._coder.to_type_hint()
        unique_type: Any = tuple.__class_getitem__((str, value_type))
        copies_type: Any = tuple.__class_getitem__((value_type, int))
        outputs: DoOutputsTuple = (
            encoded
            | "Group" >> beam.GroupByKey()
            | "KeepFirst"
            >> beam.FlatMap(_KeepFirst(self._coder, self._order))
            .with_output_types(unique_type, duplicates=copies_type, skipped=copies_type)
            .with_outputs(DUPLICATES, SKIPPED, main="unique")
        )
        return outputs
