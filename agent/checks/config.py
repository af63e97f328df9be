"""Config models for local checks (the ``checks:`` list).

Each check names exactly one probe (``command`` or one built-in probe key) plus the common keys that
control scheduling, the alert's identity and text, hysteresis and flap detection. The models are strict
(``extra="forbid"``) so a misspelt key is an error with a location instead of a silently ignored option.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from agent.events import validate_template
from agent.units import Duration, Percent, parse_duration

EffectiveStatus = Literal["Ok", "Warning", "Critical", "Info"]
"""A Flashduty ``event_status``: what a check's result means for its alert."""

UnknownStatus = Literal["Critical", "Warning", "Info"]

PROBE_KEYS: tuple[str, ...] = (
    "command",
    "disk",
    "tcp",
    "http",
    "process",
    "file_age",
    "systemd_unit",
    "load",
    "memory",
)
"""Keys that select what a check runs; a check must set exactly one of them."""

DEFAULT_INTERVAL = 60.0
DEFAULT_TIMEOUT = 10.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
_LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]+$")


def _parse_milliseconds(value: object) -> float:
    """Milliseconds for the ``*_ms`` keys: a bare number means ms, a duration string (``1.5s``) is converted.

    The key name promises milliseconds, so ``warning_ms: 200`` must mean 200 ms even though a bare number
    elsewhere in the config means seconds; a value with a unit is unambiguous and accepted too.
    """
    if isinstance(value, bool):
        raise ValueError("expected milliseconds such as 250 or a duration such as 1.5s")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
        number = float(value)
    elif isinstance(value, str):
        number = parse_duration(value) * 1000.0
    else:
        raise ValueError("expected milliseconds such as 250 or a duration such as 1.5s")
    if number <= 0:
        raise ValueError("must be greater than 0 ms")
    return number


Milliseconds = Annotated[float, BeforeValidator(_parse_milliseconds)]


def _stringify_args(value: object) -> object:
    """Let ``["check_tcp", "-p", 80]`` through: YAML turns the unquoted port into an int.

    Booleans are refused because YAML 1.1 reads ``yes``/``no``/``on`` as booleans and turning them back
    into ``True`` would silently pass the wrong argument.
    """
    if isinstance(value, list):
        out: list[object] = []
        for item in value:
            if isinstance(item, bool):
                raise ValueError(f"command argument {item!r} is a YAML boolean: quote it")
            out.append(str(item) if isinstance(item, int | float) else item)
        return out
    return value


def _regex(value: str) -> str:
    """Compile once at load time so a bad pattern is a config error, not a failing check at 3 a.m."""
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


