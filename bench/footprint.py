"""Footprint (issue 18): what the idle agent's memory is made of, and what it costs at rest.

    .venv/bin/python bench/footprint.py                           # everything, on config.example.yaml
    .venv/bin/python bench/footprint.py --parts idle --runs 3     # only the before/after row
    .venv/bin/python bench/footprint.py --workload idle --parts idle,breakdown   # bench/idle.py's 2,000 files
    .venv/bin/python bench/footprint.py --agent-root BASE_DIR    # measure another checkout's agent/
    .venv/bin/python bench/footprint.py --parts idle --env MALLOC_ARENA_MAX=2 --stack-kib 256   # levers

Parts (``--parts``, comma list):

- ``imports``: each heavy module imported alone in a fresh interpreter (the venv's python, ``site`` on):
  VmRSS after the import, and how much of the growth is anonymous memory vs file-backed pages (shared
  library code and data that was touched), from /proc/self/status (RssAnon, RssFile).
- ``idle``: the agent as a user runs it (``python -m agent run -c CONFIG``), ``--settle`` seconds after
  /readyz, then CPU over ``--window`` seconds; VmRSS, VmHWM, smaps_rollup Anonymous vs file-backed,
  threads, descriptors, seconds to /readyz. The first start over an empty state directory, then a restart
  over the same one (the compiled-rules cache and the store exist). ``--env KEY=VALUE`` sets the agent's
  environment (``MALLOC_ARENA_MAX=2``, ``DUTYTAIL_EVENT_LOOP=asyncio``); ``--stack-kib N`` starts it through
  the bootstrap below with ``threading.stack_size(N KiB)`` (the bootstrap's SIGUSR2 handler stays unused).
- ``breakdown``: the agent once more, started through a bootstrap that (a) counts what every module's
  import adds to RSS on its own (children excluded), in the agent's real import order, and (b) on SIGUSR2,
  after settling, reports its modules, threads, glibc malloc (``mallinfo2``, ``malloc_info``) and pymalloc
  (``sys._debugmallocstats``); from outside: the mappings holding RSS, each thread's touched stack (its
  stack pointer from /proc/PID/task/TID/syscall located in /proc/PID/smaps). Then a second run under
  ``PYTHONTRACEMALLOC=1``: the Python allocations alive at idle, by file and by package (tracemalloc
  traces Python's allocators only: hyperscan's database, SQLite's page cache, OpenSSL are outside it).

Workloads (``--workload``): ``example``, a scratch copy of config.example.yaml and demo/ (dry run: events
go to stdout; the health port is moved to a free one so it cannot collide with another agent on the
machine); ``idle``, the config of bench/idle.py (2,000 idle files under one glob, 20 checks: 10 file_age,
10 tcp to a local listener; push URL to a port where nothing listens, so nothing is sent).

Measurements share the machine: run one benchmark at a time. Scratch: bench/out/footprint/.
Prints markdown; raw numbers go to bench/out/footprint.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    OUT,
    PY,
    ROOT,
    agent_config,
    cpu_seconds,
    fmt_mmm,
    free_port,
    fresh_dir,
    http_get,
    log,
    open_fds,
    stop_process,
)

MIB = 1024 * 1024

IMPORTS = [
    ("python itself (`-c pass`)", []),
    ("msgspec (the config models' library)", ["msgspec"]),
    ("prometheus_client", ["prometheus_client"]),
    ("aiohttp", ["aiohttp"]),
    ("yarl", ["yarl"]),
    ("multidict", ["multidict"]),
    ("structlog", ["structlog"]),
    ("yaml (PyYAML)", ["yaml"]),
    ("orjson", ["orjson"]),
    ("watchdog.observers", ["watchdog.observers"]),
    ("hyperscan", ["hyperscan"]),
    ("re2", ["re2"]),
    ("zstandard", ["zstandard"]),
    ("lzma + bz2 + gzip", ["lzma", "bz2", "gzip"]),
    ("uvloop", ["uvloop"]),
    ("asyncio", ["asyncio"]),
    ("sqlite3", ["sqlite3"]),
    ("h11", ["h11"]),
    ("psutil", ["psutil"]),
    ("ssl", ["ssl"]),
    ("hashlib (OpenSSL's libcrypto)", ["hashlib"]),
    ("hmac", ["hmac"]),
    ("urllib.request (http.client, ssl, email)", ["urllib.request"]),
    ("email.utils", ["email.utils"]),
    ("concurrent.futures", ["concurrent.futures"]),
    ("logging", ["logging"]),
    ("ctypes", ["ctypes"]),
    ("agent.config (validates a config: msgspec, yaml, every stage's model)", ["agent.config"]),
    ("agent.cli", ["agent.cli"]),
    ("agent.cli + agent.app (what `dutytail run` imports before it starts)", ["agent.cli", "agent.app"]),
]

_IMPORT_PROBE = r"""
import importlib, json, sys
def mem():
    d = {}
    for line in open('/proc/self/status'):
        k, _, v = line.partition(':')
        if k in ('VmRSS', 'RssAnon', 'RssFile'):
            d[k] = int(v.split()[0])
    return d
