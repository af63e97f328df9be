"""The `logs:` model (agent/tail/config.py): defaults, sizes and durations, encodings, unknown keys, the
multiline regex, and the app's subclass with rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.tail import MultilineConfig, TailConfig


def test_config_defaults_and_validation() -> None:
    c = TailConfig(name="x", paths=["/var/log/*.log"])
    assert c.start_at == "end" and c.max_line_bytes == 65536 and c.read_chunk_bytes == 1 << 20
    assert c.max_open_files == 1024 and c.fingerprint_bytes == 256 and c.poll_interval == 1.0
    assert TailConfig(name="x", paths=["a"], max_line_bytes="1KiB", rotate_wait="500ms").max_line_bytes == 1024
    assert TailConfig(name="x", paths=["a"], encoding="GBK").encoding == "gbk"
    with pytest.raises(ValidationError, match="unknown encoding"):
        TailConfig(name="x", paths=["a"], encoding="nope-8")
    with pytest.raises(ValidationError, match="ASCII-compatible"):
        TailConfig(name="x", paths=["a"], encoding="utf-16")
    with pytest.raises(ValidationError, match="extra"):
        TailConfig(name="x", paths=["a"], bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="invalid regex"):
        MultilineConfig(start="(")

    class WithRules(TailConfig):  # the app's config subclasses the tail config
        rules: list[str] = []

    assert WithRules(name="x", paths=["a"], rules=["r"]).rules == ["r"]
