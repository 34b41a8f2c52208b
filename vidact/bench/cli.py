"""Loader and end-to-end training throughput of vidact, side by side, in one run.

For every configuration of the sweep (source resolution x frames per clip x batch size), on the
same shards and the same output tensors (``(B, T, 3, size, size)``, same dtype, same layout):

1. **Loader only** (``--mode train`` by default: random resized crop + flip; ``--mode eval``:
   resize + center crop): clips/s and frames/s of

   * the DALI loader on the GPU (``device="cuda"``, NVDEC), only when CUDA is available;
   * the DALI loader on its CPU backend (always, unless the shard codec has no CPU decoder;
     ``--dali-threads``, default all cores);

   each DALI row once per ``--dali-pipelines`` value (pipelines per process, threads split
   among them: one pipeline drives one NVDEC; default the loader's own plan for the machine,
   `vidact.data.tuning.plan_loader`, what training uses when the user sets nothing; the row
   records the pipelines and threads it ran), and again reading ``--s3 URL`` (a copy of the
   shards in object storage) when given;
   * the reference loader (``loader="torch"``: webdataset + PyAV + torch transforms in a
     ``DataLoader``) with each of ``--workers`` processes (default 1, 2 and all cores).

   On a CPU the process consuming the batches keeps max(1, cores - ``--dali-threads``) torch
   threads during these rows, as training does (``vidact.engine.share_cpu_threads``).
   Each loader first yields ``--warmup`` batches and one discarded pass (it would start on
   batches prefetched while the loader sat idle), then ``--repeats`` timed passes of
   ``--batches`` batches each (passes cross epoch boundaries when the split is small, as
   training does); the figure is the median pass. On CUDA the device is synchronized before a
   pass's clock stops. With several ``--clips-per-video`` K, one loader's K rows are measured in
   turns, pass by pass (each pass starts and ends with its loader's queue full and the machine
   quiet, so its CPU time and wall clock are its own batches' work): what else runs on the
   machine weighs on every K alike, and ``CPU vs K=1`` is the median of each round's ratio (the
   spread beside it).
2. **End to end**: optimizer steps/s and clips/s of one model (``--model``, ``--model-size``;
   default VideoMAE ``tiny`` on CPU, ``base`` on a GPU) trained by `vidact.engine.train_steps`
   (the real loop: autocast, clipping, AdamW, scheduler) on

   * ``ceiling``: up to 8 batches taken from the DALI loader (the reference loader's where DALI
     cannot decode), cloned, already in device memory, replayed by a list-backed loader (no
     decoding: the model's own speed);
   * ``dali``: the DALI loader on the benchmark device (the largest ``--dali-pipelines``);
   * ``torch``: the reference loader with the most ``--workers``.

   Same initial weights for every variant, and a few untimed steps of the model first; then per
   variant ``--warmup`` steps and ``--repeats`` timed passes
   of ``--batches`` steps (gradient accumulation 1, so one batch is one optimizer step). Each
   row gives the data-wait share that ``train_steps`` measured (time blocked on ``next()`` over
   the epoch's time). End to end always uses train-mode batches. On a CPU the loader's threads
   and the model's intra-op threads share the cores (``--torch-threads``), so the loader's cost
   shows up in ``vs_ceiling`` more than in ``data_wait``.
3. **Peers** (``--peers``, off by default): what users run today on the files the shards were
   made from (each sample's json ``source``, the synthetic set's MPEG-4 AVIs; ``--sources DIR``
   overrides their folder), or an H.264 copy of them at each sweep resolution (built with PyAV,
   cached under ``--work``): PyAV, decord ``VideoReader.get_batch`` and torchcodec
   ``VideoDecoder`` in a torch ``DataLoader`` with each of ``--workers``, same frames, same
   transform, same tensors. A peer that does not import is a ``skipped`` row with the reason. Per
   configuration: the DALI CPU loader over the best peer, the one-time cost of repacking
   (make_shards' per-clip work timed on the peers' files, all cores) and the epochs after which
   it has paid for itself. Also the **decode-only ceiling** of the shard codec: all cores, one
   process each, decoding the clips the loader samples, nothing else, from frame 0 (as DALI's
   CPU decoder must) and from the keyframe before the first wanted frame (as a seeking decoder
   can), and the DALI loader's share of each (``--breakdown`` measures it too).
4. **Breakdown** (``--breakdown``, off by default): where a clip's time goes on the CPU: PyAV
   decode only (one process, the reference loader's decoder), DALI read+decode only (1 thread and
   all threads; plus NVDEC on a GPU), the DALI train graph cut after decode, after the random
   resized crop and after normalize (``pipe.run()``, no torch), the full DALI eval and train
   loaders (the train loader adds the copies into torch to the last cut), the reference train
   transform in one process, and one copy (clone) of an output batch.

Source resolutions: ``native`` is ``--shards`` as it is; a number N (or ``Np``) is a shard set
re-encoded from the first ``--sweep-clips`` clips of ``--shards`` (same codec, GOP and quality)
with ``make_shards --short-side N`` (synthetic clips are upscaled: the content stays simple, so
decode cost scales with pixels but bitrate stays low). Built sets are cached under ``--work``
(default: the user's cache folder, ``~/.cache/vidact/bench``) and reused while the source shards
and options are unchanged.

Usage::

    vidact-bench --shards shards/NAME [--quick] [--json OUT.json] [--split train]
        [--mode train|eval] [--resolutions native 240 480 1080] [--frames 8 16 32]
        [--batch-sizes 4 8] [--crop-size 224] [--clips-per-video 1 2 4] [--batches 20] [--repeats 3] [--warmup 2]
        [--workers 1 2 N] [--dali-threads N] [--dali-pipelines 1 ...] [--model videomae]
        [--model-size tiny|small|base] [--amp auto] [--torch-threads N] [--compile]
        [--device cpu|cuda] [--no-end-to-end] [--breakdown] [--peers] [--sources DIR]
        [--ratio R] [--sweep-clips N] [--work DIR] [--seed 0] [--s3 URL] [-q]
    python tools/bench.py --shards shards/NAME --soak N [--split val] [--soak-batches K] ...

``--quick`` (about 2 minutes on a 2-core CPU): 240p only, T in {8, 16}, batch 4, 112 px, 4
batches per pass, tiny model, 16 sweep clips. Any flag given explicitly overrides it.
The markdown tables go to stdout, progress and logs to stderr. Exit status 0 when every row
was measured, 1 when some failed (their rows carry ``error``), 2 on bad arguments or shards.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vidact import cli
from vidact.bench import cache_folder, report
from vidact.bench.end_to_end import run_end_to_end
from vidact.bench.limits import open_peer_sources, run_decode_only, run_peers
from vidact.bench.machine import load_average, usable_cores
from vidact.bench.measure import AUTO_PIPELINES, Bench, Config, run_breakdown, run_loaders
from vidact.bench.report import build_report, print_tables, write_report
from vidact.bench.soak import run_soak
from vidact.bench.sources import Source, derived_source, source_of
from vidact.clip.sampling import check_ratio
from vidact.clip.spec import ClipSpec, dtype_name
from vidact.engine import AMP_MODES, Env, amp_dtype
from vidact.files import atomic_write_json
from vidact.models import MODELS, NORM, SIZES
from vidact.shards import ShardError, ShardSet

log = logging.getLogger("vidact.bench")

QUICK = {"resolutions": ["240"], "frames": [8, 16], "batch_sizes": [4], "size": 112, "batches": 4,
         "model_size": "tiny", "sweep_clips": 16}
FULL = {"resolutions": ["native", "240", "480", "1080"], "frames": [8, 16, 32], "batch_sizes": [4, 8],
        "size": 224, "batches": 20, "model_size": None, "sweep_clips": 48}
QUICK_HELP = "``--quick`` (about"  # where the help's epilog starts


def main(argv: list[str] | None = None) -> int:
    """Exit status 0: every row measured; 1: some failed; 2: bad arguments or shards."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cores = usable_cores()
    try:
        device = pick_device(args.device)
        args = resolve_settings(args, cores, device.type == "cuda")
        base = ShardSet.open(args.shards)
        base.tars(args.split)
        num_classes = len(base.classes)
    except (ValueError, ShardError) as e:
        return cli.fail(cli.prog("vidact.bench.cli"), e)
    if num_classes < 1 and args.end_to_end and not args.soak:
        return cli.fail(cli.prog("vidact.bench.cli"), f"{args.shards}: no classes in the manifest (an unlabeled "
                        "set): the end-to-end rows train a classifier; add --no-end-to-end for loader rows only")

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    args.torch_threads = torch.get_num_threads()
    dtype = dtype_name(amp_dtype(Env(0, 1, device), args.amp))
    bench = Bench(args, device, cores)
    if device.type != "cuda":
        bench.note("no CUDA device: DALI GPU (NVDEC) rows not measured")

    started = time.perf_counter()
    load_start = load_average()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    def report_of(sources: list[Source], complete: bool) -> dict:
        return build_report(args, argv, bench, device_name, sources, load_start,
                            round(time.perf_counter() - started, 1), complete)

    def save_partial(sources: list[Source]) -> None:
        # Rewritten after every configuration: a run cut short (a time limit, a crash) keeps
        # what it measured, marked "complete": false.
        if args.json:
            atomic_write_json(args.json, report_of(sources, complete=False))

    with logging_redirect_tqdm():
        sources = run(bench, base, dtype, num_classes, save_partial)

    result = report_of(sources, complete=True)
    print_tables(args, bench, device_name, cores, dtype)
    if args.json:
        write_report(args.json, result)
        cli.said(args.json)
    log.info("done in %.0f s%s", result["elapsed_s"], f"; {bench.failed} failed" if bench.failed else "")
    return 1 if bench.failed else 0


