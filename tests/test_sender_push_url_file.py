"""`flashduty.push_url_file`: the push URL read from a file, a warning for a world-readable file (once), and a
rotated file used after SIGHUP.

The tests drive a real `dutytail run` process (tests/conftest.py ``agent_process``) against real files and
the fake Flashduty endpoint on 127.0.0.1, and wait on conditions with deadlines.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import (
    RELOAD_DEADLINE,
    append,
    config_text,
    events_named,
    eventually,
    logs_dir,
    started,
    status,
    wait_reloaded,
)


def _url_file(tmp_path: Path, url: str, mode: int) -> Path:
    secret = tmp_path / "secret" / "push_url"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(url + "\n")
    secret.chmod(mode)
    return secret


async def test_push_url_file_delivers_and_world_readable_file_warns(tmp_path: Path, fake: FakeFlashduty,
                                                                    agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    secret = _url_file(tmp_path, fake.url, 0o644)
    flashduty = "  push_url_file: ./secret/push_url\n"
    agent = await started(agent_process, config_text(flashduty=flashduty))
    warnings = events_named(agent, "secret_file_world_readable")
    assert warnings and warnings[0]["level"] == "warning" and "push_url_file" in warnings[0]["detail"]

    append(app, "ERROR timeout on orders id=1")
    (event,) = await fake.wait_for_events(1)
    assert event["title_rule"] == "v1 timeout on orders"
    assert not (await status(agent))["dry_run"]

    secret.chmod(0o600)  # fixed; the next reload does not warn again
    agent.write_config(config_text(flashduty=flashduty, labels="{env: ops2}"))
    await wait_reloaded(agent, 0, RELOAD_DEADLINE)
    assert len(events_named(agent, "secret_file_world_readable")) == len(warnings)
    assert fake.integration_key not in agent.logs()


async def test_rotated_push_url_file_is_used_after_sighup(tmp_path: Path, fake: FakeFlashduty,
                                                          agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    secret = _url_file(tmp_path, fake.url, 0o600)
    agent = await started(agent_process, config_text(flashduty="  push_url_file: ./secret/push_url\n"))
    assert agent.proc is not None
    append(app, "ERROR timeout on orders id=1")
    await fake.wait_for_events(1)

    fake.set_key("rotated-key-8d2e6b0a")  # the old key is refused from now on
    secret.write_text(fake.url + "&rotated=1\n")  # the marker makes the switch visible in /status
    agent.proc.send_signal(signal.SIGHUP)  # `systemctl reload dutytail` after rotating the secret

    async def switched() -> bool:
        return str((await status(agent))["outputs"]["default"]["url"]).endswith("integration_key=***&rotated=1")

    await eventually(switched, RELOAD_DEADLINE, "the output to use the rotated URL")
    append(app, "ERROR timeout on orders id=2")
    await fake.wait_for_events(2, timeout=5)
