"""``where:``: conditions on a line's fields, all of which must hold.

```yaml
where:
  status: {gte: 500}            # numbers compare as numbers (a JSON number, or a string that is one)
  req.method: {in: [POST, PUT]} # dotted paths reach into nested objects; `tags.0` into arrays
  req.path: {match: '^/api/'}
  level: error                  # a scalar means equality
```

Semantics (one value model for every source, ``agent.format.values``):

* A missing field makes every operator false except ``exists: false`` (so ``ne``, ``not_in`` and
  ``not_match`` need the field to be there).
* ``eq``/``ne``/``in``/``not_in``: a string operand compares with the field's text (a JSON number's text too);
  a number with the field's number; ``true``/``false`` with a boolean (or the text ``true``/``false``, as logfmt
  writes them); ``null`` with JSON ``null``.
* ``gt``/``gte``/``lt``/``lte``: a number operand needs a numeric field; a string operand a string field.
* ``match``/``not_match``: a Python regex searched in the field's text. Objects, arrays and ``null`` have
  no text: only ``exists`` (and ``eq: null``) ask about them.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator, model_validator

from agent.format.values import MISSING, as_number, as_text

OPERATORS = ("eq", "ne", "in", "not_in", "match", "not_match", "gt", "gte", "lt", "lte", "exists")
_PATH = re.compile(r"[^\s.]+(?:\.[^\s.]+)*\Z")


def validate_path(path: object) -> str:
    if not isinstance(path, str) or not _PATH.match(path):
        raise ValueError(f"field path {path!r}: write names joined by dots, without spaces (e.g. req.path, tags.0)")
    return path


class FieldCondition(BaseModel):
    """The operators applied to one field (all must hold). A bare scalar in the YAML means ``eq``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    eq: Any = None
    ne: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    match: StrictStr | None = None
    not_match: StrictStr | None = None
    gt: Any = None
    gte: Any = None
    lt: Any = None
    lte: Any = None
    exists: StrictBool | None = None

    @model_validator(mode="before")
    @classmethod
    def _operators(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError("a list needs an operator: write {in: [...]}")
        if not isinstance(value, dict):
            return {"eq": value}
        if not value:
            raise ValueError("an empty condition: write an operator, e.g. {eq: value}")
        for key in value:
            if key not in OPERATORS:
                hint = " (a nested field is written with dots: req.method)" if isinstance(key, str) else ""
                raise ValueError(f"unknown operator {key!r}; known: {', '.join(OPERATORS)}{hint}")
        return value

    @field_validator("eq", "ne")
    @classmethod
    def _scalar(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError("needs a scalar: a string, a number, true/false or null")
        return value

    @field_validator("in_", "not_in")
    @classmethod
    def _scalars(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None:
            if not value:
                raise ValueError("an empty list never holds")
            for item in value:
                cls._scalar(item)
        return value

    @field_validator("gt", "gte", "lt", "lte")
    @classmethod
    def _orderable(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
            raise ValueError("needs a number (compared as numbers) or a string (compared as strings)")
        return value

    @field_validator("match", "not_match")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return value

    def operators(self) -> list[tuple[str, Any]]:
        """(operator, operand) in the order written, ``in`` under its own name."""
        return [("in" if name == "in_" else name, getattr(self, name)) for name in self.model_fields_set]


def _equals(operand: Any) -> Callable[[Any], bool]:
    if operand is None:
        return lambda v: v is None
    if isinstance(operand, bool):
        word = "true" if operand else "false"
        return lambda v: as_text(v) == word
    if isinstance(operand, int | float):
        return lambda v: as_number(v) == operand
    return lambda v: as_text(v) == operand


_ORDER = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _test(op: str, operand: Any) -> Callable[[Any], bool]:
    """One operator as a test of a present value."""
    if op == "eq":
        return _equals(operand)
    if op == "ne":
        equal = _equals(operand)
        return lambda v: not equal(v)
    if op in ("in", "not_in"):
        tests = [_equals(o) for o in operand]
        if op == "in":
            return lambda v: any(t(v) for t in tests)
        return lambda v: not any(t(v) for t in tests)
    if op in ("match", "not_match"):
        search = re.compile(operand).search
        if op == "match":
            return lambda v: (t := as_text(v)) is not None and search(t) is not None
        return lambda v: (t := as_text(v)) is not None and search(t) is None
    if op in _ORDER:
        compare = _ORDER[op]
        if isinstance(operand, str):
            return lambda v: isinstance(v, str) and compare(v, operand)
        return lambda v: (n := as_number(v)) is not None and compare(n, operand)
    raise AssertionError(op)


def _walk(value: Any, parts: tuple[str, ...]) -> Any:
    """``lookup_path`` for a path split once, at compile time (the hot path of every candidate line)."""
    for part in parts:
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


class Where:
    """A rule's compiled ``where``: ``holds(fields)`` is pure, safe in worker threads."""

    __slots__ = ("_checks",)

    def __init__(self, conditions: Mapping[str, FieldCondition]) -> None:
        checks: list[tuple[str, tuple[str, ...], bool, list[Callable[[Any], bool]]]] = []
        for path, condition in conditions.items():
            ops = condition.operators()
            # a missing field holds only `exists: false` (and that alone)
            missing_holds = all(op == "exists" and operand is False for op, operand in ops)
            tests = [_test(op, operand) for op, operand in ops if op != "exists"]
            if any(op == "exists" and operand is False for op, operand in ops):
                tests.append(lambda _v: False)  # present, but it must not exist
            # a key that holds the dots is looked up first (as lookup_path does); the walk only when it is not there
            checks.append((path, tuple(path.split(".")) if "." in path else (), missing_holds, tests))
        self._checks = tuple(checks)

    def __bool__(self) -> bool:
        return bool(self._checks)

    def holds(self, fields: Mapping[str, Any]) -> bool:
        for path, parts, missing_holds, tests in self._checks:
            value = fields.get(path, MISSING)
            if value is MISSING and parts:
                value = _walk(fields, parts)
            if value is MISSING:
                if not missing_holds:
                    return False
                continue
            for test in tests:
                if not test(value):
                    return False
        return True
