"""Between reading and pixels: each sample of a reader batch planned (`vidact.clip.plan`, the
reference loader's own functions) and turned into what `pipelines.clips.clips_pipeline` takes, and
the batch's clips put back together from what the graph gives back.

A video sample is one graph entry: its keyframe cut glued into a stream (`vidact.ivf.glue`), the
positions of its distinct frames there, the order that repeats them into clips (K train clips
per sample: each clip's own frames, box and flip). A JPEG-frames sample is one graph entry per
distinct frame, of each clip when train clips have their own boxes (its JPEG: a slice of the clip,
no copy; a frame a clip before took is not decoded again on the CPU); the loader
gathers the frames into clips. What rebuilds a batch waits, in order, until its pixels come back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vidact import ivf
from vidact.clip.plan import ClipPlan, Planner, SampleTables, clip_views
from vidact.jpeg_frames import encode_jpeg
from vidact.sample_check import check_sample
from vidact.shards import (
    HW_EXT,
    INDEXED_EXTS,
    JPEG_EXT,
    KEYFRAMES_EXT,
    LABEL_EXT,
    META_EXT,
    NFRAMES_EXT,
    OFFSETS_EXT,
    decode_meta,
)
from vidact.video_io import EncodeSettings, encode_frames

INFO = ("frames", "decoded", "glued")  # `Batch.info` of every batch; train adds `TRAIN_INFO`
TRAIN_INFO = ("window_u", "crop", "flip")
WHERE = "__where__"  # a sample's shard and key, as '<shard>: sample <key>'


def where_of(source_info: str) -> str:
    """'<shard>: sample <key>' from DALI's source info of a member ('<tar>:<offset>:<key>.<ext>')."""
    head, _, member = source_info.rpartition(":")
    return f"{head.rpartition(':')[0]}: sample {member.partition('.')[0]}"


class EpochFeed:
    """One reader pipeline's batches for one epoch, as lists of samples (each its members by
    extension, numpy arrays; `exts` in the reader's order): the reader's next batch until the
    epoch's count is out, then StopIteration, so the pixels pipeline ends its epoch there instead
    of prefetching past it. The last batch of an eval epoch keeps only the samples left (the
    reader fills it with repeats)."""

    def __init__(self, exts: list[str]) -> None:
        self.exts, self.reader, self.left, self.last = exts, None, 0, None
        self.checkpoints = False  # take the reader's checkpoint after each batch (`reader_state`)
        self.reader_state: bytes | None = None  # the reader's checkpoint after the batch last given

    def start(self, reader, batches: int, last: int | None = None) -> None:
        """`batches` of `reader` make the epoch; the last keeps its first `last` samples (None: all)."""
        self.reader, self.left, self.last = reader, batches, last

    def __call__(self) -> list[dict[str, np.ndarray]]:
        if self.left <= 0:
            raise StopIteration
        self.left -= 1
        members = self.reader.run()
        if self.checkpoints:
            self.reader_state = self.reader.checkpoint()
        n = len(members[0]) if self.left or self.last is None else self.last
        return [{WHERE: where_of(members[0][i].source_info()), **{ext: np.asarray(m[i]) for ext, m in
                                                                   zip(self.exts, members)}} for i in range(n)]


def sample_tables(members: dict[str, np.ndarray], video_ext: str) -> tuple[str, int, SampleTables]:
    """(clip id, label, tables) of one sample's members by extension (int32 members as int32
    arrays), as both loaders read them; a table that does not fit the sample's frame count raises,
    naming the clip."""
    clip_id, n = decode_meta(members[META_EXT])["id"], int(members[NFRAMES_EXT][0])
    offsets, keyframes = members.get(OFFSETS_EXT), members.get(KEYFRAMES_EXT)
    for table, frames in ((offsets, n + 1), (keyframes, n)):
        if table is not None and (n < 1 or len(table) < frames):
            # A RuntimeError, as DALI's own: the loader then finds the sample and names its shard.
            raise RuntimeError(f"clip {clip_id}: {n} frames claimed, {len(table) + n - frames} in its table")
    hw = members[HW_EXT]
    tables = SampleTables(n, int(hw[0]), int(hw[1]), keyframes, jpeg=video_ext == JPEG_EXT)
    return clip_id, int(members[LABEL_EXT][0]), tables


