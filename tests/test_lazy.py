"""agent/lazy.py: a deferred import runs once, in a worker thread, and nobody reads the module before it has
finished (Python 3.11's LazyLoader makes a module look loaded as soon as its import *starts*: the sender read
``aiohttp.TCPConnector`` while the background import was still running and every first event failed)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.lazy import ensure_loaded, lazy_import


async def test_a_second_caller_waits_for_an_import_in_progress(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    started = tmp_path / "started"
    (tmp_path / "dutytail_slow_module.py").write_text(
        "import pathlib, threading, time\n"
        f"pathlib.Path({str(started)!r}).write_text(threading.current_thread().name)\n"
        "time.sleep(0.5)\n"
        "DONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dutytail_slow_module", raising=False)
    module = lazy_import("dutytail_slow_module")
    first = asyncio.create_task(ensure_loaded("dutytail_slow_module"))
    deadline = time.monotonic() + 10
    while not started.exists():  # the import is under way in its thread
        assert time.monotonic() < deadline, "the import never started"
        await asyncio.sleep(0.01)
    await ensure_loaded("dutytail_slow_module")
    assert module.DONE is True, "the second caller returned before the import finished"
    await first
    assert started.read_text() != threading.current_thread().name, "imported on the event loop's thread"
    await ensure_loaded("dutytail_slow_module")  # once done, at once
    sys.modules.pop("dutytail_slow_module", None)
