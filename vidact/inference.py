"""The inference core under `vidact.evaluate` and `vidact.predict`: a checkpoint read once, the
clip spec it was trained with, and the logits of every clip of a split (per source video for a
set made with ``make_shards --max-seconds``).

    result = infer(ckpt_path, shards, "test", views=3)
    result.predictions.logits  # (clips or sources, classes)

Keyword arguments, not a command line: the two commands parse their flags and call `infer`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist

from vidact import cli
from vidact.checkpoint import CheckpointError
from vidact.clip.sampling import WINDOW_MODES, views_layout
from vidact.clip.spec import ClipSpec, dtype_name
from vidact.data import LOADERS, LoaderSettings
from vidact.engine import Env, Predictions, amp_dtype, predict_logits, setup_env
from vidact.models import add_factory_flag, load_checkpoint_model
from vidact.shards import ShardError, ShardSet, source_id_of


def load_model(ckpt_path: str | Path, device: torch.device, factory: str | None = None) -> tuple[torch.nn.Module, dict]:
    """The model of a checkpoint (best.pt or last.pt) in eval mode, and the checkpoint dict (read
    once: `vidact.models.load_checkpoint_model`); `factory`: the user's model code, named by them."""
    return load_checkpoint_model(ckpt_path, device, factory)


def clip_spec_of(state: dict, env: Env, ratio: float | None = None, window: str | None = None) -> ClipSpec:
    """The clip spec the checkpoint was trained with, in this device's dtype; ratio and window
    may be overridden."""
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
    skipped: list[str] = field(default_factory=list)  # damaged samples left out, every rank's


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


def infer(ckpt: str | Path, shards: str | Path | ShardSet, split: str, *, views: int = 1, loader: str = "dali",
          batch_size: int = 4, workers: int | None = None, dali_threads: int | None = None, ratio: float | None = None,
          window: str | None = None, device: str | None = None, need_labels: bool = False,
          max_bad_samples: int | None = None, factory: str | None = None) -> Inference:
    """Logits of every clip of `split` under the model of `ckpt`, averaged over `views` (1, or
    3k / 6k: k temporal clips x 3 crops, x 2 flips for 6k). `need_labels` refuses unlabeled clips.
    Under torchrun every rank reads its share and all get every clip's logits. `factory`: a custom
    model's ``package.module:factory``, which the checkpoint names but never imports by itself."""
    env = setup_env(device)
    shards = shards if isinstance(shards, ShardSet) else ShardSet.open(shards)  # a wrong path before any loading
    shards.tars(split)
    model, state = load_model(ckpt, env.device, factory)
    classes = state["classes"]
    if shards.classes and shards.classes != classes:
        raise CheckpointError(f"{ckpt}: trained on {len(classes)} classes, {shards.root} has "
                              f"{len(shards.classes)} (or other names): not the same label set")
    if views != 1:
        views_layout(views)
    spec = clip_spec_of(state, env, ratio, window)
    settings = LoaderSettings(loader=loader, batch_size=batch_size, workers=workers, dali_threads=dali_threads,
                              max_bad_samples=max_bad_samples)
    clips = settings.build(shards, split, "eval", spec, env.device, env.rank, env.world_size, views=views)
    _, predictions = predict_logits(model, clips, env, amp_dtype(env, "auto"), len(classes), desc=split)
    skipped = list(clips.skipped)
    if env.world_size > 1:
        shares: list = [None] * env.world_size
        dist.all_gather_object(shares, skipped)
        skipped = [s for share in shares for s in share]
    if need_labels and (predictions.labels < 0).any():
        raise ShardError(f"{shards.root} split '{split}' has unlabeled clips: use vidact.predict")
    if shards.manifest.get("max_seconds") is None:
        return Inference(predictions, classes, spec, state, writer=env.main, skipped=skipped)
    return Inference(by_source(predictions), classes, spec, state, writer=env.main, segments=len(predictions.ids),
                     skipped=skipped)


# `infer`'s keywords that both commands take as flags of the same name.
FLAGS = ("views", "loader", "batch_size", "workers", "dali_threads", "ratio", "window", "device", "max_bad_samples",
         "factory")


def add_flags(p: argparse.ArgumentParser, videos: bool = False) -> None:
    """The flags of `evaluate` and `predict`: the checkpoint, the shard set (or, with `videos`,
    video files instead) and `FLAGS`."""
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint (best.pt or last.pt) of vidact.train")
    add_factory_flag(p)
    source = p.add_mutually_exclusive_group(required=True) if videos else p
    source.add_argument("--shards", required=not videos, help="shard set: folder or s3://bucket/prefix")
    if videos:
        source.add_argument("--videos", type=Path, nargs="+", metavar="PATH",
                            help="video files, or folders of them (any container FFmpeg opens), instead of shards: "
                                 "decoded on the CPU by the reference path, same frames, views and transforms")
        p.add_argument("--clip-timeout", type=float, default=600.0,
                       help="--videos: seconds one file may take to probe and decode before its worker is killed "
                            "and the file reported (default 600)")
    p.add_argument("--views", type=int, default=1,
                   help="1, or TTA views, their logits averaged: 3k = k temporal clips x 3 crops, 6k = the same x 2 "
                        "flips (6 = 1 clip x 3 crops x 2 flips)")
    cli.add_loader_flags(p, LOADERS)
    p.add_argument("--batch-size", type=int, default=4, help="clips per batch (default 4)")
    p.add_argument("--max-bad-samples", type=int, metavar="N",
                   help="damaged samples to leave out (listed in the output) before stopping (default: 1 %% of the "
                        "split, at least 10)")
    p.add_argument("--ratio", type=float, help="observation ratio (default: the checkpoint's)")
    p.add_argument("--window", choices=WINDOW_MODES, help="window placement (default: the checkpoint's)")
    cli.add_device_flag(p)


def infer_flags(args: argparse.Namespace, need_labels: bool) -> Inference:
    """`infer` with the flags of `add_flags`."""
    return infer(args.ckpt, args.shards, args.split, need_labels=need_labels,
                 **{k: getattr(args, k) for k in FLAGS})
