"""The DALI train graph cut after each step, for the breakdown: where a DALI clip's time goes.

`stage_pipeline` is `pipelines.clips.train_pipeline` built from the same shared steps, stopped
after ``decode``, ``resize`` (the random resized crop) or ``normalize`` (crop_mirror_normalize:
the whole graph), and run with ``pipe.run()``: no DALI iterator, no copy into torch. The loader
row (``dali_train``) adds the iterator's copy into torch and the loader's own copy; each stage's
cost is its difference from the previous one.
"""

from __future__ import annotations

import nvidia.dali.fn as fn
from nvidia.dali import pipeline_def

from pipelines.clips import decode, frame_indices, normalize, random_resized_crop, read_samples
from vidact.clip.spec import ClipSpec
from vidact.shards import ShardSet

STAGES = ("decode", "resize", "normalize")


@pipeline_def
def stage_pipeline(files, index_files, video_ext, spec: ClipSpec, upto: str = "normalize", shuffle_buffer=256):
    video, _meta, nframes, _label, hw = read_samples(files, index_files, video_ext, 0, 1, shuffle_buffer,
                                                     pad_last=False)
    idx = frame_indices(nframes, spec, fn.random.uniform(range=[0.0, 1.0]))
    frames = decode(video, idx, False)
    if upto == "decode":
        return frames
    frames, _crop = random_resized_crop(frames, hw, spec.size)
    if upto == "resize":
        return frames
    return normalize(frames, spec, mirror=fn.random.coin_flip(probability=spec.flip))


def build_stage(path, split: str, spec: ClipSpec, upto: str, batch: int, threads: int, seed: int,
                prefetch: int = 2):
    """The CPU pipeline of `stage_pipeline` over `split`, built."""
    shards = ShardSet.open(path)
    pipe = stage_pipeline(files=[str(p) for p in shards.tars(split)],
                          index_files=[str(p) for p in shards.indexes(split)], video_ext=shards.video_ext,
                          spec=spec, upto=upto, batch_size=batch, num_threads=threads, device_id=None, seed=seed,
                          prefetch_queue_depth=prefetch)
    pipe.build()
    return pipe
