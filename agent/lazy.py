"""Modules imported on first use (``importlib.util.LazyLoader``).

An idle agent pays RSS for every module it imports. aiohttp (~10 MiB) is needed only once an event is sent
or an http check runs, psutil only by resource checks, re2 only when hyperscan is unusable.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
import threading
from types import ModuleType

_lazy: set[str] = set()
"""Modules :func:`lazy_import` deferred."""
_loaded: set[str] = set()
"""Deferred modules whose import :func:`ensure_loaded` completed."""
_loading: dict[str, asyncio.Future[str]] = {}
_load_lock = threading.Lock()


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
    _lazy.add(name)
    return module


async def ensure_loaded(name: str) -> None:
    """Run the deferred import of ``name`` in a worker thread, once, and wait for it; code on the event loop
    that uses a lazy module awaits this first.

    Importing aiohttp takes ~0.2 s (its default TLS context included): done by the first attribute read on the
    event loop, it stalled every source's pipeline for that long. Concurrent callers share one import, and
    nobody reads an attribute before it has finished: Python 3.11's LazyLoader makes the module look loaded
    as soon as an import *starts* (a second reader then got "module 'aiohttp' has no attribute ...")."""
    if name in _loaded or (name not in _lazy and name in sys.modules):  # done, or imported the ordinary way
        return
    loop = asyncio.get_running_loop()
    loading = _loading.get(name)
    if loading is None or (loading.get_loop() is not loop and not loading.done()):
        loading = _loading[name] = asyncio.ensure_future(asyncio.to_thread(_load, name))
    await asyncio.shield(loading)


def _load(name: str) -> str:
    with _load_lock:  # one import per module even across event loops
        if name not in _loaded:
            importlib.import_module(name).__name__  # noqa: B018 (a lazy module's first attribute read runs its import)
            _loaded.add(name)
    return name
