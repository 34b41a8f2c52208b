#!/usr/bin/env python3
"""Loader and end-to-end training throughput of vidact, side by side, in one run.

For every configuration of the sweep (source resolution x frames per clip x batch size), on the
same shards and the same output tensors (``(B, T, 3, size, size)``, same dtype, same layout):

1. **Loader only** (``--mode train`` by default: random resized crop + flip; ``--mode eval``:
   resize + center crop): clips/s and frames/s of

   * the DALI loader on the GPU (``device="cuda"``, NVDEC), only when CUDA is available;
   * the DALI loader on its CPU backend (always, unless the shard codec has no CPU decoder;
     ``--dali-threads``, default all cores);

   each DALI row once per ``--dali-pipelines`` value (pipelines per process, threads split
   among them: one pipeline drives one NVDEC);
   * the reference loader (``loader="torch"``: webdataset + PyAV + torch transforms in a
     ``DataLoader``) with each of ``--workers`` processes (default 1, 2 and all cores).

   Each loader first yields ``--warmup`` batches and one discarded pass (it would start on
   batches prefetched while the loader sat idle), then ``--repeats`` timed passes of
   ``--batches`` batches each (passes cross epoch boundaries when the split is small, as
   training does); the figure is the median pass. On CUDA the device is synchronized before a
   pass's clock stops.
2. **End to end**: optimizer steps/s and clips/s of one model (``--model``, ``--model-size``;
   default VideoMAE ``tiny`` on CPU, ``base`` on a GPU) trained by `vidact.train.train_epoch`
   (the real loop: autocast, clipping, AdamW, scheduler) on

   * ``ceiling``: up to 8 batches taken from the DALI loader (the reference loader's where DALI
     cannot decode), cloned, already in device memory, replayed by a list-backed loader (no
     decoding: the model's own speed);
   * ``dali``: the DALI loader on the benchmark device (the largest ``--dali-pipelines``);
   * ``torch``: the reference loader with the most ``--workers``.

   Same initial weights for every variant, and a few untimed steps of the model first; then per
   variant ``--warmup`` steps and ``--repeats`` timed passes
   of ``--batches`` steps (gradient accumulation 1, so one batch is one optimizer step). Each
   row gives the data-wait share that ``train_epoch`` measured (time blocked on ``next()`` over
   the epoch's time). End to end always uses train-mode batches. On a CPU the loader's threads
   and the model's intra-op threads share the cores (``--torch-threads``), so the loader's cost
   shows up in ``vs_ceiling`` more than in ``data_wait``.
3. **Breakdown** (``--breakdown``, off by default): where a clip's time goes on the CPU: PyAV
   decode only (one process, the reference loader's decoder), DALI read+decode only (1 thread and
   all threads; plus NVDEC on a GPU), the full DALI eval and train graphs, the reference train
   transform in one process, and one copy (clone) of an output batch.

Source resolutions: ``native`` is ``--shards`` as it is; a number N (or ``Np``) is a shard set
re-encoded from the first ``--sweep-clips`` clips of ``--shards`` (same codec, GOP and quality)
with ``make_shards --short-side N`` (synthetic clips are upscaled: the content stays simple, so
decode cost scales with pixels but bitrate stays low). Built sets are cached under ``--work``
(default ``bench/.work``) and reused while the source shards and options are unchanged.

Usage::

    python tools/bench.py --shards shards/NAME [--quick] [--json OUT.json] [--split train]
        [--mode train|eval] [--resolutions native 240 480 1080] [--frames 8 16 32]
        [--batch-sizes 4 8] [--size 224] [--batches 20] [--repeats 3] [--warmup 2]
        [--workers 1 2 N] [--dali-threads N] [--dali-pipelines 1 ...] [--model videomae]
        [--model-size tiny|small|base] [--amp auto] [--torch-threads N] [--compile]
        [--device cpu|cuda] [--no-end-to-end] [--breakdown] [--sweep-clips N] [--work DIR]
        [--seed 0] [-q]

``--quick`` (about 2 minutes on a 2-core CPU): 240p only, T in {8, 16}, batch 4, 112 px, 4
batches per pass, tiny model, 16 sweep clips. Any flag given explicitly overrides it.
The markdown tables go to stdout, progress and logs to stderr. Exit status 0 when every row
was measured, 1 when some failed (their rows carry ``error``), 2 on bad arguments or shards.

JSON schema (``--json``), version 1::

    {
      "schema": 1,
      "date": "2026-11-23T17:00:00+00:00",          # ISO 8601, local time zone
      "command": "python tools/bench.py ...",
      "machine": {"cpu": str, "cores": int,          # cores usable by this process
                  "cpu_count": int, "memory_gb": float, "platform": str,
                  "gpu": null | {"name": str, "memory_gb": float, "cuda": str, "count": int},
                  "load_avg_start": [1m, 5m, 15m], "load_avg": [...]},  # at start / end (noise!)
      "versions": {"python", "torch", "dali", "av", "webdataset", "vidact",         # str or null
                   "git"},                           # short commit, "+dirty" with local edits
      "device": "cpu" | "<GPU name>",                # where training and DALI-GPU ran
      "settings": {...},                             # every option after --quick defaults
      "sources": [{"resolution": "native" | "240p", "path": str, "split": str, "codec": str,
                   "clips": int, "short_side": int,  # median short side of the clips, px
                   "build_s": float | null}],        # seconds to build (null: given / cached)
      "loader": [{                                   # one row per config x loader variant
          "resolution": str, "short_side": int, "frames": int, "size": int, "batch": int,
          "mode": "train" | "eval", "dtype": "fp32" | "fp16" | "bf16",
          "loader": "dali" | "torch", "device": "cpu" | "cuda",
          "workers": int,                            # DALI threads or DataLoader processes
          "pipelines": int | null,                   # DALI pipelines (threads split among them)
          "shape": [B, T, 3, size, size],            # of the first batch (same for all loaders)
          "clips_per_s": float, "frames_per_s": float, "ms_per_batch": float,
          "runs": [float, ...],                      # clips/s of every timed pass
          "vs_reference": float,                     # clips/s over the reference loader with
                                                     # the most workers, same config
          "error": str}],                            # only when the row failed (figures null)
      "end_to_end": [{                               # one row per config x variant
          "resolution", "short_side", "frames", "size", "batch", "dtype": as above,
          "model": str, "model_size": str, "amp": "bf16" | "fp16" | null, "compile": bool,
          "torch_threads": int,                      # intra-op threads of the training process
          "variant": "ceiling" | "dali" | "torch",
          "loader": "none" | "dali" | "torch", "device": "cpu" | "cuda",
          "workers": int | null,                     # null for the ceiling
          "pipelines": int,                          # dali only
          "source_loader": "dali" | "torch",         # ceiling only: whose batches it replays
          "steps_per_s": float, "clips_per_s": float, "frames_per_s": float,
          "data_wait": float,                        # share of the epoch spent waiting, 0..1
          "runs": [float, ...],                      # steps/s of every timed pass
          "vs_ceiling": float,                       # steps/s over the ceiling's: dali = (b)/(a)
          "vs_reference": float,                     # steps/s over the torch variant's: (b)/(c)
          "error": str, "skipped": str}],            # figures null; skipped: not applicable here
      "breakdown": [{                                # only with --breakdown
          "resolution", "short_side", "frames", "size", "batch": as above,
          "stage": "pyav_decode" | "dali_decode" | "dali_eval" | "dali_train" | "torch_train"
                   | "copy",
          "device": "cpu" | "cuda", "workers": int,
          "clips_per_s": float, "frames_per_s": float,
          "ms_per_clip": float,                      # wall time per clip
          "ms_per_clip_per_worker": float,           # x workers: busy time of one worker
          "runs": [float, ...], "error": str}],
      "notes": [str, ...],                           # skipped variants, shape mismatches, ...
      "elapsed_s": float                             # the whole run, shard building included
    }
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import hashlib
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from vidact.clip.spec import ClipSpec
    from vidact.shards import ShardSet

log = logging.getLogger("vidact.bench")

REPO = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 1
CEILING_BATCHES = 8  # distinct batches the ceiling replays
BUILD_MARKER = "bench_build.json"

QUICK = {"resolutions": ["240"], "frames": [8, 16], "batch_sizes": [4], "size": 112, "batches": 4,
         "model_size": "tiny", "sweep_clips": 16}
FULL = {"resolutions": ["native", "240", "480", "1080"], "frames": [8, 16, 32], "batch_sizes": [4, 8],
        "size": 224, "batches": 20, "model_size": None, "sweep_clips": 48}


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python tools/bench.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("Usage::")[0].rstrip(),
        epilog=__doc__.split("``--quick`` (about", 1)[1].join(("``--quick`` (about", "")).rstrip())
    p.add_argument("--shards", type=Path, required=True, help="shard set from tools/make_shards.py")
    p.add_argument("--split", default="train", help="split to read (default train)")
    p.add_argument("--quick", action="store_true",
                   help="small sweep, ~2 min on a 2-core CPU: 240p, T 8/16, batch 4, 112 px, 4 batches, tiny model")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--mode", choices=("train", "eval"), default="train",
                   help="loader-only graph: train (random resized crop + flip) or eval (resize + center crop)")
    s = p.add_argument_group("sweep axes (defaults: full sweep, or the --quick values)")
    s.add_argument("--resolutions", nargs="+", metavar="RES",
                   help="'native' (--shards as is) and/or short sides N or Np re-encoded from --shards "
                        "(full: native 240 480 1080; quick: 240)")
    s.add_argument("--frames", nargs="+", type=int, metavar="T", help="frames per clip (full: 8 16 32; quick: 8 16)")
    s.add_argument("--batch-sizes", nargs="+", type=int, metavar="B", help="clips per batch (full: 4 8; quick: 4)")
    s.add_argument("--size", type=int, help="crop size in pixels (full: 224; quick: 112)")
    s.add_argument("--workers", nargs="+", type=int, metavar="N",
                   help="reference-loader worker counts (default: 1, 2 and all cores, deduplicated)")
    s.add_argument("--dali-threads", type=int, help="DALI CPU threads per process (default: all cores)")
    s.add_argument("--dali-pipelines", nargs="+", type=int, metavar="P",
                   help="DALI pipelines per process, each with threads/P threads; a GPU wants one per NVDEC "
                        "(default 1; loader rows for each value, end to end with the largest)"),
    t = p.add_argument_group("timing")
    t.add_argument("--batches", type=int, help="batches (= optimizer steps) per timed pass (full: 20; quick: 4)")
    t.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported (default 3)")
    t.add_argument("--warmup", type=int, default=2, help="untimed batches before the passes (default 2)")
    m = p.add_argument_group("end to end")
    m.add_argument("--model", default="videomae", choices=("videomae", "vivit", "vit-mean"),
                   help="model family (default videomae)")
    m.add_argument("--model-size", choices=("tiny", "small", "base"),
                   help="model size (default: tiny on CPU, base on a GPU; quick: tiny)")
    m.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="autocast on CUDA as in training (default auto: bf16 where supported); none on CPU")
    m.add_argument("--torch-threads", type=int,
                   help="torch intra-op threads of the training process (default: torch's, i.e. all cores); on a "
                        "small CPU the model's threads compete with DALI's threads and the DataLoader workers")
    m.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager)")
    m.add_argument("--no-end-to-end", dest="end_to_end", action="store_false", help="loader rows only")
    p.add_argument("--breakdown", action="store_true",
                   help="also time decode only (PyAV, DALI), DALI eval/train graphs, torch transforms, a batch copy")
    p.add_argument("--device", choices=("cpu", "cuda"), help="training / DALI-GPU device (default: cuda if available)")
    p.add_argument("--sweep-clips", type=int, help="clips re-encoded per resolution (full: 48; quick: 16)")
    p.add_argument("--work", type=Path, default=REPO / "bench" / ".work",
                   help="cache of re-encoded shard sets (default bench/.work)")
    p.add_argument("--seed", type=int, default=0, help="loader and model seed (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only on stderr")
    return p


def resolve_settings(args: argparse.Namespace, cores: int, cuda: bool) -> argparse.Namespace:
    """Fills unset sweep options from the --quick or full defaults and checks them."""
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.model_size is None:
        args.model_size = "base" if cuda else "tiny"
    if args.workers is None:
        args.workers = sorted({1, 2, cores})
    args.workers = sorted(set(args.workers))
    if args.dali_threads is None:
        args.dali_threads = cores
    args.dali_pipelines = sorted(set(args.dali_pipelines or [1]))
    args.resolutions = [parse_resolution(r) for r in args.resolutions]
    for name in ("frames", "batch_sizes", "workers", "dali_pipelines"):
        if any(v < (0 if name == "workers" else 1) for v in getattr(args, name)):
            raise ValueError(f"--{name.replace('_', '-')}: values must be positive")
    for name in ("size", "batches", "repeats", "dali_threads", "sweep_clips"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.torch_threads is not None and args.torch_threads < 1:
        raise ValueError("--torch-threads must be >= 1")
    if args.warmup < 0:
        raise ValueError("--warmup must be >= 0")
    return args


def parse_resolution(token: str) -> str:
    """'native', or a short side as '240' / '240p' -> '240p'."""
    t = str(token).strip().lower()
    if t == "native":
        return t
    n = t[:-1] if t.endswith("p") else t
    if not n.isdigit() or int(n) < 2:
        raise ValueError(f"--resolutions: expected 'native' or a short side like 240 or 240p, got {token!r}")
    return f"{int(n)}p"


# --------------------------------------------------------------------------- environment

def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        gpu = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
               "count": torch.cuda.device_count()}
    return {"cpu": cpu, "cores": usable_cores(), "cpu_count": os.cpu_count(), "memory_gb": memory,
            "platform": platform.platform(), "gpu": gpu, "load_avg": load_average()}


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other jobs on the machine make every figure noisier."""
    with contextlib.suppress(OSError, AttributeError):
        return [sig(x) for x in os.getloadavg()]
    return None


