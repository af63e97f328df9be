"""What the agent tells the alert engine about a source before an absence fires (agent/app/look.py)."""

from __future__ import annotations

from pathlib import Path

from agent.app.look import SourceLooks


def status(files: list[dict], errors: list[dict] | None = None) -> dict:
    return {"files": files, "errors": errors or []}


def test_unread_bytes_or_unmatched_batches_mean_behind(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("x\n")
    reading = {"path": str(log), "state": "open", "lag_bytes": 4096}
    view = SourceLooks._files([str(log)], status([reading]), busy=False)
    assert view.behind and view.why == "4096 bytes not read yet"
    caught_up = {**reading, "lag_bytes": 0}
    assert SourceLooks._files([str(log)], status([caught_up]), busy=True).behind
    quiet = SourceLooks._files([str(log)], status([caught_up]), busy=False)
    assert not quiet.behind and quiet.why.startswith(f"{log} was last written to at ")


def test_the_why_names_a_missing_or_unreadable_file() -> None:
    missing = SourceLooks._files(["/var/log/app/*.log"], status([]), busy=False)
    assert (missing.behind, missing.why) == (False, "no file matches /var/log/app/*.log")
    denied = SourceLooks._files(["/x.log"], status([], [{"path": "/x.log", "error": "Permission denied"}]),
                                busy=False)
    assert denied.why == "cannot read /x.log: Permission denied" and not denied.behind
