"""Bench data: 20 realistic rules and a generator of a realistic mixed log (cached under bench/out/).

The log mixes syslog (sshd, CRON, systemd, kernel, dockerd), nginx access and error lines and a Java
application log with multi-line stack traces of *harmless* exceptions. A fraction (default 0.1%) of the
lines is a "rare" line that matches exactly one rule; each rare line carries a unique number. With
``rules_yaml(identity=True)`` the rule captures it as the alert's identity, so every matching line is its own
alert and produces exactly one event (the file always ends with a rare line, so "last event delivered"
implies "whole file read"); without identity there is one alert per rule.

Every rule is given in Python ``re`` syntax (what the agent uses) and mechanically translated to POSIX ERE
for ``grep -E`` (named groups and ``(?:`` dropped, ``\\d`` spelled ``[0-9]``).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

GEN_VERSION = 4
_POOL = 200_000

# (name, Python regex with the identity group `id`, template of a matching line; {n} is the unique number)
RULES: list[tuple[str, str, str]] = [
    ("oom-kill", r"Out of memory: Killed process (?P<id>\d+) \((?P<comm>[^)]+)\)",
     "{ts} {host} kernel: [{up}] Out of memory: Killed process {n} (java) total-vm:8123456kB, anon-rss:7654321kB"),
    ("segfault", r"(?P<comm>\w+)\[(?P<id>\d+)\]: segfault at [0-9a-f]+ ip",
     "{ts} {host} kernel: [{up}] worker[{n}]: segfault at 7f3a2c ip 00007f3a2c1d sp 00007ffd1e error 4"),
    ("ssh-bruteforce", r"sshd\[(?P<id>\d+)\]: Failed password for (?:invalid user )?(?P<user>\S+) from",
     "{ts} {host} sshd[{n}]: Failed password for invalid user admin from 203.0.113.{b} port 51234 ssh2"),
    ("disk-io", r"I/O error, dev (?P<dev>\w+), sector (?P<id>\d+)",
     "{ts} {host} kernel: [{up}] blk_update_request: I/O error, dev sdb, sector {n} op 0x0:(READ)"),
    ("disk-full", r"could not write to file \"(?P<id>[^\"]+)\": No space left on device",
     '{ts} {host} postgres[812]: ERROR: could not write to file "base/pgsql_tmp/pgsql_tmp812.{n}": '
     "No space left on device"),
    ("unit-failed", r"systemd\[1\]: (?P<id>\S+)\.service: Failed with result",
     "{ts} {host} systemd[1]: batch-{n}.service: Failed with result 'exit-code'."),
    ("http-5xx", r"\"(?:GET|POST|PUT|DELETE) (?P<id>\S+) HTTP/1\.[01]\" (?P<status>5\d\d) ",
     '10.1.{a}.{b} - - [{clf}] "POST /api/v1/orders/{n} HTTP/1.1" 502 157 "-" "okhttp/4.12.0" rt=30.001'),
    ("upstream-timeout", r"upstream timed out \(110: Connection timed out\) .* request: \"(?P<id>[^\"]+)\"",
     "{nts} [error] 3141#3141: *{n} upstream timed out (110: Connection timed out) while reading response "
     'header from upstream, client: 10.1.{a}.{b}, server: shop, request: "GET /cart/{n} HTTP/1.1"'),
    ("upstream-refused", r"connect\(\) failed \(111: Connection refused\) .* request: \"(?P<id>[^\"]+)\"",
     "{nts} [error] 3141#3141: *{n} connect() failed (111: Connection refused) while connecting to upstream, "
     'client: 10.1.{a}.{b}, server: shop, request: "GET /search/{n} HTTP/1.1"'),
    ("java-uncaught", r"Exception in thread \"(?P<id>[^\"]+)\" (?P<exc>[\w.]+)",
     '{jts} ERROR [main] c.e.Launcher - Exception in thread "worker-{n}" java.lang.IllegalStateException: '
     "queue closed"),
    ("java-oom", r"java\.lang\.OutOfMemoryError: (?P<what>[\w ]+) \[trace=(?P<id>\w+)\]",
     "{jts} ERROR [http-nio-8080-exec-3] c.e.OrderService - java.lang.OutOfMemoryError: Java heap space "
     "[trace={n:x}]"),
    ("db-pool", r"HikariPool-\d+ - Connection is not available, request timed out after \d+ms \[req=(?P<id>\w+)\]",
     "{jts} WARN [http-nio-8080-exec-7] c.z.h.pool.HikariPool - HikariPool-1 - Connection is not available, "
     "request timed out after 30000ms [req={n:x}]"),
    ("db-deadlock", r"Deadlock found when trying to get lock; .*txn=(?P<id>\d+)",
     "{jts} ERROR [http-nio-8080-exec-2] o.h.e.j.s.SqlExceptionHelper - Deadlock found when trying to get lock; "
     "try restarting transaction txn={n}"),
    ("tls-expired", r"x509: certificate has expired .* cn=(?P<id>\S+)",
     "{ts} {host} dockerd[812]: x509: certificate has expired or is not yet valid: cn=svc-{n}.internal"),
    ("k8s-crash", r"pod/(?P<id>\S+) .*reason=(?:OOMKilled|CrashLoopBackOff)",
     "{ts} {host} kubelet[1123]: pod/api-{n:x} container=api restarts=5 reason=CrashLoopBackOff"),
    ("logfmt-error", r"level=(?:error|crit) .*trace_id=(?P<id>[0-9a-f]+)",
     '{ts} {host} gateway[4411]: ts=2026-11-27T08:00:00Z level=error msg="backend failed" trace_id={n:x}'),
    ("go-panic", r"panic: runtime error: .* \[goroutine (?P<id>\d+)\]",
     "{ts} {host} ingest[9001]: panic: runtime error: invalid memory address or nil pointer dereference "
     "[goroutine {n}]"),
    ("slow-order", r"took (?P<ms>\d{5,}) ms .*order=(?P<id>\d+)",
     "{jts} WARN [scheduler-1] c.e.OrderService - settlement took 123456 ms for order={n}"),
    ("pg-auth", r"FATAL:  password authentication failed for user \"(?P<id>[^\"]+)\"",
     '{ts} {host} postgres[1912]: FATAL:  password authentication failed for user "svc{n}"'),
    ("hung-task", r"INFO: task (?P<comm>[^:\s]+):(?P<id>\d+) blocked for more than \d+ seconds",
     "{ts} {host} kernel: [{up}] INFO: task jbd2/sda1-8:{n} blocked for more than 120 seconds."),
]

HOSTS = ["web-1", "web-2", "db-1", "worker-7"]
PATHS = ["/api/v1/items", "/login", "/static/app.js", "/health", "/api/v2/orders/42", "/search?q=shoes",
         "/cart", "/static/css/site.css", "/api/v1/users/me", "/favicon.ico"]
AGENTS = ["curl/8.4.0", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
          "kube-probe/1.28", "Go-http-client/1.1", "okhttp/4.12.0"]
CLASSES = ["c.e.OrderService", "c.e.http.Router", "o.h.SQL", "c.z.h.HikariPool", "c.e.cache.Loader"]
STATUSES = [200] * 12 + [201, 204, 301, 304, 400, 401, 403, 404, 404, 499]
TRACE = [
    "java.net.SocketTimeoutException: Read timed out",
    "\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)",
    "\tat java.base/sun.nio.ch.NioSocketImpl.implRead(NioSocketImpl.java:314)",
    "\tat java.base/java.net.Socket$SocketInputStream.read(Socket.java:1099)",
    "\tat okhttp3.internal.http1.Http1ExchangeCodec.readResponseHeaders(Http1ExchangeCodec.kt:180)",
    "\tat c.e.client.PricingClient.fetch(PricingClient.java:77)",
    "\tat c.e.OrderService.price(OrderService.java:212)",
    "\t... 42 common frames omitted",
]


def ere(pattern: str) -> str:
    """The POSIX ERE (GNU grep -E) form of one of RULES' patterns (only the constructs used there)."""
    out = re.sub(r"\(\?P<\w+>", "(", pattern).replace("(?:", "(").replace(r"\d", "[0-9]")
    out = out.replace(r"\"", '"').replace(r"[^:\s]", "[^:[:space:]]")
    return out.replace(r"[\w.]", "[[:alnum:]_.]").replace(r"[\w ]", "[[:alnum:]_ ]")


