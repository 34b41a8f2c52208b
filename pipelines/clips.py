"""DALI graphs for vidact: a reader of shard samples, and the graph that makes their clips' pixels.

A loader runs them as two pipelines with Python between (`vidact.data.feed`): `reader_pipeline`
reads shard samples (members only: no decoding, so a resumed epoch skips batches of it for almost
nothing); the feed computes each sample's plan (`vidact.clip.plan`: frames, keyframe cut, box,
views, the reference loader's own functions) and hands `clips_pipeline` what to decode and where
its pixels go. That graph reads top to bottom as the data flows: decode what it is given ->
resize each frame's box -> repeat frames where a window is shorter than T -> crop, flip and
normalize each view (train clips of one video sample, ``--clips-per-video``: a branch each after
the one decode). A video sample is one batch entry (its glued keyframe cut, decoded by
`fn.decoders.video`); a JPEG-frames clip is fed frame by frame (a batch of frames: each decoded
alone, no state between them), and the loader puts the clips back together.

The same graph runs with NVDEC / the GPU's JPEG decoder and CUDA kernels when ``gpu=True``, or on
DALI's CPU backend; only the resize differs (`pipelines.decoding.resize_box`).
"""

from __future__ import annotations

import nvidia.dali.fn as fn
from nvidia.dali import pipeline_def

from pipelines.decoding import decode, normalize, normalize_views, read_samples, resize_box
from vidact.clip.spec import ClipSpec

# What the feed gives `clips_pipeline` per batch entry, in order: a video sample, or a JPEG frame
# (`source`: the entry whose decoded frame it takes, itself but for a frame that two train clips
# share on the CPU); then a video's frames and box (`CLIP_INPUTS`, one set for all its clips), or
# each train clip's own (`TRAIN_CLIP_INPUTS`, K > 1: its frames among the decoded, their order,
# its box, its flip); then per view its anchor and flip (`VIEW_INPUTS`; none with K train clips).
VIDEO_INPUTS = ("data", "positions", "size", "serial")
JPEG_INPUTS = ("data", "source", "box_start", "box_shape", "size", "serial")
CLIP_INPUTS = ("order", "box_start", "box_shape")
TRAIN_CLIP_INPUTS = ("select", "order", "box_start", "box_shape", "flip")
VIEW_INPUTS = ("pos_y", "pos_x", "flip")
# Where `clips_pipeline` can stop, for the benchmark's breakdown: after decoding, after the resize
# of the box (uint8, ``HWC``), or the whole graph.
STEPS = ("decode", "resize", "normalize")


def input_names(video: bool, views: int, clips: int = 1) -> tuple[str, ...]:
    """The feed's outputs for a graph of `views` views per sample, or (`clips` > 1, train) of
    `clips` clips per video sample, each its own frames, box and flip."""
    if video and clips > 1:
        return VIDEO_INPUTS + tuple(f"{name}{c}" for c in range(clips) for name in TRAIN_CLIP_INPUTS)
    base = VIDEO_INPUTS + tuple(f"{name}0" for name in CLIP_INPUTS) if video else JPEG_INPUTS
    return base + tuple(f"{name}{v}" for v in range(views) for name in VIEW_INPUTS)


@pipeline_def
def reader_pipeline(files, index_files, exts, shard_id=0, num_shards=1, shuffle_buffer=0, pad_last=False, mmap=True):
    """One shard sample per batch entry (its members `exts`, `vidact.shards.member_exts`), shuffled
    in a buffer of `shuffle_buffer` samples (0: in order; `pad_last`: the last batch filled with
    repeats of the last sample, for eval). Built with ``enable_checkpointing=True``, its
    ``checkpoint()`` after a batch restores it there (``checkpoint=``): a resumed epoch reads its
    shuffle buffer again, not the batches before."""
    return read_samples(files, index_files, exts, shard_id, num_shards, shuffle_buffer, pad_last, mmap)


@pipeline_def
def clips_pipeline(source, spec: ClipSpec, video: bool, views: int = 1, clips: int = 1, gpu: bool = False,
                   upto: str = "normalize", dali_resize: bool | None = None):
    """The pixels of the plans `source` feeds (`input_names`): decode, resize the box, repeat
    what repeats (video samples; JPEG frames are put in place by the loader), then per view a
    crop, a flip and the normalization. Outputs the pixels (`views`) and the feed's ``serial``.
    `clips` > 1 (train): a video sample's frames are decoded once, then each clip takes its own
    frames, box and flip (a branch per clip, `train_clips`), their frames one after the other;
    JPEG frames need nothing more (each entry carries its clip's box and flip).
    `dali_resize`: resize with DALI's `fn.resize` (default: on a GPU; on the CPU, torch's)."""
    names = input_names(video, views, clips)
    inputs = dict(zip(names, fn.external_source(source=source, num_outputs=len(names), batch=True)))
    frames = decode(inputs["data"], inputs.get("positions"), video, gpu)
    if upto == STEPS[0]:
        return frames, inputs["serial"]
    dali = gpu if dali_resize is None else dali_resize
    if video and clips > 1:
        return train_clips(inputs, frames, spec, clips, gpu, dali, upto), inputs["serial"]
    anchors = [tuple(inputs[f"{name}{v}"] for name in VIEW_INPUTS) for v in range(views)]
    if video:
        frames = resize_box(frames, inputs["box_start0"], inputs["box_shape0"], inputs["size"], True, dali)
        frames = fn.sequence_rearrange(frames, new_order=inputs["order0"])
    else:
        frames = resize_box(frames, inputs["box_start"], inputs["box_shape"], inputs["size"], False, dali,
                            inputs["source"])
    return (normalize_views(frames, spec, gpu, anchors, video) if upto == STEPS[-1] else frames), inputs["serial"]


def train_clips(inputs: dict, frames, spec: ClipSpec, clips: int, gpu: bool, dali: bool, upto: str):
    """K train clips of one decoded video sample: a branch per clip takes its frames, resizes its
    box, repeats what repeats and flips; their uint8 frames one after the other are normalized
    once (a float copy of K clips costs 4x a uint8 one)."""
    branches = []
    for c in range(clips):
        clip = fn.sequence_rearrange(frames, new_order=inputs[f"select{c}"])
        clip = resize_box(clip, inputs[f"box_start{c}"], inputs[f"box_shape{c}"], inputs["size"], True, dali)
        clip = fn.sequence_rearrange(clip, new_order=inputs[f"order{c}"])
        branches.append(fn.flip(clip, horizontal=inputs[f"flip{c}"]))
    frames = fn.cat(*branches, axis=0)
    if upto != STEPS[-1]:
        return frames
    return normalize(frames, spec, gpu, (spec.crop_size, spec.crop_size))
