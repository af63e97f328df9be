"""Config models for local checks (the ``checks:`` list).

Each check names exactly one probe (``command`` or one built-in probe key) plus the common keys that
control scheduling, the alert's identity and text, hysteresis and flap detection. The models are strict
(unknown keys are errors) so a misspelt key is an error with a location instead of a silently ignored option.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from agent.events import validate_template
from agent.model import UNSET, FieldError, Meta, Model, UnsetType, blame, field, validate
from agent.units import Duration, Percent, parse_duration, value_type

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


def _command_argument(value: object) -> str:
    """Let ``["check_tcp", "-p", 80]`` through: YAML turns the unquoted port into an int.

    Booleans are refused because YAML 1.1 reads ``yes``/``no``/``on`` as booleans and turning them back
    into ``True`` would silently pass the wrong argument.
    """
    if isinstance(value, bool):
        raise ValueError(f"command argument {value!r} is a YAML boolean: quote it")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"Expected `str`, got `{type(value).__name__}`")


def _regex(value: object) -> str:
    """Compile once at load time so a bad pattern is a config error, not a failing check at 3 a.m."""
    if not isinstance(value, str):
        raise ValueError(f"Expected `str`, got `{type(value).__name__}`")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _status_codes(value: object) -> list[int]:
    """``expect_status: 204`` means ``[204]``; every code must be an HTTP status."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    codes = validate(list[int], value)
    if not codes:
        raise ValueError("expect_status must list at least one status code")
    bad = [code for code in codes if not 100 <= code <= 599]
    if bad:
        raise ValueError(f"expect_status {bad} are not HTTP status codes (100-599)")
    return codes


if TYPE_CHECKING:
    Milliseconds = float
    Regex = str
    CommandArg = str
    StatusCodes = list[int]
else:
    Milliseconds = value_type("Milliseconds", float, _parse_milliseconds,
                              "Milliseconds (``*_ms`` keys): a bare number means ms, ``1.5s`` is converted.", __name__)
    Regex = value_type("Regex", str, _regex, "A regular expression, compiled once while the config loads to reject "
                                             "a bad one.", __name__)
    CommandArg = value_type("CommandArg", str, _command_argument,
                            "One argument of ``command``: a YAML number is taken as its text, a YAML boolean is "
                            "refused.", __name__)
    StatusCodes = value_type("StatusCodes", list, _status_codes, "``expect_status``: a list of HTTP status codes, or "
                                                                  "one code.", __name__)


def _ordered(warning: float | None, critical: float | None, what: str, *, rising: bool = True) -> None:
    if warning is None or critical is None:
        return
    if rising and warning > critical:
        raise ValueError(f"{what}: warning ({warning:g}) must not be above critical ({critical:g})")
    if not rising and warning < critical:
        raise ValueError(f"{what}: warning ({warning:g}) must not be below critical ({critical:g})")


class DiskProbe(Model):
    """Space and inode usage of the filesystem holding ``path`` (``df`` arithmetic: reserved blocks count
    as used, so the percentage matches what ``df`` shows)."""

    path: Annotated[str, Meta(min_length=1)]
    warning: Percent | None = None
    critical: Percent | None = None
    inodes_warning: Percent | None = None
    inodes_critical: Percent | None = None

    def __post_init__(self) -> None:
        thresholds = (self.warning, self.critical, self.inodes_warning, self.inodes_critical)
        if all(value is None for value in thresholds):
            raise ValueError("set at least one of warning, critical, inodes_warning, inodes_critical")
        _ordered(self.warning, self.critical, "disk usage")
        _ordered(self.inodes_warning, self.inodes_critical, "inode usage")


class TcpProbe(Model):
    """A TCP connect to ``host:port``; refused or unreachable is CRITICAL, slow is WARNING."""

    host: Annotated[str, Meta(min_length=1)]
    port: Annotated[int, Meta(ge=1, le=65535)]
    warning_ms: Milliseconds | None = None
    critical_ms: Milliseconds | None = None

    def __post_init__(self) -> None:
        _ordered(self.warning_ms, self.critical_ms, "latency")


