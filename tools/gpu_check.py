#!/usr/bin/env python3
"""One-command acceptance check of the GPU path (NVDEC decoding, DALI's CUDA kernels, torch).

Runs the GPU-marked tests (`tests/test_gpu.py`: pixels against DALI's CPU backend on clips whose
frames show their own index, keyframe cuts, repeated and out-of-range indices, multiview,
fp16/bf16, two pipelines, train sharding, one DDP step with NCCL), then measures what the source
reviews could not (`vidact.bench.gpu_evidence`: 16-aligned against unaligned shards, keyframe
cuts against decoding from frame 0, DALI on the GPU against the reference loader, pipeline
rebuild time, NVDEC use, R3D-18 at 112 px trained end to end beside the ceiling) and writes it as
JSON under ``--evidence`` (default gpu-evidence/).
Prints one numbered PASS/FAIL line per check; exit status 1 if any failed. Uses the current
Python and installs nothing: first it names, one line each, any missing piece (a CUDA torch,
DALI, PyAV, webdataset, pytest, NVDEC's library) and what to do; without CUDA it says so in one
line and exits 0.

    python tools/gpu_check.py            (or: make gpu-check)
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout with the current Python, installed or not

WHEELS = "bash ../shared/gpu/pack-wheels.sh here, then pip install --no-index --no-deps the wheels it packs"
# (module, what it is, what to do when it does not import)
MODULES = [
    ("nvidia.dali", "NVIDIA DALI", f"pip install nvidia-dali-cuda130 (or -cuda120), or {WHEELS}"),
    ("av", "PyAV", "pip install av"),
    ("webdataset", "webdataset", "pip install webdataset"),
    ("pytest", "pytest", "pip install pytest"),
]
NVCUVID = "libnvcuvid.so.1"


def missing_pieces(load: Callable[[str], object] = importlib.import_module,
                   open_library: Callable[[str], object] = ctypes.CDLL) -> list[str]:
    """One line per piece the check needs and does not find, saying what to do; [] when all are
    here. (`load` and `open_library` are injectable so tests can take a piece away.)"""
    lines, failed = [], set()
    for module, what, fix in MODULES:
        try:
            load(module)
        except ImportError as e:
            failed.add(module)
            lines.append(f"gpu_check: {what} ({module}) does not import ({e.__class__.__name__}: {e}): {fix}")
    flavours = [d.metadata["Name"] for d in metadata.distributions()
                if (d.metadata["Name"] or "").lower().startswith("nvidia-dali-cuda")]
    if "nvidia.dali" not in failed and not flavours:
        lines.append("gpu_check: DALI is installed without a CUDA flavour (no nvidia-dali-cudaNNN distribution): "
                     "pip install nvidia-dali-cuda130")
    try:
        open_library(NVCUVID)
    except OSError as e:
        lines.append(f"gpu_check: {NVCUVID} (NVDEC, from the NVIDIA driver) does not load ({e}): install the "
                     "driver's video codec libraries (e.g. libnvidia-decode-NNN), or run the container with "
                     "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video")
    return lines


CHECKS = [  # (test function in tests/test_gpu.py, what it shows)
    ("test_pixels_show_their_frames", "GPU vs CPU pixels: the right frames, within a few levels"),
    ("test_keyframe_cuts_decode_the_frames_of_a_decode_from_frame_0",
     "keyframe cuts of IVF clips (glued in the graph) decode on NVDEC to the CPU's frames from frame 0"),
    ("test_repeated_indices", "repeated frame indices (windows shorter than T)"),
    ("test_index_past_the_end", "an index past the video's end stops the loader, naming the sample"),
    ("test_multiview", "multiview (2 clips x 3 crops x 2 flips)"),
    ("test_jpeg_frames_decode_each_distinct_frame_once",
     "JPEG-frames shards on the hardware JPEG decoder (mixed): right frames, each distinct frame once"),
    ("test_jpeg_train_frames", "JPEG-frames train clips: frames and crops"),
    ("test_half_dtypes", "fp16 and bf16 clips"),
    ("test_two_pipelines", "two DALI pipelines in one process"),
    ("test_train_frames_and_sharding", "train frames and crops, two ranks"),
    ("test_ddp_step", "one DDP step with NCCL"),
]


def gpu_test_outcomes(pytest_args: list[str]) -> dict[str, list[str]]:
    """PASS/FAIL/SKIP of each GPU-marked test case, by test function, from pytest's JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "gpu.xml"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                        f"--junitxml={xml}", "tests/test_gpu.py", *pytest_args], cwd=REPO, env=env, check=False)
        outcomes: dict[str, list[str]] = defaultdict(list)
        if xml.is_file():
            for case in ET.parse(xml).iter("testcase"):
                bad = case.find("failure") is not None or case.find("error") is not None
                outcomes[case.get("name", "").partition("[")[0]].append(
                    "FAIL" if bad else "SKIP" if case.find("skipped") is not None else "PASS")
    return outcomes


