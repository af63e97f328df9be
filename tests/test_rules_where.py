"""``where:`` conditions (agent/rules/where.py): every operator at its edges, and the config errors users see."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import ConfigError, parse_config
from agent.rules import FieldCondition, Where


def holds(condition: Any, fields: dict[str, Any], path: str = "f") -> bool:
    return Where({path: FieldCondition.from_config(condition)}).holds(fields)


@pytest.mark.parametrize(("condition", "value", "expected"), [
    ("error", "error", True), ("error", "Error", False), ("500", 500, True),  # a string compares with the text
    (500, 500, True), (500, "500", True), (500, 500.0, True), (500, "5e2", True), (500, "0500", False),
    (500, 501, False), (True, True, True), (True, "true", True), (True, 1, False), (False, False, True),
    (None, None, True), (None, "", False), ({"eq": 0}, 0, True), ({"eq": 0}, False, False),
    ({"ne": "a"}, "b", True), ({"ne": "a"}, "a", False), ({"ne": 5}, "x", True),
    ({"in": ["POST", "PUT"]}, "PUT", True), ({"in": ["POST", "PUT"]}, "GET", False), ({"in": [1, "x"]}, "1", True),
    ({"not_in": ["a"]}, "b", True), ({"not_in": ["a"]}, "a", False),
    ({"match": "^/api/"}, "/api/x", True), ({"match": "^/api/"}, "/x/api/", False), ({"match": "^5"}, 503, True),
    ({"not_match": "^/api/"}, "/x", True), ({"not_match": "x"}, "x", False),
    ({"gt": 500}, 501, True), ({"gt": 500}, 500, False), ({"gte": 500}, 500, True), ({"gte": 500}, 499.99, False),
    ({"lt": 300}, "299", True), ({"lt": 300}, 300, False), ({"lte": 300}, 300, True), ({"lte": 3}, "3", True),
    ({"gte": 500}, "abc", False), ({"gte": 500}, True, False),  # not numbers: the numeric order does not apply
    ({"gte": "b"}, "c", True), ({"gte": "b"}, "a", False), ({"gte": "b"}, 7, False),  # strings as strings
    ({"gte": 1, "lt": 5}, 3, True), ({"gte": 1, "lt": 5}, 5, False),  # several operators: all must hold
    ({"exists": True}, None, True), ({"exists": True}, "", True), ({"exists": False}, 1, False),
    ({"match": "x"}, {"x": 1}, False), ({"eq": "[1]"}, [1], False),  # objects and arrays have no text
])
def test_operator_edges(condition: Any, value: Any, expected: bool) -> None:
    assert holds(condition, {"f": value}) is expected


@pytest.mark.parametrize(("condition", "expected"), [
    ("x", False), ({"ne": "x"}, False), ({"not_in": ["x"]}, False), ({"not_match": "x"}, False),
    ({"lt": 5}, False), ({"exists": True}, False), ({"exists": False}, True),
])
def test_a_missing_field_holds_only_exists_false(condition: Any, expected: bool) -> None:
    assert holds(condition, {"other": "x"}) is expected


def test_dotted_paths_reach_nested_objects_arrays_and_dotted_keys() -> None:
    record = {"req": {"method": "POST", "hops": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}, "tags": ["a", "b"],
              "k8s.pod": "flat"}
    assert holds("POST", record, "req.method")
    assert holds("10.0.0.2", record, "req.hops.1.ip")
    assert holds("b", record, "tags.1")
    assert not holds({"exists": True}, record, "tags.2")
    assert holds("flat", record, "k8s.pod")  # a key that holds dots is found first
    assert not holds("x", record, "req.method.x")


def test_all_conditions_must_hold() -> None:
    where = Where({"status": FieldCondition.from_config({"gte": 500}),
                   "level": FieldCondition.from_config("error")})
    assert where.holds({"status": 503, "level": "error"})
    assert not where.holds({"status": 503, "level": "info"})
    assert not where.holds({"level": "error"})


CONFIG = """\
flashduty: {{integration_key: k}}
logs:
  - name: api
    paths: [/var/log/api.log]
    format: {format}
    rules:
      - name: r
        where:
{where}
"""


@pytest.mark.parametrize(("where", "line", "col", "message"), [
    ("          status: {between: 5}", 9, 19, "unknown operator 'between'"),
    ("          req.path: {match: '(unclosed'}", 9, 29, "invalid regex"),
    ("          status: {gte: [1]}", 9, 25, "needs a number"),
    ("          status: {in: []}", 9, 24, "an empty list never holds"),
    ("          status: [500, 503]", 9, 19, "a list needs an operator"),
    ("          level: {eq: {a: 1}}", 9, 23, "needs a scalar"),
    ("          req: {method: POST}", 9, 16, "written with dots"),
    ('          "bad path": x', 9, 11, "without spaces"),
])
def test_config_errors_name_file_line_and_column(where: str, line: int, col: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.format(format="json", where=where), "api.yaml")
    problems = caught.value.problems
    assert any(p.message.find(message) >= 0 for p in problems), str(caught.value)
    problem = next(p for p in problems if message in p.message)
    assert (problem.file, problem.line, problem.column) == ("api.yaml", line, col), str(caught.value)


def test_a_plain_text_source_has_no_fields_to_name() -> None:
    with pytest.raises(ConfigError, match="does not exist in a plain-text source") as caught:
        parse_config(CONFIG.format(format="raw", where="          status: {gte: 500}"), "raw.yaml")
    assert caught.value.problems[0].line == 7
    # named groups and the Kubernetes path fields are fields of a plain-text line
    text = CONFIG.format(format="raw", where="          code: {gte: 500}\n          k8s_namespace: shop")
    text = text.replace("        where:", "        match: 'code=(?P<code>\\d+)'\n        where:")
    config = parse_config(text, "raw.yaml")
    assert list(config.logs[0].rules[0].where) == ["code", "k8s_namespace"]


def test_structured_sources_may_name_any_field_in_identity_and_templates() -> None:
    text = CONFIG.format(format="json", where="          level: error") + (
        "        identity: [req.path]\n"
        "        title: '{status} on {req.path}'\n"
        "        labels: {service: '{service}'}\n")
    rule = parse_config(text, "ok.yaml").logs[0].rules[0]
    assert rule.field_paths() == {"req.path", "status", "service"}
    # the same rule in a plain-text source is refused with the reason
    with pytest.raises(ConfigError, match="needs a structured source"):
        parse_config(text.replace("format: json", "format: raw").replace("where:\n          level: error\n",
                                                                        "match: x\n"), "raw.yaml")


def test_a_rule_needs_something_to_match_on() -> None:
    text = CONFIG.format(format="json", where="").replace("        where:\n", "")
    with pytest.raises(ConfigError, match=r"needs `match`.*`contains`.*or `where`"):
        parse_config(text, "empty.yaml")
