"""Modules imported on first use (``importlib.util.LazyLoader``).

An idle agent pays RSS for every module it imports. aiohttp (~10 MiB) is needed only once an event is sent
or an http check runs, psutil only by resource checks, re2 only when hyperscan is unusable.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from types import ModuleType

_loading: dict[str, asyncio.Future[str]] = {}


def lazy_import(name: str) -> ModuleType:
    """A module object that imports ``name`` when an attribute is first read. Raises ImportError now if the
    module is not installed at all, so a missing dependency still fails at startup."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"No module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


async def ensure_loaded(name: str) -> None:
    """Run the deferred import of ``name`` in a worker thread, once, and wait for it.

    Importing aiohttp takes ~0.2 s (its default TLS context included). Done by the first attribute read on the
    event loop, it stalled every source's pipeline for that long when the first event went out (a tenth of a
    200 MiB scan's time, and the first alert's latency). Concurrent callers share one import."""
    module = sys.modules.get(name)
    if module is not None and type(module) is ModuleType:  # LazyLoader turns the module into a plain one
        return
    loop = asyncio.get_running_loop()
    loading = _loading.get(name)
    if loading is None or loading.get_loop() is not loop:
        loading = _loading[name] = asyncio.ensure_future(asyncio.to_thread(_load, name))
    await asyncio.shield(loading)


def _load(name: str) -> str:
    return importlib.import_module(name).__name__  # a lazy module's first attribute read runs its import
