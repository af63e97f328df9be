"""Structured JSON logs with secrets redacted from every field.

Logs go to stdout as JSON lines (journald stores them as they are). In dry-run mode stdout carries the
event bodies instead, so logs move to stderr and stdout stays pipeable into ``jq``.
"""

from __future__ import annotations

import logging
import re
import sys
import weakref
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_KEY_IN_URL = re.compile(r"(integration_key=)[^&\s\"']+", re.IGNORECASE)


class Redactor:
    """Removes known secrets (integration keys, tokens) and any ``integration_key=`` query value.

    One per agent (and one per CLI command), holding the secrets of its current config: :meth:`set` replaces
    them at every (re)load, so a rotated key does not linger. It is usable on plain strings (health output,
    CLI errors) and is handed to every stage that writes text out, so there is exactly one place that
    decides what a secret looks like. Logs are redacted by every live redactor (see :func:`configure_logging`).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: frozenset[str] = frozenset()
        self.set(secrets)

    def set(self, secrets: Iterable[str]) -> None:
        self._secrets = frozenset(s for s in secrets if s and len(s) >= 4)

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



class _LiveRedactors:
    """The structlog processor: structlog's configuration is per process, so log lines are redacted by
    every redactor currently registered (an agent registers its own while it runs; more than one agent in a
    process each keep their own secrets). Holds no secrets itself, only weak references."""

    def __init__(self) -> None:
        self._live: weakref.WeakSet[Redactor] = weakref.WeakSet()

    def register(self, redactor: Redactor) -> None:
        self._live.add(redactor)

    def unregister(self, redactor: Redactor) -> None:
        self._live.discard(redactor)

    def __call__(self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        redactors = list(self._live) or [_GENERIC]
        for key, val in list(event_dict.items()):
            for redactor in redactors:
                val = redactor.value(val)
            event_dict[key] = val
        return event_dict


_GENERIC = Redactor()  # no secrets of its own: the integration_key= rule alone
LIVE_REDACTORS = _LiveRedactors()


def configure_logging(level: str = "info", stream: TextIO | None = None, log_format: str = "auto") -> None:
    """JSON lines, one per event (what journald and log shippers read), or on a terminal (``auto``, or
    ``console``) structlog's readable colored lines; ISO timestamps, and redaction (by every live redactor)
    as the last step before rendering, in both."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    out = stream or sys.stdout
    console = log_format == "console" or (log_format == "auto" and _is_terminal(out))
    renderer: Any = structlog.dev.ConsoleRenderer(colors=_is_terminal(out)) if console else \
        structlog.processors.JSONRenderer()

    def _format_exc(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return structlog.processors.format_exc_info(_logger, _name, event_dict)  # type: ignore[arg-type]

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _format_exc,
            LIVE_REDACTORS,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False