Regex = Annotated[str, AfterValidator(_regex)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _ordered(warning: float | None, critical: float | None, what: str, *, rising: bool = True) -> None:
    if warning is None or critical is None:
        return
    if rising and warning > critical:
        raise ValueError(f"{what}: warning ({warning:g}) must not be above critical ({critical:g})")
    if not rising and warning < critical:
        raise ValueError(f"{what}: warning ({warning:g}) must not be below critical ({critical:g})")


class DiskProbe(_Strict):
    """Space and inode usage of the filesystem holding ``path`` (``df`` arithmetic: reserved blocks count
    as used, so the percentage matches what ``df`` shows)."""

    path: str = Field(min_length=1)
    warning: Percent | None = None
    critical: Percent | None = None
    inodes_warning: Percent | None = None
    inodes_critical: Percent | None = None

    @model_validator(mode="after")
    def _thresholds(self) -> DiskProbe:
        thresholds = (self.warning, self.critical, self.inodes_warning, self.inodes_critical)
        if all(value is None for value in thresholds):
            raise ValueError("set at least one of warning, critical, inodes_warning, inodes_critical")
        _ordered(self.warning, self.critical, "disk usage")
        _ordered(self.inodes_warning, self.inodes_critical, "inode usage")
        return self


class TcpProbe(_Strict):
    """A TCP connect to ``host:port``; refused or unreachable is CRITICAL, slow is WARNING."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    warning_ms: Milliseconds | None = None
    critical_ms: Milliseconds | None = None

    @model_validator(mode="after")
    def _thresholds(self) -> TcpProbe:
        _ordered(self.warning_ms, self.critical_ms, "latency")
        return self


class HttpProbe(_Strict):
    """One GET request (redirects are not followed, so a 3xx is judged as it is)."""

    url: str
    expect_status: list[int] | None = None
    body_match: Regex | None = None
    warning_ms: Milliseconds | None = None
    critical_ms: Milliseconds | None = None
    tls_days_warning: int | None = Field(default=None, ge=0)
    tls_days_critical: int | None = Field(default=None, ge=0)
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"url {value!r} must start with http:// or https:// and name a host")
        return value

    @field_validator("expect_status", mode="before")
    @classmethod
    def _status_list(cls, value: object) -> object:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("expect_status")
    @classmethod
    def _status_range(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("expect_status must list at least one status code")
            bad = [code for code in value if not 100 <= code <= 599]
            if bad:
                raise ValueError(f"expect_status {bad} are not HTTP status codes (100-599)")
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> HttpProbe:
        _ordered(self.warning_ms, self.critical_ms, "latency")
        _ordered(self.tls_days_warning, self.tls_days_critical, "tls days", rising=False)
        wants_tls = self.tls_days_warning is not None or self.tls_days_critical is not None
        if wants_tls and not self.url.startswith("https://"):
            raise ValueError("tls_days_warning/tls_days_critical need an https:// url")
        return self

    def status_ok(self, code: int) -> bool:
        """Whether a response status counts as up (default: any 2xx or 3xx)."""
        return 200 <= code <= 399 if self.expect_status is None else code in self.expect_status


class ProcessProbe(_Strict):
    """Count processes found by exact ``name``, by a ``pidfile``, or by a ``cmdline`` regex."""

    name: str | None = Field(default=None, min_length=1)
    pidfile: str | None = Field(default=None, min_length=1)
    cmdline: Regex | None = None
    min: int = Field(default=1, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_selector(self) -> ProcessProbe:
        given = [key for key in ("name", "pidfile", "cmdline") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of name, pidfile, cmdline"
                + (f" (got {' and '.join(given)})" if given else " (none given)")
            )
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must not be below min ({self.min})")
        return self


class FileAgeProbe(_Strict):
    """The newest file matching ``path`` (a path or a glob) must be younger than ``max_age``."""

    path: str = Field(min_length=1)
    max_age: Duration
    critical_age: Duration | None = None

    @model_validator(mode="after")
    def _ages(self) -> FileAgeProbe:
        if self.max_age <= 0:
            raise ValueError("max_age must be greater than 0")
        if self.critical_age is not None and self.critical_age <= self.max_age:
            raise ValueError("critical_age must be longer than max_age")
        return self


class SystemdUnitProbe(_Strict):
    """``ActiveState``/``SubState`` of a unit, read with ``systemctl show``."""

    unit: str

    @field_validator("unit")
    @classmethod
    def _unit_name(cls, value: str) -> str:
        if not _UNIT.match(value) or value.startswith("-"):
            raise ValueError(f"{value!r} is not a systemd unit name (e.g. nginx.service)")
        return value


LoadThreshold = float | tuple[float, float, float]


class LoadProbe(_Strict):
    """Load average; a single number judges the 1-minute load, a list of three judges 1/5/15 minutes."""

    warning: LoadThreshold | None = None
    critical: LoadThreshold | None = None
    per_cpu: bool = True

    @field_validator("warning", "critical")
    @classmethod
    def _non_negative(cls, value: LoadThreshold | None) -> LoadThreshold | None:
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and v < 0 for v in values):
            raise ValueError("load thresholds cannot be negative")
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> LoadProbe:
        if self.warning is None and self.critical is None:
            raise ValueError("set warning and/or critical")
        warn, crit = self.triples()
        for w, c, what in zip(warn, crit, ("1m", "5m", "15m"), strict=True):
            _ordered(w, c, f"load {what}")
        return self

    def triples(self) -> tuple[tuple[float | None, ...], tuple[float | None, ...]]:
        """Thresholds as (1m, 5m, 15m) triples; ``None`` means "not judged"."""

        def expand(value: LoadThreshold | None) -> tuple[float | None, ...]:
            if value is None:
                return (None, None, None)
            if isinstance(value, tuple):
                return value
            return (value, None, None)

        return expand(self.warning), expand(self.critical)


class MemoryProbe(_Strict):
    """Used memory as a percentage of total, where used = total - MemAvailable (page cache is free)."""

    warning: Percent | None = None
    critical: Percent | None = None

    @model_validator(mode="after")
    def _thresholds(self) -> MemoryProbe:
        if self.warning is None and self.critical is None:
            raise ValueError("set warning and/or critical")
        _ordered(self.warning, self.critical, "memory usage")
        return self


class FlappingConfig(_Strict):
    """Nagios-style flap detection thresholds (percent of weighted state changes over 21 results)."""

    enabled: bool = True
    high: Percent = 50.0
    low: Percent = 25.0

    @model_validator(mode="after")
    def _band(self) -> FlappingConfig:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}%) must be below high ({self.high:g}%)")
        return self


class CheckConfig(_Strict):
    """One entry of ``checks:``: what to run, how often, and how its results become alert statuses."""

    name: str = Field(min_length=1, max_length=128)

    command: Annotated[str | list[str], BeforeValidator(_stringify_args)] | None = None
    shell: bool = False
    disk: DiskProbe | None = None
    tcp: TcpProbe | None = None
    http: HttpProbe | None = None
    process: ProcessProbe | None = None
    file_age: FileAgeProbe | None = None
    systemd_unit: SystemdUnitProbe | None = None
    load: LoadProbe | None = None
    memory: MemoryProbe | None = None

    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration = DEFAULT_TIMEOUT
    labels: dict[str, str] = Field(default_factory=dict)
    title: str | None = None
    description: str | None = None
    alert_key: str | None = None
    repeat_interval: Duration | None = None
    output: str | None = None
    failures_before_alert: int = Field(default=1, ge=1, le=100)
    successes_before_ok: int = Field(default=1, ge=1, le=100)
    flapping: FlappingConfig = Field(default_factory=lambda: FlappingConfig(enabled=False))
    unknown_status: UnknownStatus = "Warning"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"check name {value!r} may only use letters, digits and _ . : @ - (and must not start with "
                "a symbol): it becomes part of the alert key and of metric labels"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [key for key in value if not _LABEL_KEY.match(key) or len(key) > 128]
        if bad:
            raise ValueError(
                f"label keys {bad} are not valid: use letters, digits and _ (not starting with a digit), "
                "at most 128 characters (Flashduty label rules)"
            )
        for template in value.values():
            validate_template(template)
        return value

    @field_validator("title", "description", "alert_key")
    @classmethod
    def _templates(cls, value: str | None) -> str | None:
        return None if value is None else validate_template(value)

    @field_validator("flapping", mode="before")
    @classmethod
    def _flapping_bool(cls, value: object) -> object:
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("repeat_interval")
    @classmethod
    def _positive_or_none(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be greater than 0 (leave it out to never repeat)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _exactly_one_probe(cls, data: Any) -> Any:
        """Checked before field validation so the user sees the structural mistake first."""
        if not isinstance(data, dict):
            return data
        given = [key for key in PROBE_KEYS if data.get(key) is not None]
        if len(given) != 1:
            name = data.get("name")
            who = f"check {name!r}" if isinstance(name, str) else "a check"
            detail = f"got {len(given)}: {', '.join(given)}" if given else "none given"
            raise ValueError(f"{who} needs exactly one probe key, one of {', '.join(PROBE_KEYS)} ({detail})")
        return data

    @model_validator(mode="after")
    def _command_form(self) -> CheckConfig:
        if self.shell and self.command is None:
            raise ValueError("shell: true only applies to command checks")
        if self.command is not None:
            if self.shell and not isinstance(self.command, str):
                raise ValueError("with shell: true, command must be one string for /bin/sh -c")
            if not self.shell and isinstance(self.command, str):
                raise ValueError(
                    'command is a string: give it as a list of arguments (["/path/plugin", "-H", '
                    '"host"]), or set shell: true to run it with /bin/sh -c'
                )
            if isinstance(self.command, str) and not self.command.strip():
                raise ValueError("command must not be empty")
            if isinstance(self.command, list) and (not self.command or not self.command[0]):
                raise ValueError("command must name a program as its first element")
        if "timeout" not in self.model_fields_set:
            # A check that runs every 5 s should not be allowed to hang for 10 s by default.
            self.timeout = min(DEFAULT_TIMEOUT, self.interval)
        return self

    @property
    def kind(self) -> str:
        """The probe key this check uses (``command``, ``disk``, ...)."""
        for key in PROBE_KEYS:
            if getattr(self, key) is not None:
                return key
        raise AssertionError("validated CheckConfig without a probe")  # pragma: no cover


def validate_unique_names(checks: list[CheckConfig]) -> None:
    """Raise ``ValueError`` naming every duplicated check name and the positions that use it.

    Names identify a check's alert, its stored state and its metrics, so two checks sharing one would
    overwrite each other's alerts.
    """
    seen: dict[str, list[int]] = {}
    for index, check in enumerate(checks):
        seen.setdefault(check.name, []).append(index)
    duplicates = {name: where for name, where in seen.items() if len(where) > 1}
    if duplicates:
        parts = [f"{name!r} ({', '.join(f'checks[{i}]' for i in where)})" for name, where in duplicates.items()]
        raise ValueError(f"duplicate check names: {'; '.join(parts)}: each check needs its own name")


def _unique(checks: list[CheckConfig]) -> list[CheckConfig]:
    validate_unique_names(checks)
    return checks


CheckList = Annotated[list[CheckConfig], AfterValidator(_unique)]
"""``list[CheckConfig]`` with unique names, for the root config model's ``checks`` field."""
