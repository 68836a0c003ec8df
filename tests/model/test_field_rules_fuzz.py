"""Property tests of the mapping language's time options (``beaconflow.model.field_rules``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from beaconflow.model.field_rules import UNITS, compile_rule
from beaconflow.model.records import EARLIEST, parse_time

#: 2009-01-01 .. 2030-01-01, in microseconds since the epoch.
MICROS = st.integers(min_value=EARLIEST * 1_000_000, max_value=1_893_456_000 * 1_000_000)
OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timedelta(minutes=m))


#: The units a rule may name; ``auto`` is tested below.
FIXED_UNITS = sorted(unit for unit, factor in UNITS.items() if factor)


@given(micros=MICROS, unit=st.sampled_from(FIXED_UNITS), as_text=st.booleans())
def test_an_epoch_in_any_unit_is_its_whole_second(micros: int, unit: str, as_text: bool) -> None:
    factor = UNITS[unit]
    epoch = micros * factor // 1_000_000  # the instant in the unit, truncated
    rule = compile_rule("time", {"path": "t", "unit": unit})
    value = rule.read({"t": str(epoch) if as_text else epoch})
    assert parse_time(value) == epoch // factor == micros // 1_000_000


@given(micros=MICROS, unit=st.sampled_from(FIXED_UNITS), as_text=st.booleans())
def test_auto_reads_an_epoch_of_the_services_range_in_any_unit(
    micros: int, unit: str, as_text: bool
) -> None:
    epoch = micros * UNITS[unit] // 1_000_000
    rule = compile_rule("time", {"path": "t", "unit": "auto"})
    assert parse_time(rule.read({"t": str(epoch) if as_text else epoch})) == micros // 1_000_000


@given(micros=MICROS, offset=OFFSETS)
def test_a_naive_time_in_a_zone_is_the_same_instant_as_with_its_offset(
    micros: int, offset: timedelta
) -> None:
    instant = datetime.fromtimestamp(micros / 1_000_000, UTC).replace(
        microsecond=micros % 1_000_000
    )
    local = instant.astimezone(timezone(offset))
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    zone = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    naive = local.replace(tzinfo=None).isoformat()
    rule = compile_rule("time", {"path": "t", "zone": zone})
    assert parse_time(rule.read({"t": naive})) == parse_time(local.isoformat())
    # a strptime format gives the same instant
    formatted = compile_rule("time", {"path": "t", "format": "%Y-%m-%d %H:%M:%S.%f", "zone": zone})
    text = local.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert parse_time(formatted.read({"t": text})) == parse_time(local.isoformat())


@given(micros=MICROS, upper=st.booleans(), zulu_upper=st.booleans())
def test_rfc3339_letters_in_either_case(micros: int, upper: bool, zulu_upper: bool) -> None:
    instant = datetime.fromtimestamp(micros // 1_000_000, UTC)
    text = instant.strftime("%Y-%m-%d") + ("T" if upper else "t") + instant.strftime("%H:%M:%S")
    text += "Z" if zulu_upper else "z"
    assert parse_time(text) == micros // 1_000_000
