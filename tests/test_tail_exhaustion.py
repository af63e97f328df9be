"""Out of descriptors (slow clients, a leak elsewhere, a low ``ulimit -n``): the file source can then neither
list directories nor open files. It must wait and carry on, never take "cannot look" for "gone": forgetting a
stream's position made it read its files again from 0 once descriptors were back (old alerts sent again)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT
from tests.tail_helpers import append, make_lines, wait_until

CHILD = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys
    sys.path.insert(0, {root!r})
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    import structlog
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout carries the protocol
    from agent.tail import FileSource, TailConfig

    async def main():
        cfg = TailConfig(name="fd", paths=[{pattern!r}], start_at="beginning", poll_interval=0.1,
                         rescan_interval=0.2, rotate_wait=0.2)
        source = FileSource(cfg, {{}}, is_first_start=True)
        queue = asyncio.Queue(maxsize=8)
        task = asyncio.create_task(source.run(queue))
        hogged = []
        control = os.open({control!r}, os.O_RDONLY)  # opened now: reading it later needs no new descriptor
        while True:
            try:
                batch = await asyncio.wait_for(queue.get(), 0.05)
                for line in batch.lines:
                    print(json.dumps({{"line": line}}), flush=True)
                if batch.finished:
                    print(json.dumps({{"finished": batch.path}}), flush=True)
            except asyncio.TimeoutError:
                pass
            order = os.pread(control, 64, 0).decode().strip()
            if order == "hog" and not hogged:
                try:
                    while True:
                        hogged.append(os.open("/dev/null", os.O_RDONLY))
                except OSError:
                    print(json.dumps({{"hogged": len(hogged)}}), flush=True)
            elif order == "release" and hogged:
                for fd in hogged:
                    os.close(fd)
                hogged = []
                print(json.dumps({{"released": True}}), flush=True)
            elif order == "stop":
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.close(None)

    asyncio.run(main())
    """
)


async def test_no_descriptors_for_a_while_loses_no_position(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    control = tmp_path / "control"
    for name in ("a", "b", "c"):
        append(logs / f"{name}.log", make_lines(name.upper(), 0, 5))
    control.write_text("run    ")
    script = CHILD.format(root=str(ROOT), pattern=str(logs / "*.log"), control=str(control))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, text=True)
    lines: list[str] = []
    events: list[dict[str, object]] = []

    async def pump() -> None:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        while raw := await loop.run_in_executor(None, proc.stdout.readline):
            message = json.loads(raw)
            if "line" in message:
                lines.append(str(message["line"]))
            else:
                events.append(message)

    reader = asyncio.create_task(pump())
    try:
        await wait_until(lambda: len(lines) == 15, 15, "the first lines")
        control.write_text("hog    ")
        await wait_until(lambda: any("hogged" in e for e in events), 10, "descriptors exhausted")
        for name in ("a", "b", "c"):  # written while the source cannot list or open anything
            append(logs / f"{name}.log", make_lines(name.upper(), 5, 5))
        append(logs / "d.log", make_lines("D", 0, 5))  # a new file in the listing it cannot make
        await asyncio.sleep(1.5)  # several rescans, and rotate_wait, pass without descriptors
        control.write_text("release")
        await wait_until(lambda: any("released" in e for e in events), 10, "descriptors back")
        await wait_until(lambda: len(lines) >= 35, 15, "everything after the shortage")
        await asyncio.sleep(1.0)  # room for a wrong re-read from 0 to show
        expected = [*make_lines("A", 0, 10), *make_lines("B", 0, 10), *make_lines("C", 0, 10), *make_lines("D", 0, 5)]
        assert sorted(lines) == sorted(expected), f"{len(lines)} lines, {len(set(lines))} distinct"
        assert not any("finished" in e for e in events), f"a stream was given up: {events}"
    finally:
        control.write_text("stop   ")
        try:
            proc.wait(15)
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.cancel()
