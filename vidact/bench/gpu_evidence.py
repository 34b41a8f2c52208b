"""The figures one GPU run brings back (`tools/gpu_check.py` writes them as JSON): what the source
reviews of DALI 2.4's NVDEC path could only predict.

* **D1, 16-aligned sides**: train epochs on the same clips sharded at sides on the 16-pixel grid
  and at the nearest even sides (``make_shards --align 2``), where DALI 2.4's decoder cache misses.
* **D2, keyframe cuts**: decoded frames/s and clips/s with the cut and decoding from frame 0.
* DALI on the GPU against the reference loader (clips/s), the time each epoch's pipeline rebuild
  took, and the NVDEC engines' use while the DALI epochs ran (``nvidia-smi``'s decoder
  utilization; DALI opens one decoder session per thread, which is given beside it).
* **The field's benchmark model**: R3D-18 at 112 px, T = 16, bf16, trained end to end by the
  trainer's own loop on the DALI loader, the reference loader and the ceiling (batches replayed
  from device memory), with the data-wait share: the row to set beside SPDL's 171 clips/s per H100.
* **K clips from one decode**: the loaders' CPU per clip at ``--clips-per-video`` 1 and 2,
  measured in turns (`vidact.bench.measure.run_loaders`), VP9 and JPEG frames at 224 px: on the
  GPU the resize and normalization leave the CPU, which on a CPU keep short clips at 224 px over
  0.65x (bench/RESULTS.md, "K clips from one decode, measured in turns").

Rates count steady-state batches only: the first two of each epoch (pipeline set-up, the
decoders' first sessions) are not timed.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from vidact import cli
from vidact.bench.cli import build_parser as bench_parser
from vidact.bench.cli import clip_spec, resolve_settings
from vidact.bench.end_to_end import run_end_to_end
from vidact.bench.machine import usable_cores
from vidact.bench.measure import Bench, Config, run_loaders
from vidact.bench.sources import source_of
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader

SPEC = ClipSpec(frames_per_clip=16, crop_size=112, dtype="bf16", ratio=0.5)
WARM_BATCHES = 2


def shard_sets(work: Path, per_class: int = 25) -> dict[str, Path]:
    """Synthetic clips (4 classes) sharded twice at a 256-px short side: on the 16-pixel grid
    (``aligned``, 336x256) and at the nearest even size (``unaligned``, 342x256)."""
    src = work / "src"
    subprocess.run([sys.executable, "-m", "vidact.synthetic", str(src), "--classes", "4",
                    "--train-per-class", str(per_class), "--val-per-class", "0", "--test-per-class", "0",
                    "--quiet"], check=True, capture_output=True)
    sets = {}
    for name, align in (("aligned", "16"), ("unaligned", "2")):
        sets[name] = work / name
        subprocess.run([sys.executable, "-m", "vidact.prep.make_shards", str(src), "--out", str(sets[name]),
                        "--val-fraction", "0", "--short-side", "256", "--align", align], check=True,
                       capture_output=True)
    return sets


class DecoderUse:
    """NVDEC utilization (%) sampled by ``nvidia-smi`` while the block runs; None without it."""

    def __enter__(self) -> DecoderUse:
        self.samples: list[float] = []
        # nvidia-smi numbers GPUs in PCI order, CUDA (and CUDA_VISIBLE_DEVICES) otherwise: by UUID
        uuid = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", None) \
            if torch.cuda.is_available() else None
        self.gpu = f"GPU-{uuid}" if uuid else "0"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.decoder", "--format=csv,noheader,nounits",
                                  f"--id={self.gpu}"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip().isdigit():
                self.samples.append(float(out.stdout.strip()))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        return {"mean_pct": statistics.mean(self.samples), "max_pct": max(self.samples), "samples": len(self.samples)}


def epochs(shards: Path, loader: str, n: int, cut: bool = True, device: str = "cuda") -> dict:
    """Train epochs of one loader on the GPU after a warm-up epoch: steady-state clips/s and
    decoded frames/s, every epoch's wall time and, for DALI, its pipelines' build time."""
    batches = build_loader(shards, "train", loader, "train", SPEC, 8, device=device, cut=cut)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sum(len(b.ids) for b in batches)  # warm-up: allocations, decoder sessions
    clips = frames = 0
    timed, walls, builds = 0.0, [], []
    with DecoderUse() as use:
        for _ in range(n):
            started = t0 = time.perf_counter()
            for i, b in enumerate(batches):
                if i == WARM_BATCHES:
                    sync()
                    t0 = time.perf_counter()
                if i >= WARM_BATCHES:
                    clips += len(b.ids)
                    frames += int(b.info["glued"].sum())
            sync()
            timed += time.perf_counter() - t0 if i >= WARM_BATCHES else 0.0
            walls.append(time.perf_counter() - started)
            builds.append(getattr(batches, "build_seconds", None))
    timed = timed or float("nan")  # epochs of WARM_BATCHES batches or fewer: nothing steady to time
    return {"clips_per_s": clips / timed, "decoded_frames_per_s": frames / timed, "epoch_s": walls,
            "pipeline_build_s": builds, "decoder_use": use.summary(), "dali_threads": getattr(batches, "threads", None)}


def bench_on(shards: Path, device: str, *flags: str) -> Bench:
    """A benchmark run of `shards` (native resolution, T = 16, all usable cores) on `device`, the
    rest as the `vidact-bench` `flags` say."""
    cores = usable_cores()
    args = bench_parser().parse_args(["--shards", str(shards), "--resolutions", "native", "--frames", "16",
                                      "--warmup", "2", "--workers", str(cores), "--device", device, *flags])
    return Bench(resolve_settings(args, cores, device == "cuda"), torch.device(device), cores)


def model_end_to_end(shards: Path, device: str = "cuda", model: str = "r3d_18", batch: int = 32,
                     batches: int = 10, repeats: int = 2) -> list[dict]:
    """`model` (random init) at 112 px, T = 16 trained by `vidact.engine.train_steps` on `shards`:
    the benchmark's end-to-end rows (ceiling, DALI, reference: clips/s, data wait, vs ceiling)."""
    bench = bench_on(shards, device, "--crop-size", "112", "--batch-sizes", str(batch), "--model", model,
                     "--batches", str(batches), "--repeats", str(repeats))
    amp = "bf16" if device == "cuda" else "fp32"
    run_end_to_end(bench, Config(source_of(shards, "train", "native"), 16, 112, batch, clip_spec(bench.args, 16, amp)),
                   num_classes=4)
    return bench.e2e_rows