def evidence_line(out: Path, n_epochs: int) -> tuple[bool, str]:
    """The measurements of `vidact.bench.gpu_evidence` (in a child process, as the tests run:
    nothing of DALI is imported here before the pieces are checked), reported, not gated: a small
    synthetic set on a shared box says too little to fail on."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "vidact.bench.gpu_evidence", "--out", str(out), "--epochs",
                           str(n_epochs)], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"GPU evidence failed: {last}"
    f = json.loads((out / "evidence.json").read_text())
    d1, d2 = f["d1_alignment"], f["d2_cut"]
    r3d = "; ".join(f"{r['variant']} {r['clips_per_s']:.1f} clips/s (wait {100 * r['data_wait']:.0f} %)"
                    for r in f.get("r3d_18_end_to_end", []) if r.get("clips_per_s") is not None)
    k2 = "; ".join(f"{r['set']} {r['loader']}/{r['device']} {r['cpu_vs_k1']:.2f}"
                   for r in f.get("clips_per_video", []) if r.get("clips_per_video") == 2
                   and r.get("cpu_vs_k1") is not None and (r["cut"] or r["loader"] == "torch"))
    return True, (f"evidence in {out / 'evidence.json'}: DALI {d1['aligned']['clips_per_s']:.1f} clips/s aligned, "
                  f"{d1['unaligned']['clips_per_s']:.1f} unaligned; {d2['cut']['decoded_frames_per_s']:.0f} decoded "
                  f"frames/s cut, {d2['from_frame_0']['decoded_frames_per_s']:.0f} from frame 0; reference "
                  f"{f['reference']['clips_per_s']:.1f} clips/s (DALI x{f['dali_vs_reference']:.2f}); R3D-18 112 px "
                  f"T=16: {r3d or 'not measured'}; K = 2 over K = 1, CPU per clip at 224 px: {k2 or 'not measured'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Other arguments are passed to pytest.")
    p.add_argument("--evidence", type=Path, default=REPO / "gpu-evidence",
                   help="folder for evidence.json (default gpu-evidence/)")
    p.add_argument("--epochs", type=int, default=2, choices=range(1, 11), metavar="1..10",
                   help="timed epochs per loader in the measurements (default 2)")
    args, pytest_args = p.parse_known_args(argv)
    args.evidence = args.evidence.resolve()  # the measuring child runs in the repository
    try:
        import torch
    except ImportError as e:
        print(f"gpu_check: torch does not import ({e}): pip install torch (a CUDA build)")
        return 2
    if not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, {build}): nothing checked")
        return 0
    missing = missing_pieces()
    if missing:
        print("\n".join(missing))
        return 2
    outcomes = gpu_test_outcomes(pytest_args)
    lines = []
    for test, what in CHECKS:
        got = outcomes.get(test, [])
        ok = bool(got) and set(got) == {"PASS"}
        lines.append((ok, f"{what} [{test}: {', '.join(got) or 'not run'}]"))
    lines.append(evidence_line(args.evidence, args.epochs))
    print(f"gpu_check on {torch.cuda.get_device_name()}:")
    for n, (ok, text) in enumerate(lines, 1):
        print(f"{n:2d}. {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for ok, _ in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
