"""The format stage (agent/format): JSON, logfmt, CRI and Docker framing, chains, the message field, and the
Kubernetes fields of kubelet log paths."""

from __future__ import annotations

import pytest

from agent.format import Parser, kubernetes_fields, normalize_chain
from agent.format.logfmt import parse_logfmt
from agent.format.values import as_number, as_text, template_text

CID = "0123456789abcdef" * 4


def test_json_nested_objects_arrays_and_message_field() -> None:
    record = Parser(["json"]).parse('{"msg":"boom","req":{"path":"/api/x","tags":["a","b"]},"status":503}')
    assert record.error is None and record.message == "boom"
    assert record.fields["req"]["tags"][1] == "b" and record.fields["status"] == 503
    # default message: first present of msg, message, log; else the whole line
    assert Parser(["json"]).parse('{"message":"m","log":"l"}').message == "m"
    assert Parser(["json"]).parse('{"log":"l"}').message == "l"
    assert Parser(["json"]).parse('{"a":1}').message == '{"a":1}'
    # an explicit message_field, a dotted path; a non-text value does not count as present
    assert Parser(["json"], "req.path").parse('{"msg":"m","req":{"path":"/p"}}').message == "/p"
    assert Parser(["json"]).parse('{"msg":{"x":1},"message":"fallback"}').message == "fallback"


@pytest.mark.parametrize("line", ["plain text", '{"unterminated": ', "[1,2]", '"a string"', "", "{}x"])
def test_json_lines_that_do_not_parse_keep_their_text_as_the_message(line: str) -> None:
    record = Parser(["json"]).parse(line)
    assert record.error == "json" and record.fields == {} and record.message == line


@pytest.mark.parametrize(("line", "fields"), [
    ('a=1 b="x y" flag', {"a": "1", "b": "x y", "flag": True}),
    ('msg="say \\"hi\\" \\\\ done" n=3', {"msg": 'say "hi" \\ done', "n": "3"}),
    ('k= v=2', {"k": "", "v": "2"}),
    ('  a=1   b=2  ', {"a": "1", "b": "2"}),
    ('a=1 a=2', {"a": "2"}),  # a later duplicate wins (go-logfmt)
    ('req.path=/x level=error', {"req.path": "/x", "level": "error"}),
    ('m="line\\nnext\\ttab"', {"m": "line\nnext\ttab"}),
    ('url=http://h/?q=1&r=2', {"url": "http://h/?q=1&r=2"}),
])
def test_logfmt_pairs_quoting_and_bare_keys(line: str, fields: dict[str, object]) -> None:
    assert parse_logfmt(line) == fields


@pytest.mark.parametrize("line", ["hello world", 'a="unterminated', 'x="a"b', '"quoted"=1', ""])
def test_logfmt_refuses_what_is_not_logfmt(line: str) -> None:
    assert parse_logfmt(line) is None
    assert Parser(["logfmt"]).parse(line).error == "logfmt"


def test_logfmt_dotted_key_is_found_by_its_path() -> None:
    record = Parser(["logfmt"]).parse("req.path=/api msg=done")
    assert record.message == "done" and record.fields["req.path"] == "/api"


def test_cri_and_docker_framing_give_stream_time_and_message() -> None:
    cri = Parser(["cri"]).parse("2026-11-27T08:00:00.123456789Z stderr F connection refused")
    assert cri.error is None and cri.message == "connection refused"
    assert cri.fields == {"stream": "stderr", "time": "2026-11-27T08:00:00.123456789Z"}
    assert Parser(["cri"]).parse("2026-11-27T08:00:00Z stdout F").message == ""
    assert Parser(["cri"]).parse("not a cri line at all").error == "cri"
    docker = Parser(["docker"]).parse('{"log":"oops\\n","stream":"stdout","time":"2026-11-27T08:00:00Z"}')
    assert docker.message == "oops" and docker.fields["stream"] == "stdout"
    assert Parser(["docker"]).parse('{"stream":"stdout"}').error == "docker"


def test_chains_frame_first_then_parse_the_message() -> None:
    record = Parser(["cri", "json"]).parse('2026-11-27T08:00:00Z stdout F {"msg":"m","level":"error","stream":"x"}')
    assert record.message == "m" and record.fields["level"] == "error"
    assert record.fields["stream"] == "x"  # the application's own field wins over the framing's
    docker = Parser(["docker", "logfmt"]).parse('{"log":"level=warn msg=\\"disk low\\"\\n","stream":"stderr"}')
    assert docker.message == "disk low" and docker.fields == {"stream": "stderr", "level": "warn", "msg": "disk low"}
    # a framed message that is not JSON: framing fields kept, the message is the container's message
    bad = Parser(["cri", "json"]).parse("2026-11-27T08:00:00Z stdout F panic: nil map")
    assert bad.error == "json" and bad.message == "panic: nil map" and bad.fields["stream"] == "stdout"


@pytest.mark.parametrize(("value", "error"), [
    ("yaml", "unknown format"), (["json", "logfmt"], "at most one"), (["cri", "docker"], "at most one"),
    (["json", "cri"], "comes first"), (["raw", "json"], "cannot be combined"), ([], "must be one of"),
])
def test_format_chain_errors(value: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        normalize_chain(value)


def test_format_chain_accepts_names_and_lists() -> None:
    assert normalize_chain("json") == ("json",)
    assert normalize_chain(["cri", "json"]) == ("cri", "json")
    assert normalize_chain("raw") == ("raw",)


def test_kubernetes_fields_from_both_kubelet_path_forms() -> None:
    expected = {"k8s_namespace": "shop", "k8s_pod": "api-7d4b9c-x2x9z", "k8s_container": "server"}
    assert kubernetes_fields(f"/var/log/containers/api-7d4b9c-x2x9z_shop_server-{CID}.log") == expected
    pods = "/var/log/pods/shop_api-7d4b9c-x2x9z_4f9a2c1e-1111-2222-3333-444455556666/server/0.log"
    assert kubernetes_fields(pods) == expected
    assert kubernetes_fields(pods.replace("0.log", "3.log.20261201-101500.gz")) == expected  # rotated
    assert kubernetes_fields("/var/log/app/server.log") == {}
    assert kubernetes_fields(f"/var/log/containers/no-namespace-{CID}.log") == {}


def test_value_model_text_and_numbers() -> None:
    assert as_number("503") == 503 and as_number("-1.5e2") == -150.0 and as_number(7) == 7
    for not_a_number in (" 5", "0x1f", "1_000", "05", "5.", "", True, None, [1]):
        assert as_number(not_a_number) is None, not_a_number
    assert as_text(True) == "true" and as_text(3) == "3" and as_text(None) is None and as_text({"a": 1}) is None
    assert template_text(None) == "" and template_text({"a": 1}) == '{"a":1}'
