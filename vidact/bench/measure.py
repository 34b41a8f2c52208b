"""One configuration of the sweep, the collector of rows, and the rows that time loaders:
loader only (every loader variant) and the breakdown (decoders, graphs, transforms, a copy)."""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vidact import storage
from vidact.bench.sources import Source, split_samples
from vidact.bench.stages import STAGES, build_stage
from vidact.bench.timing import (
    batch_stream,
    cpu_ratios,
    paired_passes,
    rate_figures,
    sig,
    synchronizer,
    timed_passes,
    torch_threads,
)
from vidact.clip.sampling import frame_indices
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.data.batch import decode_cost
from vidact.data.guards import check_gpu_decodable
from vidact.jpeg_frames import decode_frames
from vidact.shards import (
    CPU_DECODABLE_CODECS,
    IVF_EXT,
    JPEG_EXT,
    META_EXT,
    OFFSETS_EXT,
    ShardError,
    ShardSet,
    decode_meta,
)
from vidact.video_io import decode_rgb

log = logging.getLogger("vidact.bench")

# ``--dali-pipelines 0`` (the default): the DALI loader's own plan for the machine
# (`vidact.data.tuning.plan_loader`), what a training run gets when the user sets nothing.
AUTO_PIPELINES = 0


def loader_pipelines(pipelines: int | None) -> int | None:
    """`build_loader`'s ``dali_pipelines`` for a ``--dali-pipelines`` value (None: its own plan)."""
    return pipelines or None


def loader_plan(loader: Any) -> dict[str, int]:
    """The pipelines and threads a DALI loader runs (its plan when the bench left them to it)."""
    return {"pipelines": loader.pipelines, "threads": loader.threads} if hasattr(loader, "pipelines") else {}


@dataclass
class Config:
    source: Source
    frames: int
    size: int
    batch: int
    spec: ClipSpec

    def row(self) -> dict[str, Any]:
        return {"resolution": self.source.resolution, "short_side": self.source.short_side,
                "frames": self.frames, "size": self.size, "batch": self.batch, "dtype": self.spec.dtype}

    def __str__(self) -> str:
        return f"{self.source.label} T={self.frames} size={self.size} B={self.batch}"


@dataclass
class Bench:
    """The settings and device of a run; collects its rows, notes and failures."""

    args: argparse.Namespace
    device: torch.device
    cores: int
    loader_rows: list[dict] = field(default_factory=list)
    e2e_rows: list[dict] = field(default_factory=list)
    breakdown_rows: list[dict] = field(default_factory=list)
    peer_rows: list[dict] = field(default_factory=list)
    repack_rows: list[dict] = field(default_factory=list)
    decode_rows: list[dict] = field(default_factory=list)
    soak_rows: list[dict] = field(default_factory=list)
    peer_sources: dict[str, Any] = field(default_factory=dict)  # resolution -> PeerSource or why not
    repack_cache: dict[str, dict] = field(default_factory=dict)  # resolution -> repack timing
    notes: list[str] = field(default_factory=list)
    failed: int = 0

    def note(self, text: str) -> None:
        if text not in self.notes:
            log.warning("%s", text)
            self.notes.append(text)

    def guarded(self, what: str, fn: Callable[[], dict], base: dict) -> dict:
        """`fn()`'s row, or `base` with ``error`` (figures null) if it raised."""
        try:
            row = {**base, **fn()}
        except Exception as e:  # noqa: BLE001 - one failing variant must not end the sweep
            self.failed += 1
            msg = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.error("%s failed: %s", what, msg)
            row = {**base, "error": msg}
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        gc.collect()
        return row

    def consumer_threads(self) -> int:
        """torch threads of the process consuming a loader's batches in the loader-only rows: on a
        CPU, the cores the DALI threads leave (as `vidact.engine.share_cpu_threads` gives training);
        with all cores, torch's threads spin against DALI's and the batch copy costs 2-3x more."""
        if self.device.type != "cpu":
            return torch.get_num_threads()
        return max(1, self.cores - self.args.dali_threads)

    def dali_gpu_ok(self, src: Source) -> bool:
        """Whether DALI's GPU rows can run on `src`: its codec, chroma and sizes pass the loader's
        start-up guard; otherwise a note says why they are skipped (e.g. a CPU-sized test set)."""
        try:
            check_gpu_decodable(ShardSet.open(str(src.path)), src.split)
        except ShardError as e:
            self.note(f"DALI GPU rows skipped: {e}")
            return False
        return True

    def dali_cpu_ok(self, src: Source) -> bool:
        if src.codec in CPU_DECODABLE_CODECS:
            return True
        self.note(f"{src.path}: codec {src.codec} has no DALI CPU decoder (CPU: {', '.join(CPU_DECODABLE_CODECS)}); "
                  "DALI CPU rows skipped")
        return False


