"""Deterministic generator of made-up game logs for "Orchard Quest", a farming game.

The generator simulates players who arrive (from an ad or partner click, from an invite or
notification, or directly), install the game, set their user information, load pages, plant
and harvest, level up, invite friends, send notifications, e-mails and dashboard messages,
post to the stream, buy things, reach goals, alias themselves to an e-mail address and
sometimes uninstall. It yields *canonical records*, the input format of the beaconflow
pipeline: one dict per event with ``event_id``, ``time``, ``user_id``, ``event`` and the
optional fields of the message type (see ``sample_data/README.md`` for the full list).

Everything is driven by one ``random.Random(seed)``: the same arguments always give the same
records. The simulation keeps a bounded amount of state (active players, open tracking tags,
players about to install), so a stream of millions of events needs constant memory. Times
increase with the record index and stay inside ``[start, end)``; within the first
:data:`COVERAGE_WINDOW` records every Kontagent message type and the KISSmetrics ``alias``
appear at least once (in any stream of at least ``len(KINDS)`` records).

Records deliberately use the varied shapes real logs have: times as ISO-8601 with ``Z`` or
an offset, as epoch seconds or as fractional epoch seconds; user ids as ints or digit
strings; event names as the Ruby library's names, as three-letter Kontagent codes or as
custom names; and values older libraries dropped wrongly (``installed=False``, ``value=0``,
an omitted ``level``, property values with spaces, unicode, ``&``, ``=``, ``%``, ``+``,
``,`` and ``#``).

Use it from Python::

    from beaconflow.samples.gamelog import generate_events, write_jsonl, write_parquet
    write_jsonl(generate_events(1000, seed=7), "events.jsonl.gz")

or from the shell::

    python -m beaconflow.samples.gamelog -n 1000000 --seed 7 --out /tmp/events.jsonl.gz

Parquet files written by :func:`write_parquet` use :func:`parquet_schema`: scalar columns are
typed, ``time`` is an ISO-8601 string in UTC with ``Z``, ``user_id`` is a string and
``recipients`` a ``list<string>``, and the nested fields ``goal_counts`` and ``properties``
are **JSON-encoded string columns**: readers decode those two columns with ``json.loads``
(:func:`read_parquet` does).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gzip
import io
import itertools
import json
import math
import os
import random
import re
import sys
import time as _time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from beaconflow.model import kissmetrics, kontagent
from beaconflow.model.records import CANONICAL_FIELDS, OBJECT_FIELDS

#: Default simulated date range (UTC), ``[start, end)``.
DEFAULT_START = datetime(2025, 6, 1, tzinfo=UTC)
DEFAULT_END = datetime(2025, 6, 8, tzinfo=UTC)
#: No event may be older than this (the pipeline's lower bound, as a datetime).
EARLIEST = datetime.fromtimestamp(kissmetrics.EARLIEST, UTC)
#: User ids are allocated upwards from here.
FIRST_UID = 100000001
#: Every kind in :data:`KINDS` appears within this many leading records.
COVERAGE_WINDOW = 200

#: The Kontagent REST message types.
KONTAGENT_TYPES: tuple[str, ...] = (
    "ins", "inr", "nts", "ntr", "nes", "nei", "mes", "mer", "pst",
    "psr", "evt", "apa", "apr", "ucc", "pgr", "cpu", "gci", "mtu",
)  # fmt: skip

#: Every kind the generator covers: the Kontagent types plus KISSmetrics' ``alias``.
KINDS: tuple[str, ...] = (*KONTAGENT_TYPES, "alias")

#: The Ruby library's event names and the Kontagent type each maps to.
RUBY_EVENT_NAMES: dict[str, str] = dict(kontagent.EVENT_NAMES)

#: Event names that carry the custom event's name in a ``name`` field.
NAMED_CUSTOM_EVENTS: frozenset[str] = frozenset({"custom_event", "custom_action", "evt"})

#: A custom event name (Kontagent's ``n``) must match this.
CUSTOM_NAME_RE = re.compile(r"[a-zA-Z0-9_]{1,32}")

#: Legal ``channel`` values of stream posts and their responses.
STREAM_CHANNELS: tuple[str, ...] = (
    "feedpub", "stream", "feedstory", "multifeedstory", "dashboard_activity",
    "dashboard_globalnews",
)  # fmt: skip

#: Legal ``channel`` values per kind.
CHANNELS: dict[str, tuple[str, ...]] = {
    "mes": ("dashboard",),
    "mer": ("dashboard",),
    "pst": STREAM_CHANNELS,
    "psr": STREAM_CHANNELS,
    "ucc": ("ad", "partner"),
}

#: Parquet columns holding JSON-encoded objects (lists are Parquet lists).
JSON_COLUMNS = OBJECT_FIELDS


def kind_of(event: str) -> str:
    """The Kontagent type (or ``alias``) an event name maps to; other names are ``evt``."""
    if event in KINDS:
        return event
    return RUBY_EVENT_NAMES.get(event, "evt")


# --------------------------------------------------------------------------- vocabulary

_CROPS = ("apple", "pear", "cherry", "plum", "peach", "quince", "apricot", "fig")
_BOSSES = ("giant_mole", "crow_king", "blight_beetle", "frost_giant")
_TIERS = ("bronze", "silver", "gold")
#: Subtype vocabularies per sending kind: (subtype1, subtype2, subtype3) choices.
_SUBTYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "ins": (
        ("neighbor_request", "gift", "help_harvest"),
        _CROPS,
        ("from_farm", "from_market", "from_quest_log"),
    ),
    "nts": (("crops_ready", "gift_waiting", "friend_visited", "energy_full"),
            ("morning", "evening"), ()),
    "nes": (("weekly_digest", "win_back", "event_announcement"), ("v1", "v2"), ("html", "text")),
    "mes": (("game",), ("challenge", "thank_you", "trade_offer"), ("inbox", "popup")),
    "pst": (("achievement", "harvest_brag", "level_up", "help_request"), _CROPS,
            ("with_photo", "text_only")),
    "ucc": (("orchard_ads", "partner_games_portal", "summer_campaign"),
            ("banner_a", "banner_b", "video"), ("us_en", "gb_en", "de_de", "br_pt")),
}  # fmt: skip
#: Which sending kind each response kind answers.
_RESPONSE_OF: dict[str, str] = {
    "inr": "ins", "ntr": "nts", "nei": "nes", "mer": "mes", "psr": "pst",
}  # fmt: skip

#: Spellings of each kind's event name, with weights.
_SPELLING_WEIGHTS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "ins": (("invite_sent", "ins"), (8, 2)),
    "inr": (("invite_response", "inr"), (8, 2)),
    "nts": (("notification_sent", "nts"), (8, 2)),
    "ntr": (("notification_response", "ntr"), (8, 2)),
    "nes": (("notification_email_sent", "nes"), (8, 2)),
    "nei": (("notification_email_response", "nei"), (8, 2)),
    "mes": (("message_sent", "mes"), (8, 2)),
    "mer": (("message_response", "mer"), (8, 2)),
    "pst": (("stream_post", "pst"), (8, 2)),
    "psr": (("stream_post_response", "psr"), (8, 2)),
    "apa": (("application_installed", "application_added", "apa"), (6, 3, 1)),
    "apr": (("application_uninstalled", "application_removed", "apr"), (6, 3, 1)),
    "ucc": (("undirected_communication_click", "ucc"), (8, 2)),
    "pgr": (("page_request_and_user_location", "pgr"), (8, 2)),
    "cpu": (("user_information", "cpu"), (8, 2)),
    "gci": (("goal_counts", "gci"), (8, 2)),
    "mtu": (("revenue_tracking", "mtu"), (9, 1)),
    "alias": (("alias",), (1,)),
}

_SPELLINGS: dict[str, tuple[tuple[str, ...], list[float]]] = {
    kind: (names, list(itertools.accumulate(weights)))
    for kind, (names, weights) in _SPELLING_WEIGHTS.items()
}

#: Texts with the characters older libraries mangled: spaces, unicode, & = % + , #.
_FARM_NAMES = (
    "Sunny Acres",
    "Café Crêpes ☕ Farm",
    "Äpfel & Birnen Hof",
    "Orchard #1",
    "Pears, Plums and Peaches",
    "50% Organic + 100% Fresh",
    "key=value Ranch",
    "Mañana Meadows 🍎",
    "Happy Valley",
)
_ITEMS = (
    "Golden Watering Can",
    "Bag of Magic Beans",
    "Tractor — Deluxe",
    "Orchard Expansion (5 by 5)",
    "Seeds & Soil Bundle",
    "50% More Harvest + Fertilizer",
    "Starter Pack #1",
    "Crates, Baskets, Ladders",
    "price=free Scarecrow",
    "Äpfel-Kiste 🍎",
)
_STORES = ("Farm & Garden", "Market Square", "Daily Deals #7", "Ye Olde Shoppe")
_PRICES = (99, 199, 299, 499, 999, 1999, 4999, 9999)
_LOCATIONS: tuple[tuple[str, str, str, str], ...] = (
    ("Austin", "US", "TX", "78701"),
    ("Portland", "US", "OR", "97205"),
    ("Toronto", "CA", "ON", "M5V 2T6"),
    ("München", "DE", "BY", "80331"),
    ("São Paulo", "BR", "SP", "01310-100"),
    ("Kraków", "PL", "MA", "30-001"),
    ("Osaka", "JP", "27", "530-0001"),
    ("Leeds", "GB", "ENG", "LS1 4AP"),
    ("Lyon", "FR", "ARA", "69001"),
)
_PAGES = (
    "https://apps.facebook.com/orchardquest/",
    "https://apps.facebook.com/orchardquest/?ref=bookmarks",
    "https://orchardquest.example.com/play/farm?tab=market&view=grid",
    "https://orchardquest.example.com/play/quests",
    "https://orchardquest.example.com/play/neighbors?page=2",
    "https://orchardquest.example.com/shop/item?id=42&promo=SUMMER%2B25",
)
_EMAIL_NAMES = ("grower", "farmer.joe", "appleseed", "pear.lover", "harvest.moon", "orchardist")
#: Public-looking first octets for made-up IPv4 addresses (no private or reserved ranges).
_IP_FIRST_OCTETS = (24, 31, 45, 62, 73, 81, 89, 98, 104, 151, 177, 185, 201, 213)
#: Time zone offsets (minutes) for ISO-8601 times written with an offset.
_OFFSETS = (120, -420, 330, 540, -180, 60)

#: Bounds on the simulation's state, so memory stays constant on long streams.
_MAX_ACTIVE = 5000
_MAX_PENDING = 2000
_MAX_PROSPECTS = 5000

#: Kinds forced (in this order) when the coverage window is about to close: each kind's
#: prerequisites come first, and ``apr`` last because it may remove the only player.
_FORCE_ORDER: tuple[str, ...] = (
    "apa", "ucc", "cpu", "pgr", "evt", "ins", "inr", "nts", "ntr", "nes", "nei",
    "mes", "mer", "pst", "psr", "gci", "mtu", "alias", "apr",
)  # fmt: skip


class _Player:
    __slots__ = ("level", "uid")

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.level = 1


class _Pending:
    """An open tracking tag of a send: its subtypes, channel and who may still respond."""

    __slots__ = ("channel", "responders", "subtypes", "tag")

    def __init__(
        self, tag: str, subtypes: dict[str, str], channel: str | None, responders: list[int]
    ) -> None:
        self.tag = tag
        self.subtypes = subtypes
        self.channel = channel
        self.responders = responders


class _Prospect:
    """Someone who responded or clicked but has not installed yet."""

    __slots__ = ("short_tag", "tag", "uid")

    def __init__(self, uid: int, tag: str | None, short_tag: str | None) -> None:
        self.uid = uid
        self.tag = tag
        self.short_tag = short_tag


def _bounded_add(items: list[Any], item: Any, cap: int, rng: random.Random) -> None:
    if len(items) < cap:
        items.append(item)
    else:
        items[rng.randrange(cap)] = item


def _swap_pop(items: list[Any], index: int) -> Any:
    item = items[index]
    last = items.pop()
    if index < len(items):
        items[index] = last
    return item


def _action_table(state: tuple[int | bool, ...]) -> tuple[tuple[str, ...], list[float]]:
    """Actions with non-zero weight and their cumulative weights, for one world state.

    ``state`` is (growth stage, any prospects, anyone without user info, enough players to
    lose one, and whether ins, nts, nes, mes and pst sends await a response).
    """
    growth, prospects, needs_info, may_churn, *awaiting = state
    grow = (12.0, 3.0, 0.0)[int(growth)]
    weights = {
        "apa_direct": grow * 0.4,
        "apa_convert": grow * 0.8 + 2.0 if prospects and grow else 0.0,
        "ucc": grow * 0.4 + 1.0,
        "cpu": 10.0 if needs_info else 1.0,
        "pgr": 12.0,
        "evt": 30.0,
        "ins": 4.0,
        "nts": 3.0,
        "nes": 2.0,
        "mes": 2.0,
        "pst": 4.0,
        "gci": 3.0,
        "mtu": 4.0,
        "alias": 2.0,
        "apr": 1.5 if may_churn else 0.0,
    }
    for response, waiting in zip(("inr", "ntr", "nei", "mer", "psr"), awaiting, strict=True):
        weights[response] = 5.0 if waiting else 0.0
    names = tuple(name for name, weight in weights.items() if weight > 0)
    return names, list(itertools.accumulate(weights[name] for name in names))


class _Simulation:
    """The game world: players, open tracking tags and prospects; makes one record a call."""

    def __init__(self, rng: random.Random, first_uid: int) -> None:
        self.rng = rng
        self.next_uid = first_uid
        self.players: list[_Player] = []
        self.position: dict[int, int] = {}
        self.pending: dict[str, list[_Pending]] = {k: [] for k in _RESPONSE_OF.values()}
        self.prospects: list[_Prospect] = []
        self.needs_info: deque[int] = deque(maxlen=1000)
        self.tables: dict[tuple[int | bool, ...], tuple[tuple[str, ...], list[float]]] = {}

    # ------------------------------------------------------------------ helpers

    def new_uid(self) -> int:
        uid = self.next_uid
        self.next_uid += 1
        return uid

    def uid_value(self, uid: int) -> int | str:
        return uid if self.rng.random() < 0.7 else str(uid)

    def uid_list(self, uids: Sequence[int]) -> list[int] | list[str]:
        if self.rng.random() < 0.7:
            return list(uids)
        return [str(u) for u in uids]

    def hex_tag(self, length: int) -> str:
        return format(self.rng.getrandbits(length * 4), f"0{length}x")

    def tracking_tag(self) -> str:
        return self.hex_tag(32 if self.rng.random() < 0.2 else 16)

    def event_name(self, kind: str) -> str:
        names, cumulative = _SPELLINGS[kind]
        if len(names) == 1:
            return names[0]
        return names[bisect.bisect_right(cumulative, self.rng.random() * cumulative[-1])]

    def subtypes(self, kind: str) -> dict[str, str]:
        rng = self.rng
        first, second, third = _SUBTYPES[kind]
        out: dict[str, str] = {}
        if rng.random() < 0.8:
            out["subtype1"] = rng.choice(first)
            if rng.random() < 0.6:
                out["subtype2"] = rng.choice(second)
                if third and rng.random() < 0.4:
                    out["subtype3"] = rng.choice(third)
        return out

    def random_player(self, exclude: int | None = None) -> _Player:
        players = self.players
        player = players[int(self.rng.random() * len(players))]
        if player.uid == exclude and len(players) > 1:
            index = self.position[player.uid]
            player = players[index - 1]
        return player

    def is_installed(self, uid: int) -> bool:
        return uid in self.position

    def add_player(self, uid: int) -> None:
        self.position[uid] = len(self.players)
        self.players.append(_Player(uid))
        self.needs_info.append(uid)

    def remove_player(self, player: _Player) -> None:
        index = self.position.pop(player.uid)
        last = self.players.pop()
        if index < len(self.players):
            self.players[index] = last
            self.position[last.uid] = index

    def maybe_properties(self, probability: float) -> dict[str, Any]:
        rng = self.rng
        if rng.random() >= probability:
            return {}
        props: dict[str, Any] = {"Farm Name": rng.choice(_FARM_NAMES)}
        roll = rng.random()
        if roll < 0.3:
            props["Coins"] = rng.randint(0, 50000)
        elif roll < 0.5:
            props["Speed Run"] = rng.random() < 0.5
        elif roll < 0.7:
            props["Score Ratio"] = round(rng.random(), 3)
        return {"properties": props}

    # ------------------------------------------------------------------ choosing

    def natural_action(self) -> str:
        """The next action, weighted by the state of the world."""
        rng = self.rng
        pool = len(self.players)
        if pool == 0:
            return "ucc" if rng.random() < 0.3 else "apa_direct"
        growth = 0 if pool < 30 else (1 if pool < _MAX_ACTIVE else 2)
        pending = self.pending
        state = (
            growth,
            bool(self.prospects),
            bool(self.needs_info),
            pool >= 5,
            bool(pending["ins"]),
            bool(pending["nts"]),
            bool(pending["nes"]),
            bool(pending["mes"]),
            bool(pending["pst"]),
        )
        table = self.tables.get(state)
        if table is None:
            table = self.tables[state] = _action_table(state)
        names, cumulative = table
        return names[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]

    def forced_action(self, kind: str) -> str:
        """The action that certainly produces a record of ``kind``."""
        if kind == "apa":
            return "apa_convert" if self.prospects else "apa_direct"
        return kind

    def make(self, action: str) -> dict[str, Any]:
        """One record (without ``event_id`` and ``time``) for ``action``."""
        if action in _RESPONSE_OF:
            return self.response(action)
        maker = getattr(self, "make_" + action)
        record: dict[str, Any] = maker()
        return record

    # ------------------------------------------------------------------ arrivals

    def make_ucc(self) -> dict[str, Any]:
        rng = self.rng
        record: dict[str, Any]
        if self.players and rng.random() < 0.25:
            player = self.random_player()
            record = {
                "user_id": self.uid_value(player.uid),
                "event": self.event_name("ucc"),
                "channel": rng.choice(CHANNELS["ucc"]),
                "installed": True,
            }
            if rng.random() < 0.5:
                record["short_tracking_tag"] = self.hex_tag(8)
        else:
            uid = self.new_uid()
            short = self.hex_tag(8)
            record = {
                "user_id": self.uid_value(uid),
                "event": self.event_name("ucc"),
                "channel": rng.choice(CHANNELS["ucc"]),
                "installed": False,
                "short_tracking_tag": short,
            }
            if rng.random() < 0.7:
                _bounded_add(self.prospects, _Prospect(uid, None, short), _MAX_PROSPECTS, rng)
        record.update(self.subtypes("ucc"))
        return record

    def make_apa_direct(self) -> dict[str, Any]:
        uid = self.new_uid()
        self.add_player(uid)
        return {"user_id": self.uid_value(uid), "event": self.event_name("apa")}

    def make_apa_convert(self) -> dict[str, Any]:
        rng = self.rng
        while self.prospects:
            prospect: _Prospect = _swap_pop(self.prospects, rng.randrange(len(self.prospects)))
            if self.is_installed(prospect.uid):
                continue
            self.add_player(prospect.uid)
            record: dict[str, Any] = {
                "user_id": self.uid_value(prospect.uid),
                "event": self.event_name("apa"),
            }
            if prospect.tag is not None:
                record["tracking_tag"] = prospect.tag
            if prospect.short_tag is not None:
                record["short_tracking_tag"] = prospect.short_tag
            return record
        return self.make_apa_direct()

    # ------------------------------------------------------------------ player actions

    def make_cpu(self) -> dict[str, Any]:
        rng = self.rng
        uid: int | None = None
        while self.needs_info:
            candidate = self.needs_info.popleft()
            if self.is_installed(candidate):
                uid = candidate
                break
        if uid is None:
            uid = self.random_player().uid
        record: dict[str, Any] = {"user_id": self.uid_value(uid), "event": self.event_name("cpu")}
        if rng.random() < 0.85:
            record["birth_year"] = rng.randint(1950, 2007)
        if rng.random() < 0.9:
            record["gender"] = rng.choices(("m", "f", "u"), (45, 45, 10))[0]
        city, country, state, postal = rng.choice(_LOCATIONS)
        if rng.random() < 0.6:
            record["city"] = city
        if rng.random() < 0.9:
            record["country"] = country
        if rng.random() < 0.6:
            record["state"] = state
        if rng.random() < 0.5:
            record["postal_code"] = postal
        if rng.random() < 0.8:
            record["friend_count"] = 0 if rng.random() < 0.1 else rng.randint(1, 800)
        return record

    def make_pgr(self) -> dict[str, Any]:
        rng = self.rng
        player = self.random_player()
        record: dict[str, Any] = {
            "user_id": self.uid_value(player.uid),
            "event": self.event_name("pgr"),
        }
        if rng.random() < 0.8:
            record["ip"] = (
                f"{rng.choice(_IP_FIRST_OCTETS)}.{rng.randint(0, 255)}."
                f"{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            )
        if rng.random() < 0.7:
            record["page_address"] = rng.choice(_PAGES)
        return record

    def make_evt(self) -> dict[str, Any]:
        rng = self.rng
        player = self.random_player()
        roll = rng.random()
        fields: dict[str, Any]
        if roll < 0.15:
            player.level += 1
            name = "level_up"
            fields = {"subtype1": "progress", "value": player.level}
            fields.update(self.maybe_properties(0.5))
        elif roll < 0.40:
            name = "crop_harvested"
            fields = {
                "subtype1": "farming",
                "subtype2": rng.choice(_CROPS),
                "value": rng.randint(1, 50),
            }
            fields.update(self.maybe_properties(0.2))
        elif roll < 0.60:
            name = "crop_planted"
            fields = {
                "subtype1": "farming",
                "subtype2": rng.choice(_CROPS),
                "value": rng.randint(1, 30),
            }
        elif roll < 0.72:
            name = "quest_completed"
            fields = {
                "subtype1": "quest",
                "subtype2": f"chapter_{rng.randint(1, 12)}",
                "value": rng.choice((0, 50, 100, 250)),
            }
        elif roll < 0.80:
            name = "boss_defeated"
            fields = {
                "subtype1": "combat",
                "subtype2": rng.choice(_BOSSES),
                "value": rng.choice((0, 0, 150, 500)),
            }
            fields.update(self.maybe_properties(0.4))
        elif roll < 0.88:
            name = "tractor_upgraded"
            fields = {
                "subtype1": "purchase",
                "subtype2": "equipment",
                "subtype3": rng.choice(_TIERS),
                "value": -rng.choice((500, 2000, 8000)),
            }
        elif roll < 0.95:
            name = "tutorial_step"
            fields = {"subtype1": "onboarding", "subtype2": f"step_{rng.randint(1, 8)}", "value": 0}
        else:
            name = "daily_bonus_claimed"
            fields = {"value": rng.choice((10, 25, 50))}
        if name != "tutorial_step" and rng.random() < 0.75:
            fields["level"] = player.level
        spelling = rng.random()
        record: dict[str, Any] = {"user_id": self.uid_value(player.uid)}
        if spelling < 0.6:
            record["event"] = name
        else:
            record["event"] = (
                "custom_event" if spelling < 0.8 else ("custom_action" if spelling < 0.9 else "evt")
            )
            record["name"] = name
        record.update(fields)
        return record

    def send(
        self, kind: str, sender: _Player, recipients: list[int], responders: list[int]
    ) -> dict[str, Any]:
        rng = self.rng
        tag = self.tracking_tag()
        subtypes = self.subtypes(kind)
        channel = rng.choice(CHANNELS[kind]) if kind in CHANNELS else None
        record: dict[str, Any] = {
            "user_id": self.uid_value(sender.uid),
            "event": self.event_name(kind),
        }
        if recipients:
            record["recipients"] = self.uid_list(recipients)
        if channel is not None:
            record["channel"] = channel
        record["tracking_tag"] = tag
        record.update(subtypes)
        if responders:
            _bounded_add(
                self.pending[kind], _Pending(tag, subtypes, channel, responders), _MAX_PENDING, rng
            )
        return record

    def existing_friends(self, count: int, exclude: int) -> list[int]:
        friends: list[int] = []
        for _ in range(count):
            uid = self.random_player(exclude).uid
            if uid != exclude and uid not in friends:
                friends.append(uid)
        return friends

    def make_ins(self) -> dict[str, Any]:
        rng = self.rng
        sender = self.random_player()
        recipients = [self.new_uid() for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            recipients += self.existing_friends(1, exclude=sender.uid)
        rng.shuffle(recipients)
        responders = [u for u in recipients if rng.random() < 0.5]
        return self.send("ins", sender, recipients, responders)

    def make_nts(self) -> dict[str, Any]:
        rng = self.rng
        sender = self.random_player()
        recipients = self.existing_friends(rng.randint(1, 3), exclude=sender.uid)
        if not recipients or rng.random() < 0.2:
            recipients.append(self.new_uid())
        responders = [u for u in recipients if rng.random() < 0.4]
        return self.send("nts", sender, recipients, responders)

    def make_nes(self) -> dict[str, Any]:
        rng = self.rng
        sender = self.random_player()
        recipients = self.existing_friends(rng.randint(1, 2), exclude=sender.uid)
        if not recipients or rng.random() < 0.3:
            recipients.append(self.new_uid())
        responders = [u for u in recipients if rng.random() < 0.3]
        return self.send("nes", sender, recipients, responders)

    def make_mes(self) -> dict[str, Any]:
        rng = self.rng
        sender = self.random_player()
        recipients = self.existing_friends(rng.randint(1, 2), exclude=sender.uid)
        if not recipients:
            recipients.append(self.new_uid())
        responders = [u for u in recipients if rng.random() < 0.5]
        return self.send("mes", sender, recipients, responders)

    def make_pst(self) -> dict[str, Any]:
        rng = self.rng
        sender = self.random_player()
        responders = []
        for _ in range(rng.randint(0, 3)):
            if self.players and rng.random() < 0.5:
                responders.append(self.random_player(exclude=sender.uid).uid)
            else:
                responders.append(self.new_uid())
        return self.send("pst", sender, [], responders)

    def response(self, kind: str) -> dict[str, Any]:
        rng = self.rng
        send_kind = _RESPONSE_OF[kind]
        opened = self.pending[send_kind]
        if opened:
            index = rng.randrange(len(opened))
            pending: _Pending = opened[index]
            uid = pending.responders.pop()
            if not pending.responders:
                _swap_pop(opened, index)
            tag, subtypes, channel = pending.tag, pending.subtypes, pending.channel
        else:
            # No open send to answer (it was sent before the log starts): a response to a
            # tag this log never saw, from someone who has not installed yet.
            tag = self.tracking_tag()
            subtypes = self.subtypes(send_kind)
            channel = rng.choice(CHANNELS[kind]) if kind in CHANNELS else None
            uid = self.new_uid()
        installed = self.is_installed(uid)
        record: dict[str, Any] = {"user_id": self.uid_value(uid), "event": self.event_name(kind)}
        if channel is not None:
            record["channel"] = channel
        record["installed"] = installed
        record["tracking_tag"] = tag
        record.update(subtypes)
        if not installed and rng.random() < 0.6:
            _bounded_add(self.prospects, _Prospect(uid, tag, None), _MAX_PROSPECTS, rng)
        return record

    def make_gci(self) -> dict[str, Any]:
        rng = self.rng
        player = self.random_player()
        keys = sorted(rng.sample(("gc1", "gc2", "gc3", "gc4"), rng.randint(1, 3)))
        counts: dict[str, int] = {}
        for key in keys:
            roll = rng.random()
            if roll < 0.75:
                counts[key] = rng.randint(1, 20)
            elif roll < 0.95:
                counts[key] = -rng.randint(1, 5)
            else:
                counts[key] = rng.choice((-16384, 16384))
        return {
            "user_id": self.uid_value(player.uid),
            "event": self.event_name("gci"),
            "goal_counts": counts,
        }

    def make_mtu(self) -> dict[str, Any]:
        rng = self.rng
        player = self.random_player()
        roll = rng.random()
        price = rng.choice(_PRICES)
        if roll < 0.04:
            value = -price  # refund
        elif roll < 0.08:
            value = 0  # promotional item
        else:
            value = price
        record: dict[str, Any] = {
            "user_id": self.uid_value(player.uid),
            "event": self.event_name("mtu"),
            "value": value,
        }
        if rng.random() < 0.7:
            record["properties"] = {
                "Item": rng.choice(_ITEMS),
                "Currency": "USD",
                "Store": rng.choice(_STORES),
            }
        return record

    def make_alias(self) -> dict[str, Any]:
        rng = self.rng
        player = self.random_player()
        domain = rng.choice(("example.com", "example.org", "mail.example.net"))
        alias = f"{rng.choice(_EMAIL_NAMES)}{player.uid % 10000}@{domain}"
        return {"user_id": self.uid_value(player.uid), "event": "alias", "alias": alias}

    def make_apr(self) -> dict[str, Any]:
        player = self.random_player()
        self.remove_player(player)
        return {"user_id": self.uid_value(player.uid), "event": self.event_name("apr")}


# --------------------------------------------------------------------------- times


def _iso_z(seconds: int) -> str:
    return _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(seconds))


def _render_time(seconds: int, rng: random.Random) -> str | int | float:
    roll = rng.random()
    if roll < 0.55:
        return _iso_z(seconds)
    if roll < 0.70:
        offset = rng.choice(_OFFSETS)
        local = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(seconds + offset * 60))
        sign = "+" if offset >= 0 else "-"
        hours, minutes = divmod(abs(offset), 60)
        return f"{local}{sign}{hours:02d}:{minutes:02d}"
    if roll < 0.90:
        return seconds
    return round(seconds + rng.randint(1, 999) / 1000, 3)


def _check_range(start: datetime, end: datetime) -> tuple[int, int]:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware datetimes")
    if start < EARLIEST:
        raise ValueError(f"start {start.isoformat()} is before {EARLIEST.isoformat()}")
    if end > datetime.now(UTC):
        raise ValueError(f"end {end.isoformat()} is in the future")
    low = math.ceil(start.timestamp())
    high = math.floor(end.timestamp())
    if high <= low:
        raise ValueError("end must be at least one whole second after start")
    return low, high


# --------------------------------------------------------------------------- public API


def generate_events(
    n: int,
    *,
    seed: int = 7,
    start: datetime = DEFAULT_START,
    end: datetime = DEFAULT_END,
    first_uid: int = FIRST_UID,
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` canonical records of Orchard Quest's event stream, lazily.

    Deterministic for given arguments. Times are non-decreasing in whole seconds (a tenth of
    them carry milliseconds) within ``[start, end)``; event ids are ``oq-<seed>-<index>`` and
    unique; user ids are allocated from ``first_uid`` upwards (use different ``first_uid``
    values to keep separately generated logs from sharing players). Every kind in
    :data:`KINDS` appears within the first ``min(n, COVERAGE_WINDOW)`` records when
    ``n >= len(KINDS)``.

    Raises ValueError for a negative ``n``, a naive or empty range, a start before 2009 or
    an end in the future.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if first_uid < 1:
        raise ValueError(f"first_uid must be positive, not {first_uid}")
    low, high = _check_range(start, end)
    return _generate(n, seed, low, high, first_uid)


def _generate(n: int, seed: int, low: int, high: int, first_uid: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    sim = _Simulation(rng, first_uid)
    width = high - low
    horizon = min(n, COVERAGE_WINDOW)
    missing = list(_FORCE_ORDER)
    for index in range(n):
        if index < horizon and missing and horizon - index <= len(missing):
            action = sim.forced_action(missing[0])
        else:
            action = sim.natural_action()
        body = sim.make(action)
        if missing and index < horizon:
            kind = kind_of(body["event"])
            if kind in missing:
                missing.remove(kind)
        seconds = low + (width * index + int(width * rng.random())) // n
        record: dict[str, Any] = {
            "event_id": f"oq-{seed}-{index:07d}",
            "time": _render_time(seconds, rng),
        }
        record.update(body)
        yield record


def dumps_record(record: dict[str, Any]) -> str:
    """One JSONL line (without newline): UTF-8 text as is, no escaping of non-ASCII."""
    return json.dumps(record, ensure_ascii=False)


def write_jsonl(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write records one JSON object a line; gzip-compressed when ``path`` ends in ``.gz``.

    Returns the number of records written. Compressed output is byte-for-byte deterministic.
    """
    name = os.fspath(path)
    count = 0
    with contextlib.ExitStack() as stack:
        sink: io.BufferedWriter | gzip.GzipFile = stack.enter_context(open(name, "wb"))
        if name.endswith(".gz"):
            # filename="" and mtime=0 keep the gzip header, and so the file, deterministic.
            sink = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0))
        out = stack.enter_context(io.TextIOWrapper(sink, encoding="utf-8", newline="\n"))
        for record in records:
            out.write(dumps_record(record))
            out.write("\n")
            count += 1
    return count


