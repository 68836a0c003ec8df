r"""Write the committed ``sample_data/`` directory: small Orchard Quest logs with known defects.

The files are built from :mod:`beaconflow.samples.gamelog` plus deliberate defects (exact duplicate
lines, records without ``event_id`` repeated with their keys reordered, malformed and invalid
lines, blank lines, lines repeated across files), a legacy-schema log with its TOML mapping,
and a ``README.md`` documenting each file's expected counts so tests can assert against them.
Everything is deterministic: running it twice gives byte-identical JSONL, gzip, TOML and README
files (and a Parquet file with identical content).

Run it from the repository root::

    python -m beaconflow.samples.make_samples --out sample_data

With ``--events N`` it writes a larger realistic input instead, for trying beaconflow at
scale: N events of the same generator, in time order, without deliberate defects, in one
JSONL file or one per UTC day (``--by-day``, for ``--input 'OUT/dt={date}/*.jsonl'``)::

    python -m beaconflow.samples.make_samples --events 1000000 --by-day --out big
    beaconflow --input 'big/dt={date}/*.jsonl' --since 2025-06-01 --until 2025-06-08 \
        --dry-run big/messages.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from beaconflow.samples.gamelog import (
    KINDS,
    dumps_record,
    generate_events,
    kind_of,
    write_jsonl,
    write_parquet,
)

#: File names inside the output directory.
JSONL_NAME = "game_events.jsonl"
DAY2_NAME = "game_events_day2.jsonl.gz"
PARQUET_NAME = "game_events.parquet"
LEGACY_NAME = "legacy/orchard_legacy.jsonl"
MAPPING_NAME = "legacy_mapping.toml"
README_NAME = "README.md"

#: The legacy action names and the canonical event names the mapping gives them.
LEGACY_EVENTS: dict[str, str] = {
    "join": "application_installed",
    "quit": "application_uninstalled",
    "buy": "revenue_tracking",
    "lvl": "level_up",
    "invite": "invite_sent",
}

LEGACY_MAPPING_TOML = """\
# Mapping of sample_data/legacy/orchard_legacy.jsonl (Orchard Quest's old event logger)
# onto beaconflow's canonical record.

