"""The benchmarks' data shapes: the light default log and a heavy one with many properties.

``light`` is :func:`beaconflow.samples.gamelog.generate_events`: every Kontagent type, mostly
short events, a third of the KISSmetrics messages with one to three properties. ``heavy`` is
a mobile game's analytics stream as a product team instruments it: installs, purchases,
level-ups and invites, each carrying 5 to 10 KISSmetrics properties, with unicode text,
URL-reserved characters (``& = ? # % + /``, spaces, quotes) in names and values, and in about
one event in twelve one of a few long property names (100 to 250 characters, as experiment
and feature-flag names are). Property names repeat from event to event, as they do in real
instrumentation; values mostly vary. Both are deterministic for a seed. Print a few with::

    python -m benchmarks.shapes --shape heavy -n 5
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from beaconflow.samples.gamelog import generate_events

#: The shapes :func:`generate` knows.
SHAPES = ("light", "heavy")

#: A heavy event kind's share of the stream.
HEAVY_MIX: tuple[tuple[str, float], ...] = (
    ("install", 0.15),
    ("purchase", 0.20),
    ("level_up", 0.40),
    ("invite", 0.25),
)

#: Long property names: experiment and feature-flag names of 100 to 250 characters.
LONG_NAMES: tuple[str, ...] = (
    "Experiment: onboarding flow variant for the summer 2025 retention test (cohort B, "
    "holdout excluded) / v3",
    "Feature flag — orchard_market_dynamic_pricing_with_regional_currency_rounding & "
    "promotional_bundles_enabled_for_returning_players_after_7_days_inactive?source=remote",
    "Attribution: campaign=summer_harvest_2025&network=partner_games_portal&creative="
    "video_15s_orchard_sunset&placement=rewarded_interstitial&bid_strategy=target_roas "
    "#q3 'final' \"approved\" 100% budget + bonus",
)
#: Share of heavy events that carry one long property name.
LONG_NAME_SHARE = 1 / 12

_PLATFORMS = ("iOS", "Android", "Web (Chrome)", "Web (Safari)")
_VERSIONS = ("3.14.1", "3.14.2", "3.15.0-beta+42", "3.15.0")
_LOCALES = ("en-US", "de-DE", "pt-BR", "ja-JP", "fr-FR", "pl-PL")
_DEVICES = ("iPhone 15 Pro", "Pixel 8", "Galaxy S24 Ultra", "iPad Air (5th gen)", "Desktop")
_SOURCES = (
    "organic",
    "ad: summer & fall?promo=25%",
    "partner/games-portal",
    "invite #friend",
    'search: "orchard quest" free',
)
_CAMPAIGNS = ("Été 2025 — Récolte 🍎", "Sommer-Äpfel & Birnen", "Primavera 50% + bônus",
              "夏のオーチャード", "Summer Harvest #3", "key=value test")  # fmt: skip
_REFERRERS = (
    "https://example.com/landing?utm_source=fb&utm_campaign=été#top",
    "https://ads.example.net/click?id=42&r=%2Fplay",
    "android-app://com.example.launcher/",
    "",
)
_ITEMS = ("Golden Watering Can", "Bag of Magic Beans", "Tractor — Deluxe",
          "Orchard Expansion (5 by 5)", "Seeds & Soil Bundle", "50% More Harvest + Fertilizer",
          "Starter Pack #1", "Crates, Baskets, Ladders", "price=free Scarecrow",
          "Äpfel-Kiste 🍎", "Gem Pack \"Mega\" (1200)")  # fmt: skip
_STORES = ("App Store", "Google Play", "Web Shop / EU", "Daily Deals #7")
_CURRENCIES = ("USD", "EUR", "BRL", "JPY", "PLN")
_PAYMENTS = ("card", "paypal", "apple_pay", "google_pay", "gift card / voucher")
_BOSSES = ("Giant Mole", "Crow King", "Blight Beetle", "Frost Giant", "Le Corbeau d'Or")
_DIFFICULTIES = ("easy", "normal", "hard", "nightmare?!")
_WORLDS = ("Sunny Acres", "Café Crêpes ☕ Farm", "Äpfel & Birnen Hof", "Orchard #1",
           "Mañana Meadows 🍎", "Happy Valley")  # fmt: skip
_CHANNELS = ("sms", "email", "whatsapp", "facebook messenger", "copy link")
_MESSAGES = (
    "Join me in Orchard Quest! 🍒",
    "Help me harvest — I'll share the apples & pears",
    "Komm & spiel mit: 100% gratis",
    'Can you beat level 12? "It\'s hard"',
    "Venha jogar comigo! Código: A+B=C",
    "",
)
_TEMPLATES = ("invite_v2", "invite_v3_reward", "invite/holiday", "invite?ab=1")

_Value = Callable[[random.Random], Any]


def _choice(values: Sequence[Any]) -> _Value:
    return lambda rng: rng.choice(values)


def _int(low: int, high: int) -> _Value:
    return lambda rng: rng.randint(low, high)


def _ratio(rng: random.Random) -> float:
    return round(rng.random(), 3)


def _flag(rng: random.Random) -> bool:
    return rng.random() < 0.5


def _code(rng: random.Random) -> str:
    return f"{rng.choice('ABCDEFGH')}{rng.randint(100, 999)}-{rng.getrandbits(24):06x}"


#: Per kind: the property names (in instrumentation order) and how each value is drawn.
_PROPERTIES: dict[str, tuple[tuple[str, _Value], ...]] = {
    "install": (
        ("Platform", _choice(_PLATFORMS)),
        ("App Version", _choice(_VERSIONS)),
        ("Install Source", _choice(_SOURCES)),
        ("Campaign", _choice(_CAMPAIGNS)),
        ("Device Model", _choice(_DEVICES)),
        ("Locale", _choice(_LOCALES)),
        ("Referrer URL", _choice(_REFERRERS)),
        ("Install Size (MB)", _int(80, 420)),
        ("Tutorial Skipped", _flag),
        ("Attribution Code", _code),
        ("Ad Cost (USD)", _ratio),
    ),
    "purchase": (
        ("Item", _choice(_ITEMS)),
        ("Item ID", _code),
        ("Price", _choice((0.99, 1.99, 4.99, 9.99, 19.99, 49.99, 99.99))),
        ("Currency", _choice(_CURRENCIES)),
        ("Store", _choice(_STORES)),
        ("Payment Method", _choice(_PAYMENTS)),
        ("Discount %", _choice((0, 10, 25, 50))),
        ("First Purchase", _flag),
        ("Player Level", _int(1, 80)),
        ("Gems Balance", _int(0, 250000)),
        ("Offer", _choice(_CAMPAIGNS)),
    ),
    "level_up": (
        ("Level", _int(2, 80)),
        ("World", _choice(_WORLDS)),
        ("Score", _int(0, 2_000_000)),
        ("Stars", _int(0, 3)),
        ("Time Spent (s)", _int(20, 3600)),
        ("Boss", _choice(_BOSSES)),
        ("Difficulty", _choice(_DIFFICULTIES)),
        ("Hints Used", _int(0, 5)),
        ("Accuracy", _ratio),
        ("Path", lambda rng: f"world/{rng.randint(1, 9)}/level {rng.randint(1, 40)}"),
        ("Boosters", _choice(("none", "x2 speed", "shield + magnet", "all (3)"))),
    ),
    "invite": (
        ("Channel", _choice(_CHANNELS)),
        ("Invitees", _int(1, 4)),
        ("Message", _choice(_MESSAGES)),
        ("Reward", _choice(("50 gems", "1 golden seed", "none", "25% off"))),
        ("Invite Template", _choice(_TEMPLATES)),
        ("Player Level", _int(1, 80)),
        ("Friends in Game", _int(0, 300)),
        ("Screen", _choice(("neighbors", "after level-up", "shop/gifts", "settings?tab=social"))),
        ("Locale", _choice(_LOCALES)),
        ("Contest", _flag),
    ),
}


def _properties(kind: str, rng: random.Random) -> dict[str, Any]:
    """5 to 10 of the kind's properties (names in a random subset), maybe one long name."""
    pool = _PROPERTIES[kind]
    count = rng.randint(5, min(10, len(pool)))
    chosen = sorted(rng.sample(range(len(pool)), count))
    properties = {pool[i][0]: pool[i][1](rng) for i in chosen}
    if rng.random() < LONG_NAME_SHARE:
        del properties[pool[chosen[-1]][0]]  # still 5 to 10 in all
        properties[rng.choice(LONG_NAMES)] = rng.choice(("A", "B", "control", "on", "off", 1))
    return properties


