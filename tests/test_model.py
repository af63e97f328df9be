"""agent/model.py: the config models' base. Errors carry the key path of the value at fault (what
agent/config.py turns into FILE:LINE:COL), whichever way the problem was found: msgspec's own type and
constraint checks, unknown and missing keys, a model's ``__post_init__``, a value type's ``from_config``, and a
value type that validates a nested model."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
import pytest

from agent.model import FieldError, Meta, Model, ModelError, Problem, field, global_labels, validate
from agent.units import Duration


class Inner(Model):
    port: Annotated[int, Meta(ge=1, le=65535)]
    timeout: Duration = 5.0

    def __post_init__(self) -> None:
        if self.timeout > 60:
            raise FieldError("timeout", "at most 60s")


class Wrapped:
    """A value type that reshapes its input and validates a nested model (as `where` conditions do)."""

    def __init__(self, inner: Inner) -> None:
        self.inner = inner

    @classmethod
    def from_config(cls, value: Any) -> Wrapped:
        return cls(validate(Inner, {"port": value} if isinstance(value, int) else value))


class Outer(Model, dict=True):
    name: str
    inners: list[Inner] = field(default_factory=list)
    wrapped: Wrapped | None = None
    seen_labels: frozenset[str] = frozenset()
    modes: list[Literal["fast", "safe"]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.name == "bad":
            raise ValueError("the name is bad")
        self.seen_labels = global_labels()


def problem(data: Any) -> Problem:
    with pytest.raises(ModelError) as caught:
        Outer.model_validate(data)
    assert len(caught.value.problems) == 1
    return caught.value.problems[0]


@pytest.mark.parametrize(("data", "expected"), [
    ({"name": 1}, Problem(("name",), "Expected `str`, got `int`")),
    ({"name": "a", "inners": [{"port": 1}, {"port": 0}]}, Problem(("inners", 1, "port"), "Expected `int` >= 1")),
    ({"name": "a", "inners": [{"port": 1, "timeout": "5q"}]},
     Problem(("inners", 0, "timeout"), "invalid duration '5q': use a number with ms, s, m, h or d (e.g. 30s, 5m, "
                                       "1h30m)")),
    ({"name": "a", "inners": [{"port": 1, "timeout": "2m"}]}, Problem(("inners", 0, "timeout"), "at most 60s")),
    ({"name": "a", "inners": [{"port": 1, "bogus": 2}]}, Problem(("inners", 0, "bogus"), "unknown key", "unknown")),
    ({"name": "a", "inners": [{}]}, Problem(("inners", 0, "port"), "required key is missing", "missing")),
    ({"name": "bad"}, Problem((), "the name is bad")),
    ({"name": "a", "inners": {}}, Problem(("inners",), "Expected `list`, got `mapping`")),
    ({"name": "a", "modes": ["safe", "quick"]},
     Problem(("modes", 1), "Invalid enum value 'quick': use one of fast, safe")),
    ({"name": "a", "wrapped": {"port": 70000}}, Problem(("wrapped", "port"), "Expected `int` <= 65535")),
    ({"name": "a", "wrapped": {"port": 5, "timeout": "2m"}}, Problem(("wrapped", "timeout"), "at most 60s")),
])
def test_problems_name_the_key_at_fault(data: Any, expected: Problem) -> None:
    assert problem(data) == expected


def test_values_parse_and_strings_from_env_expansion_are_numbers() -> None:
    outer = Outer.model_validate({"name": "a", "inners": [{"port": "8080", "timeout": "1.5s"}], "wrapped": 443})
    assert outer.inners == [Inner(port=8080, timeout=1.5)]
    assert isinstance(outer.wrapped, Wrapped) and outer.wrapped.inner.port == 443
    assert str(ModelError([Problem(("inners", 0, "port"), "m")])) == "inners[0].port: m"


def test_global_labels_are_visible_while_validating_only() -> None:
    outer = validate(Outer, {"name": "a"}, labels=["team", "env"])
    assert outer.seen_labels == {"team", "env"}
    assert global_labels() == frozenset()


def test_copy_replaces_fields_and_keeps_other_attributes() -> None:
    outer = Outer.model_validate({"name": "a", "inners": [{"port": 1}]})
    outer.origin = "main.yaml"  # type: ignore[attr-defined]  # a dict=True model's non-field attribute
    copied = outer.model_copy(update={"name": "b"})
    assert (copied.name, copied.inners, copied.origin) == ("b", outer.inners, "main.yaml")  # type: ignore[attr-defined]
    dumped = outer.model_dump(exclude={"wrapped", "seen_labels"})
    assert dumped == {"name": "a", "inners": [{"port": 1, "timeout": 5.0}], "modes": []}


def test_unit_values_are_plain_numbers_once_validated() -> None:
    # msgspec needs a Duration (a float subclass) back from the decode hook; downstream code must see a float:
    # orjson refuses float subclasses (an alert's state once fell back to the slow json module on every change)
    outer = Outer.model_validate({"name": "a", "inners": [{"port": 1, "timeout": "1.5s"}], "wrapped": {"port": 2,
                                                                                                   "timeout": "2s"}})
    assert type(outer.inners[0].timeout) is float
    assert outer.wrapped is not None and type(outer.wrapped.inner.timeout) is float
    assert orjson.dumps({"t": outer.inners[0].timeout}) == b'{"t":1.5}'
