"""The format stage: what a line *is* (plain text, a JSON or logfmt record, a container runtime's framing).

A source hands on lines; the rules ask this stage for a line's fields and message only when they need them
(``agent.rules`` decides on the raw bytes first and parses only the lines a rule may match: parsing every
line would cap the agent near a million lines a second before any rule ran).

* ``config``: the ``format:`` chain and ``message_field`` of a source, validated.
* ``parse``: a chain of formats applied to one line -> a :class:`Record` (fields + message).
* ``logfmt``, ``container`` (CRI, Docker json-file), ``kubernetes`` (fields from kubelet log paths).
* ``values``: one value model for every source (JSON, logfmt, journald): text, numbers, dotted paths.
"""

from agent.format.config import DEFAULT_MESSAGE_FIELDS, FormatName, framing_of, normalize_chain
from agent.format.kubernetes import kubernetes_fields
from agent.format.parse import Parser, Record
from agent.format.values import MISSING, as_number, as_text, lookup_path

__all__ = [
    "DEFAULT_MESSAGE_FIELDS",
    "MISSING",
    "FormatName",
    "Parser",
    "Record",
    "as_number",
    "as_text",
    "framing_of",
    "kubernetes_fields",
    "lookup_path",
    "normalize_chain",
]
