"""DALI graphs for vidact: `train`, `eval` and `multiview` clips from vidact shards.

Each graph reads top to bottom as the data flows: read a shard sample -> choose frame indices
(the window rules of `vidact/sampling.py`, as graph arithmetic) -> decode each distinct frame
once -> one spatial transform per clip -> repeat frames where the window is shorter than T ->
normalize -> ``F, C, H, W`` clips. The same graph runs with
the GPU decoder (``device="mixed"``, NVDEC) and CUDA kernels when ``gpu=True``, or entirely on
DALI's CPU backend otherwise.

A clip stored as IVF with its cut tables (`vidact.shards`, format 2) is cut at its keyframes
before decoding (`cut_stream`, the twin of `vidact.clip.cut`): the decoder gets only the frame
runs that lead to the clip's distinct frames, not the whole prefix from frame 0. An older set
(WebM, no tables) is decoded from frame 0, as DALI 2.4's decoder does without an index. A clip
stored as JPEG frames (`vidact.jpeg_frames`) has each distinct frame's JPEG decoded, and no other
(`decode_images`: the graphs are built with DALI's per-sample conditionals for that).

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

from vidact.clip.sampling import EPS, MAX_RANDOM_STRIDE, MIDDLE_HI, MIDDLE_LO
from vidact.clip.spec import CROP_ASPECT, CROP_SCALE, ClipSpec
from vidact.ivf import COUNT_AT, HEADER_BYTES
from vidact.shards import (
    HW_EXT,
    IVF_EXT,
    JPEG_EXT,
    KEYFRAMES_EXT,
    LABEL_EXT,
    META_EXT,
    NFRAMES_EXT,
    OFFSETS_EXT,
)

# Every output but ``video`` is a CPU node that no GPU operator reads: DALI pins the CPU inputs of
# GPU operators, and torch.from_dlpack takes no pinned DALI tensor (kDLCUDAHost).
OUTPUTS = {
    "train": ("video", "label", "meta", "frames", "decoded", "glued", "window_u", "crop", "flip"),
    "eval": ("video", "label", "meta", "frames", "decoded", "glued"),
    "multiview": ("video", "label", "meta", "frames", "decoded", "glued"),
}
READER = "reader"


# --------------------------------------------------------------------------- shared steps

class Sample(NamedTuple):
    """One shard sample's members as graph nodes."""

    video: Any  # the encoded clip, uint8 bytes
    meta: Any  # the JSON record, uint8 bytes
    nframes: Any  # (1,) int32: N
    label: Any  # (1,) int32
    hw: Any  # (2,) int32: height, width
    # (N + 1,) int32: an IVF clip's frame offsets (`vidact.ivf.IvfTables`), or a JPEG-frames
    # clip's (`vidact.jpeg_frames.pack`), which has no keyframe table
    offsets: Any = None
    keyframes: Any = None  # (N,) int32: each frame's keyframe


def member_exts(video_ext: str, cut: bool = True) -> list[str]:
    """The members a graph reads, in `Sample` order: an IVF clip's cut tables unless `cut` is
    off (decoded from frame 0, the benchmark's comparison); a JPEG-frames clip's frame table."""
    exts = [video_ext, META_EXT, NFRAMES_EXT, LABEL_EXT, HW_EXT]
    if video_ext == IVF_EXT and cut:
        exts += [OFFSETS_EXT, KEYFRAMES_EXT]
    if video_ext == JPEG_EXT:
        exts += [OFFSETS_EXT]
    return exts


def read_samples(files, index_files, video_ext, shard_id, num_shards, shuffle_buffer, pad_last, cut=True) -> Sample:
    """One shard sample (`member_exts`)."""
    exts = member_exts(video_ext, cut)
    members = fn.readers.webdataset(
        paths=files, index_paths=index_files, ext=exts,
        dtypes=[types.UINT8, types.UINT8, *[types.INT32] * (len(exts) - 2)],
        missing_component_behavior="error",
        random_shuffle=shuffle_buffer > 0, initial_fill=max(shuffle_buffer, 1),
        shard_id=shard_id, num_shards=num_shards,
        # Each reader keeps its shard every epoch, so epoch lengths are fixed and DDP ranks can
        # agree on a batch count; train clips are reshuffled inside the shard.
        stick_to_shard=True, pad_last_batch=pad_last, name=READER)
    return Sample(*members)


def _as_float(x):
    return fn.cast(x, dtype=types.FLOAT)