# field renames: canonical field = source field (dotted paths reach into nested objects)
[fields]
event_id = "id"
time = "ts"
user_id = "player.uid"
event = "action"
value = "amount_cents"
level = "player.level"
recipients = "invitees"
tracking_tag = "tag"
# constant fields added to every record (canonical field = value)
[constants]
# event name renames: source name = canonical name
[events]
join = "application_installed"
quit = "application_uninstalled"
buy = "revenue_tracking"
lvl = "level_up"
invite = "invite_sent"
# which canonical events go to which destination; "*" is every event
[destinations.kontagent]
include = ["*"]
exclude = []
[destinations.kissmetrics]
include = ["*"]
exclude = ["page_request_and_user_location"]
"""


@dataclass
class FileCounts:
    """What a reader should find in one sample file."""

    name: str
    lines: int
    blank: int = 0
    invalid: int = 0
    duplicates: int = 0
    cross_file_duplicates: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def unique_valid(self) -> int:
        """Valid events counted once: lines minus invalid and both kinds of duplicates."""
        return self.lines - self.invalid - self.duplicates - self.cross_file_duplicates


def _utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def _reordered(record: dict[str, Any]) -> dict[str, Any]:
    return dict(reversed(list(record.items())))


def build_main_jsonl(out: Path) -> tuple[FileCounts, list[tuple[int, str]]]:
    """Write ``game_events.jsonl``; return its counts and its valid lines with an event_id.

    The lines come as (1-based line number, text), in file order.
    """
    records = list(generate_events(300, seed=7, start=_utc(2025, 6, 1), end=_utc(2025, 6, 5)))
    rng = random.Random(20250601)
    counts = FileCounts(JSONL_NAME, lines=0)
    lines = [""] * len(records)
    # anchor index -> [(what the line is, its text, index of the record it repeats)]
    extras: dict[int, list[tuple[str, str, int | None]]] = {}

    def after(anchor: int, what: str, text: str, source: int | None = None) -> None:
        extras.setdefault(anchor, []).append((what, text, source))

    # Five records without event_id (identity by content); the first three are repeated later
    # with their keys in reverse order.
    candidates = [i for i in range(20, 260) if kind_of(records[i]["event"]) in ("evt", "pgr")]
    idless = sorted(rng.sample(candidates, 5))
    for index in idless:
        del records[index]["event_id"]
    for index, record in enumerate(records):
        lines[index] = dumps_record(record)
    for index in idless[:3]:
        after(
            rng.randint(index + 1, index + 40),
            "duplicate: line {source} again with its keys in reverse order (no event_id, "
            "so a duplicate by content)",
            dumps_record(_reordered(records[index])),
            index,
        )
    # Five exact duplicate lines (same event_id).
    with_ids = [i for i in range(0, 280) if i not in idless and i not in (297, 298, 299)]
    for index in sorted(rng.sample(with_ids, 5)):
        event_id = records[index]["event_id"]
        after(
            rng.randint(index + 1, index + 20),
            f"duplicate: identical to line {{source}} (event_id {event_id})",
            lines[index],
            index,
        )
    # Three bad lines and two blank lines.
    after(
        40,
        "invalid: malformed JSON (truncated object)",
        '{"event_id": "oq-7-bad-0001", "time": "2025-06-02T10:15:00Z", '
        '"user_id": 100000042, "event": "level_up", "value": 3',
    )
    after(
        150,
        "invalid: missing user_id",
        dumps_record(
            {
                "event_id": "oq-7-bad-0002",
                "time": "2025-06-03T08:00:00Z",
                "event": "crop_harvested",
                "subtype1": "farming",
                "value": 5,
            }
        ),
    )
    after(
        240,
        "invalid: time before 2009-01-01",
        dumps_record(
            {
                "event_id": "oq-7-bad-0003",
                "time": "2008-12-31T23:59:59Z",
                "user_id": 100000003,
                "event": "application_installed",
            }
        ),
    )
    after(99, "blank (empty line)", "")
    after(199, "blank (two spaces)", "  ")

    physical: list[str] = []
    line_of: dict[int, int] = {}  # record index -> 1-based line number
    for index, line in enumerate(lines):
        physical.append(line)
        line_of[index] = len(physical)
        if index in idless:
            counts.notes.append(f"line {len(physical)}: no event_id")
        for what, text, source in extras.get(index, []):
            physical.append(text)
            if what.startswith("blank"):
                counts.blank += 1
            elif what.startswith("invalid"):
                counts.invalid += 1
            else:
                counts.duplicates += 1
            described = what.format(source=line_of[source]) if source is not None else what
            counts.notes.append(f"line {len(physical)}: {described}")
    counts.lines = len(physical) - counts.blank
    counts.kinds = Counter(kind_of(record["event"]) for record in records)
    _write_text(out / JSONL_NAME, "".join(text + "\n" for text in physical))
    return counts, [(line_of[i], lines[i]) for i in range(len(records)) if i not in idless]


def build_day2(out: Path, first_file_lines: list[tuple[int, str]]) -> FileCounts:
    """Write ``game_events_day2.jsonl.gz``: the tail of the first file again, then 100 events."""
    overlap = first_file_lines[-3:]
    records = [json.loads(line) for _, line in overlap]
    records.extend(
        generate_events(
            100, seed=8, start=_utc(2025, 6, 5), end=_utc(2025, 6, 8), first_uid=100200001
        )
    )
    write_jsonl(records, out / DAY2_NAME)
    counts = FileCounts(DAY2_NAME, lines=len(records), cross_file_duplicates=len(overlap))
    counts.kinds = Counter(kind_of(record["event"]) for record in records[len(overlap) :])
    for number, (first_number, line) in enumerate(overlap, start=1):
        event_id = json.loads(line)["event_id"]
        counts.notes.append(
            f"line {number}: duplicate of an earlier file: identical to line {first_number} of "
            f"{JSONL_NAME} (event_id {event_id}; the previous log's tail repeated at rotation)"
        )
    return counts


def build_parquet(out: Path) -> FileCounts:
    """Write ``game_events.parquet``: 150 events of 2025-06-08..11 covering every kind."""
    records = list(
        generate_events(
            150, seed=9, start=_utc(2025, 6, 8), end=_utc(2025, 6, 11), first_uid=100400001
        )
    )
    write_parquet(records, out / PARQUET_NAME)
    counts = FileCounts(PARQUET_NAME, lines=len(records))
    counts.kinds = Counter(kind_of(record["event"]) for record in records)
    return counts


def legacy_records(n: int = 60, seed: int = 11) -> list[dict[str, Any]]:
    """The legacy logger's records: ``id``, float epoch ``ts``, nested ``player``, ``action``."""
    rng = random.Random(seed)
    low = _utc(2025, 5, 20).timestamp()
    width = 5 * 86400.0
    active: dict[int, int] = {}  # uid -> level
    next_uid = 100900001
    next_friend = 100901001  # invited friends who do not play (yet)
    records: list[dict[str, Any]] = []
    for index in range(n):
        ts = round(low + width * (index + rng.random()) / n, 3)
        record: dict[str, Any] = {"id": f"legacy-{index + 1:05d}", "ts": ts}
        roll = rng.random()
        if not active or (len(active) < 12 and roll < 0.2):
            uid = next_uid
            next_uid += 1
            active[uid] = 1
            record.update(player={"uid": uid}, action="join")
            records.append(record)
            continue
        uid = rng.choice(sorted(active))
        if roll < 0.5:
            active[uid] += 1
            record.update(player={"uid": uid, "level": active[uid]}, action="lvl")
        elif roll < 0.72:
            cents = rng.choice((99, 299, 499, 999))
            record.update(player={"uid": uid}, action="buy", amount_cents=cents)
        elif roll < 0.92 or len(active) <= 3:
            invitees = [next_friend + k for k in range(rng.randint(1, 3))]
            next_friend += len(invitees)
            record.update(
                player={"uid": uid},
                action="invite",
                invitees=invitees,
                tag=format(rng.getrandbits(64), "016x"),
            )
        else:
            del active[uid]
            record.update(player={"uid": uid}, action="quit")
        records.append(record)
    actions = {record["action"] for record in records}
    if actions != set(LEGACY_EVENTS):
        raise RuntimeError(f"legacy sample lacks actions {set(LEGACY_EVENTS) - actions}")
    return records


