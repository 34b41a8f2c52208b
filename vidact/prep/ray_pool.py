"""Jobs on a Ray cluster with the contract of `vidact.killable.run_killable`: ``fn(job)`` or
:class:`~vidact.killable.Failed` for every job, yielded in job order, so a caller that packs the
results in that order writes the same bytes as a local run.

Each Ray task runs its job in a killable child process of its Ray worker (the same
`run_killable` as a local run), so a job past the time limit, or one that crashes its decoder,
gives the same ``Failed`` reason on a cluster as on one machine. A Ray worker that dies (a node
lost, the OOM killer) is Ray's to retry (``max_retries``); a task that Ray cannot finish after
its retries, or that is not back within a generous backstop (``ray.wait`` timeouts, then
``ray.cancel(force=True)``), stops the run with :class:`TaskLost` instead of silently
dropping a job.

Ray is an optional dependency (the ``ray`` extra), imported only when this pool is used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vidact.killable import Failed, in_job_order, run_killable

log = logging.getLogger(__name__)

# Seconds added to the backstop on top of (retries + 2) x timeout: scheduling, worker start-up.
BACKSTOP_SLACK_S = 60.0


class TaskLost(RuntimeError):
    """Ray could not run job `index` to the end (retries spent, node lost, or the backstop)."""

    def __init__(self, index: int, reason: str):
        super().__init__(reason)
        self.index = index


def _run_one(fn: Callable[[Any], Any], job: Any, timeout: float) -> Any:
    """The Ray task: `fn(job)` in a killable child of this Ray worker (see module docstring)."""
    results = run_killable(fn, [job], 1, timeout)
    try:
        return next(results)
    finally:
        results.close()


def connect(address: str | None, num_cpus: int | None):
    """The `ray` module, connected: to `address` (``auto``, ``HOST:PORT``, ``ray://...``), to
    the cluster this process already joined, or to a new local instance with `num_cpus`.
    Returns (ray, whether this call started the connection)."""
    try:
        import ray  # optional extra `ray`: imported only for --distributor ray
    except ImportError as e:
        raise RuntimeError("--distributor ray needs Ray: pip install 'vidact[ray]'") from e
    if ray.is_initialized():
        return ray, False
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    return ray, True


def _outcome(ray: Any, ref: Any, index: int, retries: int) -> Any:
    """The result of a finished task; a task Ray gave up on raises TaskLost."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # _run_one itself failed (not the job: that is a Failed)
        return Failed(f"unexpected {e.cause.__class__.__name__ if e.cause else 'error'}: {e.cause or e}")
    except ray.exceptions.RayError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise TaskLost(index, f"Ray lost the task after {retries} retries ({e.__class__.__name__}: {first})") from e


class _Tasks:
    """Jobs as Ray tasks (one CPU each), driven by `vidact.killable.in_job_order`."""

    def __init__(self, ray: Any, fn: Callable[[Any], Any], timeout: float, retries: int):
        self.ray, self.timeout, self.retries = ray, timeout, retries
        self.task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False)(_run_one)
        self.backstop = (retries + 2) * timeout + BACKSTOP_SLACK_S
        self.fn_ref = ray.put(fn)
        self.inflight: dict[Any, tuple[int, float]] = {}  # ref -> (job index, submitted at)

    def submit(self, index: int, job: Any) -> None:
        self.inflight[self.task.remote(self.fn_ref, job, self.timeout)] = (index, time.monotonic())

    def in_flight(self) -> int:
        return len(self.inflight)

    def collect(self) -> list[tuple[int, Any]]:
        oldest = min(t for _, t in self.inflight.values())
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1,
                                 timeout=max(0.0, oldest + self.backstop - time.monotonic()))
        results = []
        for ref in ready:
            index, _ = self.inflight.pop(ref)
            results.append((index, _outcome(self.ray, ref, index, self.retries)))
        for ref, (index, submitted) in list(self.inflight.items()):
            if time.monotonic() - submitted >= self.backstop:
                self.ray.cancel(ref, force=True)
                raise TaskLost(index, f"no result from Ray after {self.backstop:g} s (--clip-timeout backstop)")
        return results

    def close(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref, force=True)


def run_on_ray(fn: Callable[[Any], Any], jobs: Iterable[Any], timeout: float, address: str | None = None,
               num_cpus: int | None = None, retries: int = 3, window: int | None = None) -> Iterator[Any]:
    """Yields ``fn(job)`` or :class:`Failed` for every job, in job order, running them as Ray
    tasks (one CPU each) wherever the cluster has CPUs; at most `window` jobs (default: twice
    the cluster's CPUs) are in flight or finished but not yet yielded. `fn` must be importable
    on the cluster's nodes (a module-level function of an installed package)."""
    ray, started = connect(address, num_cpus)
    tasks = _Tasks(ray, fn, timeout, retries)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    window = window or 2 * max(1, cpus)
    log.info("Ray: %d CPUs, %d tasks in flight, %d retries per task", cpus, window, retries)
    try:
        yield from in_job_order(jobs, tasks, window)
    finally:
        tasks.close()
        if started:
            ray.shutdown()
