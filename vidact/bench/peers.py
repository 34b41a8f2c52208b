"""Peer loaders: what a practitioner runs today on the source files, before any repacking.

Each peer reads the original videos that the shard set was made from (each sample's json
``source``; ``--sources DIR`` overrides their folder) or an H.264 copy of them at the sweep's
short side, picks the T frames of `vidact.clip.sampling.frame_indices`, applies the reference
loader's train or eval transform and batches ``(B, T, 3, size, size)`` in a torch `DataLoader`:

* ``pyav``: PyAV, seeking to the keyframe before the first wanted frame, ``rgb24`` frames;
* ``decord``: ``VideoReader(path, num_threads=1).get_batch(indices)`` (the VideoMAE recipe's call);
* ``torchcodec``: ``VideoDecoder(path).get_frames_at(indices)`` (needs the system FFmpeg).

A peer whose library does not import is a ``skipped`` row naming the reason. The one-time cost
of repacking is timed here too: `vidact.video_io.transcode` (make_shards' work per clip) of the
peers' files to the shard codec, with all cores.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from vidact.bench.machine import tree_cpu_seconds
from vidact.bench.sources import Source, _digest, split_samples
from vidact.bench.timing import sig
from vidact.clip.plan import Planner, SampleTables
from vidact.clip.spec import ClipSpec
from vidact.data.reference import collect_before_fork, render
from vidact.files import atomic_write_text
from vidact.shards import META_EXT, ShardSet, decode_meta
from vidact.video_io import EncodeSettings, encode_frames, iter_frames, transcode

log = logging.getLogger("vidact.bench")

PEERS = ("pyav", "decord", "torchcodec")
# What a user's H.264 files look like: x264's default keyframe interval (one keyframe per clip
# here), veryfast, no B-frames (vidact's h264 encoder settings).
H264_GOP = 250
COPIES_MARKER = "clips.json"


@dataclass(frozen=True)
class PeerClip:
    """One source video a peer reads: its path and the frame count the shard recorded."""

    path: str
    num_frames: int
    fps: float
    label: int
    id: str


@dataclass(frozen=True)
class PeerSource:
    """The files the peers read for one shard set of the sweep."""

    resolution: str
    codec: str  # of the files: mpeg4 (the synthetic originals), h264 (the copies), ...
    short_side: int
    clips: tuple[PeerClip, ...]
    build_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        path = os.path.commonpath([c.path for c in self.clips]) if self.clips else None
        return {"resolution": self.resolution, "codec": self.codec, "short_side": self.short_side,
                "clips": len(self.clips), "path": path, "build_s": self.build_s}


# --------------------------------------------------------------------------- the files peers read

def source_path(meta: dict, root: str | None, sources: Path | None) -> Path:
    """The sample's original file; with `sources`, the same path relative to the shard set's
    source folder (`root`), looked up under `sources` instead."""
    path = Path(str(meta.get("source") or ""))
    if sources is None:
        return path
    try:
        return sources / path.relative_to(root or "/")
    except ValueError:
        return sources / path.name


def original_clips(shards: ShardSet, split: str, sources: Path | None, limit: int | None = None) -> list[PeerClip]:
    """The split's original files in shard order (the first `limit`); raises if one is missing."""
    root = shards.manifest.get("source")
    out = []
    for _, members in split_samples(shards, split, (META_EXT,)):
        meta = decode_meta(members[META_EXT])
        path = source_path(meta, root, sources)
        if not path.is_file():
            raise FileNotFoundError(f"source file of sample {meta.get('id')} not found: {path} (use --sources DIR)")
        out.append(PeerClip(str(path), int(meta["num_frames"]), float(meta["fps"]), int(meta["label_id"]),
                            str(meta["id"])))
        if limit and len(out) >= limit:
            break
    return out


def probe(path: str) -> tuple[str, int]:
    """(codec name, short side) of a video file's first stream."""
    with av.open(path) as c:
        s = c.streams.video[0]
        return s.codec_context.name, min(s.codec_context.width, s.codec_context.height)


def _h264_copy(job: tuple[PeerClip, str, int]) -> PeerClip:
    clip, out, short = job
    data, n, _, _ = encode_frames(iter_frames(Path(clip.path)), Fraction(clip.fps).limit_denominator(1001),
                                  EncodeSettings(codec="h264", gop=H264_GOP, short_side=short))
    if n != clip.num_frames:
        raise RuntimeError(f"{clip.path}: H.264 copy has {n} frames, the shard says {clip.num_frames}")
    Path(out).write_bytes(data)
    return PeerClip(out, n, clip.fps, clip.label, clip.id)


