"""Predictions on plain video files (``vidact.predict --videos``): no shards to make first.

Each file any container PyAV opens is decoded by the reference loader's path (`vidact.video_io`,
`vidact.data.reference`): the frame count measured by decoding, as `make_shards` measures it, then
the same frame choice, views and transforms as on shards. What differs from predicting on the
file's shards is the codec's loss: frames are scaled as `make_shards` scaled the training set
(the checkpoint says how), 16-pixel sides included. Files are
decoded in worker processes; a file that cannot be read is reported in one line and skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from vidact.clip.plan import Planner, SampleTables
from vidact.clip.sampling import views_layout
from vidact.clip.spec import ClipSpec
from vidact.data.reference import collect_before_fork, render
from vidact.engine import Env, Predictions, amp_dtype, average_views, setup_env
from vidact.ids import assign_ids
from vidact.inference import clip_spec_of, load_model
from vidact.killable import Failed, run_killable
from vidact.video_io import VideoError, decode_counted, iter_frames, output_size
from vidact.video_probe import VIDEO, probe_file

log = logging.getLogger(__name__)


def list_videos(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """The files named, and the files under the folders named (sorted, hidden ones left out);
    and one line per path that does not exist."""
    files, missing = [], []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not any(
                part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            files.append(p)
        else:
            missing.append(f"{p}: no such file or folder")
    return list(dict.fromkeys(files)), missing


@dataclass
class VideoFile:
    """A file and its row id (`vidact.ids.assign_ids` sets ``id`` and ``key``)."""

    path: Path
    id: str
    key: str = ""


def video_ids(files: list[Path]) -> list[str]:
    """A row id per file, as `make_shards` would give its clip: the stem, longer only where
    stems collide (`vidact.ids.assign_ids`, below the folder the files share)."""
    entries = [VideoFile(Path(os.path.abspath(f)), f.stem) for f in files]  # relative and absolute alike
    if entries:
        assign_ids(entries, Path(os.path.commonpath([e.path.parent for e in entries])))
    return [e.id for e in entries]


def video_clip(path: Path, spec: ClipSpec, views: int, geometry: dict) -> torch.Tensor:
    """The model input of one file: ``(T, C, H, W)``, or ``(V, T, C, H, W)`` for ``views > 1``.
    Frames are scaled as `make_shards` scaled the training clips (`geometry`: its ``short_side``
    and ``min_side``, sides on the 16-pixel grid) before the eval transform, so the model sees
    what it saw on shards."""
    probe = probe_file(path)  # text, still images, broken files: said, not decoded
    if probe.verdict != VIDEO:
        raise VideoError(probe.reason)
    count = height = width = 0
    for frame in iter_frames(path):
        count, height, width = count + 1, frame.height, frame.width
    if count < 2:
        raise VideoError("not a video (a single frame)" if count else "no frames decode")
    size = output_size(width, height, geometry.get("short_side"), geometry.get("min_side") or 0,
                       geometry.get("align") or 16)
    num_clips, flip = views_layout(views) if views > 1 else (1, False)
    planner = Planner(spec, "multiview" if views > 1 else "eval", num_clips, 3, flip)
    plan = planner(SampleTables(count, size[1], size[0]), path.stem)
    frames, _decoded = decode_counted(path, plan.distinct, size=size)
    return render(frames, plan, spec, multiview=views > 1)


def file_clip(job: tuple) -> tuple:
    """``(clip or None, error or None)`` of one file, in a killable worker (`vidact.killable`):
    ``job`` is (path, spec, views, geometry)."""
    torch.set_num_threads(1)  # as a DataLoader worker: torch's thread pool, forked, would deadlock
    try:
        return video_clip(*job), None
    except (VideoError, OSError, ValueError, RuntimeError) as e:
        return None, str(e).splitlines()[0] if str(e) else e.__class__.__name__


@dataclass
class VideoPredictions:
    predictions: Predictions  # one row per file that could be read, in the order the files were named
    classes: list[str]
    sources: list[str]  # each row's file, as named
    unreadable: list[str] = field(default_factory=list)  # one line per file skipped, naming it


def predict_videos(ckpt: str | Path, paths: list[Path], *, views: int = 1, batch_size: int = 4,
                   workers: int | None = None, ratio: float | None = None, window: str | None = None,
                   device: str | None = None, clip_timeout: float = 600.0,
                   factory: str | None = None) -> VideoPredictions:
    """Logits of every video file under `paths` under the model of `ckpt` (views as `infer`);
    each file is probed and decoded in a worker process killed after `clip_timeout` seconds."""
    env = setup_env(device)
    model, state = load_model(ckpt, env.device, factory)
    if views != 1:
        views_layout(views)
    spec = clip_spec_of(state, env, ratio, window)
    files, unreadable = list_videos(paths)
    ids = video_ids(files)
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    geometry = state.get("shards_encode")
    if geometry is None:
        geometry = {"short_side": None, "min_side": 128}
        log.info("%s: the checkpoint does not say how its shards were scaled; assuming make_shards' defaults "
                 "(--min-side 128, no --short-side)", ckpt)
    collect_before_fork(workers)
    clips = run_killable(file_clip, [(f, spec, views, geometry) for f in files], max(1, workers), clip_timeout)
    logits, kept, sources = [], [], []
    for batch, rows in _batches(clips, batch_size, files, unreadable, len(files)):
        logits.append(_forward(model, batch.to(env.device), env))
        kept += [ids[i] for i in rows]
        sources += [str(files[i]) for i in rows]
    classes = list(state["classes"])
    out = torch.cat(logits) if logits else torch.empty(0, len(classes))
    labels = torch.full((len(kept),), -1, dtype=torch.int64)
    return VideoPredictions(Predictions(out, labels, kept), classes, sources, unreadable)


def _batches(clips: Iterator, batch_size: int, files: list[Path], unreadable: list[str],
             total: int) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """Readable clips (``file_clip`` results, or `Failed`, in file order) stacked `batch_size` at a
    time with their file indices; a failure is added to `unreadable` (one line naming the file)."""
    pending: list[tuple[int, torch.Tensor]] = []
    for i, done in enumerate(tqdm(clips, total=total, desc="videos", unit="video", mininterval=1.0)):
        clip, error = (None, done.reason) if isinstance(done, Failed) else done
        if error is not None:
            unreadable.append(f"{files[i]}: {error}")
            continue
        pending.append((i, clip))
        if len(pending) == batch_size:
            yield torch.stack([c for _, c in pending]), [i for i, _ in pending]
            pending = []
    if pending:
        yield torch.stack([c for _, c in pending]), [i for i, _ in pending]


@torch.no_grad()
def _forward(model: torch.nn.Module, video: torch.Tensor, env: Env) -> torch.Tensor:
    """Logits of a batch of clips (multiview: one forward over all views, logits averaged)."""
    amp = amp_dtype(env, "auto")
    with torch.autocast(env.device.type, dtype=amp, enabled=amp is not None):
        if video.dim() == 6:
            b, v = video.shape[:2]
            return average_views(model(video.flatten(0, 1)).float().view(b, v, -1)).cpu()
        return model(video).float().cpu()