def graph_entries(data: np.ndarray, offsets: np.ndarray | None, plan: ClipPlan, video: bool, serial: np.ndarray,
                  first: int = 0, share: bool = True) -> tuple[list[tuple], np.ndarray | None]:
    """One sample's entries of the pixels graph (`pipelines.clips.input_names` order): the sample
    for a video; for JPEG frames one per distinct frame of each clip (train clips with their own
    boxes each take theirs), `first` the batch's entries before them, and each clip frame's entry
    (None for a video). `share`: a frame a clip before took is not decoded again (a stand-in JPEG;
    the CPU's resize takes the first one's)."""
    size = np.array(plan.size, np.float32)
    views = [(np.float32(y0), np.float32(x0), np.int32(flip)) for y0, x0, flip in plan.views]
    if video:
        stream = ivf.glue(data, offsets, plan.cut) if plan.cut is not None else data
        if plan.per_clip:  # train clips: their crop is all of their box (views at the centre)
            clips = [x for k, box in enumerate(plan.boxes) for x in (*plan.clip_frames(k), *_box(box), views[k][2])]
            return [(stream, plan.positions, size, serial, *clips)], None
        clip = (plan.order.reshape(-1), *_box(plan.box))
        return [(stream, plan.positions, size, serial, *clip, *(x for v in views for x in v))], None
    entries, taken, index = [], {}, []
    for k, box in enumerate(plan.boxes):
        select, order = plan.clip_frames(k) if plan.per_clip else (np.arange(len(plan.distinct)), plan.order.ravel())
        anchors = views[k] if plan.per_clip else tuple(x for v in views for x in v)
        index.append(first + len(entries) + order)
        for d in plan.distinct[select].tolist():
            here = first + len(entries)
            source = taken.setdefault(d, here) if share else here
            jpeg = data[offsets[d]:offsets[d + 1]] if source == here else STAND_IN_FRAME
            entries.append((jpeg, np.int32(source), *_box(box), size, serial, *anchors))
    return entries, np.concatenate(index)


