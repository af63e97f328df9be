"""``SelfWatch.look`` (agent/selfwatch/watch.py) on hand-built snapshots and a fake clock: hold times, the
holding set across a restart, lag marks, incidents counted once per occurrence, dead letters, a refused
config, journald; and the app's look (agent/app/self_alerts.py) over a real alert engine with a fake outbox,
for what the holding set is for: an open alert survives a restart and clears with an Ok when the cause goes.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from agent.alerts import AlertEngine
from agent.alerts.config import AlertsConfig
from agent.alerts.self_alert import SelfObservation
from agent.app.self_alerts import SelfAlerts
from agent.config import Config
from agent.selfwatch import AgentSnapshot, SelfAlertsConfig, SelfWatch, SourceSnapshot

T0 = 1_700_000_000.0
PATH = "/var/log/app/secure.log"
CONFIG_PATH = "/etc/dutytail/config.yaml"


def config(**kw: Any) -> SelfAlertsConfig:
    return SelfAlertsConfig(**kw)


def file_source(name: str = "app", *, errors: list[dict[str, str]] | None = None,
                files: list[dict[str, Any]] | None = None, waiting: int = 0,
                losses: dict[str, tuple[int, int]] | None = None,
                abandoned: dict[str, int] | None = None) -> SourceSnapshot:
    status = {"files": files or [], "errors": errors or [], "waiting_for_descriptor": waiting,
              "max_open_files": 2}
    return SourceSnapshot(name, False, status, losses or {}, abandoned or {})


def journal_source(name: str = "journal", *, available: bool = True, error: str | None = None) -> SourceSnapshot:
    return SourceSnapshot(name, True, {"available": available, "error": error})


def snapshot(*sources: SourceSnapshot, dead_letters: int = 0, dropped: dict[str, int] | None = None,
             config_error: str = "") -> AgentSnapshot:
    return AgentSnapshot(host="web-1", sources=list(sources), dead_letters=dead_letters, dropped=dropped or {},
                         config_error=config_error, config_path=CONFIG_PATH)


def stream(path: str, offset: int, size: int, **kw: Any) -> dict[str, Any]:
    return {"path": path, "key": f"key-{path}", "offset": offset, "size": size, "state": "open",
            "last_error": None, **kw}


def conditions(found: list[SelfObservation]) -> list[tuple[str, str]]:
    return [(o.condition, o.object) for o in found]


DENIED = [{"path": PATH, "error": f"open: [Errno 13] Permission denied: '{PATH}'"}]


# --- hold times ------------------------------------------------------------------------------------------


def test_unreadable_file_counts_only_after_unreadable_after_and_is_holding_from_the_first_look() -> None:
    watch = SelfWatch(config(unreadable_after=30.0))
    snap = snapshot(file_source(errors=DENIED))
    for t in (0.0, 10.0, 29.9):
        found, holding = watch.look(snap, T0 + t)
        assert found == [], f"counted after {t}s"
        assert ("file_unreadable", PATH) in holding
    found, holding = watch.look(snap, T0 + 30.0)
    assert conditions(found) == [("file_unreadable", PATH)]
    obs = found[0]
    assert obs.active and obs.incident is None
    assert PATH in obs.title and "web-1" in obs.title
    assert "Permission denied" in obs.description and "30s" in obs.description
    assert obs.cleared  # the Ok says why
    found, _ = watch.look(snap, T0 + 95.0)
    assert conditions(found) == [("file_unreadable", PATH)]
    assert "1m35s" in found[0].description or "95" in found[0].description


def test_a_condition_that_clears_starts_its_hold_again() -> None:
    watch = SelfWatch(config(unreadable_after=30.0))
    bad, good = snapshot(file_source(errors=DENIED)), snapshot(file_source())
    watch.look(bad, T0)
    found, holding = watch.look(good, T0 + 20.0)
    assert found == [] and holding == set()
    watch.look(bad, T0 + 25.0)
    assert watch.look(bad, T0 + 45.0)[0] == []  # 20 s since it came back, not 45 s since the first time
    assert conditions(watch.look(bad, T0 + 55.0)[0]) == [("file_unreadable", PATH)]


def test_a_missing_file_is_not_unreadable_but_a_stream_that_fails_to_read_is() -> None:
    watch = SelfWatch(config(unreadable_after=0.0))
    missing = file_source(errors=[{"path": "/var/log/gone.log", "error": "[Errno 2] No such file or directory"}])
    assert watch.look(snapshot(missing), T0) == ([], set())
    failing = file_source(files=[stream(PATH, 10, 10, last_error="OSError: [Errno 5] Input/output error")])
    found, holding = watch.look(snapshot(failing), T0 + 1)
    assert conditions(found) == [("file_unreadable", PATH)]
    assert "Input/output error" in found[0].description
    assert holding == {("file_unreadable", PATH)}


def test_a_path_in_both_errors_and_files_is_one_observation() -> None:
    # the tail source lists a problem path under "errors" and as a file with state "error"
    src = file_source(errors=DENIED, files=[{"path": PATH, "key": None, "offset": 0, "size": 0, "state": "error",
                                              "last_error": DENIED[0]["error"]}])
    found, _ = SelfWatch(config(unreadable_after=0.0)).look(snapshot(src), T0)
    assert conditions(found) == [("file_unreadable", PATH)]


def test_files_not_tailed_holds_for_unavailable_after() -> None:
    watch = SelfWatch(config(unavailable_after=30.0))
    snap = snapshot(file_source(waiting=3))
    assert watch.look(snap, T0)[0] == []
    assert watch.look(snap, T0 + 29.0)[0] == []
    found, holding = watch.look(snap, T0 + 30.0)
    assert conditions(found) == [("files_not_tailed", "app")] and holding == {("files_not_tailed", "app")}
    assert "3 file(s)" in found[0].title and "max_open_files (2)" in found[0].description
    assert watch.look(snapshot(file_source()), T0 + 31.0) == ([], set())


def test_journal_unavailable_holds_for_unavailable_after_and_file_checks_skip_journal_sources() -> None:
    watch = SelfWatch(config(unavailable_after=30.0))
    down = snapshot(journal_source(available=False, error="No journal files were found."))
    found, holding = watch.look(down, T0)
    assert found == [] and holding == {("journal_unavailable", "journal")}
    found, _ = watch.look(down, T0 + 30.0)
    assert conditions(found) == [("journal_unavailable", "journal")]
    assert "No journal files were found." in found[0].description
    assert watch.look(snapshot(journal_source()), T0 + 31.0) == ([], set())


# --- holding across a restart ----------------------------------------------------------------------------


def test_a_fresh_watch_after_a_restart_holds_the_condition_before_it_counts_again() -> None:
    snap = snapshot(file_source(errors=DENIED), journal_source(available=False), config_error="bad: x")
    cfg = config(unreadable_after=30.0, unavailable_after=30.0, config_invalid_after=60.0)
    before = SelfWatch(cfg)
    before.look(snap, T0)
    counted = {c for c, _ in conditions(before.look(snap, T0 + 60.0)[0])}
    assert counted == {"file_unreadable", "journal_unavailable", "config_invalid"}
    after = SelfWatch(cfg)  # the agent restarted: its memory is gone, the open alerts are in the store
    found, holding = after.look(snap, T0 + 61.0)
    assert found == []
    assert holding == {("file_unreadable", PATH), ("journal_unavailable", "journal"),
                       ("config_invalid", CONFIG_PATH)}


# --- lag --------------------------------------------------------------------------------------------------


def test_a_reader_that_keeps_passing_its_mark_is_never_behind_however_busy_the_file() -> None:
    watch = SelfWatch(config(lag=5.0))
    size = 0
    for i in range(60):  # a minute of looks every second; the file grows 1 MB between two looks
        offset, size = size, size + 1_000_000  # the reader got to the size of the last look, never further
        found, _ = watch.look(snapshot(file_source(files=[stream("/var/log/busy.log", offset, size)])), T0 + i)
        assert "source_behind" not in {c for c, _ in conditions(found)}, f"behind at look {i}"


def test_a_stuck_reader_is_behind_after_lag_and_not_before() -> None:
    watch = SelfWatch(config(lag=5.0))
    assert watch.look(snapshot(file_source(files=[stream("/var/log/a.log", 100, 100)])), T0) == ([], set())
    for t in (1.0, 3.0, 5.9):  # bytes appear at t=1; the reader moves a little but never past them
        found, holding = watch.look(snapshot(file_source(files=[stream("/var/log/a.log", 100 + int(t), 500)])),
                                    T0 + t)
        assert found == [] and ("source_behind", "app") in holding
    found, _ = watch.look(snapshot(file_source(files=[stream("/var/log/a.log", 110, 500)])), T0 + 6.0)
    assert conditions(found) == [("source_behind", "app")]
    assert "390 bytes" in found[0].description and "5s" in found[0].title


def test_the_stream_behind_longest_decides_and_a_caught_up_source_clears() -> None:
    watch = SelfWatch(config(lag=5.0))

    def look(t: float, a: tuple[int, int], b: tuple[int, int]) -> tuple[list[SelfObservation], set[Any]]:
        files = [stream("/var/log/a.log", *a), stream("/var/log/b.log", *b)]
        return watch.look(snapshot(file_source(files=files)), T0 + t)

    look(0.0, (0, 100), (0, 0))  # a is behind from now on
    look(3.0, (50, 100), (0, 100))  # b from now on
    found, _ = look(5.0, (60, 100), (10, 100))
    assert conditions(found) == [("source_behind", "app")]
    assert "40 bytes" in found[0].description  # a's unread bytes, behind since t=0 (b only since 3)
    found, holding = look(6.0, (100, 100), (100, 100))
    assert found == [] and holding == set()


def test_a_stream_that_is_gone_or_in_error_leaves_no_mark_behind() -> None:
    watch = SelfWatch(config(lag=5.0))
    watch.look(snapshot(file_source(files=[stream("/var/log/a.log", 0, 100)])), T0)
    # a.log rotated away and finished; a new a.log (another key) is read as it grows
    found, holding = watch.look(snapshot(file_source(files=[stream("/var/log/a.log", 0, 0, key="k2")])), T0 + 10)
    assert found == [] and holding == set()
    err = {"path": "/var/log/x.log", "key": None, "offset": 0, "size": 10, "state": "error", "last_error": None}
    assert watch.look(snapshot(file_source(files=[err])), T0 + 20) == ([], set())


def test_an_open_source_behind_clears_once_the_reader_keeps_up_with_a_busy_file() -> None:
    """Once behind, a reader that catches up and then keeps passing its marks gets the Ok, even though the
    file is so busy that some bytes are always unread at the moment of a look."""
    watch = SelfWatch(config(lag=5.0))
    for t in range(7):  # stuck for 6 s: behind
        found, _ = watch.look(snapshot(file_source(files=[stream("/var/log/a.log", 0, 1000)])), T0 + t)
    assert conditions(found) == [("source_behind", "app")]
    size = 1000
    cleared = False
    for t in range(7, 20):  # now the reader reaches the last look's size every time, the file keeps growing
        offset, size = size, size + 500
        found, holding = watch.look(snapshot(file_source(files=[stream("/var/log/a.log", offset, size)])), T0 + t)
        assert found == []
        cleared = cleared or ("source_behind", "app") not in holding
    assert cleared, "the alert of a reader that keeps up never clears while the file is busy"


# --- incidents --------------------------------------------------------------------------------------------


def test_data_lost_is_counted_once_per_new_occurrence() -> None:
    watch = SelfWatch(config(quiet=600.0))
    log = "/var/log/app.log"

    def look(t: float, incidents: int, nbytes: int) -> list[SelfObservation]:
        return watch.look(snapshot(file_source(losses={log: (incidents, nbytes)})), T0 + t)[0]

    first = look(0, 1, 0)
    assert conditions(first) == [("data_lost", log)]
    assert first[0].incident == 600.0 and "unknown amount" in first[0].description and log in first[0].title
    assert look(5, 1, 0) == []
    assert look(10, 1, 0) == []
    again = look(15, 2, 4096)
    assert conditions(again) == [("data_lost", log)] and "4096 known unread bytes" in again[0].description
    assert look(20, 2, 4096) == []
    # an incident is no state: nothing holds, its alert resolves by its quiet period
    assert watch.look(snapshot(file_source(losses={log: (2, 4096)})), T0 + 25)[1] == set()


def test_incidents_seen_at_the_first_look_all_count_and_each_object_counts_alone() -> None:
    watch = SelfWatch(config())
    src = file_source(losses={"/a.log": (3, 10), "/b.log": (1, 0)}, abandoned={"slow": 2})
    found, holding = watch.look(snapshot(src, dropped={"outbox_full": 5, "expired": 1}), T0)
    assert sorted(conditions(found)) == [("data_lost", "/a.log"), ("data_lost", "/b.log"),
                                         ("events_dropped", "expired"), ("events_dropped", "outbox_full"),
                                         ("lines_abandoned", "app/slow")]
    assert holding == set()
    src = file_source(losses={"/a.log": (3, 10), "/b.log": (2, 5)}, abandoned={"slow": 2})
    found, _ = watch.look(snapshot(src, dropped={"outbox_full": 5, "expired": 1}), T0 + 5)
    assert conditions(found) == [("data_lost", "/b.log")]


def test_events_dropped_says_how_many_are_new() -> None:
    watch = SelfWatch(config(quiet=120.0))
    watch.look(snapshot(dropped={"outbox_full": 4}), T0)
    found, _ = watch.look(snapshot(dropped={"outbox_full": 10}), T0 + 5)
    assert conditions(found) == [("events_dropped", "outbox_full")]
    assert found[0].description.startswith("6 queued event(s)") and "10 since start" in found[0].description
    assert found[0].incident == 120.0
    assert watch.look(snapshot(dropped={"outbox_full": 10}), T0 + 10)[0] == []


def test_lines_abandoned_per_source_and_rule() -> None:
    watch = SelfWatch(config())
    found, _ = watch.look(snapshot(file_source("app", abandoned={"r": 1}), file_source("api", abandoned={"r": 1})),
                          T0)
    assert sorted(conditions(found)) == [("lines_abandoned", "api/r"), ("lines_abandoned", "app/r")]
    assert watch.look(snapshot(file_source("app", abandoned={"r": 1})), T0 + 1)[0] == []


# --- dead letters and the config -------------------------------------------------------------------------


def test_dead_letters_count_at_once_and_clear_when_none_wait() -> None:
    watch = SelfWatch(config())
    found, holding = watch.look(snapshot(dead_letters=3), T0)
    assert conditions(found) == [("dead_letters", "outbox")]
    assert found[0].title.startswith("3 event(s)") and "dead-letters" in found[0].description
    assert holding == {("dead_letters", "outbox")}
    assert watch.look(snapshot(dead_letters=0), T0 + 5) == ([], set())


def test_config_invalid_after_config_invalid_after_with_its_first_problem() -> None:
    watch = SelfWatch(config(config_invalid_after=60.0))
    error = f"{CONFIG_PATH}:4:3: logs.0.paths: field required\n{CONFIG_PATH}:9:1: unknown key 'x'"
    snap = snapshot(config_error=error)
    found, holding = watch.look(snap, T0)
    assert found == [] and holding == {("config_invalid", CONFIG_PATH)}
    assert watch.look(snap, T0 + 59.0)[0] == []
    found, _ = watch.look(snap, T0 + 60.0)
    assert conditions(found) == [("config_invalid", CONFIG_PATH)]
    assert "field required" in found[0].description and "unknown key" not in found[0].description
    assert CONFIG_PATH in found[0].description and "1m" in found[0].description
    assert watch.look(snapshot(), T0 + 61.0) == ([], set())
    assert watch.look(snap, T0 + 62.0)[0] == []  # refused again: the hold starts over


# --- the app's look: a real engine, a fake outbox ---------------------------------------------------------


class FakeWriter:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.states: dict[str, str] = {}

    async def commit(self, commit: Any) -> None:
        self.events += [e.body for e in commit.events]
        self.states.update(dict(commit.alerts))
        for key in commit.forget_alerts:
            self.states.pop(key, None)


class FakeOutbox:
    def __init__(self, writer: FakeWriter) -> None:
        self.writer = writer
        self.dead = 0
        self.stats = SimpleNamespace(dropped={})
        self.dead_letters = SimpleNamespace(count=self._count)

    async def _count(self) -> int:
        return self.dead


class FakeSources:
    """``SourceSet`` as the self look reads it: one running file source ``app``."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {"files": [], "errors": []}
        self.source = SimpleNamespace(status=lambda: self.status, stats=SimpleNamespace(losses=dict),
                                      first_scan_done=True)
        self.app = SimpleNamespace(config=object(), source=self.source, ruleset=SimpleNamespace(abandoned=dict),
                                   queue=asyncio.Queue(maxsize=8))
        self.running: dict[str, Any] = {"app": self.app}


