"""Config files built to hurt: alias bombs, Python tags, recursion, deep nesting. Each is a clear
``file:line:col`` error, at bounded cost, and a running agent keeps its config and keeps watching the file."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from agent.config import ConfigError, parse_config
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import config_text, eventually, reloads, status, wait_config_watch_armed, wait_reloaded

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bomb.yaml")
    return str(caught.value)


def test_an_alias_bomb_is_refused_quickly_and_in_little_memory() -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        message = error_of(BILLION_LAUGHS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message.startswith("bomb.yaml:") and "expands (through YAML aliases) to more than" in message, message
    assert peak < 200 * 1024 * 1024, f"{peak / 2**20:.0f} MiB to refuse it"
    assert time.monotonic() - started < 60  # a generous bound: it used to run out of memory instead


@pytest.mark.parametrize(("text", "expected"), [
    ("state_dir: !!python/object/apply:os.system ['touch pwned']\n", "bomb.yaml:1:12: state_dir: unsupported YAML"),
    ("labels: {team: !custom web}\n", "bomb.yaml:1:16: labels.team: unsupported YAML"),
    ("labels: &x {self: *x}\n", "a YAML alias refers to the node that contains it"),
    ("logs: &l [*l]\n", "a YAML alias refers to the node that contains it"),
    ("labels: &m {<<: *m}\n", "merge key refers to the mapping that contains it"),
    ("labels: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than 50 levels"),
    ("labels:" + "".join(f"\n{'  ' * (i + 1)}k{i}:" for i in range(60)) + " v\n", "nested deeper than 50 levels"),
])
def test_hostile_yaml_is_a_located_error(text: str, expected: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    message = error_of(text)
    assert expected in message, message
    assert message.startswith("bomb.yaml:")
    assert not (tmp_path / "pwned").exists()


async def test_the_config_watch_survives_any_file_and_applies_the_next_good_one(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("")
    agent = agent_process(config_text(fake.url))
    agent.start()
    await agent.wait_ready()
    await wait_config_watch_armed(agent)
    for bomb in (BILLION_LAUGHS, "state_dir: !!python/object/apply:os.system ['true']\n", "a: &a [*a]\n",
                 "x: " + "[" * 100_000):
        invalid = await reloads(agent, "invalid")
        agent.write_config(bomb)
        await wait_reloaded(agent, invalid, timeout=10, result="invalid")
        assert (await status(agent))["config_error"].startswith(str(agent.config_path))
    applied = await reloads(agent)
    agent.write_config(config_text(fake.url, title="v2 after the bombs {db}"))
    await wait_reloaded(agent, applied, timeout=10)
    await eventually(lambda: agent.proc.poll() is None, 1, "the agent alive")
    assert (await status(agent))["config_error"] is None
    assert agent.stop() == 0
