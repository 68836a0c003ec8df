"""The mappings in examples/ run as their comments say."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import backfill_flags, run_json

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = 1_800_000_000


def test_the_cloudevents_example(tmp_path: Path) -> None:
    here = EXAMPLES / "cloudevents"
    out = tmp_path / "out"
    flags = backfill_flags(
        "http://127.0.0.1:9",
        out,
        here / "events.jsonl",
        extra=(f"--mapping={here / 'mapping.toml'}", f"--dry-run={out / 'messages.jsonl'}"),
    )
    status, report = run_json(flags, now=NOW)
    assert status == 0, report
    # three events share the id A234-1234-1234 under three sources: three events, not one
    assert report["events_duplicate"] == 0 and report["events_mapped"] == 5
    assert report["events_unrouted"] == 1  # a type of another domain
    assert report["by_type"]["kontagent/ins"]["dry_run"] == 1
    assert report["mapping_rules_unmatched"] == []
    lines = (out / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    mtu = [m for m in map(json.loads, lines) if m["kind"] == "mtu"]
    assert [m["params"]["v"] for m in mtu] == ["499"]  # 4.99 dollars in cents
