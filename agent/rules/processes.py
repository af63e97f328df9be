"""A source's rule stage in worker processes: a structured backlog matched on every core.

Why processes: with ``where`` rules most of the work per nominated line is Python (decode, ``re`` confirm,
parse, conditions) and holds the GIL, so one process tops out near 560k JSON lines/s whatever the thread
count (1 / 2 / 3 threads measured 515k / 526k / 490k). Worker processes scale, but only if the ~1 MiB chunks
do not cross a pipe: pickling them capped two workers at ~750k lines/s. So the chunk is copied into a slot of
shared memory (a memfd: no file to leak, gone with the last process that maps it) and the pipe carries
``(slot, length, line count)`` out and only the hits (0.1% of the lines in a typical log) back. Each worker
builds the same :class:`RuleSet` from the source's rules once (the compiled databases come from the on-disk
cache), and ``RuleSet.evaluate`` is pure, so a worker's answer is the thread's answer. A worker adopts the
prefilter plan the agent's own threads learned (``RuleSet.learned_plan``, sent with each batch) instead of
sampling the log again.

A worker that dies or fails is not a lost batch: that batch is evaluated again in a thread of this process,
counted in ``failures``, and the pool is not used again (the pipeline may start a new one later).
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import pickle
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context, reduction
from typing import Any

import structlog

from agent.lines import LineChunk
from agent.rules.ruleset import Hit, Hits, RuleSet

log = structlog.get_logger(__name__)

HitTuple = tuple[int, str, str, dict[str, str]]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class RuleProcesses:
    """``processes`` workers holding ``ruleset``'s rules, and ``slots`` chunk slots of ``slot_bytes`` each.

    Used from the event loop only. ``evaluate`` returns None when the chunk cannot go to a worker now (the pool
    is still starting or broken, every slot is in use, or the chunk is larger than a slot): the caller then uses
    a thread, so nothing ever waits for a process."""

    def __init__(self, ruleset: RuleSet, *, processes: int, slots: int, slot_bytes: int,
                 on_failure: Callable[[], None] = lambda: None) -> None:
        self.ruleset = ruleset
        self._on_failure = on_failure
        self.processes = processes
        self.slot_bytes = slot_bytes
        self.slots = slots
        self.batches = 0
        """Batches matched in a worker."""
        self.failures = 0
        """Batches a worker failed on (evaluated again in a thread)."""
        self.broken = False
        self._free = list(range(slots))
        self._ready = False
        self._closed = False
        size = slots * slot_bytes
        self._fd = os.memfd_create("dutytail-rule-chunks", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, size)
        self._view = mmap.mmap(self._fd, size)
        blob = pickle.dumps((ruleset.rules, ruleset.formats, ruleset.message_field, ruleset.journal,
                             ruleset.cache_dir))
        # spawn, not fork: this process has threads (a forked child could inherit a held lock)
        self._pool = ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_start_worker,
                                         initargs=(_InheritedFd(self._fd), size, blob, os.getpid()))
        loop = asyncio.get_running_loop()
        warmups = [asyncio.wrap_future(self._pool.submit(os.getpid)) for _ in range(processes)]
        self._starting = asyncio.ensure_future(self._await_start(warmups))
        self._loop = loop

    async def _await_start(self, warmups: Sequence[asyncio.Future[int]]) -> None:
        try:
            pids = await asyncio.gather(*warmups)
        except Exception as exc:
            self._break("rule_processes_failed_to_start", exc)
            return
        self._ready = not self._closed
        log.info("rule_processes_started", processes=self.processes, pids=sorted(set(pids)))

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (from the pool's own table: a warm-up task may not reach every worker)."""
        return list(self._pool._processes or {})

    @property
    def ready(self) -> bool:
        return self._ready and not self.broken and not self._closed

    def evaluate(self, chunk: LineChunk, path: str) -> asyncio.Future[Hits] | None:
        size = len(chunk.data)
        if not self.ready or not self._free or size > self.slot_bytes:
            return None
        slot = self._free.pop()
        offset = slot * self.slot_bytes
        self._view[offset:offset + size] = chunk.data
        try:
            work = self._pool.submit(_evaluate, offset, size, len(chunk), chunk.ascii, path,
                                     self.ruleset.learned_plan())
        except Exception as exc:  # the pool broke since the last batch
            self._free.append(slot)
            self._break("rule_processes_failed", exc)
            return None
        # The slot is free again only once the worker is done with it (not when a waiting task is cancelled).
        work.add_done_callback(lambda _: self._loop.call_soon_threadsafe(self._free.append, slot))
        return asyncio.ensure_future(self._result(work, chunk, path))

    async def _result(self, work: Future[tuple[list[HitTuple], dict[str, int]]], chunk: LineChunk,
                      path: str) -> Hits:
        try:
            found, errors = await asyncio.wrap_future(work)
        except Exception as exc:
            self.failures += 1
            self._on_failure()
            self._break("rule_processes_failed", exc)
            return await asyncio.to_thread(self.ruleset.evaluate, chunk, None, None, path)
        self.batches += 1
        return Hits((Hit(*hit) for hit in found), errors)  # type: ignore[arg-type]

    def _break(self, event: str, exc: BaseException) -> None:
        if not self.broken and not self._closed:
            log.warning(event, error=repr(exc), processes=self.processes,
                        note="this source's rules run in threads of the agent process instead; nothing is lost")
        self.broken = True

    def close(self) -> None:
        """Stop the workers once they finish what they hold (their results still arrive); free the memory."""
        if self._closed:
            return
        self._closed = True
        self._starting.cancel()
        if self.broken:  # what is left of a broken pool is of no use: end it now (an exit would wait for it)
            for process in list((self._pool._processes or {}).values()):
                process.kill()
        self._pool.shutdown(wait=False, cancel_futures=self.broken)
        self._view.close()  # the workers keep their own mappings until they exit
        os.close(self._fd)


