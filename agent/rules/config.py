"""A rule's config: which lines matter (``match``/``contains`` on the message, ``where`` on fields), and what
identity a match has. Validated with the source it belongs to: a structured source (``format: json`` ...,
journald) has fields to name; a plain-text source has only named groups and the Kubernetes path fields.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from agent.events import SOURCE_LABEL_FIELDS, template_fields, template_paths, validate_template
from agent.rules.where import FieldCondition, validate_path
from agent.units import Duration

BUILTIN_FIELDS = {"host", "path", "line", "rule", "source", "count", "first_seen", "last_seen", "samples",
                  "severity", "status",
                  "unit", "priority", "identifier", "pid",  # these four: journald entries only
                  "silent_for", "why"}  # absent and expect rules only
ALERT_FIELDS = {"host", "path", "line", "rule", "source", "count", "first_seen", "last_seen", "samples",
                "silent_for", "why"}
"""Template fields that are the alert's own: a record field of the same name does not shadow them."""

_STRUCTURED: ContextVar[bool] = ContextVar("dutytail_rules_structured", default=False)


@contextlib.contextmanager
def validating_for(structured: bool) -> Iterator[None]:
    """Rules validated inside this block belong to a source with fields (``format`` other than raw, or
    journald): ``identity``, ``where`` and templates may name any field path. The source config's validator
    sets it around its rules, so each problem keeps its exact ``file:line:col``."""
    token = _STRUCTURED.set(structured)
    try:
        yield
    finally:
        _STRUCTURED.reset(token)


def compile_regex(pattern: str) -> re.Pattern[str]:
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
            compile_regex(value)
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
        compile_regex(value)
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
    where: dict[str, FieldCondition] = Field(default_factory=dict)
    """Conditions on the line's fields (dotted paths), all of which must hold."""

    @property
    def kind(self) -> RuleKind:
        """What the rule alerts on: matching lines, their absence, or a sequence that did not complete."""
        return "absent" if self.absent is not None else "expect" if self.expect is not None else "match"

    @field_validator("match", "exclude")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            compile_regex(value)
        return value

    @field_validator("where", mode="before")
    @classmethod
    def _valid_where_paths(cls, value: object) -> object:
        if isinstance(value, dict):
            for path in value:
                validate_path(path)
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
        if self.match is not None and self.contains is not None:
            raise ValueError("a rule takes one of `match` (regex) and `contains` (literal text), not both")
        if self.match is None and self.contains is None and not self.where:
            raise ValueError("a rule needs `match` (regex), `contains` (literal text) or `where` (field conditions)")
        structured = _STRUCTURED.get()
        groups = self.group_names()
        fields = groups | set(SOURCE_LABEL_FIELDS)
        for name in self.identity:
            if structured:
                validate_path(name)
            elif name not in fields:
                raise ValueError(f"identity field {name!r} is not a named group of `match` (groups: {sorted(groups)}); "
                                 f"a field path needs a structured source (`format: json`, `logfmt` ...)")
        if not structured:
            for name in self.where:
                if name not in fields:
                    raise ValueError(f"where: field {name!r} does not exist in a plain-text source: set the source's "
                                     f"`format` (json, logfmt, cri, docker) or capture it as a named group of `match`")
        if self.absent is not None or self.expect is not None:
            self._timed_rule_consistent()
        if self.resolve.match is not None:
            resolve_groups = set(compile_regex(self.resolve.match).groupindex)
            missing = [n for n in self.identity if n not in resolve_groups]
            if missing and not structured:
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
            if unknown and not structured:
                raise ValueError(
                    f"{field_name} refers to unknown field(s) {sorted(unknown)}; available: named groups "
                    f"{sorted(groups)}, labels, and {sorted(BUILTIN_FIELDS)} (a structured source's fields need "
                    f"its `format`)"
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
            expect_groups = set(compile_regex(self.expect.match).groupindex)
            missing = [n for n in self.identity if n not in expect_groups]
            if missing and not _STRUCTURED.get():
                raise ValueError(f"expect.match must capture the identity groups {missing} so the start and the "
                                 f"finish are paired")

    def pattern(self) -> str | None:
        """The regex over the message (None: a rule of ``where`` conditions alone)."""
        if self.match is not None:
            return self.match
        return re.escape(self.contains) if self.contains is not None else None

    def summary(self) -> str:
        """What the rule looks for, in one line (an absence alert quotes it)."""
        parts = [self.pattern() or ""] if self.pattern() is not None else []
        for path, condition in self.where.items():
            parts.append(" ".join(f"{path} {op} {operand!r}" for op, operand in condition.operators()))
        return "; ".join(parts)

    def group_names(self) -> set[str]:
        pattern = self.pattern()
        return set(compile_regex(pattern).groupindex) if pattern is not None else set()

    def field_paths(self) -> set[str]:
        """Field paths the rule's identity and templates name: what a structured hit must carry."""
        paths = set(self.identity)
        for template in (self.title, self.description, self.alert_key or "", *self.labels.values()):
            paths |= template_paths(template)
        return paths - ALERT_FIELDS
