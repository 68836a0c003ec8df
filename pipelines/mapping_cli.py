"""``beaconflow mapping show|explain``: read a mapping, and try it on a file without sending.

``beaconflow mapping show segment`` prints a built-in mapping's TOML to copy and adapt.
``beaconflow mapping explain --mapping M --input F [--limit N]`` prints, for the first N
records of F, which ``[[when]]`` case applied, the canonical record and the messages it
becomes (their URLs with the keys masked, as a dry run writes them) or why it does not, and
then how many of those records each rule of the mapping found a value in, and the
properties it left out. Nothing is sent and nothing is written.

Exit status: 0 explained (whatever the records were), 2 a usage error (an unreadable mapping
or input, naming it) or a standard output that cannot be written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from beaconflow.delivery.redact import Redactor
from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.builtin import BUILTINS, builtin_text
from beaconflow.model.convert import convert_record
from beaconflow.model.field_rules import FieldRule, resolve
from beaconflow.model.mapping import MappingError, RecordMapping
from beaconflow.model.message import DESTINATIONS, Endpoint
from beaconflow.model.records import RecordError, parse_line, plain
from beaconflow.model.render import render_url
from beaconflow.model.source import FORMATS
from beaconflow.pipelines.console import say, say_all
from beaconflow.pipelines.options import UsageError, read_mapping
from beaconflow.transforms.read import InputError, expand_inputs, read_file

#: What explain renders URLs with: keys a dry run without keys uses, masked when shown.
_ENDPOINTS = {
    "kontagent": Endpoint("kontagent", kontagent.PRODUCTION_URL, "dry-run"),
    "kissmetrics": Endpoint("kissmetrics", kissmetrics.DEFAULT_URL, "dry-run"),
}
_REDACT = Redactor.of(())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beaconflow mapping",
        description="Show a built-in mapping, or explain what a mapping makes of a file's "
        "first records (nothing is sent).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="show|explain")
    show = commands.add_parser("show", help="print a built-in mapping's TOML")
    show.add_argument("name", choices=BUILTINS, metavar="NAME", help=", ".join(BUILTINS))
    explain = commands.add_parser(
        "explain", help="the canonical record and messages of a file's first records"
    )
    explain.add_argument(
        "--mapping", required=True, metavar="FILE|NAME", help="a mapping file or built-in name"
    )
    explain.add_argument("--input", required=True, metavar="FILE", help="a log file or a glob")
    explain.add_argument(
        "--limit", type=int, default=10, metavar="N", help="records to explain (default: 10)"
    )
    explain.add_argument("--format", choices=FORMATS, help="read the input as jsonl or parquet")
    explain.add_argument(
        "--source-timezone", metavar="ZONE", help="the zone of times without an offset"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """``beaconflow mapping ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "show":
        return say_all(builtin_text(args.name).splitlines())
    if args.limit < 1:
        _parser().error("--limit must be at least 1")
    try:
        mapping = read_mapping(args.mapping, args.source_timezone)
        files = expand_inputs([args.input], args.format)
    except (UsageError, MappingError, InputError) as error:
        say(f"beaconflow: error: {error}", error=True)
        return 2
    return say_all(explain(mapping, files, args.limit, file_format=args.format, now=time.time()))


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(map(str, path))


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=plain)


def explain(
    mapping: RecordMapping,
    files: Sequence[str],
    limit: int,
    *,
    file_format: str | None = None,
    now: float,
) -> list[str]:
    """The lines ``mapping explain`` prints for the first ``limit`` records of ``files``."""
    lines: list[str] = []
    matched: Counter[str] = Counter()
    # each path of a fallback list on its own: a typo in the first path is otherwise hidden
    fallbacks = [r for r in mapping.rules() if isinstance(r, FieldRule) and len(r.paths) > 1]
    per_path: Counter[tuple[str, str]] = Counter()
    left_out: Counter[str] = Counter()
    records = itertools.chain.from_iterable(read_file(path, file_format) for path in files)
    explained = 0
    for raw in itertools.islice(records, limit):
        explained += 1
        lines.append(f"{raw.source}:")
        if raw.problem is not None:
            lines.append(f"  not read: {raw.problem}")
            continue
        try:
            source: dict[str, Any] = raw.row if raw.row is not None else parse_line(raw.text or "")
            prepared, chosen = mapping.select(source)
            for rule in fallbacks:
                for path in rule.paths:
                    if resolve(prepared, path) not in (None, ""):
                        per_path[(rule.label, _dotted(path))] += 1
            case = next((c for c in mapping.cases if c.mapping is chosen), None)
            if case is not None:
                lines.append(f"  rules: [[when]] {case.label}")
            converted = convert_record(
                source,
                mapping,
                now=now,
                source_name=raw.source,
                destinations=DESTINATIONS,
                matched=matched,
                left_out=left_out,
            )
        except RecordError as error:
            lines.append(f"  invalid: {error}")
            continue
        lines.append(f"  canonical: {_json(converted.canonical)}")
        moment = datetime.fromtimestamp(converted.event.time, UTC).isoformat()
        lines.append(f"  time: {moment.replace('+00:00', 'Z')} ({converted.event.time})")
        mapped = converted.mapped
        for message in mapped.messages:
            url = _REDACT(render_url(message, _ENDPOINTS[message.destination], now))
            lines.append(f"  {message.destination}/{message.kind}: {url}")
        for problem in mapped.problems:
            lines.append(f"  {problem.destination}: not built: {problem.reason}")
        if not mapped.messages and not mapped.problems:
            lines.append("  no destination takes this event (counted as unrouted)")
    lines.append("")
    lines.append(f"rules: records with a value, of the {explained} explained")
    optional = {rule.label for rule in mapping.rules() if rule.optional}
    for label in mapping.labels():
        note = " (optional)" if label in optional else ""
        lines.append(f"  {matched.get(label, 0):>6}  {label}{note}")
        for rule in fallbacks:
            if rule.label == label:
                for path in rule.paths:
                    shown = _dotted(path)
                    lines.append(f"  {per_path[(label, shown)]:>10}  with a value at {shown}")
    if left_out:
        lines.append("properties left out (objects, lists, nulls):")
        for name, n in left_out.most_common():
            lines.append(f"  {n:>6}  {name}")
    return lines