def rules_yaml(indent: str = "      ", identity: bool = True) -> str:
    """The rules as YAML list items for a `logs:` source (identity: the unique number, or none: one alert
    per rule, so 20 events however many lines match)."""
    lines = []
    for name, pattern, _ in RULES:
        lines.append(f"{indent}- name: {name}")
        lines.append(f"{indent}  match: {json.dumps(pattern)}")
        lines.append(f"{indent}  identity: {'[id]' if identity else '[]'}")
        lines.append(f"{indent}  severity: Warning")
    return "\n".join(lines) + "\n"


@dataclass
class LogInfo:
    path: Path
    lines: int
    matches: int
    bytes: int

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


def _normal_line(rnd: random.Random, i: int, out: list[str]) -> None:
    sec = i // 400
    hh, mm, ss = sec // 3600 % 24, sec // 60 % 60, sec % 60
    kind = rnd.random()
    host = rnd.choice(HOSTS)
    if kind < 0.38:  # nginx access
        out.append(
            f'10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)} - - '
            f'[27/Nov/2026:{hh:02d}:{mm:02d}:{ss:02d} +0000] "{rnd.choice(("GET", "GET", "POST"))} '
            f'{rnd.choice(PATHS)} HTTP/1.1" {rnd.choice(STATUSES)} {rnd.randrange(50, 90000)} "-" '
            f'"{rnd.choice(AGENTS)}" rt={rnd.random():.3f}'
        )
    elif kind < 0.45:  # nginx error log, harmless
        out.append(
            f"2026/11/27 {hh:02d}:{mm:02d}:{ss:02d} [warn] 3141#3141: *{rnd.randrange(10**6)} an upstream "
            f"response is buffered to a temporary file /var/cache/nginx/proxy_temp/{rnd.randrange(10**4)} while "
            f'reading upstream, client: 10.2.{rnd.randrange(256)}.{rnd.randrange(256)}, server: shop'
        )
    elif kind < 0.75:  # syslog
        pid = rnd.randrange(100, 40000)
        ts = f"Nov 27 {hh:02d}:{mm:02d}:{ss:02d} {host}"
        r = rnd.random()
        if r < 0.2:
            msg = (f"sshd[{pid}]: Accepted publickey for deploy from 10.0.0.{rnd.randrange(256)} port "
                   f"{rnd.randrange(1024, 65535)} ssh2: ED25519 SHA256:Zm9vYmFyYmF6")
        elif r < 0.4:
            msg = f"CRON[{pid}]: (root) CMD (   test -x /usr/lib/php/sessionclean && /usr/lib/php/sessionclean)"
        elif r < 0.6:
            msg = f"systemd[1]: Started session-{pid}.scope - Session {pid} of User deploy."
        elif r < 0.8:
            msg = f"kernel: [{rnd.random() * 1e5:.6f}] eth0: renamed from veth{pid:x}, link up, 1000Mbps"
        else:
            msg = (f'dockerd[812]: time="2026-11-27T{hh:02d}:{mm:02d}:{ss:02d}Z" level=info '
                   f'msg="container {pid:x} health status healthy"')
        out.append(f"{ts} {msg}")
    else:  # java application log, sometimes with a harmless stack trace
        level = rnd.choice(("INFO", "INFO", "INFO", "DEBUG", "WARN"))
        out.append(
            f"2026-11-27 {hh:02d}:{mm:02d}:{ss:02d}.{rnd.randrange(1000):03d} {level} "
            f"[http-nio-8080-exec-{rnd.randrange(20)}] {rnd.choice(CLASSES)} - processed order "
            f"{rnd.randrange(10**6)} in {rnd.randrange(900)} ms user={rnd.choice(('alice', 'bob', 'carol'))}"
        )
        if level == "WARN" and rnd.random() < 0.3:
            out.extend(TRACE)