before, n = mem(), len(sys.modules)
for name in sys.argv[1:]:
    importlib.import_module(name)
after = mem()
print(json.dumps({'before': before, 'after': after, 'modules': len(sys.modules) - n}))
"""

# The bootstrap of the ``breakdown`` runs: an import hook that charges each module with the RSS its own
# import added (its children's excluded), and a SIGUSR2 handler that writes what only the process can see.
_BOOTSTRAP = r"""
import os, sys, signal, json, time
_DUMP = os.environ['FOOTPRINT_DUMP']
_PAGE = os.sysconf('SC_PAGE_SIZE')

def _statm():
    with open('/proc/self/statm') as fh:
        f = fh.read().split()
    return int(f[1]) * _PAGE, (int(f[1]) - int(f[2])) * _PAGE   # resident, anonymous (resident - shared)

_cost = {}      # module -> [rss bytes, anon bytes] added by its own import (children excluded)
_order = []
_stack = []     # [name, rss at start, anon at start, children rss, children anon]

def _charge(name, rss, anon):
    c = _cost.setdefault(name, [0, 0])
    if name not in _order:
        _order.append(name)
    c[0] += rss
    c[1] += anon

class _Timed:
    def __init__(self, inner, name):
        self._inner, self._name = inner, name
    def __getattr__(self, attr):
        return getattr(self._inner, attr)
    def create_module(self, spec):
        r0, a0 = _statm()
        create = getattr(self._inner, 'create_module', None)
        module = create(spec) if create is not None else None
        r1, a1 = _statm()
        _charge(self._name, r1 - r0, a1 - a0)
        if _stack:
            _stack[-1][3] += r1 - r0
            _stack[-1][4] += a1 - a0
        return module
    def exec_module(self, module):
        r0, a0 = _statm()
        frame = [self._name, r0, a0, 0, 0]
        _stack.append(frame)
        try:
            self._inner.exec_module(module)
        finally:
            _stack.pop()
            r1, a1 = _statm()
            _charge(self._name, (r1 - r0) - frame[3], (a1 - a0) - frame[4])
            if _stack:
                _stack[-1][3] += r1 - r0
                _stack[-1][4] += a1 - a0

class _Finder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        for finder in sys.meta_path:
            if finder is _Finder:
                continue
            find = getattr(finder, 'find_spec', None)
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
                    spec.loader = _Timed(spec.loader, name)
                return spec
        return None

if os.environ.get('FOOTPRINT_IMPORTS'):
    sys.meta_path.insert(0, _Finder)

