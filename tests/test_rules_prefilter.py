"""The raw-bytes prefilter (agent/rules/prefilter.py) never changes an answer: a rule set that decides on the
raw bytes first gives exactly the hits of one that parses every line (hypothesis-generated records, rules and
encodings: escapes, floats written every way JSON allows, logfmt quoting, lines that are not records)."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.format.values import as_number
from agent.lines import LineChunk
from agent.match import MultiMatcher
from agent.rules import RuleConfig, RuleSet
from agent.rules.prefilter import Prefilter, at_least, condition, literal, regex_literal
from agent.rules.records import NOT_AN_OBJECT_LINE
from agent.rules.where import FieldCondition

TEXT = st.text(alphabet=st.sampled_from(list('ab5E0.-" \\/é\u2028:=x')), max_size=4)
NUMBERS = st.one_of(st.integers(-1000, 100_000), st.floats(allow_nan=False, allow_infinity=False, width=32))
# Conditions and records draw mostly from one small pool, so that conditions hold often enough to matter.
POOL = st.sampled_from(["error", "500.0", "aé", "é\u2028", "500", "5e2", "/api/x", 'q"x', "a\\b", "a/b", "ab", 500, 503,
                        5e2, 499.5, 0, -1, 1e-7, 1e21, True, False, None])
SCALARS = st.one_of(POOL, POOL, POOL, TEXT, NUMBERS, st.booleans(), st.none())
KEYS = st.sampled_from(["status", "level", "msg", "path", "n"])
PATHS = st.sampled_from(["status", "level", "msg", "path", "n", "req.status", "req.path", "tags.0", "k8s_pod"])
VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=6)
RECORDS = st.dictionaries(st.one_of(KEYS, st.just("req"), st.just("tags")), VALUES, max_size=5)


def encode_json(record: dict[str, Any], style: int) -> str:
    """The ways JSON writers spell one record: compact UTF-8, ASCII with \\u escapes, spaced, Go-style escapes."""
    if style == 0:
        return orjson.dumps(record).decode()
    if style == 1:
        return json.dumps(record, ensure_ascii=True)
    if style == 2:
        return json.dumps(record, ensure_ascii=False, separators=(" , ", " :  "))
    floats: list[float] = []

    def mark(value: Any) -> Any:  # floats as other writers spell them (5.000000E+02 for 500.0)
        if isinstance(value, float):
            floats.append(value)
            return f"@F{len(floats) - 1}@"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(record), ensure_ascii=False).replace("/", "\\/")  # PHP and some Java writers
    for i, number in enumerate(floats):
        text = text.replace(f'"@F{i}@"', format(number, "E") if number != 0 else "0.0e0")
    return text.replace("<", "\\u003c")


def encode_logfmt(record: dict[str, Any]) -> str:
    parts = []
    for key, value in record.items():
        if isinstance(value, dict | list) or value is None:
            continue
        text = "true" if value is True else "false" if value is False else str(value)
        if value is True and key.startswith("n"):
            parts.append(key)  # a bare key
        elif text and not re.search(r'[\s"=\\]', text):
            parts.append(f"{key}={text}")
        else:
            parts.append(f'{key}="' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(parts)


REGEXES = ["^/api/", "ab", "5", "(?i)AB", "é", r"\d{3}", "x$", "a.b", "^$", "00", r"0\.0"]
OPERATORS = st.sampled_from(["eq", "ne", "in", "not_in", "match", "not_match", "gt", "gte", "lt", "lte", "exists"])


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(OPERATORS)
    if op in ("eq", "ne"):
        return {op: draw(SCALARS)}
    if op in ("in", "not_in"):
        return {op: draw(st.lists(SCALARS, min_size=1, max_size=3))}
    if op in ("match", "not_match"):
        return {op: draw(st.sampled_from(REGEXES))}
    if op == "exists":
        return {op: draw(st.booleans())}
    return {op: draw(st.one_of(st.integers(-5, 2000), st.floats(-10, 2000, allow_nan=False), TEXT))}


@st.composite
def rules(draw: st.DrawFn) -> list[RuleConfig]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        spec: dict[str, Any] = {"name": f"r{i}", "where": draw(st.dictionaries(PATHS, conditions(), max_size=3))}
        message = draw(st.sampled_from([None, "match", "contains"]))
        if message == "match":
            spec["match"] = draw(st.sampled_from(["ab", "(?P<code>5[0-9]{2})", "^x", "(?i)é", "a/b"]))
        elif message == "contains" or not spec["where"]:
            spec["contains"] = draw(st.sampled_from(["ab", '"', "5e", "x"]))
        if draw(st.booleans()):
            spec["resolve"] = {"match": draw(st.sampled_from(["recovered", "ab"]))}
        rule = RuleConfig.model_validate(spec)
        rule.check_for_source(True)
        out.append(rule)
    return out


def other_types(value: Any) -> list[Any]:
    """``value`` and the same value in the other types a writer could give it (``"500.0"``, ``500.0``, ``500``)."""
    out = [value]
    number = as_number(value) if not isinstance(value, bool) else None
    if number is not None:
        out += [float(number), str(number)]
        if float(number).is_integer() and abs(number) < 1e15:
            out.append(int(number))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out.append(str(value))
    return out


def plant(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``record`` with ``value`` at a dotted path (``req.status``, ``tags.0``)."""
    first, _, rest = path.partition(".")
    if not rest:
        return {**record, first: value}
    inner = [value] if rest == "0" else {rest: value}
    return {**record, first: inner}


