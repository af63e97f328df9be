"""The raw result of one check run, and the Nagios plugin output format (summary, long output, perfdata).

Built-in probes produce the same ``CheckResult`` shape as command checks (including perfdata), so the
lifecycle, the template fields and the alert layer never care which kind of check ran.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

RawStatus = Literal["OK", "WARNING", "CRITICAL", "UNKNOWN"]

EXIT_STATUS: dict[int, RawStatus] = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
"""Nagios plugin API exit codes."""

STATUS_RANK: dict[RawStatus, int] = {"OK": 0, "WARNING": 1, "UNKNOWN": 2, "CRITICAL": 3}
"""Severity order used when a probe combines several findings: the worst one wins."""

REASONS = (
    "",  # the check ran and reported a status itself
    "timeout",  # killed (command) or abandoned (probe) after `timeout`
    "not_found",  # binary missing at spawn, or exit 127
    "not_executable",  # permission denied at spawn, or exit 126
    "exec_error",  # any other failure to start the command
    "signal",  # the command died by a signal
    "bad_exit",  # exit code outside 0..3
    "probe_error",  # a built-in probe failed to take its measurement
    "busy",  # a previous probe of this check is still stuck in a blocking call
)
"""Values of ``CheckResult.reason``; every non-empty reason comes with status ``UNKNOWN``."""


@dataclass(frozen=True, slots=True)
class PerfData:
    """One performance data item: ``'label'=value[UOM];warn;crit;min;max``.

    ``warn``/``crit`` stay strings because they are Nagios *ranges* (``10:20``, ``@5``, ``~:3``), not
    numbers; ``value`` is ``None`` for the ``U`` (undetermined) value.
    """

    label: str
    value: float | None
    uom: str = ""
    warn: str | None = None
    crit: str | None = None
    min: float | None = None
    max: float | None = None

    def render(self) -> str:
        """Canonical text form, the way a plugin would print it."""
        label = self.label
        if re.search(r"[\s'=]", label):
            label = "'" + label.replace("'", "''") + "'"
        value = "U" if self.value is None else _number(self.value)
        tail = [self.warn or "", self.crit or "", _opt_number(self.min), _opt_number(self.max)]
        while tail and not tail[-1]:
            tail.pop()
        return ";".join([f"{label}={value}{self.uom}", *tail])


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The raw outcome of one run, before unknown mapping, hysteresis and flap detection."""

    status: RawStatus
    summary: str
    long_output: str = ""
    perfdata: list[PerfData] = field(default_factory=list)
    reason: str = ""
    duration: float = 0.0
    exit_code: int | None = None
    truncated: bool = False


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _opt_number(value: float | None) -> str:
    return "" if value is None else _number(value)


_VALUE = re.compile(r"^([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(.*)$")


def _float(text: str) -> float | None:
    try:
        return float(text) if text.strip() else None
    except ValueError:
        return None


def parse_perfdata(text: str) -> list[PerfData]:
    """Parse space-separated perfdata items; malformed items are skipped, never fatal.

    Labels may be single-quoted to contain spaces or ``=`` (a doubled ``''`` is a literal quote), as the
    plugin guidelines allow. Decimal commas, which some localised plugins print, are accepted.
    """
    items: list[PerfData] = []
    pos, end = 0, len(text)
    while pos < end:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            break
        if text[pos] == "'":
            label_chars: list[str] = []
            pos += 1
            while pos < end:
                if text[pos] == "'":
                    if pos + 1 < end and text[pos + 1] == "'":
                        label_chars.append("'")
                        pos += 2
                        continue
                    pos += 1
                    break
                label_chars.append(text[pos])
                pos += 1
            label = "".join(label_chars)
            if pos >= end or text[pos] != "=":
                pos = _skip_token(text, pos)
                continue
        else:
            start = pos
            while pos < end and text[pos] != "=" and not text[pos].isspace():
                pos += 1
            if pos >= end or text[pos] != "=":
                pos = _skip_token(text, pos)
                continue
            label = text[start:pos]
        pos += 1  # the '='
        start = pos
        pos = _skip_token(text, pos)
        item = _perf_item(label, text[start:pos])
        if item is not None:
            items.append(item)
    return items


def _skip_token(text: str, pos: int) -> int:
    while pos < len(text) and not text[pos].isspace():
        pos += 1
    return pos


def _perf_item(label: str, spec: str) -> PerfData | None:
    if not label:
        return None
    parts = spec.split(";")
    raw_value = parts[0].replace(",", ".")
    if raw_value == "U":
        value, uom = None, ""
    else:
        match = _VALUE.match(raw_value)
        if not match:
            return None
        value, uom = float(match.group(1)), match.group(2)
    extras = [*parts[1:5], "", "", "", ""][:4]
    return PerfData(
        label=label,
        value=value,
        uom=uom,
        warn=extras[0] or None,
        crit=extras[1] or None,
        min=_float(extras[2].replace(",", ".")),
        max=_float(extras[3].replace(",", ".")),
    )


def parse_plugin_output(text: str) -> tuple[str, str, list[PerfData]]:
    """Split plugin output into (summary, long output, perfdata) per the Nagios plugin API.

    Layout::

        SUMMARY | PERFDATA
        LONG OUTPUT LINE
        LONG OUTPUT LINE | MORE PERFDATA
        MORE PERFDATA LINES

    Everything after the first ``|`` in the long output, including the following lines, is perfdata.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return "", "", []
    summary, _, perf_text = lines[0].partition("|")
    perf_parts = [perf_text]
    long_lines: list[str] = []
    in_perf = False
    for line in lines[1:]:
        if in_perf:
            perf_parts.append(line)
            continue
        before, bar, after = line.partition("|")
        if bar:
            in_perf = True
            if before.strip():
                long_lines.append(before.rstrip())
            perf_parts.append(after)
        else:
            long_lines.append(line)
    return summary.strip(), "\n".join(long_lines).strip("\n"), parse_perfdata(" ".join(perf_parts))


def render_perfdata(items: list[PerfData]) -> str:
    """Perfdata as one line of plugin-style text, for templates and logs."""
    return " ".join(item.render() for item in items)


def sanitize_label(label: str) -> str:
    """A perfdata label as a template/label-safe identifier: ``/var/log`` -> ``var_log``."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", label)).strip("_").lower() or "value"


def template_fields(result: CheckResult) -> dict[str, str]:
    """The result-derived template variables (the lifecycle adds ``check`` and the effective ``status``)."""
    fields = {
        "raw_status": result.status,
        "summary": result.summary,
        "output": result.long_output,
        "perfdata": render_perfdata(result.perfdata),
        "duration": f"{result.duration:.3f}",
        "reason": result.reason,
        "exit_code": "" if result.exit_code is None else str(result.exit_code),
    }
    for item in result.perfdata:
        key = "perf_" + sanitize_label(item.label)
        if key not in fields:  # first item wins when two labels sanitise to the same name
            fields[key] = "U" if item.value is None else _number(item.value)
    return fields


def worst(statuses: list[RawStatus]) -> RawStatus:
    """The most severe of several findings (OK when there are none)."""
    return max(statuses, key=STATUS_RANK.__getitem__, default="OK")
