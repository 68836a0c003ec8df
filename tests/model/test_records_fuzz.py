"""Property tests of ``beaconflow.model.records.parse_line``: an object or a RecordError.

``parse_line`` is fuzzed with arbitrary text and with serialized JSON-ish values. Any exception
other than RecordError is a bug in the code under test, not in these tests. Every test is
derandomized, so CI runs the same examples every time; the strategies here are shared with
tests/model/test_events_fuzz.py.
Run with ``.venv/bin/python -m pytest tests/model/test_records_fuzz.py -q``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beaconflow.model.records import RecordError, parse_line

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)


json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)


#: Characters JSON is made of, so that random text often gets past the first byte.
json_alphabet = st.sampled_from([*'{}[]":,.-+0123456789eE \t\n\\/truefalsnNaIiy', "\x00"])


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _containers(value: object) -> int:
    """How many objects and arrays are nested at the deepest point."""
    if isinstance(value, dict):
        return 1 + max((_containers(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_containers(v) for v in value), default=0)
    return 0


@FUZZ
@given(st.text())
def test_parse_line_of_any_text_is_an_object_or_a_record_error(line: str) -> None:
    try:
        parsed = parse_line(line)
    except RecordError as error:
        assert error.field is None
        return
    assert isinstance(parsed, dict)


@FUZZ
@given(st.text(alphabet=json_alphabet, max_size=80))
def test_parse_line_of_json_like_text_is_an_object_or_a_record_error(line: str) -> None:
    try:
        parsed = parse_line(line)
    except RecordError:
        return
    assert isinstance(parsed, dict)


@FUZZ
@given(json_values | json_objects, st.booleans())
def test_parse_line_of_serialized_values(value: object, ascii_only: bool) -> None:
    line = json.dumps(value, ensure_ascii=ascii_only)  # NaN and Infinity written as literals
    try:
        parsed = parse_line(line)
    except RecordError:
        assert not isinstance(value, dict) or not _finite(value) or _containers(value) > 30
        return
    assert isinstance(value, dict)
    assert _finite(value)
    assert parsed == value


@FUZZ
@given(json_objects, st.integers(min_value=1, max_value=3000), st.sampled_from("[{"))
def test_parse_line_of_deep_values_never_recurses_out(
    value: dict[str, Any], depth: int, opening: str
) -> None:
    nested = (
        ("[" * depth + "0" + "]" * depth)
        if opening == "["
        else ('{"a":' * depth + "0" + "}" * depth)
    )
    line = json.dumps({**value, "deep": "PLACEHOLDER"}).replace('"PLACEHOLDER"', nested)
    try:
        parse_line(line)
    except RecordError:
        assert depth > 20 or not _finite(value) or _containers(value) > 10
        return
    assert depth < 32
