#!/usr/bin/env python3
"""One-command acceptance check of the GPU path (NVDEC decoding, DALI's CUDA kernels, torch).

Runs the GPU-marked tests (`tests/test_gpu.py`: pixels against DALI's CPU backend on clips whose
frames show their own index, repeated and out-of-range indices, multiview, fp16/bf16, two
pipelines, train sharding, one DDP step with NCCL), then a short bench of the DALI loader on the
GPU against the reference loader (webdataset + PyAV) on synthetic shards. Prints one numbered
PASS/FAIL line per check; exit status 1 if any failed. Uses the current Python, installs
nothing; without CUDA it says so in one line and exits 0.

    python tools/gpu_check.py            (or: make gpu-check)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout with the current Python, installed or not

from vidact.clip.spec import ClipSpec  # noqa: E402
from vidact.data import build_loader  # noqa: E402

CHECKS = [  # (test function in tests/test_gpu.py, what it shows)
    ("test_pixels_show_their_frames", "GPU vs CPU pixels: the right frames, within a few levels"),
    ("test_keyframe_cuts_decode_the_frames_of_a_decode_from_frame_0",
     "keyframe cuts of IVF clips (glued in the graph) decode on NVDEC to the CPU's frames from frame 0"),
    ("test_repeated_indices", "repeated frame indices (windows shorter than T)"),
    ("test_index_past_the_end", "an index past the video's end stops the loader, naming the sample"),
    ("test_multiview", "multiview (2 clips x 3 crops x 2 flips)"),
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


def synthetic_shards(work: Path) -> Path:
    """A small synthetic shard set at make_shards' defaults (clips >= 128 px for NVDEC)."""
    src, out = work / "src", work / "shards"
    for cmd in ([str(REPO / "tools" / "make_synthetic.py"), str(src), "--classes", "4", "--train-per-class", "12",
                 "--val-per-class", "0", "--test-per-class", "0", "--quiet"],
                [str(REPO / "tools" / "make_shards.py"), str(src), "--out", str(out), "--val-fraction", "0"]):
        subprocess.run([sys.executable, *cmd], cwd=REPO, check=True, capture_output=True)
    return out


def loader_rate(shards: str | Path, loader: str, epochs: int) -> tuple[float, float]:
    """(clips/s, decoded frames/s) of train epochs after a warm-up one, batches on the GPU."""
    spec = ClipSpec(frames_per_clip=16, crop_size=112, dtype="bf16", ratio=0.5)
    batches = build_loader(shards, "train", loader, "train", spec, 8, device="cuda")
    sum(len(b.ids) for b in batches)
    torch.cuda.synchronize()
    clips = frames = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for b in batches:
            clips += len(b.ids)
            frames += int(b.info["glued"].sum())  # what the decoder decoded: the keyframe cuts
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return clips / elapsed, frames / elapsed


def bench_line(shards: str | Path | None, epochs: int) -> tuple[bool, str]:
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shards = shards or synthetic_shards(Path(tmp))
            dali, ref = loader_rate(shards, "dali", epochs), loader_rate(shards, "torch", epochs)
    except Exception as e:  # noqa: BLE001 - the check reports any failure as its FAIL line
        return False, f"loader bench failed: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return dali[0] >= ref[0], (f"loader bench: DALI on the GPU {dali[0]:.1f} clips/s, {dali[1]:.0f} decoded "
                               f"frames/s; reference {ref[0]:.1f} clips/s, {ref[1]:.0f} frames/s "
                               f"(x{dali[0] / ref[0]:.2f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Other arguments are passed to pytest.")
    p.add_argument("--shards", help="shard set for the bench: folder or s3://bucket/prefix (default: a synthetic one)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per loader in the bench")
    args, pytest_args = p.parse_known_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing checked")
        return 0
    outcomes = gpu_test_outcomes(pytest_args)
    lines = []
    for test, what in CHECKS:
        got = outcomes.get(test, [])
        ok = bool(got) and set(got) == {"PASS"}
        lines.append((ok, f"{what} [{test}: {', '.join(got) or 'not run'}]"))
    lines.append(bench_line(args.shards, args.epochs))
    print(f"gpu_check on {torch.cuda.get_device_name()}:")
    for n, (ok, text) in enumerate(lines, 1):
        print(f"{n:2d}. {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for ok, _ in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