def _select(cond, a, b):
    """``a`` where cond else ``b``, for per-sample scalars (graphs have no branches)."""
    c = _as_float(cond)
    return c * a + (1.0 - c) * b


def _window(nframes, spec: ClipSpec, u):
    """First frame and frame count of the observation window for ``spec.ratio``/``spec.window``
    at fraction `u` of its start range (`vidact.clip.sampling.window`), as float nodes."""
    n = _as_float(nframes[0])
    observed = spec.ratio * n
    if spec.window == "prefix":
        lo = hi = n * 0.0
    else:
        safe_start, safe_end = MIDDLE_LO * n, MIDDLE_HI * n - observed
        fits = safe_end > safe_start
        lo = _select(fits, safe_start, 0.0)
        hi = _select(fits, safe_end, dmath.max(n - observed, 0.0))
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
        idx = _select(span <= count - 1.0, strided, idx)
    return idx


def _int(x):
    return fn.cast(x, dtype=types.INT32)


def frame_indices(nframes, spec: ClipSpec, u, stride_u=None):
    """`vidact.clip.sampling.frame_indices` in graph arithmetic: the T int32 indices of a clip."""
    first, count = _window(nframes, spec, u)
    return _int(_indices(first, count, spec.frames_per_clip, stride_u))


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
    distinct = _select(short, first + k, idx)
    n_distinct = dmath.min(count, float(t))
    return FramePlan(
        frames=_int(idx),
        distinct=_head(_int(distinct), n_distinct),
        decoded=_int(_select(k < n_distinct, distinct, -1.0)),
        order=_int(_select(short, idx - first, k)),
        want=_int(_select(k < n_distinct, distinct, first + n_distinct - 1.0)),
        count=n_distinct)


def _head(x, count):
    """The first `count` (a float node) entries of the 1-D `x`."""
    return fn.slice(x, _int(count * 0.0), _int(count), axes=[0])


def _constant(array):
    return types.Constant(np.asarray(array, dtype=np.float32))


def gather(table, index):
    """``table[index]`` for 1-D per-sample tensors: `fn.sequence_rearrange` along the first axis
    of the table seen as a sequence of one-element frames."""
    column = fn.reshape(table, shape=[-1, 1], layout="FX")
    return fn.reshape(fn.sequence_rearrange(column, new_order=index), shape=[-1], layout="")


def cut_stream(sample: Sample, want, m: int, count):
    """The keyframe cut of an IVF clip (`vidact.clip.cut.plan_cut` in graph arithmetic): for each
    of the `m` ascending indices `want` (its first `count` distinct, then repeats of the last),
    the run of frames from its keyframe, or from the frame after the previous wanted one when
    that lies in the same GOP, up to it; a repeat's run is empty. Returns the glued stream
    (`vidact.ivf.glue`: the header's frame count set to the runs' total), the wanted frames'
    positions in it (``count`` of them) and that total."""
    key = gather(sample.keyframes, want)
    prev = fn.cat(types.Constant(np.array([-1], np.int32)), fn.slice(want, 0, m - 1, axes=[0]), axis=0)
    start = _int(dmath.min(_select(key <= prev, prev + 1, key), want + 1))
    lo, hi = gather(sample.offsets, start), gather(sample.offsets, want + 1)
    pieces = [fn.slice(sample.video, lo[i:i + 1], hi[i:i + 1] - lo[i:i + 1], axes=[0]) for i in range(m)]
    runs = _as_float(want + 1 - start)
    ends = fn.reductions.sum(_constant(np.tril(np.ones((m, m)))) * fn.reshape(runs, shape=[1, m]), axes=[1])
    total = _int(fn.reductions.sum(runs))
    count_bytes = fn.reinterpret(fn.reshape(total, shape=[1]), dtype=types.UINT8, shape=[4])
    header = fn.cat(fn.slice(sample.video, 0, COUNT_AT, axes=[0]), count_bytes,
                    fn.slice(sample.video, COUNT_AT + 4, HEADER_BYTES - COUNT_AT - 4, axes=[0]), axis=0)
    return fn.cat(header, *pieces, axis=0), _head(_int(ends - 1.0), count), total


