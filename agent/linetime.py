"""The time a log line says it was written: ISO 8601, nginx/Apache access logs, syslog.

``dutytail test-rule`` replays a file on this clock, and absence and sequence rules judge lines read late (a
backlog after a restart) by it, so that a heartbeat written while the agent was down counts for when it was
written, not for when it was read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_TIMESTAMPS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"), "iso"),
    (re.compile(r"\[(\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\]"), "%d/%b/%Y:%H:%M:%S %z"),
    (re.compile(r"^([A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2})"), "syslog"),
]


def line_time(line: str, year: int | None = None, *, naive_utc: bool = True) -> float | None:
    """Seconds since the epoch a line says it was written; None when it says nothing readable.

    A timestamp without a zone is UTC when ``naive_utc`` (test-rule's clock: one reading everywhere), else
    the host's local time (what an application on this host writes). Syslog's lack of a year is ``year``
    (default: this year)."""
    for pattern, fmt in _TIMESTAMPS:
        match = pattern.search(line)
        if not match:
            continue
        text = match.group(1)
        try:
            if fmt == "iso":
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            elif fmt == "syslog":
                parsed = datetime.strptime(f"{year or datetime.now(UTC).year} {text}", "%Y %b %d %H:%M:%S")
            else:
                parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC) if naive_utc else parsed.astimezone()
        return parsed.timestamp()
    return None
