"""Matcher start-up with many rules: MultiMatcher construction without a cache, with a cold and a warm one.

Why: translating and compiling 1,000 rules took ~4 s on every agent start; ``cache_dir`` keeps the compiled
programs (``agent.match.cache``). Each run is a fresh subprocess, so module imports, ``re``'s own compile
cache and the ``functools`` caches of the translation cannot hide a cost. Per run the child reports:

- import: ``import agent.match`` (the same with or without a cache);
- construct: ``MultiMatcher(patterns, cache_dir=...)``;
- first scan: construct plus the first ``scan_chunk`` of a realistic ~1 MiB chunk (10,000 lines), i.e.
  when the first result is ready (hyperscan allocates its scratch and RE2 builds its DFA on first use).

"cold" is an empty cache directory (build, then write the file); "warm" a directory a previous run filled.
Every run's match count must equal the uncached one's. Prints a markdown table (min / median / max ms).

    .venv/bin/python bench/rules_cache.py                      # 20, 200, 1000 rules; 3 runs; auto engine
    .venv/bin/python bench/rules_cache.py --runs 5 --engines auto,re2 --sizes 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.logdata import RULES, _normal_line, _rare_line  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
MODES = ("none", "cold", "warm")
CHUNK_LINES = 10_000


def patterns(n: int) -> list[str]:
    """The 20 bench rules, then varied generated ones (distinct literals, groups, classes, case folding)."""
    base = [p for _, p, _ in RULES]
    out = base[:n]
    for k in range(len(out), n):
        rule = base[k % len(base)]
        shape = k % 5
        if shape == 0:
            out.append(rf"{rule} code={k}")
        elif shape == 1:
            out.append(rf"ERROR .*order-(?P<id>\d+) failed code={k}")
        elif shape == 2:
            out.append(rf"(?i)svc-{k}\b.*(?:timeout|refused|reset)")
        elif shape == 3:
            out.append(rf"level=(?:error|crit) .*service=api-{k} trace_id=(?P<id>[0-9a-f]+)")
        else:
            out.append(rf"^\[(?P<ts>[^\]]+)\] host-{k} (?:WARN|ERROR) (?P<msg>.+)$")
    return out


def chunk_data() -> bytes:
    """A realistic chunk: the bench log's normal lines with a rare (matching) line every 500."""
    rnd = random.Random(11)
    lines: list[str] = []
    i = 0
    while len(lines) < CHUNK_LINES:
        _normal_line(rnd, i, lines)
        if i % 500 == 499:
            lines.append(_rare_line(rnd, i, i))
        i += 1
    return "\n".join(lines[:CHUNK_LINES]).encode("utf-8")


def child(n: int, engine: str, cache_dir: str) -> None:
    """One measurement, in its own process; prints a JSON line."""
    pats = patterns(n)
    data = chunk_data()
    t0 = time.perf_counter()
    from agent.lines import LineChunk
    from agent.match import MultiMatcher

    t1 = time.perf_counter()
    m = MultiMatcher(pats, engine=engine, cache_dir=cache_dir or None)  # type: ignore[arg-type]
    t2 = time.perf_counter()
    hits = m.scan_chunk(LineChunk(data, CHUNK_LINES, ascii=data.isascii()))
    t3 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "construct": t2 - t1, "first_scan": t3 - t1, "hits": len(hits),
                      "engine": m.engine, "cache": m.describe()["cache"]}))


def run_child(n: int, engine: str, cache_dir: str) -> dict[str, object]:
    out = subprocess.run([PY, __file__, "--child", str(n), engine, cache_dir], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure(n: int, engine: str, mode: str, runs: int, scratch: Path) -> list[dict[str, object]]:
    results = []
    warm_dir = scratch / f"warm-{engine}-{n}"
    if mode == "warm":
        shutil.rmtree(warm_dir, ignore_errors=True)
        first = run_child(n, engine, str(warm_dir))  # fills the cache, not timed
        assert first["cache"] == "stored", first
    for r in range(runs):
        if mode == "none":
            cache_dir = ""
        elif mode == "cold":
            cache_dir = str(scratch / f"cold-{engine}-{n}-{r}")
            shutil.rmtree(cache_dir, ignore_errors=True)
        else:
            cache_dir = str(warm_dir)
        res = run_child(n, engine, cache_dir)
        expected = {"none": "off", "cold": "stored", "warm": "loaded"}[mode]
        assert res["cache"] == expected, (mode, res)
        results.append(res)
    return results


def fmt(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{min(ms):,.0f} / {statistics.median(ms):,.0f} / {max(ms):,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20,200,1000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engines", default="auto", help="comma-separated: auto, hyperscan, re2")
    ap.add_argument("--child", nargs=3, metavar=("N", "ENGINE", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1], args.child[2])
        return
    if args.runs < 3:
        print("note: fewer than 3 runs per cell", file=sys.stderr)
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rules-cache-") as tmp:
        for engine in engines:
            for n in sizes:
                hits = set()
                for mode in MODES:
                    print(f"[bench] {engine} {n} rules, cache {mode} ...", file=sys.stderr, flush=True)
                    res = measure(n, engine, mode, args.runs, Path(tmp))
                    hits |= {r["hits"] for r in res}
                    rows.append((res[0]["engine"], n, mode, res))
                assert len(hits) == 1, f"{engine} {n}: match counts differ between cache modes: {hits}"
    print(f"MultiMatcher start-up, {args.runs} runs per row, each a fresh process; ms as min / median / max. "
          f"First scan: construct + the first `scan_chunk` of {CHUNK_LINES:,} log lines "
          f"({platform.machine()}, Python {platform.python_version()}).\n")
    print("| engine | rules | cache | import | construct | first scan result |")
    print("|---|---:|---|---:|---:|---:|")
    for engine, n, mode, res in rows:
        print(f"| {engine} | {n:,} | {mode} | {fmt([r['import'] for r in res])} | "  # type: ignore[misc]
              f"{fmt([r['construct'] for r in res])} | {fmt([r['first_scan'] for r in res])} |")  # type: ignore[misc]


if __name__ == "__main__":
    main()
