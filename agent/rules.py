"""Rules: which lines matter, and what identity a match has.

A rule turns a line into a *hit*: (rule, fire|resolve, named groups). Everything with time in it —
windows, reminders, recoveries — belongs to the alert state machine downstream; keeping rules stateless
lets one source's batch be evaluated in a worker thread while the loop keeps serving everything else.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agent.events import template_fields, validate_template
from agent.lines import LineChunk
from agent.match import MultiMatcher
from agent.units import Duration

BUILTIN_FIELDS = {"host", "path", "line", "rule", "source", "count", "first_seen", "last_seen", "samples",
                  "severity", "status",
                  "unit", "priority", "identifier", "pid",  # these four: journald entries only
                  "silent_for", "why"}  # absent and expect rules only


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None


class ThresholdConfig(BaseModel):
    """Fire only when ``count`` matches fall inside a sliding window of ``within``."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1)
    within: Duration = 60.0


class ResolveConfig(BaseModel):
    """How an open alert closes: after a quiet period, on an explicit recovery line, or both."""

    model_config = ConfigDict(extra="forbid")

    after: Duration | None = None
    match: str | None = None

    @field_validator("match")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value


class AbsentConfig(BaseModel):
    """Fire when no line matches the rule for ``after`` (per identity when the rule has ``identity``)."""

    model_config = ConfigDict(extra="forbid")

    after: Duration = Field(gt=0)


class ExpectConfig(BaseModel):
    """After a line matching the rule, a line matching ``match`` (same identity) must follow ``within``."""

    model_config = ConfigDict(extra="forbid")

    match: str
    within: Duration = Field(gt=0)

    @field_validator("match")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        _compile(value)
        return value


RuleKind = Literal["match", "absent", "expect"]


