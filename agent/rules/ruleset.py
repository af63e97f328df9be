"""A source's rules compiled: lines in, hits out.

A rule turns a line into a *hit*: (rule, fire|resolve, fields). Everything with time in it (windows,
reminders, recoveries) belongs to the alert state machine downstream; keeping rules stateless lets one
source's batch be evaluated in a worker thread while the loop keeps serving everything else.

Two ways through, chosen when the rules are compiled:

* plain text (``format: raw``, no ``where``): every rule's regex in one multi-pattern matcher over the raw
  chunk; only the lines the engine nominates are decoded.
* with fields (a record format, container framing, ``where``, journald ``where``): the raw chunk is scanned
  with each rule's *prefilter* (``prefilter.py``), only candidate lines are parsed (``agent.format``), and the
  rule's message regex, ``where`` and ``exclude`` decide on the parsed record. The answer is the same as
  parsing every line.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.events import SOURCE_LABEL_FIELDS
from agent.format import MISSING, FormatName, Parser, Record, kubernetes_fields, lookup_path
from agent.format.config import framing_of
from agent.format.values import template_text
from agent.lines import LineChunk
from agent.match import MultiMatcher
from agent.rules import prefilter as raw_prefilter
from agent.rules.config import RuleConfig, compile_regex
from agent.rules.where import Where

JOURNAL_TEMPLATE_FIELDS = ("unit", "priority", "identifier", "pid")
"""What a journald hit carries for its templates (every field is there for ``where``)."""
SHADOWED_WHEN_PRESENT = frozenset({"status", "severity"})
"""Template fields the alert has too: a record's own ``status`` wins in ``{status}``, but a record without one
leaves the alert's severity there (rather than an empty string)."""


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...], cache_dir: str | None = None) -> MultiMatcher:
    """Compiling a hyperscan database takes seconds for a thousand patterns: a reload or a second source with
    the same patterns reuses it (scans are thread-safe: scratch space is per thread), and ``cache_dir`` keeps
    it on disk for the next start (agent/match/cache.py)."""
    return MultiMatcher(patterns, cache_dir=cache_dir)


@dataclass(slots=True)
class Hit:
    """A line that fired or resolved a rule."""

    rule: int  # index into the source's rules
    kind: Literal["fire", "resolve"]
    line: str
    groups: dict[str, str]
    """Named groups, and (structured sources) the field paths the rule's identity and templates name."""


class Hits(list[Hit]):
    """A batch's hits, with the lines whose format did not parse (per format) on the side."""

    parse_errors: dict[str, int]

    def __init__(self, hits: Iterable[Hit] = (), parse_errors: dict[str, int] | None = None) -> None:
        super().__init__(hits)
        self.parse_errors = parse_errors or {}


@dataclass(frozen=True, slots=True)
class _Owner:
    """One regex-or-conditions a line is tested with: a rule's firing side, or its closing line."""

    rule: int
    kind: Literal["fire", "resolve"]
    has_pattern: bool
    where: Where | None
    exclude: re.Pattern[str] | None
    paths: frozenset[str]


