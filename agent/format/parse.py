"""A source's format chain applied to one line: the record's fields and the message rules match.

A line that does not parse is never dropped: its text is the message (rules without ``where`` still match
it; ``where`` conditions on the fields it lacks do not hold), and ``Record.error`` names the format that
failed, for ``dutytail_parse_errors_total{source,format}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agent.format.config import DEFAULT_MESSAGE_FIELDS, FormatName
from agent.format.container import parse_cri, parse_docker
from agent.format.logfmt import parse_logfmt
from agent.format.values import MISSING, as_text, lookup_path


@dataclass(slots=True)
class Record:
    fields: dict[str, Any]
    message: str
    error: FormatName | None = None
    """The format this line did not parse as (None: it parsed)."""


def _json(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class Parser:
    """Immutable once built (rules run in worker threads): one per source and config."""

    __slots__ = ("chain", "message_fields")

    def __init__(self, chain: Sequence[FormatName], message_field: str | None = None) -> None:
        self.chain = tuple(name for name in chain if name != "raw")
        self.message_fields: tuple[str, ...] = (message_field,) if message_field else DEFAULT_MESSAGE_FIELDS

    def parse(self, line: str) -> Record:
        fields: dict[str, Any] = {}
        text = line
        for name in self.chain:
            if name == "cri" or name == "docker":
                framed = parse_cri(text) if name == "cri" else parse_docker(text)
                if framed is None:
                    return Record(fields, text, name)
                fields, text = framed
                continue
            parsed = _json(text) if name == "json" else parse_logfmt(text)
            if parsed is None:
                return Record(fields, text, name)
            fields = {**fields, **parsed} if fields else parsed
        return Record(fields, self.message(fields, text))

    def message(self, fields: dict[str, Any], whole: str) -> str:
        """The first message field present with a text value; the whole (unframed) line when none is."""
        for name in self.message_fields:
            value = lookup_path(fields, name)
            if value is not MISSING:
                text = as_text(value)
                if text is not None:
                    return text
        return whole
