"""The `logs:` model (agent/tail/config.py): defaults, sizes and durations, encodings, unknown keys, the
multiline regex, and the app's subclass with rules."""

from __future__ import annotations

import pytest

from agent.model import ModelError
from agent.tail import MultilineConfig, TailConfig


def problem(data: dict[str, object], model: type[TailConfig] | type[MultilineConfig] = TailConfig) -> str:
    """The one problem ``data`` has as ``model`` (``key: message``)."""
    with pytest.raises(ModelError) as caught:
        model.model_validate(data)
    assert len(caught.value.problems) == 1
    return str(caught.value)


def test_config_defaults_and_validation() -> None:
    c = TailConfig(name="x", paths=["/var/log/*.log"])
    assert c.start_at == "end" and c.max_line_bytes == 65536 and c.read_chunk_bytes == 1 << 20
    assert c.max_open_files == 1024 and c.fingerprint_bytes == 256 and c.poll_interval == 1.0
    parsed = TailConfig.model_validate({"name": "x", "paths": ["a"], "max_line_bytes": "1KiB", "rotate_wait": "500ms"})
    assert parsed.max_line_bytes == 1024 and parsed.rotate_wait == 0.5
    assert TailConfig(name="x", paths=["a"], encoding="GBK").encoding == "gbk"
    assert TailConfig.model_validate({"name": "x", "paths": ["a"], "encoding": "GBK"}).encoding == "gbk"
    assert problem({"name": "x", "paths": ["a"], "encoding": "nope-8"}).startswith("encoding: unknown encoding")
    assert problem({"name": "x", "paths": ["a"], "encoding": "utf-16"}).startswith("encoding: encoding 'utf-16' is not "
                                                                                  "ASCII-compatible")
    assert problem({"name": "x", "paths": ["a"], "bogus": 1}) == "bogus: unknown key"
    assert problem({"start": "("}, MultilineConfig).startswith("start: invalid regex '('")
    nested = problem({"name": "x", "paths": ["a"], "multiline": {"start": "("}})
    assert nested.startswith("multiline.start: invalid regex")
    assert problem({"name": "x", "paths": ["a", " "]}) == "paths: empty path pattern"
    assert problem({"name": "x", "paths": []}) == "paths: Expected `list` of length >= 1"
    assert problem({"name": "x", "paths": ["a"], "max_line_bytes": "100B"}) == ("max_line_bytes: must be greater than "
                                                                                "or equal to 256")
    assert problem({"name": "x", "paths": ["a"], "poll_interval": 0}) == "poll_interval: must be greater than 0"
    assert problem({"name": "x", "paths": ["a"], "fingerprint_bytes": 8}) == "fingerprint_bytes: Expected `int` >= 16"

    class WithRules(TailConfig):  # the app's config subclasses the tail config
        rules: list[str] = []

    assert WithRules(name="x", paths=["a"], rules=["r"]).rules == ["r"]
    assert WithRules.model_validate({"name": "x", "paths": ["a"], "rules": ["r"]}).rules == ["r"]