def _dump(signum, frame):
    import ctypes, gc, threading
    out = {'imports': {k: _cost[k] for k in _order}}
    mods = {}
    for name in list(sys.modules):
        top = name.split('.')[0]
        if top == 'agent' and name.count('.') >= 1:
            top = '.'.join(name.split('.')[:2])
        mods[top] = mods.get(top, 0) + 1
    out['modules'] = mods
    out['module_count'] = len(sys.modules)
    out['module_names'] = sorted(sys.modules)
    out['threads'] = [{'name': t.name, 'native_id': t.native_id, 'daemon': t.daemon} for t in threading.enumerate()]
    out['gc_objects'] = len(gc.get_objects())
    try:
        libc = ctypes.CDLL('libc.so.6')
        class MI2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks',
                                                         'fsmblks', 'uordblks', 'fordblks', 'keepcost')]
        libc.mallinfo2.restype = MI2
        mi = libc.mallinfo2()
        out['mallinfo2'] = {n: getattr(mi, n) for n, _ in MI2._fields_}
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        path = _DUMP + '.malloc.xml'
        fp = libc.fopen(path.encode(), b'w')
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        out['malloc_info'] = open(path).read()
    except (OSError, AttributeError) as exc:
        out['malloc_error'] = str(exc)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(_DUMP + '.pymalloc', 'w') as fh:
        os.dup2(fh.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    out['pymalloc'] = open(_DUMP + '.pymalloc').read()
    import tracemalloc
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        out['tracemalloc'] = {'current': current, 'peak': peak,
                              'by_file': [(s.traceback[0].filename, s.size, s.count)
                                          for s in snap.statistics('filename')]}
    with open(_DUMP + '.tmp', 'w') as fh:
        json.dump(out, fh)
    os.replace(_DUMP + '.tmp', _DUMP)

signal.signal(signal.SIGUSR2, _dump)
if os.environ.get('FOOTPRINT_STACK_KIB'):
    import threading
    threading.stack_size(int(os.environ['FOOTPRINT_STACK_KIB']) * 1024)
sys.argv = ['dutytail', *sys.argv[1:]]
from agent.cli import main
sys.exit(main())
"""


# ------------------------------------------------------------------------------------------------ workloads


class Workload:
    """A config to run the agent on, in its own scratch directory; ``close()`` stops what it started."""

    def __init__(self, kind: str, root: Path, example_from: Path) -> None:
        self.kind = kind
        self.dir = fresh_dir(root / kind)
        self.health_port = free_port()
        self._listener: Any = None
        if kind == "example":
            shutil.copy(example_from / "config.example.yaml", self.dir / "config.yaml")
            shutil.copytree(example_from / "demo", self.dir / "demo")
            text = (self.dir / "config.yaml").read_text()
            text, n = re.subn(r"listen: 127\.0\.0\.1:\d+", f"listen: 127.0.0.1:{self.health_port}", text)
            assert n == 1, "config.example.yaml: health.listen not found"
            (self.dir / "config.yaml").write_text(text)
        elif kind == "idle":
            self._idle_config()
        else:
            raise ValueError(kind)
        self.config = self.dir / "config.yaml"
        os.chmod(self.config, 0o600)

    def _idle_config(self) -> None:
        """bench/idle.py's ``_one`` config (2,000 files, 20 checks)."""
        from idle import _Listener, write_workload
        from logdata import rules_yaml

        logdir = self.dir / "logs"
        self._listener = _Listener()
        checks_yaml = write_workload(logdir, 2000, self._listener.port)
        logs = f"logs:\n  - name: services\n    paths: [{logdir}/*.log]\n    rules:\n{rules_yaml()}"
        (self.dir / "config.yaml").write_text(agent_config(
            state_dir=self.dir / "state", health_port=self.health_port, push_port=free_port(), logs_yaml=logs,
            checks_yaml=checks_yaml, max_per_second=100, max_per_minute=1000,
            outbox="max_bytes: 256MiB", resolve_after="10m"))

    def reset_state(self) -> None:
        for name in ("state",):
            shutil.rmtree(self.dir / name, ignore_errors=True)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()


class Running:
    def __init__(self, workload: Workload, agent_root: Path, *, bootstrap: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.workload = workload
        self.dump = workload.dir / "footprint-dump.json"
        with contextlib.suppress(FileNotFoundError):
            self.dump.unlink()
        full_env = dict(os.environ, PYTHONPATH=str(agent_root), FOOTPRINT_DUMP=str(self.dump), **(env or {}))
        cmd = [PY, "-c", _BOOTSTRAP] if bootstrap else [PY, "-m", "agent"]
        self.out = open(workload.dir / "events.jsonl", "ab")
        self.err = open(workload.dir / "agent.log", "ab")
        self.started = time.time()
        self.proc = subprocess.Popen([*cmd, "run", "-c", str(workload.config)], cwd=workload.dir, env=full_env,
                                     stdout=self.out, stderr=self.err)
        self.health = f"http://127.0.0.1:{workload.health_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 90.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}: see {self.workload.dir}/agent.log")
            if http_get(self.health + "/readyz", 1.0)[0] == 200:
                return time.time() - self.started
            time.sleep(0.02)
        raise RuntimeError("agent not ready in time")

    def ask_dump(self, timeout: float = 30.0) -> dict[str, Any]:
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dump.exists():
                return json.loads(self.dump.read_text())
            time.sleep(0.05)
        raise RuntimeError("no dump from the agent")

    def stop(self) -> None:
        stop_process(self.proc, 30)
        self.out.close()
        self.err.close()


# ------------------------------------------------------------------------------------------------ /proc


def smaps_rollup(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0])
    return out


