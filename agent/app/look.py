"""The agent's answer when the alert engine asks about a source before an absence or a late finish fires.

Behind means a line that would answer the rule may still come: the source's first scan is not done, bytes
on disk are not read yet, or read lines have not reached the alert engine. The reason ("why") is what the
agent knows about the files: none matches, one cannot be read, when they were last written to, journald
unavailable. Runs on the event loop; the few ``stat`` calls happen only when a timer is due.
"""

from __future__ import annotations

import os
from typing import Any

from agent.alerts.render import iso
from agent.alerts.silence import SourceView
from agent.app.sources import SourceSet
from agent.config import JournalSourceConfig

MAX_NAMED = 3  # files named in a reason
MAX_LOOKED = 20  # files of a file source stat()ed for "last written to" (beyond: what the tailer saw last)


class SourceLooks:
    def __init__(self, sources: SourceSet) -> None:
        self.sources = sources

    def __call__(self, name: str) -> SourceView:
        runtime = self.sources.running.get(name)
        if runtime is None:
            return SourceView(True, "the source is not running")  # between a reload's stop and start
        if not runtime.source.first_scan_done:
            return SourceView(True, "the first scan of its files is still running")
        summary = getattr(runtime.source, "summary", None)
        status = summary(MAX_LOOKED) if summary is not None else runtime.source.status()
        if isinstance(runtime.config, JournalSourceConfig):
            if status.get("available") is False:
                return SourceView(False, f"journald is not available: {status.get('error') or 'unknown error'}")
            return SourceView(runtime.busy)
        return self._files(runtime.config.paths, status, runtime.busy)

    @staticmethod
    def _files(paths: list[str], status: dict[str, Any], busy: bool) -> SourceView:
        files = [f for f in status.get("files", []) if f.get("state") != "error"]
        errors = status.get("errors", [])
        unread = (int(status["lag_bytes"]) if "lag_bytes" in status
                  else sum(int(f.get("lag_bytes") or 0) for f in files))
        if unread or busy:
            return SourceView(True, f"{unread} bytes not read yet" if unread else "read lines not matched yet")
        reasons = [f"cannot read {e['path']}: {e['error']}" for e in errors[:MAX_NAMED]]
        count = int(status.get("files_total", len(files) + len(errors))) - len(errors)
        if not files and not errors and count <= 0:
            reasons.append(f"no file matches {', '.join(paths)}")
        newest: tuple[float, str] | None = None
        for f in files:
            try:
                mtime = os.stat(f["path"]).st_mtime
            except OSError:
                continue
            if newest is None or mtime > newest[0]:
                newest = (mtime, f["path"])
        last = status.get("last_write")
        if status.get("files_omitted") and last:  # not every file was looked at: what the tailer saw last too
            if newest is None or last["mtime"] > newest[0]:
                newest = (float(last["mtime"]), str(last["path"]))
        count = max(count, len(files))
        if newest is not None:
            reasons.append(f"{newest[1]} was last written to at {iso(newest[0])}" if count == 1 else
                           f"its {count} files were last written to at {iso(newest[0])} ({newest[1]})")
        return SourceView(False, "; ".join(reasons))
