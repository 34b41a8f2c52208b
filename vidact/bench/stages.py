"""The DALI train graph cut after each step, for the breakdown: where a DALI clip's time goes.

`pipelines.clips.train_steps_pipeline` is the train graph stopped after ``decode``, ``resize``
(the random resized crop) or ``normalize`` (crop_mirror_normalize: the whole graph); a
JPEG-frames set is cut in its own train graph (`pipelines.frames`, fed by the reader and
`vidact.data.frame_feed` as the loader feeds it). Run with ``pipe.run()``: no DALI iterator,
no copy into torch. The loader row (``dali_train``) adds the iterator's copy into torch and the
loader's own copy; each stage's cost is its difference from the previous one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from pipelines.clips import TRAIN_STEPS, train_reader_pipeline, train_steps_pipeline
from pipelines.frames import JPEG_REGION_DECODE, train_frames_pipeline
from vidact.clip.spec import ClipSpec
from vidact.data.frame_feed import FrameFeed
from vidact.shards import JPEG_EXT, ShardSet

STAGES = TRAIN_STEPS


def build_stage(path, split: str, spec: ClipSpec, upto: str, batch: int, threads: int, seed: int,
                prefetch: int = 2, region: bool = JPEG_REGION_DECODE) -> Callable[[], int]:
    """One batch of the CPU train graph of `split` cut after `upto`, as a step that runs it and
    returns its clip count. `region`: JPEG frames decode only their crop's region."""
    shards = ShardSet.open(path)
    kw = dict(spec=spec, batch_size=batch, num_threads=threads, device_id=None, seed=seed,
              prefetch_queue_depth=prefetch)
    if shards.video_ext != JPEG_EXT:
        pipe = train_steps_pipeline(files=shards.tars(split), index_files=shards.indexes(split),
                                    video_ext=shards.video_ext, upto=upto, **kw)
        pipe.build()
        return lambda: len(pipe.run()[0])
    reader = train_reader_pipeline(files=shards.tars(split), index_files=shards.indexes(split),
                                   video_ext=JPEG_EXT, **kw)
    reader.build()
    feed = FrameFeed(reader.run, spec, region)  # a reader's run() goes on into its next epoch
    pipe = train_frames_pipeline(source=feed, region=region, upto=upto,
                                 **{**kw, "batch_size": batch * spec.frames_per_clip})
    with warnings.catch_warnings():  # cut before the flip, the graph leaves the feed's flips unread
        warnings.simplefilter("ignore")
        pipe.build()

    def step() -> int:
        serial = pipe.run()[1]
        return len(feed.take(int(np.asarray(serial[0]))).label)

    return step
