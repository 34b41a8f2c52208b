"""The DALI loader: per pipeline, a reader pipeline (`pipelines.clips.reader_pipeline`), the plan
of each sample in Python (`vidact.data.feed`), and the pixels pipeline
(`pipelines.clips.clips_pipeline`) behind DALI's PyTorch plugin.

On a CUDA device the graph decodes with NVDEC (the GPU's JPEG decoder for JPEG frames) and the
batch arrives as CUDA tensors without a host round trip; on the CPU it runs on DALI's CPU backend.
"""

from __future__ import annotations

import ctypes
import logging
import time
import warnings
from collections import deque

import torch
from nvidia.dali import __version__ as dali_version
from nvidia.dali.plugin.base_iterator import LastBatchPolicy
from nvidia.dali.plugin.pytorch import DALIGenericIterator

from pipelines.clips import clips_pipeline, reader_pipeline
from vidact.clip.plan import Planner
from vidact.clip.spec import ClipSpec
from vidact.data.batch import (
    Batch,
    TooManyDamaged,
    bad_sample_limit,
    batches_per_epoch,
    count_damaged,
    reader_samples,
)
from vidact.data.feed import ClipFeed, EpochFeed, PlannedBatch
from vidact.data.guards import check_cpu_decodable, check_gpu_decodable, locate_bad_sample, note_format
from vidact.data.tuning import plan_loader
from vidact.shards import JPEG_EXT, ShardError, ShardSet, member_exts

log = logging.getLogger(__name__)

# GPU batches whose DALI outputs may still be read by queued torch work (see `DaliLoader._hold`).
HELD_BATCHES = 4

