"""The agent's config: the root model, every source's model, and loading a file into them.

Why not ``Model(**yaml.safe_load(text))``: pydantic's errors name a key path but not where it is in the file.
agent/config_yaml.py reads the YAML keeping every value's location (and refusing what PyYAML would silently
accept); the validation errors here are mapped back to those locations, so every problem is reported as
``FILE:LINE:COL: key.path: message`` — the form editors and CI logs link to.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

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
from agent.outbox import OutboxConfig
from agent.rules import RuleConfig, RuleSet, validating_for
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