def versions() -> dict[str, str | None]:
    from importlib import metadata

    def version(dist: str, module: str | None = None) -> str | None:
        with contextlib.suppress(Exception):
            if module:
                return str(__import__(module, fromlist=["__version__"]).__version__)
            return metadata.version(dist)
        return None

    git = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        git = out.stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if git and dirty:
            git += "+dirty"
    return {"python": platform.python_version(), "torch": version("torch", "torch"),
            "dali": version("nvidia-dali", "nvidia.dali"), "av": version("av", "av"),
            "webdataset": version("webdataset"), "vidact": version("vidact", "vidact"), "git": git}


# --------------------------------------------------------------------------- shard sets

@dataclass(frozen=True)
class Source:
    """One shard set of the resolution sweep."""

    resolution: str
    path: Path
    split: str
    codec: str
    clips: int
    short_side: int
    build_s: float | None = None

    @property
    def label(self) -> str:
        return f"native ({self.short_side}p)" if self.resolution == "native" else self.resolution

    def as_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "path": str(self.path), "split": self.split, "codec": self.codec,
                "clips": self.clips, "short_side": self.short_side, "build_s": self.build_s}


def iter_samples(shards: ShardSet, split: str, exts: Sequence[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) of the split's samples in shard order, only the members in `exts`."""
    for tar_path in shards.tars(split):
        with tarfile.open(tar_path, "r") as tar:
            key, members = None, {}
            for m in tar:
                k, _, ext = m.name.partition(".")
                if k != key:
                    if members:
                        yield key, members
                    key, members = k, {}
                if ext in exts and m.isfile():
                    members[ext] = tar.extractfile(m).read()
            if members:
                yield key, members


def median_short_side(shards: ShardSet, split: str, limit: int = 64) -> int:
    sides = []
    for _, members in iter_samples(shards, split, ("json",)):
        meta = json.loads(members["json"])
        sides.append(min(int(meta["height"]), int(meta["width"])))
        if len(sides) >= limit:
            break
    return int(statistics.median(sides)) if sides else 0


def source_of(path: Path, split: str, resolution: str, build_s: float | None = None) -> Source:
    from vidact.shards import ShardSet

    shards = ShardSet.open(path)
    return Source(resolution, path, split, shards.codec, shards.count(split), median_short_side(shards, split),
                  build_s)


def _digest(data: Any) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def derived_source(base: ShardSet, split: str, resolution: str, clips: int, work: Path, workers: int) -> Source:
    """`base`'s first `clips` clips re-encoded with ``--short-side`` (cached in `work`)."""
    short = int(resolution[:-1])
    enc = base.manifest["encode"]
    params = {"source": str(base.root.resolve()), "manifest": base.manifest, "split": split, "clips": clips}
    src = work / f"clips-{base.root.name}-{split}-{clips}-{_digest(params)}"
    out_params = {**params, "short_side": short}
    out = work / f"{base.root.name}-{split}-{clips}clips-{resolution}-{_digest(out_params)}"
    marker = out / BUILD_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("params") == json.loads(
            json.dumps(out_params, sort_keys=True, default=str)):
        log.info("%s: cached shard set %s", resolution, out)
        return source_of(out, "train", resolution)
    started = time.perf_counter()
    if not (src / ".complete").is_file():
        log.info("extracting %d clips of %s to %s", clips, base.root, src)
        src.mkdir(parents=True, exist_ok=True)
        n = 0
        for key, members in iter_samples(base, split, (base.video_ext, "json")):
            meta = json.loads(members["json"])
            label = str(meta.get("label") or "_unlabeled").replace("/", "_").replace(os.sep, "_")
            (src / label).mkdir(exist_ok=True)
            (src / label / f"{key}.{base.video_ext}").write_bytes(members[base.video_ext])
            n += 1
            if n >= clips:
                break
        if n == 0:
            raise RuntimeError(f"{base.root}: split '{split}' has no clips to re-encode")
        (src / ".complete").write_text(f"{n}\n")
    cmd = [sys.executable, str(REPO / "tools" / "make_shards.py"), str(src), "--out", str(out), "--layout", "videos",
           "--short-side", str(short), "--codec", str(enc["codec"]), "--gop", str(enc["gop"]),
           "--workers", str(workers), "--val-fraction", "0"]
    if enc.get("quality") is not None:
        cmd += ["--quality", str(enc["quality"])]
    log.info("%s: re-encoding to %s (%s)", resolution, out, shlex.join(cmd[1:]))
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"make_shards failed for {resolution} (exit {done.returncode}): {shlex.join(cmd)}")
    build_s = sig(time.perf_counter() - started)
    marker.write_text(json.dumps({"params": out_params, "build_s": build_s}, sort_keys=True, default=str) + "\n")
    return source_of(out, "train", resolution, build_s)


