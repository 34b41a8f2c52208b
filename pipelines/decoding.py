"""The steps of vidact's DALI graphs: read a shard sample, decode what the plan names, resize the
plan's box, crop, flip and normalize each view. `pipelines.clips` puts them together."""

from __future__ import annotations

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
import torch

from vidact.clip.resample import resize
from vidact.clip.spec import ClipSpec

READER = "reader"


def read_samples(files, index_files, exts, shard_id, num_shards, shuffle_buffer, pad_last, mmap=True) -> tuple:
    """One shard sample per batch entry, the members `exts` (`vidact.shards.member_exts`; ``.i32``
    ones as int32), shuffled in a `shuffle_buffer` (0: in order); `mmap` off: plain reads."""
    members = fn.readers.webdataset(
        paths=files, index_paths=index_files, ext=exts,
        dtypes=[types.INT32 if ext.endswith(".i32") else types.UINT8 for ext in exts],
        missing_component_behavior="error",
        random_shuffle=shuffle_buffer > 0, initial_fill=max(shuffle_buffer, 1),
        shard_id=shard_id, num_shards=num_shards,
        # Each reader keeps its shard every epoch, so epoch lengths are fixed and DDP ranks can
        # agree on a batch count; train clips are reshuffled inside the shard.
        stick_to_shard=True, pad_last_batch=pad_last, dont_use_mmap=not mmap, name=READER)
    return tuple(members)


def decode(data, positions, video: bool, gpu: bool):
    """A video sample's frames at `positions` of its (glued) stream, ``(D, H, W, 3)``; or one JPEG
    frame, ``(H, W, 3)``; uint8, NVDEC / the GPU's JPEG decoder when `gpu`. ``pad_mode="none"``:
    a position past the stream's end raises (the default pads with black frames, silently)."""
    device = "mixed" if gpu else "cpu"
    if video:
        return fn.decoders.video(data, device=device, frames=positions, pad_mode="none")
    # nvJPEG's default chroma upsampling is nearest; fancy (interpolated) is what libjpeg-turbo,
    # DALI's CPU decoder and the reference loader do, so both backends give the same pixels.
    return fn.decoders.image(data, device=device, output_type=types.RGB, jpeg_fancy_upsampling=True)


def resize_box(frames, box_start, box_shape, size, video: bool, dali: bool, source=None):
    """The whole-pixel box ``(top, left)`` + ``(height, width)`` of each frame resized to `size`
    ``(height, width)``, antialiased bilinear. On the CPU by torch's uint8 path, the reference
    loader's own function (`resize_boxes`); on a GPU (`dali`) by DALI's `fn.resize` of the cut box,
    linear, antialiased: the same filter rounded in float, within `vidact.clip.resample.PARITY` of
    the CPU's (tests/test_gpu.py runs it on DALI's CPU backend too). `source` (JPEG frames, the
    CPU's resize only): each entry's frame is that of entry ``source`` (a frame two train clips
    share is decoded once)."""
    if dali:
        cut = fn.slice(frames, box_start, box_shape, axis_names="HW")
        return fn.resize(cut, size=size, antialias=True, interp_type=types.INTERP_LINEAR)
    if source is None:
        return fn.python_function(frames, box_start, box_shape, size, function=resize_boxes, batch_processing=True,
                                  output_layouts="FHWC" if video else "HWC")
    return fn.python_function(frames, box_start, box_shape, size, source, function=resize_boxes,
                              batch_processing=True, output_layouts="HWC")


def resize_boxes(frames: list, starts: list, shapes: list, sizes: list,
                 sources: list | None = None) -> list[np.ndarray]:
    """`resize_box` on the CPU: each entry (a ``(D, H, W, 3)`` clip or a ``(H, W, 3)`` frame)
    cut at its box and resized; with `sources`, entry i's frame is entry ``sources[i]``'s.
    Neighbouring frames of one box and size (a clip's JPEG frames, as the feed orders them) go
    through torch in one call: its filter weights are computed once per call, which costs as much
    as a frame's resize."""
    if sources is not None:
        frames = [frames[int(s)] for s in sources]
    out, i = [], 0
    while i < len(frames):
        j, clip = i + 1, frames[i].ndim == 4
        while (not clip and j < len(frames) and frames[j].shape == frames[i].shape
               and np.array_equal(starts[j], starts[i]) and np.array_equal(shapes[j], shapes[i])
               and np.array_equal(sizes[j], sizes[i])):
            j += 1
        (top, left), (h, w) = starts[i].tolist(), shapes[i].tolist()
        if not (0 <= top and 0 <= left and top + h <= frames[i].shape[-3] and left + w <= frames[i].shape[-2]):
            raise ValueError(f"crop rows {top}:{top + h}, columns {left}:{left + w} leave a decoded frame of "
                             f"{frames[i].shape[-3]} x {frames[i].shape[-2]}: the clip is not the size its json says")
        pixels = frames[i] if clip else np.stack(frames[i:j])
        x = torch.from_numpy(pixels[:, top:top + h, left:left + w]).permute(0, 3, 1, 2)
        y = resize(x, tuple(int(v) for v in sizes[i])).permute(0, 2, 3, 1)
        y = y.contiguous().numpy()  # DALI takes dense outputs (channels-last in memory: no copy)
        out.extend([y] if clip else list(y))
        i = j
    return out


def normalize(frames, spec: ClipSpec, gpu: bool, crop=None, pos_x=0.5, pos_y=0.5, mirror=0, layout="FCHW"):
    """Optional ``crop_size`` crop at (`pos_y`, `pos_x`), optional horizontal flip, mean/std on
    0..255 pixels, channels first (`layout`: ``FCHW`` for clips, ``CHW`` for single frames)."""
    # DALI has no bf16: on a GPU, bf16 clips leave DALI as fp16 (half the bytes of fp32, more
    # precision than bf16) and are cast on the device; the CPU keeps fp32.
    half = spec.dtype == "fp16" or (gpu and spec.dtype == "bf16")
    return fn.crop_mirror_normalize(
        frames, dtype=types.FLOAT16 if half else types.FLOAT, output_layout=layout, crop=crop, crop_pos_x=pos_x,
        crop_pos_y=pos_y, mirror=mirror, mean=[255.0 * m for m in spec.mean], std=[255.0 * s for s in spec.std])


def normalize_views(frames, spec: ClipSpec, gpu: bool, anchors: list[tuple], video: bool):
    """Each view (`anchors`: ``(pos_y, pos_x, flip)`` nodes) a ``crop_size`` crop of `frames`,
    flipped or not, normalized: ``(F, C, H, W)`` per video sample and ``(C, H, W)`` per JPEG frame
    with one view; ``(F, S, C, H, W)`` / ``(S, C, H, W)`` with S views."""
    crop = (spec.crop_size, spec.crop_size)
    layout = "FCHW" if video else "CHW"
    out = [normalize(frames, spec, gpu, crop, pos_x, pos_y, flip, layout) for pos_y, pos_x, flip in anchors]
    return out[0] if len(out) == 1 else fn.stack(*out, axis=1 if video else 0)
