"""The built-in mappings: Segment, Mixpanel, Amplitude and GA4 exports, by name.

``--mapping segment`` reads the TOML shipped in ``beaconflow/model/mappings/``;
``beaconflow mapping show segment`` prints it to copy and adapt. A ``--mapping`` value without
``/`` and without ``.toml`` is a built-in name. What each does is said at the top of its file
and in docs/input.md ("Built-in mappings").
"""

from __future__ import annotations

from importlib import resources

from beaconflow.model.mapping import MappingError, RecordMapping, parse_mapping

#: The built-in mappings' names.
BUILTINS = ("segment", "mixpanel", "amplitude", "ga4")


def is_builtin_name(value: str) -> bool:
    """Whether a ``--mapping`` value names a built-in mapping rather than a file."""
    return "/" not in value and "\\" not in value and not value.endswith(".toml")


def builtin_text(name: str) -> str:
    """The TOML of a built-in mapping; MappingError listing the names for an unknown one."""
    if name not in BUILTINS:
        raise MappingError(
            f"{name!r} is not a built-in mapping; built-ins: {', '.join(BUILTINS)} "
            f"(a mapping file's name has a / or ends in .toml: ./{name}.toml)"
        )
    return (resources.files("beaconflow.model") / "mappings" / f"{name}.toml").read_text("utf-8")


def builtin_mapping(name: str) -> RecordMapping:
    """A built-in mapping, parsed."""
    return parse_mapping(builtin_text(name), f"built-in mapping {name}")
