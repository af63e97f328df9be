"""Modules imported on first use (``importlib.util.LazyLoader``).

An idle agent pays RSS for every module it imports. aiohttp (~10 MiB) is needed only once an event is sent
or an http check runs, psutil only by resource checks, re2 only when hyperscan is unusable.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


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