@st.composite
def records_for(draw: st.DrawFn, rule_set: list[RuleConfig]) -> dict[str, Any]:
    """A record that, more often than chance, carries the values the rules' conditions name."""
    record = draw(RECORDS)
    for rule in rule_set:
        for path, cond in rule.where.items():
            if draw(st.integers(0, 2)) == 0:
                continue
            operands = [o for op, o in cond.operators() if op in ("eq", "ne", "gt", "gte", "lt", "lte")]
            operands += [x for op, o in cond.operators() if op in ("in", "not_in") for x in o]
            value = draw(st.sampled_from(operands)) if operands and draw(st.booleans()) else draw(SCALARS)
            record = plant(record, path, draw(st.sampled_from(other_types(value))))
    return record


def answer(hits: Any) -> list[tuple[int, str, str, dict[str, str]]]:
    return [(h.rule, h.kind, h.line, h.groups) for h in hits]


def check(ruleset_rules: list[RuleConfig], lines: list[str], formats: tuple[Any, ...], path: str = "") -> None:
    fast = RuleSet(ruleset_rules, formats=formats)
    slow = RuleSet(ruleset_rules, formats=formats, prefilter=False)
    expected = answer(slow.evaluate(lines, path=path))
    assert answer(fast.evaluate(lines, path=path)) == expected
    data = "\n".join(lines).encode()
    chunk = LineChunk(data, len(lines), ascii=data.isascii())
    assert answer(fast.evaluate(chunk, path=path)) == expected
    # after its first lines the filter looks for each side's rarest pattern only: the same answers
    assert fast.records is not None
    fast.records.raw.sample_lines = 1
    assert answer(fast.evaluate(lines, path=path)) == expected  # sampling, then the switch
    assert answer(fast.evaluate(chunk, path=path)) == expected
    assert answer(fast.evaluate(lines, path=path)) == expected
    # a rule process adopts the plan the agent learned, without sampling: the same answers
    adopted = RuleSet(ruleset_rules, formats=formats)
    plan = fast.learned_plan()
    if plan is not None:
        adopted.adopt_plan(plan)
        assert adopted.learned_plan() == plan
    assert answer(adopted.evaluate(chunk, path=path)) == expected


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[RuleConfig], list[tuple[dict[str, Any], int]]]:
    rule_set = draw(rules())
    return rule_set, draw(st.lists(st.tuples(records_for(rule_set), st.integers(0, 4)), min_size=1, max_size=8))


