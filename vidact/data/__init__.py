"""One loader interface for everything downstream: `build_loader(...)` yields `Batch`es.

``loader="dali"`` decodes and augments in DALI (GPU when the device is CUDA, DALI's CPU backend
otherwise); ``loader="torch"`` is the reference: the `webdataset` library in a torch
`DataLoader`, PyAV decoding, the same sampling and transforms in torch. Both keep the contract
of `vidact.contract`.

Partial batches: ``mode="train"`` drops the last incomplete batch of an epoch (clips are
reshuffled every epoch, so none is skipped for good) and gives every rank the same number of
batches, ``(N // world_size) // batch_size``, so DDP ranks never wait on each other;
``eval`` and ``multiview`` return the last batch smaller (no padding, nothing to mask).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vidact.contract import ClipSpec
from vidact.shards import ShardSet

MODES = ("train", "eval", "multiview")
LOADERS = ("dali", "torch")


class Batch(tuple):
    """``(video, label, ids)``; ``.info`` holds per-clip extras as numpy arrays: ``frames``
    (the clip's frame indices), and for train ``window_u``, ``crop`` (y0, x0, h, w), ``flip``;
    the DALI loader adds ``decoded`` (the distinct indices it decoded, padded with -1)."""

    info: dict[str, Any]

    def __new__(cls, video: torch.Tensor, label: torch.Tensor, ids: list[str],
                info: dict[str, Any] | None = None) -> Batch:
        obj = super().__new__(cls, (video, label, ids))
        obj.info = info or {}
        return obj

    @property
    def video(self) -> torch.Tensor:
        return self[0]

    @property
    def label(self) -> torch.Tensor:
        return self[1]

    @property
    def ids(self) -> list[str]:
        return self[2]


def batches_per_epoch(samples: int, mode: str, batch_size: int, rank: int, world_size: int,
                      pipelines: int = 1) -> int:
    """Batches of one epoch on `rank`. Reader k of S = world_size * pipelines gets samples
    [N*k//S, N*(k+1)//S) (DALI's split; the reference loader reads the same union per rank).
    Train: full batches only, and the smallest count over ranks, so all ranks step together;
    eval: every sample, the last batch of each reader partial."""
    s = world_size * pipelines

    def size(k: int) -> int:
        return samples * (k + 1) // s - samples * k // s

    if mode == "train":
        return min(sum(size(r * pipelines + p) // batch_size for p in range(pipelines)) for r in range(world_size))
    return sum(-(-size(rank * pipelines + p) // batch_size) for p in range(pipelines))


def default_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def build_loader(shards: str | Path | ShardSet, split: str, loader: str = "dali", mode: str = "train",
                 spec: ClipSpec | None = None, batch_size: int = 8, device: str | torch.device | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0, workers: int | None = None,
                 num_clips: int = 1, num_crops: int = 3, flip_views: bool = True,
                 shuffle_buffer: int = 256, dali_pipelines: int = 1):
    """A re-iterable loader over one split of a shard set; each ``iter()`` is one epoch.

    `rank`/`world_size` give each process a disjoint share of the samples; `workers` is DALI's
    thread count or the torch DataLoader's worker processes (DALI's default: this rank's share of
    the cores, at least the batch size on CUDA: `vidact.data.dali.dali_threads`);
    `dali_pipelines` runs several DALI pipelines per process (one already decodes a batch's
    clips in parallel; more overlap the per-batch barrier).
    """
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    spec = (spec or ClipSpec()).check()
    shards = shards if isinstance(shards, ShardSet) else ShardSet.open(shards)
    device = torch.device(device) if device is not None else default_device()
    kwargs = dict(shards=shards, split=split, mode=mode, spec=spec, batch_size=batch_size,
                  device=device, rank=rank, world_size=world_size, seed=seed, workers=workers,
                  num_clips=num_clips, num_crops=num_crops, flip_views=flip_views,
                  shuffle_buffer=shuffle_buffer)
    if loader == "dali":
        from vidact.data.dali import DaliLoader

        if dali_pipelines < 1:
            raise ValueError(f"dali_pipelines must be >= 1, got {dali_pipelines}")
        return DaliLoader(**kwargs, pipelines=dali_pipelines)
    from vidact.data.reference import ReferenceLoader

    return ReferenceLoader(**kwargs)