def heavy_events(
    n: int,
    *,
    seed: int = 11,
    start: datetime = datetime(2025, 6, 1, tzinfo=UTC),
    end: datetime = datetime(2025, 6, 8, tzinfo=UTC),
) -> Iterator[dict[str, Any]]:
    """``n`` canonical records of the heavy shape, times spread evenly over ``[start, end)``."""
    rng = random.Random(seed)
    low, width = int(start.timestamp()), int((end - start).total_seconds())
    kinds = [kind for kind, _ in HEAVY_MIX]
    weights = [weight for _, weight in HEAVY_MIX]
    players: list[int] = []
    levels: dict[int, int] = {}
    next_uid = 200_000_001
    for index in range(n):
        kind = rng.choices(kinds, weights)[0] if players else "install"
        seconds = low + width * index // max(n, 1)
        record: dict[str, Any] = {"event_id": f"hv-{seed}-{index:08d}"}
        record["time"] = (
            seconds
            if rng.random() < 0.3
            else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        if kind == "install":
            uid = next_uid
            next_uid += 1
            players.append(uid)
            levels[uid] = 1
            record |= {"user_id": uid, "event": "application_installed"}
        else:
            uid = players[rng.randrange(len(players))]
            record["user_id"] = uid if rng.random() < 0.7 else str(uid)
        if kind == "purchase":
            record |= {"event": "revenue_tracking", "value": rng.choice((99, 199, 499, 999, 4999))}
        elif kind == "level_up":
            levels[uid] += 1
            record |= {"event": "level_up", "subtype1": "progress", "value": levels[uid],
                       "level": levels[uid]}  # fmt: skip
        elif kind == "invite":
            friends = [next_uid + k for k in range(rng.randint(1, 4))]
            next_uid += len(friends)
            record |= {
                "event": "invite_sent",
                "recipients": friends,
                "tracking_tag": format(rng.getrandbits(64), "016x"),
                "subtype1": rng.choice(("neighbor_request", "gift", "help_harvest")),
            }
        properties = _properties(kind, rng)
        # the properties that repeat a field agree with it
        if "Level" in properties:
            properties["Level"] = levels[uid]
        if "Invitees" in properties:
            properties["Invitees"] = len(record["recipients"])
        record["properties"] = properties
        yield record


def generate(
    shape: str,
    n: int,
    *,
    start: datetime = datetime(2025, 6, 1, tzinfo=UTC),
    end: datetime = datetime(2025, 6, 8, tzinfo=UTC),
) -> Iterator[dict[str, Any]]:
    """``n`` canonical records of ``shape`` (``light`` or ``heavy``), deterministically."""
    if shape == "light":
        return generate_events(n, start=start, end=end)
    if shape == "heavy":
        return heavy_events(n, start=start, end=end)
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--shape", choices=SHAPES, default="heavy")
    parser.add_argument("-n", type=int, default=5, help="records to print")
    args = parser.parse_args(argv)
    for record in generate(args.shape, args.n):
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
