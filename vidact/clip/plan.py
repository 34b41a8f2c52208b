"""A sample's plan: which frames its clips keep, how the decoder gets them, which pixels they take.

Both loaders compute a sample's `ClipPlan` here, once, in Python, from the sample's tables
(`SampleTables`) and, for train clips, its `Draws`; the DALI graphs (`pipelines/clips.py`) and the
reference loader (`vidact.data.reference`) only carry it out. So the two loaders decode the same
frames from the same keyframe cut and cut the same pixels by construction.

A plan holds K temporal clips of T frames (K = 1 but for multi-view and ``--clips-per-video``),
decoded together: the decoder gets their distinct frames once, ascending (DALI 2.4's decoder
restarts from the stream's start for every repeated or backward index). An eval or multi-view
plan has one box, the whole frame, resized so its shorter side is ``resize_short``, and each of
its `views` is a ``crop_size`` crop of every clip at a normalized anchor, optionally flipped. A
train plan gives each clip k its own draws: its window, its random resized crop ``boxes[k]``
(whole pixels, resized to the crop size: its one view ``views[k]`` is all of it, flipped or
not); with K = 1 the two readings are the same plan.

Train draws are a pure function of (seed, epoch, clip id, k: which of its K clips) (`draw`): not
a generator's state, so a clip's window, crop and flip do not depend on the order clips are read
in, on workers or pipelines, or on where a resumed epoch starts; both loaders draw the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from vidact.clip.cut import Cut, plan_cut
from vidact.clip.geometry import random_crop_box, resize_shorter_size, whole_box
from vidact.clip.sampling import frame_indices, spatial_view_positions, temporal_view_fractions
from vidact.clip.spec import ClipSpec

PLAN_MODES = ("train", "eval", "multiview")


@dataclass(frozen=True)
class Draws:
    """Every random number one train clip uses, uniform in [0, 1)."""

    u: float  # the window's start in its range (`vidact.clip.sampling.window`)
    stride: tuple[float, float]  # the random stride and its offset (used when the spec asks for it)
    crop: tuple[float, float, float, float]  # area, aspect, x, y (`random_crop_box`)
    flip: float  # flipped when below the spec's flip chance


def draw(seed: int, epoch: int, clip_id: str, k: int = 0) -> Draws:
    """The draws of clip `k` of sample `clip_id` in `epoch`: eight uniforms from a BLAKE2b hash of
    the four (53 bits each, as a float64 holds them)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{clip_id}:{k}".encode(), digest_size=64).digest()
    u = (np.frombuffer(digest, dtype="<u8") >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return Draws(float(u[0]), (float(u[1]), float(u[2])), tuple(float(x) for x in u[3:7]), float(u[7]))


@dataclass(frozen=True)
class SampleTables:
    """What a plan reads of a sample: its frame count and size, and how its frames are stored."""

    num_frames: int
    height: int
    width: int
    keyframes: np.ndarray | None = None  # (N,) an IVF clip's: its keyframe cut is decoded
    jpeg: bool = False  # JPEG frames: each kept frame is decoded alone


@dataclass(frozen=True)
class ClipPlan:
    """What one sample's clips are made of (see the module docstring)."""

    frames: np.ndarray  # (K, T) int32: each temporal clip's frame indices
    distinct: np.ndarray  # (D,) int32: their distinct frames, ascending: what is decoded
    order: np.ndarray  # (K, T) int32: clip k's frame i is distinct frame order[k, i]
    positions: np.ndarray  # (D,) int32: where the decoder finds the distinct frames in its stream
    cut: Cut | None  # the keyframe runs the stream is glued from (IVF clips); None: the clip as stored
    decoded: int  # frames the decoder decodes for them
    boxes: tuple[tuple[int, int, int, int], ...]  # (top, left, height, width) resized: one, or one per clip
    size: tuple[int, int]  # (height, width) a box is resized to
    views: tuple[tuple[float, float, bool], ...]  # (pos_y, pos_x) crop anchor, flipped: per view, or per clip
    draws: tuple[Draws, ...] = ()  # train: each clip's
    crops: tuple[tuple[float, float, float, float], ...] = ()  # train: each clip's drawn box (y0, x0, h, w)

    @property
    def clips(self) -> int:
        return len(self.frames)

    @property
    def per_clip(self) -> bool:
        """Each clip has its own box and view (train clips, K > 1), not one box and views for all."""
        return len(self.boxes) > 1

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The box of every clip, or of the first."""
        return self.boxes[0]

    @property
    def crop(self) -> tuple[float, float, float, float] | None:
        """Train: the first clip's drawn box."""
        return self.crops[0] if self.crops else None

    def clip_frames(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Clip `k`'s distinct frames as indices into `distinct` (ascending), and its frames as
        indices into those: what a per-clip graph branch selects, resizes, then repeats."""
        select, order = np.unique(self.order[k], return_inverse=True)
        return select.astype(np.int32), order.reshape(-1).astype(np.int32)


def _assemble(frames: np.ndarray, tables: SampleTables, boxes, size, views, **extra) -> ClipPlan:
    """The decode half of a plan: distinct frames, their order, and the cut that decodes them."""
    distinct, order = np.unique(frames, return_inverse=True)
    if tables.keyframes is not None:
        cut = plan_cut(tables.keyframes, distinct)
        positions, decoded = cut.positions, cut.decoded
    else:
        cut, positions = None, distinct
        decoded = len(distinct) if tables.jpeg else int(distinct[-1]) + 1
    as_int = np.int32
    return ClipPlan(frames.astype(as_int), distinct.astype(as_int), order.reshape(frames.shape).astype(as_int),
                    np.asarray(positions, as_int), cut, int(decoded), tuple(tuple(b) for b in boxes), tuple(size),
                    tuple(views), **extra)


def train_plan(spec: ClipSpec, tables: SampleTables, draws: Draws | tuple[Draws, ...]) -> ClipPlan:
    """Train clips, one per `draws`: each its drawn window (and stride), its drawn crop in whole
    pixels resized to ``crop_size``, its drawn flip; their frames decoded together."""
    n, h, w = tables.num_frames, tables.height, tables.width
    draws = (draws,) if isinstance(draws, Draws) else tuple(draws)
    frames, boxes, views, crops = [], [], [], []
    for d in draws:
        stride = d.stride if spec.random_stride else None
        frames.append(frame_indices(n, spec.frames_per_clip, spec.ratio, spec.window, d.u, stride))
        crop = random_crop_box(h, w, *d.crop)
        boxes.append(whole_box(h, w, crop))
        views.append((0.5, 0.5, d.flip < spec.flip))
        crops.append(tuple(float(v) for v in crop))
    return _assemble(np.stack(frames), tables, boxes, (spec.crop_size, spec.crop_size), views, draws=draws,
                     crops=tuple(crops))


def eval_plan(spec: ClipSpec, tables: SampleTables, num_clips: int = 1, num_crops: int = 1,
              flip: bool = False) -> ClipPlan:
    """The eval clip (one temporal clip, the center crop) or the multi-view clips: `num_clips`
    temporal clips (`temporal_view_fractions`), each seen through `num_crops` spatial crops
    (`spatial_view_positions`), then the same flipped; the whole frame resized so its shorter
    side is ``resize_short``."""
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    n, h, w = tables.num_frames, tables.height, tables.width
    t = spec.frames_per_clip
    us = [None] if num_clips == 1 else temporal_view_fractions(num_clips)
    frames = np.stack([frame_indices(n, t, spec.ratio, spec.window, u) for u in us])
    anchors = spatial_view_positions(h, w)[:num_crops]
    views = [(y, x, f) for f in ((False, True) if flip else (False,)) for y, x in anchors]
    return _assemble(frames, tables, [(0, 0, h, w)], resize_shorter_size(h, w, spec.resize_short), views)


@dataclass(frozen=True)
class Planner:
    """A loader's plans: its mode, spec and multi-view layout (train: `num_clips` clips per sample,
    each its own draws), and the seed of its train draws."""

    spec: ClipSpec
    mode: str
    num_clips: int = 1
    num_crops: int = 3
    flip_views: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in PLAN_MODES:
            raise ValueError(f"mode must be one of {PLAN_MODES}, got {self.mode!r}")
        if self.num_clips < 1:
            raise ValueError(f"clips per sample must be >= 1, got {self.num_clips}")

    @property
    def train_clips(self) -> int:
        """Clips of a sample each with its own box and flip: K in train, else 1 (views share one)."""
        return self.num_clips if self.mode == "train" else 1

    @property
    def spatial(self) -> int:
        """Views of each temporal clip: crops x flips in multi-view, else one (train: its own)."""
        return self.num_crops * (2 if self.flip_views else 1) if self.mode == "multiview" else 1

    def __call__(self, tables: SampleTables, clip_id: str, epoch: int = 0) -> ClipPlan:
        if self.mode == "train":
            draws = tuple(draw(self.seed, epoch, clip_id, k) for k in range(self.num_clips))
            return train_plan(self.spec, tables, draws)
        if self.mode == "eval":
            return eval_plan(self.spec, tables)
        return eval_plan(self.spec, tables, self.num_clips, self.num_crops, self.flip_views)


def clip_views(pixels: torch.Tensor, clips: int, spatial: int) -> torch.Tensor:
    """Views first: ``(B, K*T, [S,] C, H, W)`` pixels (K temporal clips' frames, each frame's S
    spatial views; no S axis when S = 1) to ``(B, K*S, T, C, H, W)``, in `eval_plan`'s order."""
    b, c, h, w = pixels.shape[0], *pixels.shape[-3:]
    return pixels.reshape(b, clips, -1, spatial, c, h, w).transpose(2, 3).reshape(b, clips * spatial, -1, c, h, w)
