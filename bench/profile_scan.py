"""Profile the agent during the scan: py-spy (sampling, non-blocking, all threads) launches the agent, and the
collapsed stacks are summarised here: self time by function, inclusive time by function, time by thread role.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from common import OUT, ROOT, fresh_dir, log
from logdata import LogInfo
from scan import run_agent

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")

IDLE_LEAVES = ("EpollSelector.select", "thread.py:_worker", "Condition.wait", "_check_inotify_fd", "Event.wait")
STARTUP = ("importlib", "HyperscanEngine.build", "CharsetOracle", "load_config", "MultiMatcher.__init__",
           "Agent.start (")
ROLES = [  # first match wins, searched in the whole stack
    ("aiohttp trust_env lookups per request (default executor: env proxies, ~/.netrc)",
     ("get_env_proxy_for_url", "_get_netrc_auth")),
    ("sender (event loop: OutputSender)", ("agent/sender/",)),
    ("outbox thread (SQLite)", ("apply_sync", "agent/outbox/")),
    ("matcher (to_thread: RuleSet.evaluate)", ("evaluate (agent/rules/",)),
    ("tailer thread (read/split)", ("cycle (agent/tail/core.py",)),
    ("event loop", ("run_forever", "_run_once")),
    # uvloop runs the loop in C: its epoll waits, socket I/O and callback dispatch show as the Runner frame
    ("event loop inside uvloop (C: epoll waits, socket I/O, dispatch; not separable)", ("Runner.run (",)),
]


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3."):
        if marker in file:
            return file.split(marker, 1)[1].split("/", 1)[-1] if marker != "site-packages/" else file.split(marker)[1]
    root = str(ROOT) + "/"
    return file[len(root):] if file.startswith(root) else file


def _name(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    return f"{_short(m.group('file'))}:{m.group('func')}"


def summarise(raw: Path, top: int = 25) -> dict[str, Any]:
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    total = cpu = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f and not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        total += count
        names = [_name(f) for f in frames]
        if any(n in names[-1] for n in IDLE_LEAVES):
            roles["waiting (epoll, executor queue, condition; not CPU)"] += count
            continue
        cpu += count
        self_t[names[-1]] += count
        for name in set(names):
            incl[name] += count
        if any(n in stack for n in STARTUP):
            roles["startup (imports, config, hyperscan compile)"] += count
            continue
        for role, needles in ROLES:
            if any(n in stack for n in needles):
                roles[role] += count
                break
        else:
            roles["other threads (watchdog, executor idle...)"] += count
    return {"total": total, "cpu": cpu, "self": self_t.most_common(top), "incl": incl.most_common(300),
            "roles": roles.most_common()}


def profile_scan(info: LogInfo, timeout: float, few_alerts: bool = False,
                 name: str = "scan") -> dict[str, Any] | None:
    exe = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not Path(exe).exists():
        log("profile skipped: py-spy not installed (.venv/bin/pip install py-spy)")
        return None
    wd = OUT / "profile"
    wd.mkdir(parents=True, exist_ok=True)
    raw = wd / f"{name}.collapsed"
    prefix = [exe, "record", "--nonblocking", "--threads", "--rate", "250", "--format", "raw", "--output", str(raw),
              "--"]
    run = run_agent(info, wd / name, timeout, prefix=prefix, few_alerts=few_alerts)
    log(f"profiled scan run: {run}")
    if not raw.exists():
        log("py-spy wrote no profile")
        return None
    summary = summarise(raw)
    summary["run"] = run
    summary["raw"] = str(raw.relative_to(ROOT))
    return summary


def profile_drain(events: int, seconds: float) -> dict[str, Any] | None:
    """Sample the agent for ``seconds`` while it drains a backlog of ``events`` (section 4's setup)."""
    from backlog import UNPACED, _one

    exe = ROOT / ".venv" / "bin" / "py-spy"
    if not exe.exists():
        return None
    wd = fresh_dir(OUT / "profile-drain")
    raw = wd / "drain.collapsed"
    res = _one(wd / "run", events, 120 + events / 1000, seconds, profile=raw, rate=UNPACED)
    log(f"profiled drain: {res}")
    if not raw.exists():
        return None
    summary = summarise(raw)
    summary["backlog"] = res
    summary["raw"] = str(raw.relative_to(ROOT))
    return summary
