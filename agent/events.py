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
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Control characters (NUL, escape sequences ...) a log line may carry: never sent. Newline and tab stay in a
description; a title or label is one line."""


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` without control characters (``multiline`` keeps newlines and tabs; else they become spaces)."""
    if text.isprintable():
        return text
    if not multiline:
        text = text.replace("\n", " ").replace("\t", " ").replace("\r", " ")
    return _CONTROLS.sub("", text)


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
        title = printable(self.title).strip() or "(no title)"
        if len(title) > TITLE_MAX:
            notes.append(f"title truncated from {len(title)} to {TITLE_MAX} characters")
            title = truncate(title, TITLE_MAX)
        alert_key = printable(self.alert_key)
        if len(alert_key) > ALERT_KEY_MAX:
            # Truncating could merge distinct alerts; hashing the overflow keeps keys unique and stable.
            notes.append("alert_key longer than 255 characters was shortened with a hash")
            alert_key = alert_key[: ALERT_KEY_MAX - 33] + "-" + stable_alert_key(alert_key)
        body: dict[str, Any] = {"title_rule": title, "event_status": self.status, "alert_key": alert_key}
        if self.description:
            description = printable(self.description, multiline=True)
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
        value = "" if raw_value is None else printable(str(raw_value))
        result[key] = truncate(value, LABEL_VALUE_MAX)
    if dropped and notes is not None:
        notes.append(f"{len(dropped)} labels over the limit of {LABELS_MAX} dropped: {', '.join(dropped[:5])}")
    return result


SOURCE_LABEL_FIELDS = ("k8s_namespace", "k8s_pod", "k8s_container")
"""Fields a source knows of every line of a file (from the kubelet's log path): every alert from that file
carries them as labels."""

_FORMATTER = string.Formatter()
_FIELD_PATH = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]*(?:\.(?!__)[A-Za-z0-9_-]+)*\Z")  # no dunders
FIELD_MAX = 4096
"""Characters one ``{field}`` contributes at most (a 64 KiB line must not make every title 64 KiB)."""
RENDER_MAX = 16384
"""Characters a rendered template has at most (the protocol's limits cut further)."""
MISSING = object()


@functools.lru_cache(maxsize=2048)
def _parts(template: str) -> tuple[tuple[str, str | None], ...]:
    """A template as (literal text, field path or None) pairs; ValueError says what is not allowed."""
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template {template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    for literal, name, spec, conversion in parsed:
        if name is None:
            parts.append((literal, None))
            continue
        if not _FIELD_PATH.match(name):
            raise ValueError(f"template field {{{name}}} in {template!r}: only field names and dotted field paths "
                             f"(e.g. {{host}}, {{req.path}}, {{tags.0}}) are allowed")
        if conversion or spec:
            raise ValueError(f"template field {{{name}...}} in {template!r}: conversions (!r) and format specs "
                             f"(:...) are not supported; write {{{name}}}")
        parts.append((literal, name))
    return tuple(parts)


def template_paths(template: str) -> set[str]:
    """The whole field paths a template names (``{req.path}`` -> ``req.path``)."""
    return {name for _literal, name in _parts(template) if name is not None}


def template_fields(template: str) -> set[str]:
    """Names a ``{name}`` template refers to (the first part of a dotted path): validated when the config
    loads."""
    return {name.split(".")[0] for _literal, name in _parts(template) if name is not None}


def validate_template(template: str) -> str:
    """Reject what the renderer would not render (unbalanced braces, attribute access, format specs)."""
    _parts(template)
    return template


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """A field by name, or by a dotted path into nested mappings and lists (``req.path``, ``tags.0``). Only
    keys and indexes are followed, never attributes: a template cannot reach into Python objects."""
    value = values.get(path, MISSING)
    if value is not MISSING or "." not in path:
        return value
    value = values
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
        elif isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
        if value is MISSING:
            return value
    return value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value[:FIELD_MAX]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) or value is None:
        return "" if value is None else str(value)
    return json_text(value)[:FIELD_MAX]


def render(template: str, values: Mapping[str, Any]) -> str:
    """Fill ``{name}`` references; unknown names stay as written so a typo is visible, not fatal."""
    try:
        parts = _parts(template)
    except ValueError:
        return template[:RENDER_MAX]  # refused when the config loaded; never rendered half
    out: list[str] = []
    for literal, name in parts:
        out.append(literal)
        if name is not None:
            value = lookup(values, name)
            out.append("{" + name + "}" if value is MISSING else _text(value))
    return "".join(out)[:RENDER_MAX]
