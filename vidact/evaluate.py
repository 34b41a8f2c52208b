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
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vidact import checkpoint
from vidact.checkpoint import CheckpointError
from vidact.clip.sampling import WINDOW_MODES, views_layout
from vidact.clip.spec import ClipSpec, dtype_name
from vidact.data import LOADERS
from vidact.engine import Env, LoaderSettings, Predictions, amp_dtype, predict_logits, setup_env
from vidact.files import atomic_write_json
from vidact.metrics import confusion_matrix, summarize
from vidact.models import create_model
from vidact.plots import plot_confusion
from vidact.shards import ShardError, ShardSet, source_id_of

log = logging.getLogger("vidact.evaluate")


def load_for_inference(ckpt_path: Path, env: Env) -> tuple[torch.nn.Module, dict]:
    """The model of a checkpoint (best.pt or last.pt) in eval mode, and the checkpoint dict."""
    state = checkpoint.load(ckpt_path, "cpu")
    cfg = state["model_config"]
    model = create_model(cfg["family"], cfg["num_classes"], cfg["size"], cfg["num_frames"], cfg["image_size"],
                         weights=ckpt_path)
    return model.to(env.device).eval(), state


def spec_of(state: dict, env: Env, ratio: float | None, window: str | None) -> ClipSpec:
    """The clip spec the checkpoint was trained with; ratio/window may be overridden."""
    changes = {"dtype": dtype_name(amp_dtype(env, "auto"))}
    if ratio is not None:
        changes["ratio"] = ratio
    if window is not None:
        changes["window"] = window
    return replace(ClipSpec.from_dict(state["spec"]), **changes).check()


@dataclass
class Inference:
    """Every clip's logits, labels and ids, with the class names and spec they were made with."""

    predictions: Predictions
    classes: list[str]
    spec: ClipSpec
    checkpoint: dict
    writer: bool = True  # False on DDP ranks other than 0: they have read their share, rank 0 writes
    segments: int | None = None  # a --max-seconds set: the segments read (predictions are per source)


def by_source(pred: Predictions) -> Predictions:
    """One row per source video of a segmented set: the mean of its segments' logits (as views
    are averaged), its label (every segment carries its source's), its id (`source_id_of`)."""
    rows: dict[str, list[int]] = {}
    for i, clip_id in enumerate(pred.ids):
        rows.setdefault(source_id_of(clip_id), []).append(i)
    if not rows:
        return pred
    for source, r in rows.items():
        if (pred.labels[r] != pred.labels[r[0]]).any():
            raise ShardError(f"segments of {source} carry different labels: {sorted(set(pred.labels[r].tolist()))}")
    return Predictions(torch.stack([pred.logits[r].mean(0) for r in rows.values()]),
                       torch.stack([pred.labels[r[0]] for r in rows.values()]), list(rows))


def inference(args: argparse.Namespace, need_labels: bool) -> Inference:
    """Shared by evaluate and predict: logits of every clip of a split."""
    env = setup_env(args.device)
    model, state = load_for_inference(args.ckpt, env)
    shards = ShardSet.open(args.shards)
    classes = state["classes"]
    if shards.classes and shards.classes != classes:
        raise CheckpointError(f"{args.ckpt}: trained on {len(classes)} classes, {args.shards} has "
                              f"{len(shards.classes)} (or other names): not the same label set")
    if args.views != 1:
        views_layout(args.views)
    spec = spec_of(state, env, args.ratio, args.window)
    loaders = LoaderSettings(loader=args.loader, batch_size=args.batch_size, workers=args.workers)
    loader = loaders.build(shards, args.split, "eval", spec, env, views=args.views)
    _, predictions = predict_logits(model, loader, env, amp_dtype(env, "auto"), len(classes), desc=args.split)
    if need_labels and (predictions.labels < 0).any():
        raise ShardError(f"{args.shards} split '{args.split}' has unlabeled clips: use vidact.predict")
    if shards.manifest.get("max_seconds") is None:
        return Inference(predictions, classes, spec, state, writer=env.main)
    return Inference(by_source(predictions), classes, spec, state, writer=env.main, segments=len(predictions.ids))


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint (best.pt or last.pt)")
    p.add_argument("--shards", required=True, help="shard set: folder or s3://bucket/prefix")
    p.add_argument("--views", type=int, default=1, help="1, or TTA views: 6 = 1 clip x 3 crops x 2 flips")
    p.add_argument("--loader", choices=LOADERS, default="dali")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--ratio", type=float, help="observation ratio (default: the checkpoint's)")
    p.add_argument("--window", choices=WINDOW_MODES, help="window placement (default: the checkpoint's)")
    p.add_argument("--workers", type=int)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidact.evaluate", description=__doc__.split("\n\n")[0])
    add_common(p)
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--out", type=Path, help="report folder (default: beside the checkpoint)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = inference(args, need_labels=True)
    except (ShardError, CheckpointError, ValueError) as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    if not result.writer:
        return 0
    pred, classes, spec = result.predictions, result.classes, result.spec
    report = summarize(pred.logits, pred.labels, classes)
    report.update({"checkpoint": str(args.ckpt), "shards": str(args.shards), "split": args.split,
                   "views": args.views, "ratio": spec.ratio, "window": spec.window,
                   "epoch": result.checkpoint.get("epoch")})
    if result.segments is not None:  # counts, top-k, per class, confusion: of source videos
        report.update({"unit": "source", "segments": result.segments})
    out = args.out or args.ckpt.parent
    name = f"eval_{args.split}_v{args.views}"
    atomic_write_json(out / f"{name}.json", report)
    cm = confusion_matrix(pred.logits.argmax(1), pred.labels, len(classes))
    plot_confusion(cm, classes, out / f"{name}_confusion.png")
    print(json.dumps({k: report[k] for k in ("top1", "top5", "count", "views", "split", "unit", "segments")
                      if k in report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