def build_legacy(out: Path) -> FileCounts:
    """Write the legacy log and its mapping TOML."""
    records = legacy_records()
    (out / LEGACY_NAME).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(records, out / LEGACY_NAME)
    _write_text(out / MAPPING_NAME, LEGACY_MAPPING_TOML)
    counts = FileCounts(LEGACY_NAME, lines=len(records))
    counts.kinds = Counter(kind_of(LEGACY_EVENTS[record["action"]]) for record in records)
    actions = Counter(record["action"] for record in records)
    counts.notes.append(
        "legacy actions: " + ", ".join(f"{name}={actions[name]}" for name in LEGACY_EVENTS)
    )
    return counts


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(text)


def render_readme(files: Sequence[FileCounts]) -> str:
    """The README documenting the files, their defects and their expected counts."""
    header = (
        "| file | lines read (non-blank) | blank lines | invalid | duplicates in file "
        "| duplicates of earlier files | unique valid events |"
    )
    rows = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for counts in files:
        rows.append(
            f"| `{counts.name}` | {counts.lines} | {counts.blank} | {counts.invalid} "
            f"| {counts.duplicates} | {counts.cross_file_duplicates} | {counts.unique_valid} |"
        )
    kind_header = "| kind | " + " | ".join(f"`{counts.name}`" for counts in files) + " |"
    kind_rows = [kind_header, "|---|" + "---:|" * len(files)]
    for kind in KINDS:
        cells = " | ".join(str(counts.kinds.get(kind, 0)) for counts in files)
        kind_rows.append(f"| {kind} | {cells} |")
    defects = []
    for counts in files:
        if counts.notes:
            defects.append(f"`{counts.name}`:\n")
            defects.extend(f"- {note}" for note in counts.notes)
            defects.append("")
    canonical = [c for c in files if c.name != LEGACY_NAME]
    total = sum(c.unique_valid for c in canonical)
    return README_TEMPLATE.format(
        counts_table="\n".join(rows),
        kinds_table="\n".join(kind_rows),
        defects="\n".join(defects).rstrip() + "\n",
        total=total,
        total_lines=sum(c.lines for c in canonical),
    )


