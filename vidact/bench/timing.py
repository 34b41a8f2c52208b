"""Timed passes and the loaders they time: endless batch streams, replayed batch lists."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from vidact.bench.machine import tree_cpu_seconds


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sig(x: float, digits: int = 4) -> float:
    """`x` rounded to `digits` significant digits (JSON stays readable, ratios stay exact enough)."""
    return float(f"{x:.{digits}g}")


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def timed_passes(step: Callable[[], int], n: int, repeats: int, warmup: int,
                 sync: Callable[[], None]) -> list[tuple[int, float, float]]:
    """(items, seconds, CPU seconds of the process tree) of `repeats` passes of `n` calls of `step`
    (each returns its item count), after `warmup` calls and one discarded pass: loaders prefetch
    while idle (DALI's queues, the DataLoader's workers), so the first pass would start on ready
    batches; later passes start in steady state."""
    for _ in range(warmup):
        step()
    sync()
    out = []
    for _ in range(repeats + 1):
        c0, t0 = tree_cpu_seconds(), time.perf_counter()
        items = sum(step() for _ in range(n))
        sync()
        out.append((items, time.perf_counter() - t0, tree_cpu_seconds() - c0))
    return out[1:]


class Restless(RuntimeError):
    """A loader did not go idle between passes: its passes cannot be told apart from the next."""


def settle(limit_s: float = 5.0, sync: Callable[[], None] = lambda: None, tick_s: float = 0.05,
           idle_cpu_s: float = 0.006, quiet_ticks: int = 2) -> float:
    """Waits until this process tree has been idle for `quiet_ticks` ticks in a row (under
    `idle_cpu_s` CPU seconds in each `tick_s`, an eighth of a core: an idle loader's threads and
    workers, and this polling, use 2-3 ms there; a loader at work uses most of a core or more;
    `sync` waits for the device first): a loader between passes has filled its prefetch queue and
    stopped. Returns when it stopped (the first quiet tick's start); raises `Restless` after
    `limit_s`."""
    end, quiet = time.perf_counter() + limit_s, 0
    sync()
    last, since = tree_cpu_seconds(), time.perf_counter()
    while time.perf_counter() < end:
        time.sleep(tick_s)
        sync()
        now = tree_cpu_seconds()
        quiet = quiet + 1 if now - last < idle_cpu_s else 0
        if quiet >= quiet_ticks:
            return since
        if not quiet:
            since = time.perf_counter()
        last = now
    raise Restless(f"the loader was still at work {limit_s:.0f} s after its last batch")


def paired_passes(steps: list[Callable[[], int]], n: int, repeats: int, warmup: int,
                  sync: Callable[[], None]) -> list[list[tuple[int, float, float]]]:
    """`timed_passes` of several loaders taking turns, pass by pass, so that what else runs on the
    machine weighs on all of them alike (their ratios are taken pass by pass). Each pass starts
    and ends with its loader's prefetch queue full and the machine quiet (`settle`, waiting up to
    3x the pass): its CPU time and its wall clock run until its refill of the queue is done, so
    they are its `n` batches' work, not the other loaders' prefetching. The first round is
    discarded (caches, allocators)."""
    for step in steps:
        for _ in range(warmup):
            step()
    out: list[list[tuple[int, float, float]]] = [[] for _ in steps]
    limit = 5.0
    for _ in range(repeats + 1):
        for i, step in enumerate(steps):
            settle(limit, sync)
            c0, t0 = tree_cpu_seconds(), time.perf_counter()
            items = sum(step() for _ in range(n))
            limit = max(limit, 3 * (time.perf_counter() - t0))
            done = settle(limit, sync)  # its refill of the queue is this pass's work
            out[i].append((items, done - t0, tree_cpu_seconds() - c0))
    return [passes[1:] for passes in out]


def cpu_ratios(passes: list[tuple[int, float, float]], base: list[tuple[int, float, float]]) -> list[float]:
    """CPU time per item of each of `passes` over that of the same round of `base`."""
    return [sig((cpu / max(items, 1)) / (b_cpu / max(b_items, 1)))
            for (items, _, cpu), (b_items, _, b_cpu) in zip(passes, base)]


def rate_figures(passes: list[tuple[int, float, float]], frames: int, batches: int) -> dict[str, Any]:
    """Wall-clock figures (median pass), and the CPU time per clip and cores kept busy: on a shared
    machine other jobs slow the wall clock far more than they change a clip's CPU cost."""
    rates = [items / max(sec, 1e-9) for items, sec, _ in passes]
    clips = statistics.median(rates)
    secs = statistics.median(sec for _, sec, _ in passes)
    return {"clips_per_s": sig(clips), "frames_per_s": sig(clips * frames),
            "ms_per_batch": sig(1000 * secs / batches), "runs": [sig(r) for r in rates],
            "cpu_ms_per_clip": sig(statistics.median(1000 * cpu / max(items, 1) for items, _, cpu in passes)),
            "cores_busy": sig(statistics.median(cpu / max(sec, 1e-9) for _, sec, cpu in passes), 3)}


def batch_stream(loader: Any) -> Iterator[Any]:
    """Batches of `loader` forever, one epoch after another."""
    while True:
        n = 0
        for batch in loader:
            n += 1
            yield batch
        if n == 0:
            raise RuntimeError("the loader yielded no batch: the split has fewer clips than one batch")


def take_clones(stream: Iterator[Any], n: int) -> list[tuple[Any, Any, list[str]]]:
    """`n` batches of `stream` as private copies (DALI reuses its output buffers)."""
    return [(video.clone(), label.clone(), list(ids)) for video, label, ids in (next(stream) for _ in range(n))]


class Take:
    """The next `n` batches of a stream, as a loader with a length (one epoch of `train_steps`)."""

    def __init__(self, stream: Iterator[Any], n: int):
        self.stream, self.n = stream, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.n):
            yield next(self.stream)


class ListLoader:
    """Pre-materialized batches in device memory, replayed in order for `n` batches: the ceiling."""

    def __init__(self, batches: list[tuple[Any, Any, Any]], n: int):
        self.batches, self.n = batches, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        for i in range(self.n):
            yield self.batches[i % len(self.batches)]
