"""The DALI loader: `pipelines/clips.py` graphs (JPEG-frames train batches: `pipelines/frames.py`
and `vidact.data.frame_feed`) behind DALI's PyTorch plugin.

On a CUDA device the graph decodes with NVDEC and the batch arrives as CUDA tensors without a
host round trip; on the CPU it runs on DALI's CPU backend.
"""

from __future__ import annotations

import ctypes
import logging
import time
import warnings
from collections import deque

import numpy as np
import torch
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from pipelines.clips import OUTPUTS, PIPELINES, train_pipeline, train_reader_pipeline
from pipelines.decoding import READER
from pipelines.frames import JPEG_REGION_DECODE, train_frames_pipeline
from vidact import jpeg_frames, storage
from vidact.clip.spec import ClipSpec
from vidact.data.batch import Batch, batches_per_epoch, reader_samples
from vidact.data.frame_feed import FrameBatch, FrameFeed
from vidact.data.tuning import plan_loader
from vidact.shards import (
    FORMAT_VERSION,
    HW_EXT,
    INDEXED_EXTS,
    JPEG_EXT,
    META_EXT,
    NFRAMES_EXT,
    OFFSETS_EXT,
    ShardError,
    ShardSet,
    decode_meta,
    iter_tar_samples,
    read_int32,
    read_members,
)
from vidact.video_io import VideoError, count_frames

log = logging.getLogger(__name__)

# NVDEC's smallest frame per codec (cuvidGetDecoderCaps; DALI enforces the caps value when it
# opens a clip, so a smaller clip stops the pipeline mid-epoch). `make_shards --min-side` guards it.
NVDEC_MIN_SIDE = 128
NVDEC_MIN_SIDES = {"hevc": 144}
# What DALI 2.4's mixed video decoder opens (FramesDecoderGpu::SelectVideoStream; MJPEG is a
# TODO there, whatever its docstring says), and the chroma layout NVDEC decodes to.
NVDEC_CODECS = ("h264", "mpeg4", "vp8", "vp9", "hevc", "av1")
NVDEC_PIX_FMTS = ("yuv420p", "yuvj420p", None)
# GPU batches whose DALI outputs may still be read by queued torch work (see `DaliLoader._hold`).
HELD_BATCHES = 4


def clip_sizes(shards: ShardSet, split: str) -> list[tuple]:
    """(tar, key, height, width) of every sample of `split`, from the stored ``hw`` members."""
    return [(tar, key, *(int(v) for v in np.frombuffer(hw, dtype="<i4")[:2]))
            for tar, idx in zip(shards.tars(split), shards.indexes(split))
            for key, hw in read_members(tar, idx, HW_EXT)]


def check_nvdec_size(shards: ShardSet, split: str, min_side: int | None = None) -> list[tuple]:
    """Raises, naming the first clip of `split` with a side under NVDEC's minimum for the set's
    codec (or `min_side`), before a GPU pipeline starts; returns every clip's size (`clip_sizes`)."""
    min_side = min_side or NVDEC_MIN_SIDES.get(shards.codec, NVDEC_MIN_SIDE)
    sizes = clip_sizes(shards, split)
    for tar, key, h, w in sizes:
        if min(h, w) < min_side:
            raise ShardError(
                f"{tar}: sample {key}: {w}x{h} px, under the {min_side} px the GPU decoder (NVDEC) "
                f"takes for {shards.codec}; re-shard with tools/make_shards.py --min-side {min_side}, "
                f"or load on the CPU")
    return sizes


def check_gpu_decodable(shards: ShardSet, split: str) -> list[tuple]:
    """Before a GPU pipeline starts, refuses in one line what DALI 2.4's mixed decoder cannot
    take: a codec it does not open (MJPEG), chroma other than 4:2:0, clips under NVDEC's
    minimum (`check_nvdec_size`); returns every clip's size."""
    manifest = storage.join(shards.root, "manifest.json")
    if shards.video_ext == JPEG_EXT:  # the hardware JPEG decoder (or nvJPEG's CUDA path): any size
        return clip_sizes(shards, split)
    if shards.codec not in NVDEC_CODECS:
        raise ShardError(f"{manifest}: codec {shards.codec}: DALI 2.4's GPU decoder opens {', '.join(NVDEC_CODECS)} "
                         "only; re-shard with tools/make_shards.py --codec vp9, or load on the CPU (--device cpu)")
    pix_fmt = shards.manifest["encode"].get("pix_fmt")
    if pix_fmt not in NVDEC_PIX_FMTS:
        raise ShardError(f"{manifest}: chroma {pix_fmt}: NVDEC decodes 4:2:0 only; re-shard with "
                         "tools/make_shards.py (it writes yuv420p), or load on the CPU (--device cpu)")
    return check_nvdec_size(shards, split)


