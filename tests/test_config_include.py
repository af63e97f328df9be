"""``include:`` (agent/config_files.py): conf.d files appended in file-name order, errors in the file they are
in, names unique across files, and hot reload of files added, changed and removed (the real agent)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.config import ConfigError, load_config
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import (
    RELOAD_DEADLINE,
    append,
    config_text,
    eventually,
    logs_dir,
    reloads,
    run_cli,
    started,
    status,
    wait_config_watch_armed,
    wait_reloaded,
)

MAIN = """\
flashduty: {name: default}
include: ["conf.d/*.yaml"]
logs:
  - name: app
    paths: ["/var/log/app.log"]
"""


def source(name: str, match: str = "error") -> str:
    return textwrap.dedent(f"""\
        logs:
          - name: {name}
            paths: ["/var/log/{name}.log"]
            rules:
              - name: r
                match: '{match}'
        """)


def tree(tmp_path: Path, main: str = MAIN, **files: str) -> Path:
    (tmp_path / "conf.d").mkdir(exist_ok=True)
    (tmp_path / "config.yaml").write_text(main)
    for name, text in files.items():
        (tmp_path / "conf.d" / f"{name}.yaml").write_text(text)
    return tmp_path / "config.yaml"


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value).splitlines()


def test_included_lists_are_appended_in_file_name_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tree(tmp_path, b_web=source("web"), a_db=source("db") + "checks:\n  - {name: root, disk: {path: /, "
                                                                  "critical: 99%}}\n")
    monkeypatch.chdir("/")  # globs are relative to the main file's directory, not the process's
    config = load_config(path)
    assert [s.name for s in config.logs] == ["app", "db", "web"]
    assert [c.name for c in config.checks] == ["root"]
    assert config.origin("web") == "conf.d/b_web.yaml" and config.origin("app") == str(path)
    assert config.origin("root") == "conf.d/a_db.yaml"
    assert config.files == [str(path), "conf.d/a_db.yaml", "conf.d/b_web.yaml"]
    assert config.include_globs == [str(tmp_path / "conf.d" / "*.yaml")]


def test_an_error_names_the_included_file_line_and_column(tmp_path: Path) -> None:
    path = tree(tmp_path, nginx=source("nginx", match="[crit"))
    assert problems(path) == ["conf.d/nginx.yaml:6:16: logs[0].rules[0].match: invalid regex '[crit': "
                              "unterminated character set at position 0"]


def test_only_sources_and_checks_may_be_included(tmp_path: Path) -> None:
    path = tree(tmp_path, bad=source("x") + "labels: {team: a}\ninclude: [other.yaml]\n")
    assert problems(path) == [
        "conf.d/bad.yaml:7:1: labels: not allowed in an included file (only logs, journal, checks)",
        "conf.d/bad.yaml:8:1: include: not allowed in an included file (only logs, journal, checks)",
    ]


def test_a_name_clash_names_both_places(tmp_path: Path) -> None:
    path = tree(tmp_path, one=source("app"))
    assert problems(path) == [f"conf.d/one.yaml:2:11: logs[0].name: source name 'app' is already used at "
                              f"{path}:4:11"]


def test_yaml_errors_and_env_expansion_in_included_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUTYTAIL_TEST_PATTERN", "fatal")
    path = tree(tmp_path, env=source("env", match="${DUTYTAIL_TEST_PATTERN}"))
    assert load_config(path).logs[1].rules[0].match == "fatal"
    (tmp_path / "conf.d" / "broken.yaml").write_text("logs:\n  - name: [unclosed\n")
    assert problems(path)[0].startswith("conf.d/broken.yaml:")


async def test_no_match_is_fine_and_check_config_reports_each_file(tmp_path: Path) -> None:
    path = tree(tmp_path)
    assert [s.name for s in load_config(path).logs] == ["app"]  # an empty conf.d
    (tmp_path / "conf.d" / "web.yaml").write_text(source("web"))
    result = await run_cli(tmp_path, "check-config", "-c", "config.yaml")
    assert result.code == 0, result.stdout + result.stderr
    assert "conf.d/web.yaml: OK (1 sources: web; 0 checks)" in result.stdout
    assert "source web (conf.d/web.yaml)" in result.stdout


# --- the running agent --------------------------------------------------------------------------------------


def included_source(name: str, path: Path) -> str:
    return textwrap.dedent(f"""\
        logs:
          - name: {name}
            paths: ["{path}"]
            start_at: beginning
            rules:
              - name: boom
                match: 'BOOM (?P<n>\\d+)'
                identity: [n]
                title: "{name} boom {{n}}"
                resolve: {{after: 1h}}
        """)


async def test_files_added_changed_and_removed_take_effect_while_running(tmp_path: Path, fake: FakeFlashduty,
                                                                        agent_process: Any) -> None:
    logs, _ = logs_dir(tmp_path)
    (tmp_path / "conf.d").mkdir()
    web_log = logs / "web.log"
    web_log.write_text("")
    main = config_text(fake.url).replace("state_dir: ./state\n", "state_dir: ./state\ninclude: [conf.d/*.yaml]\n")
    agent = await started(agent_process, main)
    await wait_config_watch_armed(agent)

    async def sources() -> dict[str, Any]:
        return (await status(agent))["sources"]

    conf = tmp_path / "conf.d" / "web.yaml"
    conf.write_text(included_source("web", web_log))  # added
    await eventually(lambda: _has(sources, "web"), RELOAD_DEADLINE, "the included source to start")
    assert (await sources())["web"]["config_file"] == "conf.d/web.yaml"
    append(web_log, "BOOM 1")
    await fake.wait_until(lambda: any(e["title_rule"] == "web boom 1" for e in fake.events), 10)

    before = await reloads(agent)
    conf.write_text(included_source("web", web_log).replace("web boom", "web BOOM"))  # changed
    await wait_reloaded(agent, before, RELOAD_DEADLINE)
    append(web_log, "BOOM 2")
    await fake.wait_until(lambda: any(e["title_rule"] == "web BOOM 2" for e in fake.events), 10)

    (tmp_path / "conf.d" / "zz.yaml").write_text("logs: [{name: broken, paths: 5}]\n")  # invalid: nothing changes
    error = await eventually(lambda: _config_error(agent), RELOAD_DEADLINE, "the invalid included file reported")
    assert error.startswith("conf.d/zz.yaml:1:")
    assert "web" in await sources()
    (tmp_path / "conf.d" / "zz.yaml").unlink()
    await eventually(lambda: _no_error(agent), RELOAD_DEADLINE, "the error gone with the file")

    conf.unlink()  # removed: its source stops, its open alerts resolve
    await eventually(lambda: _gone(sources, "web"), RELOAD_DEADLINE, "the removed file's source to stop")
    await fake.wait_until(lambda: sum(e["event_status"] == "Ok" for e in fake.events) == 2, 10)
    assert {e["title_rule"] for e in fake.events if e["event_status"] == "Ok"} == {"web boom 1", "web BOOM 2"}
    assert fake.violations == []
    result = await run_cli(agent, "status", "-c", "config.yaml")
    assert f"source app (FileSource, from {agent.config_path}" in result.stdout, result.stdout
    assert agent.stop() == 0


async def _has(sources: Any, name: str) -> bool:
    return name in await sources()


async def _gone(sources: Any, name: str) -> bool:
    return name not in await sources()


async def _config_error(agent: Any) -> str | None:
    return (await status(agent))["config_error"] or None


async def _no_error(agent: Any) -> bool:
    return not (await status(agent))["config_error"]
