"""The reference loader: the same shards through the `webdataset` library in a torch
`DataLoader`, decoded on the CPU with PyAV, with the sampling of `vidact.clip.sampling` and the
geometry of `vidact.clip.geometry` applied in torch.

It is the fallback where DALI cannot run, the parity oracle of the tests and the baseline of
the benchmarks. Rank ``i`` of ``W`` reads samples ``[N*i//W, N*(i+1)//W)`` of the split (DALI's
split), and its workers take every ``workers``-th of those.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
from collections.abc import Iterator
from functools import partial

import numpy as np
import torch
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from vidact import ivf, jpeg_frames
from vidact.clip.geometry import crop_offset
from vidact.clip.plan import ClipPlan, Planner, clip_views
from vidact.clip.resample import resize
from vidact.clip.spec import ClipSpec
from vidact.data.batch import Batch, bad_sample_limit, batches_per_epoch, count_damaged
from vidact.data.feed import plan_info, sample_tables
from vidact.reader_shares import index_header
from vidact.sample_check import check_sample
from vidact.shards import JPEG_EXT, META_EXT, OFFSETS_EXT, ShardError, ShardSet, member_exts
from vidact.video_io import decode_counted, decode_positions

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- transforms (torch)

def to_tchw(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3) uint8`` -> ``(T, 3, H, W) uint8``, a view (channels-last in memory)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def normalize(x: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    """uint8 (or 0..255) frames -> mean/std normalized, the spec's dtype."""
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0
    return ((x.float() - mean) / std).to(spec.torch_dtype)


def crop(x: torch.Tensor, size: int, pos_y: float, pos_x: float, flip: bool) -> torch.Tensor:
    h, w = x.shape[-2:]
    y, xo = crop_offset(h, size, pos_y), crop_offset(w, size, pos_x)
    out = x[..., y:y + size, xo:xo + size]
    return out.flip(-1) if flip else out


def render(frames: np.ndarray, plan: ClipPlan, spec: ClipSpec, multiview: bool = False) -> torch.Tensor:
    """A sample's clips from its decoded distinct frames ``(D, H, W, 3)`` uint8, as the DALI
    graph makes them (`pipelines.clips.clips_pipeline`): the plan's box resized, the frames
    repeated into clips, each view cropped, flipped, normalized. ``(T, C, H, W)``; multi-view
    ``(V, T, C, H, W)``; K train clips with their own boxes (`ClipPlan.per_clip`) ``(K, T, C, H, W)``."""
    if plan.per_clip:
        return torch.stack([_render_clip(frames, plan, spec, k) for k in range(plan.clips)])
    top, left, h, w = plan.box
    x = resize(to_tchw(frames)[..., top:top + h, left:left + w], plan.size)
    x = x[torch.from_numpy(plan.order.reshape(-1)).long()]
    views = normalize(torch.stack([crop(x, spec.crop_size, y, xo, f) for y, xo, f in plan.views], 1), spec)
    return clip_views(views[None], plan.clips, len(plan.views))[0] if multiview else views[:, 0]


def _render_clip(frames: np.ndarray, plan: ClipPlan, spec: ClipSpec, k: int) -> torch.Tensor:
    """Train clip `k` of a plan whose clips have their own boxes: its frames' box resized, repeated
    into the clip, its view: the graph's branch for that clip."""
    select, order = plan.clip_frames(k)
    top, left, h, w = plan.boxes[k]
    x = resize(to_tchw(frames[select])[..., top:top + h, left:left + w], plan.size)
    pos_y, pos_x, flip = plan.views[k]
    return normalize(crop(x[torch.from_numpy(order).long()], spec.crop_size, pos_y, pos_x, flip), spec)


def decode_distinct(members: dict[str, bytes], video_ext: str, plan: ClipPlan, fps: float) -> tuple[np.ndarray, int]:
    """The plan's distinct frames, ``(D, H, W, 3)`` uint8, decoded on the CPU as the DALI graph
    decodes them, and how many frames the decoder decoded: the plan's keyframe cut through PyAV,
    each JPEG of a JPEG-frames clip (PIL), or (a clip stored without cut tables) PyAV from the
    keyframe before the first frame."""
    data = members[video_ext]
    if video_ext == JPEG_EXT:
        return jpeg_frames.decode_frames(data, members[OFFSETS_EXT], plan.distinct)
    if plan.cut is not None:
        offsets = np.frombuffer(members[OFFSETS_EXT], "<i4")
        return decode_positions(bytes(ivf.glue(data, offsets, plan.cut)), plan.positions, plan.decoded), plan.decoded
    return decode_counted(data, plan.distinct, fps=fps)


def shard_counts(shards: ShardSet, split: str) -> list[int]:
    """Samples per shard, from the first line of each DALI index ('v1.2 N')."""
    try:
        return [index_header(text, idx)[1] for idx, text in zip(shards.indexes(split), shards.index_texts(split))]
    except ValueError as e:
        raise ShardError(str(e)) from e