_NOTED: set[tuple] = set()  # what was said once per process


def note_format(shards: ShardSet, sizes: list[tuple] | None) -> None:
    """Says once per shard set what costs it carries: a set without cut tables (written before
    format 2) is decoded from frame 0; on a GPU, clips with sides off the 16-pixel grid make DALI
    2.4 create a hardware decoder per sample (its decoder cache misses on them): `sizes`, the
    split's clip sizes, are given on a GPU."""
    if shards.video_ext not in INDEXED_EXTS and (shards.root, "format") not in _NOTED:
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


class EpochFeed:
    """One reader pipeline's batches for one epoch, as a decode pipeline's external source takes
    them (a callable of no arguments): the reader's next batch until the epoch's count is out,
    then StopIteration, so the decode pipeline ends its epoch there instead of prefetching past
    it; `start` gives it the next epoch's reader."""

    def __init__(self) -> None:
        self.reader, self.left = None, 0

    def start(self, reader, batches: int) -> None:
        self.reader, self.left = reader, batches

    def __call__(self) -> tuple:
        if self.left <= 0:
            raise StopIteration
        self.left -= 1
        return self.reader.run()


def round_robin(sizes: list[int]) -> list[int]:
    """Which pipeline each batch of an epoch comes from: the pipelines in turn, each until its
    `sizes` batches are out (the order the loader has always handed them in)."""
    left, order = list(sizes), []
    while any(left):
        for k, n in enumerate(left):
            if n:
                order.append(k)
                left[k] -= 1
    return order


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
    epoch's clips, order and augmentations depend on the epoch number alone. Each is two: a
    reader-and-draws pipeline (`train_reader_pipeline`: the webdataset reader and every random
    number a clip uses, no decoding) feeding a decode-and-augment one (`train_pipeline`; JPEG
    frames: `train_frames_pipeline`, through a `FrameFeed` that plans each batch as frames) batch by
    batch. A run stopped in the middle of epoch e resumes (``resume=state()``) by rebuilding epoch
    e's pipelines and running only the readers over the batches it had handed out: measured on
    the demo set, its next batch comes after 5-6 % of the time the skipped 90 % of the epoch took,
    instead of 100 % when the skipped batches were decoded (DALI 2.4 cannot checkpoint a graph
    with ``fn.decoders.video``; a reader-and-draws graph replays exactly, so it needs no
    checkpoint string either).
    """

    def __init__(self, shards: ShardSet, split: str, mode: str, spec: ClipSpec, batch_size: int,
                 device: torch.device, rank: int, world_size: int, seed: int, workers: int | None,
                 num_clips: int, num_crops: int, flip_views: bool, shuffle_buffer: int, pipelines: int | None = None,
                 resume: dict | None = None, cut: bool = True):
        self.shards, self.split, self.mode, self.spec = shards, split, mode, spec
        self.batch_size, self.device, self.seed = batch_size, device, seed
        self.rank, self.world_size = rank, world_size
        self.tars = shards.tars(split)  # paths or s3:// URLs: DALI's reader takes both
        self.gpu = device.type == "cuda"
        note_format(shards, check_gpu_decodable(shards, split) if self.gpu else None)
        self.extra: dict = {"cut": cut}
        if mode == "train":
            self.extra["shuffle_buffer"] = shuffle_buffer
        if mode == "multiview":
            self.extra.update(num_clips=num_clips, num_crops=num_crops, flip=flip_views)
        self.samples = shards.count(split)
        plan = plan_loader(self.gpu, batch_size, self.samples // world_size, pipelines, workers)
        self.pipelines, self.threads = plan.pipelines, plan.threads
        if (mode, plan) not in _NOTED:
            _NOTED.add((mode, plan))
            log.info("DALI %s loader: %d pipeline%s x %d thread%s (%s)", mode, plan.pipelines,
                     "s" if plan.pipelines > 1 else "", plan.threads, "s" if plan.threads > 1 else "", plan.why)
        self._held: deque[tuple[torch.cuda.Event, dict]] = deque()
        self.names = OUTPUTS[mode]
        # JPEG-frames train clips come from a graph over their frames (`pipelines.frames`).
        self.frames = mode == "train" and shards.video_ext == JPEG_EXT
        self._train_outputs = ("video", "serial") if self.frames else self.names
        self.epoch, self.given = (resume["epoch"], resume["batches"]) if resume else (0, 0)
        self.pipes: list | None = None
        self.iterators: list | None = None
        self._build(self.epoch)

    def _build(self, epoch: int) -> None:
        """The pipelines and iterators of `epoch`: eval pipelines are built once; train decode
        pipelines too, and each epoch only new reader pipelines are built and fed to them. A train
        epoch resumed after ``self.given`` batches skips them in its readers, which decode nothing."""
        started = time.perf_counter()
        kw = dict(files=self.tars, index_files=self.shards.indexes(self.split), video_ext=self.shards.video_ext,
                  spec=self.spec, batch_size=self.batch_size, num_threads=self.threads, prefetch_queue_depth=2,
                  # exec_dynamic (2.4's default, explicit here): outputs are fresh buffers that DALI
                  # never reuses while a tensor refers to them (the plugin hands them out without a
                  # copy for that reason), so CPU batches need no private copy.
                  exec_dynamic=True, num_shards=self.world_size * self.pipelines, **self.extra)
        first = self.rank * self.pipelines
        seeds = [self.seed + 7919 * (first + k) + 1_000_003 * epoch for k in range(self.pipelines)]
        try:
            if self.mode == "train":
                self._build_train(kw, first, seeds)
                _trim_heap()  # each epoch's reader pipelines start new threads: glibc keeps their arenas
            else:
                self.pipes = [PIPELINES[self.mode](shard_id=first + k, gpu=self.gpu, device_id=self._device_id(),
                                                   seed=seeds[k], **kw) for k in range(self.pipelines)]
                for pipe in self.pipes:
                    pipe.build()
                self.iterators = [DALIGenericIterator([pipe], output_map=list(self.names), reader_name=READER,
                                                      auto_reset=True, last_batch_policy=LastBatchPolicy.PARTIAL)
                                  for pipe in self.pipes]
        except RuntimeError as e:
            raise self._diagnose(e) from e
        self.built_for = epoch
        self.build_seconds = time.perf_counter() - started
        (log.info if self.gpu else log.debug)("DALI %s pipelines for epoch %d built in %.2f s", self.mode, epoch + 1,
                                              self.build_seconds)

    def _build_train(self, kw: dict, first: int, seeds: list[int]) -> None:
        """Per pipeline, this epoch's reader-and-draws pipeline (its batches already given
        skipped: no decoding), fed batch by batch to the decode-and-augment pipeline, which is
        built once and reset each epoch (defining and starting one costs ~0.3 s of CPU, a
        noticeable share of a small epoch); and the order the pipelines' batches come in."""
        cut = kw.pop("cut")
        readers_total = self.world_size * self.pipelines
        sizes = [reader_samples(self.samples, first + k, readers_total) // self.batch_size
                 for k in range(self.pipelines)]
        self.schedule = round_robin(sizes)[:len(self)]
        skip = [self.schedule[:self.given].count(k) for k in range(self.pipelines)]
        left = [self.schedule[self.given:].count(k) for k in range(self.pipelines)]  # all ranks step together
        if self.pipes is None:
            self.pipes, self.iterators = [None] * self.pipelines, [None] * self.pipelines
            self.feeds = [EpochFeed() for _ in range(self.pipelines)]
            self.frame_feeds = [FrameFeed(feed, self.spec, JPEG_REGION_DECODE) if self.frames else None
                                for feed in self.feeds]
        for k in range(self.pipelines):
            if not left[k]:  # nothing left of this reader's epoch (resumed near its end)
                self.feeds[k].start(None, 0)
                continue
            reader = train_reader_pipeline(shard_id=first + k, seed=seeds[k], device_id=None, cut=cut, **kw)
            reader.build()
            for _ in range(skip[k]):
                reader.run()
            self.feeds[k].start(reader, left[k])
            if self.pipes[k] is not None:
                self.iterators[k].reset()  # prefetches from the new reader
                continue
            run = dict(gpu=self.gpu, num_threads=self.threads, device_id=self._device_id(), prefetch_queue_depth=2,
                       exec_dynamic=True)
            if self.frames:
                self.pipes[k] = train_frames_pipeline(source=self.frame_feeds[k], spec=self.spec,
                                                      region=JPEG_REGION_DECODE,
                                                      batch_size=self.batch_size * self.spec.frames_per_clip, **run)
            else:
                self.pipes[k] = train_pipeline(source=self.feeds[k], spec=self.spec, video_ext=self.shards.video_ext,
                                               cut=cut, batch_size=self.batch_size, **run)
            self.pipes[k].build()
            with warnings.catch_warnings():  # no reader here: the feed ends each epoch
                warnings.simplefilter("ignore")
                self.iterators[k] = DALIGenericIterator([self.pipes[k]], output_map=list(self._train_outputs),
                                                        auto_reset=False, last_batch_policy=LastBatchPolicy.DROP)

    def _device_id(self) -> int | None:
        """The GPU of this loader's device; an unindexed ``cuda`` is the current device."""
        if not self.gpu:
            return None
        return self.device.index if self.device.index is not None else torch.cuda.current_device()


    def __len__(self) -> int:
        return batches_per_epoch(self.samples, self.mode, self.batch_size, self.rank, self.world_size,
                                 self.pipelines)

    def state(self) -> dict:
        """Where the train loader stands: the epoch under way (or next) and its batches handed
        out. A loader built with ``resume=`` this state goes on with the next batch."""
        return {"epoch": self.epoch, "batches": self.given}

    def __iter__(self):
        if self.mode != "train":
            yield from self._eval_batches()
            return
        if self.built_for != self.epoch:
            self._build(self.epoch)
        try:
            for k in self.schedule[self.given:]:  # the first `given` were skipped by the readers
                out = next(self.iterators[k])[0]
                plan = self.frame_feeds[k].take(int(out["serial"][0])) if self.frames else None
                self.given += 1
                yield self._batch(out, plan)
            for k, it in enumerate(self.iterators):  # each feed is out: its pipeline ends the epoch
                if it is not None and self.feeds[k].reader is not None and next(it, None) is not None:
                    raise RuntimeError(f"DALI pipeline {k} gave more batches than its reader's epoch")
        except RuntimeError as e:
            raise self._diagnose(e) from e
        self.given = 0
        self.epoch += 1

    def _eval_batches(self):
        """Batches of the pipelines in turn, until every one has ended its epoch. Readers are
        padded to the largest reader's size, so a smaller one ends its epoch with an empty
        batch: skipped."""
        active = [iter(it) for it in self.iterators]
        try:
            while active:
                for it in list(active):
                    try:
                        out = next(it)
                    except StopIteration:
                        active.remove(it)
                        continue
                    if len(out[0]["label"]):
                        yield self._batch(out[0])
        except RuntimeError as e:
            raise self._diagnose(e) from e

    def _batch(self, d: dict[str, torch.Tensor], plan: FrameBatch | None = None) -> Batch:
        """Video cast (bf16 arrives as fp16) on the device, label copied, no host sync. `plan`:
        the clips of a batch of JPEG frames (`vidact.data.frame_feed`), rebuilt from them."""
        if plan is not None:
            video, label, ids, info = plan.clips(d["video"]), torch.from_numpy(plan.label), plan.ids, plan.info
        else:
            video, label = d["video"], d["label"].reshape(-1)  # a CPU output (DALI pins none: F10)
            ids = [decode_meta(m)["id"] for m in d["meta"].numpy()]
            info = {k: d[k].numpy().copy() for k in self.names[3:]}
        video = video.to(self.device, self.spec.torch_dtype, non_blocking=True)
        label = label.to(torch.int64)
        if self.device.type == "cuda":
            # DALI frees GPU outputs in its own stream's order: a DALI-backed tensor handed to
            # the user could be reused under work still queued on torch's stream, so the batch
            # is torch's own memory (cast or copy), and the DALI output lives until that copy ran.
            video = video.clone() if video.data_ptr() == d["video"].data_ptr() else video
            label = label.pin_memory().to(self.device, non_blocking=True)  # a blocking copy syncs
            self._hold(d)
        return Batch(video, label, ids, info)

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


