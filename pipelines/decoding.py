"""How a DALI graph reads a shard sample and decodes the frames a clip keeps: a keyframe cut of
an IVF clip (`cut_stream`, the twin of `vidact.clip.cut`), one JPEG per distinct frame of a
JPEG-frames clip (`decode_images`), or the clip from frame 0 (an older set)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types

from pipelines.arith import as_float, as_int, constant, gather, head, select
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

READER = "reader"


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


def cut_stream(sample: Sample, want, m: int, count):
    """The keyframe cut of an IVF clip (`vidact.clip.cut.plan_cut` in graph arithmetic): for each
    of the `m` ascending indices `want` (its first `count` distinct, then repeats of the last),
    the run of frames from its keyframe, or from the frame after the previous wanted one when
    that lies in the same GOP, up to it; a repeat's run is empty. Returns the glued stream
    (`vidact.ivf.glue`: the header's frame count set to the runs' total), the wanted frames'
    positions in it (``count`` of them) and that total."""
    key = gather(sample.keyframes, want)
    prev = fn.cat(types.Constant(np.array([-1], np.int32)), fn.slice(want, 0, m - 1, axes=[0]), axis=0)
    start = as_int(dmath.min(select(key <= prev, prev + 1, key), want + 1))
    lo, hi = gather(sample.offsets, start), gather(sample.offsets, want + 1)
    pieces = [fn.slice(sample.video, lo[i:i + 1], hi[i:i + 1] - lo[i:i + 1], axes=[0]) for i in range(m)]
    runs = as_float(want + 1 - start)
    ends = fn.reductions.sum(constant(np.tril(np.ones((m, m)))) * fn.reshape(runs, shape=[1, m]), axes=[1])
    total = as_int(fn.reductions.sum(runs))
    count_bytes = fn.reinterpret(fn.reshape(total, shape=[1]), dtype=types.UINT8, shape=[4])
    header = fn.cat(fn.slice(sample.video, 0, COUNT_AT, axes=[0]), count_bytes,
                    fn.slice(sample.video, COUNT_AT + 4, HEADER_BYTES - COUNT_AT - 4, axes=[0]), axis=0)
    return fn.cat(header, *pieces, axis=0), head(as_int(ends - 1.0), count), total


def decode_images(sample: Sample, want, m: int, count, gpu, each=None):
    """A JPEG-frames clip's frames at the `m` indices `want` (its first `count` distinct, then
    repeats of the last), ``(m, H, W, 3)`` uint8, decoding only the distinct ones (`_decode_first`
    where some slots repeat). `each`: a transform of every decoded frame (the graph's resize), done
    before the frames are stacked: DALI's CPU stack copies slowly, so stacking T small resized
    frames costs less than stacking T whole ones (measured 4-10 % of a 240p clip's CPU). On a
    GPU the JPEGs go to the hardware JPEG decoder (DALI's ``mixed`` image decoder,
    A100/H100-class engines) with a CUDA fallback. (Train clips take `pipelines.frames`.)"""
    lo = gather(sample.offsets, want)
    size = gather(sample.offsets, want + 1) - lo
    # Sliced before the conditionals: what a branch reads is split per sample, and the clip's
    # bytes are far larger than one JPEG.
    jpegs = [fn.slice(sample.video, lo[i:i + 1], size[i:i + 1], axes=[0]) for i in range(m)]
    each = each or _unchanged

    def frame(jpeg):
        return each(decode_jpeg(jpeg, gpu))

    # Each operator costs DALI's CPU executor ~60 us per batch of 4 (measured), ~14 us in a branch
    # no sample takes: a clip whose `m` frames are all distinct (the usual one) takes one branch
    # instead of a conditional per frame (each with its splits and merge).
    if count >= float(m):
        frames = fn.stack(*[frame(jpeg) for jpeg in jpegs], axis_name="F")
    else:
        frames = _decode_first(jpegs, count, frame)
    return frames, as_int(count)


def _decode_first(jpegs: list, count, frame):
    """The first `count` of `jpegs` made frames (by `frame`: decode, then the per-frame
    transform) and stacked: a slot past `count` is a per-sample conditional that copies the slot
    before it (never read: `expand` takes only the first `count`)."""
    images = []
    for i, jpeg in enumerate(jpegs):
        if i == 0:
            image = frame(jpeg)
        elif count > float(i):
            image = frame(jpeg)
        else:
            image = images[-1]
        images.append(image)
    return fn.stack(*images, axis_name="F")


def _unchanged(frames):
    return frames


def decode_jpeg(jpeg, gpu, region=None):
    """JPEGs to RGB, all of each or the `region` ``(start, shape)``: ``(top, left)`` and
    ``(height, width)`` nodes in pixels."""
    # nvJPEG's default chroma upsampling is nearest; fancy (interpolated) is what libjpeg-turbo,
    # DALI's CPU decoder and the reference loader do, so both backends give the same pixels.
    kw = {"device": "mixed" if gpu else "cpu", "output_type": types.RGB, "jpeg_fancy_upsampling": True}
    if region is None:
        return fn.decoders.image(jpeg, **kw)
    start, shape = region
    return fn.decoders.image_slice(jpeg, start, shape, axis_names="HW", normalized_anchor=False,
                                   normalized_shape=False, **kw)


def is_jpeg_frames(sample: Sample) -> bool:
    """A JPEG-frames clip: a frame table and no keyframe table."""
    return sample.offsets is not None and sample.keyframes is None


def decode_frames(sample: Sample, want, m: int, count, gpu, each=None):
    """The `count` distinct frames the `m` indices `want` start with, ``(count, H, W, 3)`` uint8 (NVDEC when
    `gpu`; a JPEG-frames clip gives `m`, see `decode_images`), transformed by `each` when given (a
    resize: on a CPU of each JPEG before they are stacked, else of the decoded sequence), and how
    many frames the decoder decoded for them: one JPEG per distinct frame, a keyframe cut for an
    IVF clip, else from frame 0. ``pad_mode="none"``: an index past the stream's end raises (the
    default pads with black frames, silently)."""
    each = each or _unchanged
    if is_jpeg_frames(sample):
        if gpu:  # a GPU stacks fast and resizes the clip in one launch: per frame saves nothing there
            frames, glued = decode_images(sample, want, m, count, gpu)
            return each(frames), glued
        return decode_images(sample, want, m, count, gpu, each=each)
    if sample.offsets is not None:
        stream, positions, glued = cut_stream(sample, want, m, count)
    else:
        stream, positions = sample.video, head(want, count)
        glued = as_int(fn.reductions.max(want) + 1)
    frames = fn.decoders.video(stream, device="mixed" if gpu else "cpu", frames=positions, pad_mode="none")
    return each(frames), glued
