"""The one resize of the CPU: antialiased bilinear on uint8 frames, by torch; and how far apart
two loaders' clips of one plan may be.

Every DALI graph on the CPU (`pipelines.decoding.resize_box`, as a `fn.python_function`), the
reference loader and the benchmark's peers resize with this function, so their clips are the same
pixels. torch's uint8 path on channels-last frames (the permuted view of decoded ``HWC`` frames) is
its vectorized one: ~0.12 ms per 224 x 224 frame when a clip's frames go in one call, ~0.7 ms for
the same resize in float32, ~1.0 ms in DALI 2.4's CPU resampler (`fn.resize`). On a GPU the graphs
resize with `fn.resize` (linear, antialiased, of the same whole-pixel box): the same filter rounded
in float, a level apart on ~15 % of pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# One uint8 level after normalization by a std of 0.225 (ImageNet's are 0.224-0.229).
LEVEL = 1 / (255 * 0.225)
# The most two loaders' clips of the same plan may differ: the mean absolute difference of their
# normalized pixels, per clip. On a CPU they differ only where two YUV -> RGB conversions round a
# VP9 frame apart (~1e-4; JPEG frames: equal); a GPU's `fn.resize` is ~2.4e-3 from this resize.
PARITY = 0.25 * LEVEL


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, 3, H, W)`` uint8 frames (channels-last in memory for speed) to ``size``
    ``(height, width)``, antialiased bilinear, uint8."""
    if x.dtype != torch.uint8:
        raise TypeError(f"resize takes uint8 frames, not {x.dtype}")
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
