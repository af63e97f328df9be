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
from typing import TYPE_CHECKING, Any

from agent.format.values import MISSING, as_number, as_text
from agent.model import FieldError, blame

OPERATORS = ("eq", "ne", "in", "not_in", "match", "not_match", "gt", "gte", "lt", "lte", "exists")
_PATH = re.compile(r"[^\s.]+(?:\.[^\s.]+)*\Z")
_SCALAR_NEEDED = "needs a scalar: a string, a number, true/false or null"


def validate_path(path: object) -> str:
    if not isinstance(path, str) or not _PATH.match(path):
        raise ValueError(f"field path {path!r}: write names joined by dots, without spaces (e.g. req.path, tags.0)")
    return path


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _check(op: str, operand: Any) -> None:
    """One operator's operand as the YAML gave it; FieldError blames the operand (or an item of its list)."""
    if op in ("eq", "ne"):
        if not _is_scalar(operand):
            raise FieldError(op, _SCALAR_NEEDED)
    elif op in ("in", "not_in"):
        if not isinstance(operand, list):
            raise FieldError(op, "needs a list, e.g. [POST, PUT]")
        if not operand:
            raise FieldError(op, "an empty list never holds")
        for index, item in enumerate(operand):
            if not _is_scalar(item):
                raise FieldError((op, index), _SCALAR_NEEDED)
    elif op in ("match", "not_match"):
        if not isinstance(operand, str):
            raise FieldError(op, "needs a regex (a string)")
        try:
            re.compile(operand)
        except re.error as exc:
            raise FieldError(op, f"invalid regex {operand!r}: {exc}") from None
    elif op == "exists":
        if not isinstance(operand, bool):
            raise FieldError(op, "needs true or false")
    elif isinstance(operand, bool) or not isinstance(operand, str | int | float):  # gt, gte, lt, lte
        raise FieldError(op, "needs a number (compared as numbers) or a string (compared as strings)")


class FieldCondition:
    """The operators applied to one field (all must hold). A bare scalar in the YAML means ``eq``.

    A value type, not a model: ``eq: null`` is an operand (JSON ``null``) and must differ from no ``eq`` at all,
    and ``operators()`` gives the operators in the order written. ``FieldCondition(in_=[...])`` builds one
    without checks (``in`` is a Python keyword); :meth:`from_config` checks and reshapes what the YAML holds.
    """

    __slots__ = ("_operators",)

    def __init__(self, **operators: Any) -> None:
        named = [("in" if op == "in_" else op, operand) for op, operand in operators.items()]
        for op, _operand in named:
            if op not in OPERATORS:
                raise TypeError(f"unknown operator {op!r}")
        self._operators: tuple[tuple[str, Any], ...] = tuple(named)

    @classmethod
    def from_config(cls, value: Any) -> FieldCondition:
        """The condition a YAML value writes: ``{op: operand, ...}``, or a scalar (``eq``). A problem with one
        operand raises FieldError naming that operator, so the error points at the operand."""
        if isinstance(value, list):
            raise ValueError("a list needs an operator: write {in: [...]}")
        if not isinstance(value, dict):
            value = {"eq": value}
        if not value:
            raise ValueError("an empty condition: write an operator, e.g. {eq: value}")
        for key in value:
            if key not in OPERATORS:
                hint = " (a nested field is written with dots: req.method)" if isinstance(key, str) else ""
                raise ValueError(f"unknown operator {key!r}; known: {', '.join(OPERATORS)}{hint}")
        for op, operand in value.items():
            _check(op, operand)
        condition = cls.__new__(cls)
        condition._operators = tuple(value.items())
        return condition

    def to_config(self) -> dict[str, Any]:
        return dict(self._operators)

    def operators(self) -> list[tuple[str, Any]]:
        """(operator, operand) in the order written, ``in`` under its own name."""
        return list(self._operators)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldCondition):
            return NotImplemented
        return self._operators == other._operators

    def __hash__(self) -> int:
        return hash(tuple((op, tuple(v) if isinstance(v, list) else v) for op, v in self._operators))

    def __repr__(self) -> str:
        return f"FieldCondition({', '.join(f'{op}={operand!r}' for op, operand in self._operators)})"


if TYPE_CHECKING:
    Conditions = dict[str, FieldCondition]
else:
    class Conditions(dict):
        """A rule's ``where``: field path -> condition. One value type for the whole mapping (not a
        ``dict[str, FieldCondition]`` field) so that an error inside a condition names its field path: msgspec
        does not name dict keys in its error paths, and the error must point at that field's operator."""

        __slots__ = ()

        @classmethod
        def from_config(cls, value: object) -> Conditions:
            if not isinstance(value, dict):
                raise ValueError("needs field paths and their conditions, e.g. {status: {gte: 500}}")
            for path in value:
                validate_path(path)
            conditions = cls()
            for path, condition in value.items():
                with blame(path):
                    conditions[path] = FieldCondition.from_config(condition)
            return conditions

        def to_config(self) -> dict[str, Any]:
            return {path: condition.to_config() for path, condition in self.items()}


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
