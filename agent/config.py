"""Loading the one YAML file: strict parsing, ``${VAR}`` expansion, validation, and errors with a location.

Why not ``yaml.safe_load`` + ``Model(**data)``: PyYAML silently keeps the last of duplicate keys and
reads ``no`` as False (YAML 1.1), and pydantic's errors name a key path but not where it is in the file.
Here the node tree is walked by hand so duplicates are rejected, only ``true``/``false`` are booleans, and
every error is reported as ``FILE:LINE:COL: key.path: message`` — the form editors and CI logs link to.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent import config_files as include
from agent.alerts import AlertsConfig
from agent.checks import CheckConfig, validate_unique_names
from agent.format import FormatName, framing_of, normalize_chain
from agent.health import HealthConfig
from agent.journal import JournalConfig
from agent.outbox import OutboxConfig
from agent.rules import RuleConfig, RuleSet, validating_for
from agent.selfwatch.config import SelfAlertsConfig
from agent.sender import OutputConfig
from agent.tail import TailConfig
from agent.units import Duration

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


class _Document:
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
        """The most specific known location for a pydantic error path (it may name model-internal parts)."""
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


def _build(node: yaml.Node, path: KeyPath, doc: _Document, loader: _StrictLoader, budget: _Budget) -> Any:
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


def _construct(node: yaml.Node, path: KeyPath, doc: _Document, loader: _StrictLoader) -> Any:
    """A scalar's value; a tag other than YAML's own (``!!python/object``, ``!custom``) is a problem here."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        doc.problem(_mark(node), path, f"unsupported YAML: {problem} (only plain YAML values are allowed)")
        return None


_COLLECTION_TAGS = {yaml.MappingNode: "tag:yaml.org,2002:map", yaml.SequenceNode: "tag:yaml.org,2002:seq"}


def _build_node(node: yaml.Node, path: KeyPath, doc: _Document, loader: _StrictLoader, budget: _Budget) -> Any:
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


def parse_yaml(text: str, file: str) -> tuple[Any, _Document]:
    """Parse YAML text into data and a location index, collecting (not raising) semantic problems."""
    doc = _Document(file)
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


# --- the root model ---------------------------------------------------------------------------------


class LogSourceConfig(TailConfig):
    """A `logs:` entry: what to tail (the tail stage's keys), what its lines are (``format``) and the rules to
    run on them."""

    format: FormatName | list[FormatName] = "raw"
    """raw (plain text), json, logfmt, cri, docker, or a chain such as [cri, json] (framing first)."""
    message_field: str | None = None
    """What match/contains/exclude and {line} see (default: the first of msg, message, log present)."""
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _rules_know_the_format(cls, data: Any, handler: ModelWrapValidatorHandler[LogSourceConfig]) -> LogSourceConfig:
        """Rules of a source with fields may name any field path (see ``agent.rules.validating_for``)."""
        structured = False
        if isinstance(data, dict):
            try:
                structured = normalize_chain(data.get("format", "raw")) != ("raw",)
            except ValueError:
                structured = True  # the format's own error is reported; don't add one per rule
        with validating_for(structured):
            return handler(data)

    @field_validator("format")
    @classmethod
    def _valid_chain(cls, value: Any) -> Any:
        normalize_chain(value)
        return value

    @property
    def formats(self) -> tuple[FormatName, ...]:
        return normalize_chain(self.format)

    def framing(self) -> Literal["cri", "docker"] | None:
        return framing_of(self.formats)

    def compile_rules(self, rules: Sequence[RuleConfig] | None = None, *, cache_dir: str | None = None) -> RuleSet:
        """The source's rules (or some of them) compiled for its format (seconds for thousands of rules: not
        on the event loop; ``cache_dir`` keeps the compiled databases for the next start)."""
        return RuleSet(self.rules if rules is None else rules, formats=self.formats, message_field=self.message_field,
                       cache_dir=cache_dir)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> LogSourceConfig:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice in source {self.name!r}")
            seen.add(rule.name)
        return self


class JournalSourceConfig(JournalConfig):
    """A `journal:` entry: which journal entries to follow and the rules to run on their messages (and, with
    ``where``, on their fields)."""

    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _rules_have_fields(cls, data: Any, handler: ModelWrapValidatorHandler[JournalSourceConfig]
                           ) -> JournalSourceConfig:
        with validating_for(True):
            return handler(data)

    @property
    def formats(self) -> tuple[FormatName, ...]:
        return ("raw",)

    def compile_rules(self, rules: Sequence[RuleConfig] | None = None, *, cache_dir: str | None = None) -> RuleSet:
        return RuleSet(self.rules if rules is None else rules, journal=True, cache_dir=cache_dir)


