"""The base of every stage's config model: msgspec Structs, validated from the YAML's plain data.

Why msgspec and not pydantic: the agent idles on every host, and the config models are the one part of it that
everything imports. Measured on this project's machine (Python 3.11, a fresh interpreter that already holds
asyncio): pydantic imported and 28 models of 12 fields built cost 13.5 MiB, msgspec and the same 28 Structs
2.0 MiB (bench/RESULTS.md, "Footprint"). A Struct is also a plain, slotted object: attribute reads on the hot
path cost what a dataclass's do.

How a model is written (``agent/outbox/config.py`` is the smallest example):

* ``class XConfig(Model):`` with annotated fields and defaults; constraints as ``Annotated[int, Meta(ge=1)]``.
* Checks that span fields go in ``__post_init__`` and raise ``ValueError`` (blamed on the model's own key
  path) or :class:`FieldError` (blamed on a key below it: ``FieldError("port", "...")``).
* A value with its own syntax (``30s``, ``256MiB``, a regex, "a scalar means eq") is a class with a
  ``from_config(value)`` classmethod (``agent.units``): msgspec hands it the raw YAML value through
  :func:`validate`'s decode hook, so the same message and ``file:line:col`` come out wherever it is used. (A
  type that subclasses float or int must return an instance of itself; ``validate`` then stores the plain number.)
* ``Model.model_validate(data)`` validates and raises :class:`ModelError` (a ``ValueError``) whose
  ``problems`` carry key paths; ``agent.config`` maps those to ``FILE:LINE:COL``. Calling ``XConfig(...)``
  directly builds a value without parsing units (like ``dataclasses``): tests and code that start from YAML-
  shaped data use ``model_validate``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType, field

__all__ = [
    "UNSET",
    "FieldError",
    "KeyPath",
    "Meta",
    "Model",
    "ModelError",
    "Problem",
    "UnsetType",
    "blame",
    "field",
    "global_labels",
    "validate",
]

KeyPath = tuple[str | int, ...]
ProblemKind = Literal["value", "unknown", "missing"]

T = TypeVar("T")
M = TypeVar("M", bound="Model")


class Problem(NamedTuple):
    """One thing wrong with a value: where (keys from the validated value's root) and what."""

    path: KeyPath
    message: str
    kind: ProblemKind = "value"  # unknown: ``path`` names a key that should not be there; missing: one that should


class ModelError(ValueError):
    """Data that does not fit a model; ``problems`` says where (``str()`` lists them, one per line)."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(_describe(p) for p in self.problems))


class FieldError(ValueError):
    """Raised by a model's ``__post_init__`` or a value type's ``from_config`` to blame a key below the value being
    checked (``FieldError(("rules", 2), "...")``), so the error points at the line the user has to change."""

    def __init__(self, path: str | int | KeyPath, message: str, kind: ProblemKind = "value") -> None:
        super().__init__(message)
        self.path: KeyPath = path if isinstance(path, tuple) else (path,)
        self.kind: ProblemKind = kind


@contextlib.contextmanager
def blame(path: str | int | KeyPath) -> Iterator[None]:
    """A check run inside blames its ValueError on the key at ``path`` (a FieldError's own path goes below it), so
    the error points at the line the user has to change: ``with blame("match"): compile_regex(self.match)``."""
    prefix = path if isinstance(path, tuple) else (path,)
    try:
        yield
    except FieldError as exc:
        raise FieldError((*prefix, *exc.path), str(exc), exc.kind) from None
    except ValueError as exc:
        raise FieldError(prefix, str(exc)) from None


class Model(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A config section: unknown keys are errors (a misspelt option must not be silently ignored)."""

    def __post_init__(self) -> None:
        """Checks across fields (none here; a subclass that adds some calls ``super().__post_init__()``)."""

    def require_positive(self, *names: str) -> None:
        """FieldError on the first of ``names`` whose value is not above 0 (durations, intervals); UNSET and
        None (not given) pass. For unit types, which msgspec's ``Meta(gt=0)`` does not take."""
        for name in names:
            value = getattr(self, name)
            if value is not None and value is not UNSET and not value > 0:
                raise FieldError(name, "must be greater than 0")

    @classmethod
    def model_validate(cls: type[M], data: Any) -> M:
        """``data`` (YAML-shaped: dicts, lists, scalars) validated into this model; raises :class:`ModelError`."""
        return validate(cls, data)

    def model_copy(self: M, *, update: dict[str, Any] | None = None) -> M:
        """A copy with some fields replaced (``__post_init__`` runs again; other attributes are carried over)."""
        copied = msgspec.structs.replace(self, **(update or {}))
        extra = getattr(self, "__dict__", None)  # a model declared with dict=True (Config: the files it came from)
        if extra:
            copied.__dict__.update(extra)
        return copied

    def model_dump(self, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The fields as plain data (nested models as dicts), e.g. to compare two configs or validate again."""
        skip = set(exclude)
        return {name: _builtins(getattr(self, name)) for name in self.__struct_fields__ if name not in skip}


def _builtins(value: Any) -> Any:
    return msgspec.to_builtins(value, builtin_types=(), enc_hook=_encode)


def _encode(value: Any) -> Any:
    for plain in (bool, int, float, str):  # the unit types subclass these
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, re.Pattern):
        return value.pattern
    to_config = getattr(value, "to_config", None)
    if to_config is not None:
        return to_config()
    raise NotImplementedError(f"cannot dump {type(value).__name__}")


_GLOBAL_LABELS: ContextVar[frozenset[str]] = ContextVar("dutytail_global_labels", default=frozenset())


def global_labels() -> frozenset[str]:
    """The label keys of the config's top-level ``labels`` (templates may name them), while a config validates."""
    return _GLOBAL_LABELS.get()


def validate(model: type[T], data: Any, *, labels: Iterable[str] = ()) -> T:
    """``data`` as ``model`` (a Struct or any type msgspec converts); raises :class:`ModelError`.

    ``strict=False`` lets a number or a boolean arrive as a string, as ``${VAR}`` expansion produces them
    (``port: ${PORT}``); only the YAML 1.2 words ``true``/``false`` are booleans (agent/config_yaml.py).
    """
    token = _GLOBAL_LABELS.set(frozenset(labels)) if labels else None
    try:
        return _plain(msgspec.convert(data, model, strict=False, dec_hook=_decode))
    except msgspec.ValidationError as exc:
        problem = problem_of(exc)
        if problem.message.startswith("Invalid enum value "):
            choices = _choices(model, problem.path)
            if choices:
                problem = problem._replace(message=f"{problem.message}: use one of {', '.join(map(str, choices))}")
        raise ModelError([problem]) from None
    finally:
        if token is not None:
            _GLOBAL_LABELS.reset(token)


def _plain(value: Any) -> Any:
    """``value`` with the unit types' numbers (``Duration`` ... subclass float and int: msgspec wants an instance of
    the declared type back from the decode hook) replaced by plain floats and ints, in place. Downstream the numbers
    must be the builtins: orjson refuses a float subclass (an alert's state fell back to the ~5x slower ``json``
    module on every change), and the interpreter's fast paths are for exact types."""
    kind = type(value)
    if kind in (str, int, float, bool) or value is None:
        return value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int) and kind is not bool:
        return int(value)
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            item = getattr(value, name)
            plain = _plain(item)
            if plain is not item:
                setattr(value, name, plain)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _plain(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            value[key] = _plain(item)
    elif isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return value


def _choices(model: Any, path: KeyPath) -> tuple[Any, ...]:
    """The values of the ``Literal`` at ``path`` of ``model`` (for "Invalid enum value": say what is valid)."""
    import msgspec.inspect as types  # only when a config has such an error

    def step(node: Any, part: str | int) -> Any:
        if isinstance(node, types.UnionType):
            return next((found for t in node.types if (found := step(t, part)) is not None), None)
        if isinstance(node, types.StructType) and isinstance(part, str):
            return next((f.type for f in node.fields if f.name == part), None)
        if isinstance(node, types.ListType) and isinstance(part, int):
            return node.item_type
        return node.value_type if isinstance(node, types.DictType) else None

    node: Any = types.type_info(model)
    for part in path:
        if (node := step(node, part)) is None:
            return ()
    options = node.types if isinstance(node, types.UnionType) else (node,)
    return next((t.values for t in options if isinstance(t, types.LiteralType)), ())


def _decode(kind: type, value: Any) -> Any:
    """msgspec's hook for the types it does not know: the config's value types parse themselves."""
    parse = getattr(kind, "from_config", None)
    if parse is None:
        raise NotImplementedError(f"{kind!r} is not a config value type")
    try:
        return parse(value)
    except ModelError as exc:  # a value type that validates a nested model: keep the nested key path
        problem = exc.problems[0]
        raise FieldError(problem.path, problem.message, problem.kind) from None


_AT = re.compile(r"(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.S)
_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|(\[\.\.\.\])")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>.*)`", re.S)
_MISSING = re.compile(r"Object missing required field `(?P<key>.*)`", re.S)


def problem_of(exc: msgspec.ValidationError) -> Problem:
    """msgspec's error (``message - at `$.logs[0].rules[2]```) as a :class:`Problem` with a key path."""
    found = _AT.fullmatch(str(exc))
    message = found["message"] if found else str(exc)
    path: list[str | int] = []
    exact = True  # False once a dict key msgspec does not name (``[...]``) is on the way
    for part in _PART.finditer((found and found["path"]) or ""):
        if part[3]:
            exact = False
            break
        path.append(part[1] if part[1] is not None else int(part[2]))
    kind: ProblemKind = "value"
    cause = exc.__cause__
    if isinstance(cause, FieldError):
        message, kind = str(cause), cause.kind
        if exact:
            path.extend(cause.path)
    elif isinstance(cause, ValueError | TypeError) and cause.args:
        message = str(cause)
    elif exact and (unknown := _UNKNOWN.fullmatch(message)):
        path.append(unknown["key"])
        message, kind = "unknown key", "unknown"
    elif exact and (missing := _MISSING.fullmatch(message)):
        path.append(missing["key"])
        message, kind = "required key is missing", "missing"
    elif kind == "value":  # msgspec's JSON words for the YAML's kinds of value
        message = message.replace("`array`", "`list`").replace("`object`", "`mapping`")
    return Problem(tuple(path), message, kind)


def _describe(problem: Problem) -> str:
    path = ""
    for part in problem.path:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + part
    return f"{path}: {problem.message}" if path else problem.message
