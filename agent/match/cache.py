"""On-disk cache of a matcher's compiled engine programs, so a restart with 1,000 rules is ready in well under
a second.

Why: translating 1,000 Python patterns into the engines' dialect (``translate``) and compiling them with
hyperscan take ~1.1 s and ~2.7 s on every start, for the same answer each time. Both are skipped when a
file under ``cache_dir`` holds the variants built for the same inputs: the engine's program (a serialized
hyperscan database; for RE2, which cannot serialize, the translated texts) plus the fields the matcher
needs at scan time (which patterns the program covers, which ``re`` runs on every line, and why).

One file per pattern list and engine, named by a key hashing everything the programs depend on (the
``identity``): the ordered patterns, the engine and its library version, the CPU features hyperscan
compiled for, the source code of the translation and of the engine module, the Python version (its parser
and Unicode tables drive the translation) and the machine. A file is used only when it passes every check:
magic and format, a SHA-256 over header and payload, the identity recorded in it, a strictly validated
header, the engine's own deserialization, and a probe scan whose nominations must equal those recorded
when the file was written. Anything else is logged (``match_cache_ignored``), rebuilt and replaced
atomically; the cache can make a start slower, never wrong and never fail.

Nothing read from disk is unpickled (the state directory may be writable by others): a file is a magic
line, the checksum line, one JSON header line, then the raw program bytes. The directory keeps at most
``MAX_FILES`` cache files, the least recently used (by mtime, refreshed on each load) deleted first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import structlog

from agent.match import charsets, sre, translate
from agent.match.engines import base
from agent.match.engines.base import Engine, Variant

log = structlog.get_logger(__name__)

FORMAT: Final = 1
"""Bump when the file layout or the meaning of a header field changes."""
MAGIC: Final = b"dutytail-match-cache %d\n" % FORMAT
MAX_FILES: Final = 8
"""Cache files kept per directory: one per pattern list in use (sources, reloads) is plenty."""
PREFIX: Final = "match-"
SUFFIX: Final = ".cache"
_STALE_TMP_S: Final = 3600  # a temporary file this old belongs to a writer that died: remove it
_PROBE_LINES: Final = (  # plus the patterns' own text: some lines every program can be asked about
    "Nov 27 08:00:00 web-1 sshd[811]: Failed password for invalid user admin from 203.0.113.7 port 51234",
    '10.1.2.3 - - [27/Nov/2026:08:00:00 +0000] "POST /api/v1/orders/42 HTTP/1.1" 502 157 "-" "curl/8.4.0"',
    "2026-11-27 08:00:00.123 ERROR [main] c.e.OrderService - order-1234 failed code=500 took 12345 ms",
    "kernel: [12.5] Out of memory: Killed process 4242 (java) I/O error, dev sdb, sector 9 segfault at 0 ip",
    "level=error msg=\"backend failed\" trace_id=abc123 No space left on device panic: runtime error",
    "Grüße aus Köln: straße ÉCHEC 失败 — ½ ٣ \u00a0 K",
)
_PROBE_CHARS: Final = 4096
# the translation and the shared variant fields (plus this module and the engine's: see _code_digest)
_CODE_MODULES: Final = (translate, charsets, sre, base)

CacheState = Literal["off", "unused", "loaded", "stored", "unstored"]


class Ignored(Exception):
    """A cache file that cannot be used; the message is the reason logged."""


@functools.cache
def _file_digest(path: str) -> str:
    """SHA-256 of a source file: editing the translation or an engine invalidates its cache files."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:  # e.g. run from a zip: fall back to the package version
        from agent import __version__

        return f"version {__version__}"


def _code_digest(engine: Engine[Any]) -> str:
    files = [str(getattr(m, "__file__", "") or m.__name__) for m in _CODE_MODULES] + [__file__]
    files.append(str(getattr(sys.modules.get(type(engine).__module__), "__file__", "") or type(engine).__module__))
    return hashlib.sha256("\n".join(_file_digest(f) for f in files).encode()).hexdigest()


def _probe_chunk(patterns: Sequence[str], ascii_only: bool) -> bytes:
    """Valid input for a variant (pure ASCII for the ASCII one) on which its nominations are compared.

    Kept to ~4 KiB: RE2 builds its DFA lazily, and 64 KiB of 1,000 patterns' text took it 0.25 s per variant.
    """
    text = "\n".join((*_PROBE_LINES, *patterns))[:_PROBE_CHARS]
    return text.encode("ascii" if ascii_only else "utf-8", "replace")


def _probe(engine: Engine[Any], variant: Variant, chunk: bytes) -> str:
    """Digest of what ``variant`` nominates on ``chunk``: equal for a program that behaves as it did."""
    found: list[Any] = []
    if variant.program is not None:
        found = [[s, e, sorted(set(p))] for s, e, p in engine.candidate_lines(variant, chunk)]
    return hashlib.sha256(json.dumps(found).encode()).hexdigest()


