"""The Flashduty Standard Alert event body, with the protocol's limits enforced on our side.

The server truncates some over-long fields silently and its behaviour for too many labels or bad label
keys is undocumented, so the agent never relies on it: every body leaves here already valid, and anything
we had to cut is reported (``Event.adjustments``) so the caller can count and log it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Status = Literal["Critical", "Warning", "Info", "Ok"]
SEVERITIES: tuple[Status, ...] = ("Critical", "Warning", "Info")

TITLE_MAX = 512
ALERT_KEY_MAX = 255
DESCRIPTION_MAX = 2048
LABELS_MAX = 50
LABEL_KEY_MAX = 128
LABEL_VALUE_MAX = 2048

_LABEL_KEY_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_ELLIPSIS = "…"


def json_text(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is. orjson is ~5x faster than ``json`` on the per-event path;
    the standard module takes over for the one input orjson refuses (a lone surrogate, e.g. from a journald
    field), which it writes as an escape."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, marking the cut with an ellipsis.

    Python strings index by code point, so the cut never splits a character (the protocol asks for that).
    """
    if len(text) <= limit:
        return text
    return text[: limit - 1] + _ELLIPSIS


@functools.lru_cache(maxsize=4096)  # label keys repeat on every event; the regex showed in profiles
def sanitize_label_key(key: str) -> str:
    """Map any string to a Prometheus-style label name, the form Flashduty requires."""
    clean = _LABEL_KEY_BAD_CHARS.sub("_", key) or "_"
    if clean[0].isdigit():
        clean = "_" + clean
    return clean[:LABEL_KEY_MAX]


def stable_alert_key(*parts: str) -> str:
    """A short, stable identity hash: same inputs on any host or restart give the same key."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:32]


@dataclass(slots=True)
class Event:
    """One event to POST. ``labels`` is in priority order: when over the limit the tail is dropped."""

    title: str
    status: Status
    alert_key: str
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    event_time: int | None = None
    adjustments: list[str] = field(default_factory=list)

    def to_body(self) -> dict[str, Any]:
        """The exact JSON object sent to Flashduty, within every documented limit."""
        notes = self.adjustments
        title = self.title.strip() or "(no title)"
        if len(title) > TITLE_MAX:
            notes.append(f"title truncated from {len(title)} to {TITLE_MAX} characters")
            title = truncate(title, TITLE_MAX)
        alert_key = self.alert_key
        if len(alert_key) > ALERT_KEY_MAX:
            # Truncating could merge distinct alerts; hashing the overflow keeps keys unique and stable.
            notes.append("alert_key longer than 255 characters was shortened with a hash")
            alert_key = alert_key[: ALERT_KEY_MAX - 33] + "-" + stable_alert_key(alert_key)
        body: dict[str, Any] = {"title_rule": title, "event_status": self.status, "alert_key": alert_key}
        if self.description:
            description = self.description
            if len(description) > DESCRIPTION_MAX:
                notes.append(f"description truncated from {len(description)} to {DESCRIPTION_MAX} characters")
                description = truncate(description, DESCRIPTION_MAX)
            body["description"] = description
        labels = clean_labels(self.labels, notes)
        if labels:
            body["labels"] = labels
        if self.event_time is not None:
            body["event_time"] = int(self.event_time)
        return body


def clean_labels(labels: Mapping[str, Any], notes: list[str] | None = None) -> dict[str, str]:
    """Sanitise keys, stringify and truncate values, keep the first 50 (callers order by importance)."""
    result: dict[str, str] = {}
    dropped: list[str] = []
    for raw_key, raw_value in labels.items():
        key = sanitize_label_key(str(raw_key))
        if key != raw_key and notes is not None:
            notes.append(f"label key {raw_key!r} renamed to {key!r}")
        if key in result:
            continue
        if len(result) >= LABELS_MAX:
            dropped.append(key)
            continue
        value = "" if raw_value is None else str(raw_value)
        result[key] = truncate(value, LABEL_VALUE_MAX)
    if dropped and notes is not None:
        notes.append(f"{len(dropped)} labels over the limit of {LABELS_MAX} dropped: {', '.join(dropped[:5])}")
    return result


class _KeepMissing(dict[str, Any]):
    """Format mapping that leaves unknown ``{name}`` references visible instead of raising at runtime."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


_FORMATTER = string.Formatter()


def template_fields(template: str) -> set[str]:
    """Names a ``{name}`` template refers to (used to validate templates when the config loads)."""
    names: set[str] = set()
    for _literal, name, _spec, _conv in _FORMATTER.parse(template):
        if name is not None and name != "":
            names.add(name.split(".")[0].split("[")[0])
    return names


def validate_template(template: str) -> str:
    """Reject templates Python's formatter cannot parse (unbalanced braces), at config load time."""
    try:
        list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template {template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    return template


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill ``{name}`` references; unknown names stay as written so a typo is visible, not fatal."""
    try:
        return template.format_map(_KeepMissing(values))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template
