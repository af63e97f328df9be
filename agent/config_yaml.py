"""Reading the config's YAML with a location for everything: strict parsing, ``${VAR}`` expansion, limits.

Why not ``yaml.safe_load``: PyYAML silently keeps the last of duplicate keys and reads ``no`` as False (YAML
1.1), and nothing it returns says where a value was in the file. Here the node tree is walked by hand so
duplicates are rejected, only ``true``/``false`` are booleans, a bomb (aliases, nesting, sheer size) is
refused, and every problem is a :class:`ConfigProblem` at ``FILE:LINE:COL``. agent/config.py validates the
result; agent/config_files.py merges ``include`` files with it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

Location = tuple[int, int]  # 1-based line, column
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """An invalid config file; ``str()`` gives one ``FILE:LINE:COL: key.path: message`` line per problem."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line, p.column, p.path, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


# --- strict YAML -------------------------------------------------------------------------------------


# libyaml's parser when PyYAML has it (the pure-Python one took ~0.3 s of a restart with 1,000 rules); the
# resolver, the constructor and everything after composing the node tree stay PyYAML's own.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader with YAML 1.2 booleans: only true/false, so ``start_at: no`` stays the string "no"."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


def expand_env(text: str, environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal ``$``. An unset ``${VAR}`` is an error.

    Failing on an unset variable (instead of substituting "") catches a forgotten EnvironmentFile before the
    agent runs with an empty push URL; ``${VAR:-}`` says explicitly that empty is fine.
    """
    env = os.environ if environ is None else environ

    def _sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ValueError(f"environment variable {name} is not set (write ${{{name}:-}} to allow empty)")
            return default
        return value

    return _ENV_REF.sub(_sub, text)


class YamlDocument:
    """The parsed file: plain Python data plus the location of every key and value by key path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.key_marks: dict[KeyPath, Location] = {}
        self.value_marks: dict[KeyPath, Location] = {}
        self.problems: list[ConfigProblem] = []

    def problem(self, where: Location, path: KeyPath, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, where[0], where[1], format_path(path), message))

    def has(self, path: KeyPath) -> bool:
        return path in self.key_marks or path in self.value_marks

    def where(self, path: KeyPath, *, prefer_key: bool = False) -> tuple[str, int, int]:
        """``locate``, with the file (the merged document of ``include`` answers for several files)."""
        return (self.file, *self.locate(path, prefer_key=prefer_key))

    def locate(self, path: KeyPath, *, prefer_key: bool = False) -> Location:
        """The most specific known location for a validation error's key path (it may name model-internal parts)."""
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            marks = (self.key_marks, self.value_marks) if prefer_key else (self.value_marks, self.key_marks)
            for table in marks:
                if prefix in table:
                    return table[prefix]
        return (1, 1)


def _mark(node: yaml.Node) -> Location:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def format_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


MAX_VALUES = 200_000
"""Values a document may expand to through aliases (a "billion laughs" file is a few lines that expand to
billions: it took a reload to 10 GB); a real config has a few thousand."""
MAX_DEPTH = 50
"""Nesting a document may have (the deepest real config nests about 8 levels)."""


class _Budget:
    """What one parse may still build: values left, and the nodes being built (an alias to one of them is a
    recursive document)."""

    def __init__(self) -> None:
        self.values_left = MAX_VALUES
        self.building: set[int] = set()


