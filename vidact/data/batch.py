"""The batch every loader yields, and how many batches an epoch has on a rank."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from vidact.shards import ShardError

log = logging.getLogger("vidact.data")


class Batch(tuple):
    """``(video, label, ids)``; ``.info`` holds per-clip extras of its plan (`vidact.clip.plan`)
    as numpy arrays: ``frames`` (the clip's frame indices; ``(K, T)`` multi-view), ``decoded``
    (the distinct indices, padded with -1), ``glued`` (the frames the decoder decoded for the
    sample, all its clips together: the keyframe cut's length, or the run from frame 0 or a
    keyframe to the last frame kept), and for train ``window_u``, ``crop`` (y0, x0, h, w), ``flip``."""

    info: dict[str, Any]
    skipped: list[str]  # damaged samples left out of this batch: '<shard>: sample <key>: <reason>'

    def __new__(cls, video: torch.Tensor, label: torch.Tensor, ids: list[str],
                info: dict[str, Any] | None = None, skipped: list[str] | None = None) -> Batch:
        obj = super().__new__(cls, (video, label, ids))
        obj.info = info or {}
        obj.skipped = skipped or []
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


def decode_cost(info: dict[str, Any]) -> tuple[int, int]:
    """(frames decoded, frames kept) of one batch, from its ``info``: each loader says what its
    decoder decoded per sample (``glued``: the keyframe cut's length, or the run from frame 0
    (DALI without cuts) or from a keyframe (PyAV on WebM) to the last frame kept; a multiview
    sample's clips together); kept is T frames per clip, repeats included. Their ratio is
    ``decoded_per_kept``."""
    return int(np.sum(info["glued"])), int(np.size(info["frames"]))


def reader_samples(samples: int, reader: int, readers: int) -> int:
    """Samples of reader `reader` of `readers`: it gets [N*k//S, N*(k+1)//S) (DALI's split)."""
    return samples * (reader + 1) // readers - samples * reader // readers


def batches_per_epoch(samples: int, mode: str, batch_size: int, rank: int, world_size: int,
                      pipelines: int = 1) -> int:
    """Batches of one epoch on `rank`. Reader k of S = world_size * pipelines gets
    `reader_samples` (the reference loader reads the same union per rank).
    Train: full batches only, and the smallest count over ranks, so all ranks step together;
    eval: every sample, the last batch of each reader partial."""
    s = world_size * pipelines

    def size(k: int) -> int:
        return reader_samples(samples, k, s)

    if mode == "train":
        return min(sum(size(r * pipelines + p) // batch_size for p in range(pipelines)) for r in range(world_size))
    return sum(-(-size(rank * pipelines + p) // batch_size) for p in range(pipelines))


def bad_sample_limit(samples: int, given: int | None) -> int:
    """How many damaged samples a loader skips before it stops: `given`, else 1 % of the split's
    `samples` and at least 10."""
    return given if given is not None else max(10, -(-samples // 100))


class TooManyDamaged(ShardError):
    """More damaged samples than the loader may skip: the run stops, with this one line."""


def count_damaged(seen: list[str], skipped: list, limit: int, root: str, split: str) -> None:
    """Both loaders' tally of damaged samples: each of `skipped` ('<shard>: sample <key>: <reason>')
    not in `seen` is said once and added to it; past `limit` of them the loader stops, one line."""
    for s in map(str, skipped):
        if s not in seen:
            log.warning("skipped a damaged sample: %s", s)
            seen.append(s)
    if len(seen) > limit:
        raise TooManyDamaged(f"{root} split '{split}': {len(seen)} damaged samples, more than --max-bad-samples "
                             f"{limit} (the first: {seen[0]}); run vidact-shards verify {root} to list them")