# --------------------------------------------------------------------------- loader helpers

def batch_stream(loader: Any) -> Iterator[Any]:
    """Batches of `loader` forever, one epoch after another."""
    while True:
        n = 0
        for batch in loader:
            n += 1
            yield batch
        if n == 0:
            raise RuntimeError("the loader yielded no batch: the split has fewer clips than one batch")


def take_clones(stream: Iterator[Any], n: int) -> list[tuple[Any, Any, list[str]]]:
    """`n` batches of `stream` as private copies (DALI reuses its output buffers)."""
    return [(video.clone(), label.clone(), list(ids)) for video, label, ids in (next(stream) for _ in range(n))]


class Take:
    """The next `n` batches of a stream, as a loader with a length (one `train_epoch`)."""

    def __init__(self, stream: Iterator[Any], n: int):
        self.stream, self.n = stream, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.n):
            yield next(self.stream)


class ListLoader:
    """Pre-materialized batches in device memory, replayed in order for `n` batches: the ceiling."""

    def __init__(self, batches: list[tuple[Any, Any, Any]], n: int):
        self.batches, self.n = batches, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        for i in range(self.n):
            yield self.batches[i % len(self.batches)]


def synchronizer(device: torch.device) -> Callable[[], None]:
    import torch

    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def timed_passes(step: Callable[[], int], n: int, repeats: int, warmup: int,
                 sync: Callable[[], None]) -> list[tuple[int, float]]:
    """(items, seconds) of `repeats` passes of `n` calls of `step` (each returns its item count), after
    `warmup` calls and one discarded pass: loaders prefetch while idle (DALI's queues, the DataLoader's
    workers), so the first pass would start on ready batches; later passes start in steady state."""
    for _ in range(warmup):
        step()
    sync()
    out = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        items = sum(step() for _ in range(n))
        sync()
        out.append((items, time.perf_counter() - t0))
    return out[1:]


