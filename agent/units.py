"""Human units used in the config file: durations (``30s``), sizes (``256MiB``) and percentages (``80%``).

They are value types of the config models (``agent.model``: msgspec hands each the raw YAML value), so every
stage's config can use them and a wrong value is reported with the same message (and the same file:line:col)
wherever it appears. To a type checker they are plain floats and ints, which is what a validated field holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from ``1h30m``, ``500ms``, ``10s``, ``2d`` or a bare number of seconds.

    Bare numbers are accepted because YAML users write ``interval: 30`` and mean seconds; anything else
    that is not a well-formed duration is rejected rather than guessed at.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for part in _DURATION_PART.finditer(text):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
        pos = part.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m, h or d (e.g. 30s, 5m, 1h30m)")
    return total


def parse_size(value: object) -> int:
    """Bytes from ``64KiB``, ``256MiB``, ``1GB`` or a bare integer."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64KiB or 256MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = (match.group(2) or "B").lower()
            return int(float(match.group(1)) * _SIZE_UNITS[unit])
    raise ValueError(f"invalid size {value!r}: use a number with B, KiB, MiB, GiB (or KB, MB, GB)")


def parse_percent(value: object) -> float:
    """A percentage from ``80%`` or ``80``; must lie in 0..100."""
    if isinstance(value, bool):
        raise ValueError("expected a percentage such as 80%")
    if isinstance(value, str):
        text = value.strip().removesuffix("%").strip()
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"invalid percentage {value!r}: write it as 80%") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError("expected a percentage such as 80%")
    if not 0 <= number <= 100:
        raise ValueError(f"percentage {value!r} is outside 0..100")
    return number


def value_type(name: str, base: type, parse: Callable[[object], Any], doc: str, module: str = __name__) -> type:
    """A config value type (see agent/model.py): a ``base`` (float, int, str, list) whose ``from_config`` takes the
    raw YAML value through ``parse``. msgspec wants an instance of the declared type back, hence the subclass;
    ``agent.model.validate`` stores plain numbers in the end."""

    def from_config(cls: type, value: object) -> Any:
        return cls(parse(value))

    return type(name, (base,), {"__doc__": doc, "__slots__": (), "__module__": module,
                                "from_config": classmethod(from_config)})


if TYPE_CHECKING:
    Duration = float
    ByteSize = int
    Percent = float
else:
    Duration = value_type("Duration", float, parse_duration,
                          "Seconds, written in the config as ``30s``, ``5m``, ``1h30m``, ``500ms`` or a bare number.")
    ByteSize = value_type("ByteSize", int, parse_size, "Bytes, written in the config as ``64KiB``, ``256MiB`` or a "
                                                       "bare integer.")
    Percent = value_type("Percent", float, parse_percent, "A percentage 0..100, written as ``80%``.")


def format_duration(seconds: float) -> str:
    """A duration as an operator reads it in an alert: ``2h5m``, ``5m3s``, ``42s``."""
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts[:2]) or "0s"