def run(bench: Bench, base: ShardSet, dtype: str, num_classes: int,
        after_config: Callable[[list[Source]], None]) -> list[Source]:
    """The soak (``--soak``) or the sweep, calling `after_config` after each configuration;
    returns the shard sets it read."""
    a = bench.args
    if a.soak:
        run_soak(bench, clip_spec(a, a.frames[0], dtype))
        return [source_of(a.shards, a.split, "native")]
    sources = open_sources(bench, base)
    if a.peers:
        open_peer_sources(bench, base, sources)
    run_sweep(bench, sources, dtype, num_classes, lambda: after_config(sources))
    return sources


def open_sources(bench: Bench, base: ShardSet) -> list[Source]:
    """The shard set of every ``--resolutions`` entry (built or taken from the cache); one that
    cannot be had is a failure and a note."""
    a = bench.args
    sources: list[Source] = []
    for res in a.resolutions:
        try:
            if res == "native":
                sources.append(source_of(a.shards, a.split, "native"))
            else:
                sources.append(derived_source(base, a.split, res, a.sweep_clips, a.work, bench.cores))
        except (RuntimeError, ShardError, OSError) as e:
            bench.failed += 1
            bench.note(f"{res}: shard set unavailable ({e})")
    for src in sources:
        if src.clips < max(a.batch_sizes):
            bench.note(f"{src.label}: {src.clips} clips in '{src.split}', fewer than batch {max(a.batch_sizes)}")
    return sources