README_TEMPLATE = """\
# sample_data

Made-up event logs of *Orchard Quest*, a farming game, for beaconflow's tests, examples and
benchmarks. Generated by `python -m beaconflow.samples.make_samples --out sample_data`
(deterministic; do not edit by hand) from `beaconflow.samples.gamelog.generate_events` plus
deliberate defects.

## Files

- `game_events.jsonl`: 300 events of 2025-06-01..2025-06-04 (seed 7, user ids from
  100000001), one canonical JSON record a line, plus the defects listed below.
- `game_events_day2.jsonl.gz`: gzip-compressed JSONL; the last 3 event lines of
  `game_events.jsonl` again (identical bytes: the log tail repeated at rotation), then 100
  events of 2025-06-05..2025-06-07 (seed 8, user ids from 100200001).
- `game_events.parquet`: 150 events of 2025-06-08..2025-06-10 (seed 9, user ids from
  100400001), every Kontagent message type and `alias`. Columns follow
  `beaconflow.samples.gamelog.parquet_schema()`: `time` is an ISO-8601 UTC string ending in `Z`,
  `user_id` a string, `recipients` a `list<string>`, scalar fields typed (`installed` bool;
  `value`, `level`, `birth_year`, `friend_count` int64; the rest strings), absent fields null,
  and **`goal_counts` and `properties` are JSON-encoded string columns** that a reader decodes
  with `json.loads`.
- `legacy/orchard_legacy.jsonl`: 60 events of 2025-05-20..2025-05-24 from the old logger, in a
  non-canonical schema: `id`, `ts` (epoch seconds as a float), `player` (`{{"uid": int}}`, plus
  `"level"` on `lvl`), `action` (`join`, `quit`, `buy`, `lvl`, `invite`), `amount_cents` (on
  `buy`), `invitees` and `tag` (on `invite`).
- `legacy_mapping.toml`: maps the legacy log onto canonical records (`[fields]`: canonical
  field = source path; `[constants]`; `[events]`: source name = canonical name;
  `[destinations.*]` include/exclude lists of canonical event names).

## Canonical records

`event_id` (optional; equal ids are one event), `time` (ISO-8601 with `Z` or an offset, or
epoch seconds as int or float; the samples mix all four), `user_id` (numeric, as an int or a
digit string), `event` (a Ruby library name, a three-letter Kontagent code, `alias`, or a
custom name such as `level_up`, which becomes an `evt`; `custom_event`, `custom_action` and
`evt` carry the custom name in `name`), and the optional fields `recipients`, `tracking_tag`,
`short_tracking_tag`, `channel`, `installed`, `subtype1`..`subtype3`, `value`, `level`,
`birth_year`, `gender`, `city`, `country`, `state`, `postal_code`, `friend_count`,
`goal_counts`, `ip`, `page_address`, `alias` and `properties`. The samples include values older
libraries dropped wrongly: `installed: false`, `value: 0`, custom events without `level`, and
texts with spaces, unicode, `&`, `=`, `%`, `+`, `,` and `#`.

## Expected counts

Definitions: *lines read* counts non-blank lines (Parquet: rows); a line is *blank* when it is
empty or only whitespace, and blank lines are not events. *Invalid* lines are malformed JSON or
records breaking the canonical rules. A *duplicate* is a valid record whose identity was
already seen: its `event_id`, or, for a record without `event_id`, its whole content
(independent of key order). *Duplicates of earlier files* assumes the files are read in the
order of this table. For the legacy file the counts apply after mapping.

{counts_table}

Together the three canonical files hold {total_lines} non-blank lines/rows and {total} unique
valid events.

Unique valid events per kind (`kind` is the Kontagent message type, or `alias`; the legacy
column is after mapping):

{kinds_table}

## Deliberate defects and notable lines

Line numbers are 1-based physical lines (blank lines included).

{defects}"""


def build_samples(out: Path) -> list[FileCounts]:
    """Write every sample file and the README into ``out``; return the documented counts."""
    out.mkdir(parents=True, exist_ok=True)
    first, first_lines = build_main_jsonl(out)
    files = [first, build_day2(out, first_lines), build_parquet(out), build_legacy(out)]
    _write_text(out / README_NAME, render_readme(files))
    return files


#: Where ``--events`` writes without ``--out``.
DEFAULT_EVENTS_OUT = Path("beaconflow-samples")
#: ``--events``' default window, ``[since, until)``: the generator's week.
DEFAULT_SINCE = "2025-06-01"
DEFAULT_UNTIL = "2025-06-08"


