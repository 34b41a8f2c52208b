"""Evaluate a checkpoint: `python -m vidact.evaluate --ckpt best.pt --shards DIR --views 6`.

Top-1/top-5 over single-view or multi-view TTA (mean of logits over views), per-class accuracy,
a confusion-matrix PNG and a JSON report. ``--views 6`` is the VideoMAE recipe's protocol: 1 temporal clip
x 3 crops x 2 flips; ``--views 3k`` is k clips x 3 crops (e.g. 15 = 5 x 3), ``6k`` adds flips. A shard set
made with ``make_shards --max-seconds`` is reported per source video: the logits of its segments
averaged (``"unit": "source"`` in the JSON, with the number of segments).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from vidact import cli
from vidact.checkpoint import CheckpointError
from vidact.files import atomic_write_json, check_output
from vidact.inference import add_flags, infer_flags
from vidact.metrics import confusion_matrix, summarize
from vidact.plots import plot_confusion
from vidact.shards import ShardError


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("vidact.evaluate", __doc__)
    add_flags(p)
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--out", type=Path, help="report folder (default: beside the checkpoint)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or args.ckpt.parent
    try:
        check_output(out)
        result = infer_flags(args, need_labels=True)
    except (ShardError, CheckpointError, ValueError, cli.UsageError) as e:
        return cli.fail(p, e)
    if not result.writer:
        return 0
    pred, classes, spec = result.predictions, result.classes, result.spec
    report = summarize(pred.logits, pred.labels, classes)
    report.update({"checkpoint": str(args.ckpt), "shards": str(args.shards), "split": args.split,
                   "views": args.views, "ratio": spec.ratio, "window": spec.window,
                   "epoch": result.checkpoint.get("epoch")})
    report["skipped"] = result.skipped  # damaged samples left out: '<shard>: sample <key>: <reason>'
    if result.segments is not None:  # counts, top-k, per class, confusion: of source videos
        report.update({"unit": "source", "segments": result.segments})
    name = f"eval_{args.split}_v{args.views}"
    atomic_write_json(out / f"{name}.json", report)
    cm = confusion_matrix(pred.logits.argmax(1), pred.labels, len(classes))
    plot_confusion(cm, classes, out / f"{name}_confusion.png")
    print(json.dumps({k: report[k] for k in ("top1", "top5", "count", "views", "split", "unit", "segments")
                      if k in report}))
    cli.said(out / f"{name}.json", out / f"{name}_confusion.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
