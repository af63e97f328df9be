"""Structured logs (JSON): the agent with ``format: json`` and 20 ``where`` rules vs jq, a naive orjson loop, grep.

    .venv/bin/python bench/formats.py                 # 1 GiB, 3 runs of each contender (~12 min)
    .venv/bin/python bench/formats.py --quick         # ~100 MiB, 1 run
    .venv/bin/python bench/formats.py --profile-only  # where the agent's rule stage spends its time (cProfile)

The file (generated once per size, cached under bench/out/, deterministic for a seed) is JSON lines of ~250
bytes: ``{"time":…,"level":…,"service":…,"msg":…,"req":{"method","path","status","bytes","dur_ms"},
"trace_id":…,"user":…}`` from ten services, with escaped quotes in some messages, raw UTF-8 in some and
``\\uXXXX`` escapes in others (as Python's ``json.dumps`` and Go's HTML escaping write them). 0.1% of the
lines are *planted*: each matches exactly one of the 20 rules and carries a unique number (the first 8
characters of its ``trace_id``); the file ends with one. Every other line matches no rule (generated records
that would are drawn again), but many come close (the same service, a 5xx of another service, ``payment
declined`` at level info, ``certificate expires in 9 days`` ...), as in a real log.

Contenders, same file, page cache warm, each ``--runs`` times:

* the agent (``python -m agent run``; a source with ``format: json``) as a user would configure it: one alert
  per rule, the agent's defaults for pacing and storm control, delivering to the standalone fake endpoint.
  Timed like bench/scan.py's first row: process start until ``/metrics`` shows every line read and every
  planted match counted by the alert engine and the 20 events are at the endpoint. The per-rule match
  counts in ``/metrics`` must equal the planted ones, rule by rule (the run fails otherwise). The agent's
  bytecode is compiled first, as the Debian package's postinst does.
* the same agent measured as the issue words its target, "from the file's appearance to the last event": it
  watches an empty directory, and 1 s after it is ready the file is hard-linked into it (all of it appears at
  once); same end, same checks.
* ``jq -c 'select(<the 20 rules OR-ed>)' FILE | wc -l``: the count must equal the planted matches.
* a naive Python loop in a subprocess: ``orjson.loads`` per line and the 20 rules as plain dict checks;
  its per-rule counts must equal the planted ones.
* ``LC_ALL=C grep -c -F '"level":"error"'`` for reference (one literal; no parsing, count not checked).

A verification row (``--stress-runs``, default 1) runs the agent with ``identity: [trace_id]`` and delivery
limits lifted, so every match is its own alert and its own event, and checks that the unique numbers
delivered are exactly the planted ones (no loss, no duplicate, nothing extra).

``--profile`` (or ``--profile-only``) then runs the agent's rule stage in this process (``RuleSet.evaluate`` on
1 MiB ``LineChunk``s, as the tailer hands them) for stage timings, the lines each rule's prefilter nominates,
and the top functions under cProfile.

Results go to stdout and replace (or append) the "Structured logs (JSON)" section at the end of
bench/RESULTS.md (``--no-write``: don't); a hand-written ``### Notes`` subsection there is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import random
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    OUT,
    PY,
    ROOT,
    SETTLE_AFTER_READY,
    Fake,
    LineCounter,
    agent_config,
    code_version,
    compile_bytecode,
    cpu_seconds,
    fmt_mmm,
    free_port,
    fresh_dir,
    hwm_mib,
    last_received_at,
    log,
    machine,
    metric,
    mmm,
    start_agent,
    tree_cpu_seconds,
    warm,
)
from logdata import parse_size

GEN_VERSION = 2
POOL = 200_000
TARGET = 1_000_000  # lines/s, end to end
GREP_LITERAL = '"level":"error"'
SECTION = "## Structured logs (JSON)"

# ------------------------------------------------------------------------------------------------- rules

# The agent's rule keys: ``match``/``contains`` on the message (the record's ``msg``), ``where`` on fields.
RULES: list[dict[str, Any]] = [
    {"name": "checkout-5xx", "where": {"service": "checkout", "req.status": {"gte": 500}}},
    {"name": "payment-declined", "match": "payment (declined|failed)",
     "where": {"service": "payments", "level": {"in": ["warn", "error"]}}},
    {"name": "paiement-refuse", "match": "paiement refusé", "where": {"service": "payments"}},
    {"name": "auth-invalid-token", "match": "invalid (token|signature)",
     "where": {"service": "auth", "level": "error"}},
    {"name": "search-slow", "where": {"service": "search", "req.dur_ms": {"gte": 5000}}},
    {"name": "admin-delete", "where": {"req.method": {"in": ["DELETE"]}, "req.path": {"match": "^/admin/"}}},
    {"name": "api-v2-write-5xx", "where": {"req.method": {"in": ["POST", "PUT", "PATCH"]},
                                           "req.path": {"match": "^/api/v2/"}, "req.status": {"gte": 500}}},
    {"name": "gateway-upstream", "where": {"service": "gateway", "req.status": {"in": [502, 503, 504]}}},
    {"name": "fatal", "where": {"level": "fatal"}},
    {"name": "go-panic", "match": "^panic: "},
    {"name": "java-oom", "contains": "OutOfMemoryError"},
    {"name": "inventory-deadlock", "match": "deadlock detected", "where": {"service": "inventory", "level": "error"}},
    {"name": "huge-response", "where": {"req.method": "GET", "req.bytes": {"gte": 50_000_000}}},
    {"name": "admin-login-401", "where": {"req.path": {"match": "^/api/v1/login"}, "req.status": 401,
                                          "user": {"match": "^admin"}}},
    {"name": "cert-expired", "match": "certificate (has )?expired", "where": {"level": {"in": ["warn", "error"]}}},
    {"name": "shipping-label-failed", "match": "label (generation|purchase) failed",
     "where": {"service": "shipping", "level": {"ne": "debug"}}},
    {"name": "notify-hard-bounce", "match": "hard bounce",
     "where": {"service": "notifications", "req.status": {"gte": 400, "lt": 600}}},
    {"name": "catalog-get-5xx", "where": {"service": "catalog", "req.method": "GET", "req.status": {"gte": 500}}},
    {"name": "cart-slow-write", "where": {"service": "cart", "req.method": {"in": ["POST", "PUT"]},
                                          "req.dur_ms": {"gt": 2000}, "req.status": {"lt": 500}}},
    {"name": "health-failing", "where": {"req.path": {"match": "^/(healthz|readyz)"}, "req.status": {"gte": 500}}},
]


def rules_yaml(identity: list[str], indent: str = "      ") -> str:
    """The rules as the agent's YAML (each a JSON flow mapping, which is YAML)."""
    return "".join(f"{indent}- {json.dumps({**r, 'identity': identity, 'severity': 'Warning'})}\n" for r in RULES)


