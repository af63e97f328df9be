"""Rules over records: a source with fields (a format, container framing, ``where``, journald ``where``).

Each rule side has *prefilters* (``prefilter.py``: one superset pattern per condition, and one for the
message regex); a line is a candidate for a side only when all of them match its raw bytes (each is a
superset of its condition, so their conjunction is a superset of the rule; ``candidates.py`` decides).
Only candidate lines are parsed (``agent.format``), and the rule's message regex, ``where`` and ``exclude``
decide on the parsed record. The answer is the same as parsing every line
(tests/test_rules_prefilter.py compares the two).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.events import SOURCE_LABEL_FIELDS
from agent.format import MISSING, FormatName, Parser, Record, kubernetes_fields, lookup_path
from agent.format.config import framing_of
from agent.format.values import template_text
from agent.lines import LineChunk
from agent.match import MultiMatcher
from agent.rules import prefilter as raw
from agent.rules.candidates import RawFilter
from agent.rules.config import RuleConfig
from agent.rules.where import Where

JOURNAL_TEMPLATE_FIELDS = ("unit", "priority", "identifier", "pid")
"""What a journald hit carries for its templates (every field is there for ``where``)."""
SHADOWED_WHEN_PRESENT = frozenset({"status", "severity"})
"""Template fields the alert has too: a record's own ``status`` wins in ``{status}``, but a record without one
leaves the alert's severity there (rather than an empty string)."""
WEAK_SCORE = 2
"""A prefilter this weak (a key's mere presence) is used only when a side has nothing better: it nominates
nearly every line, and every nomination costs a check."""

