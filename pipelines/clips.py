"""DALI graphs for vidact: `train`, `eval` and `multiview` clips from vidact shards.

Each graph reads top to bottom as the data flows: read a shard sample -> choose frame indices
(the window rules of `vidact/sampling.py`, as graph arithmetic) -> decode each distinct frame
once -> one spatial transform per clip -> repeat frames where the window is shorter than T ->
normalize -> ``F, C, H, W`` clips. The same graph runs with
the GPU decoder (``device="mixed"``, NVDEC) and CUDA kernels when ``gpu=True``, or entirely on
DALI's CPU backend otherwise.

How a sample is read and its frames decoded is `pipelines.decoding`: a clip stored as IVF with
its cut tables (`vidact.shards`, format 2) is cut at its keyframes before decoding (the decoder
gets only the frame runs that lead to the clip's distinct frames, not the whole prefix from frame
0); an older set (WebM, no tables) is decoded from frame 0, as DALI 2.4's decoder does without an
index; a clip stored as JPEG frames (`vidact.jpeg_frames`) has each distinct frame's JPEG decoded
and no other (the graphs are built with DALI's per-sample conditionals for that; train batches of
JPEG frames take `pipelines.frames`, a graph over their frames).

Outputs of every graph, in order: ``video, label, meta, frames, decoded, glued``, then
graph-specific extras (see ``OUTPUTS``). ``meta`` is the sample's JSON record as zero-padded
bytes; ``frames`` the clip's T frame indices; ``decoded`` the distinct indices the decoder was
asked for, ascending, padded with -1; ``glued`` how many frames the decoder decoded to get them
(the cut stream's length, or the last index + 1 from frame 0).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from pipelines.arith import as_float, as_int, constant, head, select
from pipelines.decoding import (
    Sample,
    decode_frames,
    member_exts,
    read_samples,
)
from vidact.clip.sampling import EPS, MAX_RANDOM_STRIDE, MIDDLE_HI, MIDDLE_LO
from vidact.clip.spec import CROP_ASPECT, CROP_SCALE, ClipSpec

# Every output but ``video`` is a CPU node that no GPU operator reads: DALI pins the CPU inputs of
# GPU operators, and torch.from_dlpack takes no pinned DALI tensor (kDLCUDAHost).
OUTPUTS = {
    "train": ("video", "label", "meta", "frames", "decoded", "glued", "window_u", "crop", "flip"),
    "eval": ("video", "label", "meta", "frames", "decoded", "glued"),
    "multiview": ("video", "label", "meta", "frames", "decoded", "glued"),
}


# --------------------------------------------------------------------------- shared steps

def _window(nframes, spec: ClipSpec, u):
    """First frame and frame count of the observation window for ``spec.ratio``/``spec.window``
    at fraction `u` of its start range (`vidact.clip.sampling.window`), as float nodes."""
    n = as_float(nframes[0])
    observed = spec.ratio * n
    if spec.window == "prefix":
        lo = hi = n * 0.0
    else:
        safe_start, safe_end = MIDDLE_LO * n, MIDDLE_HI * n - observed
        fits = safe_end > safe_start
        lo = select(fits, safe_start, 0.0)
        hi = select(fits, safe_end, dmath.max(n - observed, 0.0))
    start = lo + u * (hi - lo)
    first = dmath.clamp(dmath.ceil(start - EPS), 0.0, n - 1.0)
    last = dmath.clamp(dmath.ceil(start + observed - EPS) - 1.0, first, n - 1.0)
    return first, last - first + 1.0


def _arange(t: int):
    return types.Constant(np.arange(t, dtype=np.float32))


def _indices(first, count, t: int, stride_u=None):
    """T float indices in the window: linspace (`indices_in_window`) or a random stride."""
    k = _arange(t)
    idx = first + dmath.floor(k * ((count - 1.0) / max(t - 1, 1)) + EPS)
    if stride_u is not None:
        u_stride, u_offset = stride_u
        max_stride = dmath.max(dmath.floor((count - 1.0) / max(t - 1, 1)), 1.0)
        stride = 1.0 + dmath.floor(u_stride * dmath.min(max_stride, float(MAX_RANDOM_STRIDE)))
        span = stride * (t - 1)
        strided = first + dmath.floor(u_offset * (count - span)) + stride * k
        idx = select(span <= count - 1.0, strided, idx)
    return idx


def frame_indices(nframes, spec: ClipSpec, u, stride_u=None):
    """`vidact.clip.sampling.frame_indices` in graph arithmetic: the T int32 indices of a clip."""
    first, count = _window(nframes, spec, u)
    return as_int(_indices(first, count, spec.frames_per_clip, stride_u))


class FramePlan(NamedTuple):
    """A clip's T indices and how to get them decoding each frame once.

    DALI 2.4's video decoder has no index: it decodes from frame 0 up to the last index asked
    for, and starts again from frame 0 for every repeated index. So the decoder gets only the
    distinct indices, ascending, and `expand` repeats them after decoding."""

    frames: Any  # (T,) int32: the clip's indices (`vidact.clip.sampling.frame_indices`)
    distinct: Any  # (D,) int32, D = min(window count, T): ascending, what the decoder gets
    decoded: Any  # (T,) int32: `distinct` padded with -1 (a fixed-size output for the loader)
    order: Any  # (T,) int32: clip frame i is decoded frame order[i]
    want: Any  # (T,) int32: `distinct` padded with its last index (what `cut_stream` takes)
    count: Any  # float node: D, the number of distinct frames


def frame_plan(nframes, spec: ClipSpec, u, stride_u=None) -> FramePlan:
    """`frame_indices` plus the distinct frames to decode and the order that expands them."""
    first, count = _window(nframes, spec, u)
    t = spec.frames_per_clip
    idx, k = _indices(first, count, t, stride_u), _arange(t)
    # A window of fewer than T frames gives linspace steps < 1 (the stride branch needs T
    # frames), which reach every frame of it: its distinct frames are first .. first+count-1.
    # Otherwise steps are >= 1 and the T indices are already distinct.
    short = count < float(t)
    distinct = select(short, first + k, idx)
    n_distinct = dmath.min(count, float(t))
    return FramePlan(
        frames=as_int(idx),
        distinct=head(as_int(distinct), n_distinct),
        decoded=as_int(select(k < n_distinct, distinct, -1.0)),
        order=as_int(select(short, idx - first, k)),
        want=as_int(select(k < n_distinct, distinct, first + n_distinct - 1.0)),
        count=n_distinct)


class UnionPlan(NamedTuple):
    """The frames of several clips of one sample decoded in one pass: the union of their
    distinct frames, ascending, and where each clip's T frames are in it."""

    want: Any  # (M,) int32, M = K * T: the union, then repeats of its last index
    count: Any  # float node: D, the size of the union
    decoded: Any  # (M,) int32: the union padded with -1
    orders: list  # K x (T,) int32: clip k's frame i is union frame orders[k][i]


