"""The redactor works on values: every dead-letter line parses, and no secret survives.

The first release ran its redactor over whole JSON lines: its ``an_sig`` pattern swallowed
the closing quote, comma and quote of an error text that carried a signed URL (half the
dead letter was invalid JSON, and a replay lost every Kontagent message), and a short key
such as ``0000`` was cut out of user data (``"user_id": "1***0042"``). These tests feed error
texts that carry signed URLs, with keys and secrets of every length, through the dead
letter's encoder.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, quote, urlsplit

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from beaconflow.delivery.redact import MASK, MIN_LITERAL_LENGTH, Redactor
from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.message import Endpoint, Message
from beaconflow.model.render import render_url
from beaconflow.report.deadletter import DeadLetterEntry

#: Characters of keys and secrets: hex, letters, and ones that encode in a URL.
SECRET_CHARS = "0123456789abcdefABCXYZ-_.~ +&=%é"
#: Characters of the text around a URL in an error: quotes, commas, brackets, escapes, but
#: nothing that makes a URL position of its own.
AROUND_CHARS = "abcXYZ019 '\",:;()[]{}<>\\\n\té€"

secrets = st.text(alphabet=SECRET_CHARS, min_size=1, max_size=40)
around = st.text(alphabet=AROUND_CHARS, max_size=30)


def _signed_kontagent(key: str, secret: str) -> str:
    message = kontagent.build("evt", {"s": 10000042, "n": "harvest", "v": 3})
    return kontagent.url(message, "http://api.example.test", key, secret=secret, now=1.8e9)


def _kissmetrics(key: str) -> str:
    message = kissmetrics.record("10000042", "Signed Up", time=1_750_000_000)
    return kissmetrics.url(message, "https://trk.example.test", key)


def _masked(url: str, key: str) -> str:
    """The URL as the redactor must leave it: the key and the signature masked in place."""
    encoded = quote(key, safe="")
    url = url.replace(f"/api/v1/{encoded}/", f"/api/v1/{MASK}/")
    url = url.replace(f"_k={encoded}&", f"_k={MASK}&")
    signature = dict(parse_qsl(urlsplit(url).query)).get("an_sig")
    if signature:
        url = url.replace(f"an_sig={signature}", f"an_sig={MASK}")
    return url


@settings(max_examples=300, deadline=None)
@given(
    kontagent_key=secrets,
    kontagent_secret=secrets,
    kissmetrics_key=secrets,
    before=around,
    between=around,
    after=around,
)
def test_dead_letter_lines_parse_and_keep_no_secret(
    kontagent_key: str,
    kontagent_secret: str,
    kissmetrics_key: str,
    before: str,
    between: str,
    after: str,
) -> None:
    all_secrets = (kontagent_key, kontagent_secret, kissmetrics_key)
    # a long secret that also stands in the text around the URLs would be masked there too
    assume(not any(s in before + between + after for s in all_secrets if len(s) >= 8))
    signed = _signed_kontagent(kontagent_key, kontagent_secret)
    km = _kissmetrics(kissmetrics_key)
    # the shape of the first release's failure: a requests/aiohttp error quoting the URL
    reason = f"TooManyRedirects: {before}'{signed}'{between}{km}{after}"
    record = {"user_id": "10000042", "pin": "0000", "note": before}
    entry = DeadLetterEntry("map", reason, "f.jsonl:5", record=record)

    line = entry.to_json(Redactor.of(all_secrets))

    parsed = json.loads(line)  # every line parses
    assert "\n" not in line
    expected = f"TooManyRedirects: {before}'{_masked(signed, kontagent_key)}'{between}"
    expected += f"{_masked(km, kissmetrics_key)}{after}"
    # nothing around a URL is swallowed, the key and signature positions are masked
    assert parsed["reason"] == expected
    signature = dict(parse_qsl(urlsplit(signed).query))["an_sig"]
    assert signature not in line
    for secret in all_secrets:
        if len(secret) >= MIN_LITERAL_LENGTH:
            for form in (secret, quote(secret, safe=""), json.dumps(secret)[1:-1]):
                assert form not in line
    # data that is not a secret's position is untouched by a short secret
    if all(len(s) < MIN_LITERAL_LENGTH for s in all_secrets):
        assert parsed["record"] == record
    assert parsed["source"] == {"file": "f.jsonl", "line": 5}


@given(short=st.text(alphabet="0123456789", min_size=1, max_size=MIN_LITERAL_LENGTH - 1))
def test_a_short_secret_is_masked_by_position_only(short: str) -> None:
    redactor = Redactor.of((short,))
    data = {"user_id": "10000042", "text": f"pin {short} and 1{short}2"}
    assert redactor.value(data) == data
    url = f"http://host/api/v1/{short}/ins/?s=1&an_sig=abc"
    assert redactor.text(url) == f"http://host/api/v1/{MASK}/ins/?s=1&an_sig={MASK}"


def test_a_long_secret_is_masked_anywhere_in_any_form() -> None:
    secret = "s3cr3t value/é"
    redactor = Redactor.of((secret,))
    text = f"a {secret} b {quote(secret, safe='')} c"
    assert redactor.text(text) == f"a {MASK} b {MASK} c"


def test_values_inside_lists_and_dicts_are_masked_and_keys_only_literally() -> None:
    redactor = Redactor.of(("kissmetrics-key-1",))
    value = {"_k": ["GET /e?_k=abc&x=1", 3, None], "kissmetrics-key-1": "kissmetrics-key-1"}
    # a key is a name (a property's), never a URL: a known secret there is masked, no more
    assert redactor.value(value) == {"_k": [f"GET /e?_k={MASK}&x=1", 3, None], MASK: MASK}


def test_data_in_an_entry_is_never_rewritten_by_url_position() -> None:
    # a page address is the user's data: a replay must send it as it was
    page = "https://x.example/api/v1/farm/quests?ref=mail&_k=campaign7&an_sig=abc"
    entry = DeadLetterEntry(
        "send",
        f"HTTP 400: GET http://h/api/v1/KEY123/pgr/?u={page}&an_sig=f00",
        record={"page_address": page},
        line=page,
        message=Message("kontagent", "pgr", (("u", page), ("s", "1"))),
        status=400,
        attempts=1,
    )
    parsed = json.loads(entry.to_json(Redactor.of(("KEY123",))))
    assert parsed["message"]["params"]["u"] == page
    assert parsed["record"]["page_address"] == page and parsed["line"] == page
    assert parsed["reason"].startswith(f"HTTP 400: GET http://h/api/v1/{MASK}/pgr/")


def test_a_long_secret_is_masked_in_its_json_and_repr_forms_too() -> None:
    secret = 'ab\\cd"ef gh12'
    redactor = Redactor.of((secret,))
    for form in (json.dumps(secret)[1:-1], repr(secret)[1:-1], secret):
        assert redactor.text(f"time {form} is not valid") == f"time {MASK} is not valid"
    # in data as well: a record holding the secret does not carry it into the dead letter
    line = DeadLetterEntry("parse", "x", line=f"{{bad {secret}").to_json(redactor)
    assert "ab\\\\cd" not in line and "gh12" not in line


KEY = "0123456789abcdef0123456789abcdef"


SECRET = "the-secret-value"


def test_redactor_masks_keys_in_urls_and_anywhere_in_text() -> None:
    redact = Redactor.of([KEY, SECRET, None, ""])
    kontagent_url = render_url(
        kontagent.build("apr", {"s": 1}), Endpoint("kontagent", "http://h", KEY, SECRET), 5
    )
    kissmetrics_url = render_url(
        kissmetrics.alias("a", "b"), Endpoint("kissmetrics", "http://h", KEY), 5
    )
    for text in (kontagent_url, kissmetrics_url, f"error talking to {kontagent_url}: {SECRET}"):
        masked = redact(text)
        assert KEY not in masked and SECRET not in masked
        assert "***" in masked
    assert redact("/api/v1/other-key/apr/?s=1") == "/api/v1/***/apr/?s=1"
    long = "a b/c secret"
    assert Redactor.of([long])("x a%20b%2Fc%20secret y a+b%2Fc+secret") == "x *** y ***"
    # a secret shorter than 8 characters is masked where a URL carries it, nowhere else
    assert Redactor.of(["a b/c"])("x a b/c y, user 1a b/c2") == "x a b/c y, user 1a b/c2"