def _rare_line(rnd: random.Random, i: int, n: int) -> str:
    _, _, template = RULES[n % len(RULES)]
    sec = i // 400
    hh, mm, ss = sec // 3600 % 24, sec // 60 % 60, sec % 60
    return template.format(
        n=n, ts=f"Nov 27 {hh:02d}:{mm:02d}:{ss:02d}", host=rnd.choice(HOSTS), up=f"{rnd.random() * 1e5:.6f}",
        a=rnd.randrange(256), b=rnd.randrange(256), clf=f"27/Nov/2026:{hh:02d}:{mm:02d}:{ss:02d} +0000",
        nts=f"2026/11/27 {hh:02d}:{mm:02d}:{ss:02d}", jts=f"2026-11-27 {hh:02d}:{mm:02d}:{ss:02d}.000",
    )


def check_rules() -> None:
    """Every rare template matches exactly its own rule; sampled normal lines match none."""
    compiled = [re.compile(p) for _, p, _ in RULES]
    rnd = random.Random(7)
    for k in range(len(RULES)):
        line = _rare_line(rnd, 1000, k + 10 * len(RULES))
        hits = [j for j, rx in enumerate(compiled) if rx.search(line)]
        if hits != [k]:
            raise SystemExit(f"rare line of rule {RULES[k][0]} matches rules {hits}: {line}")
    normal: list[str] = []
    for i in range(20000):
        _normal_line(rnd, i, normal)
    for line in normal:
        if any(rx.search(line) for rx in compiled):
            raise SystemExit(f"normal line matches a rule: {line}")


