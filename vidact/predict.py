"""Predict classes for a split: `python -m vidact.predict --ckpt best.pt --shards DIR --out submission.csv`.

Writes a submission CSV ``id,class`` (one row per clip, sorted by id) for an unlabeled (or
labeled) split, with optional multi-view TTA (``--views 6``: 1 clip x 3 crops x 2 flips).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import os
import sys
from pathlib import Path

from vidact.checkpoint import CheckpointError
from vidact.evaluate import add_common, inference
from vidact.shards import ShardError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidact.predict", description=__doc__.split("\n\n")[0])
    add_common(p)
    p.add_argument("--split", default="test", help="split to predict (default test)")
    p.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        logits, _, ids, classes, _, _ = inference(args, need_labels=False)
    except (ShardError, CheckpointError, ValueError) as e:
        print(f"predict: {e}", file=sys.stderr)
        return 2
    preds = logits.argmax(1).tolist()
    rows = sorted(zip(ids, (classes[i] for i in preds)), key=lambda r: (len(r[0]), r[0]))
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "class"])
    writer.writerows(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, args.out)
    print(f"predict: {len(rows)} clips -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
