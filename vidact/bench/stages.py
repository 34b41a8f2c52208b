"""The DALI train graph cut after each step, for the breakdown: where a DALI clip's time goes.

`pipelines.clips.train_steps_pipeline` is the train graph stopped after ``decode``, ``resize``
(the random resized crop) or ``normalize`` (crop_mirror_normalize: the whole graph), run with
``pipe.run()``: no DALI iterator, no copy into torch. The loader
row (``dali_train``) adds the iterator's copy into torch and the loader's own copy; each stage's
cost is its difference from the previous one.
"""

from __future__ import annotations

from pipelines.clips import TRAIN_STEPS, train_steps_pipeline
from vidact.clip.spec import ClipSpec
from vidact.shards import ShardSet

STAGES = TRAIN_STEPS


def build_stage(path, split: str, spec: ClipSpec, upto: str, batch: int, threads: int, seed: int,
                prefetch: int = 2):
    """The CPU pipeline of `train_steps_pipeline` over `split`, built."""
    shards = ShardSet.open(path)
    pipe = train_steps_pipeline(files=shards.tars(split), index_files=shards.indexes(split),
                                video_ext=shards.video_ext, spec=spec, upto=upto, batch_size=batch,
                                num_threads=threads, device_id=None, seed=seed, prefetch_queue_depth=prefetch)
    pipe.build()
    return pipe