# --------------------------------------------------------------------------------------------- in the worker
class _InheritedFd:
    """A file descriptor handed to a spawned worker the way multiprocessing hands over its own pipes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _detach, (reduction.DupFd(self.fd),)


def _detach(dup: Any) -> int:
    return int(dup.detach())


_chunks: mmap.mmap | None = None
_rules: RuleSet | None = None


def _start_worker(fd: int, size: int, blob: bytes, agent_pid: int) -> None:
    global _chunks, _rules
    # The agent stops its workers itself (after their last batch): Ctrl-C on a terminal or a stray TERM must
    # not kill a worker mid-batch. A worker holds both ends of its task pipe (multiprocessing hands a queue
    # over whole), so it would not notice the agent's death by itself: the kernel kills it then instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with(agent_pid)
    _chunks = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    os.close(fd)
    rules, formats, message_field, journal, cache_dir = pickle.loads(blob)
    _rules = RuleSet(rules, formats=formats, message_field=message_field, journal=journal, cache_dir=cache_dir)


def _die_with(agent_pid: int) -> None:
    """PR_SET_PDEATHSIG: SIGKILL when the thread that spawned this worker (the agent's event loop, which is its
    main thread) ends. Checked again after setting it, in case the agent died in between."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - not Linux: the pipe's end is the only sign
        pass
    if os.getppid() != agent_pid:
        os._exit(0)


def _evaluate(offset: int, size: int, count: int, ascii: bool, path: str,
              plan: dict[int, int] | None) -> tuple[list[HitTuple], dict[str, int]]:
    """``plan``: the agent's learned prefilter plan, when it has one (a worker then skips its own sampling)."""
    assert _chunks is not None and _rules is not None
    if plan is not None:
        _rules.adopt_plan(plan)
    chunk = LineChunk(_chunks[offset:offset + size], count, ascii=ascii)
    hits = _rules.evaluate(chunk, None, None, path)
    return [(h.rule, h.kind, h.line, h.groups) for h in hits], hits.parse_errors
