"""CPU per event of the parse step's work under a mapping: plain renames against the features.

The parse step does, per record: decode the line, apply the mapping, validate, build the
messages. This benchmark times exactly that (the model's functions, no Beam), in this process,
on the same N Segment-like track records under two mappings that give the same canonical
events:

- ``renames``: today's plain renames (one path per field, epoch seconds);
- ``features``: the mapping language's features (fallback lists, an epoch in milliseconds
  written as a string, a list index, a value map, scaling, a composite identity, properties
  gathered with an exclude list, a ``[[when]]`` case the records do not meet, and the
  built-ins' options: product event names, Kontagent-safe names, hashed user ids).

Each runs ``--repeat`` times, alternating; the medians and their ratio are printed (issue 14:
the features may cost at most 15% more CPU per event). ``--pipeline`` measures the same two
mappings in whole dry runs of the command instead (every step a backfill runs, but sending):
CPU per event of the process tree, as ``benchmarks.datapath`` measures it. Run::

    .venv/bin/python -m benchmarks.mapping_cpu --events 50000 --repeat 5
    .venv/bin/python -m benchmarks.mapping_cpu --pipeline --events 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from beaconflow.model.convert import convert_record
from beaconflow.model.mapping import RecordMapping, parse_mapping
from beaconflow.model.records import parse_line
from benchmarks import datapath

RENAMES = """
[fields]
event_id = "messageId"
time = "ts"
user_id = "uid"
event = "event"
value = "cents"
gender = "g"
"""

FEATURES = """
[fields]
user_id = ["userId", "anonymousId"]
event = "event"
gender = { path = "traits.gender", map = { female = "f", male = "m" } }
value = { path = "properties.revenue", scale = 100 }
name = "products.0.sku"
time = { path = "timestamp_ms", unit = "ms" }
event_id = { join = ["source", "messageId"] }

[properties]
from = ["properties"]
exclude = ["token"]

[options]
event_names = "custom"
kontagent_names = "safe"
kontagent_user_ids = "hash"

[[when]]
field = "type"
is = "identify"
[when.constants]
event = "user_information"
"""

NOW = 1_800_000_000


def _lines(n: int) -> list[str]:
    """Segment-like records that hold what both mappings read (so only the mapping differs)."""
    lines = []
    for i in range(n):
        seconds = 1_750_000_000 + i
        lines.append(
            json.dumps(
                {
                    "event": "level_up",
                    "type": "track",
                    "messageId": f"m-{i}",
                    "ts": seconds,
                    "timestamp_ms": str(seconds * 1000 + 123),
                    "userId": None if i % 3 == 0 else 10_000 + i,
                    "anonymousId": 10_000 + i,
                    "uid": 10_000 + i,
                    "cents": 1999,
                    "g": "f",
                    "source": "/game",
                    "traits": {"gender": "female"},
                    "properties": {"revenue": 19.99},
                    "products": [{"sku": "seeds"}],
                }
            )
        )
    return lines


def _run(lines: list[str], mapping: RecordMapping) -> float:
    """CPU seconds to parse, map, validate and build every line, as the parse step does."""
    matched: Counter[str] = Counter()  # as the parse step counts each rule's matches
    left_out: Counter[str] = Counter()
    started = time.process_time()
    for line in lines:
        convert_record(
            parse_line(line),
            mapping,
            now=NOW,
            source_name="",
            destinations=("kontagent", "kissmetrics"),
            matched=matched,
            left_out=left_out,
        )
    return time.process_time() - started


def _pipeline(lines: list[str], repeat: int) -> dict[str, float]:
    """Median CPU seconds of whole dry runs under each mapping."""
    times: dict[str, list[float]] = {"renames": [], "features": []}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        events = root / "events.jsonl"
        events.write_text("\n".join(lines) + "\n", encoding="utf-8")
        for name, text in (("renames", RENAMES), ("features", FEATURES)):
            (root / f"{name}.toml").write_text(text, encoding="utf-8")
        for n in range(repeat):
            for name in times:
                flags = ("--mapping", str(root / f"{name}.toml"))
                run = datapath.run_once(datapath.ROOT, events, root / f"{name}-{n}", flags)
                times[name].append(run["cpu_s"])
    return {name: statistics.median(runs) for name, runs in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pipeline", action="store_true", help="whole dry runs instead")
    args = parser.parse_args(argv)
    lines = _lines(args.events)
    if args.pipeline:
        medians = _pipeline(lines, args.repeat)
        for name, cpu in medians.items():
            print(f"{name:>9}: {1e6 * cpu / args.events:.1f} us/event of a whole dry run")
        print(f"features / renames: {medians['features'] / medians['renames']:.3f}")
        return 0
    renames, features = parse_mapping(RENAMES), parse_mapping(FEATURES)
    times: dict[str, list[float]] = {"renames": [], "features": []}
    for _ in range(args.repeat):
        times["renames"].append(_run(lines, renames))
        times["features"].append(_run(lines, features))
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    for name, cpu in medians.items():
        print(f"{name:>9}: {1e6 * cpu / args.events:.1f} us/event (median of {args.repeat})")
    print(f"features / renames: {medians['features'] / medians['renames']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
