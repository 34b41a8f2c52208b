"""DALI graphs for vidact: `train`, `eval` and `multiview` clips from vidact shards.

Each graph reads top to bottom as the data flows: read a shard sample -> choose frame indices
(the window rules of `vidact/sampling.py`, as graph arithmetic) -> decode only those frames ->
one spatial transform per clip -> normalize -> ``F, C, H, W`` clips. The same graph runs with
the GPU decoder (``device="mixed"``, NVDEC) and CUDA kernels when ``gpu=True``, or entirely on
DALI's CPU backend otherwise.

Outputs of every graph, in order: ``video, label, meta, frames``, then graph-specific extras
(see ``OUTPUTS``). ``meta`` is the sample's JSON record as zero-padded bytes; ``frames`` the
decoded frame indices.
"""

from __future__ import annotations

import math

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from vidact.clip.sampling import EPS, MAX_RANDOM_STRIDE, MIDDLE_HI, MIDDLE_LO
from vidact.clip.spec import CROP_RATIO, CROP_SCALE, ClipSpec
from vidact.shards import HW_EXT, LABEL_EXT, META_EXT, NFRAMES_EXT

OUTPUTS = {
    "train": ("video", "label", "meta", "frames", "window_u", "crop", "flip"),
    "eval": ("video", "label", "meta", "frames"),
    "multiview": ("video", "label", "meta", "frames"),
}
READER = "reader"


# --------------------------------------------------------------------------- shared steps

def read_samples(files, index_files, video_ext, shard_id, num_shards, shuffle_buffer, pad_last):
    """One shard sample: encoded video, JSON bytes, frame count, label, (height, width)."""
    return fn.readers.webdataset(
        paths=files, index_paths=index_files,
        ext=[video_ext, META_EXT, NFRAMES_EXT, LABEL_EXT, HW_EXT],
        dtypes=[types.UINT8, types.UINT8, types.INT32, types.INT32, types.INT32],
        missing_component_behavior="error",
        random_shuffle=shuffle_buffer > 0, initial_fill=max(shuffle_buffer, 1),
        shard_id=shard_id, num_shards=num_shards,
        # Each reader keeps its shard every epoch, so epoch lengths are fixed and DDP ranks can
        # agree on a batch count; train clips are reshuffled inside the shard.
        stick_to_shard=True, pad_last_batch=pad_last, name=READER)


def _as_float(x):
    return fn.cast(x, dtype=types.FLOAT)


def _select(cond, a, b):
    """``a`` where cond else ``b``, for per-sample scalars (graphs have no branches)."""
    c = _as_float(cond)
    return c * a + (1.0 - c) * b


def frame_indices(nframes, spec: ClipSpec, u, stride_u=None):
    """`vidact.clip.sampling.frame_indices` in graph arithmetic: the observation window for
    ``spec.ratio``/``spec.window`` at fraction `u` of its start range, then T indices."""
    n = _as_float(nframes[0])
    t = spec.num_frames
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
    count = last - first + 1.0
    k = types.Constant(np.arange(t, dtype=np.float32))
    idx = first + dmath.floor(k * ((count - 1.0) / max(t - 1, 1)) + EPS)
    if stride_u is not None:
        u_stride, u_offset = stride_u
        max_stride = dmath.max(dmath.floor((count - 1.0) / max(t - 1, 1)), 1.0)
        stride = 1.0 + dmath.floor(u_stride * dmath.min(max_stride, float(MAX_RANDOM_STRIDE)))
        span = stride * (t - 1)
        strided = first + dmath.floor(u_offset * (count - span)) + stride * k
        idx = _select(span <= count - 1.0, strided, idx)
    return fn.cast(idx, dtype=types.INT32)


def decode(video, idx, gpu):
    """Only the chosen frames, ``(T, H, W, 3)`` uint8; NVDEC when `gpu`."""
    return fn.decoders.video(video, device="mixed" if gpu else "cpu", frames=idx)


def resize_shorter(frames, hw, short):
    """Shorter side to `short` (`vidact.clip.geometry.resize_shorter_size`, round half up)."""
    h, w = _as_float(hw[0]), _as_float(hw[1])
    m = dmath.min(h, w)
    size = fn.stack(dmath.floor(h * short / m + 0.5), dmath.floor(w * short / m + 0.5))
    return fn.resize(frames, size=size)


def random_resized_crop(frames, hw, size):
    """One random crop window per clip (`vidact.clip.geometry.random_crop_box`), resized to
    ``size x size``; returns the frames and the window ``(y0, x0, h, w)``."""
    h, w = _as_float(hw[0]), _as_float(hw[1])
    u_area, u_ratio, u_x, u_y = (fn.random.uniform(range=[0.0, 1.0]) for _ in range(4))
    area = h * w * (CROP_SCALE[0] + u_area * (CROP_SCALE[1] - CROP_SCALE[0]))
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = dmath.exp(lo + u_ratio * (hi - lo))
    cw = dmath.min(dmath.sqrt(area * ratio), w)
    ch = dmath.min(dmath.sqrt(area / ratio), h)
    y0, x0 = u_y * (h - ch), u_x * (w - cw)
    out = fn.resize(frames, size=[size, size], roi_start=fn.stack(y0, x0),
                    roi_end=fn.stack(y0 + ch, x0 + cw))
    return out, fn.stack(y0, x0, ch, cw)


