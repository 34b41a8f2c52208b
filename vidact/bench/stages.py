"""The DALI loader's steps cut one after the other, for the breakdown: where a DALI clip's time goes.

``read`` is the reader pipeline alone; ``plan`` adds the feed (each sample's plan and the pixels
graph's inputs, in Python); ``decode``, ``resize`` and ``normalize`` run the pixels graph
(`pipelines.clips.clips_pipeline`) cut after that step. Run with ``pipe.run()``: no DALI
iterator, no copy into torch; the loader row (``dali_train``) adds those. Each stage's cost is
its difference from the previous one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from pipelines.clips import STEPS, clips_pipeline, reader_pipeline
from vidact.clip.plan import Planner
from vidact.clip.spec import ClipSpec
from vidact.data.feed import ClipFeed, EpochFeed
from vidact.shards import JPEG_EXT, ShardSet, member_exts

STAGES = ("read", "plan", *STEPS)
ENDLESS = 1 << 62  # batches of a bench feed: its reader goes on into its next epochs


def build_stage(path, split: str, spec: ClipSpec, upto: str, batch: int, threads: int, seed: int,
                mode: str = "train", gpu: bool = False, prefetch: int = 2, clips: int = 1) -> Callable[[], int]:
    """One batch of the DALI loader of `split` (`mode`) cut after `upto` (one of `STAGES`), as a
    step that runs it and returns its clip count; `gpu`: the pixels graph on the current GPU;
    `clips`: train clips per video read (a batch of `batch` clips reads ``batch // clips`` videos)."""
    if batch % clips:
        raise ValueError(f"batch {batch} is not a multiple of {clips} clips per video")
    batch //= clips
    shards = ShardSet.open(path)
    exts = member_exts(shards.video_ext, checksum=shards.checksummed)
    reader = reader_pipeline(files=shards.tars(split), index_files=shards.local_indexes(split), exts=exts,
                             shuffle_buffer=256 if mode == "train" else 0,
                             batch_size=batch, num_threads=1, device_id=None, seed=seed, prefetch_queue_depth=prefetch)
    reader.build()
    if upto == "read":
        return lambda: len(reader.run()[0]) * clips  # the clips these videos make
    samples = EpochFeed(exts)
    samples.start(reader, ENDLESS)
    feed = ClipFeed(samples, Planner(spec, mode, num_clips=clips, seed=seed), shards.video_ext, share=not gpu)
    if upto == "plan":
        def plan() -> int:
            feed()
            return len(feed.take(feed.pending[0].serial).ids)
        return plan
    video = shards.video_ext != JPEG_EXT
    pipe = clips_pipeline(source=feed, spec=spec, video=video, upto=upto, gpu=gpu, clips=feed.planner.train_clips,
                          batch_size=batch * (1 if video else clips * spec.frames_per_clip), num_threads=threads,
                          device_id=0 if gpu else None, seed=seed, prefetch_queue_depth=prefetch)
    with warnings.catch_warnings():  # cut before the views, the graph leaves the feed's anchors unread
        warnings.simplefilter("ignore")
        pipe.build()

    def step() -> int:
        serial = pipe.run()[1]
        return len(feed.take(int(np.asarray(serial[0]))).ids)

    return step
