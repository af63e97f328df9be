"""Deciding on the raw bytes before parsing: for each rule, a regex that matches every raw line the rule can
match (a *superset*), so only candidate lines are parsed.

Parsing every JSON line caps a Python agent near a million lines a second before any rule runs (orjson,
field-notes); scanning the raw bytes with the multi-pattern engine runs at grep's speed. A rule holds only
if *all* its conditions hold, so the raw form of any one of them is a valid prefilter; the most selective one
is chosen. Each must be a superset over every way the field can be written:

* a literal (``level: error``, ``contains``, the longest literal every match of a regex has) appears verbatim
  in the raw line unless one of its characters was escaped. Only runs of characters JSON and logfmt never
  need to escape are used (no quote, backslash, slash or control character); any other escape is ``\\uXXXX``,
  so a line holding ``\\u`` is a candidate for every rule.
* a number's text (``eq: 500``) is in the line, unless the number is a float written differently (``5e2``,
  ``500.0`` prints as itself); a digit followed by ``.``, ``e`` or ``E`` makes the line a candidate.
* ``gte``/``gt`` of a non-negative bound ``N``: the key, quotes and ``:``/``=``, then an integer part ``>= N``
  (a digit-range regex) or a number with an exponent.
* otherwise the key's name (the field is there), when the key appears in the raw line at all (not for the
  Kubernetes path fields, the CRI framing fields or named groups, which the raw line does not spell as keys).

The property test (tests/test_rules_prefilter.py) compares every verdict with parsing every line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from agent.match import sre
from agent.rules.where import FieldCondition

ESCAPE_SEEN = r"\\u"
"""A JSON ``\\uXXXX`` escape can hide any character: such a line is a candidate for every prefiltered rule."""

_UNSAFE = re.compile(r'["\\/\x00-\x1f\x7f]+')
_FLOAT_CHARS = frozenset("0123456789.eE+-")
_KEY_GAP = r'[\\"\s]*[:=][\\"\s]*'


@dataclass(frozen=True, slots=True)
class Prefilter:
    pattern: str
    score: int
    """Higher is more selective (fewer lines parsed)."""


def literal(text: str, *, ignorecase: bool = False) -> Prefilter | None:
    """The longest run of ``text`` that is written verbatim in JSON and logfmt (at least 2 characters)."""
    run = max(_UNSAFE.split(text), key=len)
    if len(run) < 2:
        return None
    pattern = re.escape(run)
    if ignorecase:
        pattern = f"(?i:{pattern})"
    if set(run) <= _FLOAT_CHARS:  # could be the text of a float, which JSON may spell another way
        pattern = f"(?:{pattern}|[0-9][.eE])"
    return Prefilter(pattern, 2 * len(run))


def regex_literal(pattern: str) -> Prefilter | None:
    """The longest literal every match of a Python regex contains, or None."""
    best: tuple[str, bool] = ("", False)
    if sre.parser is None:
        return None
    try:
        tree = sre.parser.parse(pattern)
    except Exception:
        return None
    c = sre.constants
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)}

    def walk(items: Any, ignorecase: bool) -> None:
        nonlocal best
        run: list[str] = []

        def flush() -> None:
            nonlocal best
            text = max(_UNSAFE.split("".join(run)), key=len)
            if len(text) > len(best[0]):
                best = (text, ignorecase)
            run.clear()

        for op, av in items:
            if op is c.LITERAL:
                run.append(chr(av))
                continue
            flush()
            if op is c.SUBPATTERN:
                _group, add, remove, sub = av
                walk(sub, (ignorecase or bool(add & c.SRE_FLAG_IGNORECASE)) and not remove & c.SRE_FLAG_IGNORECASE)
            elif op in repeats and av[0] >= 1:
                walk(av[2], ignorecase)
            elif op is getattr(c, "ATOMIC_GROUP", None):
                walk(av, ignorecase)
        flush()

    walk(tree, bool(tree.state.flags & c.SRE_FLAG_IGNORECASE))
    return literal(best[0], ignorecase=best[1]) if best[0] else None


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _value(operand: Any) -> Prefilter | None:
    """A superset for ``field == operand`` over the raw line (the key aside)."""
    if operand is None:
        return literal("null")
    if isinstance(operand, bool):
        return literal("true" if operand else "false")
    if isinstance(operand, int | float):
        text = _number_text(operand)
        return Prefilter(f"(?:{re.escape(text)}|[0-9][.eE])", 2 * len(text))
    return literal(operand)


def at_least(bound: int) -> str:
    """A regex for the decimal integers ``>= bound`` (no leading zeros; bound >= 1), matched as a prefix."""
    digits = str(bound)
    width = len(digits)
    alternatives = [f"[1-9][0-9]{{{width},}}"]
    for i, d in enumerate(digits):
        if d != "9":
            low = int(d) + 1
            cls = "9" if low == 9 else f"[{low}-9]"
            rest = width - i - 1
            alternatives.append(digits[:i] + cls + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(digits)
    return "|".join(alternatives)


def key_of(path: str) -> str | None:
    """The name the raw line spells the field's key with (the last part of the path), when it is safe."""
    key = path.rsplit(".", 1)[-1]
    if key.isdigit() or _UNSAFE.search(key) or not key:
        return None
    return key


def condition(path: str, cond: FieldCondition, *, keyed: bool) -> Prefilter | None:
    """The most selective superset for one field's condition; ``keyed``: the raw line names its key."""
    key = key_of(path) if keyed else None
    best: Prefilter | None = None
    for op, operand in cond.operators():
        found: Prefilter | None = None
        if op == "eq":
            found = _value(operand)
        elif op == "in":
            parts = [_value(o) for o in operand]
            if all(p is not None for p in parts):
                found = Prefilter("|".join(f"(?:{p.pattern})" for p in parts if p),
                                  min(p.score for p in parts if p) - len(parts) + 1)
        elif op == "match":
            found = regex_literal(operand)
        elif op in ("gt", "gte") and key is not None and isinstance(operand, int | float) and operand >= 0:
            bound = math.floor(operand)
            number = "-?[0-9]" if bound == 0 else f"(?:{at_least(bound)})"
            found = Prefilter(f"{re.escape(key)}{_KEY_GAP}(?:{number}|[0-9]+(?:\\.[0-9]+)?[eE])", 12)
        if found is None and key is not None and op in ("eq", "in", "match", "gt", "gte", "lt", "lte", "exists") \
                and not (op == "exists" and operand is False):
            found = Prefilter(re.escape(key), 1)
        if found is not None and (best is None or found.score > best.score):
            best = found
    return best