def agent_parts(writer: FakeWriter, sources: FakeSources, cfg: Config) -> tuple[SelfAlerts, FakeOutbox]:
    engine = AlertEngine(AlertsConfig(), host=cfg.host, global_labels={"env": "t"}, default_output="default")
    engine.restore(writer.states)
    outbox = FakeOutbox(writer)
    holder = {"config": cfg}
    return SelfAlerts(engine, outbox, sources, lambda: holder["config"], lambda: "", CONFIG_PATH), outbox  # type: ignore[arg-type]


async def test_an_open_alert_survives_a_restart_while_its_cause_holds_and_gets_its_ok_when_it_goes() -> None:
    cfg = Config(host="web-1", self_alerts=SelfAlertsConfig(unreadable_after=30.0))
    writer, sources = FakeWriter(), FakeSources()
    sources.status = {"files": [], "errors": DENIED}
    app, _ = agent_parts(writer, sources, cfg)
    await app.look(T0)
    await app.look(T0 + 30.0)
    assert [(e["event_status"], e["labels"]["condition"], e["labels"]["object"]) for e in writer.events] == [
        ("Warning", "file_unreadable", PATH)]
    fired = writer.events[0]
    assert fired["labels"]["source"] == "dutytail" and fired["labels"]["host"] == "web-1"
    assert fired["labels"]["env"] == "t" and PATH in fired["title_rule"]
    assert len(writer.states) == 1  # persisted with the event

    restarted, _ = agent_parts(writer, sources, cfg)  # same store, fresh memory
    await restarted.look(T0 + 40.0)
    await restarted.look(T0 + 45.0)
    assert len(writer.events) == 1, "a restart closed an alert whose cause still holds"
    assert [s.name for s in restarted.engine.self_states() if s.firing] == ["file_unreadable"]

    sources.status = {"files": [], "errors": []}
    await restarted.look(T0 + 50.0)
    assert [e["event_status"] for e in writer.events] == ["Warning", "Ok"]
    ok = writer.events[1]
    assert ok["alert_key"] == fired["alert_key"] and "readable again" in ok["description"]
    assert writer.states == {}


