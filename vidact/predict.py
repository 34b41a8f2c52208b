"""Predict classes for a split: `python -m vidact.predict --ckpt best.pt --shards DIR --out submission.csv`.

Writes a submission CSV ``id,class`` (one row per clip, sorted by id) for an unlabeled (or
labeled) split, with optional multi-view TTA (``--views 6``: 1 clip x 3 crops x 2 flips). For a
set made with ``make_shards --max-seconds``, one row per source video (its id before ``@``): the
logits of its segments averaged.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vidact.checkpoint import CheckpointError
from vidact.files import atomic_write_csv
from vidact.inference import add_flags, infer_flags
from vidact.shards import ShardError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidact.predict", description=__doc__.split("\n\n")[0])
    add_flags(p)
    p.add_argument("--split", default="test", help="split to predict (default test)")
    p.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = infer_flags(args, need_labels=False)
    except (ShardError, CheckpointError, ValueError) as e:
        print(f"predict: {e}", file=sys.stderr)
        return 2
    if not result.writer:
        return 0
    pred, classes = result.predictions, result.classes
    rows = sorted(zip(pred.ids, (classes[i] for i in pred.logits.argmax(1).tolist())),
                  key=lambda r: (len(r[0]), r[0]))
    atomic_write_csv(args.out, rows, ["id", "class"])
    what = "clips" if result.segments is None else f"source videos ({result.segments} segments)"
    print(f"predict: {len(rows)} {what} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
