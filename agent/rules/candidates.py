"""Which lines each rule side may match, decided on the raw bytes before anything is parsed.

Every side of a rule has its *required* prefilters (``prefilter.py``: one superset pattern per condition, and
one for the message regex); a line is a candidate for a side only when all of them match it. Asking the
multi-pattern engine for all of them costs a callback per (line, pattern), and in a real log most single
conditions hold on a good part of the lines (``service: gateway`` on a quarter of them, ``method: GET`` on
most): four hits a line add up to more than parsing would cost. So the engine looks for one pattern per side,
its *primary*, and the side's other patterns are checked with ``re`` on the few lines the primary nominates.

Which condition is the most selective depends on the log, not on the rule: a ``gte: 500`` may hold on 1% of
one service's lines and on every line of another's. The first lines (``SAMPLE_LINES``) are therefore scanned
for every pattern, counting how often each matches; then each side's primary becomes its cheapest pattern: the
rarest, a keyed one counted as if it nominated :data:`KEYED_COST` more (a side may also be looked for by a keyed
condition's value alone, which its keyed form implies). The plan only changes which superset is tried first,
never the answer, so threads that race on the switch are harmless. Rule processes (``processes.py``) adopt the
agent's learned plan rather than each sampling again.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson

from agent.lines import LineChunk
from agent.match import MultiMatcher

SAMPLE_LINES = 4_000
"""Lines scanned for every prefilter pattern before each side's rarest one is chosen as its primary. Sampling
costs ~8x the lean plan per line (a 1 MiB chunk of the JSON benchmark: 25 ms vs 3 ms), and a few thousand
lines already rank patterns whose frequencies differ enough to matter; 20,000 cost the benchmark's agent and
each of its rule processes ~0.1 s of CPU at the start of every backlog."""

KEYED_COST = 0.015
"""What looking for a keyed pattern costs, in nominated lines per line scanned. The engine stops at every
occurrence of the key (on most lines of a JSON log) to try the rest: 0.2-0.25 ms per MiB of the benchmark's
250-byte lines for ``level`` or ``bytes``, ~0.06 us a line, against ~4 us for a nominated line (decode, parse,
conditions). So a condition's value alone is looked for instead while it nominates fewer than 1.5% more lines."""

Candidate = tuple[int, str, list[int]]
"""(line index, or -1 on the undecoded path where only nominated lines are decoded; line; sides to test)."""


_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")
"""A ``\\uXXXX`` escape itself (an even run of backslashes before it: ``\\\\u00e9`` is an escaped backslash)."""
_STILL_ESCAPED = re.compile(r"\\u[0-9a-fA-F]{4}")


def _written_out(m: re.Match[str]) -> str:
    code = int(m[2], 16)
    if code < 0x20 or code in (0x22, 0x5C) or 0xD800 <= code <= 0xDFFF:
        return m[0]  # must stay escaped in JSON (a control character, a quote, a backslash, half a pair)
    return m[1] + chr(code)


def write_out_escapes(line: str) -> str | None:
    """The line with its ``\\uXXXX`` escapes written as the characters they stand for: the same JSON text to a
    parser (an escape stands only inside a string, and only characters a string may hold are written out), so
    every prefilter, a superset of its condition over any JSON text without escapes, holds on it when the
    condition holds on the record. None when an escape is left (a quote, a control character, a surrogate, an
    escape inside an escaped string of a container's message): such a line stays a candidate for every side."""
    text = _ESCAPE.sub(_written_out, line)
    return None if _STILL_ESCAPED.search(text) else text


def rewritten_object(line: str) -> str | None:
    """A JSON object line as orjson writes it again: the same record (the last of duplicate keys, as the parser
    keeps it), its non-ASCII characters written out rather than escaped; several times faster than
    :func:`write_out_escapes` (a C parser and writer, no regex callback per escape). None when the line is not a
    JSON object orjson reads, or when an escape is left (a quote or control character inside a string)."""
    try:
        record = orjson.loads(line)
        if type(record) is not dict:
            return None
        text = orjson.dumps(record).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    return None if _STILL_ESCAPED.search(text) else text