def union_plan(plans: list[FramePlan], t: int) -> UnionPlan:
    """Sorted union of the clips' indices by counting, as graphs have no sort: an index is the
    first of its value when no earlier entry equals it; its place in the union is the number of
    first entries below it."""
    m = len(plans) * t
    x = as_float(fn.cat(*(p.frames for p in plans), axis=0))
    row, col = fn.reshape(x, shape=[1, m]), fn.reshape(x, shape=[m, 1])  # [i, j]: x_j, x_i
    earlier = constant(np.tril(np.ones((m, m)), k=-1))  # [i, j]: j < i
    first = as_float(fn.reductions.sum(as_float(row == col) * earlier, axes=[1]) < 0.5)
    rank = fn.reductions.sum(as_float(row < col) * fn.reshape(first, shape=[1, m]), axes=[1])
    count = fn.reductions.sum(first)
    slots = constant(np.arange(m).reshape(m, 1))
    union = fn.reductions.sum(as_float(fn.reshape(rank, shape=[1, m]) == slots)
                              * fn.reshape(first * x, shape=[1, m]), axes=[1])
    inside = _arange(m) < count
    return UnionPlan(want=as_int(select(inside, union, fn.reductions.max(x))), count=count,
                     decoded=as_int(select(inside, union, -1.0)),
                     orders=[as_int(rank[k * t:(k + 1) * t]) for k in range(len(plans))])


def expand(frames, plan: FramePlan, t: int):
    """The clip's `t` frames from its decoded distinct frames (repeats copied, on the device). A
    clip of `t` distinct frames (the usual one) is its decoded frames as they are, not a copy."""
    if plan.count >= float(t):
        clip = frames
    else:
        clip = fn.sequence_rearrange(frames, new_order=plan.order)
    return clip


def resize_shorter(hw, short):
    """A resize of frames (a clip or one frame) whose shorter side becomes `short`
    (`vidact.clip.geometry.resize_shorter_size`, round half up); the size is computed once."""
    h, w = as_float(hw[0]), as_float(hw[1])
    m = dmath.min(h, w)
    size = fn.stack(dmath.floor(h * short / m + 0.5), dmath.floor(w * short / m + 0.5))
    return lambda frames: fn.resize(frames, size=size)