@SETTINGS
@given(case=cases())
def test_json_prefilter_gives_the_answer_of_parsing_every_line(
        case: tuple[list[RuleConfig], list[tuple[dict[str, Any], int]]]) -> None:
    rule_set, records = case
    lines = [encode_json(r, style) if style < 4 else f"plain ab {r.get('status')} recovered" for r, style in records]
    check(rule_set, lines, ("json",))
    # records cut short (no object: the raw text with its escapes is the message) next to whole ones
    check(rule_set, [json.dumps(r, ensure_ascii=True)[:-1] if style % 2 else line
                     for (r, style), line in zip(records, lines, strict=True)], ("json",))


@SETTINGS
@given(case=cases())
def test_logfmt_prefilter_gives_the_answer_of_parsing_every_line(
        case: tuple[list[RuleConfig], list[tuple[dict[str, Any], int]]]) -> None:
    rule_set, records = case
    check(rule_set, [encode_logfmt(r) or "ab no pairs" for r, _style in records], ("logfmt",))


@SETTINGS
@given(case=cases())
def test_container_chains_give_the_answer_of_parsing_every_line(
        case: tuple[list[RuleConfig], list[tuple[dict[str, Any], int]]]) -> None:
    rule_set, pairs = case
    records = [(r, style % 2 == 1) for r, style in pairs]
    cri = [f"2026-11-27T08:00:00.{i:09d}Z {'stderr' if err else 'stdout'} F {encode_json(r, i % 4)}"
           for i, (r, err) in enumerate(records)]
    path = "/var/log/containers/api-1_shop_server-" + "ab" * 32 + ".log"
    check(rule_set, cri, ("cri", "json"), path)
    docker = [orjson.dumps({"log": encode_json(r, i % 4) + "\n", "stream": "stderr" if err else "stdout",
                            "time": "2026-11-27T08:00:00Z"}).decode() for i, (r, err) in enumerate(records)]
    check(rule_set, docker, ("docker", "json"))


def test_a_slash_escaped_inside_a_docker_record_is_still_a_candidate() -> None:
    """``\\/`` in a JSON message is ``\\\\/`` in the Docker line that carries it (found by the property test
    above): a value or regex literal holding a slash must be looked for past any run of backslashes."""
    rules = [RuleConfig.model_validate({"name": "eq", "where": {"status": "a/b"}}),
             RuleConfig.model_validate({"name": "match", "where": {"path": {"match": "^/api/"}}})]
    inner = ['{"status": "a\\/b"}', '{"path": "\\/api\\/x"}', '{"status": "a/b", "path": "/api/"}']
    docker = [orjson.dumps({"log": m + "\n", "stream": "stdout", "time": "2026-11-27T08:00:00Z"}).decode()
              for m in inner]
    docker.append(docker[0].replace("/", "\\/"))  # a Docker writer that escapes slashes itself: a\\\/b
    check(rules, docker, ("docker", "json"))
    assert len(answer(RuleSet(rules, formats=("docker", "json")).evaluate(docker))) == 5


def test_at_least_is_exactly_the_integers_from_its_bound() -> None:
    for bound in (1, 9, 10, 99, 100, 109, 500, 999, 1000, 4096):
        rx = re.compile(f"(?:{at_least(bound)})\\Z")
        assert [n for n in range(0, 20_000) if rx.match(str(n))] == list(range(bound, 20_000))


def test_prefilters_pick_selective_literals() -> None:
    assert literal('say "hi" to/me') == Prefilter("\\ to\\\\{0,3}/me", 12)  # a slash may be written \\/ (or \\\\/)
    assert literal("é") is None  # too short to be worth it
    assert regex_literal(r"^/api/v1/(?P<x>\w+) timeout").score == 16  # type: ignore[union-attr]
    assert regex_literal(r"(?i)error: (a|b)") == Prefilter("(?i:(?:error:\\ a)|(?:error:\\ b))", 15)
    assert regex_literal(r"payment (declined|failed)") is not None
    assert re.search(regex_literal(r"certificate (has )?expired").pattern, "certificate has expired")  # type: ignore[union-attr]
    assert regex_literal(r"\d+|x") is None
    gte = condition("req.status", FieldCondition.from_config({"gte": 500}), keyed=True)
    assert gte is not None and re.search(gte.pattern, '"status": 503') and not re.search(gte.pattern, '"status":404')
    prefix = condition("req.path", FieldCondition.from_config({"match": "^/admin/"}), keyed=True)
    assert prefix is not None and re.search(prefix.pattern, '"path":"\\/admin\\/x"')
    assert not re.search(prefix.pattern, '"path":"/x/admin/"')
    assert condition("k8s_pod", FieldCondition.from_config({"gte": 5}), keyed=False) is None
    assert condition("n", FieldCondition.from_config({"ne": 5}), keyed=True) is None


