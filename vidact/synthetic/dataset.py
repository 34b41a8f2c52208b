"""Write a synthetic dataset: the clips in one of three layouts, the tables, the marker.

Layouts (``--layout``):

* ``videos`` (default, UCF-101 style): ``OUT/{label}/{id}.avi``, MPEG-4 part 2 ("mpeg4") in
  AVI, yuv420p, GOP 12, no B-frames; sizes, fps and durations (2..5 s) vary per clip.
* ``frames`` (Kaggle HMDB style): ``OUT/{label}/{id}/frame_0001.jpg ...``, 5..20 JPEG frames
  per clip.
* ``unlabeled``: ``OUT/{id}.avi`` only (no label folders), ``--test-per-class`` clips per class,
  with the answers in ``OUT/answers.csv`` (``id,label``).

Labeled layouts also get ``OUT/train.csv``, ``OUT/val.csv``, ``OUT/test.csv`` (``id,label,split``)
and ``OUT/dictionary.json`` (``{label: class_id}``, ids 0..C-1 in sorted label order). Every
layout gets ``OUT/ground_truth.json``: ``id -> {fps, num_frames, width, height, action_start,
action_end}`` (0-based, inclusive frame indices of the action).

The dataset is written to a temporary sibling folder and moved into place when complete;
re-running with the same options is a no-op (``--force`` regenerates).
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from vidact.files import atomic_dir
from vidact.synthetic.plan import LAYOUTS, SPLITS, Shapes, _plan, _split_counts, class_names, render_planned

log = logging.getLogger("make_synthetic")

# Bump when the rendered content changes: a dataset written by another version is regenerated.
GENERATOR_VERSION = 2
MARKER = ".make_synthetic.json"
GOP_SIZE = 12
MPEG4_QSCALE = 3  # 2 (best) .. 31; 3 keeps the bar's edges sharp at a few hundred kB per clip
JPEG_QUALITY = 90
FF_QP2LAMBDA = 118  # libavcodec's qscale -> lambda factor (global_quality is in lambda units)


def _write_planned(job: tuple) -> tuple[str, dict[str, int]]:
    """Render and write one clip of the plan (in a worker process); its ground-truth entry."""
    root, layout, seed, index, clip_id, label, shapes = job
    frames, info = render_planned(seed, index, label, layout, shapes)
    _write_clip(root, layout, clip_id, label, frames, info.fps)
    return clip_id, info.__dict__.copy()


@contextmanager
def _pool(workers: int) -> Iterator[Callable]:
    """An unordered ``map`` over ``workers`` processes (in this process for 1)."""
    if workers <= 1:
        yield map
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield lambda fn, jobs: pool.imap_unordered(fn, jobs, chunksize=4)


def write_avi(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode (T, H, W, 3) RGB frames as MPEG-4 part 2 in AVI (yuv420p, GOP 12, fixed qscale)."""
    _, height, width, _ = frames.shape
    if width % 2 or height % 2:
        raise ValueError(f"yuv420p needs an even width and height, got {width}x{height}")
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = GOP_SIZE
        stream.codec_context.thread_count = 1  # bit-identical output run to run
        stream.options = {
            "flags": "+qscale",
            "global_quality": str(MPEG4_QSCALE * FF_QP2LAMBDA),
            "bf": "0",
        }
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf.reformat(format="yuv420p", threads=1)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_jpegs(folder: Path, frames: np.ndarray) -> None:
    """Write frames as ``frame_0001.jpg``, ``frame_0002.jpg``, ... in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"frame_{i:04d}.jpg", quality=JPEG_QUALITY)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_clip(root: Path, layout: str, clip_id: str, label: str, frames: np.ndarray, fps: int) -> None:
    """One clip where ``layout`` puts it: an AVI in its label folder, a JPEG folder, or a bare AVI."""
    if layout == "videos":
        (root / label).mkdir(exist_ok=True)
        write_avi(root / label / f"{clip_id}.avi", frames, fps)
    elif layout == "frames":
        write_jpegs(root / label / clip_id, frames)
    else:
        write_avi(root / f"{clip_id}.avi", frames, fps)


def _write_tables(root: Path, layout: str, plan: list[tuple[str, str, str]], names: Sequence[str],
                  truth: dict[str, dict[str, int]], params: dict[str, Any]) -> None:
    """The split CSVs and dictionary (or the answers of the unlabeled layout), the ground truth
    and the marker that says which options wrote the dataset."""
    by_id = sorted(plan)
    if layout == "unlabeled":
        _write_csv(root / "answers.csv", ("id", "label"), [(i, lab) for i, lab, _ in by_id])
    else:
        for split in SPLITS:
            rows = [row for row in by_id if row[2] == split]
            _write_csv(root / f"{split}.csv", ("id", "label", "split"), rows)
        dictionary = {name: k for k, name in enumerate(sorted(names))}
        (root / "dictionary.json").write_text(json.dumps(dictionary, indent=2) + "\n")
    (root / "ground_truth.json").write_text(
        json.dumps(dict(sorted(truth.items())), indent=1) + "\n"
    )
    (root / MARKER).write_text(json.dumps(params, indent=2) + "\n")


def _up_to_date(out: Path, params: dict[str, Any], force: bool) -> bool:
    """Whether ``out`` already holds the dataset of ``params``; a non-empty ``out`` this tool did
    not write is refused."""
    if not out.exists():
        return False
    marker = out / MARKER
    if marker.is_file():
        return not force and json.loads(marker.read_text()) == params
    if not out.is_dir() or any(out.iterdir()):
        raise FileExistsError(f"{out} exists and was not written by make_synthetic.py")
    return False


def make_dataset(
    out: Path,
    layout: str = "videos",
    classes: int = 6,
    train_per_class: int = 12,
    val_per_class: int = 4,
    test_per_class: int = 4,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
    shapes: Shapes = Shapes(),  # noqa: B008 (a frozen dataclass: the shared default cannot change)
    workers: int = 1,
) -> dict[str, Any]:
    """Write the dataset to ``out`` (see the module docstring) and return a summary.

    The summary has the clip count of each split written (``train``/``val``/``test``; only
    ``test`` for the unlabeled layout), ``clips`` (total), ``classes`` (label names),
    ``layout``, ``out`` and ``reused`` (True when ``out`` already held this exact dataset and
    nothing was written). A non-empty ``out`` not written by this tool is never overwritten.
    ``workers`` processes render and encode the clips; the files are the same for any count.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    names = class_names(classes)
    counts = _split_counts(layout, train_per_class, val_per_class, test_per_class)
    out = Path(out)
    params = {
        "generator_version": GENERATOR_VERSION,
        "layout": layout,
        "classes": names,
        "per_class": counts,
        "seed": seed,
        **shapes.as_params(),
    }
    split_counts = {s: c * len(names) for s, c in counts.items() if layout != "unlabeled" or c}
    summary: dict[str, Any] = {
        **split_counts,
        "clips": sum(split_counts.values()),
        "classes": names,
        "layout": layout,
        "out": str(out),
        "reused": False,
    }
    if _up_to_date(out, params, force):
        log.info("%s already holds this dataset; nothing to do (--force rewrites)", out)
        return {**summary, "reused": True}

    plan = _plan(layout, names, counts, seed)
    with atomic_dir(out) as tmp:
        jobs = [(tmp, layout, seed, index, clip_id, label, shapes) for index, (clip_id, label, _) in enumerate(plan)]
        truth: dict[str, dict[str, int]] = {}
        with _pool(workers) as pool:
            # Each clip comes from its own generator: the files do not depend on the worker count.
            for clip_id, info in tqdm(pool(_write_planned, jobs), total=len(jobs), desc=f"synthetic {layout}",
                                      unit="clip", disable=not progress):
                truth[clip_id] = info
        _write_tables(tmp, layout, plan, names, truth, params)
    log.info("wrote %d clips (%s layout) to %s", summary["clips"], layout, out)
    return summary