def decode_images(sample: Sample, want, m: int, count, gpu):
    """A JPEG-frames clip's frames at the `m` indices `want` (its first `count` distinct, then
    repeats of the last), ``(m, H, W, 3)`` uint8, decoding only the distinct ones: a slot past
    `count` is a per-sample conditional that copies the slot before it (never read: `expand`
    takes only the first `count`). On a GPU the JPEGs go to the hardware JPEG decoder (DALI's
    ``mixed`` image decoder, A100/H100-class engines) with a CUDA fallback."""
    lo, hi = gather(sample.offsets, want), gather(sample.offsets, want + 1)
    device = "mixed" if gpu else "cpu"
    images = []
    for i in range(m):
        if i == 0:
            image = fn.decoders.image(fn.slice(sample.video, lo[0:1], hi[0:1] - lo[0:1], axes=[0]),
                                      device=device, output_type=types.RGB)
        elif count > float(i):
            image = fn.decoders.image(fn.slice(sample.video, lo[i:i + 1], hi[i:i + 1] - lo[i:i + 1], axes=[0]),
                                      device=device, output_type=types.RGB)
        else:
            image = images[-1]
        images.append(image)
    return fn.stack(*images, axis_name="F"), _int(count)


def decode_frames(sample: Sample, want, m: int, count, gpu):
    """The `count` distinct frames the `m` indices `want` start with, ``(count, H, W, 3)`` uint8 (NVDEC when
    `gpu`; a JPEG-frames clip gives `m`, see `decode_images`), and how many frames the decoder decoded
    for them: one JPEG per distinct frame, a keyframe cut for an IVF clip, else from frame 0.
    ``pad_mode="none"``: an index past the stream's end raises (the default pads with black
    frames, silently)."""
    if sample.offsets is not None and sample.keyframes is None:
        return decode_images(sample, want, m, count, gpu)
    if sample.offsets is not None:
        stream, positions, glued = cut_stream(sample, want, m, count)
    else:
        stream, positions = sample.video, _head(want, count)
        glued = _int(fn.reductions.max(want) + 1)
    frames = fn.decoders.video(stream, device="mixed" if gpu else "cpu", frames=positions, pad_mode="none")
    return frames, glued


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
    x = _as_float(fn.cat(*(p.frames for p in plans), axis=0))
    row, col = fn.reshape(x, shape=[1, m]), fn.reshape(x, shape=[m, 1])  # [i, j]: x_j, x_i
    earlier = _constant(np.tril(np.ones((m, m)), k=-1))  # [i, j]: j < i
    first = _as_float(fn.reductions.sum(_as_float(row == col) * earlier, axes=[1]) < 0.5)
    rank = fn.reductions.sum(_as_float(row < col) * fn.reshape(first, shape=[1, m]), axes=[1])
    count = fn.reductions.sum(first)
    slots = _constant(np.arange(m).reshape(m, 1))
    union = fn.reductions.sum(_as_float(fn.reshape(rank, shape=[1, m]) == slots)
                              * fn.reshape(first * x, shape=[1, m]), axes=[1])
    inside = _arange(m) < count
    return UnionPlan(want=_int(_select(inside, union, fn.reductions.max(x))), count=count,
                     decoded=_int(_select(inside, union, -1.0)),
                     orders=[_int(rank[k * t:(k + 1) * t]) for k in range(len(plans))])


def expand(frames, plan: FramePlan):
    """The clip's T frames from its decoded distinct frames (repeats copied, on the device)."""
    return fn.sequence_rearrange(frames, new_order=plan.order)


def resize_shorter(frames, hw, short):
    """Shorter side to `short` (`vidact.clip.geometry.resize_shorter_size`, round half up)."""
    h, w = _as_float(hw[0]), _as_float(hw[1])
    m = dmath.min(h, w)
    size = fn.stack(dmath.floor(h * short / m + 0.5), dmath.floor(w * short / m + 0.5))
    return fn.resize(frames, size=size)


def random_resized_crop(frames, hw, size, draws=None):
    """One random crop window per clip (`vidact.clip.geometry.random_crop_box`), resized to
    ``size x size``; returns the frames and the window ``(y0, x0, h, w)``. `draws`: the four
    uniform draws (area, aspect, x, y), drawn here when not given."""
    h, w = _as_float(hw[0]), _as_float(hw[1])
    draws = draws or [fn.random.uniform(range=[0.0, 1.0]) for _ in range(4)]
    u_area, u_aspect, u_x, u_y = draws
    area = h * w * (CROP_SCALE[0] + u_area * (CROP_SCALE[1] - CROP_SCALE[0]))
    lo, hi = math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])
    aspect = dmath.exp(lo + u_aspect * (hi - lo))
    cw = dmath.min(dmath.sqrt(area * aspect), w)
    ch = dmath.min(dmath.sqrt(area / aspect), h)
    y0, x0 = u_y * (h - ch), u_x * (w - cw)
    out = fn.resize(frames, size=[size, size], roi_start=fn.stack(y0, x0),
                    roi_end=fn.stack(y0 + ch, x0 + cw))
    return out, fn.stack(y0, x0, ch, cw)