class RuleConfig(BaseModel):
    """One rule of a log or journal source."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    match: str | None = None
    contains: str | None = None
    exclude: str | None = None
    severity: Literal["Critical", "Warning", "Info"] = "Warning"
    title: str = "{rule} on {host}"
    description: str = (
        "{line}\n\n{count} matching line(s) from {first_seen} to {last_seen} in {path}\n{samples}"
    )
    alert_key: str | None = None
    identity: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    resolve: ResolveConfig = Field(default_factory=ResolveConfig)
    repeat_interval: Duration = 0.0
    samples: int = Field(default=3, ge=0, le=20)
    output: str | None = None
    absent: AbsentConfig | None = None
    expect: ExpectConfig | None = None

    @property
    def kind(self) -> RuleKind:
        """What the rule alerts on: matching lines, their absence, or a sequence that did not complete."""
        return "absent" if self.absent is not None else "expect" if self.expect is not None else "match"

    @field_validator("match", "exclude")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value

    @field_validator("title", "description", "alert_key")
    @classmethod
    def _valid_template(cls, value: str | None) -> str | None:
        return None if value is None else validate_template(value)

    @field_validator("labels")
    @classmethod
    def _valid_label_templates(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            validate_template(template)
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> RuleConfig:
        if (self.match is None) == (self.contains is None):
            raise ValueError("a rule needs exactly one of `match` (regex) or `contains` (literal text)")
        groups = self.group_names()
        for name in self.identity:
            if name not in groups:
                raise ValueError(f"identity field {name!r} is not a named group of `match` (groups: {sorted(groups)})")
        if self.absent is not None or self.expect is not None:
            self._timed_rule_consistent()
        if self.resolve.match is not None:
            resolve_groups = set(_compile(self.resolve.match).groupindex)
            missing = [n for n in self.identity if n not in resolve_groups]
            if missing:
                raise ValueError(
                    f"resolve.match must capture the identity groups {missing} so it closes the same alert"
                )
        global_labels = (info.context or {}).get("global_labels", set()) if info else set()
        known = BUILTIN_FIELDS | groups | set(self.labels) | set(global_labels)
        for field_name in ("title", "description", "alert_key"):
            template = getattr(self, field_name)
            if template is None:
                continue
            unknown = template_fields(template) - known
            if unknown:
                raise ValueError(
                    f"{field_name} refers to unknown field(s) {sorted(unknown)}; available: named groups "
                    f"{sorted(groups)}, labels, and {sorted(BUILTIN_FIELDS)}"
                )
        return self

    def _timed_rule_consistent(self) -> None:
        """``absent`` and ``expect`` have their own way to open and close an alert."""
        kind = "absent" if self.absent is not None else "expect"
        if self.absent is not None and self.expect is not None:
            raise ValueError("a rule takes one of `absent` and `expect`, not both")
        for name in ("threshold", "resolve", "alert_key"):
            if name in self.model_fields_set:
                raise ValueError(f"`{name}` does not apply to an `{kind}` rule (it opens when the time is up and "
                                 f"closes when the line arrives; `identity` splits it per identity)")
        if self.expect is not None:
            expect_groups = set(_compile(self.expect.match).groupindex)
            missing = [n for n in self.identity if n not in expect_groups]
            if missing:
                raise ValueError(f"expect.match must capture the identity groups {missing} so the start and the "
                                 f"finish are paired")

    def pattern(self) -> str:
        return self.match if self.match is not None else re.escape(self.contains or "")

    def group_names(self) -> set[str]:
        return set(_compile(self.pattern()).groupindex)


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> MultiMatcher:
    """Compiling a hyperscan database takes ~0.5 s; a reload or a second source with the same patterns
    reuses it (scans are thread-safe: scratch space is per thread)."""
    return MultiMatcher(patterns)


@dataclass(slots=True)
class Hit:
    """A line that fired or resolved a rule."""

    rule: int  # index into the source's rules
    kind: Literal["fire", "resolve"]
    line: str
    groups: dict[str, str]


class RuleSet:
    """All rules of one source compiled into one multi-pattern matcher."""

    def __init__(self, rules: Sequence[RuleConfig]) -> None:
        self.rules = list(rules)
        patterns: list[str] = []
        self._pattern_owner: list[tuple[int, Literal["fire", "resolve"]]] = []
        for index, rule in enumerate(self.rules):
            patterns.append(rule.pattern())
            self._pattern_owner.append((index, "fire"))
            closing = rule.expect.match if rule.expect is not None else rule.resolve.match
            if closing is not None:  # a recovery line, or the finish an `expect` rule waits for
                patterns.append(closing)
                self._pattern_owner.append((index, "resolve"))
        self._excludes = [_compile(r.exclude) if r.exclude else None for r in self.rules]
        self.matcher = _matcher(tuple(patterns)) if patterns else None

    def evaluate(self, lines: Sequence[str], data: bytes | None = None,
                 fields: Sequence[dict[str, str]] | None = None) -> list[Hit]:
        """Hits in line order. Runs in a worker thread: pure CPU, no shared mutable state.

        ``fields``: per-line source fields (journald unit, priority ...), under the line's named groups.
        A :class:`LineChunk` is scanned without decoding the lines no rule can match.
        """
        if self.matcher is None or not lines:
            return []
        found: Iterable[tuple[dict[str, str] | None, int, re.Match[str]]]
        if isinstance(lines, LineChunk):
            found = ((None, j, m) for j, m in self.matcher.scan_chunk(lines))
        else:
            found = ((fields[i] if fields is not None else None, j, m) for i, j, m in self.matcher.scan(lines, data))
        hits: list[Hit] = []
        for extra, pattern_index, match in found:
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
        if self.matcher is not None:
            for index, count in self.matcher.abandoned().items():
                name = self.rules[self._pattern_owner[index][0]].name
                out[name] = out.get(name, 0) + count
        return out

    def describe(self) -> dict[str, object]:
        return self.matcher.describe() if self.matcher is not None else {"engine": "none"}
