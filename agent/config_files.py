"""``include:``: the config split over files, one per application, the way config management deploys it.

```yaml
include: ["conf.d/*.yaml"]    # globs, relative to the directory of the file that names them
```

An included file holds ``logs``, ``journal`` and ``checks`` lists and nothing else; they are appended to the
main file's lists in file-name order (the globs in the order given, each glob's matches sorted). Names of
sources and checks are unique across all files, and a clash names both places. Every problem keeps its
own file, line and column: the merged document routes a key path like ``logs[3].rules[0]`` back to the
file and position the entry came from (``MergedDocument``).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config_yaml import ConfigError, ConfigProblem, KeyPath, YamlDocument, format_path, parse_yaml

INCLUDABLE = ("logs", "journal", "checks")
NAMED = {"logs": "source", "journal": "source", "checks": "check"}  # which names must be unique together
MAX_INCLUDED = 1000  # files one config may pull in


@dataclass
class MergedDocument:
    """Locations across the main file and its includes, by key path of the merged data."""

    main: YamlDocument
    routes: dict[tuple[str, int], tuple[YamlDocument, int]] = field(default_factory=dict)
    """(section, index in the merged list) -> (the file's document, index in that file's list)."""

    @property
    def file(self) -> str:
        return self.main.file

    def _route(self, path: KeyPath) -> tuple[YamlDocument, KeyPath]:
        if len(path) >= 2 and isinstance(path[0], str) and isinstance(path[1], int):
            routed = self.routes.get((path[0], path[1]))
            if routed is not None:
                return routed[0], (path[0], routed[1], *path[2:])
        return self.main, path

    def own_path(self, path: KeyPath) -> KeyPath:
        """``path`` as it is in the file it comes from (``logs[3]`` of the merged data is ``logs[0]`` there)."""
        return self._route(path)[1]

    def has(self, path: KeyPath) -> bool:
        if len(path) == 1 and any(section == path[0] for section, _ in self.routes):
            return True  # a list only an included file has
        doc, own = self._route(path)
        return doc.has(own)

    def where(self, path: KeyPath, *, prefer_key: bool = False) -> tuple[str, int, int]:
        doc, own = self._route(path)
        return doc.where(own, prefer_key=prefer_key)


@dataclass
class Included:
    """What ``expand`` made of a main file's ``include``."""

    data: dict[str, Any]
    document: MergedDocument
    files: list[str]
    """Every file the config was read from, the main one first, as errors name them."""
    globs: list[str]
    """The include globs, absolute (the config watch follows their directories)."""
    origins: dict[str, str]
    """Source or check name -> the file it is defined in."""


def expand(data: dict[str, Any], doc: YamlDocument, base_dir: str) -> tuple[Included, list[ConfigProblem]]:
    """Read the included files and append their lists; problems are collected, never raised."""
    problems: list[ConfigProblem] = []
    merged = MergedDocument(doc)
    data = dict(data)
    raw = data.pop("include", None)
    globs: list[str] = []
    files = [doc.file]
    read: set[str] = set()
    if raw is not None:
        patterns = [raw] if isinstance(raw, str) else raw
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            line, column = doc.locate(("include",))
            problems.append(ConfigProblem(doc.file, line, column, "include", "a glob or a list of globs"))
            patterns = []
        for pattern in patterns:
            absolute = os.path.join(base_dir, os.path.expanduser(pattern))
            globs.append(absolute)
            matches = sorted(glob.glob(absolute))
            for path in matches:
                if not os.path.isfile(path) or path in read:
                    continue
                if len(files) > MAX_INCLUDED:
                    line, column = doc.locate(("include",))
                    problems.append(ConfigProblem(doc.file, line, column, "include",
                                                  f"more than {MAX_INCLUDED} files included"))
                    break
                read.add(path)
                shown = _shown(path, base_dir, pattern)
                files.append(shown)
                try:
                    text = Path(path).read_text(encoding="utf-8")
                    part, part_doc = parse_yaml(text, shown)
                except ConfigError as exc:
                    problems.extend(exc.problems)
                    continue
                except (OSError, UnicodeDecodeError) as exc:
                    problems.append(ConfigProblem(shown, 1, 1, "", f"cannot read included file: {exc}"))
                    continue
                problems.extend(part_doc.problems)
                problems.extend(_append(data, merged, part, part_doc))
    problems.extend(_unique_names(data, merged))
    origins = {}
    for section in INCLUDABLE:
        for index, entry in enumerate(data.get(section) or []):
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                origins[entry["name"]] = merged.where((section, index))[0]
    return Included(data, merged, files, globs, origins), problems


def _shown(path: str, base_dir: str, pattern: str) -> str:
    """An included file as errors name it: relative to the main file's directory when the glob was."""
    return path if os.path.isabs(os.path.expanduser(pattern)) else os.path.relpath(path, base_dir)


def _append(data: dict[str, Any], merged: MergedDocument, part: Any, part_doc: YamlDocument) -> list[ConfigProblem]:
    if not isinstance(part, dict):
        return [ConfigProblem(part_doc.file, 1, 1, "", "an included file must be a mapping with logs, journal "
                                                        "or checks lists")]
    problems = []
    for key, value in part.items():
        line, column = part_doc.where((key,), prefer_key=True)[1:]
        if key not in INCLUDABLE:
            problems.append(ConfigProblem(part_doc.file, line, column, str(key),
                                          f"not allowed in an included file (only {', '.join(INCLUDABLE)})"))
            continue
        if not isinstance(value, list):
            problems.append(ConfigProblem(part_doc.file, line, column, str(key), "must be a list"))
            continue
        target = data.get(key)
        if target is None:
            target = data[key] = []
        elif not isinstance(target, list):
            continue  # the main file's own error says so
        else:
            target = data[key] = list(target)
        for own_index, entry in enumerate(value):
            merged.routes[(key, len(target))] = (part_doc, own_index)
            target.append(entry)
    return problems


def _unique_names(data: dict[str, Any], merged: MergedDocument) -> list[ConfigProblem]:
    """A source or check name used twice, in one file or two: the second place names the first."""
    problems = []
    first: dict[tuple[str, str], tuple[str, int, int]] = {}
    for section in INCLUDABLE:
        entries = data.get(section)
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                continue
            kind, name = NAMED[section], entry["name"]
            here = merged.where((section, index, "name"))
            seen = first.setdefault((kind, name), here)
            if seen is not here:
                problems.append(ConfigProblem(here[0], here[1], here[2],
                                              format_path(merged.own_path((section, index, "name"))),
                                              f"{kind} name {name!r} is already used at {seen[0]}:{seen[1]}:{seen[2]}"))
    return problems