# --------------------------------------------------------------------------- loader only

Variant = tuple[str, str, int, int | None, bool]


def loader_variants(bench: Bench, src: Source) -> list[Variant]:
    """(loader, device, workers, DALI pipelines, cut) of every loader-only row. A set whose clips
    can be cut (IVF, format 2) gets its DALI rows twice: cut, and decoded from frame 0 beside it;
    a JPEG-frames set once (each frame its own JPEG: nothing to cut)."""
    a = bench.args
    video_ext = ShardSet.open(str(src.path)).video_ext
    cuts = (True, False) if video_ext == IVF_EXT else (True,) if video_ext == JPEG_EXT else (False,)
    out: list[Variant] = []
    if bench.device.type == "cuda" and bench.dali_gpu_ok(src):
        out += [("dali", "cuda", a.dali_threads, p, c) for p in a.dali_pipelines for c in cuts]
    if bench.dali_cpu_ok(src):
        out += [("dali", "cpu", a.dali_threads, p, c) for p in a.dali_pipelines for c in cuts]
    out += [("torch", bench.device.type, w, None, False) for w in a.workers]
    return out


class LoaderRun:
    """One loader under measurement: its endless batch stream, the shape of its first batch and
    the frames it decoded and kept (`decode_cost`) over every batch taken."""

    def __init__(self, bench: Bench, cfg: Config, kind: str, device: str, workers: int, mode: str,
                 pipelines: int | None = None, shards: str | None = None, cut: bool = True, clips: int = 1):
        self.loader = build_loader(shards or cfg.source.path, cfg.source.split, loader=kind, mode=mode, spec=cfg.spec,
                                   batch_size=cfg.batch, device=device, seed=bench.args.seed, workers=workers,
                                   dali_pipelines=loader_pipelines(pipelines), cut=cut, num_clips=clips)
        self.plan = loader_plan(self.loader)
        self.stream = batch_stream(self.loader)
        self.frames, self.shape = cfg.frames, []
        self.cost = np.zeros(2, np.int64)  # frames decoded, frames kept

    def step(self) -> int:
        batch = next(self.stream)
        if not self.shape:
            self.shape.extend(batch[0].shape)
        self.cost[:] += decode_cost(batch.info)
        return int(batch[0].shape[0])

    def figures(self, passes: list[tuple[int, float, float]], batches: int) -> dict:
        decoded, kept = self.cost
        return {"shape": self.shape, **self.plan, **rate_figures(passes, self.frames, batches),
                "decoded_per_kept": sig(decoded / kept) if kept else None,
                "decoded_per_clip": sig(decoded / kept * self.frames) if kept else None}

    def close(self) -> None:
        self.stream.close()
        del self.loader