def generate(path: Path, size: int, match_fraction: float = 0.001, seed: int = 1) -> LogInfo:
    """Write about ``size`` bytes (cached with a .json sidecar keyed by size, fraction, seed, version)."""
    path = path.resolve()
    meta_path = path.with_suffix(".json")
    want = {"size": size, "fraction": match_fraction, "seed": seed, "version": GEN_VERSION}
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == want and path.stat().st_size == meta["bytes"]:
            return LogInfo(path, meta["lines"], meta["matches"], meta["bytes"])
    check_rules()
    path.parent.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    # A pool of pre-rendered normal records (a stack trace stays one unit), sampled per block: generating
    # every line from scratch costs ~3 min per GiB; sampling costs seconds and matches at the same speed.
    pool: list[str] = []
    for i in range(_POOL):
        unit: list[str] = []
        _normal_line(rnd, i, unit)
        pool.append("\n".join(unit))
    per_unit = match_fraction * sum(u.count("\n") + 1 for u in pool) / len(pool)  # fraction of *lines*
    written = lines = matches = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        i = 0
        while written < size:
            block = rnd.choices(pool, k=20000)
            for k in range(len(block)):
                if rnd.random() < per_unit:
                    block[k] = _rare_line(rnd, i + k, matches)
                    matches += 1
            i += len(block)
            text = "\n".join(block) + "\n"
            fh.write(text)
            written += len(text.encode())
            lines += text.count("\n")
        last = _rare_line(rnd, i, matches) + "\n"  # the file ends with a match: see the module docstring
        fh.write(last)
        written += len(last.encode())
        lines += 1
        matches += 1
    tmp.rename(path)
    meta_path.write_text(json.dumps({"params": want, "lines": lines, "matches": matches, "bytes": written}))
    return LogInfo(path, lines, matches, written)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"bad size {text!r} (examples: 1GiB, 512MiB, 100MiB)")
    unit = (m.group(2) or "B").upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit])
