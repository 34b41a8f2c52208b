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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from vidact import jpeg_frames
from vidact.clip.geometry import crop_offset, random_crop_box, resize_shorter_size, whole_box
from vidact.clip.resample import resize
from vidact.clip.sampling import frame_indices, multiview_plan
from vidact.clip.spec import ClipSpec
from vidact.data.batch import Batch, batches_per_epoch
from vidact.shards import JPEG_EXT, META_EXT, OFFSETS_EXT, ShardError, ShardSet
from vidact.video_io import VideoError, decode_counted

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


def eval_clip(frames: np.ndarray, spec: ClipSpec) -> torch.Tensor:
    """Short side to ``spec.resize_short``, center crop: the eval graph's transform."""
    x = to_tchw(frames)
    x = resize(x, resize_shorter_size(x.shape[-2], x.shape[-1], spec.resize_short))
    return normalize(crop(x, spec.crop_size, 0.5, 0.5, False), spec)


@dataclass(frozen=True)
class TrainDraws:
    """Every random number one train clip uses, drawn in one place and order, so a skipped clip
    (a resumed epoch) advances the generator exactly as a decoded one."""

    stride_u: tuple[float, float] | None
    u: float
    crop_u: tuple[float, float, float, float]
    flip_u: float

    @classmethod
    def draw(cls, spec: ClipSpec, rng: random.Random) -> TrainDraws:
        stride_u = (rng.random(), rng.random()) if spec.random_stride else None
        u = rng.random()
        crop_u = (rng.random(), rng.random(), rng.random(), rng.random())
        return cls(stride_u, u, crop_u, rng.random())


def crop_resize(x: torch.Tensor, box: tuple, size: int) -> torch.Tensor:
    """The whole pixels of the crop `box` (`whole_box`) of ``(..., H, W)`` frames, resized to
    ``size x size``."""
    top, left, h, w = whole_box(x.shape[-2], x.shape[-1], box)
    return resize(x[..., top:top + h, left:left + w], (size, size))


def train_clip(frames: np.ndarray, spec: ClipSpec, draws: TrainDraws) -> tuple[torch.Tensor, tuple, bool]:
    """One random resized crop and flip for all frames: the train graphs' transform (to the
    pixel the CPU JPEG-frames graph's; the clip graphs resize the box's fractional pixels)."""
    x = to_tchw(frames)
    box = random_crop_box(x.shape[-2], x.shape[-1], *draws.crop_u)
    out = crop_resize(x, box, spec.crop_size)
    flip = draws.flip_u < spec.flip
    if flip:
        out = out.flip(-1)
    return normalize(out, spec), box, flip


# --------------------------------------------------------------------------- dataset

# A clip's frames at some indices, and how many frames the decoder decoded for them.
FramesAt = Callable[[np.ndarray], tuple[np.ndarray, int]]


def eval_sample(frames_at: FramesAt, n: int, spec: ClipSpec) -> tuple[torch.Tensor, np.ndarray, int]:
    """The eval clip of a video of `n` frames: ``(T, C, H, W)``, its frame indices, frames decoded."""
    idx = frame_indices(n, spec.frames_per_clip, spec.ratio, spec.window)
    frames, decoded = frames_at(idx)
    return eval_clip(frames, spec), np.asarray(idx), decoded


def multiview_sample(frames_at: FramesAt, n: int, height: int, width: int, spec: ClipSpec, num_clips: int,
                     num_crops: int, flip: bool) -> tuple[torch.Tensor, np.ndarray, int]:
    """The views of a video of `n` frames of `height` x `width` (`multiview_plan`'s order):
    ``(V, T, C, H, W)``, each temporal clip's frame indices, and the frames decoded (one pass per
    temporal clip)."""
    plan = multiview_plan(height, width, num_clips, num_crops, flip)
    clips: dict[float, torch.Tensor] = {}
    all_idx, decoded = [], 0
    for u in dict.fromkeys(v.clip_u for v in plan):
        idx = frame_indices(n, spec.frames_per_clip, spec.ratio, spec.window, u)
        frames, passed = frames_at(idx)
        x, decoded = to_tchw(frames), decoded + passed
        clips[u] = resize(x, resize_shorter_size(x.shape[-2], x.shape[-1], spec.resize_short))
        all_idx.append(idx)
    views = [normalize(crop(clips[v.clip_u], spec.crop_size, v.pos_y, v.pos_x, v.flip), spec) for v in plan]
    return torch.stack(views), np.stack(all_idx), decoded


