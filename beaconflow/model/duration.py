"""Durations as people write them on a command line: ``90s``, ``45m``, ``6h``, ``1h30m``, ``600``.

:func:`parse_duration` turns such a text into seconds, and :func:`format_duration` writes
seconds back the same way (for progress lines and messages). A plain number is seconds;
units are ``s``, ``m``, ``h`` and ``d``, each number may have a fraction (``1.5h``), and
several may follow each other, largest first (``1h30m``). No Beam, no network::

    python -m pytest tests/model/test_duration.py
"""

from __future__ import annotations

import math
import re

#: Seconds per unit.
UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}

_NUMBER = r"\d+(?:\.\d+)?"
_PLAIN = re.compile(_NUMBER)
_PART = re.compile(rf"({_NUMBER})([dhms])")
_WHOLE = re.compile(rf"(?:{_NUMBER}[dhms])+")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``90s``, ``45m``, ``6h``, ``1h30m``, ``600``); ValueError if it is none.

    Spaces around the text are ignored; units are lower case; a unit may appear once, and
    the units go from the largest to the smallest. Negative values are not durations.
    """
    value = text.strip()
    if _PLAIN.fullmatch(value):
        seconds = float(value)
    elif _WHOLE.fullmatch(value):
        parts = _PART.findall(value)
        units = [unit for _, unit in parts]
        order = list(UNITS)
        if len(set(units)) != len(units) or units != sorted(units, key=order.index):
            raise ValueError(f"not a duration: {text!r} (units go once each, largest first)")
        seconds = sum(float(number) * UNITS[unit] for number, unit in parts)
    else:
        raise ValueError(f"not a duration: {text!r} (write it as 90s, 45m, 6h, 1h30m or seconds)")
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` as :func:`parse_duration` reads it: ``6h``, ``1h30m``, ``45s``, ``0.5s``.

    Whole seconds from one minute up (a progress line needs no fraction of them there);
    below a minute, three significant digits (``12.3s``, ``0.05s``).
    """
    if seconds < 59.5:
        return f"{seconds:.3g}s"
    rest = round(seconds)
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = int(UNITS[unit])
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