def parquet_schema() -> Any:
    """The explicit ``pyarrow.Schema`` of :func:`write_parquet` (columns in canonical order)."""
    import pyarrow as pa

    types = {
        "recipients": pa.list_(pa.string()),
        "installed": pa.bool_(),
        "value": pa.int64(),
        "level": pa.int64(),
        "birth_year": pa.int64(),
        "friend_count": pa.int64(),
    }
    return pa.schema(
        [pa.field(name, types.get(name, pa.string())) for name in CANONICAL_FIELDS],
        metadata={
            b"beaconflow.json_columns": ",".join(JSON_COLUMNS).encode(),
            b"beaconflow.time": b"ISO-8601 UTC with Z",
        },
    )


def iso_utc(value: str | int | float) -> str:
    """A canonical ``time`` value as ISO-8601 UTC with ``Z`` (milliseconds kept if present)."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        millis = round(value * 1000)
        moment = datetime.fromtimestamp(millis / 1000, UTC)
        spec = "seconds" if millis % 1000 == 0 else "milliseconds"
    else:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError(f"time without offset: {value!r}")
        moment = moment.astimezone(UTC)
        spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _parquet_row(record: dict[str, Any]) -> dict[str, Any]:
    unknown = set(record) - set(CANONICAL_FIELDS)
    if unknown:
        raise ValueError(f"fields not in the Parquet schema: {sorted(unknown)}")
    row = dict(record)
    row["time"] = iso_utc(record["time"])
    row["user_id"] = str(record["user_id"])
    if "recipients" in record:
        row["recipients"] = [str(uid) for uid in record["recipients"]]
    for column in JSON_COLUMNS:
        if column in record:
            row[column] = json.dumps(record[column], ensure_ascii=False, sort_keys=True)
    return row


def write_parquet(
    records: Iterable[dict[str, Any]], path: str | os.PathLike[str], *, batch_size: int = 10000
) -> int:
    """Write records to a Parquet file with :func:`parquet_schema`, in row groups; a count.

    ``time`` becomes ISO-8601 UTC with ``Z``, ``user_id`` and ``recipients`` strings, and
    ``goal_counts``/``properties`` JSON strings; absent fields are nulls. Streams: at most
    ``batch_size`` rows are held in memory. Raises ValueError for a field outside the schema.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    count = 0
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(os.fspath(path), schema) as writer:
        for record in records:
            batch.append(_parquet_row(record))
            if len(batch) >= batch_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
                batch = []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return count