def open_shards(urls: Iterator[dict], shards: ShardSet) -> Iterator[dict]:
    """webdataset's URL-opening stage through `ShardSet.open_file`: local paths and
    ``s3://`` URLs alike (webdataset's own opener has no S3 scheme)."""
    for item in urls:
        with shards.open_file(item["url"]) as stream:  # closed when the next shard is asked for
            yield {**item, "stream": stream}


def shard_samples(urls: Iterator[dict], shards: ShardSet) -> Iterator[dict]:
    """Samples (dicts of members by extension) of the shards named by `urls`, in order."""
    files = tar_file_expander(open_shards(urls, shards), handler=_raise_named)
    return group_by_keys(files, handler=_raise_named)


class ClipStream(torch.utils.data.IterableDataset):
    """Decoded, transformed clips of one rank's share of a split, a sample at a time as ``(video,
    label, id, info)``: its clips (``(rows, ...)``: one row, or K train clips) and info rows."""

    def __init__(self, shards: ShardSet, split: str, mode: str, spec: ClipSpec, rank: int,
                 world_size: int, seed: int, shuffle_buffer: int, num_clips: int, num_crops: int,
                 flip_views: bool):
        self.mode, self.spec, self.seed, self.shards = mode, spec, seed, shards
        self.video_ext = shards.video_ext
        self.planner = Planner(spec, mode, num_clips, num_crops, flip_views, seed)
        tars, counts = shards.tars(split), shard_counts(shards, split)
        total = sum(counts)
        self.total, self.rank, self.world_size = total, rank, world_size
        self.lo, self.hi = total * rank // world_size, total * (rank + 1) // world_size
        starts = np.cumsum([0] + counts)
        # Only shards overlapping [lo, hi) are opened; `first` is the global index of their first sample.
        keep = [i for i in range(len(tars)) if starts[i] < self.hi and starts[i + 1] > self.lo]
        self.urls = [tars[i] for i in keep]
        self.first = int(starts[keep[0]]) if keep else 0
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0
        self.skip = 0  # samples of this rank's stream to pass over at the start of the epoch

    def __len__(self) -> int:
        return self.hi - self.lo

    def _worker(self) -> tuple[int, int]:
        """(this worker's part, number of workers). The DataLoader takes samples from its workers
        in turn, starting with worker 0; an epoch resumed after `skip` samples must start with the
        part whose turn it was, so worker w makes part (w + skip) % workers."""
        info = torch.utils.data.get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        return (wid + self.skip) % nworkers, nworkers

    def _mine(self, samples: Iterator[dict]) -> Iterator[dict]:
        wid, nworkers = self._worker()
        for n, sample in enumerate(samples, start=self.first):
            if n >= self.hi:
                return
            if n >= self.lo and (n - self.lo) % nworkers == wid:
                yield sample

    def __iter__(self):
        wid, nworkers = self._worker()
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{wid}")
        pipeline = [wds.SimpleShardList(self.urls), partial(shard_samples, shards=self.shards), self._mine]
        if self.mode == "train" and self.shuffle_buffer > 0:
            pipeline.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        # Of the first `skip` samples of the stream, part `wid` made those at wid, wid + nworkers, ...
        skip = len(range(wid, self.skip, nworkers))
        for n, sample in enumerate(wds.DataPipeline(*pipeline)):
            if n >= skip:  # train draws depend on the clip, not on the samples before it
                yield self._clip(sample)

    def _clip(self, sample: dict):
        """``(clip, label, id, info)`` of a sample, or ``(None, -1, where, reason)`` for a damaged one
        (`vidact.sample_check`, or one that does not decode: the batch replaces it)."""
        where = f"{sample.get('__url__')}: sample {sample.get('__key__')}"
        exts = member_exts(self.video_ext, checksum=self.shards.checksummed)
        members = {ext: sample[ext] for ext in exts if ext in sample}
        numbers = {ext: np.frombuffer(data, "<i4") if ext.endswith(".i32") else data for ext, data in members.items()}
        reason = check_sample(numbers, self.video_ext)
        if reason:
            return None, -1, where, reason
        try:
            clip_id, label, tables = sample_tables(numbers, self.video_ext)
            plan = self.planner(tables, clip_id, self.epoch)
            frames, decoded = decode_distinct(members, self.video_ext, plan, json.loads(members[META_EXT])["fps"])
        except (KeyError, ValueError, RuntimeError) as e:  # undecodable: a damaged sample, said and replaced
            return None, -1, where, f"undecodable ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        info = plan_info([plan], self.mode)
        info["glued"][0] = decoded
        video = render(frames, plan, self.spec, self.mode == "multiview")
        return (video if plan.per_clip else video[None]), label, clip_id, info