def test_lines_that_cannot_be_objects_are_counted_alike_on_bytes_and_lines() -> None:
    from agent.rules.records import evidently_not_json

    lines = ['{"a":1}', "plain", " {\"b\":2}", "", "\t{}", "[1]", "{broken", "x", '{"c":3}']
    data = "\n".join(lines).encode()
    assert evidently_not_json(lines, None) == 3  # plain, [1], x: `{broken` starts like one (counted if parsed)
    assert evidently_not_json(LineChunk(data, len(lines), ascii=True), None) == 3
    first = ["oops", '{"a":1}']
    assert evidently_not_json(LineChunk("\n".join(first).encode(), 2, ascii=True), None) == 1
    # the multi-pattern engine's count (what a json source uses) is the same, ASCII or not
    engine = MultiMatcher([NOT_AN_OBJECT_LINE])
    assert engine.engine != "re"
    for sample in (lines, first, ["é{", "{}", "", "\r{}", " x", "ü"], [""], ["{}"]):
        raw = "\n".join(sample).encode()
        chunk = LineChunk(raw, len(sample), ascii=raw.isascii())
        assert evidently_not_json(chunk, None, engine) == evidently_not_json(sample, None), sample


def test_an_escaped_line_that_is_no_object_is_nominated_for_its_raw_text() -> None:
    """Written out, ``caf\\u00e9`` no longer holds the literal ``u00e9``; a line that is no JSON object keeps its
    raw text as its message, so it must be nominated for what that text holds too."""
    rules = [RuleConfig.model_validate({"name": "raw-escape", "contains": "caf\\u00e9 down"}),
             RuleConfig.model_validate({"name": "written", "contains": "café down", "where": {"level": "error"}})]
    lines = ['caf\\u00e9 down, not JSON {', '{"level":"error","msg":"caf\\u00e9 down"}', '[1, "caf\\u00e9 down"]']
    check(rules, lines, ("json",))
    hits = RuleSet(rules, formats=("json",)).evaluate(lines)
    assert [(h.rule, h.line) for h in hits] == [(0, lines[0]), (1, "café down"), (0, lines[2])]


def test_a_keyed_condition_is_looked_for_by_its_value_alone_only_while_that_is_rare() -> None:
    """``level: fatal``: the engine stops at every ``level`` key, but finds ``fatal`` in passing. The value alone
    becomes the side's primary while it nominates few more lines than the keyed form; in a log where the word
    is in many messages the keyed form stays primary. Either way the answers are parsing every line's."""
    rules = [RuleConfig.model_validate({"name": "fatal", "where": {"level": "fatal"}})]

    def primary(lines: list[str]) -> str:
        fast = RuleSet(rules, formats=("json",))
        data = "\n".join(lines).encode()
        chunk = LineChunk(data, len(lines), ascii=True)
        expected = answer(RuleSet(rules, formats=("json",), prefilter=False).evaluate(lines))
        assert answer(fast.evaluate(chunk)) == expected  # sampling (the first 4,000 lines), then the lean plan
        assert answer(fast.evaluate(chunk)) == expected and len(expected) == lines.count(lines[0])
        assert fast.records is not None
        plan = fast.records.raw.learned()
        assert plan is not None
        return fast.records.raw.patterns[plan[0]]

    fatal = '{"level":"fatal","msg":"disk gone"}'
    quiet = [fatal] + ['{"level":"info","msg":"request served"}'] * 4999
    assert primary(quiet) == "(?:fatal)"
    noisy = [fatal] + ['{"level":"info","msg":"a fatal error was retried"}'] * 4999
    assert primary(noisy).startswith("level")