class HttpProbe(Model):
    """One GET request (redirects are not followed, so a 3xx is judged as it is)."""

    url: str
    expect_status: StatusCodes | None = None
    body_match: Regex | None = None
    warning_ms: Milliseconds | None = None
    critical_ms: Milliseconds | None = None
    tls_days_warning: Annotated[int, Meta(ge=0)] | None = None
    tls_days_critical: Annotated[int, Meta(ge=0)] | None = None
    verify_tls: bool = True

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^/\s]+", self.url):
            raise FieldError("url", f"url {self.url!r} must start with http:// or https:// and name a host")
        _ordered(self.warning_ms, self.critical_ms, "latency")
        _ordered(self.tls_days_warning, self.tls_days_critical, "tls days", rising=False)
        wants_tls = self.tls_days_warning is not None or self.tls_days_critical is not None
        if wants_tls and not self.url.startswith("https://"):
            raise ValueError("tls_days_warning/tls_days_critical need an https:// url")

    def status_ok(self, code: int) -> bool:
        """Whether a response status counts as up (default: any 2xx or 3xx)."""
        return 200 <= code <= 399 if self.expect_status is None else code in self.expect_status


class ProcessProbe(Model):
    """Count processes found by exact ``name``, by a ``pidfile``, or by a ``cmdline`` regex."""

    name: Annotated[str, Meta(min_length=1)] | None = None
    pidfile: Annotated[str, Meta(min_length=1)] | None = None
    cmdline: Regex | None = None
    min: Annotated[int, Meta(ge=0)] = 1
    max: Annotated[int, Meta(ge=0)] | None = None

    def __post_init__(self) -> None:
        given = [key for key in ("name", "pidfile", "cmdline") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of name, pidfile, cmdline"
                + (f" (got {' and '.join(given)})" if given else " (none given)")
            )
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must not be below min ({self.min})")


class FileAgeProbe(Model):
    """The newest file matching ``path`` (a path or a glob) must be younger than ``max_age``."""

    path: Annotated[str, Meta(min_length=1)]
    max_age: Duration
    critical_age: Duration | None = None

    def __post_init__(self) -> None:
        if self.max_age <= 0:
            raise ValueError("max_age must be greater than 0")
        if self.critical_age is not None and self.critical_age <= self.max_age:
            raise ValueError("critical_age must be longer than max_age")


class SystemdUnitProbe(Model):
    """``ActiveState``/``SubState`` of a unit, read with ``systemctl show``."""

    unit: str

    def __post_init__(self) -> None:
        if not _UNIT.match(self.unit) or self.unit.startswith("-"):
            raise FieldError("unit", f"{self.unit!r} is not a systemd unit name (e.g. nginx.service)")


LoadThreshold = float | tuple[float, float, float]


class LoadProbe(Model):
    """Load average; a single number judges the 1-minute load, a list of three judges 1/5/15 minutes."""

    warning: LoadThreshold | None = None
    critical: LoadThreshold | None = None
    per_cpu: bool = True

    def __post_init__(self) -> None:
        for key in ("warning", "critical"):
            value = getattr(self, key)
            values = value if isinstance(value, tuple) else (value,)
            if any(v is not None and v < 0 for v in values):
                raise FieldError(key, "load thresholds cannot be negative")
        if self.warning is None and self.critical is None:
            raise ValueError("set warning and/or critical")
        warn, crit = self.triples()
        for w, c, what in zip(warn, crit, ("1m", "5m", "15m"), strict=True):
            _ordered(w, c, f"load {what}")

    def triples(self) -> tuple[tuple[float | None, ...], tuple[float | None, ...]]:
        """Thresholds as (1m, 5m, 15m) triples; ``None`` means "not judged"."""

        def expand(value: LoadThreshold | None) -> tuple[float | None, ...]:
            if value is None:
                return (None, None, None)
            if isinstance(value, tuple):
                return value
            return (value, None, None)

        return expand(self.warning), expand(self.critical)


class MemoryProbe(Model):
    """Used memory as a percentage of total, where used = total - MemAvailable (page cache is free)."""

    warning: Percent | None = None
    critical: Percent | None = None

    def __post_init__(self) -> None:
        if self.warning is None and self.critical is None:
            raise ValueError("set warning and/or critical")
        _ordered(self.warning, self.critical, "memory usage")


class FlappingConfig(Model):
    """Nagios-style flap detection thresholds (percent of weighted state changes over 21 results)."""

    enabled: bool = True
    high: Percent = 50.0
    low: Percent = 25.0

    def __post_init__(self) -> None:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}%) must be below high ({self.high:g}%)")


