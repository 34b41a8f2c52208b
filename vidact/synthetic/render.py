"""The scene of a synthetic clip: what :func:`render_clip` draws, frame by frame.

Every clip shows one bright hand (a white bar with a red bulb at one end, like a clock hand)
on a textured, slightly noisy background, plus a dimmer coloured disc that wanders randomly for
the whole clip as a distractor. The class is what the hand does in the *middle* of the clip
(from ``action_start`` to ``action_end``, about 20%..80% of the clip, jittered per clip):

* ``move_left`` / ``move_right`` / ``move_up`` / ``move_down``: the hand translates steadily in
  that direction (keeping its orientation) once around the frame: it leaves on one side, comes
  back on the other and ends where it rested;
* ``rotate_cw`` / ``rotate_ccw``: the hand spins in place, clockwise or counter-clockwise as
  seen on screen, by 180..360 degrees. The bulb makes the direction visible: a plain bar looks
  the same turned by a and by a - 180 degrees, so a turn near 90 degrees between two sampled
  frames could be either way.

Before and after the action the hand only jitters around a rest pose (small random, mean-
reverting moves and turns, no net direction). Rest poses are drawn the same way for every class:
a position in the middle of the frame (``REST_REGION``, which the evaluation's center crop keeps
whole) and any orientation. Moves end where they began and turns start and end at uniform
orientations, so neither the first/last frames nor any single frame tells the class: only the
motion in the middle does, and accuracy grows with the part of the clip a model observes.

Generator version 1 drew a plain bar (its two rotation classes were at chance between each
other), rested anywhere on the frame (a bar at an edge was cut off by the center crop) and
moved 60..90% of the frame; see the README's demo section.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

CLASS_NAMES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_cw",
    "rotate_ccw",
)
# The action starts in [15%, 25%] and ends in [75%, 85%] of the clip.
ACTION_START_FRAC = (0.15, 0.25)
ACTION_END_FRAC = (0.75, 0.85)
# The hand's bulb: radius relative to the bar's, and a saturated red no distractor takes
# (distractor channels stay in 60..160) whose luma (~105) stays below the bar's (> 225).
BULB_SCALE = 2.2
BULB_COLOR = np.array([250.0, 60.0, 40.0], dtype=np.float32)
# Where the bar rests (share of each side, for every class): the middle of the frame, which
# the evaluation's center crop keeps whole. Version 1 rested anywhere, and a bar resting at an
# edge was cut off by the crop (and rotated out of sight).
REST_REGION = (0.3, 0.7)


def sample_action_span(rng: np.random.Generator, num_frames: int) -> tuple[int, int]:
    """(first, last) frame of the action: ~20%..80% of the clip, jittered, >= 2 frames apart."""
    if num_frames < 3:
        raise ValueError(f"a clip needs at least 3 frames, got {num_frames}")
    last = num_frames - 1
    start = int(round(rng.uniform(*ACTION_START_FRAC) * last))
    end = int(round(rng.uniform(*ACTION_END_FRAC) * last))
    start = min(max(start, 0), last - 2)
    end = min(max(end, start + 2), last)
    return start, end


def _wrap(d: np.ndarray, period: float) -> np.ndarray:
    """Map differences to [-period/2, period/2) (the frame is a torus)."""
    return (d + period / 2) % period - period / 2


def _ou(rng: np.random.Generator, n: int, sigma: float, keep: float = 0.7) -> np.ndarray:
    """A mean-reverting random walk (AR(1)) of ``n`` steps: jitter with no net drift."""
    out = np.empty(n)
    x = rng.normal(0.0, sigma / math.sqrt(1 - keep * keep))
    for i in range(n):
        x = keep * x + rng.normal(0.0, sigma)
        out[i] = x
    return out


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A static, low-contrast, smoothly textured background (H, W, 3) in [25, 115]."""
    coarse = rng.uniform(0.0, 1.0, size=(max(2, height // 12), max(2, width // 12)))
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    smooth = np.asarray(img, dtype=np.float32) / 255.0
    fine = rng.uniform(0.0, 1.0, size=(height, width)).astype(np.float32)
    texture = 0.75 * smooth + 0.25 * fine
    tint = rng.uniform(0.7, 1.0, size=3).astype(np.float32)
    return (25.0 + 90.0 * texture[..., None] * tint).astype(np.float32)


def _capsule_mask(
    xs: np.ndarray,
    ys: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    theta: np.ndarray,
    half_len: float,
    radius: float,
    width: int,
    height: int,
) -> np.ndarray:
    """Anti-aliased coverage (T, H, W) of a capsule per frame, wrapping around the frame."""
    f32 = np.float32
    dx = _wrap(xs[None, None, :] - cx.astype(f32)[:, None, None], f32(width))
    dy = _wrap(ys[None, :, None] - cy.astype(f32)[:, None, None], f32(height))
    ux = np.cos(theta).astype(f32)[:, None, None]
    uy = np.sin(theta).astype(f32)[:, None, None]
    t = np.clip(dx * ux + dy * uy, f32(-half_len), f32(half_len))
    cover = f32(radius + 0.5) - np.hypot(dx - t * ux, dy - t * uy)
    return np.clip(cover, f32(0.0), f32(1.0), out=cover)


def _bar_path(
    rng: np.random.Generator, class_name: str, w: int, h: int, progress: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, np.ndarray]:
    """The bar's per-frame centre and angle, its half length, radius and colour: a rest pose
    in the middle of the frame, jitter everywhere, the class's action where ``progress`` rises."""
    n, side = len(progress), min(w, h)
    half_len = rng.uniform(0.16, 0.22) * side
    radius = max(2.5, rng.uniform(0.045, 0.06) * side)
    x0, y0 = rng.uniform(*REST_REGION) * w, rng.uniform(*REST_REGION) * h
    theta0 = rng.uniform(0, 2 * math.pi)  # the bulb may point anywhere
    cx = x0 + _ou(rng, n, 0.012 * side)
    cy = y0 + _ou(rng, n, 0.012 * side)
    theta = theta0 + _ou(rng, n, math.radians(4.0))
    # Drawn for every class, so all classes consume the same random numbers: clips of
    # different classes rendered from equal generators are identical up to ``action_start``
    # (the prefix carries no class signal) and differ only by the action.
    turn = rng.uniform(math.pi, 2 * math.pi)
    if class_name.startswith("move_"):
        horizontal = class_name in ("move_left", "move_right")
        extent = w if horizontal else h
        sign = 1.0 if class_name in ("move_right", "move_down") else -1.0
        # Once around the frame (out one side, back in the other, home again): the bar ends
        # where it rested, so no single frame tells the direction. The per-frame step is capped
        # at a quarter of the frame so the direction stays unambiguous (only very short actions,
        # in the "frames" layout, go less than a lap).
        dist = min(float(extent), 0.25 * extent * steps)
        if horizontal:
            cx = cx + sign * dist * progress
        else:
            cy = cy + sign * dist * progress
    else:
        sign = 1.0 if class_name == "rotate_cw" else -1.0  # theta grows clockwise (y is down)
        theta = theta + sign * min(turn, math.radians(45.0) * steps) * progress
    bar_color = rng.uniform(225, 255, size=3).astype(np.float32)
    return cx, cy, theta, half_len, radius, bar_color


def _distractor_path(
    rng: np.random.Generator, n: int, w: int, h: int
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """A dimmer coloured disc drifting randomly (smooth random velocity): per-frame centre,
    radius and colour."""
    side = min(w, h)
    d_radius = rng.uniform(0.06, 0.09) * side
    vel = np.stack([_ou(rng, n, 0.01 * side, keep=0.9), _ou(rng, n, 0.01 * side, keep=0.9)])
    dx0, dy0 = rng.uniform(0, w), rng.uniform(0, h)
    d_x = dx0 + np.cumsum(vel[0])
    d_y = dy0 + np.cumsum(vel[1])
    hue = rng.uniform(0.0, 1.0)
    d_color = np.array(
        [110 + 50 * math.cos(2 * math.pi * (hue + k / 3)) for k in range(3)], dtype=np.float32
    )
    return d_x, d_y, d_radius, d_color


def render_clip(
    class_name: str,
    rng: np.random.Generator,
    width: int,
    height: int,
    num_frames: int,
    span: tuple[int, int] | None = None,
) -> np.ndarray:
    """Render one clip of ``class_name`` as a (T, H, W, 3) uint8 RGB array.

    ``span`` is the (first, last) frame of the action, both inclusive; when None it is drawn
    from ``rng`` with :func:`sample_action_span`. Outside the span the bar only jitters.
    Image coordinates: x to the right, y down; "clockwise" is clockwise on screen.
    """
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASS_NAMES}")
    if span is None:
        span = sample_action_span(rng, num_frames)
    start, end = span
    if not 0 <= start < end < num_frames:
        raise ValueError(f"bad action span {span} for {num_frames} frames")
    n, w, h = num_frames, width, height
    # Progress of the action: 0 before the span, linear inside, 1 after.
    progress = np.clip((np.arange(n, dtype=np.float64) - start) / (end - start), 0.0, 1.0)
    cx, cy, theta, half_len, radius, bar_color = _bar_path(rng, class_name, w, h, progress, end - start)
    d_x, d_y, d_radius, d_color = _distractor_path(rng, n, w, h)

    xs = np.arange(w, dtype=np.float32) + 0.5
    ys = np.arange(h, dtype=np.float32) + 0.5
    bar = _capsule_mask(xs, ys, cx, cy, theta, half_len, radius, w, h)[..., None]
    # The bulb sits under the bar's tip at angle theta: the hand points one way (it has a head).
    bulb = _capsule_mask(xs, ys, cx + half_len * np.cos(theta), cy + half_len * np.sin(theta),
                         theta, 0.0, BULB_SCALE * radius, w, h)[..., None]
    disc = _capsule_mask(xs, ys, d_x, d_y, np.zeros(n), 0.0, d_radius, w, h)[..., None]

    # Composite in float32, in place: background, the disc, the bulb, then the bar on top.
    video = np.empty((n, h, w, 3), dtype=np.float32)
    video[:] = _background(rng, w, h)
    video -= disc * (video - d_color)
    video -= bulb * (video - BULB_COLOR)
    video -= bar * (video - bar_color)
    video += rng.standard_normal(size=(n, h, w, 1), dtype=np.float32) * np.float32(3.0)
    np.clip(video, 0, 255, out=video)
    return np.rint(video, out=video).astype(np.uint8)