def _indexes(value: Any, n: int, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(i) is int and 0 <= i < n for i in value):
        raise Ignored(f"malformed header: {what} must be pattern indexes")
    if len(set(value)) != len(value):
        raise Ignored(f"malformed header: {what} repeats an index")
    return tuple(value)


def _shape(meta: Any, n: int) -> Variant:
    """The shared fields of one variant from its header entry, checked so that no scan can trip on them."""
    if not isinstance(meta, dict):
        raise Ignored("malformed header: variant is not an object")
    covered = _indexes(meta.get("covered"), n, "covered")
    always = _indexes(meta.get("always"), n, "always")
    if set(covered) & set(always):
        raise Ignored("malformed header: a pattern is both covered and always run")
    reasons, approx = meta.get("reasons"), meta.get("approx")
    if not isinstance(reasons, dict) or not all(isinstance(v, str) for v in reasons.values()):
        raise Ignored("malformed header: reasons")
    if not isinstance(approx, dict) or not all(
            isinstance(v, list) and all(isinstance(w, str) for w in v) for v in approx.values()):
        raise Ignored("malformed header: approx")
    try:
        return Variant(covered=covered, always=always,
                       reasons={_index(k, n): v for k, v in reasons.items()},
                       approx={_index(k, n): list(v) for k, v in approx.items()})
    except ValueError as exc:
        raise Ignored(f"malformed header: {exc}") from None


def _index(key: str, n: int) -> int:
    if not (key.isascii() and key.isdigit()) or int(key) >= n:
        raise ValueError(f"{key!r} is not a pattern index")
    return int(key)


