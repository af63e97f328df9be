"""Patterns that can take exponential time (``(a+)+$``, ``(x|x)*y``, backreferences) are confirmed in a child
process with a per-line time budget, so one rule's regex can never stop the agent.

Python's ``re`` cannot be interrupted: ``(a+)+(?=z)`` against 29 ``a`` took 35 s, every extra ``a`` doubles
it, and for that time the whole agent (``/healthz`` and systemd's watchdog included) stood still. A pattern
whose parse tree shows the shapes that backtrack catastrophically runs its ``re.search`` in a small child
process instead (the same ``re``, so the same answer); a line that takes longer than ``LINE_BUDGET`` is
abandoned (the child is killed and restarted), counted per pattern and logged. Every other pattern runs in
process as before.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import structlog

from agent.match import sre

log = structlog.get_logger(__name__)

LINE_BUDGET = 0.25
"""Seconds one risky pattern may spend on one line."""
STARTUP_ALLOWANCE = 5.0
"""Extra seconds for the first answer of a (re)started child (a Python start on a loaded host)."""
_HEADER = struct.Struct("!I")

WORKER = r"""
import ctypes, os, pickle, re, signal, struct, sys
# Die with the agent: a line that backtracks for days keeps this process in C code, where it never sees its
# stdin close; killed without a clean stop (SIGKILL, a crash, outside systemd's cgroup) the agent left it
# spinning on a core. PR_SET_PDEATHSIG (1) fires when the thread that started it ends: the agent's matcher
# threads live as long as the agent.
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):  # the agent died before the prctl
    sys.exit(0)
header = struct.Struct("!I")
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
def recv():
    size = stdin.read(4)
    if len(size) < 4:
        sys.exit(0)
    return pickle.loads(stdin.read(header.unpack(size)[0]))
compiled = [re.compile(p) for p in recv()]
while True:
    index, line = recv()
    m = compiled[index].search(line)
    spans = [m.span(g) for g in range(1, len(m.groups()) + 1)] if m is not None else []
    answer = None if m is None else [m.span(), m.groups(), m.groupdict(), spans]
    data = pickle.dumps(answer)
    stdout.write(header.pack(len(data)) + data)
    stdout.flush()
"""


def risk(pattern: str) -> str:
    """Why ``pattern`` may backtrack catastrophically ("" when its shape cannot): a quantifier over something
    that can match in several ways (another unbounded quantifier, an alternation), a backreference, or three
    unbounded quantifiers in a row. A superset: a flagged pattern is only run more carefully, never refused."""
    if sre.parser is None:
        return ""
    try:
        parsed = sre.parser.parse(pattern, 0)
    except Exception:
        return ""
    return _walk(list(parsed), inside=False)


def _walk(items: list[tuple[Any, Any]], *, inside: bool) -> str:
    c = sre.constants
    unbounded_in_row = 0
    for op, av in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            _low, high, sub = av
            unbounded = high == c.MAXREPEAT
            if inside and unbounded:
                return "a quantifier inside a quantifier"
            unbounded_in_row = unbounded_in_row + 1 if unbounded else 0
            if unbounded_in_row >= 3:
                return "three unbounded quantifiers in a row"
            why = _walk(list(sub), inside=inside or high > 1)
            if why:
                return why
            continue
        unbounded_in_row = 0 if op not in (c.LITERAL, c.IN, c.ANY, c.NOT_LITERAL) else unbounded_in_row
        if op == c.SUBPATTERN:
            why = _walk(list(av[-1]), inside=inside)
        elif op == c.BRANCH:
            if inside:
                return "an alternation inside a quantifier"
            why = next((w for w in (_walk(list(b), inside=inside) for b in av[1]) if w), "")
        elif op in (c.ASSERT, c.ASSERT_NOT):
            why = _walk(list(av[1]), inside=inside)
        elif op in (c.GROUPREF, c.GROUPREF_EXISTS):
            why = "a backreference"
        else:
            why = ""
        if why:
            return why
    return ""


class GuardedMatch:
    """What a confirmation in the child returns, with the parts of ``re.Match`` the agent uses."""

    __slots__ = ("_groupdict", "_groups", "_span", "_spans", "string")

    def __init__(self, string: str, answer: list[Any]) -> None:
        self.string = string
        self._span, self._groups, self._groupdict, self._spans = answer

    def group(self, index: int | str = 0) -> str | None:
        if index == 0:
            return self.string[self._span[0]:self._span[1]]
        if isinstance(index, str):
            return self._groupdict[index]  # type: ignore[no-any-return]
        return self._groups[index - 1]  # type: ignore[no-any-return]

    def groups(self) -> tuple[str | None, ...]:
        return tuple(self._groups)

    def groupdict(self) -> dict[str, str | None]:
        return dict(self._groupdict)

    def span(self, index: int = 0) -> tuple[int, int]:
        return tuple(self._span if index == 0 else self._spans[index - 1])  # type: ignore[return-value]

    def start(self, index: int = 0) -> int:
        return self.span(index)[0]

    def end(self, index: int = 0) -> int:
        return self.span(index)[1]


class Guard:
    """One child process confirming the risky patterns of one matcher; thread-safe (one call at a time)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = list(patterns)
        self.abandoned: dict[int, int] = {}
        """Lines given up, by pattern index."""
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._fresh = False
        self._logged: dict[int, float] = {}

    def search(self, index: int, line: str) -> GuardedMatch | None:
        with self._lock:
            child = self._child or self._start()
            assert child.stdin is not None and child.stdout is not None
            data = pickle.dumps((index, line))
            try:
                child.stdin.write(_HEADER.pack(len(data)) + data)
                child.stdin.flush()
                answer = self._answer(child)
            except (OSError, EOFError, pickle.UnpicklingError, TimeoutError):
                self._give_up(index, line)
                return None
        return None if answer is None else GuardedMatch(line, answer)

    def _answer(self, child: subprocess.Popen[bytes]) -> Any:
        assert child.stdout is not None
        deadline = time.monotonic() + LINE_BUDGET + (STARTUP_ALLOWANCE if self._fresh else 0.0)
        self._fresh = False
        out = child.stdout.fileno()  # raw reads only: the buffered reader is never used
        size = _HEADER.unpack(_read(out, _HEADER.size, deadline))[0]
        return pickle.loads(_read(out, size, deadline))

    def _start(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-I", "-c", WORKER, str(os.getpid())], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
                                 start_new_session=True)
        assert child.stdin is not None
        data = pickle.dumps(self.patterns)
        child.stdin.write(_HEADER.pack(len(data)) + data)
        child.stdin.flush()
        self._child = child
        self._fresh = True
        return child

    def _give_up(self, index: int, line: str) -> None:
        self.abandoned[index] = self.abandoned.get(index, 0) + 1
        self.close()
        now = time.monotonic()
        if now - self._logged.get(index, 0.0) >= 60:
            self._logged[index] = now
            log.warning("regex_line_abandoned", pattern=self.patterns[index], budget_s=LINE_BUDGET,
                        line_start=line[:120], abandoned=self.abandoned[index],
                        note="the pattern backtracks catastrophically on this line; rewrite it (atomic groups, "
                             "possessive quantifiers) or narrow it")

    def close(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        if child is not None:
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass

    def __del__(self) -> None:
        self.close()


def _read(fd: int, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
