"""Structured JSON logs with secrets redacted from every field.

Logs go to stdout as JSON lines (journald stores them as they are). In dry-run mode stdout carries the
event bodies instead, so logs move to stderr and stdout stays pipeable into ``jq``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_KEY_IN_URL = re.compile(r"(integration_key=)[^&\s\"']+", re.IGNORECASE)


class Redactor:
    """Removes known secrets (integration keys, tokens) and any ``integration_key=`` query value.

    It is a structlog processor and also usable on plain strings (health output, CLI errors), so there
    is exactly one place that decides what a secret looks like.
    """

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s and len(s) >= 4)

    def text(self, value: str) -> str:
        value = _KEY_IN_URL.sub(r"\1***", value)
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        return value

    def __call__(self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, val in list(event_dict.items()):
            event_dict[key] = self.value(val)
        return event_dict


REDACTOR = Redactor()


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines, one per event, with ISO timestamps and redaction as the last step before rendering."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    out = stream or sys.stdout

    def _format_exc(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return structlog.processors.format_exc_info(_logger, _name, event_dict)  # type: ignore[arg-type]

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _format_exc,
            REDACTOR,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