HitTuple = tuple[int, Literal["fire", "resolve"], str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class Side:
    """One regex-or-conditions a line is tested with: a rule's firing side, or its closing line."""

    rule: int
    kind: Literal["fire", "resolve"]
    pattern: int | None
    """Index of its message regex in the message matcher (None: conditions only)."""
    where: Where | None
    exclude: re.Pattern[str] | None
    paths: frozenset[str]
    required: tuple[int, ...]
    """Prefilter patterns that must all match the raw line (``candidates.RawFilter``); empty: every line."""


_JSON_STARTS = ("{", " ", "\t", "")
_NOT_AN_OBJECT = re.compile(rb"\n[^{ \t\n]")
"""A line starting with anything but ``{`` or a blank cannot be a JSON object (empty lines are no records)."""
NOT_AN_OBJECT_LINE = r"^[^{ \t\n]"
"""The same, for the multi-pattern engine (one line at a time, ``^`` at each line's start)."""


def evidently_not_json(lines: Sequence[str], data: bytes | None, engine: MultiMatcher | None = None) -> int:
    """Lines of a ``json`` source that cannot be a JSON object, counted on the raw bytes at C speed: the parse
    errors of lines no rule asked to parse. (A line that starts like an object and still does not parse is
    counted when a rule parses it; an empty line is not a record and not counted.) ``engine``: a matcher of
    :data:`NOT_AN_OBJECT_LINE` alone whose nominations are exact: on a chunk it counts about three times faster
    than the regex (0.14 against 0.42 ms/MiB), which mattered as much as all the rules' own scan."""
    if isinstance(lines, LineChunk):
        nominees = engine.nominees(lines) if engine is not None else None
        if nominees is not None:
            return len(nominees)
        raw = lines.data
        return (raw[:1] not in (b"{", b" ", b"\t", b"\n", b"")) + len(_NOT_AN_OBJECT.findall(raw))
    return sum(1 for line in lines if line[:1] not in _JSON_STARTS)


def _exact_engine(matcher: MultiMatcher) -> MultiMatcher | None:
    """``matcher`` when its fast engine answers exactly (nothing widened or left to ``re``), else None."""
    info = matcher.describe()
    return matcher if matcher.engine != "re" and not info["widened"] and not info["fallback"] else None


class RecordRules:
    """Compiled once per source and config; ``evaluate`` is pure (worker threads)."""

    def __init__(self, rules: Sequence[RuleConfig], *, formats: tuple[FormatName, ...], message_field: str | None,
                 journal: bool, use_prefilter: bool, matcher: Callable[[tuple[str, ...]], MultiMatcher],
                 excludes: Sequence[re.Pattern[str] | None]) -> None:
        self.formats = formats
        self.journal = journal
        self.parser = Parser(formats, message_field) if formats != ("raw",) else None
        message_patterns: list[str] = []
        raw_patterns: dict[str, int] = {}
        keyed: set[str] = set()
        alternatives: list[tuple[int, ...]] = []
        self.sides: list[Side] = []
        for index, rule in enumerate(rules):
            closing = rule.expect.match if rule.expect is not None else rule.resolve.match
            parts: list[tuple[Literal["fire", "resolve"], str | None]] = [("fire", rule.pattern())]
            if closing is not None:
                parts.append(("resolve", closing))
            for kind, pattern in parts:
                if pattern is not None:
                    message_patterns.append(pattern)
                found, values = self._prefilters(rule, kind, pattern) if use_prefilter else ([], [])
                keyed.update(p.pattern for p in found if p.keyed)
                required = tuple(raw_patterns.setdefault(p.pattern, len(raw_patterns)) for p in found)
                alternatives.append(tuple(raw_patterns.setdefault(p.pattern, len(raw_patterns)) for p in values))
                self.sides.append(Side(index, kind, len(message_patterns) - 1 if pattern is not None else None,
                                       Where(rule.where) if kind == "fire" and rule.where else None,
                                       excludes[index] if kind == "fire" else None,
                                       frozenset(rule.field_paths()), required))
        self.matcher = matcher(tuple(message_patterns)) if message_patterns else None
        """Every side's message regex over parsed messages (with the guard against runaway regexes)."""
        escape = raw.ESCAPE_SEEN if raw_patterns and any(name in ("json", "docker") for name in formats) else None
        self.raw = RawFilter([side.required for side in self.sides], list(raw_patterns), escape=escape,
                             matcher=matcher, keyed=[p in keyed for p in raw_patterns], alternatives=alternatives)
        self._not_an_object = _exact_engine(matcher((NOT_AN_OBJECT_LINE,))) if formats == ("json",) else None

    def _prefilters(self, rule: RuleConfig, kind: str,
                    pattern: str | None) -> tuple[list[raw.Prefilter], list[raw.Prefilter]]:
        """The supersets of this side of the rule over the raw line, most selective first (weak ones only
        when there is nothing else), and the *alternatives*: the value alone of a condition found in its keyed
        form (implied by it, so never checked; worth looking for first where it is rare enough)."""
        found: list[raw.Prefilter | None] = []
        values: list[raw.Prefilter] = []
        if pattern is not None:
            found.append(raw.literal(rule.contains) if kind == "fire" and rule.contains is not None
                         else raw.regex_literal(pattern))
        if kind == "fire" and not self.journal:  # journald fields are not in the message
            groups = rule.group_names()
            has_keys = any(name in ("json", "logfmt", "docker") for name in self.formats)
            unkeyed = groups | ({"stream", "time"} if framing_of(self.formats) == "cri" else set())
            for path, condition in rule.where.items():
                if path in SOURCE_LABEL_FIELDS:
                    continue  # from the file's name, not its lines
                best = raw.condition(path, condition, keyed=has_keys and path not in unkeyed,
                                     bare_keys="logfmt" in self.formats)
                found.append(best)
                if best is not None and best.keyed:
                    value = raw.unkeyed_value(condition, bare_keys="logfmt" in self.formats)
                    if value is not None and value.score > WEAK_SCORE:
                        values.append(value)
        ranked = sorted((p for p in found if p is not None), key=lambda p: -p.score)
        strong = [p for p in ranked if p.score > WEAK_SCORE]
        required = strong or ranked[:1]
        taken = {p.pattern for p in required}
        return required, [v for v in values if v.pattern not in taken]

    # ------------------------------------------------------------------------------------- evaluating
    def evaluate(self, lines: Sequence[str], data: bytes | None, fields: Sequence[Mapping[str, str]] | None,
                 path: str) -> tuple[list[HitTuple], dict[str, int]]:
        """(hits as (rule, kind, message, values), lines that did not parse per format)."""
        candidates = self.raw.candidates(lines, data)
        errors: dict[str, int] = {}
        counted_apart = self.formats == ("json",)
        if counted_apart:
            evident = evidently_not_json(lines, data, self._not_an_object)
            if evident:
                errors["json"] = evident
        if not candidates:
            return [], errors
        source_fields = kubernetes_fields(path) if path and not self.journal else {}
        parser = self.parser
        records: list[Record] = []
        for index, line, _sides in candidates:
            if fields is not None and index >= 0:
                record = Record(dict(fields[index]), line)  # journald: the entry's fields came with the batch
            elif parser is not None:
                record = parser.parse(line)
                if record.error is not None and not (counted_apart and line[:1] not in _JSON_STARTS):
                    errors[record.error] = errors.get(record.error, 0) + 1
            else:
                record = Record({}, line)
            if source_fields:
                record.fields = {**record.fields, **source_fields}
            records.append(record)
        matches: dict[tuple[int, int], re.Match[str]] = {}
        if self.matcher is not None:
            for k, j, m in self.matcher.scan([r.message for r in records]):
                matches[(k, j)] = m
        hits: list[HitTuple] = []
        sides = self.sides
        for k, (_index, _line, wanted) in enumerate(candidates):
            record = records[k]
            for s in wanted:
                side = sides[s]
                groups: dict[str, str] = {}
                if side.pattern is not None:
                    m = matches.get((k, side.pattern))
                    if m is None:
                        continue
                    groups = {name: v for name, v in m.groupdict().items() if v is not None}
                view: Mapping[str, Any] = {**record.fields, **groups} if groups else record.fields
                if side.where is not None and not side.where.holds(view):
                    continue
                if side.exclude is not None and side.exclude.search(record.message):
                    continue
                hits.append((side.rule, side.kind, record.message, self._values(side, view, groups)))
        return hits, errors

    def _values(self, side: Side, view: Mapping[str, Any], groups: dict[str, str]) -> dict[str, str]:
        """What the alert keeps of the line: named groups, the field paths the rule names (a missing one as
        an empty string), the source's label fields, and journald's four."""
        values = dict(groups)
        for p in side.paths:
            if p in values:
                continue
            value = lookup_path(view, p)
            if value is MISSING and p in SHADOWED_WHEN_PRESENT:
                continue
            values[p] = template_text(value)
        for name in (*SOURCE_LABEL_FIELDS, *(JOURNAL_TEMPLATE_FIELDS if self.journal else ())):
            if name not in values and isinstance(view.get(name), str):
                values[name] = view[name]
        return values

    def abandoned_sides(self) -> dict[int, int]:
        """Rule index -> lines its message regex gave up on (see agent/match/guard.py)."""
        out: dict[int, int] = {}
        if self.matcher is not None:
            owner = {side.pattern: side.rule for side in self.sides if side.pattern is not None}
            for index, count in self.matcher.abandoned().items():
                out[owner[index]] = out.get(owner[index], 0) + count
        return out

    def describe(self) -> dict[str, object]:
        return {"format": list(self.formats), **self.raw.describe()}
