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

ESCAPE_SEEN = r"\\u[0-9a-fA-F]{4}"
"""A JSON ``\\uXXXX`` escape can hide any character: such a line is a candidate for every prefiltered rule."""

_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]+')
"""Characters a JSON or logfmt writer may escape as ``\\X`` (a slash is written ``/`` or ``\\/``: see ``_lit``)."""
_UNSAFE_KEY = re.compile(r'["\\/\x00-\x1f\x7f]')
_FLOAT_CHARS = frozenset("0123456789.eE+-")
_KEY_GAP = r'[\\"\s]*[:=][\\"\s]*'
_MAX_ALTERNATIVES = 16


@dataclass(frozen=True, slots=True)
class Prefilter:
    pattern: str
    score: int
    """Higher is more selective (fewer lines parsed)."""
    keyed: bool = False
    """The pattern starts with a field's key: the engine verifies the rest at every occurrence of the key, which a
    JSON or logfmt log writes on most lines (0.2-0.25 ms per MiB each in the benchmark, a literal ~0.02)."""


def _lit(run: str) -> str:
    """``run`` as a regex over the raw line: a slash may be written escaped (``\\/``, PHP and some Java), and
    escaped again inside a Docker record's ``log`` string (``\\\\/``, or ``\\\\\\/`` from a writer that escapes
    slashes too). At most three backslashes: ``\\\\*`` (any run) let the engine stop at every slash (+0.17 ms per
    MiB for one such pattern in the benchmark; ``{0,3}`` costs what ``?`` does, ~0.02)."""
    return re.escape(run).replace("/", "\\\\{0,3}/")


def _run(text: str) -> str:
    return max(_UNSAFE.split(text), key=len)


def literal(text: str, *, ignorecase: bool = False) -> Prefilter | None:
    """The longest run of ``text`` that is written verbatim in JSON and logfmt (at least 3 characters: shorter
    ones nominate too many lines, and the fast engine runs them with ``re`` on every line)."""
    return alternatives({text}, ignorecase=ignorecase)


def alternatives(texts: set[str], *, ignorecase: bool = False) -> Prefilter | None:
    """A superset for "the line holds one of ``texts``": each one's longest verbatim run, OR-ed."""
    runs = sorted({_run(t) for t in texts})
    if not runs or min(map(len, runs)) < 3:
        return None
    parts = []
    for run in runs:
        pattern = _lit(run)
        if set(run) <= _FLOAT_CHARS:  # could be the text of a float, which JSON may spell another way
            pattern = f"{pattern}|[0-9][.eE]"
        parts.append(pattern)
    pattern = parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)
    if ignorecase:
        pattern = f"(?i:{pattern})"
    elif len(parts) > 1 or "|" in pattern:
        pattern = f"(?:{pattern})"
    return Prefilter(pattern, 2 * min(map(len, runs)) - (len(runs) - 1))


def _exact(items: Any, c: Any) -> set[str] | None:
    """The finite set of strings a regex fragment matches exactly (``(declined|failed)``, ``(has )?``), or
    None when it is not one (or has more than ``_MAX_ALTERNATIVES``)."""
    out = {""}
    for op, av in items:
        if op is c.LITERAL:
            options: set[str] | None = {chr(av)}
        elif op is c.SUBPATTERN and not av[1] and not av[2]:
            options = _exact(av[3], c)
        elif op is c.BRANCH:
            options = set()
            for branch in av[1]:
                found = _exact(branch, c)
                if found is None:
                    return None
                options |= found
        elif op is c.MAX_REPEAT and av[0] == 0 and av[1] == 1:
            inner = _exact(av[2], c)
            options = None if inner is None else inner | {""}
        elif op is c.IN and all(o is c.LITERAL for o, _ in av):
            options = {chr(v) for _, v in av}
        else:
            return None
        if options is None or len(out) * len(options) > _MAX_ALTERNATIVES:
            return None
        out = {a + b for a in out for b in options}
    return out


def _tree(pattern: str) -> Any:
    if sre.parser is None:
        return None
    try:
        return sre.parser.parse(pattern)
    except Exception:
        return None


def regex_literal(pattern: str) -> Prefilter | None:
    """The most selective literal (or set of literals, one of which) every match of a Python regex holds."""
    tree = _tree(pattern)
    if tree is None:
        return None
    c = sre.constants
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)}
    best: Prefilter | None = None

    def consider(texts: set[str], ignorecase: bool) -> None:
        nonlocal best
        found = alternatives(texts, ignorecase=ignorecase)
        if found is not None and (best is None or found.score > best.score):
            best = found

    def walk(items: Any, ignorecase: bool) -> None:
        current = {""}
        for op, av in items:
            exact = _exact([(op, av)], c)
            if exact is not None and len(current) * len(exact) <= _MAX_ALTERNATIVES:
                current = {a + b for a in current for b in exact}
                continue
            consider(current, ignorecase)
            current = {""}
            if exact is not None:
                consider(exact, ignorecase)
            elif op is c.SUBPATTERN:
                _group, add, remove, sub = av
                walk(sub, (ignorecase or bool(add & c.SRE_FLAG_IGNORECASE)) and not remove & c.SRE_FLAG_IGNORECASE)
            elif op in repeats and av[0] >= 1:
                walk(av[2], ignorecase)
            elif op is getattr(c, "ATOMIC_GROUP", None):
                walk(av, ignorecase)
        consider(current, ignorecase)

    walk(tree, bool(tree.state.flags & c.SRE_FLAG_IGNORECASE))
    return best