@dataclass(frozen=True, slots=True)
class _Plan:
    matcher: MultiMatcher
    global_of: tuple[int, ...]
    """Matcher pattern index -> index in ``RawFilter.patterns`` (-1: the escape catch-all)."""
    sides_of: dict[int, tuple[int, ...]]
    """Matcher pattern index -> the sides it is the primary of (the sampling plan: of which it is first)."""
    primary: dict[int, int]
    """Side -> its primary, as an index in ``RawFilter.patterns``."""
    rest: dict[int, tuple[re.Pattern[str], ...]] = field(default_factory=dict)
    """Side -> its other patterns, checked with ``re`` on the line (lean plan only)."""
    sampling: bool = False


class RawFilter:
    """Immutable in what it answers; its plan (which pattern is tried first) improves once."""

    def __init__(self, required: Sequence[tuple[int, ...]], patterns: Sequence[str], *, escape: str | None,
                 matcher: Callable[[tuple[str, ...]], MultiMatcher], keyed: Sequence[bool],
                 alternatives: Sequence[tuple[int, ...]]) -> None:
        """``required``: per side, the patterns that all hold on a line the side can match. ``alternatives``: per
        side, more patterns each implied by one of its required ones (a keyed condition's value alone): never
        checked, only ever looked for first. ``keyed``: per pattern, whether it starts with a field's key (see
        :data:`KEYED_COST`)."""
        self.required = list(required)
        self.alternatives = [tuple(a) for a in alternatives]
        self._keyed = list(keyed)
        self.patterns = list(patterns)
        self._escape = escape
        self._matcher = matcher
        self.prefiltered = [s for s, req in enumerate(self.required) if req]
        self.always = [s for s, req in enumerate(self.required) if not req]
        self._counts = [0] * len(self.patterns)
        self._sampled = 0
        self.sample_lines = SAMPLE_LINES
        self._lock = threading.Lock()
        self._compiled = [re.compile(p) for p in self.patterns]
        first = {s: req[0] for s, req in enumerate(self.required) if req}
        lean_possible = any(len(req) + len(alt) > 1 for req, alt in zip(self.required, self.alternatives, strict=True))
        self._plan: _Plan | None = None
        if self.patterns:
            self._plan = self._build(first, sampling=lean_possible)

    def _build(self, primary: dict[int, int], *, sampling: bool) -> _Plan:
        """A plan: the engine looks for every pattern (``sampling``) or only for each side's primary."""
        wanted = list(range(len(self.patterns))) if sampling else sorted(set(primary.values()))
        global_of = [*wanted, *([-1] if self._escape else [])]
        texts = tuple(self.patterns[g] for g in wanted) + ((self._escape,) if self._escape else ())
        local = {g: i for i, g in enumerate(wanted)}
        sides_of: dict[int, list[int]] = defaultdict(list)
        for side, g in primary.items():
            sides_of[local[g]].append(side)
        rest = {} if sampling else {  # an alternative primary is implied by the required ones, which are checked
            side: tuple(self._compiled[g] for g in self.required[side] if g != primary[side]) for side in primary}
        return _Plan(self._matcher(texts), tuple(global_of), {k: tuple(v) for k, v in sides_of.items()},
                     dict(primary), rest, sampling)

    def learned(self) -> dict[int, int] | None:
        """Each side's primary (side -> index in ``patterns``) once sampling is over; None while it goes on."""
        plan = self._plan
        return None if plan is None or plan.sampling else plan.primary

    def adopt(self, primary: dict[int, int]) -> None:
        """Switch to the lean plan another instance of the same rules learned (a rule process takes the agent's),
        skipping this one's own sampling. Ignored once this one has learned, or when ``primary`` does not fit."""
        with self._lock:
            plan = self._plan
            if plan is None or not plan.sampling:
                return
            if set(primary) != set(self.prefiltered) or any(
                    g not in (*self.required[s], *self.alternatives[s]) for s, g in primary.items()):
                return
            self._plan = self._build(primary, sampling=False)

    def describe(self) -> dict[str, object]:
        plan = self._plan
        return {"prefiltered_rules": len(self.prefiltered), "rules_parsing_every_line": len(self.always),
                "prefilter_engine": plan.matcher.engine if plan else "none",
                "prefilter_plan": "sampling" if plan and plan.sampling else "lean"}

    # ------------------------------------------------------------------------------------- answering
    def candidates(self, lines: Sequence[str], data: bytes | None) -> list[Candidate]:
        out: list[Candidate] = []
        plan = self._plan
        if plan is not None:
            out = self._nominate(plan, lines, data)
        if not self.always:
            return out
        found_at = {i: sides for i, _line, sides in out}
        return [(i, line, sorted({*found_at.get(i, ()), *self.always})) for i, line in enumerate(lines)]

    def _nominate(self, plan: _Plan, lines: Sequence[str], data: bytes | None) -> list[Candidate]:
        grouped: list[tuple[int, str, set[int]]] = []
        chunk = lines if isinstance(lines, LineChunk) and not self.always else None
        nominees = plan.matcher.nominees(chunk) if chunk is not None else None
        if chunk is not None and nominees is not None:
            # The engine's own nominations suffice (every prefilter is a superset anyway): no re.search to
            # confirm a primary, and a line is decoded only when nominated.
            raw_data = chunk.data
            grouped = [(-1, raw_data[start:end].decode("utf-8"), set(found)) for start, end, found in nominees]
        elif chunk is not None:
            for j, m in plan.matcher.scan_chunk(chunk):
                if not grouped or grouped[-1][1] is not m.string:
                    grouped.append((-1, m.string, set()))
                grouped[-1][2].add(j)
        else:
            per_line: dict[int, set[int]] = defaultdict(set)
            for i, j, _m in plan.matcher.scan(lines, data):
                per_line[i].add(j)
            grouped = [(i, lines[i], found) for i, found in sorted(per_line.items())]
        counts: dict[int, int] = defaultdict(int)
        global_of = plan.global_of
        wanted_of: list[list[int] | None] = []
        escaped: list[tuple[int, str, list[int]]] = []  # (position in grouped, the line rewritten, sides so far)
        for _index, line, found in grouped:
            if any(global_of[j] < 0 for j in found):
                # A \uXXXX escape can hide any literal. Rewritten without escapes, a JSON object line is the same
                # record and is nominated like any other. A line that is no object (its raw text is its message)
                # is nominated for what its raw text holds as well as what the written-out text holds. A line
                # the rewrite cannot rid of every escape is a candidate for every side.
                text = rewritten_object(line)
                so_far: list[int] = []
                if text is None:
                    text = write_out_escapes(line)
                    so_far = self._wanted(plan, {j for j in found if global_of[j] >= 0}, line, defaultdict(int))
                if text is None:
                    wanted_of.append(list(self.prefiltered))
                else:
                    wanted_of.append(None)
                    escaped.append((len(wanted_of) - 1, text, so_far))
                continue
            wanted_of.append(self._wanted(plan, found, line, counts))
        if escaped:
            found_in: dict[int, set[int]] = defaultdict(set)
            for k, j, _m in plan.matcher.scan([text for _, text, _ in escaped]):
                found_in[k].add(j)
            for k, (position, text, so_far) in enumerate(escaped):
                found = found_in.get(k, set())
                wanted_of[position] = (list(self.prefiltered) if any(global_of[j] < 0 for j in found)
                                       else sorted({*so_far, *self._wanted(plan, found, text, counts)}))
        out = [(index, line, wanted) for (index, line, _), wanted in zip(grouped, wanted_of, strict=True) if wanted]
        if plan.sampling:
            self._learn(plan, counts, len(lines))
        return out

    def _wanted(self, plan: _Plan, found: set[int], text: str, counts: dict[int, int]) -> list[int]:
        """The sides whose required patterns all match ``text`` (the engine found ``found`` in it)."""
        global_of, sides_of, required = plan.global_of, plan.sides_of, self.required
        wanted: list[int] = []
        if plan.sampling:
            present = {global_of[j] for j in found}
            for g in present:
                counts[g] += 1
            for j in found:
                wanted += [s for s in sides_of.get(j, ()) if all(r in present for r in required[s])]
        else:
            for j in found:
                wanted += [s for s in sides_of.get(j, ()) if all(rx.search(text) for rx in plan.rest[s])]
        return sorted(wanted)

    def _learn(self, plan: _Plan, counts: dict[int, int], lines: int) -> None:
        """Count what the sampling plan saw; once enough lines were seen, switch to the lean plan."""
        with self._lock:
            for g, n in counts.items():
                self._counts[g] += n
            self._sampled += lines
            if self._plan is not plan or self._sampled < self.sample_lines:
                return
            extra = KEYED_COST * self._sampled
            cheapest: dict[int, int] = {}
            for s, req in enumerate(self.required):
                if req:
                    options = (*req, *self.alternatives[s])
                    cheapest[s] = min(options, key=lambda g: (self._counts[g] + extra * self._keyed[g],
                                                              options.index(g)))
            self._plan = self._build(cheapest, sampling=False)