def measure_loader(bench: Bench, cfg: Config, kind: str, device: str, workers: int, mode: str,
                   pipelines: int | None = None, shards: str | None = None, cut: bool = True, clips: int = 1) -> dict:
    """clips/s of one loader (reading `shards`, default the config's source), and the shape of
    its first batch; `cut` off: DALI decodes each clip from frame 0; `clips`: train clips per
    video read (``--clips-per-video``)."""
    a = bench.args
    run = LoaderRun(bench, cfg, kind, device, workers, mode, pipelines, shards, cut, clips)
    try:
        with torch_threads(bench.consumer_threads()):
            passes = timed_passes(run.step, a.batches, a.repeats, a.warmup, synchronizer(torch.device(device)))
        return run.figures(passes, a.batches)
    finally:
        run.close()


def measure_paired(bench: Bench, cfg: Config, variant: Variant, ks: list[int]) -> list[dict]:
    """One loader variant at each of `ks` clips per video, their passes taken in turns
    (`paired_passes`): each K's figures and, when `ks` has K = 1, its CPU per clip over K = 1's
    round by round (``cpu_vs_k1_runs``; ``cpu_vs_k1`` their median)."""
    a = bench.args
    kind, device, workers, pipes, cut = variant
    runs: list[LoaderRun] = []
    try:
        for k in ks:
            runs.append(LoaderRun(bench, cfg, kind, device, workers, "train", pipes, cut=cut, clips=k))
        with torch_threads(bench.consumer_threads()):
            passes = paired_passes([r.step for r in runs], a.batches, a.repeats, a.warmup,
                                   synchronizer(torch.device(device)))
        out = [{**run.figures(own, a.batches), "paired": True} for run, own in zip(runs, passes)]
        if ks[0] == 1:
            for row, own in zip(out, passes):
                row["cpu_vs_k1_runs"] = cpu_ratios(own, passes[0])
                row["cpu_vs_k1"] = sig(statistics.median(row["cpu_vs_k1_runs"]))
        return out
    finally:
        for run in runs:
            run.close()


def run_loaders(bench: Bench, cfg: Config) -> None:
    """The loader-only rows of `cfg` (train: once per ``--clips-per-video``, the Ks of a loader
    measured in turns, `measure_paired`), each compared with the reference loader with the most
    workers at the same clips per video."""
    mode = bench.args.mode
    ks = bench.args.clips_per_video if mode == "train" else [1]
    for k in (k for k in ks if cfg.batch % k):
        bench.note(f"{cfg}: --clips-per-video {k} does not divide the batch: its rows skipped")
    ks = [k for k in ks if cfg.batch % k == 0]
    rows = []
    for variant in loader_variants(bench, cfg.source) if ks else []:
        rows += variant_rows(bench, cfg, mode, variant, ks)
    rows += object_store_rows(bench, cfg, mode)
    ok = [r for r in rows if "error" not in r]
    shapes = {(tuple(r["shape"]), r["dtype"]) for r in ok}
    if len(shapes) > 1:
        bench.note(f"{cfg}: loaders gave different output shapes {sorted(shapes)}")
    for r in rows:
        refs = [x for x in ok if x["loader"] == "torch" and x.get("clips_per_video", 1) == r.get("clips_per_video", 1)]
        ref = max(refs, key=lambda x: x["workers"])["clips_per_s"] if refs else None
        r.setdefault("clips_per_s", None)
        r["vs_reference"] = sig(r["clips_per_s"] / ref) if ref and r["clips_per_s"] else None
    bench.loader_rows += rows


def variant_base(cfg: Config, mode: str, variant: Variant, location: str) -> dict:
    """What a row of one loader variant reading `location` says before its figures."""
    kind, device, workers, pipes, cut = variant
    return {**cfg.row(), "mode": mode, "loader": kind, "device": device, "workers": workers, "pipelines": pipes,
            "storage": storage.scheme(location), "cut": cut}


def variant_label(cfg: Config, variant: Variant) -> str:
    """One loader variant, as the log names it."""
    kind, device, workers, pipes, cut = variant
    return (f"{cfg} loader {kind}/{device} x{workers}" + (f" in {pipes} pipeline(s)" if pipes else "")
            + ("" if cut or kind != "dali" else " from frame 0"))


