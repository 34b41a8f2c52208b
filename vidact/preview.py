"""Look at what a loader produces: `python -m vidact.preview --shards DIR --out sheet.png`.

Writes a PNG contact sheet of a few batches (one row per clip or view, frames left to right,
label and id written on each row); with an ``.npz`` path, the raw tensors with ids, labels and
the decoded frame indices instead. Use it to check augmentations, and to compare loaders.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vidact import cli
from vidact.clip.sampling import WINDOW_MODES
from vidact.clip.spec import DTYPES, NORMALIZATION, ClipSpec
from vidact.data import LOADERS, MODES, build_loader
from vidact.files import check_output
from vidact.shards import ShardError, ShardSet

log = logging.getLogger("vidact.preview")


def collect(loader, batches: int) -> dict[str, np.ndarray]:
    """The first `batches` batches as numpy arrays: video (float32), label, ids, info fields."""
    videos, labels, ids, info = [], [], [], {}
    for i, batch in enumerate(loader):
        if i == batches:
            break
        videos.append(batch.video.float().cpu().numpy())
        labels.append(batch.label.cpu().numpy())
        ids.extend(batch.ids)
        for k, v in batch.info.items():
            info.setdefault(k, []).append(v)
    if not videos:
        raise ShardError("the loader produced no batch (split smaller than one batch?)")
    out = {"video": np.concatenate(videos), "label": np.concatenate(labels), "ids": np.asarray(ids)}
    out.update({k: np.concatenate(v) for k, v in info.items()})
    return out


def contact_sheet(video: np.ndarray, captions: list[str], spec: ClipSpec, tile: int = 96) -> Image.Image:
    """Rows of frames from normalized ``(N, T, C, H, W)`` clips (views flattened into rows)."""
    mean = np.asarray(spec.mean, np.float32).reshape(1, 1, 3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, 1, 3, 1, 1)
    pixels = np.clip((video * std + mean) * 255.0, 0, 255).astype(np.uint8)
    n, t = pixels.shape[:2]
    label_h = 14
    sheet = Image.new("RGB", (t * tile, n * (tile + label_h)), "black")
    draw = ImageDraw.Draw(sheet)
    for r in range(n):
        y = r * (tile + label_h)
        draw.text((2, y + 1), captions[r], fill="white")
        for c in range(t):
            frame = Image.fromarray(pixels[r, c].transpose(1, 2, 0)).resize((tile, tile))
            sheet.paste(frame, (c * tile, y + label_h))
    return sheet


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("vidact.preview", __doc__)
    p.add_argument("--shards", required=True, help="shard set (make_shards output): folder or s3://bucket/prefix")
    p.add_argument("--split", default="train", help="split to read (default train)")
    cli.add_loader_flags(p, LOADERS)
    p.add_argument("--mode", choices=MODES, default="train",
                   help="train (random resized crop, flip), eval (center crop) or multiview (crops and flips)")
    p.add_argument("--out", type=Path, required=True, help=".png contact sheet or .npz tensors")
    p.add_argument("--batches", type=int, default=1, help="batches to show (default 1)")
    p.add_argument("--batch-size", type=int, default=4, help="clips per batch (default 4)")
    p.add_argument("--frames", dest="frames_per_clip", type=int, default=8, help="frames per clip, T (default 8)")
    p.add_argument("--crop-size", type=int, default=112, help="crop size in pixels, square (default 112)")
    p.add_argument("--ratio", type=float, default=1.0, help="observation ratio in (0, 1] (default 1.0)")
    p.add_argument("--window", choices=WINDOW_MODES, default="middle",
                   help="observation window placement (default middle)")
    p.add_argument("--norm", choices=sorted(NORMALIZATION), default="imagenet",
                   help="normalization statistics (default imagenet)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="clips' dtype (default fp32)")
    p.add_argument("--clips", type=int, default=1,
                   help="temporal clips of --mode multiview, each shown as 3 crops x 2 flips (evaluate's --views "
                        "counts all of them: --clips 2 is --views 12)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train draws and shuffling (default 0)")
    cli.add_device_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_output(args.out, "file")
        spec = ClipSpec(frames_per_clip=args.frames_per_clip, crop_size=args.crop_size, norm=args.norm,
                        dtype=args.dtype, ratio=args.ratio, window=args.window).check()
        shards = ShardSet.open(args.shards)
        if args.mode == "train" and shards.count(args.split) < args.batch_size:  # train hands out full batches
            raise cli.UsageError(f"{shards.root}: the {args.split} split has {shards.count(args.split)} clips, fewer "
                                 f"than one train batch of {args.batch_size}; lower --batch-size")
        loader = build_loader(shards, args.split, loader=args.loader, mode=args.mode, spec=spec,
                              batch_size=args.batch_size, device=args.device, seed=args.seed,
                              workers=args.dali_threads if args.loader == "dali" else args.workers,
                              num_clips=args.clips if args.mode == "multiview" else 1, shuffle_buffer=16)
        data = collect(loader, args.batches)
    except (ShardError, ValueError, cli.UsageError) as e:
        return cli.fail(parser, e)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".npz":
        np.savez_compressed(args.out, **data)
    else:
        video = data["video"]
        classes = shards.classes
        names = [classes[i] if 0 <= i < len(classes) else "?" for i in data["label"]]
        captions = [f"{cid}  {name} ({lab})" for cid, name, lab in zip(data["ids"], names, data["label"])]
        if video.ndim == 6:  # multiview: one row per view
            v = video.shape[1]
            captions = [f"{c}  view {j}" for c in captions for j in range(v)]
            video = video.reshape(-1, *video.shape[2:])
        contact_sheet(video, captions, spec).save(args.out)
    log.info("%s: %d clips from %s/%s (%s, %s)", parser.prog, len(data["ids"]), args.shards, args.split,
             args.loader, args.mode)
    cli.said(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
