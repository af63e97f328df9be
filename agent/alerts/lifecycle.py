"""What a lifecycle tells the engine, and the rules time applies to every open alert.

A lifecycle (``log_rule``, ``check``; absence and sequence rules are to join them) decides what one input
does to one alert state. It may update the state's own fields, but it never sends, persists or forgets
anything: it answers with a ``Step`` and the engine carries that out. Storm control, event building, the
persisted changes and the alert capacity so stay in one place whatever kind of alert moved, and a
lifecycle is testable with a state and a clock alone.

Steps:

* ``"nothing"``: nothing to send or persist (a pending threshold window grew).
* ``"persist"``: the state changed; persist it with the next commit, send nothing (an open alert counted
  another match).
* ``"fire"``: persist it and send its current severity; if storm control holds the event back, it is owed.
* ``"retry"``: send the update storm control held back earlier (owed again if it is held back again).
* ``"remind"``: send a reminder (a reminder held back is skipped, never owed).
* ``"forget"``: drop a state the server never heard of (a cancelled pending window, a check back to Ok
  before it fired).
* ``"overdue"``: an ``absent``/``expect`` timer ran out; the engine asks the rule's lifecycle, which knows
  whether the source is behind, what to do (fire, or wait).
* ``Resolve(why)``: close the alert, with an ``Ok`` saying ``why`` if the server has it open.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple

from agent.alerts.state import AlertState

PENDING_MAX_AGE = 3600.0
"""Seconds a pending window (threshold not reached) is kept without a new match."""


class Resolve(NamedTuple):
    """Close the alert; ``why`` opens the Ok's description. (A tuple: cheap to make, and comparing it with
    the string steps stays in C.)"""

    why: str


Step = Literal["nothing", "persist", "fire", "retry", "remind", "forget", "overdue"] | Resolve


def due(states: Iterable[AlertState], now: float) -> Iterator[tuple[AlertState, Step]]:
    """What time alone does, for each of ``states`` that has something due: a pending window ages out, a
    quiet period ends, an update held back by storm control is retried, a reminder falls due (never while
    flapping). One loop over all states, checked inline: the ticker runs it every second over every open
    alert. The storm-control alert has its own timing (``StormControl.summary``)."""
    for state in states:
        if state.kind == "storm":
            continue
        if state.deadline and not state.firing:  # absent / expect: a timer, not a pending window
            if now >= state.deadline:
                yield state, "overdue"
            continue
        if not state.firing:
            state.window = [t for t in state.window if t > now - PENDING_MAX_AGE]
            if not state.window:
                yield state, "forget"
            continue
        if state.resolve_after is not None and now - state.last_seen >= state.resolve_after:
            yield state, _quiet(state.resolve_after, state.kind == "self")
        elif state.owed:
            yield state, "retry"
        elif state.repeat_interval and now - state.last_notified >= state.repeat_interval and not state.flapping:
            yield state, "remind"


@functools.lru_cache(maxsize=64)
def _quiet(resolve_after: float, incident: bool) -> Resolve:
    if incident:  # a self alert about something that happened (data lost, events dropped)
        return Resolve(f"Resolved: it has not happened again for {resolve_after:g}s")
    return Resolve(f"Resolved: no matching line for {resolve_after:g}s")