def _box(box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    top, left, h, w = box
    return np.array([top, left], np.int32), np.array([h, w], np.int32)


# The bytes of a JPEG frame entry whose frame another entry holds (not decoded again).
STAND_IN_FRAME = np.frombuffer(encode_jpeg(np.full((8, 8, 3), 128, np.uint8), 90), np.uint8)


@dataclass
class PlannedBatch:
    """What rebuilds one fed batch's clips: its samples' ids, labels and plans' facts
    (`Batch.info`), and, for JPEG frames, where each clip frame is among the graph's frames."""

    serial: int  # the feed's count of batches: checked against the pixels' own
    label: np.ndarray  # (B,) int32; (B*K,) with K train clips per sample
    ids: list[str]
    info: dict[str, np.ndarray]
    clips: int  # K temporal clips per sample
    spatial: int  # S spatial views of each
    multiview: bool
    video: bool  # video samples come back as clips; JPEG frames as frames
    index: np.ndarray | None  # JPEG frames: (B * K * T,) clip frame -> graph entry; None: in place
    keep: np.ndarray | None = None  # eval: the slots that hold their own sample (None: all)
    skipped: list[Skipped] = field(default_factory=list)  # damaged samples left out of this batch
    reader_state: bytes | None = None  # the reader's checkpoint after this batch (train)
    per_clip: bool = False  # K train clips per sample: each a batch row of its own

    def __post_init__(self) -> None:
        self.slots = len(self.label)
        if self.keep is not None:  # an eval batch hands out its own samples only
            self.label = self.label[self.keep]
            self.ids = [self.ids[i] for i in self.keep]
            self.info = {k: v[self.keep] for k, v in self.info.items()}

    def rebuild(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` clips (``(B, V, T, C, H, W)`` multi-view; ``(B*K, T, C, H, W)`` for K
        train clips per sample) from the graph's pixels: video ``(B, K*T, [S,] C, H, W)``, JPEG
        frames ``(N, [S,] C, H, W)`` (a view when every clip has T distinct frames in order, else a
        gather)."""
        if self.index is not None:
            index = torch.from_numpy(self.index)
            if pixels.is_cuda:  # a pageable copy would wait for the device
                index = index.pin_memory().to(pixels.device, non_blocking=True)
            pixels = pixels[index]
        if not self.video:
            pixels = pixels.reshape(self.slots, -1, *pixels.shape[1:])
        if self.keep is not None:
            pixels = pixels[torch.from_numpy(self.keep).to(pixels.device)]
        if self.per_clip:  # a row per clip (JPEG frames are in rows already)
            return pixels.reshape(len(self.label), -1, *pixels.shape[2:])
        return clip_views(pixels, self.clips, self.spatial) if self.multiview else pixels


@dataclass(frozen=True)
class Skipped:
    """A damaged sample left out of a batch: where it is and why."""

    where: str  # '<shard>: sample <key>'
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def stand_in(video_ext: str) -> dict:
    """A tiny clip (one grey 32 x 32 frame, VP9 in IVF or a JPEG) that takes the slots of an eval
    batch whose samples are all damaged: the graph runs, and the batch hands out nothing."""
    grey = np.full((32, 32, 3), 128, np.uint8)
    if video_ext == JPEG_EXT:
        data = encode_jpeg(grey, 90)
        tables = {OFFSETS_EXT: np.array([0, len(data)], np.int32)}
    else:
        data = encode_frames([grey], 10, EncodeSettings(codec="vp9"))[0]
        t = ivf.tables(data)
        tables = {OFFSETS_EXT: t.offsets, KEYFRAMES_EXT: t.keyframes}
    meta = b'{"id": "(stand-in)", "num_frames": 1, "label_id": -1, "height": 32, "width": 32}'
    return {WHERE: "(stand-in)", video_ext: np.frombuffer(data, np.uint8), META_EXT: np.frombuffer(meta, np.uint8),
            NFRAMES_EXT: np.array([1], np.int32), LABEL_EXT: np.array([-1], np.int32),
            HW_EXT: np.array([32, 32], np.int32), **tables}


def checked(samples: list[dict], video_ext: str, train: bool) -> tuple[list[dict], list[bool], list[Skipped]]:
    """The batch's samples, each damaged one (`vidact.sample_check`) replaced by the next good one
    of the batch (batch shapes hold, and nothing beyond the batch is read); whether each slot is its
    own sample; what was left out. A train batch of damaged samples only stops the loader; an eval
    one is a `stand_in` that hands out nothing."""
    reasons = [check_sample(m, video_ext, cut=OFFSETS_EXT in m or video_ext not in INDEXED_EXTS) for m in samples]
    skipped = [Skipped(m.get(WHERE, "?"), r) for m, r in zip(samples, reasons) if r]
    good = [i for i, r in enumerate(reasons) if r is None]
    if not good and train:
        raise RuntimeError(f"every sample of a batch is damaged: {'; '.join(map(str, skipped))}")
    if not good:
        return [stand_in(video_ext)], [False], skipped
    slots = [i if r is None else next((j for j in good if j > i), good[0]) for i, r in enumerate(reasons)]
    return [samples[i] for i in slots], [r is None for r in reasons], skipped


def plan_batch(samples: list[dict], planner: Planner, epoch: int, video_ext: str,
               serial: int, share: bool = True) -> tuple[PlannedBatch, tuple[list, ...]]:
    """A reader batch (each sample's members by extension) as the pixels graph's inputs (one list
    per input) and the `PlannedBatch` that rebuilds its clips; a damaged sample's slot takes the
    next good sample of the batch (`checked`): in train it counts, in eval it is dropped. K train
    clips per sample are K rows of the batch, the sample's label and id on each. `share`:
    `graph_entries`'."""
    samples, own, skipped = checked(samples, video_ext, planner.mode == "train")
    tag, video = np.array(serial, np.int32), video_ext != JPEG_EXT
    labels, ids, plans, entries, index = [], [], [], [], []
    for members in samples:
        clip_id, label, tables = sample_tables(members, video_ext)
        try:
            plan = planner(tables, clip_id, epoch)
        except ValueError as e:  # a frame count or size no plan fits: the loader names the shard
            raise RuntimeError(f"clip {clip_id}: {e}") from e
        rows = plan.clips if plan.per_clip else 1
        mine, frames_at = graph_entries(members[video_ext], members.get(OFFSETS_EXT), plan, video, tag, len(entries),
                                        share)
        entries += mine
        index.append(frames_at)
        labels += [label] * rows
        ids += [clip_id] * rows
        plans.append(plan)
    index = None if video else np.concatenate(index)
    index = None if index is None or np.array_equal(index, np.arange(len(index))) else index
    keep = None if planner.mode == "train" or all(own) else np.flatnonzero(own)
    batch = PlannedBatch(serial, np.asarray(labels, np.int32), ids, plan_info(plans, planner.mode),
                         plans[0].clips, planner.spatial, planner.mode == "multiview", video, index, keep, skipped,
                         per_clip=plans[0].per_clip)
    columns = list(zip(*entries))
    return batch, (list(columns[0]), *(_column(column) for column in columns[1:]))  # the data: one list


def _column(values: tuple) -> list | np.ndarray:
    """One graph input of a batch: an array whose first axis is the batch where every entry has one
    shape (DALI takes it whole instead of converting entry by entry), else the list."""
    first = np.shape(values[0])
    if len(first) and all(np.shape(v) == first for v in values):  # fixed-size tables (boxes, sizes)
        return np.stack(values)
    if not len(first):  # scalars (anchors, flips, sources, serials)
        return np.array(values)
    return list(values)


def plan_info(plans: list[ClipPlan], mode: str) -> dict[str, np.ndarray]:
    """`Batch.info` of a batch's plans, a row per clip (K train clips of a sample: K rows): each
    clip's frames (``(T,)``, ``(K, T)`` multi-view), the sample's distinct ones (padded with -1),
    frames decoded for the sample (on its first row; 0 on its other clips' rows); train: each
    clip's window, crop box, flip."""
    rows = [(p, k) for p in plans for k in (range(p.clips) if p.per_clip else (0,))]
    width = max(p.frames.size for p in plans)
    info = {"frames": np.stack([p.frames if mode == "multiview" else p.frames[k] for p, k in rows]),
            "decoded": np.stack([np.pad(p.distinct, (0, width - len(p.distinct)), constant_values=-1)
                                 for p, _ in rows]),
            "glued": np.array([0 if k else p.decoded for p, k in rows], np.int32)}
    if mode == "train":
        info["window_u"] = np.array([p.draws[k].u for p, k in rows], np.float32)
        info["crop"] = np.array([p.crops[k] for p, k in rows], np.float32)
        info["flip"] = np.array([p.views[k][2] for p, k in rows], np.int32)
    return info


class FeedOrderError(Exception):
    """Pixels came back for another batch than the one due: a loader bug, not a shard's."""


class ClipFeed:
    """A pixels graph's external source: each batch of `batches` (an `EpochFeed`) planned with
    `planner` in `epoch`; the `PlannedBatch`es wait, in order, for `take`. `share`: JPEG frames
    two train clips of a sample share are decoded once (the CPU's resize: not DALI's `fn.resize`)."""

    def __init__(self, batches: Callable[[], list[dict]], planner: Planner, video_ext: str, share: bool = True) -> None:
        self.batches, self.planner, self.video_ext, self.share = batches, planner, video_ext, share
        self.pending: deque[PlannedBatch] = deque()
        self.serial, self.epoch = 0, 0

    def __call__(self) -> tuple[list, ...]:
        batch, inputs = plan_batch(self.batches(), self.planner, self.epoch, self.video_ext, self.serial, self.share)
        batch.reader_state = getattr(self.batches, "reader_state", None)
        self.serial = (self.serial + 1) % 2**31
        self.pending.append(batch)
        return inputs

    def take(self, serial: int) -> PlannedBatch:
        """The plans of the pixels that came back with `serial` (the oldest batch pending)."""
        batch = self.pending.popleft() if self.pending else None
        if batch is None or batch.serial != serial:
            due = "none" if batch is None else batch.serial
            raise FeedOrderError(f"DALI pixels of feed batch {serial} came back where batch {due} was due")
        return batch

