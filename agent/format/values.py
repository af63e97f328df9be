"""One value model for every source's fields (JSON records, logfmt pairs, container framing, journald).

A field is reached by a dotted path (``req.path``, ``tags.0``; a key that itself holds dots, as logfmt's
``req.path=/x`` does, is found first). Comparisons need two views of a value:

* its **text**: strings as they are, booleans as ``true``/``false``, numbers as Python writes them; ``null``,
  objects and arrays have none (a condition on them only asks ``exists``).
* its **number**: JSON numbers, and strings that are JSON numbers (``"503"``, logfmt's ``status=503``): the
  JSON grammar exactly, so ``" 5"``, ``0x1f`` or ``1_000`` are text, not numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agent.events import MISSING, json_text, lookup

__all__ = ["MISSING", "as_number", "as_text", "lookup_path", "template_text"]

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")


def lookup_path(fields: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or ``MISSING`` (never attribute access: see ``agent.events.lookup``)."""
    return lookup(fields, path)


def as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def as_number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and len(value) < 400 and _JSON_NUMBER.match(value):
        number = float(value)
        return int(value) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    return None


def template_text(value: Any) -> str:
    """What ``{field}`` renders: a missing field or ``null`` as an empty string, objects and arrays as JSON."""
    if value is MISSING or value is None:
        return ""
    text = as_text(value)
    return text if text is not None else json_text(value)
