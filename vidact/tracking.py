"""Experiment tracking beside ``log.csv``: TensorBoard events in every run folder, and Weights &
Biases when asked (``--wandb``; ``WANDB_MODE=offline`` works without a network). Only rank 0
creates a tracker; the CSV, JSON and PNG outputs stay the reference.

Scalars carry the CSV's column names (``train_loss``, ``val_top1``, ``lr``, ``clips_per_s``,
``data_wait``, ...) at step = epoch, so a plot in TensorBoard is a column of ``log.csv``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from vidact.clip.spec import ClipSpec

log = logging.getLogger(__name__)

PREVIEW_CLIPS = 4
PREVIEW_FRAMES = 4


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric, finite entries of a log row, except the step counters themselves."""
    out = {}
    for key, value in row.items():
        if key in ("epoch", "stage") or value in (None, ""):
            continue
        value = float(value)
        if math.isfinite(value):
            out[key] = value
    return out


def preview_grid(video: torch.Tensor, spec: ClipSpec) -> np.ndarray:
    """A few frames of a few clips of a ``(B, T, C, H, W)`` batch, back to 0..1 pixels, as
    ``(N, C, H, W)`` (clip-major)."""
    clips = video[:PREVIEW_CLIPS].detach().float().cpu()
    t = clips.shape[1]
    picks = sorted({round(i * (t - 1) / max(PREVIEW_FRAMES - 1, 1)) for i in range(PREVIEW_FRAMES)})
    frames = clips[:, picks].flatten(0, 1)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (frames * std + mean).clamp(0, 1).numpy()


class Tracker:
    """TensorBoard (always) and W&B (`wandb`) for one run folder, resuming at `first_epoch`:
    events of later epochs left by a killed run are purged, as the CSV's rows are."""

    def __init__(self, out: Path, first_epoch: int, config: dict[str, Any], wandb: bool = False):
        self.tb = SummaryWriter(log_dir=str(out), purge_step=first_epoch)
        self.wandb = _start_wandb(out, config) if wandb else None
        self.previewed = first_epoch > 1

    def log_row(self, row: Mapping[str, Any]) -> None:
        values, step = scalars(row), int(row["epoch"])
        for key, value in values.items():
            self.tb.add_scalar(key, value, step)
        self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def log_preview(self, video: torch.Tensor, spec: ClipSpec) -> None:
        """Frames of the first train batch, as the model sees them (once per run)."""
        if self.previewed:
            return
        self.previewed = True
        grid = preview_grid(video, spec)
        self.tb.add_images("train_batch", grid, 1, dataformats="NCHW")
        if self.wandb is not None:
            import wandb  # optional dependency (vidact[wandb]); only imported when asked for

            self.wandb.log({"train_batch": [wandb.Image(f.transpose(1, 2, 0)) for f in grid]}, step=1)

    def close(self) -> None:
        self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(out: Path, config: dict[str, Any]):
    try:
        import wandb  # optional dependency (vidact[wandb])
    except ImportError as e:
        raise ValueError("--wandb needs the wandb package: pip install 'vidact[wandb]'") from e
    # One W&B run per run folder, resumed with it: the id is derived from the folder.
    run_id = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:16]
    return wandb.init(project="vidact", name=f"{out.parent.name}/{out.name}", id=run_id, resume="allow",
                      dir=str(out), config=config)
