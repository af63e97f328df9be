"""`dutytail` command line: run, check-config, test-rule, dead-letters, status, send-test."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

from agent import __version__
from agent.config import Config, ConfigError, LogSourceConfig, load_config
from agent.logsetup import LIVE_REDACTORS, Redactor, configure_logging

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed: its C event loop halves the cost of every HTTP request and
    thread hand-off, which is most of what the agent does per event. ``DUTYTAIL_EVENT_LOOP=asyncio``
    selects the standard loop (to rule the loop out when debugging)."""
    loop_factory = None
    if os.environ.get("DUTYTAIL_EVENT_LOOP", "uvloop") != "asyncio":
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def _load(path: str) -> Config | None:
    """The validated config, or None after printing every problem (file:line:col) to stderr."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(Redactor().text(str(exc)), file=sys.stderr)
        return None
    return config


def _redactor(config: Config) -> Redactor:
    """This command's redactor: the config's secrets, kept out of what it prints and logs."""
    redactor = Redactor(config.secrets())
    LIVE_REDACTORS.register(redactor)
    return redactor


# --- run / check-config -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from agent.app import Agent, install_signal_handlers

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    dry_run = all(o.dry_run() for o in config.flashduty)
    # In dry run stdout carries the event bodies (pipe them to jq); logs move to stderr.
    configure_logging(config.log_level, stream=sys.stderr if dry_run else sys.stdout, log_format=config.log_format)

    async def main() -> None:
        agent = Agent(config, args.config, redactor=_redactor(config))
        stop = asyncio.Event()
        install_signal_handlers(agent, stop)
        await agent.run(stop)

    from agent.outbox import StateDirBusy, StoreUnavailable

    try:
        run_async(main())
    except (StateDirBusy, StoreUnavailable) as exc:
        print(f"dutytail: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    redactor = _redactor(config)
    sources = [*config.logs, *config.journal]
    rules = sum(len(s.rules) for s in sources)
    print(f"{args.config}: OK ({len(sources)} sources, {rules} rules, {len(config.checks)} checks, "
          f"{len(config.flashduty)} outputs)")
    for file in config.files[1:]:
        here = [s.name for s in sources if config.origin(s.name) == file]
        checks = [c.name for c in config.checks if config.origin(c.name) == file]
        print(f"  {file}: OK ({len(here)} sources{': ' + ', '.join(here) if here else ''}; {len(checks)} checks"
              f"{': ' + ', '.join(checks) if checks else ''})")
    for source in sources:
        info = source.compile_rules().describe()
        slow = sorted({str(f.get("pattern")) for f in info.get("fallback") or [] if isinstance(f, dict)})
        note = f"; checked with Python re on every line (slower): {', '.join(slow)}" if slow else ""
        if info.get("rules_parsing_every_line"):
            note += (f"; {info['rules_parsing_every_line']} rule side(s) without a raw-bytes prefilter parse every "
                     f"line (slower: give them a literal value, a `contains` or a `gte` bound)")
        fmt = f"format {'+'.join(source.formats)}, " if source.formats != ("raw",) else ""
        print(f"  source {source.name} ({config.origin(source.name)}): {fmt}matcher {info.get('engine')}{note}")
    for output in config.flashduty:
        where = "dry run (events printed to stdout)" if output.dry_run() else redactor.text(
            _safe_url(output))
        print(f"  output {output.name}: {where}")
    return EXIT_OK


def _safe_url(output: Any) -> str:
    try:
        return str(output.resolved_url())
    except OSError as exc:
        return f"(cannot read push_url_file: {exc.strerror})"


# --- test-rule ------------------------------------------------------------------------------------

Replayed = tuple[float, dict[str, Any], dict[str, Any] | None]
"""(time, the event body, what the line that caused it looked like to the rules: None for a clock event)."""


def replay(config: Config, lines: Iterable[str], *, source_name: str | None, rule_name: str | None,
           path: str, settle: bool = True) -> list[Replayed]:
    """Run lines through the configured rules and the alert engine on a clock read from the lines.

    Pure: no state directory, no network. Lines without a timestamp keep the previous line's time
    (the first ones start at the epoch's day 0 + line number, so ordering still holds). Absence and
    expect rules run on the same clock, their clocks starting at the first line; at the end (``settle``)
    the clock moves past every quiet period and wait, so what is still silent, unfinished or open at the end
    of the input shows as the events it would send. A structured source's lines are parsed as the agent
    parses them; each event says which fields its line had.
    """
    from agent.alerts import AlertEngine, hit_events
    from agent.format import kubernetes_fields
    from agent.linetime import line_time
    from agent.source import SourceStats
    from agent.tail.partials import PartialJoiner, framing_for
    from agent.tail.stream import Stream

    sources = [*config.logs, *config.journal]
    if source_name:
        sources = [s for s in sources if s.name == source_name]
    engine = AlertEngine(config.alerts, host=config.host, global_labels=config.labels,
                         default_output=config.flashduty[0].name, line_clock=False)
    compiled = []
    for source in sources:
        rules = [r for r in source.rules if rule_name is None or r.name == rule_name]
        if rules:
            framing = source.framing() if isinstance(source, LogSourceConfig) else None
            joiner = None if framing is None else PartialJoiner(  # container partials, joined as the tailer does
                framing_for(framing), max_line_bytes=source.max_line_bytes, stats=SourceStats(), source=source.name)
            compiled.append((source.name, rules, source.compile_rules(rules), joiner, Stream(path, 0, 0)))
    out: list[Replayed] = []

    def advance(to: float) -> list[Replayed]:
        """Tick at every absent/expect deadline before ``to`` (they fire on the log's clock), then at ``to``."""
        events = []
        while True:
            due = min((s.deadline for s in engine.states.values() if s.deadline and not s.firing
                       and s.deadline < to), default=None)
            if due is None:
                break
            events += [(due, e.body, None) for e in engine.tick(due)]
        return events + [(to, e.body, None) for e in engine.tick(to)]

    now = 0.0
    year = datetime.now(UTC).year
    for index, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        stamp = line_time(line, year)
        now = stamp if stamp is not None else (now if now else float(index))
        if index == 0:
            for name, rules, *_ in compiled:
                out += [(now, e.body, None) for e in engine.watch_rules(name, rules, now)]
        out += advance(now)
        for name, rules, ruleset, joiner, stream in compiled:
            for record_line in joiner.join(stream, [line], [index])[0] if joiner is not None else [line]:
                hits = ruleset.evaluate([record_line], path=path)
                events = hit_events(engine, name, rules, path, hits, now)
                if events:
                    record = ruleset.parser.parse(record_line) if ruleset.parser is not None else None
                    seen = {"line": record_line, "message": record.message if record else record_line,
                            "fields": {**(record.fields if record else {}), **kubernetes_fields(path)},
                            "parse_error": record.error if record else None}
                    out += [(now, e.body, seen) for e in events]
    if settle:
        # Show how open alerts would end: advance the clock past every quiet period.
        for _ in range(2):  # a wait that runs out, then the quiet period of what it opened
            horizon = max((max(s.resolve_after or 0.0, 0.0 if s.firing else s.wait) for s in engine.states.values()),
                          default=0.0)
            if not horizon:
                break
            now += horizon + 1
            out += advance(now)
    return out


def cmd_test_rule(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    configure_logging("warning", stream=sys.stderr)  # stdout is the events (`--json | jq` must parse)
    names = {(s.name, r.name) for s in [*config.logs, *config.journal] for r in s.rules}
    if args.rule and args.rule not in {r for _, r in names}:
        print(f"no rule named {args.rule!r}; rules: {sorted(r for _, r in names)}", file=sys.stderr)
        return EXIT_FAILURE
    stream: TextIO
    with contextlib.ExitStack() as stack:
        if args.logfile in (None, "-"):
            stream, path = sys.stdin, "-"
        else:
            stream = stack.enter_context(open(args.logfile, encoding="utf-8", errors="replace"))
            path = args.logfile
        events = replay(config, stream, source_name=args.source, rule_name=args.rule, path=path,
                        settle=not args.no_settle)
    if args.json:
        for at, body, seen in events:
            shown = {"at": _fmt_time(at), "body": body}
            if seen is not None:
                shown["from"] = seen
            print(json.dumps(shown, ensure_ascii=False, default=str))
        return EXIT_OK
    print_event_table([(at, body) for at, body, _seen in events], sys.stdout)
    return EXIT_OK


def _fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_event_table(events: Sequence[tuple[float, dict[str, Any]]], out: TextIO) -> None:
    if not events:
        print("no events would be sent", file=out)
        return
    rows = [(_fmt_time(at), b["event_status"], b["alert_key"][:20], b["title_rule"][:70]) for at, b in events]
    headers = ("time", "status", "alert_key", "title")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), file=out)
    print(f"\n{len(events)} event(s) would be sent", file=out)


# --- dead letters -----------------------------------------------------------------------------------


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from agent.outbox import Outbox

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    redact = _redactor(config).text

    async def main() -> int:
        outbox = Outbox(config.state_dir, config.outbox)
        await outbox.open()
        try:
            if args.action == "list":
                rows = await outbox.dead_letters.list()
                if args.json:
                    for row in rows:
                        print(redact(json.dumps(row, ensure_ascii=False, default=str)))
                elif not rows:
                    print("no dead letters")
                for row in rows if not args.json else []:
                    body = json.loads(row["body"])
                    print(redact(f"#{row['id']}  {_fmt_time(row['failed_at'])}  output={row['output']}  "
                          f"HTTP {row['status']} {row['error_code']}: {row['message']}  "
                          f"request_id={row['request_id'] or '-'}\n     {body.get('event_status')} "
                          f"{body.get('alert_key')}  {body.get('title_rule', '')[:80]}"))
                return EXIT_OK
            ids = None if args.all else args.ids
            if ids is not None and not ids:
                print(f"say which dead letters to {args.action}: IDs or --all", file=sys.stderr)
                return EXIT_FAILURE
            if args.action == "retry":
                count = await outbox.dead_letters.retry(ids)
                print(f"re-queued {count} dead letter(s); a running agent sends them within seconds")
            else:
                count = await outbox.dead_letters.purge(ids)
                print(f"purged {count} dead letter(s)")
            return EXIT_OK
        finally:
            await outbox.close()

    return run_async(main())


# --- status and send-test -------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request  # here, not at the top: `dutytail run` never needs it (~0.5 MiB of RSS with http.client)

    url = args.url
    token = None
    if url is None:
        config = _load(args.config)
        if config is None:
            return EXIT_CONFIG
        from agent.health import split_listen

        host, port = split_listen(config.health.listen)
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{port}"
        token = config.health.token
    request = urllib.request.Request(url.rstrip("/") + "/status")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            data = json.loads(response.read(4 * 1024 * 1024))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"cannot reach the agent at {url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if not isinstance(data, dict) or not isinstance(data.get("version"), str) or not isinstance(
            data.get("outbox"), dict):
        print(f"{url}/status answered, but not with a dutytail status document: is a dutytail agent listening "
              f"there?", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(render_status(data))
    return EXIT_OK


def render_status(data: dict[str, Any]) -> str:
    lines = [
        f"dutytail {data.get('version')}  {data.get('status')}  up {data.get('uptime_seconds', 0):.0f}s  "
        f"host {data.get('host')}",
    ]
    if data.get("config_error"):
        lines.append(f"CONFIG ERROR (old config still running):\n  {data['config_error']}")
    outbox = data.get("outbox", {})
    lines.append(f"outbox: {outbox.get('depth')} queued, oldest {outbox.get('oldest_age_seconds') or 0:.0f}s, "
                 f"{outbox.get('dead_letters')} dead letters, dropped {outbox.get('dropped') or 0}"
                 + ("  DISK FULL" if outbox.get("disk_full") else ""))
    for name, out in data.get("outputs", {}).items():
        last = out.get("last_success")
        ago = f"{time.time() - last:.0f}s ago" if last else "never"
        lines.append(f"output {name}: sent {out.get('sent')}, failed {out.get('failed')}, "
                     f"last success {ago}" + (f", last error: {out['last_error']}" if out.get("last_error") else ""))
    for name, src in data.get("sources", {}).items():
        files = src.get("files") or []
        total = int(src.get("files_total", len(files)))  # /status lists at most 1,000 files per source
        fmt = "+".join(src.get("format") or ["raw"])
        parse_errors = sum((src.get("parse_errors") or {}).values())
        lines.append(f"source {name} ({src.get('kind')}, from {src.get('config_file') or '-'}): {total} files, "
                     f"format {fmt}" + (f" ({parse_errors} lines did not parse)" if parse_errors else "")
                     + f", matcher {(src.get('matcher') or {}).get('engine')}")
        for f in files[:20]:
            err = f" ERROR {f['last_error']}" if f.get("last_error") else ""
            lines.append(f"  {f.get('path')}  {f.get('state', '')}  offset {f.get('offset')}  "
                         f"lag {f.get('lag_bytes', 0)} bytes{err}")
        unlisted = total - min(len(files), 20)
        if unlisted > 0 and files:
            lines.append(f"  ... and {unlisted} more files" + (f" ({src['files_omitted']} not listed)"
                                                              if src.get("files_omitted") else ""))
        errors = src.get("errors")
        for problem in errors if isinstance(errors, list) else []:
            lines.append(f"  ERROR {problem.get('path')}: {problem.get('error')}")
        if isinstance(src.get("error"), str):
            lines.append(f"  ERROR {src['error']}")
    for alert in data.get("self_alerts") or []:
        lines.append(f"SELF ALERT {alert.get('condition')} {alert.get('object')}: {alert.get('title')}"
                     + ("" if alert.get("notified") else "  (not delivered yet)"))
    alerts = data.get("alerts", [])
    lines.append(f"open alerts: {len(alerts)}")
    for alert in alerts[:20]:
        lines.append(f"  {alert['severity']:<8} {alert['source']}/{alert['name']}  count {alert['count']}  "
                     f"key {alert['alert_key']}")
    for name, check in (data.get("checks") or {}).items():
        if isinstance(check, dict):
            lines.append(f"check {name}: {check.get('last_status') or check.get('status')} "
                         f"{check.get('summary', '')}")
    return "\n".join(lines)


def cmd_send_test(args: argparse.Namespace) -> int:
    from agent.events import Event, stable_alert_key
    from agent.sender import send_once

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    redactor = _redactor(config)

    async def main() -> int:
        worst = EXIT_OK
        for output in config.flashduty:
            if output.dry_run():
                print(f"output {output.name}: no push_url set (dry run) — nothing to test")
                worst = EXIT_FAILURE
                continue
            key = "dutytail-send-test-" + stable_alert_key(config.host, output.name)[:12]
            for status in ("Info", "Ok"):
                event = Event(title=f"dutytail send-test from {config.host}", status=status,  # type: ignore[arg-type]
                              alert_key=key, description="Connectivity test sent by `dutytail send-test`.",
                              labels={"host": config.host, "source": "dutytail", **config.labels},
                              event_time=int(time.time()))
                try:
                    outcome = await send_once(output, event.to_body(), redactor)
                except OSError as exc:
                    print(f"output {output.name}: cannot read push URL: {exc}")
                    return EXIT_FAILURE
                verdict = "OK" if outcome.ok else ("FAILED (retryable)" if outcome.retryable else "REJECTED")
                detail = f"HTTP {outcome.status}" if outcome.status else "no response"
                extra = f" {outcome.code}: {outcome.message}" if not outcome.ok else ""
                print(redactor.text(f"output {output.name}: {status} event {verdict} — {detail}{extra} "
                                    f"request_id={outcome.request_id or '-'}"))
                if not outcome.ok:
                    worst = EXIT_FAILURE
                    break
        return worst

    return run_async(main())


# --- entry point ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dutytail", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dutytail {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", default="/etc/dutytail/config.yaml", help="config file")
        return p

    with_config(sub.add_parser("run", help="run the agent in the foreground")).set_defaults(func=cmd_run)
    with_config(sub.add_parser("check-config", help="validate a config file")).set_defaults(func=cmd_check_config)
    p = with_config(sub.add_parser("test-rule", help="replay a log through the rules, print the events"))
    p.add_argument("logfile", nargs="?", help="log file to replay, or - for stdin (default)")
    p.add_argument("--rule", help="only this rule")
    p.add_argument("--source", help="only this source")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--no-settle", action="store_true", help="don't advance the clock at the end to show recoveries")
    p.set_defaults(func=cmd_test_rule)
    p = with_config(sub.add_parser("dead-letters", help="list, retry or purge events Flashduty rejected"))
    p.add_argument("action", choices=["list", "retry", "purge"])
    p.add_argument("ids", nargs="*", type=int)
    p.add_argument("--all", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dead_letters)
    p = with_config(sub.add_parser("status", help="summary from the running agent's /status"))
    p.add_argument("--url", help="agent health URL (default from the config's health.listen)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    with_config(sub.add_parser("send-test", help="send an Info event and its Ok to every output")).set_defaults(
        func=cmd_send_test)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run" and not Path(args.config).exists() and args.command != "status":
        print(f"{args.config}: no such config file", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dutytail test-rule --json log | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # so the flush at exit does not fail again
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