def _flapping_off() -> FlappingConfig:
    return FlappingConfig(enabled=False)


if TYPE_CHECKING:
    _FlappingField = FlappingConfig
    _CommandField = str | list[str]
else:
    # `flapping: true` means {enabled: true}: msgspec takes the bool as it is (a union of one model and bool
    # needs no value type) and CheckConfig.__post_init__ turns it into a FlappingConfig.
    _FlappingField = FlappingConfig | bool
    _CommandField = str | list[CommandArg]


class CheckConfig(Model):
    """One entry of ``checks:``: what to run, how often, and how its results become alert statuses."""

    name: Annotated[str, Meta(min_length=1, max_length=128)]

    command: _CommandField | None = None
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
    # UNSET (not given) becomes min(DEFAULT_TIMEOUT, interval) in __post_init__: a validated check holds a number
    timeout: Duration | UnsetType = UNSET
    labels: dict[str, str] = field(default_factory=dict)
    title: str | None = None
    description: str | None = None
    alert_key: str | None = None
    repeat_interval: Duration | None = None
    output: str | None = None
    failures_before_alert: Annotated[int, Meta(ge=1, le=100)] = 1
    successes_before_ok: Annotated[int, Meta(ge=1, le=100)] = 1
    flapping: _FlappingField = field(default_factory=_flapping_off)
    unknown_status: UnknownStatus = "Warning"

    def __post_init__(self) -> None:
        # First of this model's own checks, so the user sees the structural mistake before a detail of one key
        # (the types of the keys, the probe's included, are checked before this runs).
        self._exactly_one_probe()
        self._fields()
        self._command_form()
        if isinstance(self.flapping, bool):
            self.flapping = FlappingConfig(enabled=self.flapping)
        if self.timeout is UNSET:
            # A check that runs every 5 s should not be allowed to hang for 10 s by default.
            self.timeout = min(DEFAULT_TIMEOUT, self.interval)

    def _exactly_one_probe(self) -> None:
        given = [key for key in PROBE_KEYS if getattr(self, key) is not None]
        if len(given) != 1:
            who = f"check {self.name!r}"
            detail = f"got {len(given)}: {', '.join(given)}" if given else "none given"
            raise ValueError(f"{who} needs exactly one probe key, one of {', '.join(PROBE_KEYS)} ({detail})")

    def _fields(self) -> None:
        if not _NAME.match(self.name):
            raise FieldError(
                "name",
                f"check name {self.name!r} may only use letters, digits and _ . : @ - (and must not start with "
                "a symbol): it becomes part of the alert key and of metric labels",
            )
        bad = [key for key in self.labels if not _LABEL_KEY.match(key) or len(key) > 128]
        if bad:
            raise FieldError(
                "labels",
                f"label keys {bad} are not valid: use letters, digits and _ (not starting with a digit), "
                "at most 128 characters (Flashduty label rules)",
            )
        for template in self.labels.values():
            _template("labels", template)
        for key in ("title", "description", "alert_key"):
            value = getattr(self, key)
            if value is not None:
                _template(key, value)
        self.require_positive("interval", "timeout")
        if self.repeat_interval is not None and self.repeat_interval <= 0:
            raise FieldError("repeat_interval", "must be greater than 0 (leave it out to never repeat)")

    def _command_form(self) -> None:
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

    @property
    def kind(self) -> str:
        """The probe key this check uses (``command``, ``disk``, ...)."""
        for key in PROBE_KEYS:
            if getattr(self, key) is not None:
                return key
        raise AssertionError("validated CheckConfig without a probe")  # pragma: no cover


def _template(key: str, template: str) -> None:
    with blame(key):
        validate_template(template)


def validate_unique_names(checks: list[CheckConfig]) -> None:
    """Raise ``ValueError`` naming every duplicated check name and the positions that use it.

    Names identify a check's alert, its stored state and its metrics, so two checks sharing one would
    overwrite each other's alerts. The root config model calls it from its own checks.
    """
    seen: dict[str, list[int]] = {}
    for index, check in enumerate(checks):
        seen.setdefault(check.name, []).append(index)
    duplicates = {name: where for name, where in seen.items() if len(where) > 1}
    if duplicates:
        parts = [f"{name!r} ({', '.join(f'checks[{i}]' for i in where)})" for name, where in duplicates.items()]
        raise ValueError(f"duplicate check names: {'; '.join(parts)}: each check needs its own name")
