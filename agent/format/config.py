"""A source's ``format:`` (one name or a chain applied in order) and ``message_field``, validated.

A chain is at most one container framing (``cri`` or ``docker``: how the runtime wrapped the line) followed
by at most one record format (``json`` or ``logfmt``: what the application wrote). ``[cri, json]`` reads a
Kubernetes node's container logs whose applications log JSON. ``raw`` (the default) means plain text.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

FormatName = Literal["raw", "json", "logfmt", "cri", "docker"]
FRAMINGS = ("cri", "docker")
RECORDS = ("json", "logfmt")
DEFAULT_MESSAGE_FIELDS = ("msg", "message", "log")
"""What ``match``/``contains``/``exclude`` and ``{line}`` see when ``message_field`` is not set: the first of
these present in the record (``log`` is the Docker framing's own message key), else the whole line."""


def normalize_chain(value: Any) -> tuple[FormatName, ...]:
    """``format:`` as a tuple of names in the order they apply; ValueError says what is wrong with it."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise ValueError("format must be one of raw, json, logfmt, cri, docker, or a list of them")
    known = get_args(FormatName)
    for name in names:
        if name not in known:
            raise ValueError(f"unknown format {name!r}; known: {', '.join(known)}")
    if "raw" in names:
        if len(names) > 1:
            raise ValueError("`raw` means plain text and cannot be combined with other formats")
        return ("raw",)
    framings = [n for n in names if n in FRAMINGS]
    records = [n for n in names if n in RECORDS]
    if len(framings) > 1 or len(records) > 1:
        raise ValueError("a format chain has at most one container framing (cri or docker) and one record "
                         "format (json or logfmt), e.g. [cri, json]")
    if framings and names[0] not in FRAMINGS:
        raise ValueError(f"the container framing {framings[0]!r} comes first: it wraps the application's line "
                         f"(write [{framings[0]}, {records[0]}])")
    return tuple(names)


def framing_of(chain: tuple[FormatName, ...]) -> Literal["cri", "docker"] | None:
    """The container framing a chain starts with (the tailer joins its partial records)."""
    first = chain[0] if chain else "raw"
    return first if first in ("cri", "docker") else None  # type: ignore[return-value]
