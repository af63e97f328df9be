"""Config validation of checks: the mistakes users make get a clear message, the defaults are right."""

from __future__ import annotations

import pytest

from agent.checks import CheckConfig, validate_unique_names
from agent.model import Model, ModelError, field


def make(**data: object) -> CheckConfig:
    return CheckConfig.model_validate({"name": "c", **data})


def error_text(**data: object) -> str:
    with pytest.raises(ModelError) as info:
        make(**data)
    return str(info.value)


def test_issue_example_parses_with_units_and_defaults() -> None:
    disk = make(disk={"path": "/", "warning": "80%", "critical": "90%"}, interval="30s")
    assert disk.kind == "disk"
    assert disk.disk is not None and disk.disk.warning == 80.0 and disk.disk.critical == 90.0
    assert disk.interval == 30.0
    assert disk.timeout == 10.0  # min(10 s, interval)
    assert disk.failures_before_alert == 1 and disk.successes_before_ok == 1
    assert disk.unknown_status == "Warning"
    assert disk.flapping.enabled is False
    assert disk.labels == {} and disk.title is None and disk.output is None

    web = make(
        command=["/usr/lib/nagios/plugins/check_http", "-H", "127.0.0.1", "-p", 80],
        interval="60s",
        timeout="10s",
    )
    assert web.kind == "command"
    assert web.command == ["/usr/lib/nagios/plugins/check_http", "-H", "127.0.0.1", "-p", "80"]


def test_default_timeout_follows_a_short_interval() -> None:
    assert make(memory={"warning": 90}, interval="5s").timeout == 5.0
    assert make(memory={"warning": 90}, interval="5s", timeout="20s").timeout == 20.0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, "needs exactly one probe key"),
        ({"disk": {"path": "/", "warning": 80}, "tcp": {"host": "h", "port": 1}}, "got 2: disk, tcp"),
    ],
)
def test_exactly_one_probe_key(data: dict[str, object], expected: str) -> None:
    text = error_text(**data)
    assert expected in text
    assert "check 'c'" in text
    assert "command, disk, tcp, http" in text


def test_unknown_keys_are_rejected() -> None:
    assert "intervall: unknown key" in error_text(memory={"warning": 80}, intervall="5s")
    assert "disk.crit: unknown key" in error_text(disk={"path": "/", "warning": 80, "crit": 9})


def test_command_forms() -> None:
    assert "set shell: true" in error_text(command="check_x -H host")
    assert "one string for /bin/sh -c" in error_text(command=["a", "b"], shell=True)
    assert "only applies to command checks" in error_text(memory={"warning": 1}, shell=True)
    assert "YAML boolean" in error_text(command=["x", True])
    assert "must name a program" in error_text(command=[])
    shell = make(command="echo hi | grep hi", shell=True)
    assert shell.command == "echo hi | grep hi" and shell.shell


def test_flapping_forms() -> None:
    assert make(memory={"warning": 1}, flapping=True).flapping.enabled
    assert make(memory={"warning": 1}, flapping=True).flapping.high == 50.0
    cfg = make(memory={"warning": 1}, flapping={"high": "60%", "low": "10%"})
    assert cfg.flapping.enabled and cfg.flapping.high == 60.0 and cfg.flapping.low == 10.0
    assert "must be below high" in error_text(memory={"warning": 1}, flapping={"high": 20, "low": 30})


def test_common_keys_validation() -> None:
    assert "unknown_status: Invalid enum value 'Ok': use one of Critical, Info, Warning" in error_text(
        memory={"warning": 1}, unknown_status="Ok")
    assert "failures_before_alert: Expected `int` >= 1" in error_text(memory={"warning": 1}, failures_before_alert=0)
    assert "interval: must be greater than 0" in error_text(memory={"warning": 1}, interval=0)
    assert "labels: label keys ['bad-key']" in error_text(memory={"warning": 1}, labels={"bad-key": "x"})
    with pytest.raises(ModelError, match=r"^name: check name 'a b' may only use letters"):
        CheckConfig.model_validate({"name": "a b", "memory": {"warning": 1}})
    cfg = make(
        memory={"warning": 1},
        labels={"team": "ops"},
        title="[TPL]${check} is ${status}",
        description="${summary}",
        alert_key="${check}",
        repeat_interval="4h",
        output="primary",
    )
    assert cfg.repeat_interval == 4 * 3600.0 and cfg.title == "[TPL]${check} is ${status}"


def test_probe_validation_messages() -> None:
    assert "at least one of warning" in error_text(disk={"path": "/"})
    assert "must not be above critical" in error_text(disk={"path": "/", "warning": 95, "critical": 90})
    assert "tcp.port: Expected `int` <= 65535" in error_text(tcp={"host": "h", "port": 70000})
    assert "must start with http://" in error_text(http={"url": "ftp://x"})
    assert "need an https:// url" in error_text(http={"url": "http://x", "tls_days_warning": 30})
    assert "invalid regular expression" in error_text(http={"url": "http://x", "body_match": "("})
    assert "exactly one of name, pidfile, cmdline (got name and pidfile)" in error_text(
        process={"name": "a", "pidfile": "/p"}
    )
    assert "critical_age must be longer" in error_text(file_age={"path": "/x", "max_age": "2h", "critical_age": "1h"})
    assert "not a systemd unit name" in error_text(systemd_unit={"unit": "--help"})
    assert "set warning and/or critical" in error_text(load={})


def test_probe_value_forms() -> None:
    http = make(http={"url": "https://x/", "expect_status": 204, "warning_ms": 250, "critical_ms": "1.5s"})
    assert http.http is not None
    assert http.http.expect_status == [204] and http.http.warning_ms == 250 and http.http.critical_ms == 1500
    assert http.http.verify_tls is True
    assert http.http.status_ok(204) and not http.http.status_ok(200)
    default = make(http={"url": "http://x/"}).http
    assert default is not None and default.status_ok(302) and not default.status_ok(404)
    load = make(load={"warning": 2, "critical": [4, 3, 2.5]}).load
    assert load is not None and load.triples() == ((2.0, None, None), (4.0, 3.0, 2.5))
    age = make(file_age={"path": "/b/*.tar", "max_age": "1d", "critical_age": "2d"}).file_age
    assert age is not None and age.max_age == 86400 and age.critical_age == 172800


def test_unique_names() -> None:
    checks = [make(memory={"warning": 1}), make(memory={"warning": 2})]
    with pytest.raises(ValueError, match=r"duplicate check names: 'c' \(checks\[0\], checks\[1\]\)"):
        validate_unique_names(checks)
    validate_unique_names([checks[0], CheckConfig.model_validate({"name": "d", "memory": {"warning": 1}})])

    class Root(Model):  # as the root config model (agent/config.py) checks its list
        checks: list[CheckConfig] = field(default_factory=list)

        def __post_init__(self) -> None:
            validate_unique_names(self.checks)

    with pytest.raises(ModelError, match="duplicate check names"):
        Root.model_validate({"checks": [{"name": "x", "load": {"warning": 1}}, {"name": "x", "load": {"warning": 1}}]})