# --- a reference implementation of the rules' semantics (agent/rules/where.py) for the data this file writes:
# every field is present with one type, so the agent, jq and the naive loop must all agree with it.
def _get(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _op(value: Any, op: str, operand: Any) -> bool:
    if value is None:
        return False
    if op == "eq":
        return bool(value == operand)
    if op == "ne":
        return bool(value != operand)
    if op == "in":
        return value in operand
    if op == "match":
        return isinstance(value, str) and re.search(operand, value) is not None
    return bool({"gte": value >= operand, "gt": value > operand, "lt": value < operand, "lte": value <= operand}[op])


def rule_holds(rule: dict[str, Any], record: dict[str, Any]) -> bool:
    msg = record.get("msg", "")
    if "match" in rule and re.search(rule["match"], msg) is None:
        return False
    if "contains" in rule and rule["contains"] not in msg:
        return False
    for path, cond in rule.get("where", {}).items():
        ops = cond.items() if isinstance(cond, dict) else [("eq", cond)]
        if not all(_op(_get(record, path), op, operand) for op, operand in ops):
            return False
    return True


def rules_holding(record: dict[str, Any]) -> list[int]:
    return [k for k, r in enumerate(RULES) if rule_holds(r, record)]


# --- the same rules as jq and as a naive Python loop's dict checks
def _jq_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _jq_rule(rule: dict[str, Any]) -> str:
    parts, regexes = [], []  # comparisons first, regexes last (`and` stops at the first false)
    for path, cond in rule.get("where", {}).items():
        ref = "." + path
        for op, operand in (cond.items() if isinstance(cond, dict) else [("eq", cond)]):
            if op == "in":
                parts.append("(" + " or ".join(f"{ref} == {_jq_value(o)}" for o in operand) + ")")
            elif op == "match":
                regexes.append(f"({ref} | test({_jq_value(operand)}))")
            else:
                sym = {"eq": "==", "ne": "!=", "gte": ">=", "gt": ">", "lt": "<", "lte": "<="}[op]
                parts.append(f"{ref} {sym} {_jq_value(operand)}")
    if "contains" in rule:
        parts.append(f"(.msg | contains({_jq_value(rule['contains'])}))")
    if "match" in rule:
        regexes.append(f"(.msg | test({_jq_value(rule['match'])}))")
    return "(" + " and ".join(parts + regexes) + ")"


def jq_filter() -> str:
    return "select(" + " or ".join(_jq_rule(r) for r in RULES) + ")"


def naive_source() -> str:
    """The naive loop's source: ``orjson.loads`` per line, then the rules as the dict checks one would write."""
    regexes: list[str] = []

    def rx(pattern: str) -> str:
        regexes.append(pattern)
        return f"R{len(regexes) - 1}(%s) is not None"

    def ref(path: str) -> str:
        head, _, rest = path.partition(".")
        return f"req.get({rest!r})" if head == "req" else f"r.get({path!r})"

    checks = []
    for k, rule in enumerate(RULES):
        parts, slow = [], []  # dict checks first, regexes last
        for path, cond in rule.get("where", {}).items():
            for op, operand in (cond.items() if isinstance(cond, dict) else [("eq", cond)]):
                if op == "match":
                    slow.append(rx(operand) % ref(path))
                elif op == "in":
                    parts.append(f"{ref(path)} in {tuple(operand)!r}")
                elif op in ("eq", "ne"):
                    parts.append(f"{ref(path)} {'==' if op == 'eq' else '!='} {operand!r}")
                else:
                    sym = {"gte": ">=", "gt": ">", "lt": "<", "lte": "<="}[op]
                    parts.append(f"({ref(path)} or 0) {sym} {operand!r}")
        if "contains" in rule:
            parts.append(f"{rule['contains']!r} in msg")
        if "match" in rule:
            slow.append(rx(rule["match"]) % "msg")
        parts += slow
        checks.append(f"            if {' and '.join(parts)}:\n"
                      f"                counts[{k}] += 1\n                hit = True\n")
    head = "".join(f"    R{i} = re.compile({p!r}).search\n" for i, p in enumerate(regexes))
    return (
        "def count(path):\n"
        "    import re\n"
        "    import orjson\n"
        f"{head}"
        f"    counts = [0] * {len(RULES)}\n"
        "    lines = matched = 0\n"
        "    with open(path, 'rb') as f:\n"
        "        for line in f:\n"
        "            lines += 1\n"
        "            r = orjson.loads(line)\n"
        "            req = r.get('req') or {}\n"
        "            msg = r.get('msg', '')\n"
        "            hit = False\n"
        f"{''.join(checks)}"
        "            matched += hit\n"
        "    return lines, matched, counts\n"
    )


# ------------------------------------------------------------------------------------------------- data

SERVICES = ["gateway"] * 4 + ["checkout"] * 2 + ["payments", "search", "search", "catalog", "catalog", "auth",
                                                 "cart", "cart", "inventory", "shipping", "notifications"]
HEX = "0123456789abcdef"
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
UNICODE_NAMES = ["zoë", "Müller", "José", "Łukasz", "Ørsted", "田中", "Дмитрий", "Ana María"]


def _paths(service: str, rnd: random.Random) -> tuple[str, str]:
    """(method, path) of a request to this service."""
    i = rnd.randrange(1, 99999)
    r = rnd.random()
    if service == "gateway":
        if r < 0.15:
            return "GET", rnd.choice(("/healthz", "/readyz"))
        if r < 0.2:
            return rnd.choice(("GET", "GET", "DELETE")), f"/admin/users/{i}"
        return rnd.choice(("GET", "GET", "GET", "POST")), rnd.choice(
            (f"/api/v1/orders/{i}", "/api/v1/products", f"/api/v2/cart/items/{i}", "/api/v1/search?q=shoes"))
    table = {
        "checkout": [("POST", "/api/v1/checkout"), ("POST", f"/api/v2/checkout/{i}/confirm"),
                     ("GET", f"/api/v1/orders/{i}")],
        "payments": [("POST", "/api/v2/payments"), ("POST", f"/api/v2/payments/{i}/capture"),
                     ("GET", f"/api/v1/refunds/{i}")],
        "search": [("GET", f"/api/v1/search?q=red+shoes&page={i % 9}"), ("GET", "/api/v1/suggest?q=sne")],
        "catalog": [("GET", f"/api/v1/products/{i}"), ("GET", "/api/v1/categories/shoes"),
                    ("PUT", f"/api/v2/products/{i}")],
        "auth": [("POST", "/api/v1/login"), ("POST", "/api/v1/token/refresh"), ("POST", "/api/v1/logout")],
        "cart": [("GET", "/api/v1/cart"), ("POST", "/api/v1/cart"), ("PUT", f"/api/v2/cart/items/{i}"),
                 ("DELETE", f"/api/v2/cart/items/{i}")],
        "inventory": [("GET", f"/api/v2/stock/sku-{i}"), ("POST", "/admin/inventory/reindex"),
                      ("PATCH", f"/api/v2/stock/sku-{i}")],
        "shipping": [("POST", f"/api/v1/shipments/{i}/label"), ("GET", "/api/v1/rates")],
        "notifications": [("POST", "/api/v1/notify/email"), ("POST", "/api/v1/notify/sms")],
    }
    return rnd.choice(table[service])


MESSAGES: dict[str, list[str]] = {  # info-level messages per service ("{u}": a name, "{q}": a quoted word)
    "gateway": ["request served", "request served", "proxied to upstream {q}", "rate limit headroom 87%"],
    "checkout": ["request served", "order created", "cart validated for {u}", "coupon {q} applied"],
    "payments": ["payment authorized", "payment captured", "payment declined", "paiement accepté pour {u}"],
    "search": ["search executed", "query rewritten to {q}", "index shard 3 warm"],
    "catalog": ["request served", "product cache hit", "price list {q} loaded"],
    "auth": ["token issued", "session refreshed for {u}", "login ok"],
    "cart": ["item added", "cart merged for {u}", "request served"],
    "inventory": ["stock level read", "reservation held", "reindex batch done"],
    "shipping": ["label generated", "rate quote served", "label purchase queued for {u}"],
    "notifications": ["email queued", "sms delivered", "soft bounce from {q}"],
}
WARNINGS = ["slow upstream response", "retrying request to {q} (attempt 2)", "certificate expires in 9 days",
            "non-fatal: cache unavailable", "invalid token presented by {u}", "recovered from panic in handler"]
ERRORS = ["upstream connect error", "validation failed: field {q} is required", "timeout talking to {q}",
          "lock wait timeout exceeded", "label printer offline", "payment gateway unreachable"]
DEBUGS = ['cache lookup key={q}', "sql: SELECT * FROM orders WHERE id = $1", "feature flag {q} = on"]


def _fill(text: str, rnd: random.Random) -> str:
    if "{u}" in text:
        text = text.replace("{u}", rnd.choice(UNICODE_NAMES) if rnd.random() < 0.3 else rnd.choice(NAMES))
    if "{q}" in text:
        text = text.replace("{q}", '"' + rnd.choice(("pricing", "inventory", "email", "promo-10", "<nil>")) + '"')
    return text


def _record(rnd: random.Random, service: str | None = None) -> dict[str, Any]:
    """A normal request record (may by chance match a rule: the caller checks)."""
    service = service or rnd.choice(SERVICES)
    method, path = _paths(service, rnd)
    r = rnd.random()
    level = "info" if r < 0.86 else "debug" if r < 0.91 else "warn" if r < 0.97 else "error"
    pool = {"info": MESSAGES[service], "debug": DEBUGS, "warn": WARNINGS, "error": ERRORS}[level]
    msg = _fill(rnd.choice(pool), rnd)
    s = rnd.random()
    if level == "error":
        status = rnd.choice((500, 502, 503, 504, 400, 409, 422))
    else:
        status = 200 if s < 0.8 else rnd.choice((201, 204, 301, 304, 400, 401, 403, 404, 404, 429))
    if path.startswith("/api/v1/login") and status == 200 and rnd.random() < 0.1:
        status = 401
    user = rnd.choice(("admin", "admin-ops")) if rnd.random() < 0.02 else f"u{rnd.randrange(1, 500000)}"
    return {
        "level": level,
        "service": service,
        "msg": msg,
        "req": {"method": method, "path": path, "status": status,
                "bytes": int(rnd.lognormvariate(8, 1.5)) if rnd.random() > 0.0005 else rnd.randrange(10**7, 10**9),
                "dur_ms": round(min(rnd.lognormvariate(2.5, 1.2), 60000.0), 1)},
        "trace_id": "".join(rnd.choices(HEX, k=32)),
        "user": user,
    }


def _planted(rnd: random.Random, k: int, n: int) -> dict[str, Any]:
    """A record that matches rule ``k`` (only), with the unique number ``n`` in its trace_id."""
    name = RULES[k]["name"]
    service = {"checkout-5xx": "checkout", "payment-declined": "payments", "paiement-refuse": "payments",
               "auth-invalid-token": "auth", "search-slow": "search", "admin-delete": "gateway",
               "api-v2-write-5xx": "cart", "gateway-upstream": "gateway", "catalog-get-5xx": "catalog",
               "inventory-deadlock": "inventory", "shipping-label-failed": "shipping", "cart-slow-write": "cart",
               "notify-hard-bounce": "notifications", "admin-login-401": "auth", "health-failing": "search",
               }.get(name) or rnd.choice(("search", "catalog", "inventory"))
    rec = _record(rnd, service)
    req = rec["req"]
    req["status"], req["dur_ms"], req["bytes"] = 200, round(rnd.uniform(1, 900), 1), rnd.randrange(100, 90000)
    rec["level"], rec["msg"], rec["user"] = "info", "request served", f"u{n}"
    if name == "checkout-5xx":
        rec["level"], rec["msg"] = "error", "request failed: upstream \"pricing\" returned 503"
        req.update(method="POST", path="/api/v1/checkout", status=rnd.choice((500, 502, 503)))
    elif name == "payment-declined":
        rec["level"] = rnd.choice(("warn", "error"))
        rec["msg"] = rnd.choice(('payment declined: card "visa-4242" insufficient funds',
                                 f"payment failed for {rnd.choice(UNICODE_NAMES)}"))
        req["status"] = 402
    elif name == "paiement-refuse":
        rec["level"], rec["msg"] = "warn", f"paiement refusé pour {rnd.choice(NAMES + UNICODE_NAMES)}"
    elif name == "auth-invalid-token":
        rec["level"], rec["msg"] = "error", rnd.choice(("invalid token: expired", "invalid signature on JWT"))
        req["status"] = 401
    elif name == "search-slow":
        req["dur_ms"] = round(rnd.uniform(5000, 30000), 1)
    elif name == "admin-delete":
        req.update(method="DELETE", path=f"/admin/users/{n}")
    elif name == "api-v2-write-5xx":
        req.update(method="PUT", path=f"/api/v2/cart/items/{n}", status=503)
        rec["level"], rec["msg"] = "error", "upstream connect error"
    elif name == "gateway-upstream":
        req.update(method="GET", path=f"/api/v1/orders/{n}", status=rnd.choice((502, 503, 504)))
        rec["level"], rec["msg"] = "error", "upstream connect error"
    elif name == "fatal":
        rec["level"], rec["msg"] = "fatal", "cannot open config \"/etc/app.yaml\": permission denied"
    elif name == "go-panic":
        rec["level"], rec["msg"] = "error", "panic: runtime error: index out of range [3] with length 3"
    elif name == "java-oom":
        rec["level"], rec["msg"] = "error", "java.lang.OutOfMemoryError: Java heap space"
    elif name == "inventory-deadlock":
        rec["level"], rec["msg"] = "error", "deadlock detected while reserving \"sku-42\""
    elif name == "huge-response":
        req.update(method="GET", bytes=rnd.randrange(50_000_000, 900_000_000))
    elif name == "admin-login-401":
        req.update(method="POST", path="/api/v1/login", status=401)
        rec["user"], rec["msg"] = rnd.choice(("admin", "admin-ops")), "login refused"
    elif name == "cert-expired":
        rec["level"] = rnd.choice(("warn", "error"))
        rec["msg"] = rnd.choice(("certificate has expired: CN=api.internal", "x509: certificate expired"))
    elif name == "shipping-label-failed":
        rec["level"] = rnd.choice(("warn", "error", "info"))
        rec["msg"] = rnd.choice(("label generation failed: carrier timeout", "label purchase failed (402)"))
    elif name == "notify-hard-bounce":
        rec["level"], rec["msg"] = "warn", "hard bounce from \"mx.example.com\""
        req["status"] = rnd.choice((400, 422, 550))
    elif name == "catalog-get-5xx":
        req.update(method="GET", path=f"/api/v1/products/{n}", status=rnd.choice((500, 503)))
    elif name == "cart-slow-write":
        req.update(method=rnd.choice(("POST", "PUT")), path="/api/v1/cart", dur_ms=round(rnd.uniform(2001, 9000), 1))
    elif name == "health-failing":
        req.update(method="GET", path=rnd.choice(("/healthz", "/readyz")), status=rnd.choice((500, 503)))
    rec["trace_id"] = f"{n:08d}" + "".join(rnd.choices(HEX, k=24))
    hits = rules_holding(rec)
    if hits != [k]:
        raise SystemExit(f"planted record of rule {name} matches rules {hits}: {rec}")
    return rec


def _dump(rec: dict[str, Any], ascii_escapes: bool) -> str:
    """The record after its time field, as `{"time":"…",` + this: compact JSON, raw UTF-8 or \\u escapes."""
    text = json.dumps(rec, separators=(",", ":"), ensure_ascii=ascii_escapes)
    if not ascii_escapes and "<" in text and rec["service"] in ("gateway", "auth"):  # Go's HTML escaping
        text = text.replace("<", "\\u003c").replace(">", "\\u003e")
    return text[1:]


def _timestamp(i: int) -> str:
    sec, ms = divmod(i // 4, 1000)  # ~4,000 lines a second
    return f"2026-12-01T{sec // 3600 % 24:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{ms:03d}Z"


@dataclass
class JsonLog:
    path: Path
    lines: int
    matches: int
    bytes: int
    per_rule: list[int]
    escaped_lines: int  # lines with a \uXXXX escape
    non_ascii_lines: int

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


def generate(path: Path, size: int, match_fraction: float = 0.001, seed: int = 11) -> JsonLog:
    """Write about ``size`` bytes (cached with a .json sidecar keyed by size, fraction, seed, version)."""
    path = path.resolve()
    meta_path = path.with_suffix(".json")
    want = {"size": size, "fraction": match_fraction, "seed": seed, "version": GEN_VERSION,
            "rules": json.dumps(RULES)}
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == want and path.stat().st_size == meta["bytes"]:
            return JsonLog(path, **{k: meta[k] for k in ("lines", "matches", "bytes", "per_rule", "escaped_lines",
                                                          "non_ascii_lines")})
    log(f"generating {path.name} ({size / 2**20:,.0f} MiB)")
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    pool: list[str] = []
    redrawn = 0
    while len(pool) < POOL:
        rec = _record(rnd)
        if rules_holding(rec):
            redrawn += 1
            continue
        pool.append(_dump(rec, ascii_escapes=rnd.random() < 0.005))
    log(f"pool of {POOL:,} normal records ({redrawn:,} drawn again: they matched a rule)")
    written = lines = matches = 0
    per_rule = [0] * len(RULES)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        i = 0
        last = False
        while not last:
            last = written >= size
            block = [pool[j] for j in rnd.choices(range(POOL), k=20000)] if not last else []
            for k in range(len(block)):
                if rnd.random() < match_fraction:
                    rule = matches % len(RULES)
                    block[k] = _dump(_planted(rnd, rule, matches), ascii_escapes=rnd.random() < 0.2)
                    per_rule[rule] += 1
                    matches += 1
            if last:  # the file ends with a match: its event means the whole file was read
                rule = matches % len(RULES)
                block.append(_dump(_planted(rnd, rule, matches), ascii_escapes=False))
                per_rule[rule] += 1
                matches += 1
            data = "".join(f'{{"time":"{_timestamp(i + k)}",{rest}\n' for k, rest in enumerate(block)).encode()
            fh.write(data)
            written += len(data)
            lines += len(block)
            i += len(block)
    tmp.rename(path)
    escaped = non_ascii = 0
    with open(path, "rb") as fh:
        for line in fh:
            escaped += b"\\u" in line
            non_ascii += not line.isascii()
    meta = {"lines": lines, "matches": matches, "bytes": written, "per_rule": per_rule, "escaped_lines": escaped,
            "non_ascii_lines": non_ascii}
    meta_path.write_text(json.dumps({"params": want, **meta}))
    return JsonLog(path, **meta)


# ------------------------------------------------------------------------------------------------- contenders


@dataclass
class Run:
    seconds: float
    cpu: float = float("nan")
    rss: float = float("nan")
    ok: bool = True
    note: str = ""
    count: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_RULE_METRIC = re.compile(r'^dutytail_rule_matches_total\{[^}]*rule="([^"]+)"[^}]*\} ([0-9.e+]+)$', re.M)


def _per_rule(text: str) -> dict[str, int]:
    return {name: int(float(v)) for name, v in _RULE_METRIC.findall(text)}


def run_agent(info: JsonLog, workdir: Path, timeout: float, stress: bool = False, appear: bool = False) -> Run:
    """The agent from process start until every line is read, every match counted and every event arrived.

    Main row (``stress=False``): one alert per rule (no identity), the agent's delivery defaults: 20 events.
    Done when /metrics (polled every 0.1 s) shows every line read and every planted match counted, and the 20
    events are at the endpoint, as in bench/scan.py. If every line was read but the match count stays short
    for 10 s, the run stops and fails (a miss, not a hang). Per-rule counts must equal the planted ones.
    ``stress``: identity [trace_id] (every match its own alert and event), delivery limits lifted; done at the
    last planted event; the unique numbers delivered must be exactly the planted ones.
    ``appear``: the issue's own measure: the agent watches an empty directory; ``SETTLE_AFTER_READY`` after it is
    ready the file is hard-linked into it (the whole file appears at once), and the time runs from there.
    """
    wd = fresh_dir(workdir / ("agent-stress" if stress else "agent-appear" if appear else "agent"))
    fake = Fake(free_port(), wd)
    fake.start()
    hport = free_port()
    logdir = wd / "logs"
    logdir.mkdir()
    paths = f"{logdir}/*.log" if appear else str(info.path)
    logs = (f"logs:\n  - name: bench\n    paths: [{paths}]\n    start_at: beginning\n    format: json\n"
            f"    rules:\n{rules_yaml(['trace_id'] if stress else [])}")
    cfg = wd / "config.yaml"
    cfg.write_text(agent_config(state_dir=wd / "state", health_port=hport, push_port=fake.port, logs_yaml=logs,
                                outbox="max_bytes: 8GiB" if stress else "", user_defaults=not stress))
    expected_events = info.matches if stress else len(RULES)
    warm(info.path)
    agent = start_agent(cfg, hport, wd / "agent.log")
    counter = LineCounter(fake.out)
    t_ready = t_read = t_all_read = None
    last_matches, stalled_since = -1.0, 0.0
    next_poll = 0.0
    text = ""
    origin, cpu0 = agent.started, 0.0
    try:
        if appear:
            ready_by = time.monotonic() + 60
            while not agent.metrics():
                if not agent.alive() or time.monotonic() > ready_by:
                    return Run(time.time() - agent.started, ok=False, note="the agent did not get ready")
                time.sleep(0.05)
            time.sleep(SETTLE_AFTER_READY)
            cpu0 = tree_cpu_seconds(agent.pid)
            origin = time.time()
            os.link(info.path, logdir / "big.log")
        deadline = time.monotonic() + timeout
        while True:
            n = counter.poll()
            if t_read is not None and n >= expected_events:
                break
            if not agent.alive():
                return Run(time.time() - origin, ok=False, note=f"agent exited {agent.proc.returncode}")
            if time.monotonic() > deadline:
                return Run(time.time() - origin, ok=False, note=f"timeout: {n}/{expected_events} events")
            if t_read is None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + 0.1
                text = agent.metrics()
                if text and t_ready is None and not appear:
                    t_ready = time.time() - agent.started
                read = (metric(text, "dutytail_lines_read_total") or 0) if text else 0
                matched = (metric(text, "dutytail_rule_matches_total") or 0) if text else 0
                if read >= info.lines and matched >= info.matches:
                    t_read = time.time() - origin
                elif read >= info.lines:
                    t_all_read = t_all_read or time.time()
                    if matched != last_matches:
                        last_matches, stalled_since = matched, time.time()
                    elif time.time() - stalled_since > 10:
                        got = _per_rule(text)
                        short = {r["name"]: (got.get(r["name"], 0), want) for r, want in zip(RULES, info.per_rule,
                                                                                                strict=True)
                                 if got.get(r["name"], 0) != want}
                        return Run(time.time() - origin, ok=False, count=int(matched),
                                   note=f"every line read but {matched:,.0f}/{info.matches:,} matches counted; "
                                        f"rules off (got, planted): {short}")
            time.sleep(0.02)
        t_end = max(last_received_at(fake.out), origin + t_read)
        # with its rule processes (they exit only after 30 s without a backlog)
        cpu = tree_cpu_seconds(agent.pid) - cpu0
        rss = hwm_mib(agent.pid)
        final = agent.metrics() or text
        got = _per_rule(final)
        off = {r["name"]: (got.get(r["name"], 0), want) for r, want in zip(RULES, info.per_rule, strict=True)
               if got.get(r["name"], 0) != want}
        parse_errors = metric(final, "dutytail_parse_errors_total") or 0
        count = sum(got.values())
        notes, ok = [], True
        if off:
            ok = False
            notes.append(f"per-rule matches differ from the planted (got, planted): {off}")
        if parse_errors:
            notes.append(f"{parse_errors:,.0f} parse errors")
        extra: dict[str, Any] = {"ready_s": t_ready or float("nan"), "read_s": t_read,
                                 "endpoint_cpu": cpu_seconds(fake.proc.pid) if fake.proc else float("nan")}
        if stress:
            delivered = _delivered_numbers(fake.out)
            planted = set(range(info.matches))
            dupes = len(delivered) - len(set(delivered))
            missing, unexpected = planted - set(delivered), set(delivered) - planted
            extra.update(events=len(delivered), duplicates=dupes, missing=len(missing), unexpected=len(unexpected))
            if dupes or missing or unexpected:
                ok = False
                notes.append(f"events: {len(delivered):,} delivered, {len(missing):,} planted numbers missing "
                             f"(e.g. {sorted(missing)[:5]}), {len(unexpected):,} unexpected, {dupes:,} duplicates")
        return Run(t_end - origin, cpu, rss, ok=ok, note="; ".join(notes), count=count, extra=extra)
    finally:
        counter.close()
        agent.stop()
        fake.stop()


def _delivered_numbers(path: Path) -> list[int]:
    """The planted unique number (trace_id's first 8 characters) of every event the fake accepted."""
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                trace = json.loads(line)["event"]["labels"]["trace_id"]
                out.append(int(trace[:8]))
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_jq(info: JsonLog, jq: str) -> Run:
    warm(info.path)
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen([jq, "-c", jq_filter(), str(info.path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    wc = subprocess.run(["wc", "-l"], stdin=proc.stdout, capture_output=True, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode(errors="replace")
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    count = int(wc.stdout.strip() or -1)
    ok = rc == 0 and count == info.matches
    note = "" if ok else f"jq exit {rc}, counted {count:,} (planted {info.matches:,}) {err[:200]}"
    return Run(seconds, cpu, ok=ok, note=note, count=count)


def run_naive(info: JsonLog, timeout: float) -> Run:
    warm(info.path)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([PY, str(Path(__file__).resolve()), "--naive-worker", str(info.path)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Run(time.perf_counter() - t0, ok=False, note=f"timeout after {timeout:.0f}s")
    seconds = time.perf_counter() - t0
    try:
        res = json.loads(proc.stdout)
    except ValueError:
        return Run(seconds, ok=False, note=f"failed: {proc.stderr[-300:]}")
    ok = res["lines"] == info.lines and res["matched"] == info.matches and res["per_rule"] == info.per_rule
    note = "" if ok else f"counted {res['lines']:,} lines, {res['matched']:,} matches, per rule {res['per_rule']}"
    return Run(seconds, res["cpu"], res["rss"], ok=ok, note=note, count=res["matched"])


def naive_worker(path: str) -> None:
    scope: dict[str, Any] = {}
    exec(naive_source(), scope)
    lines, matched, per_rule = scope["count"](path)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"lines": lines, "matched": matched, "per_rule": per_rule,
                      "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024}))


def run_grep(info: JsonLog) -> Run:
    warm(info.path)
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(["grep", "-c", "-F", GREP_LITERAL, str(info.path)], capture_output=True, text=True,
                          env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - t0
    return Run(seconds, _children_cpu() - cpu0, count=int(proc.stdout.strip() or -1),
               ok=proc.returncode in (0, 1))


# ------------------------------------------------------------------------------------------------- profile


def _chunks(path: Path, limit: int, size: int = 1 << 20) -> list[Any]:
    """The file's first ``limit`` bytes as the tailer hands them: 1 MiB LineChunks of complete lines."""
    from agent.lines import LineChunk

    out = []
    rest = b""
    with open(path, "rb") as fh:
        read = 0
        while read < limit:
            block = fh.read(size)
            if not block:
                break
            read += len(block)
            block = rest + block
            cut = block.rfind(b"\n")
            if cut < 0:
                rest = block
                continue
            data, rest = block[:cut], block[cut + 1:]
            out.append(LineChunk(data, data.count(b"\n") + 1, ascii=data.isascii()))
    return out


def _timed(fn: Any, chunks: list[Any], repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for c in chunks:
            fn(c)
        best = min(best, time.perf_counter() - t0)
    return best


def profile_rules(info: JsonLog, limit: int) -> list[str]:
    """The agent's rule stage in this process, single-threaded, on 1 MiB chunks: stage timings, what the
    prefilter nominates per rule, and cProfile's top functions. Markdown lines."""
    from agent.config import LogSourceConfig
    from agent.match import MultiMatcher
    from agent.rules import prefilter as pf

    src = LogSourceConfig.model_validate({"name": "bench", "paths": [str(info.path)], "format": "json",
                                          "rules": [{**r, "identity": []} for r in RULES]})
    ruleset = src.compile_rules()
    chunks = _chunks(info.path, limit)
    n_lines = sum(len(c) for c in chunks)
    mib = sum(len(c.data) for c in chunks) / 2**20
    log(f"profile: {len(chunks)} chunks, {n_lines:,} lines, {mib:,.0f} MiB")
    hits = sum(len(ruleset.evaluate(c, c.data)) for c in chunks)  # also lets the prefilter learn its plan
    assert ruleset.records is not None
    records, raw_filter = ruleset.records, ruleset.records.raw
    plan = raw_filter._plan  # the plan the prefilter settled on (agent/rules/candidates.py)
    assert plan is not None
    candidates = sum(len(raw_filter.candidates(c, c.data)) for c in chunks)
    t_eval = _timed(lambda c: ruleset.evaluate(c, c.data), chunks)
    t_pre = _timed(plan.matcher.scan_chunk, chunks)
    t_cand = _timed(lambda c: raw_filter.candidates(c, c.data), chunks)
    import orjson

    cand_lines = [line for c in chunks for _, line, _ in raw_filter.candidates(c, c.data)]
    t0 = time.perf_counter()
    for line in cand_lines:
        ruleset.parser.parse(line)
    t_parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    for line in cand_lines:
        orjson.loads(line)
    t_loads = time.perf_counter() - t0
    t_decode = _timed(lambda c: c.data.decode().split("\n"), chunks, 1)
    t_all_loads = _timed(lambda c: [orjson.loads(x) for x in c.data.split(b"\n")], chunks[: max(1, len(chunks) // 4)],
                         1) * len(chunks) / max(1, len(chunks) // 4)
    # what each rule's chosen prefilter nominates, and what requiring *every* condition on the raw bytes would
    raw = [raw_filter.patterns[g] if g >= 0 else "\\\\u" for g in plan.global_of]
    nominated = [0] * len(raw)
    for c in chunks:
        seen: set[tuple[int, int]] = set()
        for j, m in plan.matcher.scan_chunk(c):
            key = (id(m.string), j)
            if key not in seen:
                seen.add(key)
                nominated[j] += 1
    def condition_patterns(anchor_numbers: bool) -> list[list[str]]:
        """Per rule, the raw-bytes prefilter of each of its conditions (message literal, each `where` field).
        ``anchor_numbers``: a number's ``eq``/``in`` is looked for right after its key (as ``gte`` already is)
        instead of anywhere in the line, where any ``[0-9][.eE]`` (a timestamp's fraction) also counts."""
        out = []
        for rule in src.rules:
            pats = []
            if rule.pattern() is not None:
                p = pf.literal(rule.contains) if rule.contains is not None else pf.regex_literal(rule.pattern() or "")
                if p is not None:
                    pats.append(p.pattern)
            for path, cond in rule.where.items():
                ops = dict(cond.operators())
                numbers = ([ops["eq"]] if "eq" in ops else ops.get("in") or [])
                key = pf.key_of(path)
                if anchor_numbers and key and numbers and all(
                        isinstance(n, int | float) and not isinstance(n, bool) and n >= 0 for n in numbers):
                    alts = "|".join(re.escape(pf._number_text(n)) for n in numbers)
                    pats.append(f"{re.escape(key)}{pf._KEY_GAP}(?:{alts}|[0-9]+(?:\\.[0-9]+)?[eE])")
                    continue
                p = pf.condition(path, cond, keyed=True)
                if p is not None:
                    pats.append(p.pattern)
            out.append(pats)
        return out

    def all_hold(per_rule_cond: list[list[str]]) -> tuple[int, list[int]]:
        """Lines on which every condition pattern of some rule matches (and per rule)."""
        matcher = MultiMatcher([p for pats in per_rule_cond for p in pats])
        owner_of = [k for k, pats in enumerate(per_rule_cond) for _ in pats]
        need = [len(p) for p in per_rule_cond]
        total, per_rule = 0, [0] * len(RULES)
        for c in chunks:
            per_line: dict[int, dict[int, set[int]]] = {}
            for j, m in matcher.scan_chunk(c):
                per_line.setdefault(id(m.string), {}).setdefault(owner_of[j], set()).add(j)
            for owners in per_line.values():
                full = [k for k, js in owners.items() if len(js) == need[k]]
                total += bool(full)
                for k in full:
                    per_rule[k] += 1
        return total, per_rule

    anded, anded_rule = all_hold(condition_patterns(False))
    anchored, anchored_rule = all_hold(condition_patterns(True))
    escapes = nominated[-1] if plan.global_of[-1] == -1 else 0
    chosen: dict[int, tuple[str, int]] = {}  # rule -> the pattern its firing side is nominated by, lines
    for j, sides in plan.sides_of.items():
        for s in sides:
            if records.sides[s].kind == "fire":
                chosen[records.sides[s].rule] = (raw[j], nominated[j])
    # the floor: the same stage with only the rules whose chosen prefilter nominates under 0.1% of the lines
    rule_nominated = {k: n for k, (_, n) in chosen.items()}
    selective = [k for k, n in rule_nominated.items() if n < n_lines / 1000]
    floor_set = LogSourceConfig.model_validate({"name": "bench", "paths": [str(info.path)], "format": "json", "rules": [
        {**RULES[k], "identity": []} for k in selective]}).compile_rules()
    t_floor = _timed(lambda c: floor_set.evaluate(c, c.data), chunks)
    assert floor_set.records is not None
    floor_candidates = sum(len(floor_set.records.raw.candidates(c, c.data)) for c in chunks)
    per_candidate = (t_eval - t_floor) / max(1, candidates - floor_candidates) * 1e6
    try:  # the reference path: no prefilter, every line parsed (RuleSet(prefilter=False), since c6a79ee)
        from agent.rules import RuleSet

        every = RuleSet(src.rules, formats=src.formats, message_field=src.message_field, prefilter=False)
        quarter = chunks[: max(1, len(chunks) // 4)]
        t_every = _timed(lambda c: every.evaluate(c, c.data), quarter, 1) * len(chunks) / len(quarter)
    except TypeError:
        t_every = float("nan")

    def rate(seconds: float) -> str:
        return f"{n_lines / seconds:,.0f}"

    out = [
        f"### Where the agent's time goes: the rule stage in one thread (`--profile`, first {mib:,.0f} MiB, "
        f"{n_lines:,} lines)",
        "",
        "`RuleSet.evaluate` on the file's 1 MiB `LineChunk`s (as the tailer hands them), in the bench's process, "
        "one thread, best of 2 passes. Hits: "
        f"{hits:,}. The prefilter leaves **{candidates:,} candidate lines ({candidates / n_lines:.1%})** to parse "
        f"(of them {escapes:,} only for holding a `\\u` escape).",
        "",
        "| stage | seconds | lines/s |",
        "|---|---:|---:|",
        f"| `RuleSet.evaluate` (everything: prefilter, parse candidates, where, message regex) | {t_eval:.2f} | "
        f"{rate(t_eval)} |",
        f"| ↳ the prefilter plan's `scan_chunk` (hyperscan over the bytes, decode + `re` confirm per nominated line) | "
        f"{t_pre:.2f} | {rate(t_pre)} |",
        f"| ↳ `RawFilter.candidates` (the above + grouping per line) | {t_cand:.2f} | {rate(t_cand)} |",
        f"| ↳ `Parser.parse` of the {len(cand_lines):,} candidates | {t_parse:.2f} | {rate(t_parse)} |",
        f"| ↳ of which `orjson.loads` alone | {t_loads:.2f} | {rate(t_loads)} |",
        f"| for scale: `RuleSet.evaluate` with only the {len(selective)} rules whose prefilter nominates < 0.1% "
        f"of the lines ({', '.join(RULES[k]['name'] for k in selective)}; {floor_candidates:,} candidates, mostly "
        f"the `\\u` lines) | {t_floor:.2f} | {rate(t_floor)} |",
        f"| ⇒ cost per extra candidate line (all 20 rules vs those {len(selective)}) | "
        f"{per_candidate:.1f} µs | |",
        f"| for scale: `RuleSet(prefilter=False).evaluate`: the agent's path parsing every line (extrapolated "
        f"from a quarter) | {t_every:.2f} | {rate(t_every)} |",
        f"| for scale: decode + split every line | {t_decode:.2f} | {rate(t_decode)} |",
        f"| for scale: `orjson.loads` of every line (extrapolated from a quarter) | {t_all_loads:.2f} | "
        f"{rate(t_all_loads)} |",
        "",
        "Per rule: the raw-bytes prefilter the agent chose (the most selective-looking condition, by literal "
        "length) and the lines it nominates; then the lines on which *every* condition of the rule has its raw "
        "match (what an AND of the conditions' prefilters would leave: hyperscan reports every pattern that "
        "matched a line, or its logical combinations do it in the scan); then the same AND with a number's "
        "`eq`/`in` looked for right after its key, as `gte` already is (the agent's `(?:502|[0-9][.eE])` "
        "matches every line here: the timestamps' `00.123`).",
        "",
        "| rule | chosen prefilter | nominated lines | all conditions' prefilters hold | same, numbers anchored to "
        "their key |",
        "|---|---|---:|---:|---:|",
    ]
    for k, rule in enumerate(RULES):
        pat, nom = chosen.get(k, ("(none: every line)", n_lines))
        shown = pat if len(pat) <= 60 else pat[:57] + "..."
        out.append(f"| {rule['name']} | `{shown.replace('|', chr(92) + '|')}` | {nom:,} ({nom / n_lines:.2%}) | "
                   f"{anded_rule[k]:,} ({anded_rule[k] / n_lines:.2%}) | "
                   f"{anchored_rule[k]:,} ({anchored_rule[k] / n_lines:.2%}) |")
    out += [f"| (every `\\u` line, for every rule) | `\\\\u` | {escapes:,} ({escapes / n_lines:.2%}) | | |",
            f"| **any rule** | | **{candidates:,} ({candidates / n_lines:.1%})** | **{anded:,} "
            f"({anded / n_lines:.2%})** + the `\\u` lines | **{anchored:,} ({anchored / n_lines:.2%})** + the "
            "`\\u` lines |", ""]
    prof = cProfile.Profile()
    prof.enable()
    for c in chunks:
        ruleset.evaluate(c, c.data)
    prof.disable()
    for key, title in (("tottime", "self time"), ("cumulative", "inclusive time")):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats(key)
        total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2 if key == "tottime" else 3],  # type: ignore
                      reverse=True)[:14]
        out += [f"cProfile of the same pass, top functions by {title} (profiled total {total:.2f} s; cProfile "
                "inflates Python-level calls):", "", "| function | calls | self s | inclusive s |",
                "|---|---:|---:|---:|"]
        for (file, line, func), (_cc, nc, tt, ct, _callers) in rows:
            short = file.replace(str(ROOT) + "/", "").split("site-packages/")[-1]
            out.append(f"| `{short}:{line}({func})` | {nc:,} | {tt:.2f} | {ct:.2f} |")
        out.append("")
    return out


# ------------------------------------------------------------------------------------------------- report


def _rows(info: JsonLog, res: dict[str, list[Run]]) -> list[str]:
    labels = {
        "agent": ("dutytail (`python -m agent run`, `format: json`): one alert per rule, default pacing and storm "
                  "control", "process start → every line read and every match counted (/metrics, 0.1 s polls) "
                  "and the 20 events at the endpoint"),
        "appear": ("dutytail, the same, the file appearing on a running agent (the issue's measure)",
                   "hard link into the watched directory (1 s after ready) → same end"),
        "stress": ("dutytail, verification: `identity: [trace_id]`, every match its own alert and POST, delivery "
                   "limits lifted (diagnostic)", "process start → last event at the endpoint"),
        "jq": (f"`jq -c 'select(<20 rules OR-ed>)' FILE \\| wc -l` ({_jq_version()})", "exec → both exit"),
        "naive": ("naive Python: `orjson.loads` per line + 20 dict checks", "process start → exit"),
        "grep": (f"`LC_ALL=C grep -c -F '{GREP_LITERAL}'` (reference: one literal, no parsing)", "exec → exit"),
    }
    out = ["| contender | timed from → to | seconds | lines/s | MiB/s | CPU s | matches counted | note |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for key in ("agent", "appear", "stress", "jq", "naive", "grep"):
        runs = res.get(key, [])
        if not runs:
            continue
        name, timed = labels[key]
        good = [r for r in runs if r.ok]
        notes = sorted({r.note for r in runs if r.note})
        if key in ("agent", "appear", "stress") and good:
            notes.append(f"the endpoint's own CPU: {fmt_mmm([r.extra['endpoint_cpu'] for r in good], '{:.1f}')} s")
            notes.append(f"peak RSS {fmt_mmm([r.rss for r in good], '{:.0f}')} MiB (the agent process)")
            notes.insert(0, "CPU s: the agent process and its rule processes")
        if key == "stress" and good:
            r = good[-1]
            notes.append(f"{r.extra['events']:,} events = the planted numbers exactly (missing {r.extra['missing']}, "
                         f"duplicates {r.extra['duplicates']}, unexpected {r.extra['unexpected']})")
        if key == "grep":
            notes.append(f"{GREP_LITERAL} occurs on {good[0].count:,} lines" if good else "")
        failed = len(runs) - len(good)
        if failed:
            notes.insert(0, f"**{failed} of {len(runs)} run(s) failed**")
        note = "; ".join(notes).replace("|", "\\|")
        if not good:
            out.append(f"| {name} | {timed} | - | - | - | - | - | {note} |")
            continue
        secs = [r.seconds for r in good]
        counts = sorted({r.count for r in good if r.count is not None})
        count_s = ", ".join(f"{c:,}" for c in counts) if key != "grep" else "-"
        n = f" ({len(good)} run{'s' if len(good) > 1 else ''})"
        out.append(f"| {name}{n} | {timed} | {fmt_mmm(secs, '{:.2f}')} | {fmt_mmm([info.lines / s for s in secs])} | "
                   f"{fmt_mmm([info.mib / s for s in secs], '{:.1f}')} | {fmt_mmm([r.cpu for r in good], '{:.1f}')} | "
                   f"{count_s} | {note} |")
        if key in ("agent", "stress"):
            steady = [r.seconds - r.extra["ready_s"] for r in good
                      if not math.isnan(r.extra.get("ready_s", math.nan))]
            if steady:
                out.append(f"| ↳ same, after startup | first /metrics answer → same end | "
                           f"{fmt_mmm(steady, '{:.2f}')} | "
                           f"{fmt_mmm([info.lines / s for s in steady])} | "
                           f"{fmt_mmm([info.mib / s for s in steady], '{:.1f}')} | | | startup (imports of bytecode "
                           f"compiled beforehand as the package's postinst does, config, hyperscan compile on a fresh "
                           f"state directory): {fmt_mmm([r.extra['ready_s'] for r in good], '{:.2f}')} s |")
    return out


def _jq_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([_jq(), "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return "jq ?"


def _jq() -> str:
    return "/usr/bin/jq" if Path("/usr/bin/jq").exists() else "jq"


NOTES = "### Notes"


def write_section(path: Path, lines: list[str]) -> None:
    """Replace the section (its heading to the next ``## `` heading or the end), or append it at the end. A
    hand-written ``### Notes`` subsection of the old section is kept, after the new numbers."""
    text = path.read_text() if path.exists() else ""
    body = "\n".join(lines).rstrip() + "\n"
    start = text.find("\n" + SECTION + "\n")
    if start < 0:
        path.write_text(text.rstrip() + "\n\n" + body)
        return
    nxt = text.find("\n## ", start + 1)
    old = text[start:nxt] if nxt >= 0 else text[start:]
    rest = text[nxt:] if nxt >= 0 else ""
    notes = old.find("\n" + NOTES)
    if notes >= 0:
        body += "\n" + old[notes + 1:].rstrip() + "\n"
    path.write_text(text[: start + 1] + body + rest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default=None, help="file size (default 1GiB; --quick: 100MiB)")
    ap.add_argument("--quick", action="store_true", help="~100 MiB, 1 run")
    ap.add_argument("--runs", type=int, default=None, help="runs per contender (default 3; --quick: 1)")
    ap.add_argument("--stress-runs", type=int, default=1, help="runs of the per-match verification row (0: skip)")
    ap.add_argument("--contenders", default="agent,appear,stress,jq,naive,grep")
    ap.add_argument("--profile", action="store_true", help="then profile the rule stage in-process")
    ap.add_argument("--profile-only", action="store_true", help="only the in-process profile")
    ap.add_argument("--profile-mib", type=int, default=64, help="MiB of the file the profile reads (default 64)")
    ap.add_argument("--no-write", action="store_true", help="don't touch bench/RESULTS.md")
    ap.add_argument("--naive-worker", metavar="FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_worker:
        naive_worker(args.naive_worker)
        return
    runs = args.runs or (1 if args.quick else 3)
    size = parse_size(args.size or ("100MiB" if args.quick else "1GiB"))
    info = generate(OUT / f"json-{size >> 20}MiB.log", size)
    log(f"file: {info.path} {info.mib:,.0f} MiB, {info.lines:,} lines, {info.matches:,} planted matches, "
        f"{info.escaped_lines:,} lines with \\u escapes, {info.non_ascii_lines:,} with raw UTF-8")
    wanted = [c.strip() for c in args.contenders.split(",") if c.strip()]
    started = time.time()
    code0 = code_version()
    mach = machine()
    res: dict[str, list[Run]] = {k: [] for k in ("agent", "appear", "stress", "jq", "naive", "grep")}
    workdir = fresh_dir(OUT / "formats")
    timeout = 120 + info.mib
    if {"agent", "appear", "stress"} & set(wanted):
        compile_bytecode()
    if not args.profile_only:
        for i in range(runs):
            for key in ("grep", "jq", "naive", "agent", "appear"):
                if key not in wanted:
                    continue
                log(f"run {i + 1}/{runs}: {key}")
                if key in ("agent", "appear"):
                    r = run_agent(info, workdir, timeout, appear=key == "appear")
                elif key == "jq":
                    r = run_jq(info, _jq())
                elif key == "naive":
                    r = run_naive(info, timeout * 10)
                else:
                    r = run_grep(info)
                res[key].append(r)
                log(f"  {key}: {r.seconds:.2f} s, {info.lines / r.seconds:,.0f} lines/s, count {r.count}, "
                    f"ok {r.ok} {r.note}")
        if "stress" in wanted:
            for i in range(args.stress_runs):
                log(f"verification run {i + 1}/{args.stress_runs}: agent, every match its own event")
                r = run_agent(info, workdir, timeout + info.matches / 100, stress=True)
                res["stress"].append(r)
                log(f"  stress: {r.seconds:.2f} s ok {r.ok} {r.note} {r.extra}")
    code1 = code_version()
    cmd = "python bench/formats.py " + " ".join(a for a in sys.argv[1:] if a != "--no-write")
    with open("/proc/loadavg") as fh:
        load_end = " ".join(fh.read().split()[:3])
    out = [
        SECTION,
        "",
        f"Generated by `{cmd.strip()}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} "
        f"({runs} run(s) per contender; min / median / max over runs, lines/s computed per run). Load average "
        f"{mach['loadavg_at_start']} at the start, {load_end} at the end; {mach['cores']} cores ({mach['cpu']}). "
        f"Agent code: HEAD `{code0['head']}`, uncommitted changes in agent/: {code0['dirty']}, content hash "
        f"`{code0['hash']}`" + ("" if code1["hash"] == code0["hash"] else
                                f" (**changed during the run**: `{code1['hash']}` at the end)") + ".",
        "",
        f"File: {info.mib:,.0f} MiB, {info.lines:,} JSON lines (~{info.bytes / info.lines:.0f} bytes: time, level, "
        f"service, msg, a nested `req` object with method, path, status, bytes, dur_ms; trace_id, user) from ten "
        f"services; {info.escaped_lines:,} lines ({info.escaped_lines / info.lines:.2%}) hold a `\\uXXXX` escape "
        f"and {info.non_ascii_lines:,} ({info.non_ascii_lines / info.lines:.2%}) raw UTF-8; many messages hold "
        f'escaped quotes. {info.matches:,} planted lines ({info.matches / info.lines:.2%}) each match exactly one '
        f"of the 20 rules and carry a unique number (trace_id's first 8 characters); the file ends with one; every "
        "other line matches no rule, many come close (same service, another service's 5xx, `payment declined` at "
        "level info, ...). Generated by `bench/formats.py` (seeded; cached in bench/out/).",
        "",
        "Rules (agent YAML, on a source with `format: json`; `match`/`contains` apply to the record's `msg`): "
        + "; ".join(f"`{r['name']}`: " + ", ".join(
            ([f"match `{r['match']}`"] if "match" in r else []) + ([f"contains `{r['contains']}`"] if "contains" in r
                                                                   else [])
            + [f"{p} {json.dumps(c, ensure_ascii=False)}" for p, c in r.get("where", {}).items()]) for r in RULES)
        + ".",
        "",
        *_rows(info, res),
        "",
    ]
    scope = "" if info.mib >= 1000 else f" (the target is the 1 GiB file's; this run read {info.mib:,.0f} MiB)"
    if res["agent"]:
        good = [r.seconds for r in res["agent"] if r.ok]
        if good:
            med = info.lines / mmm(good)[1]
            verdict = "**met**" if med >= TARGET else "**not met**"
            out.append(f"Target (median of the first row, end to end from process start): >= {TARGET:,} lines/s: "
                       f"{verdict} ({med:,.0f} lines/s){scope}.")
        appeared = [r.seconds for r in res["appear"] if r.ok]
        if appeared:
            med = info.lines / mmm(appeared)[1]
            out.append(f"Target as the issue words it (from the file's appearance to the last event; median of the "
                       f"appearance row): {'**met**' if med >= TARGET else '**not met**'} ({med:,.0f} lines/s){scope}.")
        checks = []
        if good:
            checks.append(f"the agent's per-rule match counts (`dutytail_rule_matches_total`) equal the planted ones "
                          f"in every run ({info.matches:,})")
        if any(r.ok for r in res["jq"]):
            checks.append(f"jq counted {info.matches:,}")
        if any(r.ok for r in res["naive"]):
            checks.append(f"the naive loop {info.matches:,}, rule by rule the planted counts")
        if any(r.ok for r in res["stress"]):
            checks.append("the verification row delivered one event per planted line, each planted number once")
        out += ["", "Same answers: " + "; ".join(checks) + ".", ""]
    if args.profile or args.profile_only:
        out += profile_rules(info, args.profile_mib << 20)
    (OUT / "formats.json").write_text(json.dumps({"info": {**info.__dict__, "path": str(info.path)},
                                                  "runs": {k: [r.__dict__ for r in v] for k, v in res.items()}},
                                                 indent=1, default=str))
    text = "\n".join(out)
    print(text)
    if not args.no_write:
        write_section(ROOT / "bench" / "RESULTS.md", out)
        log("wrote the section to bench/RESULTS.md")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: each contender stops what it started
    main()
