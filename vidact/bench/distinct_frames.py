"""Before/after of distinct-frame decoding: DALI loader clips/s, the graphs of a git revision
(`--before`, default the commit before it) against the working tree's, in one run, alternating
so that load from other processes hits both alike. CPU backend unless CUDA is present.

    python -m vidact.bench.distinct_frames SHARDS [--frames 32 --ratio 0.1]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pipelines.clips as after
import vidact.data.dali as dali
from vidact.bench import REPO
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader


def graphs_at(rev: str):
    """`pipelines.clips` as it was at `rev`."""
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:pipelines/clips.py"], check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "clips_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("clips_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clips_per_second(shards: str, mode: str, spec: ClipSpec, graphs, batch: int, epochs: int) -> float:
    dali.PIPELINES, dali.OUTPUTS = graphs.PIPELINES, graphs.OUTPUTS
    loader = build_loader(shards, "train", "dali", mode, spec, batch, device="cuda" if
                          dali.torch.cuda.is_available() else "cpu", workers=2)
    sum(len(b.ids) for b in loader)  # warm-up epoch (DALI allocates on first use)
    t0, n = time.perf_counter(), 0
    for _ in range(epochs):
        n += sum(len(b.ids) for b in loader)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shards")
    p.add_argument("--before", default="4fa354c~1", help="revision of the old graphs")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--ratio", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement")
    p.add_argument("--rounds", type=int, default=3, help="alternating before/after rounds (median)")
    p.add_argument("--modes", default="eval", help="eval (train graphs are no longer swappable: since the "
                   "reader-and-draws split the loader builds them itself)")
    args = p.parse_args()
    before = graphs_at(args.before)
    spec = ClipSpec(frames_per_clip=args.frames, crop_size=112, ratio=args.ratio)
    for mode in args.modes.split(","):
        rates = {"before": [], "after": []}
        for _ in range(args.rounds):
            for name, graphs in (("before", before), ("after", after)):
                rates[name].append(clips_per_second(args.shards, mode, spec, graphs, args.batch, args.epochs))
        b, a = (statistics.median(rates[k]) for k in ("before", "after"))
        print(f"{mode:9s} T={args.frames} r={args.ratio}: before {b:6.1f} clips/s "
              f"({min(rates['before']):.1f}-{max(rates['before']):.1f}), after {a:6.1f} "
              f"({min(rates['after']):.1f}-{max(rates['after']):.1f}), x{a / b:.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