def shard_counts(shards: ShardSet, split: str) -> list[int]:
    """Samples per shard, from the first line of each DALI index ('v1.2 N')."""
    counts = []
    for idx in shards.indexes(split):
        try:
            counts.append(int(shards.read_text(idx).split("\n", 1)[0].split()[1]))
        except (IndexError, ValueError) as e:
            raise ShardError(f"{idx}: unreadable index ({e}); re-run tools/make_shards.py") from e
    return counts


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
    """Decoded, transformed clips of one rank's share of a split, as ``(video, label, id, info)``."""

    def __init__(self, shards: ShardSet, split: str, mode: str, spec: ClipSpec, rank: int,
                 world_size: int, seed: int, shuffle_buffer: int, num_clips: int, num_crops: int,
                 flip_views: bool):
        self.mode, self.spec, self.seed, self.shards = mode, spec, seed, shards
        self.video_ext = shards.video_ext
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
        self.view_args = (num_clips, num_crops, flip_views)
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
            if n < skip:
                if self.mode == "train":
                    TrainDraws.draw(self.spec, rng)  # what decoding it would have drawn
                continue
            yield self._clip(sample, rng)

    def _clip(self, sample: dict, rng: random.Random):
        where = f"{sample.get('__url__')}: sample {sample.get('__key__')}"
        try:
            meta = json.loads(sample[META_EXT])
            video = sample[self.video_ext]
        except (KeyError, ValueError) as e:
            raise ShardError(f"{where}: missing or unreadable member ({e})") from e
        spec, n = self.spec, meta["num_frames"]
        info: dict = {}
        try:
            frames_at = self._frames_at(sample, video, meta)
            if self.mode == "train":
                d = TrainDraws.draw(spec, rng)
                idx = frame_indices(n, spec.frames_per_clip, spec.ratio, spec.window, d.u, d.stride_u)
                frames, decoded = frames_at(idx)
                clip, box, flip = train_clip(frames, spec, d)
                info.update(window_u=np.float32(d.u), crop=np.asarray(box, np.float32), flip=np.int32(flip))
            elif self.mode == "eval":
                clip, idx, decoded = eval_sample(frames_at, n, spec)
            else:
                clip, idx, decoded = multiview_sample(frames_at, n, meta["height"], meta["width"], spec,
                                                      *self.view_args)
        except (VideoError, jpeg_frames.FramesError) as e:
            raise ShardError(f"{where}: {e}") from e
        info["frames"] = np.asarray(idx, np.int32)
        info["glued"] = np.int32(decoded)
        return clip, meta["label_id"], meta["id"], info


    def _frames_at(self, sample: dict, video: bytes, meta: dict) -> FramesAt:
        """How this sample's frames are decoded: each distinct JPEG of a JPEG-frames clip, or the
        video's keyframe cut (IVF) or run from a keyframe (WebM)."""
        if self.video_ext == JPEG_EXT:
            if OFFSETS_EXT not in sample:
                raise jpeg_frames.FramesError(f"member .{OFFSETS_EXT} missing")
            return partial(jpeg_frames.decode_frames, video, sample[OFFSETS_EXT])
        return partial(decode_counted, video, fps=meta["fps"])


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
                 resume: dict | None = None):
        self.mode, self.batch_size, self.device = mode, batch_size, device
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        self.dataset = ClipStream(shards, split, mode, spec, rank, world_size, seed, shuffle_buffer,
                                  num_clips, num_crops, flip_views)
        self.epoch = 0
        self.given = 0  # batches of the current epoch handed out so far
        self._resume_at = 0
        if resume is not None:
            self.epoch, self._resume_at = resume["epoch"], resume["batches"]

    def state(self) -> dict:
        """Where the loader stands: the epoch under way (or next) and its batches handed out.
        A loader built with ``resume=`` this state goes on with the next batch."""
        return {"epoch": self.epoch - (1 if self.given else 0), "batches": self.given}

    def __len__(self) -> int:
        d = self.dataset
        return batches_per_epoch(d.total, self.mode, self.batch_size, d.rank, d.world_size)

    def __iter__(self) -> Iterator[Batch]:
        self.dataset.epoch = self.epoch
        self.epoch += 1
        self.given, self._resume_at = self._resume_at, 0
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
                yield self._collate(pending)
                pending = []
        if pending and self.mode != "train":
            yield self._collate(pending)
        self.given = 0

    def _collate(self, samples: list) -> Batch:
        video = torch.stack([s[0] for s in samples]).to(self.device, non_blocking=True)
        label = torch.tensor([s[1] for s in samples], dtype=torch.int64, device=self.device)
        info = {k: np.stack([s[3][k] for s in samples]) for k in samples[0][3]}
        return Batch(video, label, [s[2] for s in samples], info)
