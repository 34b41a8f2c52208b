"""How a loader starts on a shard set in object storage, by shard count: seconds, requests (and of
them, DALI index requests) and bytes until the loader is built and until its first batch, for
sets of the same clips in different shard counts (``vidact-shards --shard-size-mb``), each copied
to the local S3 server the tests use (`vidact.bench.local_s3`). A train loader builds its readers
anew every epoch: the next epoch's start (readers only) is measured too.

    python -m vidact.bench.s3_start SET [SET ...] [--loader dali torch] [--json OUT]

The loader is a small train one on the CPU (T = 4, 32 px, batch 8, a 32-sample shuffle buffer),
so that what is measured is the start, not the pixels. Seconds are the local server's: a real
object store adds its latency to every request made one after another.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vidact import cli
from vidact.bench.local_s3 import LocalS3, Served
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.shards import ShardSet

SPEC = ClipSpec(frames_per_clip=4, crop_size=32)


def measured(s3: LocalS3, step) -> tuple[object, Served, float]:
    """`step()`'s result, what the server served meanwhile and its seconds."""
    before, started = s3.served(), time.perf_counter()
    out = step()
    return out, s3.served() - before, time.perf_counter() - started


def row(what: str, served: Served, seconds: float) -> dict:
    return {f"{what}_s": round(seconds, 3), f"{what}_requests": served.requests,
            f"{what}_index_requests": served.index_requests, f"{what}_head_requests": served.head_requests,
            f"{what}_bytes": served.bytes}


def one_set(s3: LocalS3, folder: str, loader: str, batch_size: int, workers: int) -> dict:
    """Uploads `folder` and measures `loader`'s build, first batch and next epoch's start there."""
    local = ShardSet.open(folder)
    url = s3.upload_set(folder, f"start/{Path(folder).name}")

    def build():
        return build_loader(url, "train", loader, "train", SPEC, batch_size, device="cpu", workers=workers,
                            shuffle_buffer=32)

    L, built, built_s = measured(s3, build)
    it = iter(L)
    _, first, first_s = measured(s3, lambda: next(it))
    out = {"set": folder, "loader": loader, "shards": len(local.tars("train")), "samples": local.count("train"),
           **row("build", built, built_s), **row("first_batch", first, first_s)}
    if loader == "dali":  # the readers of the next epoch, as the trainer starts them
        _, nxt, nxt_s = measured(s3, lambda: L.start_epoch(1))  # the step a new epoch runs
        out.update(row("next_epoch_readers", nxt, nxt_s))
    return out


def table(rows: list[dict]) -> str:
    lines = ["| loader | shards | build: s, requests (index) | first batch: s, requests, MB | next epoch's readers: "
             "s, requests (index) |", "|---|---|---|---|---|"]
    for r in rows:
        nxt = (f"{r['next_epoch_readers_s']:.2f} s, {r['next_epoch_readers_requests']} "
               f"({r['next_epoch_readers_index_requests']})" if "next_epoch_readers_s" in r else "-")
        lines.append(f"| {r['loader']} | {r['shards']} | {r['build_s']:.2f} s, {r['build_requests']} "
                     f"({r['build_index_requests']}) | {r['first_batch_s']:.2f} s, {r['first_batch_requests']}, "
                     f"{r['first_batch_bytes'] / 1e6:.1f} | {nxt} |")
    return "\n".join(lines)


def build_parser():
    p = cli.parser("vidact.bench.s3_start", __doc__)
    p.add_argument("sets", nargs="+", help="shard sets (folders) of the same clips in different shard counts")
    p.add_argument("--loader", nargs="+", choices=("dali", "torch"), default=["dali", "torch"],
                   help="loaders to measure (default: both)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch (default 8)")
    p.add_argument("--workers", type=int, default=2, help="DALI threads or DataLoader workers (default 2)")
    p.add_argument("--json", type=Path, help="write the rows here too")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    with LocalS3() as s3:
        rows = [one_set(s3, folder, loader, args.batch_size, args.workers)
                for folder in args.sets for loader in args.loader]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
        cli.said(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
