"""The DALI graph of JPEG-frames train clips: one batch of frames, not of clips.

A JPEG-frames clip needs no decoder state between its frames, so a train batch of B clips is
fed as one batch of their distinct frames (`vidact.data.frame_feed` chooses them with the
sampling math of `vidact.clip.sampling` and slices each frame's JPEG out of its clip): every
frame is decoded, its clip's crop resized to ``crop_size`` and normalized by one operator each,
and the loader puts the frames back into ``(B, T, C, H, W)`` clips (a view when no frame
repeats). Measured on the 240p set, T = 16, batch 4, CPU: 35 -> 28.5 ms of CPU per clip against
the clip graph (`pipelines.clips.train_pipeline`), whose ~390 operators per batch (plan
arithmetic, per-frame slices, conditionals, the stack) cost DALI's executor more than the
frames' own work. The same graph runs with the GPU's JPEG decoder (``device="mixed"``) and CUDA
kernels when ``gpu=True``.

On the CPU the crop's resize is the reference loader's (`vidact.clip.resample`, torch's uint8
antialiased bilinear, one call per clip: `resize_crops`), not DALI's: DALI 2.4's CPU resampler
(`fn.resize`, a sequence or a frame at a time alike) costs ~1.0 ms per 224 x 224 frame, 60 % of a
240p clip's CPU, against ~0.12 ms. The feed cuts the crop's whole pixels as the reference does
(`vidact.clip.geometry.whole_box`), so both loaders' train clips are the same pixels.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import nvidia.dali.fn as fn
import torch
from nvidia.dali import pipeline_def

from pipelines.clips import TRAIN_STEPS, normalize
from pipelines.decoding import decode_jpeg
from vidact.clip.resample import resize
from vidact.clip.spec import ClipSpec

# What `vidact.data.frame_feed.FrameFeed` gives per frame, in order; with a region decode, then
# the region's ``(top, left)`` and ``(height, width)``.
FRAME_INPUTS = ("jpeg", "roi_start", "roi_end", "flip", "serial")
REGION_INPUTS = ("region_start", "region_shape")

# Decode only the region of each JPEG frame a train crop reads (`vidact.clip.geometry.box_region`)?
# Not while crops take 80-100 % of the frame (CROP_SCALE): `python -m vidact.bench.jpeg_roi`
# measures the train frames graph with and without it (RESULTS, "JPEG frames").
JPEG_REGION_DECODE = False


@pipeline_def
def train_frames_pipeline(source, spec: ClipSpec, gpu=False, region=JPEG_REGION_DECODE, upto="normalize"):
    """Train frames from `source` (`FRAME_INPUTS` per frame, then `REGION_INPUTS` with `region`:
    its JPEG, its clip's crop box as ``(y, x)`` start and end in the decoded pixels (whole
    pixels), its clip's flip, the feed's batch serial): decode, resize the box to ``crop_size x
    crop_size`` (antialiased bilinear: `resize_crops` on the CPU, `fn.resize` on the GPU), flip,
    normalize. Outputs the frame, ``(C, H, W)`` (`upto`,
    one of `TRAIN_STEPS`, stops earlier for benchmarks: ``HWC`` uint8), and ``serial``."""
    inputs = fn.external_source(source=source, num_outputs=len(FRAME_INPUTS) + 2 * region, batch=True)
    jpeg, roi_start, roi_end, flip, serial = inputs[:len(FRAME_INPUTS)]
    frame = decode_jpeg(jpeg, gpu, inputs[len(FRAME_INPUTS):] if region else None)
    if upto != "decode" and gpu:
        frame = fn.resize(frame, size=[spec.crop_size, spec.crop_size], roi_start=roi_start, roi_end=roi_end)
    elif upto != "decode":
        frame = fn.python_function(frame, roi_start, roi_end, function=partial(resize_crops, size=spec.crop_size),
                                   batch_processing=True, output_layouts="HWC")
    if upto == TRAIN_STEPS[-1]:
        frame = normalize(frame, spec, gpu, mirror=flip, layout="CHW")
    return frame, serial


def resize_crops(frames: list, starts: list, ends: list, size: int) -> list[np.ndarray]:
    """The CPU resize of a batch of frames (``HWC`` uint8), each frame's box cut at ``(y, x)``
    `starts` to `ends` (whole pixels) and resized to ``size x size``. Neighbouring frames with
    the same box and shape (a clip's, as the feed orders them) go through torch in one call: its
    filter weights are computed once per call, which costs as much as a frame's resize."""
    out, i = [], 0
    while i < len(frames):
        j = i + 1
        while (j < len(frames) and frames[j].shape == frames[i].shape
               and np.array_equal(starts[j], starts[i]) and np.array_equal(ends[j], ends[i])):
            j += 1
        (y0, x0), (y1, x1) = starts[i].astype(int), ends[i].astype(int)
        if not (0 <= y0 < y1 <= frames[i].shape[0] and 0 <= x0 < x1 <= frames[i].shape[1]):
            raise ValueError(f"crop rows {y0}:{y1}, columns {x0}:{x1} leave a decoded frame of {frames[i].shape[0]}"
                             f" x {frames[i].shape[1]}: the clip's JPEGs are not the size its json says")
        crops = torch.from_numpy(np.stack([f[y0:y1, x0:x1] for f in frames[i:j]]))
        resized = resize(crops.permute(0, 3, 1, 2), (size, size)).permute(0, 2, 3, 1)
        out.extend(resized.contiguous().numpy())  # DALI takes dense rows (channels-last: no copy)
        i = j
    return out
