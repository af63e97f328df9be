"""Python's own regex parser and compiler (``re._parser``, ``re._compiler``, ``_sre``), imported in one place.

Why private internals: the fast engines must never be fed the user's pattern text (their dialects differ
from Python's), so the pattern is parsed with Python's parser and re-emitted (``translate``), and character
classes are measured by Python's own engine (``charsets``). These modules are private and a future Python
could move them: any surprise makes the fast engines unavailable (``MISSING`` says why) or sends a single
pattern to plain ``re`` (``Untranslatable``), never an error for the user.
"""

from __future__ import annotations

from typing import Any

core: Any  # _sre: case-folding helpers of the C engine
compiler: Any  # re._compiler: compile a parse tree
constants: Any  # re._constants: opcodes of the parse tree
parser: Any  # re._parser: pattern text -> parse tree; None when these internals are not importable

try:
    import _sre as core
    from re import _compiler as compiler
    from re import _constants as constants
    from re import _parser as parser
except Exception as exc:  # pragma: no cover - a future Python could move these
    core = compiler = constants = parser = None
    MISSING = f"{type(exc).__name__}: {exc}"
else:
    MISSING = ""


class Untranslatable(Exception):
    """The parse tree holds something the translator does not know: that pattern runs with plain re."""
