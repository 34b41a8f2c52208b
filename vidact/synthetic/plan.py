"""What each clip of a synthetic dataset is: its id, label and split, its shape, its generator.

Clip ids (``clip_00000`` ...) never reveal the class: classes are assigned to ids in a seeded
random order. Each clip is drawn from its own generator seeded by ``(seed, clip index)``, so
the same seed gives identical files, whatever the number of worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidact.synthetic.render import CLASS_NAMES, render_clip, sample_action_span

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


def render_planned(seed: int, index: int, label: str, layout: str,
                   shapes: Shapes = Shapes()) -> tuple[np.ndarray, ClipInfo]:
    """Clip ``index`` of the plan: its shape, action span and frames, all from its own generator."""
    rng = clip_rng(seed, index)
    width, height, fps, num_frames = _clip_shape(rng, layout, shapes)
    span = sample_action_span(rng, num_frames)
    frames = render_clip(label, rng, width, height, num_frames, span=span)
    return frames, ClipInfo(fps, num_frames, width, height, span[0], span[1])
