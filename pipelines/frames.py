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
"""

from __future__ import annotations

import nvidia.dali.fn as fn
from nvidia.dali import pipeline_def

from pipelines.clips import TRAIN_STEPS, normalize
from pipelines.decoding import decode_jpeg
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
    its JPEG, its clip's crop box as ``(y, x)`` start and end in the decoded pixels, its clip's
    flip, the feed's batch serial): decode, resize the box to ``crop_size x crop_size``
    (antialiased, as the clip graph), flip, normalize. Outputs the frame, ``(C, H, W)`` (`upto`,
    one of `TRAIN_STEPS`, stops earlier for benchmarks: ``HWC`` uint8), and ``serial``."""
    inputs = fn.external_source(source=source, num_outputs=len(FRAME_INPUTS) + 2 * region, batch=True)
    jpeg, roi_start, roi_end, flip, serial = inputs[:len(FRAME_INPUTS)]
    frame = decode_jpeg(jpeg, gpu, inputs[len(FRAME_INPUTS):] if region else None)
    if upto != "decode":
        frame = fn.resize(frame, size=[spec.crop_size, spec.crop_size], roi_start=roi_start, roi_end=roi_end)
    if upto == TRAIN_STEPS[-1]:
        frame = normalize(frame, spec, gpu, mirror=flip, layout="CHW")
    return frame, serial