async def test_the_alert_key_is_stable_per_condition_and_object() -> None:
    cfg = Config(host="web-1", self_alerts=SelfAlertsConfig(unreadable_after=0.0))
    writer, sources = FakeWriter(), FakeSources()
    app, outbox = agent_parts(writer, sources, cfg)
    outbox.dead = 1
    await app.look(T0)
    outbox.dead = 0
    await app.look(T0 + 1)
    outbox.dead = 2
    await app.look(T0 + 2)
    keys = [e["alert_key"] for e in writer.events]
    assert [e["event_status"] for e in writer.events] == ["Warning", "Ok", "Warning"]
    assert len(set(keys)) == 1
    other = SelfWatch(SelfAlertsConfig(unreadable_after=0.0))
    found, _ = other.look(snapshot(file_source(errors=DENIED), dead_letters=1), T0)
    from agent.alerts.self_alert import alert_key
    by_condition = {o.condition: alert_key("web-1", o) for o in found}
    assert by_condition["dead_letters"] == keys[0]
    assert by_condition["file_unreadable"] != keys[0]


async def test_turning_self_alerts_off_resolves_the_open_ones_incidents_too() -> None:
    on = Config(host="web-1", self_alerts=SelfAlertsConfig(unreadable_after=0.0))
    writer, sources = FakeWriter(), FakeSources()
    sources.status = {"files": [], "errors": DENIED}
    engine = AlertEngine(AlertsConfig(), host="web-1", global_labels={}, default_output="default")
    outbox = FakeOutbox(writer)
    outbox.stats.dropped = {"outbox_full": 3}
    holder = {"config": on}
    app = SelfAlerts(engine, outbox, sources, lambda: holder["config"], lambda: "", CONFIG_PATH)  # type: ignore[arg-type]
    await app.look(T0)
    assert sorted(e["labels"]["condition"] for e in writer.events) == ["events_dropped", "file_unreadable"]
    holder["config"] = Config(host="web-1", self_alerts=SelfAlertsConfig(enabled=False))
    await app.look(T0 + 1)
    oks = [e for e in writer.events if e["event_status"] == "Ok"]
    assert len(oks) == 2 and all("turned off" in e["description"] for e in oks)
    await app.look(T0 + 2)
    assert len(writer.events) == 4 and engine.self_states() == []


