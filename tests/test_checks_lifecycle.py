"""Lifecycle rules: unknown mapping, hysteresis in both directions, restored state, Nagios flap detection."""

from __future__ import annotations

import pytest

from agent.checks import CheckConfig, CheckLifecycle, FlappingConfig, flap_percent, map_status


def feed(lc: CheckLifecycle, raws: list[str]) -> list[str]:
    return [lc.observe(raw).status for raw in raws]  # type: ignore[arg-type]


def reference_percent(history: list[str]) -> float:
    """Straight from the definition: transitions weighted 0.80 .. 1.18, newest heaviest, divided by 20."""
    window = history[-21:]
    changes = [window[i] != window[i - 1] for i in range(1, len(window))]
    weights = [0.80 + 0.02 * k for k in range(20)][-len(changes) :] if changes else []
    return sum(w for w, c in zip(weights, changes, strict=True) if c) / 20 * 100


def test_unknown_mapping() -> None:
    assert map_status("OK", "Critical") == "Ok"
    assert map_status("WARNING", "Critical") == "Warning"
    assert map_status("CRITICAL", "Info") == "Critical"
    for target in ("Critical", "Warning", "Info"):
        assert map_status("UNKNOWN", target) == target  # type: ignore[arg-type]
    lc = CheckLifecycle(unknown_status="Info")
    step = lc.observe("UNKNOWN")
    assert step.status == "Info" and step.changed and step.mapped == "Info"


def test_defaults_change_immediately_both_ways() -> None:
    lc = CheckLifecycle()
    steps = [lc.observe(raw) for raw in ("OK", "CRITICAL", "CRITICAL", "OK", "OK")]  # type: ignore[arg-type]
    assert [s.status for s in steps] == ["Ok", "Critical", "Critical", "Ok", "Ok"]
    assert [s.changed for s in steps] == [False, True, False, True, False]


def test_failures_before_alert() -> None:
    lc = CheckLifecycle(failures_before_alert=3)
    assert feed(lc, ["WARNING", "CRITICAL", "OK"]) == ["Ok", "Ok", "Ok"]  # streak broken by an OK
    assert lc.consecutive_failures == 0 and lc.consecutive_successes == 1
    assert feed(lc, ["WARNING", "UNKNOWN", "CRITICAL"]) == ["Ok", "Ok", "Critical"]  # latest status wins
    assert lc.consecutive_failures == 3


def test_successes_before_ok_and_immediate_severity_changes() -> None:
    lc = CheckLifecycle(failures_before_alert=2, successes_before_ok=3)
    assert feed(lc, ["CRITICAL", "CRITICAL"]) == ["Ok", "Critical"]
    # While bad, a severity change is immediate; recovery needs three OKs in a row.
    assert feed(lc, ["WARNING", "OK", "OK", "CRITICAL"]) == ["Warning", "Warning", "Warning", "Critical"]
    steps = [lc.observe("OK") for _ in range(3)]
    assert [s.status for s in steps] == ["Critical", "Critical", "Ok"]
    assert [s.changed for s in steps] == [False, False, True]


def test_restored_bad_status_continues_without_new_failure_streak() -> None:
    lc = CheckLifecycle(failures_before_alert=3, successes_before_ok=2, initial_status="Critical")
    first = lc.observe("CRITICAL")
    assert first.status == "Critical" and not first.changed  # still firing, no repeat "new" alert
    assert lc.observe("WARNING").status == "Warning"
    assert feed(lc, ["OK", "OK"]) == ["Warning", "Ok"]

    fresh = CheckLifecycle(failures_before_alert=3, initial_status="Ok")
    assert feed(fresh, ["CRITICAL", "CRITICAL"]) == ["Ok", "Ok"]

    with pytest.raises(ValueError, match="not one of"):
        CheckLifecycle(initial_status="CRITICAL")


def test_flap_percent_matches_definition() -> None:
    alternating = ["Ok", "Critical"] * 11  # 22 results: the window keeps 21, 20 changes
    assert flap_percent(alternating) == pytest.approx(99.0)  # sum 0.80..1.18 = 19.8 -> 99 %
    assert flap_percent(["Ok"] * 21) == 0.0
    # One change at the newest position weighs 1.18, at the oldest 0.80.
    assert flap_percent(["Ok"] * 20 + ["Warning"]) == pytest.approx(5.9)
    assert flap_percent(["Ok"] + ["Warning"] * 20) == pytest.approx(4.0)
    # A short history is treated as the newest part of the window.
    assert flap_percent(["Ok", "Critical"]) == pytest.approx(5.9)
    history = ["Ok", "Ok", "Warning", "Critical", "Critical", "Ok", "Warning", "Ok"] * 3
    for end in range(1, len(history) + 1):
        assert flap_percent(history[:end]) == pytest.approx(reference_percent(history[:end]))


def test_flapping_starts_at_high_and_stops_at_low() -> None:
    lc = CheckLifecycle(flapping=FlappingConfig(enabled=True, high=50, low=25))
    raws = ["OK", "CRITICAL"] * 6
    steps = [lc.observe(raw) for raw in raws]  # type: ignore[arg-type]
    percents = [round(s.flap_percent, 1) for s in steps]
    # k results hold k-1 changes with the top k-1 weights: 9 changes -> 49.5 %, 10 changes -> 54.5 %.
    assert percents[9] == 49.5 and percents[10] == 54.5
    assert [s.flapping for s in steps][:11] == [False] * 10 + [True]
    assert steps[10].flapping_changed and not steps[11].flapping_changed

    # Stable results push the changes out of the window; flapping ends once <= 25 %.
    stable_steps = [lc.observe("OK") for _ in range(21)]
    history = [lc_status for lc_status in lc.history]
    assert history == ["Ok"] * 21
    stop = next(i for i, s in enumerate(stable_steps) if not s.flapping)
    assert stable_steps[stop].flap_percent <= 25.0 < stable_steps[stop - 1].flap_percent
    assert stable_steps[stop].flapping_changed
    assert [s.flapping_changed for s in stable_steps].count(True) == 1
    # Between high and low the state holds (hysteresis of the flap detector itself).
    assert any(25.0 < s.flap_percent < 50.0 and s.flapping for s in stable_steps)


def test_flapping_disabled_never_flaps_and_effective_status_still_moves() -> None:
    lc = CheckLifecycle()
    steps = [lc.observe(raw) for raw in ["OK", "CRITICAL"] * 11]  # type: ignore[arg-type]
    assert not any(s.flapping or s.flapping_changed for s in steps)
    assert steps[-1].flap_percent == pytest.approx(99.0)
    assert steps[-1].status == "Critical"


def test_from_config() -> None:
    check = CheckConfig.model_validate(
        {
            "name": "x",
            "memory": {"warning": 80},
            "failures_before_alert": 2,
            "successes_before_ok": 4,
            "unknown_status": "Critical",
            "flapping": {"high": "40%", "low": "20%"},
        }
    )
    lc = CheckLifecycle.from_config(check, "Warning")
    assert (lc.failures_before_alert, lc.successes_before_ok, lc.unknown_status) == (2, 4, "Critical")
    assert lc.flapping_config.enabled and lc.flapping_config.high == 40.0
    assert lc.status == "Warning"
    assert lc.observe("UNKNOWN").status == "Critical"