def read_parquet(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Read back a file of :func:`write_parquet`: nulls dropped, JSON columns decoded."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(os.fspath(path))
    for batch in parquet.iter_batches():
        for row in batch.to_pylist():
            record = {name: value for name, value in row.items() if value is not None}
            for column in JSON_COLUMNS:
                if column in record:
                    record[column] = json.loads(record[column])
            yield record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write ``-n`` generated events to ``--out`` (.jsonl, .jsonl.gz, .parquet)."""
    parser = argparse.ArgumentParser(
        prog="python -m beaconflow.samples.gamelog",
        description="Generate made-up Orchard Quest event logs (canonical records).",
    )
    parser.add_argument("-n", type=int, default=1000, help="number of events (default 1000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=DEFAULT_START,
        help="ISO-8601 start with offset (default 2025-06-01T00:00:00Z)",
    )
    parser.add_argument(
        "--end",
        type=datetime.fromisoformat,
        default=DEFAULT_END,
        help="ISO-8601 end with offset, exclusive (default 2025-06-08T00:00:00Z)",
    )
    parser.add_argument("--first-uid", type=int, default=FIRST_UID)
    parser.add_argument("--out", required=True, help="output path; format from the extension")
    args = parser.parse_args(argv)
    try:
        records = generate_events(
            args.n, seed=args.seed, start=args.start, end=args.end, first_uid=args.first_uid
        )
    except ValueError as error:
        parser.error(str(error))
    if args.out.endswith(".parquet"):
        count = write_parquet(records, args.out)
    else:
        count = write_jsonl(records, args.out)
    print(f"wrote {count} events to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
