"""What decoding only the crop's region would save on JPEG-frames shards: the DALI train graph cut
after the decode and after the random resized crop (`pipelines.clips.train_steps_pipeline`), with
whole frames (the graphs' choice, `pipelines.clips.JPEG_REGION_DECODE`) and with the region decode
(`fn.decoders.image_slice`), side by side.

usage: python -m vidact.bench.jpeg_roi SHARDS [--frames 8 16] [--batch 4] [--threads 2] [--batches 30]
Prints one line per (T, step): CPU ms per clip whole / region and their ratio.
"""

from __future__ import annotations

import argparse
import os

from pipelines.clips import train_steps_pipeline
from vidact.bench.machine import tree_cpu_seconds
from vidact.clip.spec import ClipSpec
from vidact.shards import JPEG_EXT, ShardSet


def cpu_ms_per_clip(shards: ShardSet, spec: ClipSpec, upto: str, roi: bool, batch: int, threads: int,
                    batches: int) -> float:
    pipe = train_steps_pipeline(files=shards.tars("train"), index_files=shards.indexes("train"),
                                video_ext=shards.video_ext, spec=spec, upto=upto, roi=roi, batch_size=batch,
                                num_threads=threads, device_id=None, seed=0, prefetch_queue_depth=2)
    pipe.build()
    for _ in range(3):  # warm-up: buffers, thread pools
        pipe.run()
    started = tree_cpu_seconds()
    for _ in range(batches):
        pipe.run()
    return 1000 * (tree_cpu_seconds() - started) / (batches * batch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidact.bench.jpeg_roi", description=__doc__.split("\n\n")[0])
    p.add_argument("shards", help="a JPEG-frames shard set (make_shards --codec jpeg)")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    p.add_argument("--size", type=int, default=112, help="crop size (default 112)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batches", type=int, default=30, help="timed batches per figure (default 30)")
    a = p.parse_args(argv)
    shards = ShardSet.open(a.shards)
    if shards.video_ext != JPEG_EXT:
        p.error(f"{a.shards}: a {shards.codec} set; the region decode is for JPEG frames (make_shards --codec jpeg)")
    for t in a.frames:
        spec = ClipSpec(frames_per_clip=t, crop_size=a.size, ratio=1.0)
        for upto in ("decode", "resize"):
            whole, region = (cpu_ms_per_clip(shards, spec, upto, roi, a.batch, a.threads, a.batches)
                             for roi in (False, True))
            print(f"T={t} {upto:6s}: whole frames {whole:.1f} CPU ms/clip, region {region:.1f} "
                  f"({whole / region:.2f}x)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
