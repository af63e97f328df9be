"""One source's pipeline (agent/app/pipeline.py): a batch whose rule evaluation fails costs that batch only
(counted as dropped lines, logged), whether it was matched on the event loop (a few lines: a live tail) or
in a worker thread (a chunk of a backlog), and the batches after it are matched and delivered.

A real in-process agent (dry run: events are printed) tails a real file; the failure is injected into the
source's own compiled rules, which raise on a marker line.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from agent.config import parse_config
from tests.conftest import free_port, wait_until
from tests.ops_helpers import config_text, logs_dir


async def test_a_failing_batch_costs_only_its_lines_inline_or_in_a_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, app = logs_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    text = config_text().replace("${DUTYTAIL_TEST_HEALTH_PORT}", str(free_port()))
    printed = io.StringIO()
    agent = Agent(parse_config(text), stdout=printed)
    await agent.start()
    threads: list[str] = []

    def events() -> list[dict[str, Any]]:
        return [json.loads(line) for line in printed.getvalue().splitlines() if line.startswith("{")]

    def dropped() -> int:
        return agent.pipeline_stats.dropped_lines.get("pipeline_error_lines", 0)

    try:
        runtime = agent.sources.running["app"]
        evaluate = runtime.ruleset.evaluate

        def failing(lines: Any, *args: Any) -> Any:
            threads.append(threading.current_thread().name)
            if any("BOOM" in line for line in lines):
                raise RuntimeError("injected rule failure")
            return evaluate(lines, *args)

        monkeypatch.setattr(runtime.ruleset, "evaluate", failing)
        loop_thread = threading.current_thread().name

        def append(text: str) -> None:
            with app.open("a") as fh:
                fh.write(text)

        append("ERROR timeout on orders id=1\n")
        await wait_until(lambda: len(events()) == 1, 10, "the first event")
        append("BOOM a short batch\n")
        await wait_until(lambda: dropped() == 1, 10, "the short failing batch counted")
        assert threads[-1] == loop_thread, "a batch of one line is matched on the event loop"
        append("ERROR timeout on orders id=2\n")
        await wait_until(lambda: len(events()) == 2, 10, "an event after the failing batch")
        big = "".join(f"BOOM filler line {i:05d} " + "x" * 80 + "\n" for i in range(200))  # ~20 KiB
        append(big)
        await wait_until(lambda: dropped() == 201, 10, "the big failing batch counted")
        assert threads[-1] != loop_thread, "a chunk over 8 KiB is matched in a worker thread"
        append("ERROR timeout on orders id=3\n")
        await wait_until(lambda: len(events()) == 3, 10, "an event after the failing chunk")
    finally:
        await agent.shutdown()
    assert [e["labels"]["id"] for e in events()] == ["1", "2", "3"]