def h264_copies(clips: list[PeerClip], short: int, work: Path, workers: int) -> tuple[list[PeerClip], float | None]:
    """H.264 copies of `clips` at short side `short` (cached in `work`); (clips, build seconds or
    None when cached)."""
    params = {"clips": [(c.path, Path(c.path).stat().st_size, c.num_frames) for c in clips], "short_side": short,
              "gop": H264_GOP, "codec": "h264"}
    out = work / f"peers-h264-{len(clips)}clips-{short}p-{_digest(params)}"
    marker = out / COPIES_MARKER
    if marker.is_file():
        log.info("%dp: cached H.264 copies %s", short, out)
        return [PeerClip(**c) for c in json.loads(marker.read_text())], None
    log.info("%dp: writing H.264 copies of %d clips to %s", short, len(clips), out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(c, str(out / f"{c.id}.mp4"), short) for c in clips]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(max(1, workers), initializer=gc.freeze) as pool:
        made = pool.map(_h264_copy, jobs)
    build_s = sig(time.perf_counter() - started)
    atomic_write_text(marker, json.dumps([asdict(c) for c in made]) + "\n")
    return made, build_s


def peer_source(bench: Any, base: ShardSet, src: Source) -> PeerSource:
    """The files the peers read for `src`: the originals for ``native``, else H.264 copies of the
    first ``--sweep-clips`` originals (the clips `src` was re-encoded from) at its short side."""
    a = bench.args
    if src.resolution == "native":
        clips = original_clips(ShardSet.open(src.path), src.split, a.sources)
        codec, short = probe(clips[0].path)
        return PeerSource("native", codec, short, tuple(clips))
    originals = original_clips(base, a.split, a.sources, a.sweep_clips)
    clips, build_s = h264_copies(originals, src.short_side, a.work, bench.cores)
    return PeerSource(src.resolution, "h264", probe(clips[0].path)[1], tuple(clips), build_s)


# --------------------------------------------------------------------------- decoders

def pyav_frames(path: str, idx: np.ndarray, fps: float) -> np.ndarray:
    """PyAV as users call it: seek to the keyframe before the first wanted frame (its time at
    `fps`), frames named by timestamp, ``rgb24``. A clip whose timestamps are not its first one's
    plus index / fps (a variable frame rate: phone videos, some AVIs) is decoded from its start,
    its frames counted, as decord and torchcodec index them."""
    start = _constant_rate_start(path, fps)
    got = _pyav_by_time(path, idx, fps, start) if start is not None else None
    if got is None:
        got = _pyav_by_count(path, idx)
    return np.stack([got[i] for i in idx.tolist()])


@functools.lru_cache(maxsize=4096)
def _constant_rate_start(path: str, fps: float) -> int | None:
    """The first frame's timestamp where every frame's is that plus index / `fps`, else None.
    From the packets (no decoding), once per file and process, as a user's index of a set would."""
    with av.open(path) as c:
        stream = c.streams.video[0]
        tb = float(stream.time_base)
        pts = [p.pts for p in c.demux(stream) if p.size]  # the flush packet is empty
    if not pts or any(p is None for p in pts):
        return None
    pts.sort()  # decode order: B-frames come before the frames they follow
    return pts[0] if all(round((p - pts[0]) * tb * fps) == i for i, p in enumerate(pts)) else None


