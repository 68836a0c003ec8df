"""Kontagent names for any product (``kontagent.safe_name``, ``kontagent.hashed_user_id``).

The values are pinned: a change would change the names and ids already sent to Kontagent.
"""

from __future__ import annotations

import hashlib

import pytest

from beaconflow.model import kontagent
from beaconflow.model.message import MessageError


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("Order Completed", "Order_Completed"),
        ("Product Added to Cart!", "Product_Added_to_Cart_"),
        ("level_up", "level_up"),
        ("page-view.v2", "page_view_v2"),
        ("$identify", "_identify"),
        ("購入", "__"),
        ("", ""),
        ("a" * 32, "a" * 32),  # 32 characters: kept
        ("a b" * 10 + "cd", "a_b" * 10 + "cd"),  # 32 once safe
    ],
)
def test_safe_names(name: str, safe: str) -> None:
    assert kontagent.safe_name(name) == safe


def _shortened(name: str) -> str:
    """The documented rule for a name past 32 characters, written out independently."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    safe = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in name)
    return f"{safe[:23]}_{digest}"


def test_a_long_name_keeps_23_characters_and_8_hex_of_its_hash() -> None:
    name = "Completed Checkout Step With Coupon Code"
    assert len(name) == 40
    safe = kontagent.safe_name(name)
    assert safe == "Completed_Checkout_Step_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    assert safe == _shortened(name)
    assert len(safe) == 32
    assert safe[:23] == "Completed_Checkout_Step"
    assert safe[23] == "_"


def test_a_33_character_name_is_shortened() -> None:
    name = "b" * 33
    assert kontagent.safe_name(name) == _shortened(name)
    assert len(kontagent.safe_name(name)) == 32


def test_long_names_sharing_a_beginning_stay_two_names() -> None:
    first = "x" * 30 + "_first_variant"
    second = "x" * 30 + "_second_variant"
    assert kontagent.safe_name(first) != kontagent.safe_name(second)
    assert kontagent.safe_name(first)[:24] == kontagent.safe_name(second)[:24] == "x" * 23 + "_"


def test_the_hash_is_of_the_original_name() -> None:
    # two names that are one once made safe stay two, each hashed as it was written
    spaced = "Product Added to Cart From Recommendations"
    underscored = "Product_Added_to_Cart_From_Recommendations"
    assert kontagent.safe_name(spaced) != kontagent.safe_name(underscored)
    assert kontagent.safe_name(spaced) == _shortened(spaced)


@pytest.mark.parametrize("user_id", ["1", "42", "9223372036854775807", "007", 42, 1])
def test_a_positive_decimal_id_is_returned_as_it_is(user_id: str | int) -> None:
    assert kontagent.hashed_user_id(user_id) == str(user_id)


def _hashed(text: str) -> int:
    """The documented rule, written out: 8 bytes of SHA-256, big-endian, top bit cleared."""
    value = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return value & (2**63 - 1) or 1


@pytest.mark.parametrize(
    "user_id",
    ["0", "00", 0, "abc", "anon-1", "-5", -5, "1.5", " 42", "42 ", "", "$device:ABC", "Zoë"],
)
def test_any_other_id_is_hashed(user_id: str | int) -> None:
    hashed = kontagent.hashed_user_id(user_id)
    assert hashed == str(_hashed(str(user_id)))
    assert 1 <= int(hashed) <= 2**63 - 1
    assert hashed.isdigit()


def test_hashed_ids_are_stable() -> None:
    # pinned: the ids Kontagent already holds for these users
    assert kontagent.hashed_user_id("abc") == "4213142463398924266"
    assert kontagent.hashed_user_id("0") == "6912158355717386040"
    assert kontagent.hashed_user_id(0) == kontagent.hashed_user_id("0")
    assert kontagent.hashed_user_id("abc") == kontagent.hashed_user_id("abc")


def test_a_hashed_id_is_a_user_id_kontagent_takes() -> None:
    message = kontagent.build("apa", {"s": kontagent.hashed_user_id("anon-1")})
    assert dict(message.params)["s"] == str(_hashed("anon-1"))


@pytest.mark.parametrize(
    "user_id", [2**63, "9223372036854775808", "123456789012345678901234567890"]
)
def test_a_numeric_id_past_63_bits_is_hashed_too(user_id: str | int) -> None:
    hashed = kontagent.hashed_user_id(user_id)
    assert hashed != str(user_id) and 0 < int(hashed) < 2**63


def test_a_number_of_more_than_64_digits_is_refused_before_sending() -> None:
    with pytest.raises(MessageError, match="has 65 digits; at most 64"):
        kontagent.build("evt", {"s": 1, "n": "x", "v": 10**64})