def run_sweep(bench: Bench, sources: list[Source], dtype: str, num_classes: int,
              after_config: Callable[[], None] = lambda: None) -> None:
    """Every row of every configuration (source x frames x batch size), in that order."""
    a = bench.args
    configs = [Config(src, t, a.size, b, clip_spec(a, t, dtype)) for src in sources for t in a.frames
               for b in a.batch_sizes]
    log.info("%d configurations on %s (%d cores): %s", len(configs), bench.device, bench.cores,
             ", ".join(s.label for s in sources))
    for cfg in tqdm(configs, desc="bench", unit="config", disable=None if not a.quiet else True):
        run_loaders(bench, cfg)
        if a.end_to_end:
            run_end_to_end(bench, cfg, num_classes)
        if a.peers:
            run_peers(bench, cfg)
        if a.peers or a.breakdown:
            run_decode_only(bench, cfg)
        if a.breakdown:
            run_breakdown(bench, cfg)
        after_config()


def clip_spec(args: argparse.Namespace, frames: int, dtype: str) -> ClipSpec:
    return ClipSpec(frames_per_clip=frames, crop_size=args.size, norm=NORM[args.model], dtype=dtype,
                    ratio=args.ratio).check()


def pick_device(name: str | None) -> torch.device:
    """``--device``, or CUDA where available; a CUDA device is made the current one."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=cli.prog("vidact.bench.cli"), formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("Usage::")[0].rstrip(),
        epilog=(QUICK_HELP + __doc__.split(QUICK_HELP, 1)[1].rstrip() + "\n\n"
                + report.__doc__[report.__doc__.index("JSON schema"):]).rstrip())
    p.add_argument("--shards", required=True,
                   help="shard set from vidact-shards: folder or s3://bucket/prefix")
    p.add_argument("--split", default="train", help="split to read (default train)")
    p.add_argument("--s3", metavar="URL",
                   help="a copy of --shards in object storage (s3://bucket/prefix; AWS variables as for "
                        "--shards): adds DALI loader rows reading it, beside the local ones")
    p.add_argument("--quick", action="store_true",
                   help="small sweep, ~2 min on a 2-core CPU: 240p, T 8/16, batch 4, 112 px, 4 batches, tiny model")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--mode", choices=("train", "eval"), default="train",
                   help="loader-only graph: train (random resized crop + flip) or eval (resize + center crop)")
    add_sweep_axes(p)
    t = p.add_argument_group("timing")
    t.add_argument("--batches", type=int, help="batches (= optimizer steps) per timed pass (full: 20; quick: 4)")
    t.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported (default 3)")
    t.add_argument("--warmup", type=int, default=2, help="untimed batches before the passes (default 2)")
    m = p.add_argument_group("end to end")
    m.add_argument("--model", default="videomae", choices=tuple(MODELS),
                   help="model family (default videomae)")
    m.add_argument("--model-size", choices=tuple(SIZES),
                   help="model size (default: tiny on CPU, base on a GPU; quick: tiny)")
    m.add_argument("--amp", default="auto", choices=AMP_MODES,
                   help="autocast on CUDA as in training (default auto: bf16 where supported); none on CPU")
    m.add_argument("--torch-threads", type=int,
                   help="torch intra-op threads of the training process (default: torch's, i.e. all cores); on a "
                        "small CPU the model's threads compete with DALI's threads and the DataLoader workers")
    m.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager)")
    m.add_argument("--no-end-to-end", dest="end_to_end", action="store_false", help="loader rows only")
    p.add_argument("--breakdown", action="store_true",
                   help="also time decode only (PyAV, DALI), DALI eval/train graphs, torch transforms, a batch copy")
    add_peer_and_soak_options(p)
    p.add_argument("--device", choices=("cpu", "cuda"), help="training / DALI-GPU device (default: cuda if available)")
    p.add_argument("--sweep-clips", type=int, help="clips re-encoded per resolution (full: 48; quick: 16)")
    p.add_argument("--work", type=Path, default=cache_folder(),
                   help=f"cache of re-encoded shard sets and H.264 copies (default {cache_folder()})")
    p.add_argument("--seed", type=int, default=0, help="loader and model seed (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only on stderr")
    return p


def add_sweep_axes(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("sweep axes (defaults: full sweep, or the --quick values)")
    s.add_argument("--resolutions", nargs="+", metavar="RES",
                   help="'native' (--shards as is) and/or short sides N or Np re-encoded from --shards "
                        "(full: native 240 480 1080; quick: 240)")
    s.add_argument("--frames", nargs="+", type=int, metavar="T", help="frames per clip (full: 8 16 32; quick: 8 16)")
    s.add_argument("--batch-sizes", nargs="+", type=int, metavar="B", help="clips per batch (full: 4 8; quick: 4)")
    s.add_argument("--crop-size", dest="size", type=int, help="crop size in pixels (full: 224; quick: 112)")
    s.add_argument("--clips-per-video", nargs="+", type=int, metavar="K",
                   help="train clips cut from each video read (vidact-train --clips-per-video), the --mode train "
                        "loader rows once per K, measured in turns: CPU ms and frames decoded per clip as K grows, "
                        "CPU per clip over K = 1's (default 1; K must divide the batch; --breakdown and end to end "
                        "stay at K = 1)")
    s.add_argument("--workers", nargs="+", type=int, metavar="N",
                   help="worker processes of the reference loader's and the peers' DataLoaders, one row per count "
                        "(default: 1, 2 and all cores, deduplicated)")
    s.add_argument("--dali-threads", type=int, help="DALI CPU threads per process (default: all cores)")
    s.add_argument("--dali-pipelines", nargs="+", type=int, metavar="P",
                   help="DALI pipelines per process, each with threads/P threads; a GPU wants one per NVDEC "
                        "(default 0: the loader's own plan for this machine, as training chooses; loader rows "
                        "for each value, end to end with the largest)")


def add_peer_and_soak_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peers", action="store_true",
                   help="also time PyAV, decord and torchcodec loaders on the source files, the repacking cost and "
                        "its break-even, and the decode-only ceiling")
    p.add_argument("--sources", type=Path,
                   help="folder of the original videos (default: each sample's json 'source' as recorded)")
    p.add_argument("--ratio", type=float, default=1.0,
                   help="observation ratio of every clip (default 1.0: the whole clip; < 1: a middle window, "
                        "where seeking decoders skip frames DALI's CPU decoder must decode)")
    k = p.add_argument_group("soak (long runs stay flat)")
    k.add_argument("--soak", type=int, metavar="N",
                   help="instead of the sweep: run the DALI and the reference loader N epochs each over --split "
                        "(first --frames, --batch-sizes, most --workers) and report resident memory per epoch")
    k.add_argument("--soak-batches", type=int, metavar="K", help="at most K batches per soak epoch (default: all)")


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
    args.dali_pipelines = sorted(set(args.dali_pipelines or [AUTO_PIPELINES]))
    args.clips_per_video = sorted(set(args.clips_per_video or [1]))
    args.resolutions = [parse_resolution(r) for r in args.resolutions]
    for name in ("frames", "batch_sizes", "workers", "dali_pipelines", "clips_per_video"):
        least = 0 if name in ("workers", "dali_pipelines") else 1
        if any(v < least for v in getattr(args, name)):
            raise ValueError(f"--{name.replace('_', '-')}: values must be {'0 or more' if least == 0 else 'positive'}")
    for name in ("size", "batches", "repeats", "dali_threads", "sweep_clips"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{'crop-size' if name == 'size' else name.replace('_', '-')} must be >= 1")
    if args.torch_threads is not None and args.torch_threads < 1:
        raise ValueError("--torch-threads must be >= 1")
    check_ratio(args.ratio)
    if args.soak is not None and args.soak < 1:
        raise ValueError("--soak must be >= 1")
    if args.soak_batches is not None and args.soak_batches < 1:
        raise ValueError("--soak-batches must be >= 1")
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


if __name__ == "__main__":
    sys.exit(main())
