"""Rules: which lines matter (``config``: ``match``, ``contains``, ``where``), compiled per source
(``ruleset``), with ``where`` conditions (``where``) and the raw-bytes prefilter that keeps structured logs
fast (``prefilter``)."""

from agent.rules.config import (
    ALERT_FIELDS,
    BUILTIN_FIELDS,
    AbsentConfig,
    ExpectConfig,
    ResolveConfig,
    RuleConfig,
    RuleKind,
    ThresholdConfig,
)
from agent.rules.ruleset import Hit, Hits, RuleSet
from agent.rules.where import FieldCondition, Where

__all__ = [
    "ALERT_FIELDS",
    "BUILTIN_FIELDS",
    "AbsentConfig",
    "ExpectConfig",
    "FieldCondition",
    "Hit",
    "Hits",
    "ResolveConfig",
    "RuleConfig",
    "RuleKind",
    "RuleSet",
    "ThresholdConfig",
    "Where",
]
