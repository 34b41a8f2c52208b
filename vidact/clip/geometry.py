"""Spatial geometry shared by the DALI graphs and the reference loader.

Both loaders use these through a sample's plan (`vidact.clip.plan`); integer-valued results round
half up.
"""

from __future__ import annotations

import math

from vidact.clip.spec import CROP_ASPECT, CROP_SCALE


def resize_shorter_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(h, w) after scaling the shorter side to `short`, the longer one rounded half up."""
    if height <= width:
        return short, (2 * width * short + height) // (2 * height)
    return (2 * height * short + width) // (2 * width), short


def crop_offset(extent: int, crop: int, pos: float) -> int:
    """Pixel offset of a crop of size `crop` anchored at normalized `pos` in [0, 1]."""
    return math.floor(pos * (extent - crop) + 0.5)


def random_crop_box(height: int, width: int, u_area: float, u_aspect: float, u_x: float,
                    u_y: float) -> tuple[float, float, float, float]:
    """Random resized crop window ``(y0, x0, h, w)`` in pixels from four uniforms in [0, 1).

    Area is ``CROP_SCALE`` of the frame, aspect ratio log-uniform in ``CROP_ASPECT``; a window
    that would leave the frame is clamped to it (torchvision retries instead; with scale >= 0.8
    a clamp changes the aspect ratio a little and never the clip-wide consistency).
    """
    area = height * width * (CROP_SCALE[0] + u_area * (CROP_SCALE[1] - CROP_SCALE[0]))
    lo, hi = math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])
    aspect = math.exp(lo + u_aspect * (hi - lo))
    w = min(math.sqrt(area * aspect), width)
    h = min(math.sqrt(area / aspect), height)
    return u_y * (height - h), u_x * (width - w), h, w


def whole_box(height: int, width: int, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The whole pixels a crop `box` ``(y0, x0, h, w)`` cuts: ``(top, left, height, width)``,
    its corner and size rounded, at least one pixel, within the frame. The reference loader cuts these
    pixels and resizes them, as every DALI graph does (a plan's box: `vidact.clip.plan`)."""
    top, left, ch, cw = (math.floor(v + 0.5) for v in box)  # round half up, as the module does
    return top, left, min(max(1, ch), height - top), min(max(1, cw), width - left)