def write_events(
    out: Path,
    events: int,
    *,
    seed: int = 7,
    since: datetime | None = None,
    until: datetime | None = None,
    by_day: bool = False,
    gzip: bool = False,
) -> list[Path]:
    """Write ``events`` generated events, in time order, as JSON lines; the files written.

    One file ``OUT/events.jsonl`` or, ``by_day``, one per UTC day of the events' times,
    ``OUT/dt=YYYY-MM-DD/events.jsonl`` (read with ``--input 'OUT/dt={date}/*.jsonl'``);
    ``.jsonl.gz`` with ``gzip``. Streams: memory stays flat whatever ``events``. ``since``
    and ``until`` (UTC, ``[since, until)``) default to 2025-06-01 and 2025-06-08.
    """
    from beaconflow.samples.gamelog import iso_utc

    records = generate_events(
        events,
        seed=seed,
        start=since or _utc(2025, 6, 1),
        end=until or _utc(2025, 6, 8),
    )
    name = "events.jsonl.gz" if gzip else "events.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    if not by_day:
        write_jsonl(records, out / name)
        return [out / name]
    written: list[Path] = []
    # the times never decrease, so each day is one run of consecutive records
    for day, group in itertools.groupby(records, key=lambda record: iso_utc(record["time"])[:10]):
        path = out / f"dt={day}" / name
        path.parent.mkdir(exist_ok=True)
        write_jsonl(group, path)
        written.append(path)
    return written


def _date(text: str) -> datetime:
    try:
        day = datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None
    return day.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: ``python -m beaconflow.samples.make_samples --out sample_data``.

    With ``--events N``: a larger input of N events instead (:func:`write_events`).
    """
    parser = argparse.ArgumentParser(
        prog="python -m beaconflow.samples.make_samples",
        description="Write beaconflow's sample_data/ directory (deterministic); with --events N, "
        "a larger realistic input of N generated events instead.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"output directory (default: sample_data; with --events: {DEFAULT_EVENTS_OUT})",
    )
    larger = parser.add_argument_group("a larger input (--events)")
    larger.add_argument(
        "--events",
        type=int,
        metavar="N",
        help="write N events of Orchard Quest's generator, in time order, as JSON lines "
        "(OUT/events.jsonl), instead of sample_data/",
    )
    larger.add_argument(
        "--by-day",
        action="store_true",
        help="one file per UTC day, OUT/dt=YYYY-MM-DD/events.jsonl, for --input "
        "'OUT/dt={date}/*.jsonl' with --date or --since/--until",
    )
    larger.add_argument("--gzip", action="store_true", help="write .jsonl.gz files")
    larger.add_argument(
        "--since",
        type=_date,
        default=_date(DEFAULT_SINCE),
        metavar="DAY",
        help=f"first UTC day of the events (default: {DEFAULT_SINCE})",
    )
    larger.add_argument(
        "--until",
        type=_date,
        default=_date(DEFAULT_UNTIL),
        metavar="DAY",
        help=f"the day after the last (default: {DEFAULT_UNTIL}; not after today)",
    )
    larger.add_argument(
        "--seed", type=int, default=7, help="the generator's seed: same seed, same files"
    )
    args = parser.parse_args(argv)
    if args.events is None:
        if args.by_day or args.gzip:
            parser.error("--by-day and --gzip go with --events")
        for counts in build_samples(args.out or Path("sample_data")):
            print(
                f"{counts.name}: {counts.lines} lines, {counts.invalid} invalid, "
                f"{counts.duplicates + counts.cross_file_duplicates} duplicates, "
                f"{counts.unique_valid} unique valid events",
                file=sys.stderr,
            )
        return 0
    if args.events < 1:
        parser.error(f"--events must be 1 or more, got {args.events}")
    out = args.out or DEFAULT_EVENTS_OUT
    try:
        files = write_events(
            out,
            args.events,
            seed=args.seed,
            since=args.since,
            until=args.until,
            by_day=args.by_day,
            gzip=args.gzip,
        )
    except ValueError as error:  # the window: empty, before 2009, in the future
        parser.error(str(error))
    except OSError as error:
        parser.error(f"{out}: cannot be written: {error.strerror or error}")
    suffix = ".jsonl.gz" if args.gzip else ".jsonl"
    pattern = f"{out}/dt={{date}}/*{suffix}" if args.by_day else f"{out}/events{suffix}"
    window = f" --since {args.since:%Y-%m-%d} --until {args.until:%Y-%m-%d}" if args.by_day else ""
    print(
        f"wrote {args.events} events to {len(files)} file(s) in {out}; try: beaconflow "
        f"--input '{pattern}'{window} --dry-run {out}/messages.jsonl",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
