"""The DALI loader: `pipelines/clips.py` graphs behind DALI's PyTorch plugin.

On a CUDA device the graph decodes with NVDEC and the batch arrives as CUDA tensors without a
host round trip; on the CPU it runs on DALI's CPU backend.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from pipelines.clips import OUTPUTS, PIPELINES, READER
from vidact.clip.spec import ClipSpec
from vidact.data.batch import Batch, batches_per_epoch
from vidact.shards import META_EXT, NFRAMES_EXT, ShardError, ShardSet, decode_meta, iter_tar_samples, read_int32
from vidact.video_io import VideoError, count_frames

log = logging.getLogger(__name__)


class DaliLoader:
    """`pipelines` DALI pipelines per process, each reading its own part of this rank's share
    (one pipeline drives one hardware decoder: a GPU with several NVDECs wants several)."""

    def __init__(self, shards: ShardSet, split: str, mode: str, spec: ClipSpec, batch_size: int,
                 device: torch.device, rank: int, world_size: int, seed: int, workers: int | None,
                 num_clips: int, num_crops: int, flip_views: bool, shuffle_buffer: int, pipelines: int = 1):
        self.shards, self.split, self.mode, self.spec = shards, split, mode, spec
        self.batch_size, self.device = batch_size, device
        self.rank, self.world_size, self.pipelines = rank, world_size, pipelines
        self.tars = [str(p) for p in shards.tars(split)]
        gpu = device.type == "cuda"
        extra = {}
        if mode == "train":
            extra["shuffle_buffer"] = shuffle_buffer
        if mode == "multiview":
            extra.update(num_clips=num_clips, num_crops=num_crops, flip=flip_views)
        threads = max(1, (workers or os.cpu_count() or 1) // pipelines)
        self.pipes = [PIPELINES[mode](
            files=self.tars, index_files=[str(p) for p in shards.indexes(split)],
            video_ext=shards.video_ext, spec=spec, gpu=gpu, shard_id=rank * pipelines + k,
            num_shards=world_size * pipelines, batch_size=batch_size, num_threads=threads,
            device_id=(device.index or 0) if gpu else None, seed=seed + 7919 * (rank * pipelines + k),
            prefetch_queue_depth=2, **extra) for k in range(pipelines)]
        self.names = OUTPUTS[mode]
        policy = LastBatchPolicy.DROP if mode == "train" else LastBatchPolicy.PARTIAL
        try:
            for pipe in self.pipes:
                pipe.build()
            self.iterators = [DALIGenericIterator([pipe], output_map=list(self.names), reader_name=READER,
                                                  auto_reset=True, last_batch_policy=policy) for pipe in self.pipes]
        except RuntimeError as e:
            raise self._diagnose(e) from e
        self.samples = shards.count(split)

    def __len__(self) -> int:
        return batches_per_epoch(self.samples, self.mode, self.batch_size, self.rank, self.world_size,
                                 self.pipelines)

    def __iter__(self):
        """Batches of the pipelines in turn; in train mode only the first ``len(self)`` (the
        count every rank shares), the rest drained so that each pipeline ends its epoch.
        Readers are padded to the largest reader's size, so a smaller one ends its eval epoch
        with an empty batch: skipped."""
        n = len(self) if self.mode == "train" else float("inf")
        given = 0
        active = [iter(it) for it in self.iterators]
        try:
            while active:
                for it in list(active):
                    try:
                        out = next(it)
                    except StopIteration:
                        active.remove(it)
                        continue
                    if given < n and len(out[0]["label"]):
                        given += 1
                        yield self._batch(out[0])
        except RuntimeError as e:
            raise self._diagnose(e) from e

    def _batch(self, d: dict[str, torch.Tensor]) -> Batch:
        video = d["video"]
        dtype = self.spec.torch_dtype
        converted = video.to(self.device, dtype, non_blocking=True)
        # The plugin hands out its own buffers (no copy since DALI 1.44): keep a private copy.
        video = converted.clone() if converted.data_ptr() == video.data_ptr() else converted
        label = d["label"].reshape(-1).to(self.device, torch.int64)
        metas = [decode_meta(m) for m in d["meta"].cpu().numpy()]
        info = {k: d[k].cpu().numpy().copy() for k in self.names[3:]}
        return Batch(video, label, [m["id"] for m in metas], info)

    def _diagnose(self, error: RuntimeError) -> Exception:
        """DALI stops the whole pipeline on one bad sample and names no sample: find it."""
        bad = locate_bad_sample([Path(t) for t in self.tars], self.shards.video_ext)
        if bad:
            return ShardError(f"{bad} (DALI: {str(error).splitlines()[0]})")
        return ShardError(f"{self.shards.root} split '{self.split}': DALI failed: {error}")


def locate_bad_sample(tars: list[Path], video_ext: str) -> str | None:
    """The first unreadable shard or sample, as '<shard>: sample <key>: <reason>'."""
    for tar_path in tars:
        try:
            for key, sample in iter_tar_samples(tar_path):
                reason = _sample_problem(sample, video_ext)
                if reason:
                    return f"{tar_path}: sample {key}: {reason}"
        except ShardError as e:
            return str(e)
    return None


def _sample_problem(sample: dict[str, bytes], video_ext: str) -> str | None:
    for ext in (video_ext, META_EXT, NFRAMES_EXT):
        if ext not in sample:
            return f"member .{ext} missing"
    try:
        n = count_frames(sample[video_ext])
    except VideoError as e:
        return f"video undecodable: {e}"
    claimed = read_int32(sample[NFRAMES_EXT])
    if n < claimed:
        return f"video decodes to {n} frames, the shard says {claimed} (truncated?)"
    try:
        decode_meta(np.frombuffer(sample[META_EXT], dtype=np.uint8))
    except ValueError as e:
        return f"unreadable json record ({e})"
    return None
