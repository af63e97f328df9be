"""What the timed rule kinds (``absent``, ``expect``) need to know before they call a silence real.

Only the agent on the host can tell an application that went quiet from a file that is missing, unreadable
or not yet read. Before an absence or a late finish fires, the engine asks the agent about the rule's source
(``SourceLook``): while the source is *behind* (its first scan not done, bytes on disk not yet read, batches
not yet matched) a line that would answer may still come, so the alert waits; what the agent knows (*why*)
goes into the description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.linetime import line_time


@dataclass(frozen=True, slots=True)
class SourceView:
    behind: bool
    """A line that answers the rule may still be on its way (unread on disk, queued, first scan running)."""
    why: str = ""
    """What the agent knows about the source's files, for the description ("" when nothing)."""


SourceLook = Callable[[str], SourceView]
NOT_BEHIND = SourceView(False)


def never_behind(source: str) -> SourceView:
    """The look of a replay (``dutytail test-rule``): every line is already read."""
    return NOT_BEHIND


def seen_at(line: str, now: float, previous: float, oldest: float) -> float:
    """When a matching line counts as seen: the time it says it was written (a backlog read after a restart
    counts for when it was written), never later than now; the time it was read when it carries no
    timestamp, or one not after the last line seen, or one before ``oldest`` (a date quoted in the text, a
    clock gone back: better a late alert than a false one). Zone-less timestamps are the host's local time."""
    stamp = line_time(line, naive_utc=False)
    if stamp is None or stamp <= previous or stamp < oldest:
        return now
    return min(stamp, now)


HOLD_WHILE_BEHIND = 1.0
"""A due timer held back while its source is behind waits at most this many times its own wait (counted
from when it was first held), then fires saying the agent is behind (a reader stuck for that long is itself
worth an alert)."""

STAMP_HORIZON = 10.0
"""A line's timestamp is trusted back to this many times the rule's wait (a backlog after a long downtime
older than that counts as read now: a later alert, never a false one)."""


def held(state_held_since: float, view: SourceView, now: float, wait: float) -> tuple[bool, float]:
    """Whether a due timer waits for a source that is behind: (wait?, the new ``held_since``)."""
    if not view.behind:
        return False, 0.0
    since = state_held_since or now
    return now < since + wait * HOLD_WHILE_BEHIND, since
