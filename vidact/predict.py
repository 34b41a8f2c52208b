"""Predict classes: `python -m vidact.predict --ckpt best.pt --shards DIR --out submission.csv`
(or `--videos FILE_OR_FOLDER...` instead of `--shards`).

Writes a submission CSV ``id,class`` (one row per clip, sorted by id) for an unlabeled (or
labeled) split, and beside it ``NAME_topk.csv``: each clip's top-k classes with their
probabilities. Optional multi-view TTA (``--views 6``: 1 clip x 3 crops x 2 flips). For a set
made with ``make_shards --max-seconds``, one row per source video (its id before ``@``): the
logits of its segments averaged. ``--videos`` reads video files as they are (ids are the file
stems), with the frames, views and transforms used on shards; a file that cannot be read is
reported in one line and the rest predicted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vidact import cli
from vidact.checkpoint import CheckpointError
from vidact.files import atomic_write_csv, check_output
from vidact.inference import FLAGS, add_flags, infer_flags
from vidact.predict_videos import predict_videos
from vidact.shards import ShardError


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("vidact.predict", __doc__)
    add_flags(p, videos=True)
    p.add_argument("--split", default="test", help="split to predict (default test)")
    p.add_argument("--top-k", type=int, default=5, help="classes per clip in the top-k file (default 5)")
    p.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_output(args.out, "file")
        if args.videos:
            loading = {k: getattr(args, k) for k in FLAGS if k not in ("loader", "dali_threads", "max_bad_samples")}
            result = predict_videos(args.ckpt, args.videos, clip_timeout=args.clip_timeout, **loading)
            pred, classes, what = result.predictions, result.classes, "videos"
            for line in result.unreadable:
                print(f"{p.prog}: skipped {line}", file=sys.stderr)
            if not pred.ids:
                return cli.fail(p, "no video could be read")
        else:
            result = infer_flags(args, need_labels=False)
            if not result.writer:
                return 0
            pred, classes = result.predictions, result.classes
            what = "clips" if result.segments is None else f"source videos ({result.segments} segments)"
    except (ShardError, CheckpointError, ValueError, cli.UsageError) as e:
        return cli.fail(p, e)
    write_predictions(args.out, pred, classes, args.top_k, result.sources if args.videos else None)
    print(f"{p.prog}: {len(pred.ids)} {what}")
    cli.said(args.out, args.out.with_name(f"{args.out.stem}_topk.csv"))
    skipped = [] if args.videos else result.skipped
    if skipped:  # damaged samples left out: listed beside the predictions
        path = args.out.with_name(f"{args.out.stem}_skipped.csv")
        rows = [(f"{shard}: {key}", why) for shard, key, why in (s.split(": ", 2) for s in skipped)]
        atomic_write_csv(path, rows, ["sample", "reason"])
        print(f"{p.prog}: {len(skipped)} damaged samples left out", file=sys.stderr)
        cli.said(path)
    return 0


def write_predictions(out: Path, pred, classes: list[str], top_k: int, sources: list[str] | None) -> None:
    """``out``: ``id,class`` per clip (shards: sorted by id; video files: in the order named, with
    each file beside its id), and beside it ``OUT_topk.csv``, the `top_k` classes and probabilities."""
    by_id = sorted(range(len(pred.ids)), key=lambda i: (len(pred.ids[i]), pred.ids[i]))
    order = range(len(pred.ids)) if sources else by_id
    extra = (lambda i: [sources[i]]) if sources else (lambda i: [])
    top = pred.logits.argmax(1).tolist()
    atomic_write_csv(out, [(pred.ids[i], classes[top[i]], *extra(i)) for i in order],
                     ["id", "class", *(["source"] if sources else [])])
    k = max(1, min(top_k, len(classes)))
    probs, idx = pred.logits.float().softmax(1).topk(k, dim=1)
    topk = [[pred.ids[i], *(x for j in range(k) for x in (classes[idx[i, j]], f"{probs[i, j]:.4f}")), *extra(i)]
            for i in order]
    atomic_write_csv(out.with_name(f"{out.stem}_topk.csv"), topk,
                     ["id", *(f"{c}_{j + 1}" for j in range(k) for c in ("class", "prob")),
                      *(["source"] if sources else [])])


if __name__ == "__main__":
    sys.exit(main())
