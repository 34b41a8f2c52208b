"""What decoding only the crop's region would save on JPEG-frames shards: the DALI train frames
graph (`pipelines.frames`, fed as the loader feeds it) cut after the decode, after the random
resized crop and whole, with whole frames (the graphs' choice, `pipelines.frames.JPEG_REGION_DECODE`)
and with the region decode (`fn.decoders.image_slice`), side by side.

usage: python -m vidact.bench.jpeg_roi SHARDS [--frames 8 16] [--batch 4] [--threads 2] [--batches 30]
Prints one line per (T, step): CPU ms per clip whole / region and their ratio.
"""

from __future__ import annotations

import argparse
import os

from vidact.bench.machine import tree_cpu_seconds
from vidact.bench.stages import STAGES, build_stage
from vidact.clip.spec import ClipSpec
from vidact.shards import JPEG_EXT, ShardSet


def cpu_ms_per_clip(shards: ShardSet, spec: ClipSpec, upto: str, region: bool, batch: int, threads: int,
                    batches: int) -> float:
    step = build_stage(shards.root, "train", spec, upto, batch, threads, seed=0, region=region)
    for _ in range(3):  # warm-up: buffers, thread pools
        step()
    started, clips = tree_cpu_seconds(), sum(step() for _ in range(batches))
    return 1000 * (tree_cpu_seconds() - started) / clips


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidact.bench.jpeg_roi", description=__doc__.split("\n\n")[0])
    p.add_argument("shards", help="a JPEG-frames shard set (make_shards --codec jpeg)")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    p.add_argument("--size", type=int, default=224, help="crop size (default 224)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batches", type=int, default=30, help="timed batches per figure (default 30)")
    a = p.parse_args(argv)
    shards = ShardSet.open(a.shards)
    if shards.video_ext != JPEG_EXT:
        p.error(f"{a.shards}: a {shards.codec} set; the region decode is for JPEG frames (make_shards --codec jpeg)")
    for t in a.frames:
        spec = ClipSpec(frames_per_clip=t, crop_size=a.size, ratio=1.0)
        for upto in STAGES:
            whole, cropped = (cpu_ms_per_clip(shards, spec, upto, region, a.batch, a.threads, a.batches)
                              for region in (False, True))
            print(f"T={t} {upto:9s}: whole frames {whole:.1f} CPU ms/clip, region {cropped:.1f} "
                  f"({whole / cropped:.2f}x)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
