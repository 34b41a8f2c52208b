"""What resuming a DALI train epoch costs: the time to the first batch of a loader resumed at a
fraction of an epoch, against the time the skipped part took in an uninterrupted epoch, with the
same next batch asserted. Usage:

    python -m vidact.bench.resume_cost SHARDS [--at 0.9] [--rounds 2] [--json OUT]

The loader is the demo recipe's (T=16, 64 px, batch 8, prefix windows at r=0.9) on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from vidact.clip.spec import ClipSpec
from vidact.data import build_loader

SPEC = ClipSpec(frames_per_clip=16, crop_size=64, ratio=0.9, window="prefix", flip=0.0)


def one_round(shards: str, at: float, workers: int) -> dict:
    """An uninterrupted epoch (its time, and the time of its first `at` share), then a loader
    resumed there: the time to its first batch, which must be the uninterrupted epoch's next."""
    def loader(resume=None):
        return build_loader(shards, "train", "dali", "train", SPEC, 8, device="cpu", seed=0, workers=workers,
                            resume=resume)

    started = time.perf_counter()
    straight = loader()
    skip = int(at * len(straight))
    for i, batch in enumerate(straight):
        if i == skip - 1:
            skipped = time.perf_counter() - started
        if i == skip:
            following = batch.ids
    epoch = time.perf_counter() - started
    started = time.perf_counter()
    first = next(iter(loader({"epoch": 0, "batches": skip})))
    resumed = time.perf_counter() - started
    if first.ids != following:
        raise AssertionError(f"the resumed loader's first batch {first.ids} is not the epoch's {following}")
    return {"batches": len(straight), "skipped_batches": skip, "epoch_s": epoch, "skipped_s": skipped,
            "resume_first_s": resumed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shards")
    p.add_argument("--at", type=float, default=0.9, help="fraction of the epoch already trained (default 0.9)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="DALI threads (default 2)")
    p.add_argument("--json", help="write the rounds and their medians here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rounds = [one_round(args.shards, args.at, args.workers) for _ in range(args.rounds)]
    medians = {k: statistics.median(r[k] for r in rounds) for k in ("epoch_s", "skipped_s", "resume_first_s")}
    medians["resume_vs_skipped"] = medians["resume_first_s"] / medians["skipped_s"]
    report = {"shards": args.shards, "at": args.at, "rounds": rounds, "median": medians}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(medians))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
