"""Jobs in worker processes that can be killed: what keeps one hostile source from stopping a run.

A `multiprocessing.Pool` cannot give up on one task: a decoder that hangs (a FIFO, a file that
makes FFmpeg loop) blocks its worker forever, and a decoder that segfaults kills the worker and
leaves the pool waiting. Here every worker has its own pipe; the parent waits on the pipes, the
process sentinels and the earliest deadline, kills a worker whose job ran past its time limit
(or notices one that died), records that job as :class:`Failed` and starts a fresh worker.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Failed:
    """A job whose worker timed out or died; `reason` is one line for rejects.jsonl."""

    reason: str


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the parent dies (a SIGKILLed make_shards must not
    leave a worker spinning on a hostile file). Elsewhere workers end when their pipe closes."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _serve(fn: Callable[[Any], Any], conn: Connection, inherited: list[Connection]) -> None:
    """Worker loop: one job in, one result out, until the parent closes the pipe."""
    # What the parent left for its collector (a DALI pipeline among it) is never collected here:
    # a forked copy of a pipeline has none of its threads, and its destructor would wait for them.
    gc.freeze()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for c in inherited:  # parent-side ends copied by fork: keeping them open would hide EOF
        c.close()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = fn(job)
        except Exception as e:  # noqa: BLE001 - a job's failure is its result, not the worker's end
            result = Failed(f"unexpected {e.__class__.__name__}: {e}")
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any], others: list[_Worker]):
        self.conn, child = ctx.Pipe()
        inherited = [self.conn] + [w.conn for w in others]
        self.proc = ctx.Process(target=_serve, args=(fn, child, inherited), daemon=True)
        self.proc.start()
        child.close()
        self.index = -1  # job being run, -1 when idle
        self.started = 0.0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"decoder crashed: worker killed by {name}{hint}"
    return f"decoder crashed: worker exited with status {exitcode}"


def _collect(w: _Worker, ready: list, timeout: float, now: float) -> Any | None:
    """The result of busy worker `w` if it has one (a value, or Failed); None if still running."""
    if w.conn in ready:
        try:
            return w.conn.recv()
        except (EOFError, OSError):
            w.proc.join()
            return Failed(_death(w.proc.exitcode))
    if w.proc.sentinel in ready:
        w.proc.join()
        return Failed(_death(w.proc.exitcode))
    if now - w.started >= timeout:
        return Failed(f"timed out after {timeout:g} s (--clip-timeout)")
    return None


class JobPool(Protocol):
    """What `in_job_order` drives: local killable workers (`run_killable`) or Ray tasks
    (`vidact.prep.ray_pool`)."""

    def submit(self, index: int, job: Any) -> None:
        """Starts job number `index`."""

    def in_flight(self) -> int:
        """Jobs started and not yet collected."""

    def collect(self) -> list[tuple[int, Any]]:
        """Waits for some jobs in flight to end; their (index, result) pairs (maybe none)."""


def in_job_order(jobs: Iterable[Any], pool: JobPool, window: int, slots: int | None = None) -> Iterator[Any]:
    """The results of `pool` running `jobs`, yielded in job order. Jobs are started while fewer
    than `slots` (default: no bound but `window`) run and fewer than `window` are in flight or
    finished but not yet yielded (bounds memory while an early job is slow)."""
    todo = enumerate(jobs)
    done: dict[int, Any] = {}
    next_out, exhausted = 0, False
    while True:
        while not exhausted and (slots is None or pool.in_flight() < slots) and \
                pool.in_flight() + len(done) < window:
            item = next(todo, None)
            if item is None:
                exhausted = True
                break
            pool.submit(*item)
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1
        if not pool.in_flight():
            if exhausted:
                return
            continue
        done.update(pool.collect())


class _Pool:
    """`workers` killable worker processes running `fn`, each job for at most `timeout` seconds."""

    def __init__(self, fn: Callable[[Any], Any], workers: int, timeout: float):
        self.ctx = multiprocessing.get_context("fork")
        self.fn, self.timeout = fn, timeout
        self.workers: list[_Worker] = []
        for _ in range(max(1, workers)):
            self.workers.append(_Worker(self.ctx, fn, self.workers))

    def submit(self, index: int, job: Any) -> None:
        w = next(w for w in self.workers if w.index < 0)  # an idle worker
        w.index, w.started = index, time.monotonic()
        w.conn.send(job)

    def in_flight(self) -> int:
        return sum(w.index >= 0 for w in self.workers)

    def collect(self) -> list[tuple[int, Any]]:
        busy = [w for w in self.workers if w.index >= 0]
        deadline = min(w.started for w in busy) + self.timeout
        ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                     timeout=max(0.0, deadline - time.monotonic()))
        now = time.monotonic()
        results = []
        for k, w in enumerate(self.workers):
            if w.index < 0 or (result := _collect(w, ready, self.timeout, now)) is None:
                continue
            results.append((w.index, result))
            w.index = -1
            if isinstance(result, Failed):  # hung or dead: replace the worker
                w.stop()
                self.workers[k] = _Worker(self.ctx, self.fn, [x for x in self.workers if x is not w])
        return results

    def close(self) -> None:
        for w in self.workers:
            w.stop()


def run_killable(fn: Callable[[Any], Any], jobs: Iterable[Any], workers: int, timeout: float,
                 window: int | None = None) -> Iterator[Any]:
    """Yields ``fn(job)`` or :class:`Failed` for every job, in job order, running at most
    `workers` jobs at once, each for at most `timeout` seconds. At most `window` jobs are in
    flight or finished-but-not-yet-yielded (bounds memory while an early job is slow).
    `fn` must be importable by a forked child (a module-level function)."""
    pool = _Pool(fn, workers, timeout)
    try:
        yield from in_job_order(jobs, pool, window or 4 * len(pool.workers), slots=len(pool.workers))
    finally:
        pool.close()
