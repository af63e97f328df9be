"""What the timed rule kinds (``absent``, ``expect``) need beside their states: the running rules a due
timer is judged by, the agent's look at a source (once per source and tick, however many of its timers
fall due), and the clock a matching line counts on (``silence.seen_at``)."""

from __future__ import annotations

import contextlib
from collections.abc import Container, Iterator, Sequence

from agent.alerts.log_rule import RuleLike
from agent.alerts.silence import STAMP_HORIZON, SourceLook, SourceView, never_behind, seen_at


class TimedRules:
    __slots__ = ("_line_clock", "_looked", "_rules", "look")

    def __init__(self, *, line_clock: bool) -> None:
        """``line_clock``: judge a line by the time it says it was written (off in a replay, whose clock
        already is the lines' time)."""
        self._line_clock = line_clock
        self._rules: dict[tuple[str, str], RuleLike] = {}  # (source, rule) -> rule
        self._looked: dict[str, SourceView] | None = None  # the looks of the tick in progress
        self.look: SourceLook = never_behind

    def register(self, source: str, rules: Sequence[RuleLike]) -> None:
        """The rules a source runs now (start, reload, restart)."""
        for key in [k for k in self._rules if k[0] == source]:
            del self._rules[key]
        for rule in rules:
            self._rules[(source, rule.name)] = rule

    def keep_only(self, alive: Container[tuple[str, str]]) -> None:
        self._rules = {k: v for k, v in self._rules.items() if k in alive}

    def rule(self, source: str, name: str) -> RuleLike | None:
        """None for a state restored before its source started, or whose source is gone: not judged yet."""
        return self._rules.get((source, name))

    def seen_at(self, line: str, now: float, previous: float, wait: float) -> float:
        if not self._line_clock:
            return now
        return seen_at(line, now, previous, now - STAMP_HORIZON * wait)

    @contextlib.contextmanager
    def tick(self) -> Iterator[None]:
        self._looked = {}
        try:
            yield
        finally:
            self._looked = None

    def view(self, source: str) -> SourceView:
        looked = self._looked
        if looked is None:
            return self.look(source)
        view = looked.get(source)
        if view is None:
            view = looked[source] = self.look(source)
        return view