def jpeg_set(work: Path) -> Path:
    """The aligned set's clips again as JPEG frames (``make_shards --codec jpeg``)."""
    out = work / "jpeg"
    subprocess.run([sys.executable, "-m", "vidact.prep.make_shards", str(work / "src"), "--out", str(out),
                    "--val-fraction", "0", "--short-side", "256", "--codec", "jpeg"], check=True, capture_output=True)
    return out


def clips_per_video(sets: dict[str, Path], device: str = "cuda", batch: int = 8, size: int = 224,
                    batches: int = 10, repeats: int = 3) -> list[dict]:
    """The loader rows of each of `sets` at 1 and 2 train clips per video read, T = 16, `size` px,
    the Ks of each loader measured in turns: CPU ms per clip and ``cpu_vs_k1`` (K = 2 over 1)."""
    rows = []
    amp = "bf16" if device == "cuda" else "fp32"
    for name, shards in sets.items():
        bench = bench_on(shards, device, "--crop-size", str(size), "--batch-sizes", str(batch), "--clips-per-video",
                         "1", "2", "--batches", str(batches), "--repeats", str(repeats))
        spec = clip_spec(bench.args, 16, amp)
        run_loaders(bench, Config(source_of(shards, "train", "native"), 16, size, batch, spec))
        rows += [{"set": name, **r} for r in bench.loader_rows]
    return rows


def gather(out: Path, n_epochs: int = 2, work: Path | None = None) -> dict:
    """Every figure of the module docstring, written to ``out/evidence.json``; returns them."""
    out.mkdir(parents=True, exist_ok=True)
    work = work or out / "work"
    sets = shard_sets(work)
    figures = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "spec": SPEC.__dict__, "batch_size": 8}
    figures["d1_alignment"] = {name: epochs(path, "dali", n_epochs) for name, path in sets.items()}
    figures["d2_cut"] = {"cut": figures["d1_alignment"]["aligned"],
                         "from_frame_0": epochs(sets["aligned"], "dali", n_epochs, cut=False)}
    figures["reference"] = epochs(sets["aligned"], "torch", n_epochs)
    dali, ref = figures["d1_alignment"]["aligned"]["clips_per_s"], figures["reference"]["clips_per_s"]
    figures["dali_vs_reference"] = dali / ref
    figures["r3d_18_end_to_end"] = model_end_to_end(sets["aligned"])
    figures["clips_per_video"] = clips_per_video({"vp9": sets["aligned"], "jpeg": jpeg_set(work)})
    (out / "evidence.json").write_text(json.dumps(figures, indent=2, default=str))
    return figures


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("vidact.bench.gpu_evidence", __doc__)
    p.add_argument("--out", type=Path, default=Path("gpu-evidence"), help="folder for evidence.json")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per loader")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_evidence: no CUDA device here: nothing measured", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        gather(args.out, args.epochs, work=Path(tmp))
    print(f"gpu_evidence: {args.out / 'evidence.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
