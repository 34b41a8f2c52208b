"""The ceiling of the CPU path: the shard codec decoded with all cores, nothing else.

One process per core (fork), each decoding whole clips with one FFmpeg thread (PyAV), no colour
conversion, no resize, no batching, two ways:

* ``from_start``: frame 0 to the last wanted frame, as DALI's CPU decoder must (it cannot seek);
* ``seek``: from the keyframe at or before the first wanted frame to the last, as a seeking
  decoder can (the shards have a keyframe every ``gop`` frames).

The wanted frames are the loader's own (`vidact.clip.sampling.frame_indices` for the run's mode).
"""

from __future__ import annotations

import gc
import io
import multiprocessing
import random
import time
from typing import Any

import av
import numpy as np

from vidact.bench.machine import tree_cpu_seconds
from vidact.bench.sources import split_samples
from vidact.bench.timing import rate_figures
from vidact.clip.sampling import frame_indices
from vidact.clip.spec import ClipSpec
from vidact.shards import META_EXT, ShardSet, decode_meta

DECODE_WAYS = ("from_start", "seek")

# (video bytes, first wanted, last wanted, fps) per clip; set in each pool process by `_init`.
_CLIPS: list[tuple[bytes, int, int, float]] = []


def _init(clips: list[tuple[bytes, int, int, float]]) -> None:
    global _CLIPS
    gc.freeze()  # the parent's garbage (DALI pipelines among it) is never collected in a forked child
    _CLIPS = clips


def decode_clip(data: bytes, first: int, last: int, fps: float, seek: bool) -> int:
    """Frames decoded to reach frame `last` (from frame 0, or from the keyframe before `first`)."""
    n = 0
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        stream.thread_count = 1
        tb, start = float(stream.time_base), stream.start_time or 0
        if seek and first > 0:
            c.seek(start + int(first / fps / tb), stream=stream, backward=True, any_frame=False)
        for frame in c.decode(stream):
            n += 1
            if round((frame.pts - start) * tb * fps) >= last:
                break
    return n


def _work(job: tuple[int, bool]) -> int:
    data, first, last, fps = _CLIPS[job[0] % len(_CLIPS)]
    return decode_clip(data, first, last, fps, job[1])


def wanted_windows(path, split: str, spec: ClipSpec, mode: str, seed: int,
                   limit: int) -> list[tuple[bytes, int, int, float]]:
    """(video, first, last, fps) of up to `limit` clips of the split, frames chosen as the loader would."""
    shards = ShardSet.open(path)
    rng = random.Random(seed)
    out = []
    for _, m in split_samples(shards, split, (shards.video_ext, META_EXT)):
        meta = decode_meta(m[META_EXT])
        u = rng.random() if mode == "train" else None
        stride_u = (rng.random(), rng.random()) if mode == "train" and spec.random_stride else None
        idx = frame_indices(int(meta["num_frames"]), spec.frames_per_clip, spec.ratio, spec.window, u, stride_u)
        out.append((m[shards.video_ext], int(np.min(idx)), int(np.max(idx)), float(meta["fps"])))
        if len(out) >= limit:
            break
    return out


def decode_ceiling(clips: list[tuple[bytes, int, int, float]], workers: int, per_pass: int, repeats: int,
                   frames: int) -> dict[str, dict[str, Any]]:
    """clips/s of `per_pass` clips per timed pass (median of `repeats`, after one untimed pass),
    each way of `DECODE_WAYS`, on `workers` processes; plus the frames decoded per clip."""
    out = {}
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init, initargs=(clips,)) as pool:
        for way in DECODE_WAYS:
            jobs = [(i, way == "seek") for i in range(per_pass)]
            passes, decoded = [], []
            for _ in range(repeats + 1):
                c0, t0 = tree_cpu_seconds(), time.perf_counter()
                decoded = pool.map(_work, jobs, chunksize=1)
                passes.append((per_pass, time.perf_counter() - t0, tree_cpu_seconds() - c0))
            row = rate_figures(passes[1:], frames, 1)
            row.pop("ms_per_batch")
            out[way] = {**row, "frames_decoded_per_clip": round(float(np.mean(decoded)), 1)}
    return out
