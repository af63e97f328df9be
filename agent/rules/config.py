"""A rule's config: which lines matter (``match``/``contains`` on the message, ``where`` on fields), and what
identity a match has. Checked again with the source it belongs to (``RuleConfig.check_for_source``): a
structured source (``format: json`` ..., journald) has fields to name; a plain-text source has only named groups
and the Kubernetes path fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from agent.events import SOURCE_LABEL_FIELDS, template_fields, template_paths, validate_template
from agent.match import compile_pattern
from agent.model import UNSET, Meta, Model, UnsetType, blame, field, global_labels
from agent.rules.where import Conditions, validate_path
from agent.units import Duration

BUILTIN_FIELDS = {"host", "path", "line", "rule", "source", "count", "first_seen", "last_seen", "samples",
                  "severity", "status",
                  "unit", "priority", "identifier", "pid",  # these four: journald entries only
                  "silent_for", "why"}  # absent and expect rules only
ALERT_FIELDS = {"host", "path", "line", "rule", "source", "count", "first_seen", "last_seen", "samples",
                "silent_for", "why"}
"""Template fields that are the alert's own: a record field of the same name does not shadow them."""

DEFAULT_DESCRIPTION = "{line}\n\n{count} matching line(s) from {first_seen} to {last_seen} in {path}\n{samples}"
_TRACKED = ("threshold", "resolve", "alert_key", "description")
"""The keys whose absence means something (see ``RuleConfig.given``): UNSET until ``__post_init__``."""


