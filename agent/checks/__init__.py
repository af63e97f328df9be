"""Local checks: Nagios-plugin commands and built-in probes, turned into notifiable observations.

The alert layer needs only this package's public API: the config model (``CheckConfig``, whose list the root
config checks with ``validate_unique_names``), ``CheckScheduler`` which calls back with
``CheckObservation``s, and ``run_check_once`` for one-off runs (tests, ``dutytail check-run``).
See docs/checks.md for the user-facing reference.
"""

from agent.checks.config import (
    PROBE_KEYS,
    CheckConfig,
    DiskProbe,
    EffectiveStatus,
    FileAgeProbe,
    FlappingConfig,
    HttpProbe,
    LoadProbe,
    MemoryProbe,
    ProcessProbe,
    SystemdUnitProbe,
    TcpProbe,
    validate_unique_names,
)
from agent.checks.lifecycle import CheckLifecycle, Transition, flap_percent, map_status
from agent.checks.result import CheckResult, PerfData, RawStatus, parse_perfdata, parse_plugin_output
from agent.checks.runner import run_check_once
from agent.checks.scheduler import CheckObservation, CheckScheduler

__all__ = [
    "PROBE_KEYS",
    "CheckConfig",
    "CheckLifecycle",
    "CheckObservation",
    "CheckResult",
    "CheckScheduler",
    "DiskProbe",
    "EffectiveStatus",
    "FileAgeProbe",
    "FlappingConfig",
    "HttpProbe",
    "LoadProbe",
    "MemoryProbe",
    "PerfData",
    "ProcessProbe",
    "RawStatus",
    "SystemdUnitProbe",
    "TcpProbe",
    "Transition",
    "flap_percent",
    "map_status",
    "parse_perfdata",
    "parse_plugin_output",
    "run_check_once",
    "validate_unique_names",
]
