"""Config loading: every invalid file is named by file:line:col and key path; valid ones load."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.config import ConfigError, expand_env, load_config, parse_config
from tests.conftest import ROOT

VALID = """\
state_dir: ./state
labels: {env: demo}
flashduty:
  push_url: ${FLASHDUTY_PUSH_URL:-}
  max_per_second: 100
  max_per_minute: 1000
health:
  listen: 127.0.0.1:8790
logs:
  - name: app
    paths: ["./demo/*.log"]
    start_at: end
    rules:
      - name: db-timeout
        match: 'timeout after (?P<ms>\\d+)ms on (?P<db>\\w+)'
        severity: Critical
        title: "DB timeout on {db}"
        description: "{line}"
        alert_key: "db-timeout-{db}"
        labels: {class: db}
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "cfg.yaml")
    return str(info.value)


def test_the_issue_contract_example_is_valid() -> None:
    config = parse_config(VALID, "cfg.yaml")
    assert config.flashduty[0].dry_run()
    rule = config.logs[0].rules[0]
    assert rule.severity == "Critical" and rule.alert_key == "db-timeout-{db}"
    assert config.logs[0].start_at == "end"


def test_shipped_example_config_is_valid() -> None:
    config = load_config(ROOT / "config.example.yaml")
    assert config.logs and config.checks


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("    start_at: end\n", "    start_at: end\n    colour: blue\n", "cfg.yaml:13:5: logs[0].colour: unknown key"),
        ("        severity: Critical\n", "        severity: Fatal\n", "cfg.yaml:16:19: logs[0].rules[0].severity:"),
        ("(?P<db>\\w+)'", "(?P<db>\\w+'", "cfg.yaml:15:16: logs[0].rules[0].match: invalid regex"),
        ("  max_per_second: 100\n", "  max_per_second: 100\n  timeout: soon\n",
         "cfg.yaml:6:12: flashduty.timeout: invalid duration 'soon'"),
        ("labels: {env: demo}\n", "labels: {env: demo}\nlabels: {env: prod}\n",
         "cfg.yaml:3:1: labels: duplicate key (first defined at line 2)"),
        ("        labels: {class: db}\n", "        labels: {class: db}\n        identity: [nope]\n",
         "logs[0].rules[0]: identity field 'nope' is not a named group"),
        ('        title: "DB timeout on {db}"\n', '        title: "DB timeout on {dbb}"\n',
         "title refers to unknown field(s) ['dbb']"),
        # templates reach field values only: no attribute access, no format specs (a hostile user's finds)
        ('        title: "DB timeout on {db}"\n', '        title: "{db.__class__.__mro__}"\n',
         "cfg.yaml:17:16: logs[0].rules[0].title: template field {db.__class__.__mro__}"),
        ('        title: "DB timeout on {db}"\n', '        title: "{line:>300000000}"\n',
         "format specs (:...) are not supported"),
        ('        title: "DB timeout on {db}"\n', '        title: "{line[0]}"\n', "dotted field paths"),
        ("        labels: {class: db}\n", "        labels: {class: '{db!r}'}\n", "conversions (!r)"),
    ],
)
def test_invalid_configs_report_file_line_column_and_key(replace: str, by: str, expected: str) -> None:
    assert replace in VALID
    assert expected in error_of(VALID.replace(replace, by))


def test_yaml_syntax_error_has_a_location() -> None:
    message = error_of("state_dir: ./state\nlogs:\n  - name: [unclosed\n")
    assert message.startswith("cfg.yaml:") and "invalid YAML" in message


def test_yaml11_booleans_are_not_booleans() -> None:
    # `start_at: no` must not silently become False; it is an invalid choice, reported as such
    message = error_of(VALID.replace("start_at: end", "start_at: no"))
    assert "logs[0].start_at" in message