def normalize(frames, spec: ClipSpec, crop=None, pos_x=0.5, pos_y=0.5, mirror=0):
    """Optional crop, optional horizontal flip, mean/std on 0..255 pixels, ``FCHW``."""
    dtype = types.FLOAT16 if spec.dtype == "fp16" else types.FLOAT  # DALI has no bf16
    return fn.crop_mirror_normalize(
        frames, dtype=dtype, output_layout="FCHW", crop=crop, crop_pos_x=pos_x, crop_pos_y=pos_y,
        mirror=mirror, mean=[255.0 * m for m in spec.mean], std=[255.0 * s for s in spec.std])


def padded(meta):
    """JSON bytes zero-padded to the batch's longest, so the batch is one tensor."""
    return fn.pad(meta, fill_value=0)


# --------------------------------------------------------------------------- graphs

@pipeline_def
def train_pipeline(files, index_files, video_ext, spec: ClipSpec, gpu=False, shard_id=0,
                   num_shards=1, shuffle_buffer=256):
    video, meta, nframes, label, hw = read_samples(files, index_files, video_ext, shard_id,
                                                   num_shards, shuffle_buffer, pad_last=False)
    u = fn.random.uniform(range=[0.0, 1.0])
    stride_u = None
    if spec.random_stride:
        stride_u = (fn.random.uniform(range=[0.0, 1.0]), fn.random.uniform(range=[0.0, 1.0]))
    idx = frame_indices(nframes, spec, u, stride_u)
    frames = decode(video, idx, gpu)
    frames, crop = random_resized_crop(frames, hw, spec.size)
    flip = fn.random.coin_flip(probability=spec.flip)
    clip = normalize(frames, spec, mirror=flip)
    return clip, label, padded(meta), idx, u, crop, flip


@pipeline_def
def eval_pipeline(files, index_files, video_ext, spec: ClipSpec, gpu=False, shard_id=0,
                  num_shards=1):
    video, meta, nframes, label, hw = read_samples(files, index_files, video_ext, shard_id,
                                                   num_shards, 0, pad_last=True)
    idx = frame_indices(nframes, spec, 0.5)
    frames = resize_shorter(decode(video, idx, gpu), hw, spec.resize_short)
    clip = normalize(frames, spec, crop=(spec.size, spec.size))
    return clip, label, padded(meta), idx


@pipeline_def
def multiview_pipeline(files, index_files, video_ext, spec: ClipSpec, gpu=False, shard_id=0,
                       num_shards=1, num_clips=1, num_crops=3, flip=True):
    """Views in `vidact.clip.sampling.multiview_plan` order: per temporal clip, the crops (center,
    then left/right for landscape or top/bottom for portrait), then the same crops flipped.
    Output ``(V, T, C, H, W)`` per sample; ``frames`` is ``(K, T)``."""
    video, meta, nframes, label, hw = read_samples(files, index_files, video_ext, shard_id,
                                                   num_shards, 0, pad_last=True)
    landscape = _as_float(hw[1] >= hw[0])
    # (pos_y, pos_x) of the three crops, chosen per sample by its orientation.
    anchors = [(0.5, 0.5),
               (0.5 * landscape, 0.5 - 0.5 * landscape),
               (1.0 - 0.5 * landscape, 0.5 + 0.5 * landscape)][:num_crops]
    views, all_idx = [], []
    for k in range(num_clips):
        idx = frame_indices(nframes, spec, (k + 0.5) / num_clips)
        frames = resize_shorter(decode(video, idx, gpu), hw, spec.resize_short)
        for mirror in ((0, 1) if flip else (0,)):
            for pos_y, pos_x in anchors:
                views.append(normalize(frames, spec, crop=(spec.size, spec.size), pos_x=pos_x,
                                       pos_y=pos_y, mirror=mirror))
        all_idx.append(idx)
    return fn.stack(*views), label, padded(meta), fn.stack(*all_idx)


@pipeline_def
def decode_only_pipeline(files, index_files, video_ext, spec: ClipSpec, gpu=False, shard_id=0, num_shards=1):
    """Read and decode the eval window's frames, nothing else: the decoder's own cost, for
    benchmarks. Output ``(T, H, W, 3)`` uint8 per sample, then ``frames``."""
    video, _meta, nframes, _label, _hw = read_samples(files, index_files, video_ext, shard_id,
                                                      num_shards, 0, pad_last=False)
    idx = frame_indices(nframes, spec, 0.5)
    return decode(video, idx, gpu), idx


PIPELINES = {"train": train_pipeline, "eval": eval_pipeline, "multiview": multiview_pipeline}