def normalize(frames, spec: ClipSpec, gpu, crop=None, pos_x=0.5, pos_y=0.5, mirror=0):
    """Optional crop, optional horizontal flip, mean/std on 0..255 pixels, ``FCHW``."""
    # DALI has no bf16: on a GPU, bf16 clips leave DALI as fp16 (half the bytes of fp32, more
    # precision than bf16) and are cast on the device; the CPU keeps fp32 (unchanged output).
    half = spec.dtype == "fp16" or (gpu and spec.dtype == "bf16")
    dtype = types.FLOAT16 if half else types.FLOAT
    return fn.crop_mirror_normalize(
        frames, dtype=dtype, output_layout="FCHW", crop=crop, crop_pos_x=pos_x, crop_pos_y=pos_y,
        mirror=mirror, mean=[255.0 * m for m in spec.mean], std=[255.0 * s for s in spec.std])


def padded(meta):
    """JSON bytes zero-padded to the batch's longest, so the batch is one tensor."""
    return fn.pad(meta, fill_value=0)


# --------------------------------------------------------------------------- graphs

# A train clip's random numbers, drawn by `train_reader_pipeline` in one vector per sample:
# the window's start, the random stride's two, the crop's four (area, aspect, x, y).
DRAWS = ("window", "stride", "stride_offset", "crop_area", "crop_aspect", "crop_x", "crop_y")


@pipeline_def
def train_reader_pipeline(files, index_files, video_ext, spec: ClipSpec, shard_id=0, num_shards=1,
                          shuffle_buffer=256, cut=True):
    """The train epoch's samples and every random number their clips use, and nothing else: no
    decoding. Its batches feed `train_pipeline`; skipping batches of it costs almost nothing, so
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
    frames, glued = decode_frames(sample, plan.want, spec.frames_per_clip, plan.count, gpu)
    frames, crop = random_resized_crop(frames, sample.hw, spec.crop_size, [draws[i] for i in range(3, 7)])
    clip = normalize(expand(frames, plan), spec, gpu, mirror=flip)
    return clip, sample.label, padded(sample.meta), plan.frames, plan.decoded, glued, draws[0], crop, flip


@pipeline_def(enable_conditionals=True)
def eval_pipeline(files, index_files, video_ext, spec: ClipSpec, gpu=False, shard_id=0,
                  num_shards=1, cut=True):
    sample = read_samples(files, index_files, video_ext, shard_id, num_shards, 0, True, cut)
    plan = frame_plan(sample.nframes, spec, 0.5)
    frames, glued = decode_frames(sample, plan.want, spec.frames_per_clip, plan.count, gpu)
    frames = resize_shorter(frames, sample.hw, spec.resize_short)
    clip = normalize(expand(frames, plan), spec, gpu, crop=(spec.crop_size, spec.crop_size))
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
    landscape = _as_float(sample.hw[1] >= sample.hw[0])
    # (pos_y, pos_x) of the three crops, chosen per sample by its orientation.
    anchors = [(0.5, 0.5),
               (0.5 * landscape, 0.5 - 0.5 * landscape),
               (1.0 - 0.5 * landscape, 0.5 + 0.5 * landscape)][:num_crops]
    plans = [frame_plan(sample.nframes, spec, (k + 0.5) / num_clips) for k in range(num_clips)]
    union = union_plan(plans, spec.frames_per_clip)
    frames, glued = decode_frames(sample, union.want, num_clips * spec.frames_per_clip, union.count, gpu)
    frames = resize_shorter(frames, sample.hw, spec.resize_short)
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
    the whole graph), CPU only, one output: where a train clip's time goes, for benchmarks."""
    sample = read_samples(files, index_files, video_ext, 0, 1, shuffle_buffer, pad_last=False)
    plan = frame_plan(sample.nframes, spec, fn.random.uniform(range=[0.0, 1.0]))
    frames, _glued = decode_frames(sample, plan.want, spec.frames_per_clip, plan.count, False)
    if upto == "decode":
        return frames
    frames, _crop = random_resized_crop(frames, sample.hw, spec.crop_size)
    if upto == "resize":
        return expand(frames, plan)
    return normalize(expand(frames, plan), spec, False, mirror=fn.random.coin_flip(probability=spec.flip))


PIPELINES = {"train": train_pipeline, "eval": eval_pipeline, "multiview": multiview_pipeline}