def compile_regex(pattern: str) -> re.Pattern[str]:
    """The rule's pattern compiled (remembered: ``agent.match.compile_pattern``), or a ValueError for the config."""
    try:
        return compile_pattern(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None


def _check_regex(key: str, pattern: str | None) -> None:
    if pattern is not None:
        with blame(key):
            compile_regex(pattern)


def _check_template(key: str | tuple[str, str], template: str | None) -> None:
    if template is not None:
        with blame(key):
            validate_template(template)


class ThresholdConfig(Model):
    """Fire only when ``count`` matches fall inside a sliding window of ``within``."""

    count: Annotated[int, Meta(ge=1)] = 1
    within: Duration = 60.0


class ResolveConfig(Model):
    """How an open alert closes: after a quiet period, on an explicit recovery line, or both."""

    after: Duration | None = None
    match: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_regex("match", self.match)


class AbsentConfig(Model):
    """Fire when no line matches the rule for ``after`` (per identity when the rule has ``identity``)."""

    after: Duration

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require_positive("after")


class ExpectConfig(Model):
    """After a line matching the rule, a line matching ``match`` (same identity) must follow ``within``."""

    match: str
    within: Duration

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_regex("match", self.match)
        self.require_positive("within")


RuleKind = Literal["match", "absent", "expect"]


class RuleConfig(Model, dict=True):
    """One rule of a log or journal source.

    What a rule may name depends on its source (a structured one has fields, a plain-text one only named
    groups): validating a rule checks what holds anywhere; the source's model then calls
    :meth:`check_for_source` for each of its rules. ``threshold``, ``resolve``, ``alert_key`` and
    ``description`` are UNSET until ``__post_init__`` fills in their defaults, which records whether they were
    given (:meth:`given`): an ``absent``/``expect`` rule refuses the first three and quotes only a description
    of its own.
    """

    name: Annotated[str, Meta(min_length=1)]
    match: str | None = None
    contains: str | None = None
    exclude: str | None = None
    severity: Literal["Critical", "Warning", "Info"] = "Warning"
    title: str = "{rule} on {host}"
    description: str | UnsetType = UNSET
    alert_key: str | UnsetType | None = UNSET
    identity: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    threshold: ThresholdConfig | UnsetType = UNSET
    resolve: ResolveConfig | UnsetType = UNSET
    repeat_interval: Duration = 0.0
    samples: Annotated[int, Meta(ge=0, le=20)] = 3
    output: str | None = None
    absent: AbsentConfig | None = None
    expect: ExpectConfig | None = None
    where: Conditions = field(default_factory=Conditions)
    """Conditions on the line's fields (dotted paths), all of which must hold."""

    @property
    def kind(self) -> RuleKind:
        """What the rule alerts on: matching lines, their absence, or a sequence that did not complete."""
        return "absent" if self.absent is not None else "expect" if self.expect is not None else "match"

    def __post_init__(self) -> None:
        """The checks that hold whatever the source (the rest: :meth:`check_for_source`)."""
        super().__post_init__()
        self._given = frozenset(name for name in _TRACKED if getattr(self, name) is not UNSET)
        if self.description is UNSET:
            self.description = DEFAULT_DESCRIPTION
        if self.alert_key is UNSET:
            self.alert_key = None
        if self.threshold is UNSET:
            self.threshold = ThresholdConfig()
        if self.resolve is UNSET:
            self.resolve = ResolveConfig()
        _check_regex("match", self.match)
        _check_regex("exclude", self.exclude)
        for key in ("title", "description", "alert_key"):
            _check_template(key, getattr(self, key))
        for key, template in self.labels.items():
            _check_template(("labels", key), template)
        if self.match is not None and self.contains is not None:
            raise ValueError("a rule takes one of `match` (regex) and `contains` (literal text), not both")
        if self.match is None and self.contains is None and not self.where:
            raise ValueError("a rule needs `match` (regex), `contains` (literal text) or `where` (field conditions)")
        if self.absent is not None or self.expect is not None:
            self._timed_rule_consistent()

    def _timed_rule_consistent(self) -> None:
        """``absent`` and ``expect`` have their own way to open and close an alert."""
        kind = "absent" if self.absent is not None else "expect"
        if self.absent is not None and self.expect is not None:
            raise ValueError("a rule takes one of `absent` and `expect`, not both")
        for name in ("threshold", "resolve", "alert_key"):
            if name in self._given:
                raise ValueError(f"`{name}` does not apply to an `{kind}` rule (it opens when the time is up and "
                                 f"closes when the line arrives; `identity` splits it per identity)")

    def check_for_source(self, structured: bool) -> None:
        """The checks that depend on the rule's source: ``structured`` (``format`` other than raw, or journald)
        has fields, so ``identity``, ``where`` and templates may name any field path; a plain-text source has
        only the named groups of ``match`` and the Kubernetes path fields. Raises ValueError (about the rule)."""
        groups = self.group_names()
        fields = groups | set(SOURCE_LABEL_FIELDS)
        for name in self.identity:
            if structured:
                validate_path(name)
            elif name not in fields:
                raise ValueError(f"identity field {name!r} is not a named group of `match` (groups: {sorted(groups)}); "
                                 f"a field path needs a structured source (`format: json`, `logfmt` ...)")
        if structured:
            return
        for name in self.where:
            if name not in fields:
                raise ValueError(f"where: field {name!r} does not exist in a plain-text source: set the source's "
                                 f"`format` (json, logfmt, cri, docker) or capture it as a named group of `match`")
        if self.expect is not None:
            expect_groups = set(compile_regex(self.expect.match).groupindex)
            missing = [n for n in self.identity if n not in expect_groups]
            if missing:
                raise ValueError(f"expect.match must capture the identity groups {missing} so the start and the "
                                 f"finish are paired")
        if self.resolve.match is not None:
            resolve_groups = set(compile_regex(self.resolve.match).groupindex)
            missing = [n for n in self.identity if n not in resolve_groups]
            if missing:
                raise ValueError(
                    f"resolve.match must capture the identity groups {missing} so it closes the same alert"
                )
        known = BUILTIN_FIELDS | groups | set(self.labels) | global_labels()
        for field_name in ("title", "description", "alert_key"):
            template = getattr(self, field_name)
            if template is None:
                continue
            unknown = template_fields(template) - known
            if unknown:
                raise ValueError(
                    f"{field_name} refers to unknown field(s) {sorted(unknown)}; available: named groups "
                    f"{sorted(groups)}, labels, and {sorted(BUILTIN_FIELDS)} (a structured source's fields need "
                    f"its `format`)"
                )

    def given(self, key: str) -> bool:
        """Whether the rule's YAML sets ``key``: known for the keys whose absence means something (``threshold``,
        ``resolve``, ``alert_key``, ``description``); an absence or expect alert quotes only a description the
        user wrote."""
        if key not in _TRACKED:
            raise KeyError(f"{key!r} is not tracked; known: {', '.join(_TRACKED)}")
        return key in self._given

    def model_copy(self, *, update: dict[str, Any] | None = None) -> RuleConfig:
        """A copy with some fields replaced; the defaults that were not given stay "not given" (``__post_init__``
        runs again on the copy and would otherwise take them for given)."""
        not_given = {name: UNSET for name in _TRACKED if name not in self._given}
        return msgspec.structs.replace(self, **{**not_given, **(update or {})})

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
