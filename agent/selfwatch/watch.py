"""The agent looking at itself: from a snapshot of its own state to self-alert observations.

Pure and synchronous (the app builds the snapshot and hands the observations to the alert engine), with
the little memory a condition needs: since when it holds (``unreadable_after`` ...), the counters seen
last time (incidents: data lost, events dropped, lines abandoned), and per stream how far the reader had
to get (lag). One instance per agent; every call runs on the event loop.

Lag is time, not bytes: a stream is behind since the moment bytes were on disk that are still unread now.
Each look remembers (time, size) per stream; once the reader passes that size the mark moves on. A reader
that keeps up never stays behind a mark, however busy the file.

A look costs what is wrong, not what is watched: a file source's status lists the streams that are behind
(``behind``) and those whose reads fail (``stream_errors``) apart from its (capped) ``files`` list, so 100,000
idle files cost nothing here; a status without those keys (another source kind, a test) is read as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.alerts.self_alert import SelfObservation
from agent.selfwatch.config import SelfAlertsConfig
from agent.units import format_duration


@dataclass(slots=True)
class SourceSnapshot:
    name: str
    journal: bool
    status: Mapping[str, Any]
    losses: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # path -> (incidents, bytes)
    abandoned: Mapping[str, int] = field(default_factory=dict)  # rule -> lines given up (regex budget)


@dataclass(slots=True)
class AgentSnapshot:
    host: str
    sources: list[SourceSnapshot]
    dead_letters: int
    dropped: Mapping[str, int]  # reason -> events dropped by the outbox
    config_error: str
    config_path: str


@dataclass(slots=True)
class _Mark:
    since: float
    size: int


class SelfWatch:
    """What is wrong with the agent now, as observations; ``look`` once per ``config.interval``."""

    def __init__(self, config: SelfAlertsConfig) -> None:
        self.config = config
        self._since: dict[tuple[str, str], float] = {}  # condition, object -> first seen holding
        self._counts: dict[tuple[str, str], int] = {}  # condition, object -> counter at the last look
        self._marks: dict[tuple[str, str], _Mark] = {}  # source, stream key/path -> lag mark

    def look(self, snap: AgentSnapshot, now: float) -> tuple[list[SelfObservation], set[tuple[str, str]]]:
        """Every condition that counts now (held long enough, or happened), and every (condition, object)
        that holds at all: an open alert whose condition is not among the latter has cleared (one that
        holds, but not yet for long enough again, e.g. after a restart, stays open)."""
        cfg = self.config
        out: list[SelfObservation] = []
        holding: set[tuple[str, str]] = set()

        def held(condition: str, obj: str, hold: float) -> float | None:
            """How long the condition has held, once it has held for ``hold``; None before."""
            key = (condition, obj)
            holding.add(key)
            since = self._since.setdefault(key, now)
            return now - since if now - since >= hold else None

        def happened(condition: str, obj: str, count: int) -> int:
            """How many new occurrences since the last look (all of them at the first look)."""
            key = (condition, obj)
            before = self._counts.get(key, 0)
            self._counts[key] = count
            return max(0, count - before)

        host = snap.host
        for src in snap.sources:
            status = src.status
            if src.journal:
                if status.get("available") is False:
                    took = held("journal_unavailable", src.name, cfg.unavailable_after)
                    if took is not None:
                        out.append(SelfObservation(
                            "journal_unavailable", src.name, True,
                            f"dutytail cannot read the journal for {src.name} on {host}",
                            f"journald has been unavailable for {format_duration(took)}: "
                            f"{status.get('error') or 'unknown error'}. Journal rules of source {src.name!r} "
                            "see nothing until it is back. Check that systemd-journald runs and that the agent's "
                            "user may read the journal (group systemd-journal or adm).",
                            cleared="Resolved: the journal is readable again"))
                continue
            for path, error in _unreadable(status):
                took = held("file_unreadable", path, cfg.unreadable_after)
                if took is not None:
                    out.append(SelfObservation(
                        "file_unreadable", path, True, f"dutytail cannot read {path} on {host}",
                        f"{path} (source {src.name!r}) has not been readable for {format_duration(took)}: "
                        f"{error}. Lines written there are not seen by any rule. Give the agent's user read "
                        "access (e.g. group adm), or change the source's paths.",
                        cleared=f"Resolved: {path} is readable again (or no longer watched)"))
            waiting = int(status.get("waiting_for_descriptor") or 0)
            if waiting:
                took = held("files_not_tailed", src.name, cfg.unavailable_after)
                if took is not None:
                    out.append(SelfObservation(
                        "files_not_tailed", src.name, True,
                        f"dutytail is not tailing {waiting} file(s) of {src.name} on {host}",
                        f"{waiting} file(s) of source {src.name!r} wait for a descriptor: max_open_files "
                        f"({status.get('max_open_files')}) is reached (for {format_duration(took)}). Lines "
                        "in them are read only when a descriptor frees up. Raise max_open_files (and the "
                        "unit's LimitNOFILE), or narrow the paths.",
                        cleared="Resolved: every matched file is tailed again"))
            behind = self._lag(src, now)
            if behind is not None:
                holding.add(("source_behind", src.name))
            if behind is not None and now - behind[0] >= cfg.lag:
                out.append(SelfObservation(
                    "source_behind", src.name, True,
                    f"dutytail is {format_duration(now - behind[0])} behind reading {src.name} on {host}",
                    f"Source {src.name!r} has {behind[1]} bytes on disk that have been unread for "
                    f"{format_duration(now - behind[0])} (more than lag {format_duration(cfg.lag)}); the "
                    "newest lines are not alerted on yet. Is the host short of CPU, or the outbox full? See "
                    "`dutytail status`.",
                    cleared="Resolved: the source has caught up"))
            for path, (incidents, nbytes) in src.losses.items():
                if happened("data_lost", path, incidents):
                    amount = f"{nbytes} known unread bytes" if nbytes else "an unknown amount of unread data"
                    out.append(SelfObservation(
                        "data_lost", path, True, f"dutytail lost log data of {path} on {host}",
                        f"{amount} of {path} (source {src.name!r}) could not be read: the file was rotated away "
                        "or truncated before the agent read it (e.g. deleted, or rotated where rotated_paths does "
                        "not look). Rules did not see those lines. See docs/tailing.md.",
                        incident=cfg.quiet))
            for rule, lines in src.abandoned.items():
                if happened("lines_abandoned", f"{src.name}/{rule}", lines):
                    out.append(SelfObservation(
                        "lines_abandoned", f"{src.name}/{rule}", True,
                        f"dutytail gave up matching lines of rule {rule} on {host}",
                        f"Rule {rule!r} of source {src.name!r}: {lines} line(s) so far took its regex over its "
                        "time budget (catastrophic backtracking) and were not matched. Rewrite the pattern "
                        "without nested repetition.", incident=cfg.quiet))
        if snap.dead_letters:
            holding.add(("dead_letters", "outbox"))
            out.append(SelfObservation(
                "dead_letters", "outbox", True,
                f"{snap.dead_letters} event(s) rejected by Flashduty wait in dead letters on {host}",
                f"{snap.dead_letters} event(s) were refused by the endpoint (4xx) and are kept aside. "
                "`dutytail dead-letters list` shows why; `retry` re-queues them once fixed; `purge` drops them.",
                cleared="Resolved: no dead letters are waiting"))
        for reason, count in snap.dropped.items():
            new = happened("events_dropped", reason, count)
            if new:
                out.append(SelfObservation(
                    "events_dropped", reason, True, f"dutytail dropped queued events on {host} ({reason})",
                    f"{new} queued event(s) were dropped by the outbox ({reason}; {count} since start): they "
                    "will never be delivered. Raise outbox.max_bytes / max_age, or restore delivery sooner.",
                    incident=cfg.quiet))
        if snap.config_error:
            took = held("config_invalid", snap.config_path, cfg.config_invalid_after)
            if took is not None:
                first = snap.config_error.splitlines()[0] if snap.config_error else ""
                out.append(SelfObservation(
                    "config_invalid", snap.config_path, True, f"dutytail config on {host} is invalid",
                    f"{snap.config_path} has been refused for {format_duration(took)}; the agent keeps running "
                    f"the previous config. First problem: {first}. `dutytail check-config` lists them all.",
                    cleared="Resolved: the config file is valid again"))
        self._since = {k: v for k, v in self._since.items() if k in holding}
        return out, holding

    def _lag(self, src: SourceSnapshot, now: float) -> tuple[float, int] | None:
        """(since when, unread bytes) of the stream of ``src`` that is behind the longest; None if none."""
        worst: tuple[float, int] | None = None
        live: set[tuple[str, str]] = set()
        status = src.status
        streams = status["behind"] if "behind" in status else status.get("files", [])
        for f in streams:
            if f.get("state") == "error":
                continue
            key = (src.name, str(f.get("key") or f.get("path")))
            live.add(key)
            size, offset = int(f.get("size") or 0), int(f.get("offset") or 0)
            mark = self._marks.get(key)
            if size <= offset:
                self._marks.pop(key, None)
                continue
            if mark is None or offset >= mark.size:
                passed = mark is not None
                mark = self._marks[key] = _Mark(now, size)  # behind only what is on disk from now on
                if passed:  # it read all that was on disk at the last look: keeping up, however busy the file
                    continue
            if worst is None or mark.since < worst[0]:
                worst = (mark.since, size - offset)
        for key in [k for k in self._marks if k[0] == src.name and k not in live]:
            del self._marks[key]
        return worst


def _unreadable(status: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """Watched files that exist but cannot be read (permission denied ...): the source's errors, and open
    streams whose reads fail. A missing file is not one (that is what absence rules are for)."""
    seen: set[str] = set()
    for entry in status.get("errors", []):
        path, error = str(entry.get("path")), str(entry.get("error"))
        if "No such file" in error:
            continue
        seen.add(path)
        yield path, error
    if "stream_errors" in status:
        for entry in status["stream_errors"]:
            if entry["path"] not in seen:
                seen.add(entry["path"])
                yield str(entry["path"]), str(entry["error"])
        return
    for f in status.get("files", []):
        if f.get("state") != "error" and f.get("last_error") and f["path"] not in seen:
            yield str(f["path"]), str(f["last_error"])
