"""What resuming a DALI train epoch costs: bytes read and seconds until the first batch of a loader
resumed at 10 %, 50 % and 90 % of an epoch (``state()`` taken there: the readers' checkpoints),
against what the skipped part of an uninterrupted epoch read, with the same next batch asserted.
The readers read without mmap, so ``/proc/self/io`` counts every byte (``rchar``); with
``--local-s3`` the set is copied to a local S3 server (`vidact.bench.local_s3`) and read from there,
and the bytes are those the server sent.

    python -m vidact.bench.resume_cost SHARDS [--at 0.1 0.5 0.9] [--shuffle-buffer 32] [--batch-size 8]
                                              [--local-s3] [--json OUT]

The loader is the demo recipe's (T = 16, 64 px, prefix windows at r = 0.9) on the CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vidact import cli
from vidact.bench.local_s3 import LocalS3
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader

SPEC = ClipSpec(frames_per_clip=16, crop_size=64, ratio=0.9, window="prefix", flip=0.0)


def bytes_read() -> int:
    """Bytes this process (every thread) has passed to read() so far."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"])


def one_point(shards: str, at: float, shuffle_buffer: int, workers: int, bytes_read=bytes_read,
              batch_size: int = 8) -> dict:
    """An uninterrupted epoch up to `at` of it (its bytes and seconds), then a loader resumed there
    from its ``state()``: bytes and seconds until its first batch, which must be the epoch's next."""
    def loader(resume=None):
        return build_loader(shards, "train", "dali", "train", SPEC, batch_size, device="cpu", seed=0, workers=workers,
                            shuffle_buffer=shuffle_buffer, mmap=False, resume=resume)

    read0, started = bytes_read(), time.perf_counter()
    straight = loader()
    skip = max(1, int(at * len(straight)))
    it = iter(straight)
    for _ in range(skip):
        next(it)
    skipped_bytes, skipped_s = bytes_read() - read0, time.perf_counter() - started
    state, following = straight.state(), next(it).ids
    del it, straight
    read0, started = bytes_read(), time.perf_counter()
    resumed = loader(state)
    first = next(iter(resumed))
    resumed_bytes, resumed_s = bytes_read() - read0, time.perf_counter() - started
    if first.ids != following:
        raise AssertionError(f"the resumed loader's first batch {first.ids} is not the epoch's {following}")
    return {"at": at, "batches": len(resumed), "skipped_batches": skip, "skipped_bytes": skipped_bytes,
            "skipped_s": round(skipped_s, 3), "resume_bytes": resumed_bytes, "resume_first_s": round(resumed_s, 3),
            "restored": resumed.restored, "resume_vs_skipped_bytes": round(resumed_bytes / skipped_bytes, 3)}


def build_parser():
    p = cli.parser("vidact.bench.resume_cost", __doc__)
    p.add_argument("shards", help="a shard set (folder or s3://)")
    p.add_argument("--at", type=float, nargs="+", default=[0.1, 0.5, 0.9],
                   help="fractions of the epoch already trained (default 0.1 0.5 0.9)")
    p.add_argument("--shuffle-buffer", type=int, default=32, help="the readers' shuffle buffer (default 32)")
    p.add_argument("--dali-threads", type=int, default=2, help="DALI threads (default 2)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch (default 8, the demo recipe's)")
    p.add_argument("--local-s3", action="store_true",
                   help="copy the set to a local S3 server (moto, the test extra) and count the bytes it serves")
    p.add_argument("--json", type=Path, help="write the points here too")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    def points(shards, counter=bytes_read):
        return [one_point(shards, at, args.shuffle_buffer, args.dali_threads, counter, args.batch_size)
                for at in args.at]

    if args.local_s3:
        with LocalS3() as s3:
            points = points(s3.upload_set(args.shards, "resume-cost"), lambda: s3.served().bytes)
    else:
        points = points(args.shards)
    for p in points:
        print(f"resumed at {p['at']:.0%}: read {p['resume_bytes'] / 1e6:.1f} MB in {p['resume_first_s']:.2f} s before "
              f"its first batch; the skipped {p['skipped_batches']} batches read {p['skipped_bytes'] / 1e6:.1f} MB "
              f"({p['resume_vs_skipped_bytes']:.2f}x){'' if p['restored'] else ' (replayed)'}")
    if args.json:
        args.json.write_text(json.dumps({"shards": args.shards, "local_s3": args.local_s3, "points": points}, indent=2))
        cli.said(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