def sig(x: float, digits: int = 4) -> float:
    """`x` rounded to `digits` significant digits (JSON stays readable, ratios stay exact enough)."""
    return float(f"{x:.{digits}g}")


def rate_figures(passes: list[tuple[int, float]], frames: int, batches: int) -> dict[str, Any]:
    rates = [items / max(sec, 1e-9) for items, sec in passes]
    clips = statistics.median(rates)
    secs = statistics.median(sec for _, sec in passes)
    return {"clips_per_s": sig(clips), "frames_per_s": sig(clips * frames),
            "ms_per_batch": sig(1000 * secs / batches), "runs": [sig(r) for r in rates]}


# --------------------------------------------------------------------------- one configuration

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
    """Runs the rows of every configuration; collects rows, notes and failures."""

    args: argparse.Namespace
    device: torch.device
    cores: int
    loader_rows: list[dict] = field(default_factory=list)
    e2e_rows: list[dict] = field(default_factory=list)
    breakdown_rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: int = 0

    def note(self, text: str) -> None:
        if text not in self.notes:
            log.warning("%s", text)
            self.notes.append(text)

    def guarded(self, what: str, fn: Callable[[], dict], base: dict) -> dict:
        """`fn()`'s row, or `base` with ``error`` (figures null) if it raised."""
        import torch

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

    def dali_cpu_ok(self, src: Source) -> bool:
        from vidact.shards import CPU_DECODABLE_CODECS

        if src.codec in CPU_DECODABLE_CODECS:
            return True
        self.note(f"{src.path}: codec {src.codec} has no DALI CPU decoder (CPU: {', '.join(CPU_DECODABLE_CODECS)}); "
                  "DALI CPU rows skipped")
        return False

    # ---------------------------------------------------------------- loader only

    def loader_variants(self, src: Source) -> list[tuple[str, str, int, int | None]]:
        """(loader, device, workers, DALI pipelines) of every loader-only row."""
        out: list[tuple[str, str, int, int | None]] = []
        if self.device.type == "cuda":
            out += [("dali", "cuda", self.args.dali_threads, p) for p in self.args.dali_pipelines]
        if self.dali_cpu_ok(src):
            out += [("dali", "cpu", self.args.dali_threads, p) for p in self.args.dali_pipelines]
        out += [("torch", self.device.type, w, None) for w in self.args.workers]
        return out

    def measure_loader(self, cfg: Config, kind: str, device: str, workers: int, mode: str,
                       pipelines: int | None = None) -> dict:
        import torch

        from vidact.data import build_loader

        a = self.args
        loader = build_loader(cfg.source.path, cfg.source.split, kind, mode, cfg.spec, cfg.batch, device,
                              seed=a.seed, workers=workers, dali_pipelines=pipelines or 1)
        stream = batch_stream(loader)
        shape: list[int] = []
        try:
            def step() -> int:
                video = next(stream)[0]
                if not shape:
                    shape.extend(video.shape)
                return int(video.shape[0])

            passes = timed_passes(step, a.batches, a.repeats, a.warmup, synchronizer(torch.device(device)))
        finally:
            stream.close()
            del loader
        return {"shape": shape, **rate_figures(passes, cfg.frames, a.batches)}

    def run_loaders(self, cfg: Config) -> None:
        rows = []
        for kind, device, workers, pipes in self.loader_variants(cfg.source):
            base = {**cfg.row(), "mode": self.args.mode, "loader": kind, "device": device, "workers": workers,
                    "pipelines": pipes}
            what = f"{cfg} loader {kind}/{device} x{workers}" + (f" in {pipes} pipeline(s)" if pipes else "")
            row = self.guarded(what, lambda k=kind, d=device, w=workers, p=pipes: self.measure_loader(
                cfg, k, d, w, self.args.mode, p), base)
            if "error" not in row:
                log.info("%s: %.1f clips/s", what, row["clips_per_s"])
            rows.append(row)
        ok = [r for r in rows if "error" not in r]
        shapes = {(tuple(r["shape"]), r["dtype"]) for r in ok}
        if len(shapes) > 1:
            self.note(f"{cfg}: loaders gave different output shapes {sorted(shapes)}")
        refs = [r for r in ok if r["loader"] == "torch"]
        ref = max(refs, key=lambda r: r["workers"])["clips_per_s"] if refs else None
        for r in rows:
            r.setdefault("clips_per_s", None)
            r["vs_reference"] = sig(r["clips_per_s"] / ref) if ref and r["clips_per_s"] else None
        self.loader_rows += rows

    # ---------------------------------------------------------------- end to end

    def run_end_to_end(self, cfg: Config, num_classes: int) -> None:
        import torch

        from vidact.data import build_loader
        from vidact.models import create_model
        from vidact.recipes import Recipe, Stage
        from vidact.train import Env, amp_dtype

        a = self.args
        env = Env(0, 1, self.device)
        amp = amp_dtype(env, a.amp)
        base = {**cfg.row(), "model": a.model, "model_size": a.model_size,
                "amp": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp), "compile": bool(a.compile),
                "torch_threads": torch.get_num_threads()}
        stage = Stage(epochs=1, lr=1e-4, warmup=0.0)
        recipe = Recipe(model=a.model, model_size=a.model_size, frames=cfg.frames, size=cfg.size,
                        batch_size=cfg.batch, accum=1, stages=(stage,), amp=a.amp, compile=a.compile, seed=a.seed)
        rows: list[dict] = []
        model = init_state = None
        try:
            torch.manual_seed(a.seed)
            model = create_model(a.model, num_classes, a.model_size, cfg.frames, cfg.size).to(self.device)
            init_state = copy.deepcopy(model.state_dict())
        except Exception as e:  # noqa: BLE001
            self.failed += 1
            log.error("%s: model failed: %s", cfg, e)
            self.e2e_rows += [{**base, "variant": v, "error": f"{e.__class__.__name__}: {e}"}
                              for v in ("ceiling", "dali", "torch")]
            return

        def train(loader_factory: Callable[[], tuple[Any, Callable[[], None]]], variant: str) -> dict:
            return self.measure_training(model, init_state, loader_factory, recipe, stage, env, amp, num_classes,
                                         cfg, variant)

        dali_device = self.device.type
        workers = max(a.workers)
        ceiling: list = []
        ceiling_from = "dali"
        stream = None
        dali_loader = None
        dali_problem: dict[str, str] = {}
        if dali_device == "cuda" or self.dali_cpu_ok(cfg.source):
            try:
                dali_loader = build_loader(cfg.source.path, cfg.source.split, "dali", "train", cfg.spec, cfg.batch,
                                           self.device, seed=a.seed, workers=a.dali_threads,
                                           dali_pipelines=max(a.dali_pipelines))
                stream = batch_stream(dali_loader)
                ceiling = take_clones(stream, min(CEILING_BATCHES, a.batches))
            except Exception as e:  # noqa: BLE001
                self.failed += 1
                log.error("%s: DALI loader failed: %s", cfg, e)
                dali_problem = {"error": f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
                stream = None
        else:
            dali_problem = {"skipped": f"codec {cfg.source.codec} has no DALI CPU decoder"}
        if not ceiling:
            # No DALI batches: the ceiling replays the reference loader's (same spec, same tensors).
            ceiling_from = "torch"
            with contextlib.suppress(Exception):
                ref_stream = batch_stream(build_loader(cfg.source.path, cfg.source.split, "torch", "train", cfg.spec,
                                                       cfg.batch, self.device, seed=a.seed, workers=workers))
                ceiling = take_clones(ref_stream, min(CEILING_BATCHES, a.batches))
                ref_stream.close()
        ceiling_base = {**base, "variant": "ceiling", "loader": "none", "source_loader": ceiling_from,
                        "device": dali_device, "workers": None}
        if ceiling:
            # The model's own warm-up (first steps allocate, autograd builds its graph), untimed and
            # before every variant, so the first variant measured is not penalized.
            with contextlib.suppress(Exception):
                self.measure_training(model, init_state, lambda: (ListLoader(ceiling, 1), lambda: None), recipe,
                                      stage, env, amp, num_classes, cfg, "model warm-up", timed=False)
            rows.append(self.guarded(f"{cfg} e2e ceiling", lambda: train(
                lambda: (ListLoader(ceiling, a.batches), lambda: None), "ceiling"), ceiling_base))
        else:
            self.failed += 1
            rows.append({**ceiling_base, "error": "no loader produced batches for the ceiling (see log)"})
        dali_base = {**base, "variant": "dali", "loader": "dali", "device": dali_device, "workers": a.dali_threads,
                     "pipelines": max(a.dali_pipelines)}
        if stream is not None:
            rows.append(self.guarded(f"{cfg} e2e dali", lambda: train(
                lambda: (Take(stream, a.batches), lambda: None), "dali"), dali_base))
            stream.close()
        else:
            rows.append({**dali_base, **dali_problem})
        ceiling.clear()
        dali_loader = None  # frees the DALI pipeline (threads, buffers) before the reference loader starts
        gc.collect()

        def reference() -> tuple[Any, Callable[[], None]]:
            loader = build_loader(cfg.source.path, cfg.source.split, "torch", "train", cfg.spec, cfg.batch,
                                  self.device, seed=a.seed, workers=workers)
            s = batch_stream(loader)
            return Take(s, a.batches), s.close

        rows.append(self.guarded(f"{cfg} e2e torch", lambda: train(reference, "torch"),
                                 {**base, "variant": "torch", "loader": "torch", "device": self.device.type,
                                  "workers": workers}))
        model = init_state = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        speed = {r["variant"]: r.get("steps_per_s") for r in rows}
        for r in rows:
            r.setdefault("steps_per_s", None)
            own = r["steps_per_s"]
            r["vs_ceiling"] = sig(own / speed["ceiling"]) if own and speed.get("ceiling") else None
            r["vs_reference"] = sig(own / speed["torch"]) if own and speed.get("torch") else None
            if own:
                log.info("%s e2e %s: %.2f steps/s, data wait %.0f%%", cfg, r["variant"], own, 100 * r["data_wait"])
        self.e2e_rows += rows

    def measure_training(self, model: Any, init_state: dict, loader_factory: Callable[[], tuple[Any, Callable]],
                         recipe: Any, stage: Any, env: Any, amp: Any, num_classes: int, cfg: Config,
                         variant: str, timed: bool = True) -> dict:
        """`--warmup` steps, then `--repeats` timed `train_epoch` calls of `--batches` steps (untimed:
        only max(2, `--warmup`) steps, to warm the model up)."""
        import torch

        from vidact.train import CompiledOrEager, build_optimizer, cosine_with_warmup, train_epoch

        a = self.args
        model.load_state_dict(init_state)
        optimizer = build_optimizer(model, stage, recipe.weight_decay)
        scheduler = cosine_with_warmup(optimizer, a.warmup + a.repeats * a.batches + 1, 0.0)
        scaler = torch.amp.GradScaler(env.device.type, enabled=amp == torch.float16)
        run = CompiledOrEager(model, recipe.compile)
        sync = synchronizer(env.device)
        loader, close = loader_factory()
        steps, waits = [], []
        try:
            def epoch(n: int) -> dict:
                loader.n = n
                return train_epoch(model, run, loader, optimizer, scheduler, scaler, stage, recipe, env, num_classes,
                                   amp, f"bench {variant}")

            if not timed:
                epoch(max(2, a.warmup))
                return {}
            if a.warmup:
                epoch(a.warmup)
            for _ in range(a.repeats):
                sync()
                t0 = time.perf_counter()
                result = epoch(a.batches)
                sync()
                steps.append(a.batches / (time.perf_counter() - t0))
                waits.append(result["data_wait"])
        finally:
            close()
        sps = statistics.median(steps)
        return {"steps_per_s": sig(sps), "clips_per_s": sig(sps * cfg.batch),
                "frames_per_s": sig(sps * cfg.batch * cfg.frames),
                "data_wait": sig(statistics.median(waits)), "runs": [sig(s) for s in steps]}

    # ---------------------------------------------------------------- breakdown

    def run_breakdown(self, cfg: Config) -> None:
        a = self.args
        stages: list[tuple[str, str, int, Callable[[], dict]]] = [
            ("pyav_decode", "cpu", 1, lambda: self.pyav_decode(cfg))]
        if self.dali_cpu_ok(cfg.source):
            for threads in sorted({1, a.dali_threads}):
                stages.append(("dali_decode", "cpu", threads, lambda t=threads: self.dali_decode(cfg, "cpu", t)))
        if self.device.type == "cuda":
            stages.append(("dali_decode", "cuda", a.dali_threads,
                           lambda: self.dali_decode(cfg, "cuda", a.dali_threads)))
        if self.dali_cpu_ok(cfg.source):
            for mode in ("eval", "train"):
                stages.append((f"dali_{mode}", "cpu", a.dali_threads,
                               lambda m=mode: self.measure_loader(cfg, "dali", "cpu", a.dali_threads, m)))
        stages.append(("torch_train", "cpu", 1, lambda: self.measure_loader(cfg, "torch", "cpu", 0, "train")))
        stages.append(("copy", self.device.type, 1, lambda: self.batch_copy(cfg)))
        for stage, device, workers, fn in stages:
            base = {**cfg.row(), "stage": stage, "device": device, "workers": workers}
            row = self.guarded(f"{cfg} breakdown {stage}/{device} x{workers}", fn, base)
            row.pop("shape", None)
            row.pop("ms_per_batch", None)
            if "error" not in row:
                row["ms_per_clip"] = sig(1000 / row["clips_per_s"])
                row["ms_per_clip_per_worker"] = sig(1000 * max(workers, 1) / row["clips_per_s"])
                log.info("%s breakdown %s/%s x%d: %.1f clips/s", cfg, stage, device, workers, row["clips_per_s"])
            self.breakdown_rows.append(row)

    def pyav_decode(self, cfg: Config) -> dict:
        """The reference loader's decoder alone (PyAV + its YUV->RGB conversion, seeking to the keyframe
        before the window as the reference does), one process, the eval window's frames."""
        from vidact.clip.sampling import frame_indices
        from vidact.shards import ShardSet
        from vidact.video_io import decode_rgb

        shards = ShardSet.open(cfg.source.path)
        clips = []
        for _, m in iter_samples(shards, cfg.source.split, (shards.video_ext, "json")):
            meta = json.loads(m["json"])
            clips.append((m[shards.video_ext], frame_indices(meta["num_frames"], cfg.frames, cfg.spec.ratio,
                                                             cfg.spec.window), meta["fps"]))
            if len(clips) >= cfg.batch * (self.args.batches + self.args.warmup):
                break
        i = 0

        def step() -> int:
            nonlocal i
            for _ in range(cfg.batch):
                video, idx, fps = clips[i % len(clips)]
                decode_rgb(video, idx, fps=fps)
                i += 1
            return cfg.batch

        passes = timed_passes(step, self.args.batches, self.args.repeats, self.args.warmup, lambda: None)
        return rate_figures(passes, cfg.frames, self.args.batches)

    def dali_decode(self, cfg: Config, device: str, threads: int) -> dict:
        """DALI's webdataset reader and video decoder alone (eval window), no resize/crop/normalize."""
        import torch
        from nvidia.dali import pipeline_def

        from pipelines.clips import decode, frame_indices, read_samples
        from vidact.shards import ShardSet

        shards = ShardSet.open(cfg.source.path)
        gpu = device == "cuda"

        @pipeline_def
        def decode_only():
            video, _meta, nframes, _label, _hw = read_samples(
                [str(p) for p in shards.tars(cfg.source.split)], [str(p) for p in shards.indexes(cfg.source.split)],
                shards.video_ext, 0, 1, 0, pad_last=False)
            return decode(video, frame_indices(nframes, cfg.spec, 0.5), gpu)

        pipe = decode_only(batch_size=cfg.batch, num_threads=threads,
                           device_id=(self.device.index or 0) if gpu else None, seed=self.args.seed,
                           prefetch_queue_depth=2)
        pipe.build()

        def step() -> int:
            (out,) = pipe.run()
            return len(out)

        passes = timed_passes(step, self.args.batches, self.args.repeats, self.args.warmup,
                              synchronizer(torch.device(device)))
        return rate_figures(passes, cfg.frames, self.args.batches)

    def batch_copy(self, cfg: Config) -> dict:
        """One clone of an output batch on the benchmark device (the copy each loader makes)."""
        import torch

        x = torch.randn(cfg.batch, cfg.frames, 3, cfg.size, cfg.size).to(self.device, cfg.spec.torch_dtype)
        passes = timed_passes(lambda: int(x.clone().shape[0]), self.args.batches, self.args.repeats,
                              self.args.warmup, synchronizer(self.device))
        return rate_figures(passes, cfg.frames, self.args.batches)


# --------------------------------------------------------------------------- output

def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if 0 < abs(v) < 10 ** -digits * 100:  # small figures keep two significant digits
            return f"{v:.2g}"
        return f"{v:.{digits}f}"
    return str(v)


def _spread(runs: Sequence[float] | None, digits: int = 1) -> str:
    return f"{min(runs):.{digits}f}–{max(runs):.{digits}f}" if runs else "-"


def _status(row: dict, digits: int = 1) -> str:
    """The spread of the timed passes, or why the row has no figures."""
    for key in ("error", "skipped"):
        if key in row:
            return f"{key}: {row[key][:60]}"
    return _spread(row.get("runs"), digits)


def _loader_label(row: dict, key: str = "loader") -> str:
    pipes = row.get("pipelines")
    return f"{row[key]} ({pipes} pipelines)" if pipes and pipes > 1 else row[key]


def _source_label(row: dict) -> str:
    return f"native ({row['short_side']}p)" if row["resolution"] == "native" else row["resolution"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def loader_table(rows: list[dict]) -> str:
    header = ["source", "T", "size", "batch", "loader", "device", "workers", "clips/s", "frames/s", "runs clips/s",
              "vs ref"]
    body = [[_source_label(r), str(r["frames"]), str(r["size"]), str(r["batch"]), _loader_label(r), r["device"],
             str(r["workers"]), _fmt(r.get("clips_per_s")), _fmt(r.get("frames_per_s"), 0),
             _status(r),
             _fmt(r.get("vs_reference"), 2)] for r in rows]
    return markdown_table(header, body)


def e2e_table(rows: list[dict]) -> str:
    header = ["source", "T", "size", "batch", "model", "variant", "device", "workers", "steps/s", "clips/s",
              "data wait", "runs steps/s", "vs ceiling", "vs ref"]
    body = [[_source_label(r), str(r["frames"]), str(r["size"]), str(r["batch"]), f"{r['model']}-{r['model_size']}",
             _loader_label(r, "variant"), r.get("device", "-"), _fmt(r.get("workers")), _fmt(r.get("steps_per_s"), 2),
             _fmt(r.get("clips_per_s")),
             f"{100 * r['data_wait']:.0f}%" if r.get("data_wait") is not None else "-",
             _status(r, 2),
             _fmt(r.get("vs_ceiling"), 2), _fmt(r.get("vs_reference"), 2)] for r in rows]
    return markdown_table(header, body)


def breakdown_table(rows: list[dict]) -> str:
    header = ["source", "T", "size", "batch", "stage", "device", "workers", "clips/s", "ms/clip", "ms/clip/worker",
              "runs clips/s"]
    body = [[_source_label(r), str(r["frames"]), str(r["size"]), str(r["batch"]), r["stage"], r["device"],
             str(r["workers"]), _fmt(r.get("clips_per_s")), _fmt(r.get("ms_per_clip")),
             _fmt(r.get("ms_per_clip_per_worker")),
             _status(r)] for r in rows]
    return markdown_table(header, body)


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from vidact.clip.spec import ClipSpec
    from vidact.models import NORM
    from vidact.shards import ShardError, ShardSet
    from vidact.train import Env, amp_dtype

    cores = usable_cores()
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: CUDA is not available on this machine")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(device)
        args = resolve_settings(args, cores, device.type == "cuda")
        base = ShardSet.open(args.shards)
        base.tars(args.split)
        num_classes = len(base.classes)
    except (ValueError, ShardError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    if num_classes < 1:
        print(f"bench: {args.shards}: no classes in the manifest", file=sys.stderr)
        return 2

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    args.torch_threads = torch.get_num_threads()
    amp = amp_dtype(Env(0, 1, device), args.amp)
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")
    bench = Bench(args, device, cores)
    if device.type != "cuda":
        bench.note("no CUDA device: DALI GPU (NVDEC) rows not measured")

    started = time.perf_counter()
    load_start = load_average()
    sources: list[Source] = []
    with logging_redirect_tqdm():
        for res in args.resolutions:
            try:
                if res == "native":
                    sources.append(source_of(args.shards, args.split, "native"))
                else:
                    sources.append(derived_source(base, args.split, res, args.sweep_clips, args.work, cores))
            except (RuntimeError, ShardError, OSError) as e:
                bench.failed += 1
                bench.note(f"{res}: shard set unavailable ({e})")
        configs = [Config(src, t, args.size, b, ClipSpec(num_frames=t, size=args.size, norm=NORM[args.model],
                                                         dtype=dtype).check())
                   for src in sources for t in args.frames for b in args.batch_sizes]
        for src in sources:
            if src.clips < max(args.batch_sizes):
                bench.note(f"{src.label}: {src.clips} clips in '{src.split}', fewer than batch {max(args.batch_sizes)}")
        log.info("%d configurations on %s (%d cores): %s", len(configs), device, cores,
                 ", ".join(s.label for s in sources))
        for cfg in tqdm(configs, desc="bench", unit="config", disable=None if not args.quiet else True):
            bench.run_loaders(cfg)
            if args.end_to_end:
                bench.run_end_to_end(cfg, num_classes)
            if args.breakdown:
                bench.run_breakdown(cfg)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {
        "schema": SCHEMA_VERSION,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python " + shlex.join([sys.argv[0] if argv is None else "tools/bench.py",
                                           *(sys.argv[1:] if argv is None else argv)]),
        "machine": {**machine_info(), "load_avg_start": load_start},
        "versions": versions(),
        "device": device_name,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sources": [s.as_dict() for s in sources],
        "loader": bench.loader_rows,
        "end_to_end": bench.e2e_rows,
        **({"breakdown": bench.breakdown_rows} if args.breakdown else {}),
        "notes": bench.notes,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(f"## Loader throughput ({args.mode} mode, device {device_name}, {cores} cores)\n")
    print(loader_table(bench.loader_rows))
    if args.end_to_end:
        print(f"\n## End to end ({args.model}-{args.model_size}, train_epoch, batches {dtype})\n")
        print(e2e_table(bench.e2e_rows))
    if args.breakdown:
        print("\n## Breakdown (where a clip's time goes)\n")
        print(breakdown_table(bench.breakdown_rows))
    if bench.notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in bench.notes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, args.json)
        log.info("wrote %s", args.json)
    log.info("done in %.0f s%s", report["elapsed_s"], f"; {bench.failed} failed" if bench.failed else "")
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
