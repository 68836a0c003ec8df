"""Percent-encoding (``beaconflow.model.urlencode``): urllib's ``quote(text, safe="")``, exactly.

The fast encoder escapes by a table of code points and keeps escaped texts in a bounded
cache; every text, cached or not, must come out as urllib's ``quote`` makes it, since
signatures and the delivery ledger's normalised URLs depend on each byte.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beaconflow.model import urlencode
from beaconflow.model.urlencode import encode_query, quote_part

#: Any Unicode text but lone surrogates (which cannot be encoded), up to beyond the length
#: the cache keeps, with the characters URLs reserve drawn often.
texts = st.text(
    st.one_of(
        st.characters(exclude_categories=["Cs"]),
        st.sampled_from(" &=?#%+/\\\"',;:@[]!$()*<>{}|^`~_.-\t\n\x00\x7f\u00e9\u2603\U0001f34e"),
    ),
    max_size=300,
)


@settings(max_examples=2000, deadline=None)
@given(texts)
def test_a_part_is_escaped_as_urllib_quotes_it(text: str) -> None:
    expected = quote(text, safe="")
    assert quote_part(text) == expected
    assert quote_part(text) == expected  # again, from the cache when it keeps it


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(texts, texts), max_size=12))
def test_a_query_is_urllibs_percent_encoding(params: list[tuple[str, str]]) -> None:
    expected = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in params)
    assert encode_query(params) == expected
    assert encode_query(params) == expected


def test_examples() -> None:
    assert encode_query([("a-Z_0.9~", ""), ("é ,", "x&y")]) == "a-Z_0.9~=&%C3%A9%20%2C=x%26y"
    assert quote_part("50% + 100%/#?") == "50%25%20%2B%20100%25%2F%23%3F"
    assert quote_part("\U0001f34e") == "%F0%9F%8D%8E"


def test_a_lone_surrogate_is_refused_as_urllib_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        quote("a\ud800", safe="")
    with pytest.raises(UnicodeEncodeError):
        quote_part("a\ud800")
    with pytest.raises(UnicodeEncodeError):
        encode_query([("name", "\udfff")])


def test_the_cache_and_the_table_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urlencode, "_CACHE_LIMIT", 8)
    monkeypatch.setattr(urlencode, "_TABLE_LIMIT", len(urlencode._ESCAPES) + 3)
    monkeypatch.setattr(urlencode, "_ESCAPED", {})
    texts = [f"value {n} \u4e00{chr(0x4E00 + n)}" for n in range(50)]
    for _ in range(2):
        for text in texts:
            assert quote_part(text) == quote(text, safe="")
            assert len(urlencode._ESCAPED) <= 8
    assert len(urlencode._ESCAPES) <= urlencode._TABLE_LIMIT
    long = "ü" * (urlencode._CACHE_TEXT_LIMIT + 1)
    assert quote_part(long) == quote(long, safe="")
    assert long not in urlencode._ESCAPED