class Config(BaseModel):
    """Everything in the config file. Each stage's section is that stage's own model."""

    model_config = ConfigDict(extra="forbid")

    state_dir: str = "./state"
    host: str = Field(default_factory=socket.gethostname, description="host label; defaults to the hostname")
    labels: dict[str, str] = Field(default_factory=dict)
    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal, JSON lines otherwise
    shutdown_timeout: Duration = 10.0
    flashduty: list[OutputConfig] = Field(default_factory=lambda: [OutputConfig()])
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    logs: list[LogSourceConfig] = Field(default_factory=list)
    journal: list[JournalSourceConfig] = Field(default_factory=list)
    checks: list[CheckConfig] = Field(default_factory=list)
    self_alerts: SelfAlertsConfig = Field(default_factory=SelfAlertsConfig)
    # from `include:` (agent/config_files.py): read when loading, not keys of the file
    _files: list[str] = PrivateAttr(default_factory=list)
    _include_globs: list[str] = PrivateAttr(default_factory=list)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def files(self) -> list[str]:
        """Every file this config was read from, the main one first."""
        return list(self._files)

    @property
    def include_globs(self) -> list[str]:
        """The absolute globs of ``include`` (the config watch follows their directories)."""
        return list(self._include_globs)

    def origin(self, name: str) -> str | None:
        """The file a source or check is defined in."""
        return self._origins.get(name)

    @field_validator("flashduty", mode="before")
    @classmethod
    def _one_or_many_outputs(cls, value: Any) -> Any:
        """`flashduty:` may be a single output (the common case) or a list of named outputs."""
        if isinstance(value, dict):
            return [value]
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be one of debug, info, warning, error")
        return value.lower()

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        names = [o.name for o in self.flashduty]
        if len(set(names)) != len(names):
            raise ValueError("flashduty outputs need distinct `name`s")
        if not self.flashduty:
            raise ValueError("at least one flashduty output is required")
        sources = [s.name for s in self.logs] + [j.name for j in self.journal]
        if len(set(sources)) != len(sources):
            raise ValueError("source names (logs and journal) must be unique")
        validate_unique_names(self.checks)
        known = set(names)
        for where in self._output_references():
            if where[1] is not None and where[1] not in known:
                raise ValueError(f"{where[0]} uses output {where[1]!r}, which is not among flashduty outputs {names}")
        return self

    def _output_references(self) -> list[tuple[str, str | None]]:
        refs: list[tuple[str, str | None]] = []
        for source in [*self.logs, *self.journal]:
            refs.extend((f"rule {source.name}/{rule.name}", rule.output) for rule in source.rules)
        refs.extend((f"check {check.name}", check.output) for check in self.checks)
        refs.append(("self_alerts", self.self_alerts.output))
        return refs

    def output(self, name: str | None) -> OutputConfig:
        """The output a rule or check picked, or the first one (the default)."""
        if name is None:
            return self.flashduty[0]
        return next(o for o in self.flashduty if o.name == name)

    def secrets(self) -> list[str]:
        """Every credential in this config, for the log redactor."""
        found: list[str] = []
        for out in self.flashduty:
            found.extend(out.secrets())
        if self.health.token:
            found.append(self.health.token)
        return found


def _problems_from_validation(exc: ValidationError, doc: include.MergedDocument) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc: KeyPath = tuple(p for p in error["loc"] if isinstance(p, str | int))
        # pydantic appends union/validator tags to locations; keep only parts that exist in the document
        path: list[str | int] = []
        for part in loc:
            if doc.has((*path, part)):
                path.append(part)
            elif error["type"] in ("extra_forbidden", "missing") and part == loc[-1]:
                path.append(part)
        key_path = tuple(path)
        where = doc.where(key_path, prefer_key=error["type"] == "extra_forbidden")
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
            where = doc.where(key_path[:-1])
        message = message.removeprefix("Value error, ")
        problems.append(ConfigProblem(where[0], where[1], where[2], format_path(doc.own_path(key_path)), message))
    return problems


def parse_config(text: str, file: str = "<config>", base_dir: str | None = None) -> Config:
    """Validate config text (and the files its ``include`` names, relative to ``base_dir``: by default the
    file's directory); raise ConfigError listing every problem with its file and location."""
    data, doc = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise ConfigError([*doc.problems, ConfigProblem(file, 1, 1, "", "the config file must be a mapping of keys")])
    included, problems = include.expand(data, doc, base_dir or os.path.dirname(file) or ".")
    problems = [*doc.problems, *problems]
    if problems:
        raise ConfigError(problems)
    try:
        labels = data.get("labels")
        context = {"global_labels": set(labels) if isinstance(labels, dict) else set()}
        config = Config.model_validate(included.data, context=context)
    except ValidationError as exc:
        raise ConfigError(_problems_from_validation(exc, included.document)) from None
    config._files, config._include_globs, config._origins = included.files, included.globs, included.origins
    return config


def secret_warnings(config: Config, config_path: str | os.PathLike[str] | None) -> list[str]:
    """Where a credential sits in a file other users on the host can read (warned about at start/reload)."""
    warnings: list[str] = []

    def world_readable(path: str | os.PathLike[str]) -> bool:
        try:
            return bool(os.stat(path).st_mode & 0o004)
        except OSError:
            return False

    for output in config.flashduty:
        if output.push_url_file and world_readable(output.push_url_file):
            warnings.append(f"push_url_file {output.push_url_file} of output {output.name!r} is world-readable; "
                            f"chmod 600 it (owned by the service user)")
    if config_path is not None and world_readable(config_path):
        try:
            text = Path(config_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""
        if "integration_key=" in text or re.search(r"^\s*integration_key:\s*['\"]?[^$\s'\"]", text, re.M):
            warnings.append(f"{config_path} contains an integration key and is world-readable; move the key to "
                            f"an environment file or push_url_file readable only by the service user")
    return warnings


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the config file. Relative paths inside stay relative to the process cwd."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, 0, 0, "", f"cannot read config: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(file, 1, 1, "", f"config is not valid UTF-8: {exc.reason}")]) from None
    try:
        return parse_config(text, file)
    except ConfigError:
        raise
    except Exception as exc:  # whatever a file does to the parser, the agent keeps running (and watching)
        raise ConfigError([ConfigProblem(file, 1, 1, "", f"cannot parse: {type(exc).__name__}: {exc}")]) from exc
