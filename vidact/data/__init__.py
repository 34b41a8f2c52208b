"""One loader interface for everything downstream: `build_loader(...)` yields `Batch`es.

``loader="dali"`` decodes and augments in DALI (GPU when the device is CUDA, DALI's CPU backend
otherwise); ``loader="torch"`` is the reference: the `webdataset` library in a torch
`DataLoader`, PyAV decoding, the same sampling and transforms in torch. Both keep the contract
of `vidact.clip.spec`.

Partial batches: ``mode="train"`` drops the last incomplete batch of an epoch (clips are
reshuffled every epoch, so none is skipped for good) and gives every rank the same number of
batches, ``(N // world_size) // batch_size``, so DDP ranks never wait on each other;
``eval`` and ``multiview`` return the last batch smaller (no padding, nothing to mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vidact.clip.sampling import views_layout
from vidact.clip.spec import ClipSpec
from vidact.data.batch import Batch, batches_per_epoch
from vidact.data.dali import DaliLoader
from vidact.data.reference import ReferenceLoader
from vidact.shards import ShardSet

__all__ = ["LOADERS", "MODES", "Batch", "LoaderSettings", "batches_per_epoch", "build_loader"]

MODES = ("train", "eval", "multiview")
LOADERS = ("dali", "torch")


def build_loader(shards: str | Path | ShardSet, split: str, loader: str = "dali", mode: str = "train",
                 spec: ClipSpec | None = None, batch_size: int = 8, device: str | torch.device | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0, workers: int | None = None,
                 num_clips: int = 1, num_crops: int = 3, flip_views: bool = True,
                 shuffle_buffer: int = 256, dali_pipelines: int | None = None, resume: dict | None = None,
                 cut: bool = True, dali_resize: bool | None = None, max_bad_samples: int | None = None,
                 mmap: bool = True):
    """A re-iterable loader over one split of a shard set; each ``iter()`` is one epoch.

    `rank`/`world_size` give each process a disjoint share of the samples; `workers` is DALI's
    thread count or the torch DataLoader's worker processes (DALI's default: this rank's share of
    the cores, at least the batch size on CUDA); `dali_pipelines` runs several DALI pipelines per
    process, the threads split among them (default: chosen for the machine, `vidact.data.tuning`:
    one single-thread pipeline per core on a CPU, one pipeline on a GPU; the log says which).
    `num_clips` in train: clips per video sample (``--clips-per-video``), each its own window, crop
    and flip, the union of their frames decoded once; `batch_size` counts clips (a multiple of
    it), so a batch holds ``batch_size // num_clips`` samples, each sample's clips side by side.
    `resume`, a train loader's ``state()`` from an earlier run, goes on from there: the same
    clips, in the same order (given the same `dali_pipelines`).
    `mmap` (DALI) off: the reader reads shards with plain reads, which ``/proc/self/io`` counts (to
    measure what a resume reads).
    `cut` (DALI, IVF shards): decode only the GOP runs a clip needs (the default); off, each clip
    is decoded from frame 0, as for shards written before format 2 (the benchmark compares).
    `dali_resize` (DALI): resize with DALI's `fn.resize` (default: on a GPU only; on a CPU, torch's
    uint8 resize, the reference loader's), to measure the GPU's resize on a CPU.
    Every sample is checked before it is decoded (`vidact.sample_check`: its checksum, its tables):
    a damaged one is said once and left out (in train its slot takes the next good sample of the
    batch, so batch shapes and counts hold); past `max_bad_samples` (default 1 % of the split,
    at least 10) the loader stops with one line.
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    if mode == "train":
        if num_clips < 1 or batch_size % num_clips:
            raise ValueError(f"batch size {batch_size} is not a multiple of {num_clips} clips per video")
        batch_size //= num_clips  # the loaders count samples
    spec = (spec or ClipSpec()).check()
    shards = shards if isinstance(shards, ShardSet) else ShardSet.open(shards)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    kwargs = dict(shards=shards, split=split, mode=mode, spec=spec, batch_size=batch_size,
                  device=device, rank=rank, world_size=world_size, seed=seed, workers=workers,
                  num_clips=num_clips, num_crops=num_crops, flip_views=flip_views,
                  shuffle_buffer=shuffle_buffer, resume=resume, max_bad_samples=max_bad_samples)
    if loader == "dali":
        if dali_pipelines is not None and dali_pipelines < 1:
            raise ValueError(f"dali_pipelines must be >= 1, got {dali_pipelines}")
        return DaliLoader(**kwargs, pipelines=dali_pipelines, cut=cut, dali_resize=dali_resize, mmap=mmap)
    return ReferenceLoader(**kwargs)


@dataclass(frozen=True)
class LoaderSettings:
    """How clips are loaded, whatever the split: loader kind, batch size, workers, pipelines."""

    loader: str = "dali"
    batch_size: int = 8
    workers: int | None = None  # the reference loader's DataLoader processes (None: one per core)
    dali_threads: int | None = None  # the DALI loader's threads (None: this process's share of the cores)
    dali_pipelines: int | None = None  # None: chosen for the machine (vidact.data.tuning)
    max_bad_samples: int | None = None  # damaged samples left out before the loader stops (None: 1 %, >= 10)

    @property
    def loader_workers(self) -> int | None:
        """`build_loader`'s ``workers`` for this loader: DALI threads or DataLoader processes."""
        return self.dali_threads if self.loader == "dali" else self.workers

    def build(self, shards: ShardSet, split: str, mode: str, spec: ClipSpec, device: torch.device,
              rank: int = 0, world_size: int = 1, seed: int = 0, views: int = 1, resume: dict | None = None,
              dali_pipelines: int | None = None, clips_per_video: int = 1):
        """A loader of `split` for this process (`rank` of `world_size`); ``mode="eval"`` with
        ``views > 1`` gives multi-view batches (`views` counted as `evaluate --views` counts them);
        `resume` (a train loader's ``state()``) starts it at that epoch and batch; `dali_pipelines`
        is used when the settings leave the count to the machine (a resumed run's count);
        `clips_per_video` (train): clips cut from each sample read (`build_loader`'s ``num_clips``)."""
        views_kwargs = {"num_clips": clips_per_video} if mode == "train" else {}
        if mode == "eval" and views > 1:
            clips, flip = views_layout(views)
            mode, views_kwargs = "multiview", {"num_clips": clips, "flip_views": flip}
        return build_loader(shards, split, loader=self.loader, mode=mode, spec=spec, batch_size=self.batch_size,
                            device=device, rank=rank, world_size=world_size, seed=seed, workers=self.loader_workers,
                            dali_pipelines=self.dali_pipelines or dali_pipelines, resume=resume,
                            max_bad_samples=self.max_bad_samples, **views_kwargs)