def crop_box(hw, draws=None):
    """One random crop window per clip (`vidact.clip.geometry.random_crop_box`): ``(y0, x0, h,
    w)`` float nodes. `draws`: the four uniform draws (area, aspect, x, y), drawn here when not
    given."""
    h, w = as_float(hw[0]), as_float(hw[1])
    draws = draws or [fn.random.uniform(range=[0.0, 1.0]) for _ in range(4)]
    u_area, u_aspect, u_x, u_y = draws
    area = h * w * (CROP_SCALE[0] + u_area * (CROP_SCALE[1] - CROP_SCALE[0]))
    lo, hi = math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])
    aspect = dmath.exp(lo + u_aspect * (hi - lo))
    cw = dmath.min(dmath.sqrt(area * aspect), w)
    ch = dmath.min(dmath.sqrt(area / aspect), h)
    return u_y * (h - ch), u_x * (w - cw), ch, cw


def resize_box(box, size):
    """A resize of `box` ``(y0, x0, h, w)`` of frames (a clip or one frame) to ``size x size``."""
    y0, x0, ch, cw = box
    return lambda frames: fn.resize(frames, size=[size, size], roi_start=fn.stack(y0, x0),
                                    roi_end=fn.stack(y0 + ch, x0 + cw))


def normalize(frames, spec: ClipSpec, gpu, crop=None, pos_x=0.5, pos_y=0.5, mirror=0, layout="FCHW"):
    """Optional crop, optional horizontal flip, mean/std on 0..255 pixels, channels first
    (`layout`: ``FCHW`` for clips, ``CHW`` for single frames)."""
    # DALI has no bf16: on a GPU, bf16 clips leave DALI as fp16 (half the bytes of fp32, more
    # precision than bf16) and are cast on the device; the CPU keeps fp32 (unchanged output).
    half = spec.dtype == "fp16" or (gpu and spec.dtype == "bf16")
    dtype = types.FLOAT16 if half else types.FLOAT
    return fn.crop_mirror_normalize(
        frames, dtype=dtype, output_layout=layout, crop=crop, crop_pos_x=pos_x, crop_pos_y=pos_y,
        mirror=mirror, mean=[255.0 * m for m in spec.mean], std=[255.0 * s for s in spec.std])


def padded(meta):
    """JSON bytes zero-padded to the batch's longest, so the batch is one tensor."""
    return fn.pad(meta, fill_value=0)


def cropped_frames(sample: Sample, plan: FramePlan, box, spec: ClipSpec, gpu, upto: str = "resize"):
    """The clip's decoded frames with the crop `box` resized to ``crop_size`` (`upto="decode"`:
    before the resize), and the frames decoded."""
    resize = None if upto == "decode" else resize_box(box, spec.crop_size)
    return decode_frames(sample, plan.want, spec.frames_per_clip, plan.count, gpu, resize)


# --------------------------------------------------------------------------- graphs

# A train clip's random numbers, drawn by `train_reader_pipeline` in one vector per sample:
# the window's start, the random stride's two, the crop's four (area, aspect, x, y).
DRAWS = ("window", "stride", "stride_offset", "crop_area", "crop_aspect", "crop_x", "crop_y")


@pipeline_def
def train_reader_pipeline(files, index_files, video_ext, spec: ClipSpec, shard_id=0, num_shards=1,
                          shuffle_buffer=256, cut=True):
    """The train epoch's samples and every random number their clips use, and nothing else: no
    decoding. Its batches feed `train_pipeline` (JPEG frames: `pipelines.frames`, through
    `vidact.data.frame_feed`); skipping batches of it costs almost nothing, so
    a run resumed inside an epoch reaches its position without decoding what it skips. Outputs
    the sample's members (`Sample` order, the cut tables when read), the draws (`DRAWS`) and the
    flip."""
    sample = read_samples(files, index_files, video_ext, shard_id, num_shards, shuffle_buffer, False, cut)
    draws = fn.random.uniform(range=[0.0, 1.0], shape=[len(DRAWS)])
    flip = fn.random.coin_flip(probability=spec.flip)
    return (*(m for m in sample if m is not None), draws, flip)


@pipeline_def(enable_conditionals=True)
def train_pipeline(source, spec: ClipSpec, video_ext, gpu=False, cut=True):
    """A train clip from one batch of `train_reader_pipeline` (`source` returns it, the members
    of ``member_exts(video_ext, cut)``): window, decode, one random resized crop, flip."""
    *members, draws, flip = fn.external_source(source=source, num_outputs=len(member_exts(video_ext, cut)) + 2,
                                               batch=True)
    sample = Sample(*members)
    stride_u = (draws[1], draws[2]) if spec.random_stride else None
    plan = frame_plan(sample.nframes, spec, draws[0], stride_u)
    box = crop_box(sample.hw, [draws[i] for i in range(3, 7)])
    frames, glued = cropped_frames(sample, plan, box, spec, gpu)
    clip = normalize(expand(frames, plan, spec.frames_per_clip), spec, gpu, mirror=flip)
    return clip, sample.label, padded(sample.meta), plan.frames, plan.decoded, glued, draws[0], fn.stack(*box), flip


