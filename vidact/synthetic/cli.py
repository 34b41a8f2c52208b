"""The command line of the synthetic dataset generator (``vidact-synthetic``, ``tools/make_synthetic.py``).

Usage::

    python tools/make_synthetic.py OUT [--layout videos|frames|unlabeled] [--classes N]
        [--train-per-class 12] [--val-per-class 4] [--test-per-class 4] [--seed 0] [--force]
        [--square] [--duration MIN MAX] [--workers N]
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from vidact import cli
from vidact.synthetic.dataset import make_dataset
from vidact.synthetic.plan import DURATION_RANGE_S, LAYOUTS, SIZES, SPLITS, SQUARE_SIZES, Shapes
from vidact.synthetic.render import CLASS_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=cli.prog("vidact.synthetic"),
        description=(
            "Write a small seeded synthetic action dataset whose classes need motion: a bright "
            "hand (a bar with a red bulb) moves once around the frame left/right/up/down or turns "
            "clockwise/counter-clockwise in the middle (~20%..80%) of each clip and only jitters at "
            "the ends, with a randomly drifting distractor disc. Clips vary in size, fps and duration."
        ),
        epilog=(
            "layouts: 'videos' writes OUT/{label}/{id}.avi (MPEG-4 part 2 in AVI); 'frames' "
            "writes OUT/{label}/{id}/frame_0001.jpg... (5-20 JPEGs per clip, HMDB style); both "
            "also write OUT/{train,val,test}.csv (id,label,split) and OUT/dictionary.json "
            "({label: id}). 'unlabeled' writes OUT/{id}.avi for --test-per-class clips per class "
            "and OUT/answers.csv (id,label). Every layout writes OUT/ground_truth.json: id -> "
            "{fps, num_frames, width, height, action_start, action_end} (0-based inclusive "
            "frames). Re-running with the same options does nothing; --force rewrites."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("out", type=Path, help="output folder (created; must be new or ours)")
    parser.add_argument("--layout", choices=LAYOUTS, default="videos", help="what to write")
    parser.add_argument(
        "--classes", type=int, default=6, help=f"use the first N of {', '.join(CLASS_NAMES)}"
    )
    parser.add_argument("--train-per-class", type=int, default=12, help="train clips per class")
    parser.add_argument("--val-per-class", type=int, default=4, help="val clips per class")
    parser.add_argument("--test-per-class", type=int, default=4, help="test clips per class")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything")
    parser.add_argument("--force", action="store_true", help="rewrite even if up to date")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="rendering processes (the files are the same for any count)")
    parser.add_argument("--square", action="store_true",
                        help=f"square clips ({', '.join(f'{w}' for w, _ in SQUARE_SIZES)} px) instead of "
                             "mixed 4:3, 11:9 and portrait sizes")
    parser.add_argument("--duration", type=float, nargs=2, metavar=("MIN", "MAX"), default=DURATION_RANGE_S,
                        help="clip durations in seconds ('videos' and 'unlabeled' layouts)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(name)s: %(message)s",
    )
    if not 2 <= args.classes <= len(CLASS_NAMES):
        parser.error(f"--classes must be in 2..{len(CLASS_NAMES)}")
    try:
        summary = make_dataset(
            args.out,
            layout=args.layout,
            classes=args.classes,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            test_per_class=args.test_per_class,
            seed=args.seed,
            force=args.force,
            progress=not args.quiet,
            shapes=Shapes(SQUARE_SIZES if args.square else SIZES, tuple(args.duration)),
            workers=max(1, args.workers),
        )
    except (FileExistsError, ValueError) as exc:
        parser.error(str(exc))
    splits = ", ".join(f"{s}={summary[s]}" for s in SPLITS if s in summary)
    state = "up to date" if summary["reused"] else "written"
    print(f"{summary['out']}: {summary['clips']} clips, {args.layout} layout ({splits}) {state}")
    cli.said(summary["out"])
    return 0