def jpeg_clip_frames(sample: dict[str, bytes]) -> int:
    """The frames of a JPEG-frames sample that decode, in order, up to the first that does not."""
    data, table = sample[JPEG_EXT], sample.get(OFFSETS_EXT)
    if table is None:
        raise jpeg_frames.FramesError(f"member .{OFFSETS_EXT} missing")
    offsets = jpeg_frames.offsets_of(table)
    n = jpeg_frames.frame_count(data, offsets)
    for i in range(n):
        try:
            jpeg_frames.decode_one(data[offsets[i]:offsets[i + 1]])
        except jpeg_frames.FramesError as e:
            raise jpeg_frames.FramesError(f"frame {i}: {e}") from e
    return n


def _sample_problem(sample: dict[str, bytes], video_ext: str) -> str | None:
    for ext in (video_ext, META_EXT, NFRAMES_EXT):
        if ext not in sample:
            return f"member .{ext} missing"
    try:
        n = count_frames(sample[video_ext]) if video_ext != JPEG_EXT else jpeg_clip_frames(sample)
    except (VideoError, jpeg_frames.FramesError) as e:
        return f"video undecodable: {e}"
    claimed = read_int32(sample[NFRAMES_EXT])
    if n < claimed:
        return f"video decodes to {n} frames, the shard says {claimed} (truncated?)"
    try:
        decode_meta(np.frombuffer(sample[META_EXT], dtype=np.uint8))
    except ValueError as e:
        return f"unreadable json record ({e})"
    return None