class RuleSet:
    """All rules of one source compiled. ``formats``/``message_field``: the source's ``format`` chain;
    ``journal``: the lines are journald messages and each line's fields come with the batch."""

    def __init__(self, rules: Sequence[RuleConfig], *, formats: Sequence[FormatName] = ("raw",),
                 message_field: str | None = None, journal: bool = False, prefilter: bool = True,
                 cache_dir: str | None = None) -> None:
        """``prefilter=False`` parses every line (the reference the prefilter is tested against)."""
        self.rules = list(rules)
        self.formats = tuple(formats)
        patterns: list[str] = []
        self._pattern_owner: list[tuple[int, Literal["fire", "resolve"]]] = []
        for index, rule in enumerate(self.rules):
            pattern = rule.pattern()
            if pattern is not None:
                patterns.append(pattern)
                self._pattern_owner.append((index, "fire"))
            closing = rule.expect.match if rule.expect is not None else rule.resolve.match
            if closing is not None:  # a recovery line, or the finish an `expect` rule waits for
                patterns.append(closing)
                self._pattern_owner.append((index, "resolve"))
        self._excludes = [compile_regex(r.exclude) if r.exclude else None for r in self.rules]
        self.parser = Parser(self.formats, message_field) if self.formats != ("raw",) else None
        self.structured = self.parser is not None or any(rule.where for rule in self.rules)
        self.journal = journal
        if not self.structured:
            self.matcher = _matcher(tuple(patterns), cache_dir) if patterns else None
            return
        # the message matcher: every owner's regex over parsed messages (with the guard against runaway ones)
        self.matcher = _matcher(tuple(patterns), cache_dir) if patterns else None
        self._owners: list[_Owner] = []
        self._pattern_of_owner: dict[int, int] = {}
        raw_patterns: list[str] = []
        self._raw_owner: list[int] = []  # prefilter pattern -> owner (-1: the escape catch-all)
        self._always: list[int] = []
        pattern_index = 0
        for index, rule in enumerate(self.rules):
            closing = rule.expect.match if rule.expect is not None else rule.resolve.match
            sides: list[tuple[Literal["fire", "resolve"], str | None]] = [("fire", rule.pattern())]
            if closing is not None:
                sides.append(("resolve", closing))
            for kind, pattern in sides:
                owner = len(self._owners)
                where = Where(rule.where) if kind == "fire" and rule.where else None
                self._owners.append(_Owner(index, kind, pattern is not None, where,
                                           self._excludes[index] if kind == "fire" else None,
                                           frozenset(rule.field_paths())))
                if pattern is not None:
                    self._pattern_of_owner[pattern_index] = owner
                    pattern_index += 1
                best = self._prefilter(rule, kind, pattern) if prefilter else None
                if best is None:
                    self._always.append(owner)
                else:
                    raw_patterns.append(best.pattern)
                    self._raw_owner.append(owner)
        always = set(self._always)
        self._prefiltered = [o for o in range(len(self._owners)) if o not in always]
        if raw_patterns and any(name in ("json", "docker") for name in self.formats):
            raw_patterns.append(raw_prefilter.ESCAPE_SEEN)
            self._raw_owner.append(-1)
        self.prefilter = _matcher(tuple(raw_patterns), cache_dir) if raw_patterns else None

    def _prefilter(self, rule: RuleConfig, kind: str, pattern: str | None) -> raw_prefilter.Prefilter | None:
        """The most selective superset of this side of the rule over the raw line (None: test every line)."""
        candidates: list[raw_prefilter.Prefilter | None] = []
        if pattern is not None:
            candidates.append(raw_prefilter.literal(rule.contains) if kind == "fire" and rule.contains is not None
                              else raw_prefilter.regex_literal(pattern))
        if kind == "fire" and not self.journal:  # journald fields are not in the message
            groups = rule.group_names()
            has_keys = any(name in ("json", "logfmt", "docker") for name in self.formats)
            unkeyed = groups | ({"stream", "time"} if framing_of(self.formats) == "cri" else set())
            for path, condition in rule.where.items():
                if path in SOURCE_LABEL_FIELDS:
                    continue  # from the file's name, not its lines
                candidates.append(raw_prefilter.condition(path, condition, keyed=has_keys and path not in unkeyed))
        found = [c for c in candidates if c is not None]
        return max(found, key=lambda c: c.score) if found else None

    # ------------------------------------------------------------------------------------- evaluating
    def evaluate(self, lines: Sequence[str], data: bytes | None = None,
                 fields: Sequence[dict[str, str]] | None = None, path: str = "") -> Hits:
        """Hits in line order. Runs in a worker thread: pure CPU, no shared mutable state.

        ``fields``: per-line source fields (journald unit, priority ...); ``path``: the file the lines are
        from (Kubernetes fields). A :class:`LineChunk` is scanned without decoding the lines no rule can match.
        """
        if not lines:
            return Hits()
        if self.structured:
            return self._evaluate_records(lines, data, fields, path)
        if self.matcher is None:
            return Hits()
        found: Iterable[tuple[dict[str, str] | None, int, re.Match[str]]]
        if isinstance(lines, LineChunk):
            found = ((None, j, m) for j, m in self.matcher.scan_chunk(lines))
        else:
            found = ((fields[i] if fields is not None else None, j, m) for i, j, m in self.matcher.scan(lines, data))
        hits = Hits()
        for entry, pattern_index, match in found:
            extra = {k: entry[k] for k in JOURNAL_TEMPLATE_FIELDS if k in entry} if entry else None
            rule_index, kind = self._pattern_owner[pattern_index]
            line = match.string
            exclude = self._excludes[rule_index]
            if kind == "fire" and exclude is not None and exclude.search(line):
                continue
            groups = {k: v for k, v in match.groupdict().items() if v is not None}
            hits.append(Hit(rule_index, kind, line, {**extra, **groups} if extra else groups))
        return hits

    def _candidates(self, lines: Sequence[str], data: bytes | None) -> list[tuple[int, str, set[int]]]:
        """(line index, line, owners to test it with), in line order: what the raw-bytes prefilter leaves
        (the index is -1 on the undecoded path, where only the nominated lines are ever decoded)."""
        everyone = set(self._prefiltered)
        raw_owner = self._raw_owner
        if self.prefilter is not None and not self._always and isinstance(lines, LineChunk):
            out: list[tuple[int, str, set[int]]] = []
            for j, m in self.prefilter.scan_chunk(lines):  # one decoded str per nominated line
                owner = raw_owner[j]
                if not out or out[-1][1] is not m.string:
                    out.append((-1, m.string, set()))
                out[-1][2].update(everyone if owner < 0 else (owner,))
            return out
        per_line: dict[int, set[int]] = defaultdict(set)
        if self.prefilter is not None:
            for i, j, _m in self.prefilter.scan(lines, data):
                owner = raw_owner[j]
                per_line[i].update(everyone if owner < 0 else (owner,))
        if self._always:
            always = set(self._always)
            return [(i, line, per_line.get(i, set()) | always) for i, line in enumerate(lines)]
        return [(i, lines[i], owners) for i, owners in sorted(per_line.items())]

    def _evaluate_records(self, lines: Sequence[str], data: bytes | None,
                          fields: Sequence[dict[str, str]] | None, path: str) -> Hits:
        candidates = self._candidates(lines, data)
        if not candidates:
            return Hits()
        source_fields = kubernetes_fields(path) if path and not self.journal else {}
        parser = self.parser
        errors: dict[str, int] = {}
        records: list[Record] = []
        for index, line, _owners in candidates:
            if fields is not None and index >= 0:
                record = Record(dict(fields[index]), line)  # journald: the entry's fields came with the batch
            elif parser is not None:
                record = parser.parse(line)
                if record.error is not None:
                    errors[record.error] = errors.get(record.error, 0) + 1
            else:
                record = Record({}, line)
            if source_fields:
                record.fields = {**record.fields, **source_fields}
            records.append(record)
        matches: dict[tuple[int, int], re.Match[str]] = {}
        if self.matcher is not None:
            for k, j, m in self.matcher.scan([r.message for r in records]):
                matches[(k, self._pattern_of_owner[j])] = m
        hits = Hits(parse_errors=errors)
        owners = self._owners
        for k, (_index, _line, wanted) in enumerate(candidates):
            record = records[k]
            for o in sorted(wanted):
                owner = owners[o]
                groups: dict[str, str] = {}
                if owner.has_pattern:
                    m = matches.get((k, o))
                    if m is None:
                        continue
                    groups = {name: v for name, v in m.groupdict().items() if v is not None}
                view: Mapping[str, Any] = {**record.fields, **groups} if groups else record.fields
                if owner.where is not None and not owner.where.holds(view):
                    continue
                if owner.exclude is not None and owner.exclude.search(record.message):
                    continue
                hits.append(Hit(owner.rule, owner.kind, record.message, self._values(owner, view, groups)))
        return hits

    def _values(self, owner: _Owner, view: Mapping[str, Any], groups: dict[str, str]) -> dict[str, str]:
        """What the alert keeps of the line: named groups, the field paths the rule names (a missing one as
        an empty string), the source's label fields, and journald's four."""
        values = dict(groups)
        for p in owner.paths:
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

    def abandoned(self) -> dict[str, int]:
        """Lines given up per rule: a rule whose regex can backtrack catastrophically ran over its time budget
        on them (see agent/match/guard.py)."""
        out: dict[str, int] = {}
        if self.matcher is not None:
            for index, count in self.matcher.abandoned().items():
                name = self.rules[self._pattern_owner[index][0]].name
                out[name] = out.get(name, 0) + count
        return out

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = self.matcher.describe() if self.matcher is not None else {"engine": "none"}
        if self.structured:
            info = {**info, "format": list(self.formats),
                    "prefiltered_rules": len(self._prefiltered), "rules_parsing_every_line": len(self._always)}
        return info
