"""The Python half of JPEG-frames train batches (`pipelines.frames`): which frames each clip
keeps, and the clips put back together from the decoded frames.

A reader batch (`pipelines.clips.train_reader_pipeline`: the samples and their draws) becomes
one batch of frames: each clip's T indices (`vidact.clip.sampling.frame_indices` with the
reader's draws, the reference loader's own function), its distinct frames' JPEGs (slices of the
clip's bytes, no copy), its crop box (`vidact.clip.geometry.random_crop_box`, in the whole pixels
the reference loader cuts: `whole_box`) and flip. What the
loader needs to rebuild the clips is kept, in order, until the graph's frames come back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vidact.clip.geometry import box_region, random_crop_box, whole_box
from vidact.clip.sampling import frame_indices
from vidact.clip.spec import ClipSpec
from vidact.shards import decode_meta

INFO = ("frames", "decoded", "glued", "window_u", "crop", "flip")  # `Batch.info` of a train batch
FLOAT_INFO = ("window_u", "crop")


@dataclass
class FrameBatch:
    """The clips of one feed batch: what the DALI clip graph outputs besides the video, and
    where each clip frame lies in the batch of decoded frames."""

    serial: int  # the feed's count of batches: checked against the frames' own
    label: np.ndarray  # (B,) int32
    ids: list[str]
    info: dict[str, np.ndarray]  # `INFO`
    index: np.ndarray | None  # (B * T,) clip frame -> decoded frame; None: they are in order

    def clips(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` from the decoded ``(N, C, H, W)`` frames: a view when every clip
        has T distinct frames, else a gather of the repeats."""
        if self.index is not None:
            index = torch.from_numpy(self.index)
            if frames.is_cuda:  # a pageable copy would wait for the device
                index = index.pin_memory().to(frames.device, non_blocking=True)
            frames = frames[index]
        return frames.view(len(self.label), -1, *frames.shape[1:])


def plan_clip(members: tuple, spec: ClipSpec, region: bool) -> tuple[dict, list[tuple]]:
    """One clip of a reader batch (`member_exts(JPEG_EXT)` order, then its draws and flip): its
    `INFO` entries, with ``order`` (clip frame -> distinct frame), and one tuple of graph inputs
    per distinct frame (`pipelines.frames.FRAME_INPUTS` but the serial, then `REGION_INPUTS` with
    `region`)."""
    video, meta, nframes, _label, hw, offsets, draws, flip = (np.asarray(m) for m in members)
    u, flip = draws.astype(float), flip.astype(np.int32)
    height, width = int(hw[0]), int(hw[1])
    t, n = spec.frames_per_clip, int(nframes[0])
    if not 0 < n < len(offsets):
        # A RuntimeError, as DALI's own: the loader then finds the sample and names its shard.
        raise RuntimeError(f"clip {decode_meta(meta)['id']}: {n} frames claimed, {len(offsets) - 1} in its table")
    idx = frame_indices(n, t, spec.ratio, spec.window, u[0], (u[1], u[2]) if spec.random_stride else None)
    distinct, order = np.unique(idx, return_inverse=True)
    box = random_crop_box(height, width, *u[3:7])
    cut = whole_box(height, width, box)  # the pixels the reference loader cuts
    y0, x0, ch, cw = cut
    extra: tuple = ()
    if region:  # the box in the region's pixels
        top, left, rh, rw = box_region(height, width, cut, spec.crop_size)
        y0, x0, extra = y0 - top, x0 - left, (np.array([top, left], np.int32), np.array([rh, rw], np.int32))
    start, end = np.array([y0, x0], np.float32), np.array([y0 + ch, x0 + cw], np.float32)
    inputs = [(video[offsets[k]:offsets[k + 1]], start, end, flip, *extra) for k in distinct]
    info = {"frames": idx, "decoded": np.pad(distinct, (0, t - len(distinct)), constant_values=-1),
            "glued": len(distinct), "window_u": u[0], "crop": box, "flip": flip, "order": order}
    return info, inputs


def plan_batch(members: tuple, spec: ClipSpec, serial: int,
               region: bool = False) -> tuple[FrameBatch, tuple[list, ...]]:
    """One reader batch as the graph's inputs (one entry per distinct frame of its clips) and the
    `FrameBatch` that rebuilds its clips."""
    clips = [plan_clip(tuple(m[i] for m in members), spec, region) for i in range(len(members[0]))]
    frames = [f for _info, inputs in clips for f in inputs]
    columns = tuple(list(c) for c in zip(*frames))
    columns = (*columns[:4], [np.array(serial, np.int32)] * len(frames), *columns[4:])
    starts = np.cumsum([0] + [info["glued"] for info, _ in clips[:-1]])
    index = np.concatenate([s + info["order"] for s, (info, _) in zip(starts, clips)])
    batch = FrameBatch(
        serial, np.array([np.asarray(x)[0] for x in members[3]], np.int32),
        [decode_meta(np.asarray(m))["id"] for m in members[1]],
        {k: np.array([info[k] for info, _ in clips], np.float32 if k in FLOAT_INFO else np.int32) for k in INFO},
        None if np.array_equal(index, np.arange(len(index))) else index)
    return batch, columns


class FeedOrderError(Exception):
    """Frames came back for another batch than the one due: a loader bug, not a shard's."""


class FrameFeed:
    """A train frames graph's external source: each reader batch of `batches` (a callable that
    raises StopIteration at the epoch's end, `vidact.data.dali.EpochFeed`) planned as frames;
    the plans wait, in order, for `take`."""

    def __init__(self, batches: Callable[[], tuple], spec: ClipSpec, region: bool = False) -> None:
        self.batches, self.spec, self.region = batches, spec, region
        self.pending: deque[FrameBatch] = deque()
        self.serial = 0

    def __call__(self) -> tuple[list, ...]:
        batch, inputs = plan_batch(self.batches(), self.spec, self.serial, self.region)
        self.serial = (self.serial + 1) % 2**31
        self.pending.append(batch)
        return inputs

    def take(self, serial: int) -> FrameBatch:
        """The plan of the frames that came back with `serial` (the oldest one pending)."""
        batch = self.pending.popleft() if self.pending else None
        if batch is None or batch.serial != serial:
            due = "none" if batch is None else batch.serial
            raise FeedOrderError(f"DALI frames of feed batch {serial} came back where batch {due} was due")
        return batch