class _Refused(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.where = _mark(node)


def _build(node: yaml.Node, path: KeyPath, doc: YamlDocument, loader: _StrictLoader, budget: _Budget) -> Any:
    budget.values_left -= 1
    if budget.values_left < 0:
        raise _Refused(node, f"the document expands (through YAML aliases) to more than {MAX_VALUES:,} values")
    if len(path) > MAX_DEPTH:
        raise _Refused(node, f"nested deeper than {MAX_DEPTH} levels")
    if id(node) in budget.building:
        raise _Refused(node, "a YAML alias refers to the node that contains it (a recursive document)")
    doc.value_marks.setdefault(path, _mark(node))
    budget.building.add(id(node))
    try:
        return _build_node(node, path, doc, loader, budget)
    finally:
        budget.building.discard(id(node))


def _construct(node: yaml.Node, path: KeyPath, doc: YamlDocument, loader: _StrictLoader) -> Any:
    """A scalar's value; a tag other than YAML's own (``!!python/object``, ``!custom``) is a problem here."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        doc.problem(_mark(node), path, f"unsupported YAML: {problem} (only plain YAML values are allowed)")
        return None


_COLLECTION_TAGS = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}


def _build_node(node: yaml.Node, path: KeyPath, doc: YamlDocument, loader: _StrictLoader, budget: _Budget) -> Any:
    expected = _COLLECTION_TAGS.get(type(node))
    if expected is not None and node.tag != expected:
        doc.problem(_mark(node), path, f"unsupported YAML: tag {node.tag!r} (only plain YAML values are allowed)")
        return None
    if isinstance(node, yaml.MappingNode):
        if any(key.tag == "tag:yaml.org,2002:merge" for key, _ in node.value):
            if any(id(value) in budget.building for _, value in node.value):
                raise _Refused(node, "a YAML merge key refers to the mapping that contains it")
            loader.flatten_mapping(node)  # YAML merge keys (<<) are handy for repeated rule blocks
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, path, doc, loader)
            if not isinstance(key, str | int | float | bool) or key is None:
                doc.problem(_mark(key_node), path, "mapping keys must be plain scalars")
                continue
            child = (*path, key) if isinstance(key, str | int) else (*path, str(key))
            if key in result:
                first = doc.key_marks.get(child, (0, 0))
                doc.problem(_mark(key_node), child, f"duplicate key (first defined at line {first[0]})")
                continue
            doc.key_marks[child] = _mark(key_node)
            result[key] = _build(value_node, child, doc, loader, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, loader, budget) for i, item in enumerate(node.value)]
    value = _construct(node, path, doc, loader)
    if isinstance(value, str) and "$" in value:
        try:
            value = expand_env(value)
        except ValueError as exc:
            doc.problem(_mark(node), path, str(exc))
    return value


def parse_yaml(text: str, file: str) -> tuple[Any, YamlDocument]:
    """Parse YAML text into data and a location index, collecting (not raising) semantic problems."""
    doc = YamlDocument(file)
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
    except RecursionError:
        line, column = _deepest(text)
        raise ConfigError([ConfigProblem(file, line, column, "", f"nested deeper than {MAX_DEPTH} levels")]) from None
    except yaml.MarkedYAMLError as exc:
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own bound on flow nesting (1,000 levels)
            line, column = _deepest(text)
            raise ConfigError([ConfigProblem(file, line, column, "", f"nested deeper than {MAX_DEPTH} levels")]) \
                from None
        mark = exc.problem_mark or exc.context_mark
        where = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        lines = text.splitlines() or [""]
        if where[0] > len(lines):  # libyaml puts the end of a file without a final newline on the next line
            where = (len(lines), len(lines[-1]) + 1)
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError([ConfigProblem(file, where[0], where[1], "", f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(file, 1, 1, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if root is None:
        # An empty file is almost always a config tool caught mid-write (or a truncation), never an
        # intent to stop monitoring: refuse it, so a reload keeps the running config.
        raise ConfigError([ConfigProblem(file, 1, 1, "", "the config file is empty")])
    try:
        return _build(root, (), doc, loader, _Budget()), doc
    except _Refused as exc:
        raise ConfigError([ConfigProblem(file, exc.where[0], exc.where[1], "", str(exc))]) from None
    except RecursionError:  # a merge-key cycle the checks above did not see
        raise ConfigError([ConfigProblem(file, 1, 1, "", "the YAML structure is recursive")]) from None


def _deepest(text: str) -> tuple[int, int]:
    """Where flow nesting (``[[[[...``) first goes past MAX_DEPTH, for the error (the parser gave up there)."""
    depth = 0
    line, column = 1, 0
    for char in text:
        column += 1
        if char == "\n":
            line, column = line + 1, 0
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line, column
        elif char in "]}":
            depth -= 1
    return 1, 1


