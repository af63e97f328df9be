"""Glob helpers of agent/fileid.py: a glob as a regex (``*``, ``**``, character classes), and which directory a
glob needs watched."""

from __future__ import annotations

from agent.fileid import glob_to_regex, watch_base


def test_glob_helpers() -> None:
    rx = glob_to_regex("/var/log/*.log")
    assert rx.match("/var/log/a.log") and not rx.match("/var/log/sub/a.log")
    assert glob_to_regex("/var/**/*.log").match("/var/log/sub/a.log")
    assert glob_to_regex("/var/**/*.log").match("/var/a.log")
    assert glob_to_regex("/x/[!a]?.gz").match("/x/bc.gz") and not glob_to_regex("/x/[!a]?.gz").match("/x/ac.gz")
    assert watch_base("/var/log/*.log") == ("/var/log", False)
    assert watch_base("/var/log/*/app.log") == ("/var/log", True)
    assert watch_base("/var/log/app.log") == ("/var/log", False)
