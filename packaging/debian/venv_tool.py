"""Build helper of scripts/build-deb (not shipped): moving the staged venv to its final path, and a check
that stripping left every compiled module importable.

    python3 venv_tool.py relocate VENV OLD_PREFIX NEW_PREFIX BUILD_DIR
    VENV/bin/python venv_tool.py extensions > FILE
    VENV/bin/python venv_tool.py licenses > FILE

``relocate`` rewrites OLD_PREFIX (where the venv was made, inside the staging root) to NEW_PREFIX in
every text file of the venv (script shebangs, pyvenv.cfg, bin/activate*), drops the direct_url.json
files that point into BUILD_DIR (the temporary source copy), refuses a binary file that names BUILD_DIR
(it can't be rewritten safely), and then makes every dist-info RECORD match the files on disk again
(rewritten shebangs, stripped modules, dropped files), for importlib.metadata and `pip check`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.machinery
import os
import sys
import sysconfig
from pathlib import Path


def relocate(venv: Path, old: bytes, new: bytes, build_dir: bytes) -> None:
    files = sorted(Path(top, name) for top, _, names in os.walk(venv) for name in names)  # no symlinks followed
    for path in files:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if build_dir not in data:
            continue
        if path.name == "direct_url.json":  # file:///<temporary copy of the source>: meaningless on the host
            path.unlink()
            continue
        if b"\0" in data:
            sys.exit(f"build-deb: binary file {path} contains the build path; it cannot be rewritten")
        path.write_bytes(data.replace(old, new))
    for record in venv.glob("lib/python*/site-packages/*.dist-info/RECORD"):
        fix_record(record)


def fix_record(record: Path) -> None:
    site = record.parent.parent
    lines = []
    for line in record.read_text().splitlines():
        name, digest, size = line.rsplit(",", 2)
        target = site / name
        if not target.exists() and not target.is_symlink():
            continue
        if digest:  # RECORD itself (and INSTALLER-less entries) carry no hash
            data = target.read_bytes()
            digest = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            size = str(len(data))
        lines.append(f"{name},{digest},{size}")
    record.write_text("\n".join(lines) + "\n")


def extensions() -> None:
    """Import every compiled module of site-packages; print each name with "ok" or the exception's type.

    Some import only as part of their package (or need something absent here): what matters is that the
    output is the same before and after stripping.
    """
    site = Path(sysconfig.get_path("purelib"))
    for so in sorted(site.rglob("*.so")):
        rel = so.relative_to(site)
        stem = rel.name
        for suffix in sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        name = ".".join((*rel.parts[:-1], stem))
        try:
            importlib.import_module(name)
            print(name, "ok")
        except Exception as exc:
            print(name, type(exc).__name__)


def licenses() -> None:
    """One line per installed distribution, for the package's copyright file: " name version: license"."""
    import importlib.metadata

    rows = []
    for dist in importlib.metadata.distributions(path=[sysconfig.get_path("purelib")]):
        meta = dist.metadata
        found = meta.get("License-Expression") or ""
        if not found and meta.get("License") and "\n" not in meta["License"] and len(meta["License"]) <= 60:
            found = meta["License"]
        if not found:
            classifiers = meta.get_all("Classifier") or []
            classifiers = [c.rsplit(" :: ", 1)[-1] for c in classifiers if c.startswith("License ::")]
            found = " / ".join(classifiers) or "see its dist-info"
        rows.append((meta["Name"].lower(), dist.version, found))
    for name, version, found in sorted(rows):
        print(f" {name} {version}: {found}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["relocate"] and len(argv) == 5:
        relocate(Path(argv[1]), argv[2].encode(), argv[3].encode(), argv[4].encode())
    elif argv == ["extensions"]:
        extensions()
    elif argv == ["licenses"]:
        licenses()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
