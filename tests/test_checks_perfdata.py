"""Nagios plugin output parsing: summary, long output and perfdata in all the shapes plugins print."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.checks import PerfData, parse_perfdata, parse_plugin_output
from agent.checks.result import CheckResult, render_perfdata, template_fields


def test_full_plugin_output_layout() -> None:
    text = (
        "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n"
        "/ 15272 MB (77%);\n"
        "/boot 68 MB (69%);\n"
        "/home 69357 MB (27%); | /boot=68MB;88;93;0;98\n"
        "'/home dir'=69357MB;253404;253409;0;253414\n"
        "/var/log=818MB;970;975;0;980\n"
    )
    summary, long_output, perf = parse_plugin_output(text)
    assert summary == "DISK OK - free space: / 3326 MB (56%);"
    assert long_output == "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);"
    assert [p.label for p in perf] == ["/", "/boot", "/home dir", "/var/log"]
    assert perf[0] == PerfData("/", 2643.0, "MB", "5948", "5958", 0.0, 5968.0)
    assert perf[2].value == 69357.0 and perf[2].uom == "MB"


def test_summary_only_and_empty() -> None:
    assert parse_plugin_output("OK\n") == ("OK", "", [])
    assert parse_plugin_output("") == ("", "", [])
    assert parse_plugin_output("just text\nmore text\n") == ("just text", "more text", [])


def test_perfdata_item_shapes() -> None:
    items = parse_perfdata(
        "time=0.002s;1.000;5.000;0.000;10.000 'it''s here'=5 ratio=U;;; size=12,5KB;@10:20;~:30 "
        "junk =3 bad=abc c=12c pct=99.5%;80;90"
    )
    by_label = {p.label: p for p in items}
    assert set(by_label) == {"time", "it's here", "ratio", "size", "c", "pct"}
    assert by_label["time"] == PerfData("time", 0.002, "s", "1.000", "5.000", 0.0, 10.0)
    assert by_label["it's here"].value == 5.0
    assert by_label["ratio"].value is None
    assert by_label["size"] == PerfData("size", 12.5, "KB", "@10:20", "~:30", None, None)
    assert by_label["c"].uom == "c"
    assert by_label["pct"].uom == "%" and by_label["pct"].crit == "90"


def test_real_check_load_output() -> None:
    text = (
        "LOAD OK - total load average: 0.08, 0.18, 0.10|load1=0.080;5.000;10.000;0; "
        "load5=0.180;5.000;10.000;0; load15=0.100;5.000;10.000;0; \n"
    )
    summary, _, perf = parse_plugin_output(text)
    assert summary == "LOAD OK - total load average: 0.08, 0.18, 0.10"
    assert [(p.label, p.value, p.max) for p in perf] == [
        ("load1", 0.08, None),
        ("load5", 0.18, None),
        ("load15", 0.1, None),
    ]


def test_template_fields_sanitize_labels() -> None:
    result = CheckResult(
        "WARNING",
        "sum",
        "long",
        [PerfData("/var/log", 818.0, "MB"), PerfData("Queue Depth", 3.5), PerfData("var-log", 1.0)],
        duration=0.25,
        exit_code=1,
    )
    fields = template_fields(result)
    assert fields["raw_status"] == "WARNING"
    assert fields["summary"] == "sum" and fields["output"] == "long"
    assert fields["duration"] == "0.250" and fields["exit_code"] == "1"
    assert fields["perf_var_log"] == "818"  # first of two labels that sanitise alike wins
    assert fields["perf_queue_depth"] == "3.5"
    assert fields["perfdata"] == "/var/log=818MB 'Queue Depth'=3.5 var-log=1"


labels = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="|\n\r\x0b\x0c"),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() == s and not s.isspace())
values = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@given(st.lists(st.tuples(labels, values, st.sampled_from(["", "s", "ms", "%", "B", "KB", "c"])), max_size=6))
def test_render_parse_roundtrip(items: list[tuple[str, float, str]]) -> None:
    perf = [PerfData(label, value, uom, "10", "20", 0.0, 100.0) for label, value, uom in items]
    parsed = parse_perfdata(render_perfdata(perf))
    assert [(p.label, p.uom, p.warn, p.crit, p.min, p.max) for p in parsed] == [
        (p.label, p.uom, p.warn, p.crit, p.min, p.max) for p in perf
    ]
    for want, got in zip(perf, parsed, strict=True):
        assert got.value is not None and want.value is not None
        assert abs(got.value - want.value) <= 1e-5 * max(1.0, abs(want.value))