def test_env_expansion() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert expand_env("${A}-${B:-dflt}-${EMPTY:-e}-$$", env) == "x-dflt-e-$"
    with pytest.raises(ValueError, match="B is not set"):
        expand_env("${B}", env)
    message = error_of(VALID.replace("${FLASHDUTY_PUSH_URL:-}", "${DUTYTAIL_SURELY_UNSET_VAR}"))
    assert "cfg.yaml:4:13: flashduty.push_url: environment variable DUTYTAIL_SURELY_UNSET_VAR is not set" in message


def test_missing_required_key_is_located_at_its_parent() -> None:
    message = error_of(VALID.replace("  - name: app\n", "  - nom: app\n"))
    assert "logs[0].name: required key is missing" in message
    assert "logs[0].nom: unknown key" in message


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    ok = subprocess.run([sys.executable, "-m", "agent", "check-config", "-c", str(good)], capture_output=True,
                        text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("severity: Critical", "severity: critical"))
    result = subprocess.run([sys.executable, "-m", "agent", "check-config", "-c", str(bad)], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{bad}:16:19: logs[0].rules[0].severity:")


def test_version_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "agent", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("dutytail ")


def test_redactor_hides_integration_keys_in_urls_and_known_secrets() -> None:
    from agent.logsetup import Redactor

    redactor = Redactor(["k3y-known-secret"])
    text = redactor.text("POST https://api.flashcat.cloud/x?integration_key=SECRETKEY123&a=1 with k3y-known-secret")
    assert "SECRETKEY123" not in text and "k3y-known-secret" not in text
    assert "integration_key=***&a=1" in text
    redactor.set(["rotated-secret"])  # a reload replaces the secrets: the old key is not kept forever
    assert redactor.text("k3y-known-secret rotated-secret") == "k3y-known-secret ***"


def test_each_agent_redacts_its_own_secrets_in_the_shared_log_stream() -> None:
    import io

    import structlog

    from agent.logsetup import LIVE_REDACTORS, Redactor, configure_logging

    out = io.StringIO()
    configure_logging("info", stream=out)
    first, second = Redactor(["first-agent-secret"]), Redactor(["second-agent-secret"])
    LIVE_REDACTORS.register(first)
    LIVE_REDACTORS.register(second)
    try:
        structlog.get_logger("t").info("both", a="first-agent-secret", b="x second-agent-secret y")
        LIVE_REDACTORS.unregister(second)  # that agent stopped: its secrets are no longer held anywhere
        assert second not in list(LIVE_REDACTORS._live)  # type: ignore[attr-defined]
    finally:
        LIVE_REDACTORS.unregister(first)
        structlog.reset_defaults()
    logged = out.getvalue()
    assert "first-agent-secret" not in logged and "second-agent-secret" not in logged and '"b": "x *** y"' in logged


def test_an_invalid_config_lists_a_problem_per_section_and_entry() -> None:
    # msgspec stops at a value's first problem: agent/config.py validates again per section, per entry and past
    # each unknown key, so one check-config run shows what a user has to fix across the file
    message = error_of("""\
        flashduty: {max_per_second: 0}
        outbox: {on_full: sometimes}
        labels: {env: 5}
        logs:
          - name: app
            paths: ["/var/log/app.log"]
            format: jsn
          - nom: x
            paths: ["/var/log/x.log"]
        checks:
          - name: c1
            tcp: {host: h, port: 70000}
          - name: c2
            memory: {warning: 80}
            bogus: 1
        """)
    assert message.splitlines() == [
        "cfg.yaml:1:29: flashduty.max_per_second: Expected `int` >= 1",
        "cfg.yaml:2:19: outbox.on_full: Invalid enum value 'sometimes': use one of block_sources, drop_oldest",
        "cfg.yaml:3:9: labels: Expected `str`, got `int`",
        "cfg.yaml:7:13: logs[0].format: Invalid enum value 'jsn': use one of cri, docker, json, logfmt, raw",
        "cfg.yaml:8:5: logs[1].name: required key is missing",
        "cfg.yaml:8:5: logs[1].nom: unknown key",
        "cfg.yaml:12:26: checks[0].tcp.port: Expected `int` <= 65535",
        "cfg.yaml:15:5: checks[1].bogus: unknown key",
    ]