def anchored_prefix(pattern: str) -> str:
    """The literal text a regex's every match starts the searched string with (``^/admin/`` -> ``/admin/``)."""
    tree = _tree(pattern)
    if tree is None or tree.state.flags & sre.constants.SRE_FLAG_IGNORECASE:
        return ""
    c = sre.constants
    items = list(tree)
    if not items or items[0][0] is not c.AT or items[0][1] not in (c.AT_BEGINNING, c.AT_BEGINNING_STRING):
        return ""
    prefix = []
    for op, av in items[1:]:
        if op is not c.LITERAL:
            break
        prefix.append(chr(av))
    return "".join(prefix)


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text_of(operand: Any) -> str:
    if operand is None:
        return "null"
    if isinstance(operand, bool):
        return "true" if operand else "false"
    if isinstance(operand, int | float):
        return _number_text(operand)
    return str(operand)


def _value(operand: Any) -> Prefilter | None:
    """A superset for ``field == operand`` over the raw line, wherever the value is."""
    if isinstance(operand, int | float) and not isinstance(operand, bool):
        text = _number_text(operand)
        return Prefilter(f"(?:{re.escape(text)}|[0-9][.eE])", 2 * len(text))
    return literal(_text_of(operand))


_EXPONENT = "-?[0-9]+(?:\\.[0-9]+)?[eE]"
"""A number written with an exponent (``5E2``): its text as Python prints it can be anything."""


def _keyed_value(operand: Any) -> str | None:
    """What follows the key and ``:``/``=`` when ``field == operand``: the start of the value as written (or a
    number with an exponent), as a regex; None when the value starts with a character that may be escaped."""
    if isinstance(operand, int | float) and not isinstance(operand, bool) and operand == 0:
        return f"-?0|{_EXPONENT}"  # -0 and -0.0 are 0 too
    text = _text_of(operand)
    lead = _UNSAFE.split(text, 1)[0] if text else ""
    if not lead or lead != text[: len(lead)]:
        return None
    return f"{_lit(lead)}|{_EXPONENT}" if set(lead) <= _FLOAT_CHARS else _lit(lead)


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
    if key.isdigit() or _UNSAFE_KEY.search(key) or not key:
        return None
    return key


def condition(path: str, cond: FieldCondition, *, keyed: bool, bare_keys: bool = False) -> Prefilter | None:
    """The most selective superset for one field's condition. ``keyed``: the raw line names the field's key
    (``"status":``, ``status=``), so a value can be looked for right after it; ``bare_keys``: logfmt, where a
    bare key is ``true`` without the word being written."""
    key = key_of(path) if keyed else None
    best: Prefilter | None = None
    for op, operand in cond.operators():
        found: Prefilter | None = None
        if op in ("eq", "in"):
            values = [operand] if op == "eq" else list(operand)
            if bare_keys and any(_text_of(v) == "true" for v in values):
                found = None  # `flag` alone means true: only the key is sure to be there
            elif key is not None and all(_keyed_value(v) is not None for v in values):
                after = "|".join(f"(?:{_keyed_value(v)})" for v in values)
                found = Prefilter(f"{re.escape(key)}{_KEY_GAP}(?:{after})",
                                  8 + min(2 * len(_text_of(v)) for v in values) - len(values), keyed=True)
            else:
                found = _anywhere(values)
        elif op == "match":
            found = regex_literal(operand)
            lead = _UNSAFE.split(anchored_prefix(operand), 1)[0]
            if key is not None and lead and (found is None or 8 + 2 * len(lead) > found.score):
                found = Prefilter(f"{re.escape(key)}{_KEY_GAP}{_lit(lead)}", 8 + 2 * len(lead), keyed=True)
        elif op in ("gt", "gte") and key is not None and isinstance(operand, int | float) and operand >= 0:
            bound = math.floor(operand)
            number = "-?[0-9]" if bound == 0 else f"(?:{at_least(bound)})"
            found = Prefilter(f"{re.escape(key)}{_KEY_GAP}(?:{number}|[0-9]+(?:\\.[0-9]+)?[eE])", 12, keyed=True)
        if found is None and key is not None and op in ("eq", "in", "match", "gt", "gte", "lt", "lte", "exists") \
                and not (op == "exists" and operand is False):
            found = Prefilter(re.escape(key), 1)
        if found is not None and (best is None or found.score > best.score):
            best = found
    return best


def unkeyed_value(cond: FieldCondition, *, bare_keys: bool = False) -> Prefilter | None:
    """For an ``eq``/``in``/``match`` condition, a superset that does not name the key: one of the values (or the
    literal every match of the regex holds), wherever it is in the line. Less selective than the keyed form (the
    value may stand in another field too) but a literal, which the engine finds without stopping at every key:
    the prefilter plan (``candidates.py``) looks for it first when it nominates few more lines."""
    for op, operand in cond.operators():
        if op == "match":
            found = regex_literal(operand)
            if found is not None:
                return found
            continue
        if op not in ("eq", "in"):
            continue
        values = [operand] if op == "eq" else list(operand)
        if bare_keys and any(_text_of(v) == "true" for v in values):
            return None
        found = _anywhere(values)
        if found is not None:
            return found
    return None


def _anywhere(values: list[Any]) -> Prefilter | None:
    """A superset for "the field is one of ``values``", wherever in the line the value is written."""
    parts = [_value(v) for v in values]
    if not all(p is not None for p in parts):
        return None
    return Prefilter("|".join(f"(?:{p.pattern})" for p in parts if p),
                     min(p.score for p in parts if p) - len(parts) + 1)
