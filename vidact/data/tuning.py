"""How many DALI pipelines and threads a loader runs, chosen from the machine when the user sets
nothing, with the reason said in one log line.

Measured on 2-core CPUs (`vidact/bench/RESULTS.md` sections 3 and 6): one pipeline per thread,
one thread each, costs the same CPU per clip as one pipeline of all threads and gives 10-45 %
more clips/s, because a lone pipeline leaves threads idle at every batch boundary while its
slowest clip finishes. On a GPU one pipeline already decodes each clip of a batch on its own
thread (one NVDEC session each; DALI's image decoder spreads JPEGs over the hardware engines), so
it keeps one pipeline with at least a thread per clip; more per engine is unmeasured here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Auto mode never runs more pipelines than this (each holds its own buffers and prefetch queue),
# and gives each reader at least this many batches of its share (a train reader drops its last
# partial batch, so more readers drop more clips per epoch).
MAX_AUTO_PIPELINES = 8
MIN_BATCHES_PER_READER = 8


def rank_cores() -> int:
    """Cores this process may run on (its affinity mask, which a container or torchrun sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_world_size() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 outside torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def dali_threads(cores: int, local_ranks: int, pipelines: int, batch_size: int, gpu: bool,
                 workers: int | None = None) -> int:
    """`num_threads` of each pipeline: this rank's share of the cores (or `workers`) split over
    its pipelines. The one setting sizes DALI's CPU pool and the video decoder's pool, which
    decodes each clip of a batch on its own thread (one NVDEC session each), so on a GPU it is
    at least the batch size."""
    own = workers or max(1, cores // max(1, local_ranks))
    threads = max(1, own // pipelines)
    return max(threads, batch_size) if gpu else threads


@dataclass(frozen=True)
class LoaderPlan:
    """Pipelines per process, threads per pipeline, and why."""

    pipelines: int
    threads: int
    why: str


def plan_loader(gpu: bool, batch_size: int, rank_samples: int, pipelines: int | None = None,
                workers: int | None = None, cores: int | None = None, local_ranks: int | None = None) -> LoaderPlan:
    """The DALI loader's pipelines and threads: the user's where given, else chosen for this
    machine (`rank_samples`: the samples this rank reads per epoch)."""
    cores = rank_cores() if cores is None else cores
    local_ranks = local_world_size() if local_ranks is None else local_ranks
    own = workers or max(1, cores // local_ranks)
    if pipelines is not None:
        threads = dali_threads(cores, local_ranks, pipelines, batch_size, gpu, workers)
        return LoaderPlan(pipelines, threads, "as set (--dali-pipelines)")
    if gpu:
        threads = dali_threads(cores, local_ranks, 1, batch_size, gpu, workers)
        return LoaderPlan(1, threads, f"GPU: one pipeline decodes the batch's {batch_size} clips on "
                                      f"{threads} threads (at least one per clip)")
    enough = max(1, rank_samples // (MIN_BATCHES_PER_READER * batch_size))
    chosen = max(1, min(own, MAX_AUTO_PIPELINES, enough))
    why = f"CPU: one single-thread pipeline per core of this process ({own} cores)"
    if chosen < min(own, MAX_AUTO_PIPELINES):
        why += f"; {chosen} so each reader gets {MIN_BATCHES_PER_READER}+ batches of the {rank_samples} samples"
    return LoaderPlan(chosen, max(1, own // chosen), why)