def _pyav_by_time(path: str, idx: np.ndarray, fps: float, start: int) -> dict[int, np.ndarray] | None:
    """The wanted frames by timestamp (`start` that of frame 0), after a seek to the keyframe
    before the first (again from earlier where a container's seek lands past it, MPEG-TS); None
    where a frame's timestamp is not the next index."""
    wanted, first, last = set(idx.tolist()), int(idx.min()), int(idx.max())
    with av.open(path) as c:
        stream = c.streams.video[0]
        tb = float(stream.time_base)
        for target in sorted({first, first // 2, 0}, reverse=True):
            c.seek(start + int(target / fps / tb), stream=stream, backward=True, any_frame=False)
            got: dict[int, np.ndarray] = {}
            before = None
            for frame in c.decode(stream):
                i = None if frame.pts is None else round((frame.pts - start) * tb * fps)
                if i is None or (before is not None and i != before + 1):
                    return None
                if before is None and i > first:
                    break  # landed past the first wanted frame: seek earlier
                if i in wanted:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    return got if len(got) == len(wanted) else None
                before = i
    return None


def _pyav_by_count(path: str, idx: np.ndarray) -> dict[int, np.ndarray]:
    """The wanted frames, counted in decode order from the start."""
    wanted, last = set(idx.tolist()), int(idx.max())
    got: dict[int, np.ndarray] = {}
    with av.open(path) as c:
        for i, frame in enumerate(c.decode(c.streams.video[0])):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    missing = sorted(wanted - got.keys())
    if missing:
        raise ValueError(f"{path}: frames {missing[:5]} requested, the clip decodes to fewer")
    return got


def decord_frames(path: str, idx: np.ndarray, fps: float) -> np.ndarray:
    import decord  # optional peer: only this row needs it

    return decord.VideoReader(path, num_threads=1).get_batch(idx.tolist()).asnumpy()


def torchcodec_frames(path: str, idx: np.ndarray, fps: float) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder  # optional peer: only this row needs it

    return VideoDecoder(path, dimension_order="NHWC").get_frames_at(idx.tolist()).data.numpy()


DECODERS: dict[str, Callable[[str, np.ndarray, float], np.ndarray]] = {
    "pyav": pyav_frames, "decord": decord_frames, "torchcodec": torchcodec_frames}


# What to do when a peer cannot run.
PEER_FIX = {"pyav": "pip install av", "decord": "pip install -e '.[bench]'",
            "torchcodec": "install the system FFmpeg libraries torchcodec loads (apt-get install ffmpeg; make "
                          "test does), and pip install -e '.[bench]'"}


def unavailable(peer: str, clip: PeerClip | None = None) -> str | None:
    """Why `peer` cannot run here, or None: its import fails, or decoding the first frame of
    `clip` in this process does (torchcodec imports without the system FFmpeg libraries and fails
    only when it decodes, which in a DataLoader worker would fail the row instead of skipping it)."""
    module = {"pyav": "av", "decord": "decord", "torchcodec": "torchcodec.decoders"}[peer]
    what = "does not import"
    try:
        __import__(module)
        if clip is not None:
            what = f"cannot decode {clip.path}"
            DECODERS[peer](clip.path, np.array([0]), clip.fps)
    except Exception as e:  # noqa: BLE001 - a broken wheel raises OSError/RuntimeError, not only ImportError
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"{module} {what} ({e.__class__.__name__}: {first}); {PEER_FIX[peer]}"
    return None


def peer_version(peer: str) -> str | None:
    try:
        module = __import__({"pyav": "av", "decord": "decord", "torchcodec": "torchcodec"}[peer])
        return str(module.__version__)
    except Exception:  # noqa: BLE001 - versions are informative
        return None


class PeerDataset(torch.utils.data.Dataset):
    """Map-style dataset of `clips` decoded by one peer, the reference loader's transform."""

    def __init__(self, clips: tuple[PeerClip, ...], peer: str, mode: str, spec: ClipSpec, seed: int):
        self.clips, self.decode, self.mode, self.spec, self.seed = clips, DECODERS[peer], mode, spec, seed
        self.calls = 0

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Clip `i` as the reference loader makes it (`render` of its plan), the frames decoded by
        the peer from the source file (whose size the plan learns from the frames)."""
        clip = self.clips[i]
        self.calls += 1
        planner = Planner(self.spec, self.mode, seed=self.seed)
        idx = planner(SampleTables(clip.num_frames, 1, 1), clip.id, self.calls).frames[0]
        frames = self.decode(clip.path, idx, clip.fps)
        plan = planner(SampleTables(clip.num_frames, *frames.shape[1:3]), clip.id, self.calls)
        return render(frames[np.unique(idx, return_index=True)[1]], plan, self.spec), clip.label


def peer_loader(src: PeerSource, peer: str, mode: str, spec: ClipSpec, batch: int, workers: int,
                seed: int) -> torch.utils.data.DataLoader:
    """The DataLoader a practitioner writes: shuffled in train, persistent workers."""
    collect_before_fork(workers)  # the bench's DALI pipelines must not be collected in a worker
    return torch.utils.data.DataLoader(
        PeerDataset(src.clips, peer, mode, spec, seed), batch_size=batch, shuffle=mode == "train",
        drop_last=mode == "train", num_workers=workers, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- repacking cost

def _repack(job: tuple[str, EncodeSettings]) -> int:
    return transcode(Path(job[0]), job[1]).num_frames


def repack_rate(clips: tuple[PeerClip, ...], shards: ShardSet, short_side: int | None, workers: int,
                limit: int) -> dict[str, Any]:
    """clips/s of make_shards' per-clip work (decode, re-encode to the shard codec, check) on the
    first `limit` peer files, `workers` processes."""
    enc = shards.manifest["encode"]
    settings = EncodeSettings(codec=enc["codec"], gop=int(enc["gop"]), quality=enc.get("quality"),
                              short_side=short_side)
    jobs = [(c.path, settings) for c in clips[:limit]]
    cpu, started = tree_cpu_seconds(), time.perf_counter()
    with multiprocessing.get_context("fork").Pool(max(1, min(workers, len(jobs))), initializer=gc.freeze) as pool:
        pool.map(_repack, jobs, chunksize=1)
    secs = time.perf_counter() - started
    cpu = tree_cpu_seconds() - cpu
    return {"repack_clips": len(jobs), "repack_s": sig(secs), "repack_clips_per_s": sig(len(jobs) / secs),
            "repack_cpu_ms_per_clip": sig(1000 * cpu / len(jobs)), "repack_workers": workers,
            "repack_codec": settings.codec}