@pytest.mark.parametrize("hold", ["unreadable_after", "unavailable_after", "config_invalid_after"])
def test_a_zero_hold_counts_at_the_first_look(hold: str) -> None:
    watch = SelfWatch(config(**{hold: 0.0}))
    snap = snapshot(file_source(errors=DENIED, waiting=1), journal_source(available=False), config_error="bad")
    counted = {c for c, _ in conditions(watch.look(snap, T0)[0])}
    expect = {"unreadable_after": "file_unreadable", "unavailable_after": "journal_unavailable",
              "config_invalid_after": "config_invalid"}[hold]
    assert expect in counted


def with_app_source(**self_alerts: Any) -> Config:
    return Config.model_validate({"host": "web-1", "self_alerts": self_alerts,
                                  "logs": [{"name": "app", "paths": ["/var/log/app/*.log"]}]})


async def test_an_open_alert_is_not_closed_while_sources_stop_start_or_have_not_scanned_yet() -> None:
    """A snapshot without the source's errors means nothing while the source is not running (the agent
    stops its sources before the self look; a reload restarts one) or has not scanned its files yet (a
    large tree takes seconds): an Ok then, and a Warning after the hold, would page for nothing."""
    cfg = with_app_source(unreadable_after=0.0)
    writer, sources = FakeWriter(), FakeSources()
    sources.status = {"files": [], "errors": DENIED}
    app, _ = agent_parts(writer, sources, cfg)
    await app.look(T0)
    assert [e["event_status"] for e in writer.events] == ["Warning"]

    sources.running = {}  # shutting down: the source stopped, the self look still runs
    await app.look(T0 + 1)
    assert [e["event_status"] for e in writer.events] == ["Warning"], "an Ok while the agent stops"

    restarted, _ = agent_parts(writer, sources, cfg)  # starting again: the source runs, its scan is not done
    sources.running = {"app": sources.app}
    sources.source.first_scan_done = False
    sources.status = {"files": [], "errors": []}
    await restarted.look(T0 + 2)
    await restarted.look(T0 + 3)
    assert [e["event_status"] for e in writer.events] == ["Warning"], "an Ok before the first scan"

    sources.status = {"files": [], "errors": DENIED}  # the scan found it unreadable still
    sources.source.first_scan_done = True
    await restarted.look(T0 + 4)
    assert [e["event_status"] for e in writer.events] == ["Warning"]
    sources.status = {"files": [], "errors": []}  # and now it is readable
    await restarted.look(T0 + 5)
    assert [e["event_status"] for e in writer.events] == ["Warning", "Ok"]


async def test_an_alert_of_a_source_removed_from_the_config_is_closed() -> None:
    writer, sources = FakeWriter(), FakeSources()
    sources.status = {"files": [], "errors": DENIED}
    holder = {"config": with_app_source(unreadable_after=0.0)}
    engine = AlertEngine(AlertsConfig(), host="web-1", global_labels={}, default_output="default")
    app = SelfAlerts(engine, FakeOutbox(writer), sources, lambda: holder["config"], lambda: "",  # type: ignore[arg-type]
                     CONFIG_PATH)
    await app.look(T0)
    holder["config"] = Config(host="web-1", self_alerts=SelfAlertsConfig(unreadable_after=0.0))  # app removed
    await app.look(T0 + 1)  # still running: the reload has not stopped it yet
    assert [e["event_status"] for e in writer.events] == ["Warning"]
    sources.running = {}
    await app.look(T0 + 2)
    assert [e["event_status"] for e in writer.events] == ["Warning", "Ok"]