def variant_rows(bench: Bench, cfg: Config, mode: str, variant: Variant, ks: list[int]) -> list[dict]:
    """The rows of one loader variant, one per K of `ks` (several: measured in turns)."""
    kind, device, workers, pipes, cut = variant
    stem = variant_label(cfg, variant)
    bases = [{**variant_base(cfg, mode, variant, str(cfg.source.path)), "clips_per_video": k} for k in ks]
    if len(ks) > 1:
        what = f"{stem}, K={'/'.join(map(str, ks))} in turns"
        try:
            rows = [{**b, **r} for b, r in zip(bases, measure_paired(bench, cfg, variant, ks))]
            log.info("%s: %s clips/s", what, " / ".join(f"{r['clips_per_s']:.1f}" for r in rows))
            return rows
        except Exception as e:  # noqa: BLE001 - each K measured alone below, its own error if any
            bench.note(f"{what}: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                       "each K measured alone instead")
    rows = []
    for k, base in zip(ks, bases):
        what = stem + (f", K={k}" if k > 1 else "")
        rows.append(bench.guarded(what, lambda k=k: measure_loader(bench, cfg, kind, device, workers, mode, pipes,
                                                                   cut=cut, clips=k), base))
        if "error" not in rows[-1]:
            log.info("%s: %.1f clips/s", what, rows[-1]["clips_per_s"])
    return rows


def object_store_rows(bench: Bench, cfg: Config, mode: str) -> list[dict]:
    """With ``--s3 URL`` (a copy of ``--shards`` in object storage): the DALI rows of the native
    source again, DALI's reader streaming the copy (``storage`` "s3")."""
    url = bench.args.s3
    if not url or cfg.source.resolution != "native":
        return []
    if ShardSet.open(url).manifest != ShardSet.open(str(cfg.source.path)).manifest:
        bench.note(f"--s3 {url}: not a copy of --shards (the manifests differ)")
    rows = []
    for variant in (v for v in loader_variants(bench, cfg.source) if v[0] == "dali"):
        _, device, workers, pipes, cut = variant
        rows.append(bench.guarded(f"{variant_label(cfg, variant)} from {url}",
                                  lambda d=device, w=workers, p=pipes, c=cut: measure_loader(
                                      bench, cfg, "dali", d, w, mode, p, shards=url, cut=c),
                                  variant_base(cfg, mode, variant, url)))
    return rows


# --------------------------------------------------------------------------- breakdown

def breakdown_stages(bench: Bench, cfg: Config) -> list[tuple[str, str, int, Callable[[], dict]]]:
    """(stage, device, workers, measurement) of every breakdown row of `cfg`."""
    a = bench.args
    stages: list[tuple[str, str, int, Callable[[], dict]]] = [
        ("pil_decode" if cfg.source.codec == "jpeg" else "pyav_decode", "cpu", 1, lambda: reference_decode(bench, cfg))]
    if bench.dali_cpu_ok(cfg.source):
        for threads in sorted({1, a.dali_threads}):
            stages.append(("dali_decode", "cpu", threads, lambda t=threads: dali_decode(bench, cfg, "cpu", t)))
    if bench.device.type == "cuda":
        stages.append(("dali_decode", "cuda", a.dali_threads,
                       lambda: dali_decode(bench, cfg, "cuda", a.dali_threads)))
    if bench.dali_cpu_ok(cfg.source):
        for upto in STAGES:
            stages.append((f"dali_train_{upto}", "cpu", a.dali_threads, lambda u=upto: dali_stage(bench, cfg, u)))
        for mode in ("eval", "train"):
            stages.append((f"dali_{mode}", "cpu", a.dali_threads,
                           lambda m=mode: measure_loader(bench, cfg, "dali", "cpu", a.dali_threads, m)))
    stages.append(("torch_train", "cpu", 1, lambda: measure_loader(bench, cfg, "torch", "cpu", 0, "train")))
    stages.append(("copy", bench.device.type, 1, lambda: batch_copy(bench, cfg)))
    return stages


def run_breakdown(bench: Bench, cfg: Config) -> None:
    """The breakdown rows of `cfg`: per stage, ms per clip and per clip and worker."""
    for stage, device, workers, fn in breakdown_stages(bench, cfg):
        base = {**cfg.row(), "stage": stage, "device": device, "workers": workers}
        row = bench.guarded(f"{cfg} breakdown {stage}/{device} x{workers}", fn, base)
        row.pop("shape", None)
        row.pop("ms_per_batch", None)
        if "error" not in row:
            row["ms_per_clip"] = sig(1000 / row["clips_per_s"])
            row["ms_per_clip_per_worker"] = sig(1000 * max(workers, 1) / row["clips_per_s"])
            log.info("%s breakdown %s/%s x%d: %.1f clips/s", cfg, stage, device, workers, row["clips_per_s"])
        bench.breakdown_rows.append(row)


def reference_decode(bench: Bench, cfg: Config) -> dict:
    """The reference loader's decoder alone, one process, the eval window's frames: PyAV + its
    YUV->RGB conversion, seeking to the keyframe before the window as the reference does; PIL
    (libjpeg-turbo), each distinct frame once, for JPEG frames."""
    a = bench.args
    shards = ShardSet.open(cfg.source.path)
    jpeg = shards.video_ext == JPEG_EXT
    members = (shards.video_ext, META_EXT, OFFSETS_EXT) if jpeg else (shards.video_ext, META_EXT)
    clips = []
    for _, m in split_samples(shards, cfg.source.split, members):
        meta = decode_meta(m[META_EXT])
        idx = frame_indices(meta["num_frames"], cfg.frames, cfg.spec.ratio, cfg.spec.window)
        clips.append((m[shards.video_ext], idx, m[OFFSETS_EXT] if jpeg else meta["fps"]))
        if len(clips) >= cfg.batch * (a.batches + a.warmup):
            break
    i = 0

    def step() -> int:
        nonlocal i
        for _ in range(cfg.batch):
            video, idx, extra = clips[i % len(clips)]
            if jpeg:
                decode_frames(video, extra, idx)
            else:
                decode_rgb(video, idx, fps=extra)
            i += 1
        return cfg.batch

    passes = timed_passes(step, a.batches, a.repeats, a.warmup, lambda: None)
    return rate_figures(passes, cfg.frames, a.batches)


def dali_decode(bench: Bench, cfg: Config, device: str, threads: int) -> dict:
    """The DALI loader's reader, plan and video decoder alone (eval window), no resize/crop/normalize."""
    a = bench.args
    step = build_stage(cfg.source.path, cfg.source.split, cfg.spec, "decode", cfg.batch, threads, a.seed,
                       mode="eval", gpu=device == "cuda")
    passes = timed_passes(step, a.batches, a.repeats, a.warmup, synchronizer(torch.device(device)))
    return rate_figures(passes, cfg.frames, a.batches)


def dali_stage(bench: Bench, cfg: Config, upto: str) -> dict:
    """The DALI CPU train loader's steps up to `upto` (`vidact.bench.stages`), ``pipe.run()`` only."""
    a = bench.args
    step = build_stage(cfg.source.path, cfg.source.split, cfg.spec, upto, cfg.batch, a.dali_threads, a.seed)
    passes = timed_passes(step, a.batches, a.repeats, a.warmup, lambda: None)
    return rate_figures(passes, cfg.frames, a.batches)


def batch_copy(bench: Bench, cfg: Config) -> dict:
    """One clone of an output batch on the benchmark device (the copy each loader makes)."""
    a = bench.args
    x = torch.randn(cfg.batch, cfg.frames, 3, cfg.size, cfg.size).to(bench.device, cfg.spec.torch_dtype)
    passes = timed_passes(lambda: int(x.clone().shape[0]), a.batches, a.repeats, a.warmup,
                          synchronizer(bench.device))
    return rate_figures(passes, cfg.frames, a.batches)
