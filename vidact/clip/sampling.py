"""Which frames a clip is made of: observation windows, T indices, multi-view positions.

This module is the one definition of the sampling rules; a sample's plan (`vidact.clip.plan`),
which both loaders carry out, calls them.

Everything is computed in *frame units*: for a constant-frame-rate clip of `N` frames, a time
`t` seconds is frame position `t * fps`, so `observed = r * duration` is `r * N` frames and the
middle-window rules (stated in seconds) give the same frames whatever the fps.

Rounding is made robust to float arithmetic: every float-to-frame conversion adds or subtracts
``EPS`` frames before flooring, so a value that is an integer in exact arithmetic lands on that
frame whatever the float rounding did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Tolerance, in frames, of every float -> frame-index conversion (see module docstring).
EPS = 0.01

WINDOW_MODES = ("middle", "prefix")
# Middle-window protocol: the action usually sits in the middle of a clip, so train windows start in
# [MIDDLE_LO * D, MIDDLE_HI * D - observed] when that range is non-empty.
MIDDLE_LO = 0.2
MIDDLE_HI = 0.8
# The VideoMAE recipe's random temporal stride is capped at 4.
MAX_RANDOM_STRIDE = 4


@dataclass(frozen=True)
class Window:
    """An observation window in frame units: ``start`` and ``length`` may be fractional."""

    start: float
    length: float
    first: int  # first decoded frame inside the window
    count: int  # number of frames inside the window (>= 1)


def check_ratio(ratio: float) -> float:
    """Observation ratios live in (0, 1]; anything else is a user error, said plainly."""
    if not (isinstance(ratio, (int, float)) and 0.0 < float(ratio) <= 1.0):
        raise ValueError(f"observation ratio must be in (0, 1], got {ratio!r}")
    return float(ratio)


def check_positive_int(value: int, what: str = "frame count") -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def start_range(num_frames: int, ratio: float, mode: str = "middle") -> tuple[float, float]:
    """The range [lo, hi] of window starts (in frames) allowed for `ratio` under `mode`.

    ``middle`` (middle-window protocol): [0.2 N, 0.8 N - r N] when non-empty, else [0, max(0, N - r N)].
    ``prefix``: the window always starts at frame 0 (early-action-prediction protocol).
    """
    n = check_positive_int(num_frames)
    observed = check_ratio(ratio) * n
    if mode == "prefix":
        return 0.0, 0.0
    if mode != "middle":
        raise ValueError(f"window mode must be one of {WINDOW_MODES}, got {mode!r}")
    safe_start, safe_end = MIDDLE_LO * n, MIDDLE_HI * n - observed
    if safe_end > safe_start:
        return safe_start, safe_end
    return 0.0, max(0.0, n - observed)


def window(num_frames: int, ratio: float = 1.0, mode: str = "middle", u: float | None = None) -> Window:
    """The observation window; ``u`` in [0, 1) draws a train start, ``None`` is the eval start.

    The eval start is the midpoint of the allowed range (a 10.5 s clip at r=0.3 starts at
    3.675 s). Frames inside the window are those whose timestamp ``i`` (in frames)
    satisfies ``start <= i < start + length``, at least one.
    """
    n = check_positive_int(num_frames)
    lo, hi = start_range(n, ratio, mode)
    frac = 0.5 if u is None else float(u)
    start = lo + frac * (hi - lo)
    length = float(ratio) * n
    first = min(max(math.ceil(start - EPS), 0), n - 1)
    last = min(max(math.ceil(start + length - EPS) - 1, first), n - 1)
    return Window(start=start, length=length, first=first, count=last - first + 1)


def indices_in_window(first: int, count: int, frames_per_clip: int) -> np.ndarray:
    """`frames_per_clip` sorted indices spread by linspace over ``[first, first + count)``.

    A window with fewer frames than `frames_per_clip` repeats frames in order (0,0,1,1,2,2...), the
    VideoMAE way, rather than tiling (0,1,2,0,1,2) as the earlier ViViT script did: tiling makes motion jump
    backwards in the middle of a clip.
    """
    t = check_positive_int(frames_per_clip, "frames per clip")
    k = np.arange(t, dtype=np.float64)
    step = (count - 1) / max(t - 1, 1)
    return (first + np.floor(k * step + EPS)).astype(np.int64)


def strided_indices(first: int, count: int, frames_per_clip: int, u_stride: float, u_offset: float) -> np.ndarray:
    """The VideoMAE recipe's train-time random stride: a stride in 1..min(4, (count-1)//(T-1)), drawn by
    ``u_stride``, and a random offset, drawn by ``u_offset``, so the T frames fit the window.
    Falls back to :func:`indices_in_window` when the window is shorter than T frames.
    """
    t = check_positive_int(frames_per_clip, "frames per clip")
    max_stride = max(1, (count - 1) // max(t - 1, 1))
    stride = 1 + math.floor(u_stride * min(max_stride, MAX_RANDOM_STRIDE))
    span = stride * (t - 1)
    if span > count - 1:
        return indices_in_window(first, count, t)
    offset = math.floor(u_offset * (count - span))
    return first + offset + stride * np.arange(t, dtype=np.int64)


def frame_indices(
    num_frames: int,
    frames_per_clip: int,
    ratio: float = 1.0,
    mode: str = "middle",
    u: float | None = None,
    stride_u: tuple[float, float] | None = None,
) -> np.ndarray:
    """The T frame indices of one clip: window (train if ``u`` given, else eval), then
    linspace inside it, or a random stride when ``stride_u = (u_stride, u_offset)``."""
    w = window(num_frames, ratio, mode, u)
    if stride_u is not None:
        return strided_indices(w.first, w.count, frames_per_clip, *stride_u)
    return indices_in_window(w.first, w.count, frames_per_clip)


def temporal_view_fractions(num_clips: int) -> list[float]:
    """The ``u`` values of :func:`window` of K evenly spread temporal clips: clip k starts at
    ``lo + (hi - lo) * (k + 0.5) / K`` of its start range; with K = 1 this is the eval window."""
    return [(i + 0.5) / num_clips for i in range(check_positive_int(num_clips, "temporal clips"))]


def spatial_view_positions(height: int, width: int) -> list[tuple[float, float]]:
    """Normalized (y, x) crop anchors of the 3 spatial views, in order: center, then
    left/right for landscape frames or top/bottom for portrait ones. Side crops are centred on
    the other axis (the SlowFast 3-crop protocol; the earlier VideoMAE script anchored them at the top
    edge)."""
    if width >= height:
        return [(0.5, 0.5), (0.5, 0.0), (0.5, 1.0)]
    return [(0.5, 0.5), (0.0, 0.5), (1.0, 0.5)]


def views_layout(views: int) -> tuple[int, bool]:
    """(temporal clips, flip) of a view count: 6k = k clips x 3 crops x 2 flips, 3k = k x 3."""
    if views % 6 == 0:
        return views // 6, True
    if views % 3 == 0:
        return views // 3, False
    raise ValueError(f"views must be 1 or a multiple of 3 (clips x 3 crops [x 2 flips]), got {views}")
