"""The DALI loader: `pipelines/clips.py` graphs behind DALI's PyTorch plugin.

On a CUDA device the graph decodes with NVDEC and the batch arrives as CUDA tensors without a
host round trip; on the CPU it runs on DALI's CPU backend.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
from collections import deque

import numpy as np
import nvidia.dali.backend as dali_backend
import torch
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from pipelines.clips import OUTPUTS, PIPELINES, READER
from vidact.clip.spec import ClipSpec
from vidact.data.batch import Batch, batches_per_epoch
from vidact.shards import (
    FORMAT_VERSION,
    HW_EXT,
    IVF_EXT,
    META_EXT,
    NFRAMES_EXT,
    ShardError,
    ShardSet,
    decode_meta,
    iter_tar_samples,
    read_int32,
    read_members,
)
from vidact.video_io import VideoError, count_frames

log = logging.getLogger(__name__)

# NVDEC's smallest VP9 frame (cuvidGetDecoderCaps; DALI enforces the caps value when it opens a
# clip, so a smaller clip stops the pipeline mid-epoch). `make_shards --min-side` guards it.
NVDEC_MIN_SIDE = 128
# GPU batches whose DALI outputs may still be read by queued torch work (see `DaliLoader._hold`).
HELD_BATCHES = 4


def rank_cores() -> int:
    """Cores this process may run on (its affinity mask, which a container or torchrun sets)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_world_size() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 outside torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def dali_threads(cores: int, local_ranks: int, pipelines: int, batch_size: int, gpu: bool,
                 workers: int | None = None) -> int:
    """`num_threads` of each pipeline: this rank's share of the cores (or `workers`) split over
    its pipelines. The one setting sizes DALI's CPU pool and the video decoder's pool, which
    decodes each clip of a batch on its own thread (one NVDEC session each), so on a GPU it is
    at least the batch size."""
    own = workers or max(1, cores // max(1, local_ranks))
    threads = max(1, own // pipelines)
    return max(threads, batch_size) if gpu else threads


def clip_sizes(shards: ShardSet, split: str) -> list[tuple]:
    """(tar, key, height, width) of every sample of `split`, from the stored ``hw`` members."""
    return [(tar, key, *(int(v) for v in np.frombuffer(hw, dtype="<i4")[:2]))
            for tar, idx in zip(shards.tars(split), shards.indexes(split))
            for key, hw in read_members(tar, idx, HW_EXT)]


def check_nvdec_size(shards: ShardSet, split: str, min_side: int = NVDEC_MIN_SIDE) -> list[tuple]:
    """Raises, naming the first clip of `split` with a side under `min_side`, before a GPU
    pipeline starts; returns every clip's size (`clip_sizes`)."""
    sizes = clip_sizes(shards, split)
    for tar, key, h, w in sizes:
        if min(h, w) < min_side:
            raise ShardError(
                f"{tar}: sample {key}: {w}x{h} px, under the {min_side} px the GPU decoder (NVDEC) "
                f"takes; re-shard with tools/make_shards.py --min-side {min_side}, or load on the CPU")
    return sizes


_NOTED: set[tuple[str, str]] = set()


def note_format(shards: ShardSet, sizes: list[tuple] | None) -> None:
    """Says once per shard set what costs it carries: a set without cut tables (written before
    format 2) is decoded from frame 0; on a GPU, clips with sides off the 16-pixel grid make DALI
    2.4 create a hardware decoder per sample (its decoder cache misses on them): `sizes`, the
    split's clip sizes, are given on a GPU."""
    if shards.video_ext != IVF_EXT and (shards.root, "format") not in _NOTED:
        _NOTED.add((shards.root, "format"))
        log.info("%s: clips without keyframe tables (shard format %s): each is decoded from frame 0; "
                 "re-run tools/make_shards.py for format %d", shards.root, shards.manifest.get("format", 1),
                 FORMAT_VERSION)
    if sizes and (shards.root, "aligned") not in _NOTED:
        _NOTED.add((shards.root, "aligned"))
        off = sum(1 for _tar, _key, h, w in sizes if h % 16 or w % 16)
        if off:
            log.warning("%s: %d of %d clips have a side that is not a multiple of 16; DALI 2.4 creates a "
                        "new NVDEC decoder for each of them: re-shard with tools/make_shards.py (it aligns "
                        "sizes)", shards.root, off, len(sizes))


def _trim_heap() -> None:
    """Returns free heap memory to the system (glibc keeps the arenas of finished threads, and
    every epoch's pipelines start new ones); a no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class DaliLoader:
    """`pipelines` DALI pipelines per process, each reading its own part of this rank's share.
    One pipeline already decodes the clips of a batch in parallel (NVDEC sessions on a GPU);
    more pipelines only overlap the per-batch barrier.

    Train pipelines are built anew every epoch, seeded by (seed, rank, pipeline, epoch), so an
    epoch's clips, order and augmentations depend on the epoch number alone; a run stopped in
    the middle of epoch e resumes (``resume=state()``) by rebuilding epoch e's pipelines and
    replaying, without returning them, the batches it had handed out. (DALI 2.4 cannot
    checkpoint a graph with ``fn.decoders.video``: "Checkpointing is not implemented for this
    operator", measured; the reference loader skips without decoding.)"""

    def __init__(self, shards: ShardSet, split: str, mode: str, spec: ClipSpec, batch_size: int,
                 device: torch.device, rank: int, world_size: int, seed: int, workers: int | None,
                 num_clips: int, num_crops: int, flip_views: bool, shuffle_buffer: int, pipelines: int = 1,
                 resume: dict | None = None, cut: bool = True):
        self.shards, self.split, self.mode, self.spec = shards, split, mode, spec
        self.batch_size, self.device, self.seed = batch_size, device, seed
        self.rank, self.world_size, self.pipelines = rank, world_size, pipelines
        self.tars = shards.tars(split)  # paths or s3:// URLs: DALI's reader takes both
        self.gpu = device.type == "cuda"
        note_format(shards, check_nvdec_size(shards, split) if self.gpu else None)
        self.extra: dict = {"cut": cut}
        if mode == "train":
            self.extra["shuffle_buffer"] = shuffle_buffer
        if mode == "multiview":
            self.extra.update(num_clips=num_clips, num_crops=num_crops, flip=flip_views)
        self.threads = dali_threads(rank_cores(), local_world_size(), pipelines, batch_size, self.gpu, workers)
        self._held: deque[tuple[torch.cuda.Event, dict]] = deque()
        self.names = OUTPUTS[mode]
        self.samples = shards.count(split)
        self.epoch, self.given = (resume["epoch"], resume["batches"]) if resume else (0, 0)
        self._build(self.epoch)

    def _build(self, epoch: int) -> None:
        """The pipelines and iterators of `epoch` (train; eval pipelines are built once)."""
        # The previous epoch's pipelines hold native buffers (and the iterators reference them):
        # drop them before the new ones allocate, or host memory grows by each epoch's pipelines.
        self.iterators = self.pipes = None
        gc.collect()
        dali_backend.ReleaseUnusedMemory()  # DALI's pools keep freed blocks otherwise (DALI #4675)
        _trim_heap()
        first = self.rank * self.pipelines
        self.pipes = [PIPELINES[self.mode](
            files=self.tars, index_files=self.shards.indexes(self.split),
            video_ext=self.shards.video_ext, spec=self.spec, gpu=self.gpu, shard_id=first + k,
            num_shards=self.world_size * self.pipelines, batch_size=self.batch_size, num_threads=self.threads,
            device_id=(self.device.index or 0) if self.gpu else None,
            seed=self.seed + 7919 * (first + k) + 1_000_003 * epoch,
            # exec_dynamic (2.4's default, explicit here): outputs are fresh buffers that DALI
            # never reuses while a tensor refers to them (the plugin hands them out without a
            # copy for that reason), so CPU batches need no private copy.
            prefetch_queue_depth=2, exec_dynamic=True, **self.extra) for k in range(self.pipelines)]
        policy = LastBatchPolicy.DROP if self.mode == "train" else LastBatchPolicy.PARTIAL
        try:
            for pipe in self.pipes:
                pipe.build()
            self.iterators = [DALIGenericIterator([pipe], output_map=list(self.names), reader_name=READER,
                                                  auto_reset=True, last_batch_policy=policy) for pipe in self.pipes]
        except RuntimeError as e:
            raise self._diagnose(e) from e
        self.built_for = epoch

    def __len__(self) -> int:
        return batches_per_epoch(self.samples, self.mode, self.batch_size, self.rank, self.world_size,
                                 self.pipelines)

    def state(self) -> dict:
        """Where the train loader stands: the epoch under way (or next) and its batches handed
        out. A loader built with ``resume=`` this state goes on with the next batch."""
        return {"epoch": self.epoch, "batches": self.given}

    def __iter__(self):
        """Batches of the pipelines in turn; in train mode only the first ``len(self)`` (the
        count every rank shares), the rest drained so that each pipeline ends its epoch.
        Readers are padded to the largest reader's size, so a smaller one ends its eval epoch
        with an empty batch: skipped."""
        if self.mode == "train" and self.built_for != self.epoch:
            self._build(self.epoch)
        n = len(self) if self.mode == "train" else float("inf")
        replay, seen = self.given, 0
        active = [iter(it) for it in self.iterators]
        try:
            while active:
                for it in list(active):
                    try:
                        out = next(it)
                    except StopIteration:
                        active.remove(it)
                        continue
                    if seen < n and len(out[0]["label"]):
                        seen += 1
                        if seen > replay:  # batches a resumed epoch had handed out are dropped
                            self.given = seen
                            yield self._batch(out[0])
        except RuntimeError as e:
            raise self._diagnose(e) from e
        self.given = 0
        if self.mode == "train":
            self.epoch += 1

    def _batch(self, d: dict[str, torch.Tensor]) -> Batch:
        """Video cast (bf16 arrives as fp16) on the device, label copied, no host sync."""
        video = d["video"].to(self.device, self.spec.torch_dtype, non_blocking=True)
        label = d["label"].reshape(-1).to(torch.int64)  # a CPU output (DALI pins none: F10)
        if self.device.type == "cuda":
            # DALI frees GPU outputs in its own stream's order: a DALI-backed tensor handed to
            # the user could be reused under work still queued on torch's stream, so the batch
            # is torch's own memory (cast or copy), and the DALI output lives until that copy ran.
            video = video.clone() if video.data_ptr() == d["video"].data_ptr() else video
            label = label.pin_memory().to(self.device, non_blocking=True)  # a blocking copy syncs
            self._hold(d)
        metas = [decode_meta(m) for m in d["meta"].numpy()]
        info = {k: d[k].numpy().copy() for k in self.names[3:]}
        return Batch(video, label, [m["id"] for m in metas], info)

    def _hold(self, d: dict[str, torch.Tensor]) -> None:
        """Keeps DALI's output `d` until torch's stream has read it (an event after the copies),
        releasing older ones that are done; waits only when the GPU is HELD_BATCHES behind."""
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))  # the stream the copies went to
        self._held.append((event, d))
        while self._held and (len(self._held) > HELD_BATCHES or self._held[0][0].query()):
            self._held.popleft()[0].synchronize()

    def _diagnose(self, error: RuntimeError) -> Exception:
        """DALI stops the whole pipeline on one bad sample and names no sample: find it."""
        bad = locate_bad_sample(self.tars, self.shards.video_ext)
        if bad:
            return ShardError(f"{bad} (DALI: {str(error).splitlines()[0]})")
        return ShardError(f"{self.shards.root} split '{self.split}': DALI failed: {error}")


def locate_bad_sample(tars: list[str], video_ext: str) -> str | None:
    """The first unreadable shard or sample, as '<shard>: sample <key>: <reason>' (shards are
    paths or URLs, read through `vidact.storage`)."""
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