@pipeline_def(enable_conditionals=True)
def eval_pipeline(files, index_files, video_ext, spec: ClipSpec, gpu=False, shard_id=0,
                  num_shards=1, cut=True):
    sample = read_samples(files, index_files, video_ext, shard_id, num_shards, 0, True, cut)
    plan = frame_plan(sample.nframes, spec, 0.5)
    frames, glued = decode_frames(sample, plan.want, spec.frames_per_clip, plan.count, gpu,
                                  resize_shorter(sample.hw, spec.resize_short))
    clip = normalize(expand(frames, plan, spec.frames_per_clip), spec, gpu, crop=(spec.crop_size, spec.crop_size))
    return clip, sample.label, padded(sample.meta), plan.frames, plan.decoded, glued


@pipeline_def(enable_conditionals=True)
def multiview_pipeline(files, index_files, video_ext, spec: ClipSpec, gpu=False, shard_id=0,
                       num_shards=1, num_clips=1, num_crops=3, flip=True, cut=True):
    """Views in `vidact.clip.sampling.multiview_plan` order: per temporal clip, the crops (center,
    then left/right for landscape or top/bottom for portrait), then the same crops flipped.
    The K clips' frames are decoded in one pass, each distinct frame once (`union_plan`).
    Output ``(V, T, C, H, W)`` per sample; ``frames`` is ``(K, T)``, ``decoded`` the union
    ``(K * T,)`` padded with -1."""
    sample = read_samples(files, index_files, video_ext, shard_id, num_shards, 0, True, cut)
    landscape = as_float(sample.hw[1] >= sample.hw[0])
    # (pos_y, pos_x) of the three crops, chosen per sample by its orientation.
    anchors = [(0.5, 0.5),
               (0.5 * landscape, 0.5 - 0.5 * landscape),
               (1.0 - 0.5 * landscape, 0.5 + 0.5 * landscape)][:num_crops]
    plans = [frame_plan(sample.nframes, spec, (k + 0.5) / num_clips) for k in range(num_clips)]
    union = union_plan(plans, spec.frames_per_clip)
    frames, glued = decode_frames(sample, union.want, num_clips * spec.frames_per_clip, union.count, gpu,
                                  resize_shorter(sample.hw, spec.resize_short))
    views = []
    for order in union.orders:
        clip = fn.sequence_rearrange(frames, new_order=order)
        for mirror in ((0, 1) if flip else (0,)):
            for pos_y, pos_x in anchors:
                views.append(normalize(clip, spec, gpu, crop=(spec.crop_size, spec.crop_size), pos_x=pos_x,
                                       pos_y=pos_y, mirror=mirror))
    return (fn.stack(*views), sample.label, padded(sample.meta), fn.stack(*(p.frames for p in plans)),
            union.decoded, glued)


@pipeline_def(enable_conditionals=True)
def decode_only_pipeline(files, index_files, video_ext, spec: ClipSpec, gpu=False, shard_id=0, num_shards=1,
                         cut=True):
    """Read and decode the eval window's distinct frames, nothing else: the decoder's own cost,
    for benchmarks. Outputs ``(D, H, W, 3)`` uint8 per sample (D distinct frames), then
    ``frames`` (the T indices), ``decoded`` (the distinct ones, padded with -1) and ``glued``
    (the frames the decoder decoded)."""
    sample = read_samples(files, index_files, video_ext, shard_id, num_shards, 0, False, cut)
    plan = frame_plan(sample.nframes, spec, 0.5)
    frames, glued = decode_frames(sample, plan.want, spec.frames_per_clip, plan.count, gpu)
    return frames, plan.frames, plan.decoded, glued


TRAIN_STEPS = ("decode", "resize", "normalize")


@pipeline_def(enable_conditionals=True)
def train_steps_pipeline(files, index_files, video_ext, spec: ClipSpec, upto: str = "normalize",
                         shuffle_buffer=256):
    """`train_pipeline` stopped after one of `TRAIN_STEPS` (decode, the random resized crop, or
    the whole graph), CPU only, one output: where a train clip's time goes, for benchmarks
    (JPEG-frames clips: `pipelines.frames` has the same cuts)."""
    sample = read_samples(files, index_files, video_ext, 0, 1, shuffle_buffer, pad_last=False)
    plan = frame_plan(sample.nframes, spec, fn.random.uniform(range=[0.0, 1.0]))
    frames, _glued = cropped_frames(sample, plan, crop_box(sample.hw), spec, False, upto)
    if upto == "decode":
        return frames
    clip = expand(frames, plan, spec.frames_per_clip)
    if upto == "resize":
        return clip
    return normalize(clip, spec, False, mirror=fn.random.coin_flip(probability=spec.flip))


PIPELINES = {"train": train_pipeline, "eval": eval_pipeline, "multiview": multiview_pipeline}
