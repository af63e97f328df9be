"""A source's rules compiled: lines in, hits out.

A rule turns a line into a *hit*: (rule, fire|resolve, fields). Everything with time in it (windows,
reminders, recoveries) belongs to the alert state machine downstream; keeping rules stateless lets one
source's batch be evaluated in a worker thread while the loop keeps serving everything else.

Two ways through, chosen when the rules are compiled:

* plain text (``format: raw``, no ``where``): every rule's regex in one multi-pattern matcher over the raw
  chunk; only the lines the engine nominates are decoded.
* with fields (a record format, container framing, ``where``, journald ``where``): ``records.py``, which
  decides on the raw bytes first and parses only the lines a rule may match.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.format import FormatName, Parser
from agent.lines import LineChunk
from agent.match import MultiMatcher
from agent.match.guard import risk
from agent.rules.config import RuleConfig, compile_regex
from agent.rules.records import JOURNAL_TEMPLATE_FIELDS, RecordRules


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


class RuleSet:
    """All rules of one source compiled. ``formats``/``message_field``: the source's ``format`` chain;
    ``journal``: the lines are journald messages and each line's fields come with the batch."""

    def __init__(self, rules: Sequence[RuleConfig], *, formats: Sequence[FormatName] = ("raw",),
                 message_field: str | None = None, journal: bool = False, prefilter: bool = True,
                 cache_dir: str | None = None) -> None:
        """``prefilter=False`` parses every line (the reference the prefilter is tested against)."""
        self.rules = list(rules)
        self.formats = tuple(formats)
        self.message_field = message_field
        self.cache_dir = cache_dir
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
        self.journal = journal
        self.records: RecordRules | None = None
        if self.formats != ("raw",) or any(rule.where for rule in self.rules):
            self.records = RecordRules(self.rules, formats=self.formats, message_field=message_field, journal=journal,
                                       use_prefilter=prefilter, excludes=self._excludes,
                                       matcher=lambda p: _matcher(p, cache_dir))
            self.matcher = self.records.matcher
        else:
            self.matcher = _matcher(tuple(patterns), cache_dir) if patterns else None
        guarded = (self.matcher is not None and self.matcher.guard is not None) or any(
            rule.exclude and risk(rule.exclude) for rule in self.rules)
        self.quick = self.records is None and not guarded
        """A few lines are matched in microseconds whatever they hold: plain text, and no pattern (rule or
        exclude) the regex guard has to time. The pipeline matches small batches of such a rule set on the
        event loop; every other batch goes to a worker thread, where a slow regex blocks nothing else."""
        self.offloadable = self.records is not None and not guarded
        """A backlog of this rule set gains from worker processes (agent/rules/processes.py): structured rules
        are Python work per nominated line under the GIL. Plain-text rules are hyperscan's, which releases the
        GIL (threads use every core); a guarded regex keeps its time budget in this process."""

    @property
    def structured(self) -> bool:
        return self.records is not None

    @property
    def parser(self) -> Parser | None:
        return self.records.parser if self.records is not None else None

    def learned_plan(self) -> dict[int, int] | None:
        """Which prefilter each rule side looks for first, once learned from this process's lines (None before,
        and for plain-text rules); rule processes :meth:`adopt_plan` it instead of sampling again."""
        return self.records.raw.learned() if self.records is not None else None

    def adopt_plan(self, plan: dict[int, int]) -> None:
        if self.records is not None:
            self.records.raw.adopt(plan)

    # ------------------------------------------------------------------------------------- evaluating
    def evaluate(self, lines: Sequence[str], data: bytes | None = None,
                 fields: Sequence[dict[str, str]] | None = None, path: str = "") -> Hits:
        """Hits in line order. Runs in a worker thread: pure CPU, no shared mutable state.

        ``fields``: per-line source fields (journald unit, priority ...); ``path``: the file the lines are
        from (Kubernetes fields). A :class:`LineChunk` is scanned without decoding the lines no rule can match.
        """
        if not lines:
            return Hits()
        if self.records is not None:
            found, errors = self.records.evaluate(lines, data, fields, path)
            return Hits((Hit(*hit) for hit in found), errors)
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

    def abandoned(self) -> dict[str, int]:
        """Lines given up per rule: a rule whose regex can backtrack catastrophically ran over its time budget
        on them (see agent/match/guard.py)."""
        out: dict[str, int] = {}
        if self.records is not None:
            for rule, count in self.records.abandoned_sides().items():
                out[self.rules[rule].name] = out.get(self.rules[rule].name, 0) + count
        elif self.matcher is not None:
            for index, count in self.matcher.abandoned().items():
                name = self.rules[self._pattern_owner[index][0]].name
                out[name] = out.get(name, 0) + count
        return out

    def describe(self) -> dict[str, object]:
        info: dict[str, object] = self.matcher.describe() if self.matcher is not None else {"engine": "none"}
        if self.records is not None:
            info = {**info, **self.records.describe()}
        return info