_NOTED: set[tuple] = set()  # what was said once per process


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
    every epoch's reader pipelines start new ones); a no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class DaliLoader:
    """`pipelines` DALI pipelines per process, each reading its own part of this rank's share.
    One pipeline already decodes the clips of a batch in parallel (NVDEC sessions on a GPU); more
    pipelines only overlap the per-batch barrier.

    Each pipeline is three steps: a reader pipeline (the webdataset reader, nothing decoded), the
    plan of each sample in Python (`vidact.data.feed`), and the pixels pipeline, built once. Train
    readers are built anew every epoch, seeded by (seed, rank, pipeline, epoch), and train draws
    are a function of (seed, epoch, clip id) (`vidact.clip.plan.draw`), so an epoch's clips, order
    and augmentations depend on the epoch number alone. A run stopped in the middle of epoch e
    resumes (``resume=state()``) by running epoch e's readers over the batches it had handed out:
    read, not decoded.
    """

    def __init__(self, shards: ShardSet, split: str, mode: str, spec: ClipSpec, batch_size: int,
                 device: torch.device, rank: int, world_size: int, seed: int, workers: int | None,
                 num_clips: int, num_crops: int, flip_views: bool, shuffle_buffer: int, pipelines: int | None = None,
                 resume: dict | None = None, cut: bool = True, dali_resize: bool | None = None,
                 max_bad_samples: int | None = None, mmap: bool = True):
        self.shards, self.split, self.mode, self.spec = shards, split, mode, spec
        self.batch_size, self.device, self.seed = batch_size, device, seed
        self.rank, self.world_size, self.cut, self.dali_resize = rank, world_size, cut, dali_resize
        self.shuffle_buffer = shuffle_buffer if mode == "train" else 0
        self.tars = shards.tars(split)  # paths or s3:// URLs: DALI's reader takes both
        self.gpu = device.type == "cuda"
        if self.gpu and dali_resize is False:
            raise ValueError("dali_resize=False: on a GPU the frames are on the device, resized by DALI's fn.resize")
        if not self.gpu:
            check_cpu_decodable(shards)
        note_format(shards, check_gpu_decodable(shards, split, device) if self.gpu else None)
        self.planner = Planner(spec, mode, num_clips, num_crops, flip_views, seed)
        self.video = shards.video_ext != JPEG_EXT
        self.samples = shards.count(split)
        self.skipped: list[str] = []  # damaged samples left out so far: '<shard>: sample <key>: <reason>'
        self.max_bad = bad_sample_limit(self.samples, max_bad_samples)
        plan = plan_loader(self.gpu, batch_size, self.samples // world_size, pipelines, workers)
        self.pipelines, self.threads = plan.pipelines, plan.threads
        if (mode, plan) not in _NOTED:
            _NOTED.add((mode, plan))
            log.info("DALI %s loader: %d pipeline%s x %d thread%s (%s)", mode, plan.pipelines,
                     "s" if plan.pipelines > 1 else "", plan.threads, "s" if plan.threads > 1 else "", plan.why)
        self._held: deque[tuple[torch.cuda.Event, dict]] = deque()
        self.first = rank * self.pipelines
        readers = world_size * self.pipelines
        self.sizes = [reader_samples(self.samples, self.first + k, readers) for k in range(self.pipelines)]
        self.exts = member_exts(shards.video_ext, cut, checksum=cut and shards.checksummed)
        self.feeds = [EpochFeed(self.exts) for _ in range(self.pipelines)]
        share = not (self.gpu if dali_resize is None else dali_resize)  # JPEG frames two clips share: decoded once
        self.clip_feeds = [ClipFeed(feed, self.planner, shards.video_ext, share) for feed in self.feeds]
        self.readers: list = [None] * self.pipelines
        self.pipes: list = [None] * self.pipelines
        self.iterators: list = [None] * self.pipelines
        self.active = [False] * self.pipelines
        self.epoch, self.given = (resume["epoch"], resume["batches"]) if resume else (0, 0)
        self.mmap = mmap
        self.reader_states: list[bytes | None] = [None] * self.pipelines  # after each pipeline's last batch
        self.restore = self._restorable(resume) if mode == "train" else None
        self.restored = self.restore is not None  # the resumed epoch's readers restored, not replayed
        self.started_for: int | None = None
        try:
            self.start_epoch(self.epoch)
        except RuntimeError as e:
            raise self._diagnose(e) from e

    def start_epoch(self, epoch: int) -> None:
        """Epoch `epoch`'s schedule (which pipeline gives each batch) and its readers, built anew
        (an eval reader too: padding the last batch, DALI pads every reader to the largest
        reader's share, so a smaller reader would start its next epoch with a batch of repeats),
        skipping the ``self.given`` batches already handed out (read, not decoded); the pixels
        pipelines are built on the first epoch and reset on the others. Iterating calls it for an
        epoch not yet started; a caller may start one ahead (the S3 benchmark times it)."""
        started = time.perf_counter()
        b = self.batch_size
        counts = [n // b if self.mode == "train" else -(-n // b) for n in self.sizes]
        self.schedule = round_robin(counts)[:len(self)]
        for k in range(self.pipelines):
            skip, left = self.schedule[:self.given].count(k), self.schedule[self.given:].count(k)
            self.active[k] = left > 0  # a reader with nothing left of this epoch (resumed near its end) rests
            if not left:
                continue
            checkpoint, self.reader_states[k] = (self.restore or [None] * self.pipelines)[k], None
            self.readers[k] = self._reader(k, epoch, 0 if checkpoint else skip, checkpoint)
            self.reader_states[k] = checkpoint
            self.feeds[k].start(self.readers[k], left, None if self.mode == "train" else self.sizes[k] % b or None)
            self.feeds[k].checkpoints = self.mode == "train"
            self.clip_feeds[k].epoch = epoch
            if self.pipes[k] is None:
                self._build_pixels(k)
            else:
                self.iterators[k].reset()  # prefetches from the new epoch's feed
        self.restore = None  # a checkpoint restores the epoch it was taken in, once
        _trim_heap()  # each epoch's reader pipelines start new threads: glibc keeps their arenas
        self.started_for = epoch
        self.build_seconds = time.perf_counter() - started
        (log.info if self.gpu else log.debug)("DALI %s pipelines for epoch %d started in %.2f s", self.mode, epoch + 1,
                                              self.build_seconds)

    def _reader(self, k: int, epoch: int, skip: int, checkpoint: bytes | None = None):
        """Reader pipeline `k` of `epoch` (train: seeded by the epoch, checkpointable), `skip`
        batches in, or where `checkpoint` (its ``checkpoint()`` after a batch) left it."""
        seed = self.seed + 7919 * (self.first + k) + 1_000_003 * epoch
        train = self.mode == "train"
        tars, indexes = self.shards.reader_share(self.split, self.first + k, self.world_size * self.pipelines)
        reader = reader_pipeline(files=tars, index_files=indexes, exts=self.exts,
                                 shuffle_buffer=self.shuffle_buffer, pad_last=not train, mmap=self.mmap,
                                 batch_size=self.batch_size, num_threads=1, device_id=None, seed=seed,
                                 prefetch_queue_depth=2, enable_checkpointing=train, checkpoint=checkpoint)
        reader.build()
        for _ in range(skip):
            reader.run()
        return reader

    def _build_pixels(self, k: int) -> None:
        """Pixels pipeline `k` and its iterator (the feed ends each epoch: no reader to size it)."""
        per_batch = self.batch_size * (1 if self.video else self.planner.num_clips * self.spec.frames_per_clip)
        self.pipes[k] = clips_pipeline(source=self.clip_feeds[k], spec=self.spec, video=self.video,
                                       views=self.planner.spatial, clips=self.planner.train_clips,
                                       gpu=self.gpu, dali_resize=self.dali_resize, batch_size=per_batch,
                                       num_threads=self.threads, device_id=self._device_id(), seed=self.seed,
                                       prefetch_queue_depth=2,
                                       # exec_dynamic (2.4's default, explicit here): outputs are fresh
                                       # buffers DALI never reuses while a tensor refers to them (the
                                       # plugin hands them out without a copy), so CPU batches need none.
                                       exec_dynamic=True)
        with warnings.catch_warnings():  # DALI's fn.resize leaves the JPEG feed's `source` unread
            warnings.filterwarnings("ignore", message="The external source node")
            self.pipes[k].build()
        with warnings.catch_warnings():  # no reader here: the feed ends each epoch
            warnings.simplefilter("ignore")
            self.iterators[k] = DALIGenericIterator([self.pipes[k]], output_map=["video", "serial"],
                                                    auto_reset=False, last_batch_policy=LastBatchPolicy.PARTIAL)

    def _device_id(self) -> int | None:
        """The GPU of this loader's device; an unindexed ``cuda`` is the current device."""
        if not self.gpu:
            return None
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def __len__(self) -> int:
        return batches_per_epoch(self.samples, self.mode, self.batch_size, self.rank, self.world_size,
                                 self.pipelines)

    def state(self) -> dict:
        """Where the loader stands: the epoch under way (or next) and its batches handed out, and
        each reader's checkpoint after its last batch handed out (with the DALI version and the
        pipeline count they need). A train loader built with ``resume=`` this state goes on with
        the next batch, its readers reading their shuffle buffers again, not the skipped batches."""
        return {"epoch": self.epoch, "batches": self.given, "readers": list(self.reader_states),
                "dali": dali_version, "pipelines": self.pipelines}

    def _restorable(self, resume: dict | None) -> list | None:
        """The readers' checkpoints of `resume`, when this DALI and pipeline count can restore them;
        else None (the readers replay the skipped batches), said in one line."""
        if not resume or not resume.get("batches") or resume.get("readers") is None:
            return None
        why = None
        if resume.get("dali") != dali_version:
            why = f"taken with DALI {resume.get('dali')}, this is {dali_version}"
        elif resume.get("pipelines") != self.pipelines or len(resume["readers"]) != self.pipelines:
            why = f"taken with {resume.get('pipelines')} DALI pipelines, this loader runs {self.pipelines}"
        if why:
            log.info("resuming epoch %d by reading its first %d batches again: the readers' checkpoints were %s",
                     resume["epoch"] + 1, resume["batches"], why)
            return None
        return list(resume["readers"])

    def __iter__(self):
        """One epoch's batches (an epoch left unfinished goes on where it stopped)."""
        try:
            if self.started_for != self.epoch:
                self.start_epoch(self.epoch)
            for k in self.schedule[self.given:]:
                out = next(self.iterators[k])[0]
                planned = self.clip_feeds[k].take(int(out["serial"][0]))
                self.given += 1
                self.reader_states[k] = planned.reader_state
                count_damaged(self.skipped, planned.skipped, self.max_bad, self.shards.root, self.split)
                if planned.ids:  # an eval batch of damaged samples only hands out nothing
                    yield self._batch(out, planned)
            for k, it in enumerate(self.iterators):  # each feed is out: its pipeline ends the epoch
                if self.active[k] and next(it, None) is not None:
                    raise RuntimeError(f"DALI pipeline {k} gave more batches than its reader's epoch")
        except (ShardError, TooManyDamaged):
            raise
        except RuntimeError as e:
            raise self._diagnose(e) from e
        self.given = 0
        self.epoch += 1

    def _batch(self, d: dict[str, torch.Tensor], planned: PlannedBatch) -> Batch:
        """The clips rebuilt from the graph's pixels, cast (bf16 arrives as fp16) on the device,
        no host sync."""
        video = planned.rebuild(d["video"]).to(self.device, self.spec.torch_dtype, non_blocking=True)
        label = torch.from_numpy(planned.label).to(torch.int64)
        if self.device.type == "cuda":
            # DALI frees GPU outputs in its own stream's order: a DALI-backed tensor handed to
            # the user could be reused under work still queued on torch's stream, so the batch
            # is torch's own memory (cast or copy), and the DALI output lives until that copy ran.
            video = video.clone() if video.data_ptr() == d["video"].data_ptr() else video
            label = label.pin_memory().to(self.device, non_blocking=True)  # a blocking copy syncs
            self._hold(d)
        return Batch(video, label, planned.ids, planned.info, [str(s) for s in planned.skipped])

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
