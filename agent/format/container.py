"""Container runtime framing: what the runtime wrapped around each line the application wrote.

* CRI (containerd, CRI-O): ``<RFC3339Nano time> <stdout|stderr> <P|F>[:flags] <message>``.
* Docker json-file: ``{"log": "<message>\\n", "stream": "stdout", "time": "<RFC3339Nano>"}``.

Both split a long record into partial lines (CRI tag ``P``; Docker: a ``log`` without its final newline); the
tailer joins those before anything parses them (``agent/tail/partials.py``), so here a line is one record.
Both give the fields ``stream`` and ``time``.
"""

from __future__ import annotations

from typing import Any

import orjson

Framed = tuple[dict[str, Any], str]  # (fields, message)


def parse_cri(line: str) -> Framed | None:
    parts = line.split(" ", 3)
    if len(parts) < 3:
        return None
    time, stream, tag = parts[0], parts[1], parts[2]
    if stream not in ("stdout", "stderr") or not tag or tag[0] not in "PF" or not time[:1].isdigit():
        return None
    return {"stream": stream, "time": time}, parts[3] if len(parts) == 4 else ""


def parse_docker(line: str) -> Framed | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("log"), str):
        return None
    fields = {k: record[k] for k in ("stream", "time") if k in record}
    message = record["log"]
    return fields, message[:-1] if message.endswith("\n") else message