class MatchCache:
    """The cache files of one pattern list under ``directory`` (one per engine); never raises.

    ``state`` says what happened, for ``MultiMatcher.describe()``: "unused" (no fast engine was built),
    "loaded", "stored" (built and written) or "unstored" (built, the file could not be written).
    """

    def __init__(self, directory: str | os.PathLike[str], patterns: Sequence[str], *,
                 max_files: int = MAX_FILES) -> None:
        self.directory = Path(directory)
        self.patterns = tuple(patterns)
        self.max_files = max(1, max_files)
        self.state: CacheState = "unused"
        self.path: Path | None = None  # the file of the engine last asked about

    # ---------------------------------------------------------------------------------------- identity
    def identity(self, engine: Engine[Any]) -> dict[str, str] | None:
        """Everything the engine's programs for these patterns depend on (None: the engine cannot cache)."""
        own = engine.cache_identity()
        if own is None:
            return None
        patterns = json.dumps(self.patterns).encode()  # ensure_ascii: lone surrogates survive
        return {
            "format": str(FORMAT),
            "engine": engine.name,
            **{f"engine.{k}": v for k, v in own.items()},
            "code": _code_digest(engine),
            "python": f"{sys.version} {sys.implementation.cache_tag} unicode {unicodedata.unidata_version}",
            "machine": f"{platform.machine()} {sys.byteorder}",
            "patterns": f"{len(self.patterns)} sha256:{hashlib.sha256(patterns).hexdigest()}",
        }

    @staticmethod
    def key(identity: dict[str, str]) -> str:
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    # -------------------------------------------------------------------------------------------- load
    def load(self, engine: Engine[Any]) -> tuple[Variant, Variant] | None:
        """The (ASCII, any UTF-8) variants stored for ``engine``, or None (missing or unusable: logged)."""
        try:
            identity = self.identity(engine)
        except Exception as exc:
            log.warning("match_cache_ignored", reason=f"no identity: {type(exc).__name__}: {exc}",
                        engine=engine.name)
            return None
        if identity is None:
            return None
        key = self.key(identity)
        path = self.path = self.directory / f"{PREFIX}{key}{SUFFIX}"
        try:
            data = _read_own(path)
        except (FileNotFoundError, NotADirectoryError):  # cold (a bad directory is reported by store)
            return None
        except (OSError, Ignored) as exc:
            log.warning("match_cache_ignored", reason=f"unreadable: {exc}", file=str(path))
            return None
        try:
            variants = self._decode(engine, identity, key, data)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, Ignored) else f"{type(exc).__name__}: {exc}"
            log.warning("match_cache_ignored", reason=reason, file=str(path))
            return None
        try:
            os.utime(path)  # the last use: pruning deletes the least recently used files
        except OSError:
            pass
        self.state = "loaded"
        return variants

    def _decode(self, engine: Engine[Any], identity: dict[str, str], key: str,
                data: bytes) -> tuple[Variant, Variant]:
        if not data.startswith(MAGIC):
            raise Ignored("not a match cache file of this format")
        digest, nl, body = data[len(MAGIC):].partition(b"\n")
        if not nl or hashlib.sha256(body).hexdigest().encode() != digest:
            raise Ignored("checksum mismatch (truncated or corrupted)")
        head, _, payload = body.partition(b"\n")
        try:
            header = json.loads(head)
        except ValueError as exc:
            raise Ignored(f"malformed header: {exc}") from None
        if not isinstance(header, dict) or not isinstance(header.get("identity"), dict):
            raise Ignored("malformed header: no identity")
        theirs = header["identity"]
        for field in sorted(set(identity) | set(theirs)):
            if theirs.get(field) != identity.get(field):
                raise Ignored(f"{field} differs: file {theirs.get(field)!r}, here {identity.get(field)!r}")
        if header.get("key") != key:
            raise Ignored("written under another key")
        metas = header.get("variants")
        if not isinstance(metas, dict):
            raise Ignored("malformed header: no variants")
        out: list[Variant] = []
        for kind, ascii_only in (("ascii", True), ("uni", False)):
            meta = metas.get(kind)
            shape = _shape(meta, len(self.patterns))  # also: meta is a dict
            offset, length = meta.get("offset"), meta.get("length")
            if type(offset) is not int or type(length) is not int or not 0 <= offset <= offset + length <= len(
                    payload):
                raise Ignored(f"malformed header: {kind} program bounds")
            try:
                variant = engine.load(payload[offset:offset + length], shape)
            except Exception as exc:
                raise Ignored(f"{kind} program does not load: {type(exc).__name__}: {exc}") from None
            try:
                probe = _probe(engine, variant, _probe_chunk(self.patterns, ascii_only))
            except Exception as exc:
                raise Ignored(f"{kind} probe scan failed: {type(exc).__name__}: {exc}") from None
            if probe != meta.get("probe"):
                raise Ignored(f"{kind} program nominates other lines than when it was stored")
            out.append(variant)
        return out[0], out[1]

    # ------------------------------------------------------------------------------------------- store
    def store(self, engine: Engine[Any], ascii: Variant, uni: Variant) -> None:
        """Write the variants just built for ``engine`` (atomically: a temporary file, then os.replace)."""
        tmp: str | None = None
        try:
            identity = self.identity(engine)
            if identity is None:
                return
            key = self.key(identity)
            path = self.path = self.directory / f"{PREFIX}{key}{SUFFIX}"
            variants: dict[str, Any] = {}
            blobs: list[bytes] = []
            offset = 0
            for kind, ascii_only, variant in (("ascii", True, ascii), ("uni", False, uni)):
                blob = engine.dump(variant)
                variants[kind] = {
                    "covered": list(variant.covered), "always": list(variant.always),
                    "reasons": {str(i): why for i, why in variant.reasons.items()},
                    "approx": {str(i): list(why) for i, why in variant.approx.items()},
                    "offset": offset, "length": len(blob),
                    "probe": _probe(engine, variant, _probe_chunk(self.patterns, ascii_only)),
                }
                blobs.append(blob)
                offset += len(blob)
            header = {"key": key, "identity": identity, "variants": variants,
                      "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            body = json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(blobs)
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            import tempfile  # here, not at import: with shutil, bz2 and lzma ~0.6 MiB that a restart never needs

            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{PREFIX}", suffix=".tmp")  # mode 0600
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
                f.flush()
                os.fsync(f.fileno())  # a torn file would only be ignored, but then every start rebuilds it
            os.replace(tmp, path)
            tmp = None
        except Exception as exc:
            log.warning("match_cache_store_failed", dir=str(self.directory), error=f"{type(exc).__name__}: {exc}",
                        note="matching works; the next start compiles the rules again")
            self.state = "unstored"
            return
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self.state = "stored"
        self.prune()

    def prune(self) -> None:
        """Keep the ``max_files`` most recently used cache files; remove temporary files of dead writers."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        caches: list[tuple[float, str]] = []
        now = time.time()
        for entry in entries:
            try:
                if entry.name.startswith(PREFIX) and entry.name.endswith(SUFFIX):
                    caches.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
                elif entry.name.startswith(f".{PREFIX}") and entry.name.endswith(".tmp") and (
                        now - entry.stat(follow_symlinks=False).st_mtime > _STALE_TMP_S):
                    os.unlink(entry.path)
            except OSError:
                continue
        caches.sort(reverse=True)
        for _mtime, victim in caches[self.max_files:]:
            try:
                os.unlink(victim)
            except OSError:
                pass


def _read_own(path: Path) -> bytes:
    """The file's bytes, refusing a symlink and (on POSIX) a file another user owns: its contents reach
    hyperscan's deserializer, which checks integrity but is not built to resist crafted input."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise Ignored(f"owned by uid {st.st_uid}, not by this process's {os.geteuid()}")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read()
    finally:
        if fd >= 0:
            os.close(fd)
