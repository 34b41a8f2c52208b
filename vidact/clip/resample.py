"""The one resize of the CPU paths: antialiased bilinear on uint8 frames, by torch.

The reference loader (`vidact.data.reference`, and the peers of `tools/bench.py`, which run its
transforms) and the CPU JPEG-frames train graph (`pipelines.frames`) resize with this function,
so their clips are the same pixels. torch's uint8 path on channels-last frames (the permuted view
of decoded ``HWC`` frames) is its vectorized one: ~0.12 ms per 224 x 224 frame when a clip's
frames go in one call, ~0.7 ms for the same resize in float32, ~1.0 ms in DALI 2.4's CPU
resampler (`fn.resize`). DALI's graphs on the GPU, and its CPU clip graphs, keep `fn.resize`:
the same filter rounded in float (a level apart on ~15 % of pixels), reading past a crop's edge,
and in the clip graphs' train crops the box's fractional pixels where this cuts whole ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, 3, H, W)`` uint8 frames (channels-last in memory for speed) to ``size``
    ``(height, width)``, antialiased bilinear, uint8."""
    if x.dtype != torch.uint8:
        raise TypeError(f"resize takes uint8 frames, not {x.dtype}")
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
