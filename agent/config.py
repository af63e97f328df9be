"""The agent's config: the root model, every source's model, and loading a file into them.

Why not ``Model(**yaml.safe_load(text))``: a validation error names a key path but not where it is in the file.
agent/config_yaml.py reads the YAML keeping every value's location (and refusing what PyYAML would silently
accept); the validation errors here are mapped back to those locations, so every problem is reported as
``FILE:LINE:COL: key.path: message`` — the form editors and CI logs link to. The models are msgspec Structs
(agent/model.py says why), which stop at a value's first problem: a config that does not validate is checked
again section by section and entry by entry, so one run of ``check-config`` lists a problem per entry.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from agent import config_files as include
from agent.alerts import AlertsConfig
from agent.checks import CheckConfig, validate_unique_names
from agent.config_yaml import (
    ConfigError,
    ConfigProblem,
    KeyPath,
    Location,
    expand_env,
    format_path,
    parse_yaml,
)
from agent.format import FormatName, framing_of, normalize_chain
from agent.health import HealthConfig
from agent.journal import JournalConfig
from agent.model import FieldError, Model, ModelError, Problem, blame, field, validate
from agent.outbox import OutboxConfig
from agent.rules import RuleConfig, RuleSet
from agent.selfwatch.config import SelfAlertsConfig
from agent.sender import OutputConfig
from agent.tail import TailConfig
from agent.units import Duration

__all__ = ["Config", "ConfigError", "ConfigProblem", "JournalSourceConfig", "KeyPath", "Location", "LogSourceConfig",
           "expand_env", "format_path", "load_config", "parse_config", "parse_yaml", "secret_warnings"]
# --- the root model ---------------------------------------------------------------------------------


class LogSourceConfig(TailConfig):
    """A `logs:` entry: what to tail (the tail stage's keys), what its lines are (``format``) and the rules to
    run on them."""

    format: FormatName | list[FormatName] = "raw"
    """raw (plain text), json, logfmt, cri, docker, or a chain such as [cri, json] (framing first)."""
    message_field: str | None = None
    """What match/contains/exclude and {line} see (default: the first of msg, message, log present)."""
    rules: list[RuleConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            structured = normalize_chain(self.format) != ("raw",)
        except ValueError as exc:
            raise FieldError("format", str(exc)) from None
        _check_rules(self.rules, structured, f"source {self.name!r}")

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


class JournalSourceConfig(JournalConfig):
    """A `journal:` entry: which journal entries to follow and the rules to run on their messages (and, with
    ``where``, on their fields)."""

    rules: list[RuleConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rules(self.rules, True, f"source {self.name!r}")

    @property
    def formats(self) -> tuple[FormatName, ...]:
        return ("raw",)

    def compile_rules(self, rules: Sequence[RuleConfig] | None = None, *, cache_dir: str | None = None) -> RuleSet:
        return RuleSet(self.rules if rules is None else rules, journal=True, cache_dir=cache_dir)


def _check_rules(rules: list[RuleConfig], structured: bool, owner: str) -> None:
    """What a rule may name depends on its source (fields need a format): checked here, blamed on the rule."""
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        with blame(("rules", index)):
            rule.check_for_source(structured)
        if rule.name in seen:
            raise FieldError(("rules", index, "name"), f"rule name {rule.name!r} is used twice in {owner}")
        seen.add(rule.name)


class Config(Model, dict=True):
    """Everything in the config file. Each stage's section is that stage's own model."""

    state_dir: str = "./state"
    host: str = field(default_factory=socket.gethostname)  # the host label
    labels: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal, JSON lines otherwise
    shutdown_timeout: Duration = 10.0
    rule_processes: Literal["auto"] | int = "auto"
    """Worker processes that match structured backlogs (agent/rules/processes.py); ``processes()`` resolves it."""
    flashduty: list[OutputConfig] = field(default_factory=lambda: [OutputConfig()])
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    logs: list[LogSourceConfig] = field(default_factory=list)
    journal: list[JournalSourceConfig] = field(default_factory=list)
    checks: list[CheckConfig] = field(default_factory=list)
    self_alerts: SelfAlertsConfig = field(default_factory=SelfAlertsConfig)

    @classmethod
    def model_validate(cls, data: Any) -> Config:
        """``flashduty:`` may be a single output (the common case) or a list of named outputs; templates may name
        the top-level labels."""
        if isinstance(data, dict):
            data = {**data, "flashduty": _as_list(data["flashduty"])} if "flashduty" in data else data
        return validate(cls, data, labels=_label_keys(data))

    def processes(self) -> int:
        """``auto``: one rule process per CPU this process may run on, up to 4, and none on a single CPU
        (the agent process itself needs that core)."""
        if self.rule_processes != "auto":
            return self.rule_processes
        cpus = len(os.sched_getaffinity(0))
        return 0 if cpus < 2 else min(cpus, 4)

    def __post_init__(self) -> None:
        if self.rule_processes != "auto" and self.rule_processes < 0:
            raise FieldError(("rule_processes",), "must be auto, 0 (threads only) or a number of processes")
        # from `include:` (agent/config_files.py): read when loading, not keys of the file
        self._files: list[str] = []
        self._include_globs: list[str] = []
        self._origins: dict[str, str] = {}
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise FieldError("log_level", "log_level must be one of debug, info, warning, error")
        self.log_level = self.log_level.lower()
        self._cross_references()

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

    def _cross_references(self) -> None:
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


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


def _label_keys(data: Any) -> Any:
    labels = data.get("labels") if isinstance(data, dict) else None
    return labels if isinstance(labels, dict) else ()


_SECTIONS: tuple[tuple[str, type[Model], bool], ...] = (
    ("flashduty", OutputConfig, True), ("outbox", OutboxConfig, False), ("health", HealthConfig, False),
    ("alerts", AlertsConfig, False), ("logs", LogSourceConfig, True), ("journal", JournalSourceConfig, True),
    ("checks", CheckConfig, True), ("self_alerts", SelfAlertsConfig, False),
)


def _validate(data: dict[str, Any]) -> Config:
    """The config, or a ModelError listing a problem per section and per entry (msgspec stops at the first)."""
    try:
        return Config.model_validate(data)
    except ModelError as exc:
        problems = list(exc.problems)
    label_keys = _label_keys(data)
    for key, model, many in _SECTIONS:
        value = _as_list(data.get(key)) if many else data.get(key)
        entries: list[tuple[int | None, Any]] = []
        if many and isinstance(value, list):
            entries = list(enumerate(value))
        elif not many and isinstance(value, dict):
            entries = [(None, value)]
        for index, entry in entries:
            prefix = (key,) if index is None else (key, index)
            problems.extend(Problem((*prefix, *p.path), p.message, p.kind)
                            for p in _problems_of(model, entry, label_keys))
    root = {key: value for key, value in data.items() if key not in {section for section, _, _ in _SECTIONS}}
    problems.extend(_problems_of(Config, root, label_keys))  # the top-level keys themselves (labels, log_level ...)
    raise ModelError(problems)


def _problems_of(model: type[Model], data: Any, labels: Any, limit: int = 20) -> list[Problem]:
    """An entry's problems: the first, and after an unknown key what validating without it finds (a misspelt
    key usually comes with the missing one it was meant to be)."""
    problems: list[Problem] = []
    while len(problems) < limit:
        try:
            validate(model, data, labels=labels)
            break
        except ModelError as exc:
            problems.extend(exc.problems)
            first = exc.problems[0]
        if first.kind != "unknown" or (data := _without(data, first.path)) is None:
            break
    return problems


def _without(data: Any, path: KeyPath) -> Any:
    """``data`` without the key at ``path`` (copied along the way), or None when it is not there."""
    if not path:
        return None
    head, rest = path[0], path[1:]
    if isinstance(data, dict) and head in data:
        if not rest:
            return {k: v for k, v in data.items() if k != head}
        inner = _without(data[head], rest)
        return None if inner is None else {**data, head: inner}
    if isinstance(data, list) and isinstance(head, int) and 0 <= head < len(data) and rest:
        inner = _without(data[head], rest)
        return None if inner is None else [*data[:head], inner, *data[head + 1:]]
    return None


def _problems_from_validation(exc: ModelError, doc: include.MergedDocument) -> list[ConfigProblem]:
    problems = []
    for problem in exc.problems:
        # keep only parts that exist in the document (`flashduty:` written as one mapping is validated as a list)
        path: list[str | int] = []
        for part in problem.path:
            if doc.has((*path, part)) or (problem.kind != "value" and part == problem.path[-1]):
                path.append(part)
        key_path = tuple(path)
        where = doc.where(key_path, prefer_key=problem.kind == "unknown")
        if problem.kind == "missing":
            where = doc.where(key_path[:-1])
        problems.append(ConfigProblem(where[0], where[1], where[2], format_path(doc.own_path(key_path)),
                                      problem.message))
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
        config = _validate(included.data)
    except ModelError as exc:
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