def status_all(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            parts = value.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0])
    return out


def mappings(pid: int) -> list[dict[str, Any]]:
    """Each mapping of /proc/PID/smaps: start, end, name, Rss/Anonymous in KiB."""
    maps: list[dict[str, Any]] = []
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+$", head[0]):
                start, end = (int(x, 16) for x in head[0].split("-"))
                maps.append({"start": start, "end": end, "name": head[5] if len(head) > 5 else "",
                             "perms": head[1], "Rss": 0, "Anonymous": 0})
            elif head[0] in ("Rss:", "Anonymous:"):
                maps[-1][head[0][:-1]] = int(head[1])
    return maps


def thread_stacks(pid: int, maps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each thread's name and the RSS of the mapping its stack pointer is in (its touched stack)."""
    out = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        base = f"/proc/{pid}/task/{tid}"
        try:
            comm = open(f"{base}/comm").read().strip()
            syscall = open(f"{base}/syscall").read().split()
        except OSError:
            continue
        sp = int(syscall[7], 16) if len(syscall) >= 9 else None
        where = next((m for m in maps if sp is not None and m["start"] <= sp < m["end"]), None)
        out.append({"tid": tid, "comm": comm, "stack_rss_kib": where["Rss"] if where else None,
                    "stack_size_kib": (where["end"] - where["start"]) // 1024 if where else None,
                    "mapping": where["name"] if where else "",
                    "range": (where["start"], where["end"]) if where else None})
    return out


def group_mappings(maps: list[dict[str, Any]], stack_ranges: set[tuple[int, int]]) -> list[tuple[str, int, int]]:
    """(what, Rss KiB, of which anonymous KiB): shared objects by file, the heap, thread stacks, other anon."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for m in maps:
        if (m["start"], m["end"]) in stack_ranges or m["name"] == "[stack]":
            key = "thread stacks (touched)"
        elif m["name"] == "[heap]":
            key = "[heap] (brk: glibc main arena)"
        elif not m["name"]:
            key = "anonymous mmaps (pymalloc arenas, glibc thread arenas, large blocks, libraries' buffers)"
        elif m["name"].startswith("["):
            key = m["name"]
        else:
            key = m["name"].replace(str(ROOT) + "/", "")
            key = re.sub(r".*/site-packages/", "site-packages/", key)
        groups[key][0] += m["Rss"]
        groups[key][1] += m["Anonymous"]
    return sorted(((k, v[0], v[1]) for k, v in groups.items()), key=lambda t: -t[1])


# ------------------------------------------------------------------------------------------------ parts


def part_imports(agent_root: Path) -> tuple[list[str], Any]:
    rows, raw = [], []
    env = dict(os.environ, PYTHONPATH=str(agent_root))
    for label, names in IMPORTS:
        res = subprocess.run([PY, "-c", _IMPORT_PROBE, *names], capture_output=True, text=True, cwd="/", env=env,
                             timeout=120)
        if res.returncode != 0:
            rows.append(f"| {label} | - | - | - | - | not importable: {res.stderr.strip().splitlines()[-1][:80]} |")
            continue
        d = json.loads(res.stdout)
        b, a = d["before"], d["after"]
        raw.append({"label": label, **d})
        rows.append(f"| {label} | {a['VmRSS'] / 1024:.1f} | {(a['VmRSS'] - b['VmRSS']) / 1024:+.1f} | "
                    f"{(a['RssAnon'] - b['RssAnon']) / 1024:+.1f} | {(a['RssFile'] - b['RssFile']) / 1024:+.1f} | "
                    f"{d['modules']} |")
    out = [
        "### Each module imported alone (fresh interpreter)",
        "",
        "VmRSS after `import X` in a fresh `.venv/bin/python` (site on); Δ against the same interpreter before the "
        "import, split into anonymous memory (objects, code objects, module dicts, C allocations) and file-backed "
        "pages (shared libraries' code and data touched). Modules overlap (structlog and uvloop both pull in "
        "asyncio, aiohttp pulls in ssl, yarl and multidict), so the rows do not add up.",
        "",
        "| import | VmRSS MiB | Δ RSS MiB | Δ anon MiB | Δ file MiB | modules added |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    return out, raw


def _measure_idle(run: Running, settle: float, window: float) -> dict[str, Any]:
    ready = run.wait_ready()
    time.sleep(settle)
    c0, t0 = cpu_seconds(run.pid), time.monotonic()
    time.sleep(window)
    c1, t1 = cpu_seconds(run.pid), time.monotonic()
    st, roll = status_all(run.pid), smaps_rollup(run.pid)
    return {"ready_s": ready, "cpu_pct": (c1 - c0) / (t1 - t0) * 100, "rss": st["VmRSS"] / 1024,
            "hwm": st["VmHWM"] / 1024, "anon": roll.get("Anonymous", 0) / 1024,
            "file": (roll.get("Rss", 0) - roll.get("Anonymous", 0)) / 1024, "pss": roll.get("Pss", 0) / 1024,
            "threads": st.get("Threads", 0),
            "fds": open_fds(run.pid)}


def part_idle(workload: Workload, agent_root: Path, runs: int, settle: float, window: float,
              env: dict[str, str]) -> tuple[list[str], Any]:
    res: dict[str, list[dict[str, Any]]] = {"first start (empty state dir)": [], "restart (same state dir)": []}
    for i in range(runs):
        workload.reset_state()
        for label in res:
            log(f"idle {workload.kind} run {i + 1}/{runs}: {label}")
            run = Running(workload, agent_root, env=env, bootstrap="FOOTPRINT_STACK_KIB" in env)
            try:
                res[label].append(_measure_idle(run, settle, window))
            finally:
                run.stop()
            log(f"  {res[label][-1]}")

    def col(rows: list[dict[str, Any]], key: str, fmt: str = "{:.1f}") -> str:
        return fmt_mmm([r[key] for r in rows], fmt)

    out = [
        f"### The idle agent ({workload.kind}: {describe(workload)})",
        "",
        f"`python -m agent run -c CONFIG`; measured {settle:g} s after /readyz answered 200, CPU over the following "
        f"{window:g} s (Δ utime+stime from /proc/PID/stat), then VmRSS/VmHWM/Threads from /proc/PID/status and "
        "Anonymous vs file-backed (and Pss: file pages shared with other processes counted in part) from "
        "/proc/PID/smaps_rollup. min / median / max over "
        f"{runs} run(s)." + (f" Environment: {' '.join(f'`{k}={v}`' for k, v in env.items())}." if env else ""),
        "",
        "| start | VmRSS MiB | anonymous MiB | file-backed MiB | Pss MiB | VmHWM MiB | threads | open fds | "
        "CPU % of a core | ready after s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rows in res.items():
        out.append(f"| {label} | {col(rows, 'rss')} | {col(rows, 'anon')} | {col(rows, 'file')} | "
                   f"{col(rows, 'pss')} | {col(rows, 'hwm')} | {col(rows, 'threads', '{:.0f}')} | "
                   f"{col(rows, 'fds', '{:.0f}')} | "
                   f"{col(rows, 'cpu_pct', '{:.2f}')} | {col(rows, 'ready_s', '{:.2f}')} |")
    out.append("")
    return out, res


def describe(workload: Workload) -> str:
    if workload.kind == "example":
        return "config.example.yaml and demo/, dry run"
    return "bench/idle.py's 2,000 idle files under one glob and 20 checks"


def _package_of(filename: str) -> str:
    if "/site-packages/" in filename:
        return "site-packages/" + filename.split("/site-packages/")[1].split("/")[0].replace(".py", "")
    if filename.startswith(str(ROOT)) or "/agent/" in filename:
        rest = filename.split("/agent/", 1)[-1]
        parts = rest.split("/")
        return "agent/" + parts[0]
    if filename.startswith("<"):
        return filename
    return "stdlib/" + filename.rsplit("/lib/python3", 1)[-1].split("/", 1)[-1].split("/")[0].replace(".py", "")


def _import_packages(imports: dict[str, list[int]]) -> list[tuple[str, int, int, int]]:
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for name, (rss, anon) in imports.items():
        top = name.split(".")[0]
        if top == "agent" and "." in name:
            top = ".".join(name.split(".")[:2])
        groups[top][0] += rss
        groups[top][1] += anon
        groups[top][2] += 1
    return sorted(((k, *v) for k, v in groups.items()), key=lambda t: -t[1])


def _malloc_info_heaps(xml: str) -> list[dict[str, int]]:
    heaps = []
    for m in re.finditer(r'<heap nr="(\d+)">(.*?)</heap>', xml, re.S):
        body = m.group(2)
        cur = re.search(r'<system type="current" size="(\d+)"/>', body)
        free = re.findall(r'<total type="(fast|rest)" count="\d+" size="(\d+)"/>', body)
        heaps.append({"nr": int(m.group(1)), "current": int(cur.group(1)) if cur else 0,
                      "free": sum(int(s) for _, s in free)})
    return heaps


def part_breakdown(workload: Workload, agent_root: Path, settle: float) -> tuple[list[str], Any]:
    workload.reset_state()
    # one start first, so the breakdown shows the usual case: a restart with the rules cache and store present
    warm = Running(workload, agent_root)
    try:
        warm.wait_ready()
    finally:
        warm.stop()
    log(f"breakdown {workload.kind}: instrumented run (import costs, threads, malloc)")
    run = Running(workload, agent_root, bootstrap=True, env={"FOOTPRINT_IMPORTS": "1"})
    try:
        ready = run.wait_ready()
        time.sleep(settle)
        st, roll = status_all(run.pid), smaps_rollup(run.pid)
        maps = mappings(run.pid)
        stacks = thread_stacks(run.pid, maps)
        dump = run.ask_dump()
    finally:
        run.stop()
    log(f"breakdown {workload.kind}: tracemalloc run")
    traced = Running(workload, agent_root, bootstrap=True, env={"PYTHONTRACEMALLOC": "1"})
    try:
        traced.wait_ready()
        time.sleep(settle)
        tdump = traced.ask_dump()
    finally:
        traced.stop()

    names = {t["native_id"]: t["name"] for t in dump["threads"]}
    stack_ranges = {tuple(s["range"]) for s in stacks if s["range"] is not None}
    groups = group_mappings(maps, stack_ranges)
    small = [g for g in groups if g[1] < 256]
    out = [
        f"### What the idle agent's RSS is made of ({workload.kind}: {describe(workload)}; a restart)",
        "",
        f"Instrumented run (the bootstrap's import hook and SIGUSR2 handler; /readyz after {ready:.2f} s), "
        f"{settle:g} s after ready: VmRSS {st['VmRSS'] / 1024:.1f} MiB (RssAnon {st.get('RssAnon', 0) / 1024:.1f}, "
        f"RssFile {st.get('RssFile', 0) / 1024:.1f}), smaps_rollup Anonymous {roll.get('Anonymous', 0) / 1024:.1f} "
        f"MiB, Pss {roll.get('Pss', 0) / 1024:.1f} MiB, threads {st.get('Threads')}, modules loaded "
        f"{dump['module_count']}, gc-tracked objects {dump['gc_objects']:,}.",
        "",
        "#### Mappings holding RSS (/proc/PID/smaps, ≥ 256 KiB)",
        "",
        "| mapping | RSS MiB | of which anonymous MiB |",
        "|---|---:|---:|",
        *[f"| {k} | {r / 1024:.2f} | {a / 1024:.2f} |" for k, r, a in groups if r >= 256],
        f"| (the rest: {len(small)} smaller mappings) | {sum(g[1] for g in small) / 1024:.2f} | "
        f"{sum(g[2] for g in small) / 1024:.2f} |",
        "",
        "#### Threads and their touched stacks",
        "",
        "Stack pointer from /proc/PID/task/TID/syscall, located in /proc/PID/smaps: the RSS of that mapping is what "
        "the thread has touched of its stack (glibc's default reservation is 8 MiB; only touched pages count).",
        "",
        "| thread | kernel name | stack mapping KiB | touched KiB |",
        "|---|---|---:|---:|",
    ]
    for s in stacks:
        name = names.get(s["tid"], "(not a Python thread)" if s["tid"] != run.pid else "MainThread")
        if s["tid"] == run.pid:
            name = "MainThread (event loop)"
        out.append(f"| {name} | {s['comm']} | {s['stack_size_kib'] or '-'} | {s['stack_rss_kib'] or '-'} |")
    total_stack = sum(s["stack_rss_kib"] or 0 for s in stacks)
    out += [f"| **all {len(stacks)} threads** | | | **{total_stack}** |", ""]

    mi = dump.get("mallinfo2", {})
    heaps = _malloc_info_heaps(dump.get("malloc_info", ""))
    heap_mib = [h["current"] / MIB for h in heaps]
    pym = dump.get("pymalloc", "")
    arenas = re.search(r"# arenas allocated current\s*=\s*([\d,]+)", pym)
    pym_total = re.search(r"^Total\s*=\s*([\d,]+)", pym, re.M)
    out += [
        "#### Allocators",
        "",
        "| allocator | MiB |",
        "|---|---:|",
        f"| glibc `mallinfo2`: main arena (brk) `arena` | {mi.get('arena', 0) / MIB:.2f} |",
        f"| glibc `mallinfo2`: in use `uordblks` | {mi.get('uordblks', 0) / MIB:.2f} |",
        f"| glibc `mallinfo2`: free in arenas `fordblks` (releasable top `keepcost` "
        f"{mi.get('keepcost', 0) / MIB:.2f}) | {mi.get('fordblks', 0) / MIB:.2f} |",
        f"| glibc `mallinfo2`: mmapped blocks `hblkhd` ({mi.get('hblks', 0)} blocks) | "
        f"{mi.get('hblkhd', 0) / MIB:.2f} |",
        f"| glibc `malloc_info`: {len(heaps)} arena(s), system bytes each: "
        f"{', '.join(f'{h_mib:.2f}' for h_mib in heap_mib)} | {sum(heap_mib):.2f} |",
        f"| glibc `malloc_info`: free inside the arenas | {sum(h['free'] for h in heaps) / MIB:.2f} |",
        f"| pymalloc (`sys._debugmallocstats`): {arenas.group(1) if arenas else '?'} arenas of 1 MiB, total "
        f"| {int(pym_total.group(1).replace(',', '')) / MIB if pym_total else float('nan'):.2f} |",
        "",
    ]
    pkgs = _import_packages(dump["imports"])
    total_rss = sum(p[1] for p in pkgs)
    out += [
        "#### What each package's import added to RSS (in the agent's import order, children excluded)",
        "",
        f"Import hook on `sys.meta_path`: RSS (and anonymous part) from /proc/self/statm around each module's "
        f"`create_module` + `exec_module`, minus what the modules it imported added. Sum: {total_rss / MIB:.1f} MiB "
        "of RSS added while importing (heap growth is charged to whichever module crossed the threshold, so small "
        "rows are noisy). Top 30:",
        "",
        "| package | modules | RSS MiB | anonymous MiB |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {count} | {rss / MIB:.2f} | {anon / MIB:.2f} |" for name, rss, anon, count in pkgs[:30]],
        "",
    ]
    tm = tdump.get("tracemalloc")
    if tm:
        by_pkg: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for filename, size, count in tm["by_file"]:
            by_pkg[_package_of(filename)][0] += size
            by_pkg[_package_of(filename)][1] += count
        out += [
            "#### Python allocations alive at idle (tracemalloc, a separate run under PYTHONTRACEMALLOC=1)",
            "",
            f"Traced now {tm['current'] / MIB:.1f} MiB (peak {tm['peak'] / MIB:.1f} MiB). By the file that allocated "
            "(code objects and module dicts are charged to `<frozen importlib._bootstrap_external>` / the module "
            "executing them). By package:",
            "",
            "| package | MiB | blocks |",
            "|---|---:|---:|",
            *[f"| {k} | {v[0] / MIB:.2f} | {v[1]:,} |" for k, v in
              sorted(by_pkg.items(), key=lambda kv: -kv[1][0])[:25]],
            "",
            "Top 20 files:",
            "",
            "| file | KiB | blocks |",
            "|---|---:|---:|",
            *[f"| {f.replace(str(ROOT) + '/', '').split('/site-packages/')[-1]} | {s / 1024:,.0f} | {c:,} |"
              for f, s, c in tm["by_file"][:20]],
            "",
        ]
    mods = sorted(dump["modules"].items(), key=lambda kv: -kv[1])
    out += ["Modules loaded at idle, by package: " + ", ".join(f"{k} {v}" for k, v in mods[:40]) + ".", ""]
    return out, {"status": st, "rollup": roll, "stacks": stacks, "groups": groups, "dump": dump,
                 "tracemalloc": tm}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="imports,idle,breakdown", help="comma list of imports, idle, breakdown")
    ap.add_argument("--workload", default="example", choices=("example", "idle"))
    ap.add_argument("--runs", type=int, default=1, help="runs of the idle part (default 1)")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds after /readyz before measuring (default 30)")
    ap.add_argument("--window", type=float, default=60.0, help="seconds of idle CPU (default 60)")
    ap.add_argument("--agent-root", default=str(ROOT), help="directory holding the agent/ package to measure")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set in the agent's environment (idle part), e.g. DUTYTAIL_EVENT_LOOP=asyncio")
    ap.add_argument("--stack-kib", type=int, default=0,
                    help="idle part: start the agent through the bootstrap with threading.stack_size(N KiB)")
    ap.add_argument("--json", default=str(OUT / "footprint.json"), help="raw numbers")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    agent_root = Path(args.agent_root).resolve()
    out = [f"## Footprint ({args.workload}; agent from {agent_root})", ""]
    raw: dict[str, Any] = {"args": vars(args)}
    workload = Workload(args.workload, OUT / "footprint", agent_root if (agent_root / "demo").exists() else ROOT)
    try:
        for part in parts:
            if part == "imports":
                lines, raw["imports"] = part_imports(agent_root)
            elif part == "idle":
                env = dict(kv.split("=", 1) for kv in args.env)
                if args.stack_kib:
                    env["FOOTPRINT_STACK_KIB"] = str(args.stack_kib)
                lines, raw["idle"] = part_idle(workload, agent_root, args.runs, args.settle, args.window, env)
            elif part == "breakdown":
                lines, raw["breakdown"] = part_breakdown(workload, agent_root, args.settle)
            else:
                ap.error(f"unknown part {part!r}")
            out += lines
            print("\n".join(lines), flush=True)
    finally:
        workload.close()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
