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

from pipelines.decoding import decode, normalize_views, read_samples, resize_box
from vidact.clip.spec import ClipSpec

# What the feed gives `clips_pipeline` per batch entry, in order: a video sample, or a JPEG frame
# (`source`: the entry whose decoded frame it takes, itself but for a frame that two train clips
# share on the CPU); then per clip (a video's one set for all its clips, or per train clip:
# `CLIP_INPUTS`, `select` only then) the frames and box; then per view its anchor and flip
# (`VIEW_INPUTS`: the views of every clip, or one view per train clip).
VIDEO_INPUTS = ("data", "positions", "size", "serial")
JPEG_INPUTS = ("data", "source", "box_start", "box_shape", "size", "serial")
CLIP_INPUTS = ("select", "order", "box_start", "box_shape")
VIEW_INPUTS = ("pos_y", "pos_x", "flip")
# Where `clips_pipeline` can stop, for the benchmark's breakdown: after decoding, after the resize
# of the box (uint8, ``HWC``), or the whole graph.
STEPS = ("decode", "resize", "normalize")


def input_names(video: bool, views: int, clips: int = 1) -> tuple[str, ...]:
    """The feed's outputs for a graph of `views` views per sample, or (`clips` > 1, train) of
    `clips` clips per video sample, each its own box and one view."""
    if not video:
        base = JPEG_INPUTS
    elif clips == 1:
        base = VIDEO_INPUTS + tuple(f"{name}0" for name in CLIP_INPUTS[1:])
    else:
        base = VIDEO_INPUTS + tuple(f"{name}{c}" for c in range(clips) for name in CLIP_INPUTS)
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
    `clips` > 1 (train, video): the sample's frames are decoded once, then each clip takes its
    own frames, box and view (a branch per clip), their frames one after the other.
    `dali_resize`: resize with DALI's `fn.resize` (default: on a GPU; on the CPU, torch's)."""
    names = input_names(video, views if clips == 1 else clips, clips)
    inputs = dict(zip(names, fn.external_source(source=source, num_outputs=len(names), batch=True)))
    frames = decode(inputs["data"], inputs.get("positions"), video, gpu)
    if upto == STEPS[0]:
        return frames, inputs["serial"]
    dali = gpu if dali_resize is None else dali_resize
    anchors = [tuple(inputs[f"{name}{v}"] for name in VIEW_INPUTS) for v in range(views if clips == 1 else clips)]
    if not video:
        frames = resize_box(frames, inputs["box_start"], inputs["box_shape"], inputs["size"], False, dali,
                            inputs["source"])
        return (normalize_views(frames, spec, gpu, anchors, False) if upto == STEPS[-1] else frames), inputs["serial"]
    branches = []
    for c in range(clips):
        clip = frames if clips == 1 else fn.sequence_rearrange(frames, new_order=inputs[f"select{c}"])
        clip = resize_box(clip, inputs[f"box_start{c}"], inputs[f"box_shape{c}"], inputs["size"], True, dali)
        clip = fn.sequence_rearrange(clip, new_order=inputs[f"order{c}"])
        if upto == STEPS[-1]:
            clip = normalize_views(clip, spec, gpu, anchors if clips == 1 else anchors[c:c + 1], True)
        branches.append(clip)
    return (branches[0] if clips == 1 else fn.cat(*branches, axis=0)), inputs["serial"]