def collect_before_fork(workers: int) -> None:
    """Frees this process's unreachable objects before DataLoader workers are forked. DALI
    pipelines sit in reference cycles; one still waiting for the collector when the workers fork
    is collected in a worker, whose copy of it has none of its threads, and its destructor waits
    for them forever (seen in the suite: a worker stuck in DALI's ``~Executor2``)."""
    if workers > 0:
        gc.collect()


def _raise_named(exn: Exception) -> bool:
    raise ShardError(f"corrupt or unreadable shard: {exn}") from exn


def _named_errors(loader: torch.utils.data.DataLoader) -> Iterator:
    """The loader's samples; a worker's ShardError comes back with its own one-line message
    (torch re-raises it as "Caught ShardError in DataLoader worker process N" + a traceback)."""
    try:
        yield from loader
    except ShardError as e:
        lines = [x for x in str(e).splitlines() if x.strip()]
        raise ShardError(lines[-1].split("ShardError: ", 1)[-1]) from None


class ReferenceLoader:
    def __init__(self, shards: ShardSet, split: str, mode: str, spec: ClipSpec, batch_size: int,
                 device: torch.device, rank: int, world_size: int, seed: int, workers: int | None,
                 num_clips: int, num_crops: int, flip_views: bool, shuffle_buffer: int,
                 resume: dict | None = None, max_bad_samples: int | None = None):
        self.mode, self.batch_size, self.device = mode, batch_size, device
        self.split = split
        self.skipped: list[str] = []  # damaged samples left out so far
        self.max_bad = bad_sample_limit(shards.count(split), max_bad_samples)
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.dataset = ClipStream(shards, split, mode, spec, rank, world_size, seed, shuffle_buffer,
                                  num_clips, num_crops, flip_views)
        # The epoch under way (or next) and its batches handed out so far: an epoch left
        # unfinished goes on where it stopped, as the DALI loader's does.
        self.epoch, self.given = (resume["epoch"], resume["batches"]) if resume else (0, 0)

    def state(self) -> dict:
        """Where the loader stands: the epoch under way (or next) and its batches handed out.
        A loader built with ``resume=`` this state goes on with the next batch."""
        return {"epoch": self.epoch, "batches": self.given}

    def __len__(self) -> int:
        d = self.dataset
        return batches_per_epoch(d.total, self.mode, self.batch_size, d.rank, d.world_size)

    def __iter__(self) -> Iterator[Batch]:
        """One epoch's batches (an epoch left unfinished goes on where it stopped)."""
        self.dataset.epoch = self.epoch
        self.dataset.skip = self.given * self.batch_size
        # Samples come one by one from the workers and are batched here, so an epoch ends with
        # exactly one partial batch (as DALI's) instead of one per worker.
        collect_before_fork(self.workers)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=None, num_workers=self.workers,
            prefetch_factor=max(2, self.batch_size) if self.workers else None,
            pin_memory=self.device.type == "cuda")
        pending: list = []
        for sample in _named_errors(loader):
            if self.given == len(self):
                break  # train: this rank's extra samples beyond the common batch count
            pending.append(sample)
            if len(pending) == self.batch_size:
                self.given += 1
                yield from self._collated(pending)
                pending = []
        if pending and self.mode != "train":
            self.given += 1
            yield from self._collated(pending)
        self.given = 0
        self.epoch += 1

    def _collated(self, samples: list) -> Iterator[Batch]:
        batch = self._collate(samples)
        if batch is not None:
            yield batch

    def _collate(self, samples: list) -> Batch | None:
        """A batch of the samples, each damaged one (clip None) replaced by the next good one of the
        batch in train (as the DALI loader does), left out in eval; each said once, counted."""
        skipped = [f"{where}: {reason}" for clip, _label, where, reason in samples if clip is None]
        good = [i for i, s in enumerate(samples) if s[0] is not None]
        count_damaged(self.skipped, skipped, self.max_bad, self.dataset.shards.root, self.split)
        if not good and self.mode == "train":
            raise ShardError(f"every sample of a batch is damaged: {'; '.join(skipped)}")
        if not good:
            return None  # an eval batch of damaged samples hands out nothing
        if self.mode == "train":
            samples = [s if s[0] is not None else samples[next((j for j in good if j > i), good[0])]
                       for i, s in enumerate(samples)]
        samples = [s for s in samples if s[0] is not None]
        video = torch.cat([s[0] for s in samples]).to(self.device, non_blocking=True)
        rows = [len(s[0]) for s in samples]  # K train clips of a sample: K rows, its label and id on each
        label = torch.tensor([s[1] for s, n in zip(samples, rows) for _ in range(n)], dtype=torch.int64,
                             device=self.device)
        info = {k: np.concatenate([s[3][k] for s in samples]) for k in samples[0][3]}
        return Batch(video, label, [s[2] for s, n in zip(samples, rows) for _ in range(n)], info, skipped)

