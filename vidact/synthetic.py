"""Write a small, seeded, learnable action-recognition dataset whose classes need motion.

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

Layouts (``--layout``):

* ``videos`` (default, UCF-101 style): ``OUT/{label}/{id}.avi``, MPEG-4 part 2 ("mpeg4") in
  AVI, yuv420p, GOP 12, no B-frames; sizes, fps and durations (2..5 s) vary per clip.
* ``frames`` (Kaggle HMDB style): ``OUT/{label}/{id}/frame_0001.jpg ...``, 5..20 JPEG frames
  per clip.
* ``unlabeled``: ``OUT/{id}.avi`` only (no label folders), ``--test-per-class`` clips per class,
  with the answers in ``OUT/answers.csv`` (``id,label``).

Labeled layouts also get ``OUT/train.csv``, ``OUT/val.csv``, ``OUT/test.csv`` (``id,label,split``)
and ``OUT/dictionary.json`` (``{label: class_id}``, ids 0..C-1 in sorted label order). Every
layout gets ``OUT/ground_truth.json``: ``id -> {fps, num_frames, width, height, action_start,
action_end}`` (0-based, inclusive frame indices of the action).

Clip ids (``clip_00000`` ...) never reveal the class: classes are assigned to ids in a seeded
random order. Each clip is drawn from its own generator seeded by ``(seed, clip index)``, so
the same seed gives identical files. The dataset is written to a temporary sibling folder and
moved into place when complete; re-running with the same options is a no-op (``--force``
regenerates).

Usage::

    python tools/make_synthetic.py OUT [--layout videos|frames|unlabeled] [--classes N]
        [--train-per-class 12] [--val-per-class 4] [--test-per-class 4] [--seed 0] [--force]
        [--square] [--duration MIN MAX] [--workers N]

From Python: ``vidact.synthetic.make_dataset(Path(OUT), layout=..., ...)`` returns the counts
per split.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from vidact.files import atomic_dir

log = logging.getLogger("make_synthetic")

# Bump when the rendered content changes: a dataset written by another version is regenerated.
GENERATOR_VERSION = 2
MARKER = ".make_synthetic.json"

CLASS_NAMES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_cw",
    "rotate_ccw",
)
LAYOUTS = ("videos", "frames", "unlabeled")
SPLITS = ("train", "val", "test")

SIZES: tuple[tuple[int, int], ...] = ((160, 120), (176, 144), (192, 144), (128, 96), (144, 176))
# ``--square``: as many sizes (so the same random draws pick them), all square. A square frame
# resized to its short side and center-cropped keeps most of the frame, as the train-time random
# crops do; a 4:3 frame loses a third of its width to the eval crop (``REST_REGION`` keeps the
# hand's rest pose inside it either way).
SQUARE_SIZES: tuple[tuple[int, int], ...] = ((128, 128), (144, 144), (160, 160), (176, 176), (192, 192))
FPS_CHOICES: tuple[int, ...] = (10, 12, 15, 20, 25)
DURATION_RANGE_S = (2.0, 5.0)
FRAMES_LAYOUT_RANGE = (5, 20)  # frames per clip in the "frames" layout, inclusive
# The action starts in [15%, 25%] and ends in [75%, 85%] of the clip.
ACTION_START_FRAC = (0.15, 0.25)
ACTION_END_FRAC = (0.75, 0.85)
GOP_SIZE = 12
MPEG4_QSCALE = 3  # 2 (best) .. 31; 3 keeps the bar's edges sharp at a few hundred kB per clip
JPEG_QUALITY = 90
# The hand's bulb: radius relative to the bar's, and a saturated red no distractor takes
# (distractor channels stay in 60..160) whose luma (~105) stays below the bar's (> 225).
BULB_SCALE = 2.2
BULB_COLOR = np.array([250.0, 60.0, 40.0], dtype=np.float32)
# Where the bar rests (share of each side, for every class): the middle of the frame, which
# the evaluation's center crop keeps whole. Version 1 rested anywhere, and a bar resting at an
# edge was cut off by the crop (and rotated out of sight).
REST_REGION = (0.3, 0.7)
FF_QP2LAMBDA = 118  # libavcodec's qscale -> lambda factor (global_quality is in lambda units)


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ClipInfo:
    """What ``ground_truth.json`` records for one clip (frames are 0-based, inclusive)."""

    fps: int
    num_frames: int
    width: int
    height: int
    action_start: int
    action_end: int


def class_names(classes: int) -> list[str]:
    """The first ``classes`` (2..6) class names, in their canonical order."""
    if not 2 <= classes <= len(CLASS_NAMES):
        raise ValueError(f"classes must be in 2..{len(CLASS_NAMES)}, got {classes}")
    return list(CLASS_NAMES[:classes])


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of clip ``index``: depends on ``(seed, index)`` only."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


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


def _plan(
    layout: str, names: Sequence[str], per_split: dict[str, int], seed: int
) -> list[tuple[str, str, str]]:
    """(clip id, label, split) for every clip; labels are assigned to ids in random order."""
    items = [(name, split) for split in SPLITS for name in names for _ in range(per_split[split])]
    order = np.random.default_rng(seed).permutation(len(items))
    width = max(5, len(str(len(items))))
    return [(f"clip_{i:0{width}d}", *items[k]) for i, k in enumerate(order)]


@dataclass(frozen=True)
class Shapes:
    """The frame sizes and durations (seconds) clips are drawn from."""

    sizes: tuple[tuple[int, int], ...] = SIZES
    duration_s: tuple[float, float] = DURATION_RANGE_S

    def as_params(self) -> dict[str, Any]:
        """Marker entries: none for the defaults, so existing datasets stay up to date."""
        return {} if self == Shapes() else {"sizes": [list(x) for x in self.sizes],
                                            "duration_s": list(self.duration_s)}


def _clip_shape(rng: np.random.Generator, layout: str, shapes: Shapes = Shapes()) -> tuple[int, int, int, int]:
    """(width, height, fps, num_frames) of one clip."""
    width, height = shapes.sizes[int(rng.integers(len(shapes.sizes)))]
    fps = int(FPS_CHOICES[int(rng.integers(len(FPS_CHOICES)))])
    if layout == "frames":
        num_frames = int(rng.integers(FRAMES_LAYOUT_RANGE[0], FRAMES_LAYOUT_RANGE[1] + 1))
    else:
        num_frames = max(3, int(round(rng.uniform(*shapes.duration_s) * fps)))
    return width, height, fps, num_frames


def _split_counts(layout: str, train: int, val: int, test: int) -> dict[str, int]:
    """Clips per class of each split (only ``test`` for the unlabeled layout), checked."""
    counts = {"train": train, "val": val, "test": test}
    if layout == "unlabeled":
        counts = {"train": 0, "val": 0, "test": test}
    for split, count in counts.items():
        if count < 0:
            raise ValueError(f"{split} clips per class must be >= 0, got {count}")
    if not any(counts.values()):
        raise ValueError("nothing to write: every per-class count is 0")
    return counts


# ----------------------------------------------------------------------------- render


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


def _write_planned(job: tuple) -> tuple[str, dict[str, int]]:
    """Render and write one clip of the plan (in a worker process); its ground-truth entry."""
    root, layout, seed, index, clip_id, label, shapes = job
    frames, info = render_planned(seed, index, label, layout, shapes)
    _write_clip(root, layout, clip_id, label, frames, info.fps)
    return clip_id, info.__dict__.copy()


@contextmanager
def _pool(workers: int) -> Iterator[Callable]:
    """An unordered ``map`` over ``workers`` processes (in this process for 1)."""
    if workers <= 1:
        yield map
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield lambda fn, jobs: pool.imap_unordered(fn, jobs, chunksize=4)


def render_planned(seed: int, index: int, label: str, layout: str,
                   shapes: Shapes = Shapes()) -> tuple[np.ndarray, ClipInfo]:
    """Clip ``index`` of the plan: its shape, action span and frames, all from its own generator."""
    rng = clip_rng(seed, index)
    width, height, fps, num_frames = _clip_shape(rng, layout, shapes)
    span = sample_action_span(rng, num_frames)
    frames = render_clip(label, rng, width, height, num_frames, span=span)
    return frames, ClipInfo(fps, num_frames, width, height, span[0], span[1])


# ----------------------------------------------------------------------------- write


def write_avi(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode (T, H, W, 3) RGB frames as MPEG-4 part 2 in AVI (yuv420p, GOP 12, fixed qscale)."""
    _, height, width, _ = frames.shape
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs an even width and height, got {width}x{height}")
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = GOP_SIZE
        stream.codec_context.thread_count = 1  # bit-identical output run to run
        stream.options = {
            "flags": "+qscale",
            "global_quality": str(MPEG4_QSCALE * FF_QP2LAMBDA),
            "bf": "0",
        }
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_jpegs(folder: Path, frames: np.ndarray) -> None:
    """Write frames as ``frame_0001.jpg``, ``frame_0002.jpg``, ... in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"frame_{i:04d}.jpg", quality=JPEG_QUALITY)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_clip(root: Path, layout: str, clip_id: str, label: str, frames: np.ndarray, fps: int) -> None:
    """One clip where ``layout`` puts it: an AVI in its label folder, a JPEG folder, or a bare AVI."""
    if layout == "videos":
        (root / label).mkdir(exist_ok=True)
        write_avi(root / label / f"{clip_id}.avi", frames, fps)
    elif layout == "frames":
        write_jpegs(root / label / clip_id, frames)
    else:
        write_avi(root / f"{clip_id}.avi", frames, fps)


def _write_tables(root: Path, layout: str, plan: list[tuple[str, str, str]], names: Sequence[str],
                  truth: dict[str, dict[str, int]], params: dict[str, Any]) -> None:
    """The split CSVs and dictionary (or the answers of the unlabeled layout), the ground truth
    and the marker that says which options wrote the dataset."""
    by_id = sorted(plan)
    if layout == "unlabeled":
        _write_csv(root / "answers.csv", ("id", "label"), [(i, lab) for i, lab, _ in by_id])
    else:
        for split in SPLITS:
            rows = [row for row in by_id if row[2] == split]
            _write_csv(root / f"{split}.csv", ("id", "label", "split"), rows)
        dictionary = {name: k for k, name in enumerate(sorted(names))}
        (root / "dictionary.json").write_text(json.dumps(dictionary, indent=2) + "\n")
    (root / "ground_truth.json").write_text(
        json.dumps(dict(sorted(truth.items())), indent=1) + "\n"
    )
    (root / MARKER).write_text(json.dumps(params, indent=2) + "\n")


def _up_to_date(out: Path, params: dict[str, Any], force: bool) -> bool:
    """Whether ``out`` already holds the dataset of ``params``; a non-empty ``out`` this tool did
    not write is refused."""
    if not out.exists():
        return False
    marker = out / MARKER
    if marker.is_file():
        return not force and json.loads(marker.read_text()) == params
    if not out.is_dir() or any(out.iterdir()):
        raise FileExistsError(f"{out} exists and was not written by make_synthetic.py")
    return False


def make_dataset(
    out: Path,
    layout: str = "videos",
    classes: int = 6,
    train_per_class: int = 12,
    val_per_class: int = 4,
    test_per_class: int = 4,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    shapes: Shapes = Shapes(),
    workers: int = 1,
) -> dict[str, Any]:
    """Write the dataset to ``out`` (see the module docstring) and return a summary.

    The summary has the clip count of each split written (``train``/``val``/``test``; only
    ``test`` for the unlabeled layout), ``clips`` (total), ``classes`` (label names),
    ``layout``, ``out`` and ``reused`` (True when ``out`` already held this exact dataset and
    nothing was written). A non-empty ``out`` not written by this tool is never overwritten.
    ``workers`` processes render and encode the clips; the files are the same for any count.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    names = class_names(classes)
    counts = _split_counts(layout, train_per_class, val_per_class, test_per_class)
    out = Path(out)
    params = {
        "generator_version": GENERATOR_VERSION,
        "layout": layout,
        "classes": names,
        "per_class": counts,
        "seed": seed,
        **shapes.as_params(),
    }
    split_counts = {s: c * len(names) for s, c in counts.items() if layout != "unlabeled" or c}
    summary: dict[str, Any] = {
        **split_counts,
        "clips": sum(split_counts.values()),
        "classes": names,
        "layout": layout,
        "out": str(out),
        "reused": False,
    }
    if _up_to_date(out, params, force):
        log.info("%s already holds this dataset; nothing to do (--force rewrites)", out)
        return {**summary, "reused": True}

    plan = _plan(layout, names, counts, seed)
    with atomic_dir(out) as tmp:
        jobs = [(tmp, layout, seed, index, clip_id, label, shapes) for index, (clip_id, label, _) in enumerate(plan)]
        truth: dict[str, dict[str, int]] = {}
        with _pool(workers) as pool:
            # Each clip comes from its own generator: the files do not depend on the worker count.
            for clip_id, info in tqdm(pool(_write_planned, jobs), total=len(jobs), desc=f"synthetic {layout}",
                                      unit="clip", disable=not progress):
                truth[clip_id] = info
        _write_tables(tmp, layout, plan, names, truth, params)
    log.info("wrote %d %s clips to %s", summary["clips"], layout, out)
    return summary


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make_synthetic.py",
        description=(
            "Write a small seeded synthetic action dataset whose classes need motion: a bright "
            "hand (a bar with a red bulb) moves once around the frame left/right/up/down or turns "
            "clockwise/counter-clockwise in the middle (~20%..80%) of each clip and only jitters at "
            "the ends, with a randomly drifting distractor disc. Clips vary in size, fps and duration."
        ),
        epilog=(
            "layouts: 'videos' writes OUT/{label}/{id}.avi (MPEG-4 part 2 in AVI); 'frames' "
            "writes OUT/{label}/{id}/frame_0001.jpg... (5-20 JPEGs per clip, HMDB style); both "
            "also write OUT/{train,val,test}.csv (id,label,split) and OUT/dictionary.json "
            "({label: id}). 'unlabeled' writes OUT/{id}.avi for --test-per-class clips per class "
            "and OUT/answers.csv (id,label). Every layout writes OUT/ground_truth.json: id -> "
            "{fps, num_frames, width, height, action_start, action_end} (0-based inclusive "
            "frames). Re-running with the same options does nothing; --force rewrites."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="output folder (created; must be new or ours)")
    parser.add_argument("--layout", choices=LAYOUTS, default="videos", help="what to write")
    parser.add_argument(
        "--classes", type=int, default=6, help=f"use the first N of {', '.join(CLASS_NAMES)}"
    )
    parser.add_argument("--train-per-class", type=int, default=12, help="train clips per class")
    parser.add_argument("--val-per-class", type=int, default=4, help="val clips per class")
    parser.add_argument("--test-per-class", type=int, default=4, help="test clips per class")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything")
    parser.add_argument("--force", action="store_true", help="rewrite even if up to date")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="rendering processes (the files are the same for any count)")
    parser.add_argument("--square", action="store_true",
                        help=f"square clips ({', '.join(f'{w}' for w, _ in SQUARE_SIZES)} px) instead of "
                             "mixed 4:3, 11:9 and portrait sizes")
    parser.add_argument("--duration", type=float, nargs=2, metavar=("MIN", "MAX"), default=DURATION_RANGE_S,
                        help="clip durations in seconds ('videos' and 'unlabeled' layouts)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(name)s: %(message)s",
    )
    if not 2 <= args.classes <= len(CLASS_NAMES):
        parser.error(f"--classes must be in 2..{len(CLASS_NAMES)}")
    try:
        summary = make_dataset(
            args.out,
            layout=args.layout,
            classes=args.classes,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            test_per_class=args.test_per_class,
            seed=args.seed,
            force=args.force,
            progress=not args.quiet,
            shapes=Shapes(SQUARE_SIZES if args.square else SIZES, tuple(args.duration)),
            workers=max(1, args.workers),
        )
    except (FileExistsError, ValueError) as exc:
        parser.error(str(exc))
    splits = ", ".join(f"{s}={summary[s]}" for s in SPLITS if s in summary)
    state = "up to date" if summary["reused"] else "written"
    print(f"{summary['out']}: {summary['clips']} {args.layout} clips ({splits}) {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
