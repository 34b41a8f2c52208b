"""Experiment tracking: TensorBoard events equal to the CSV log, W&B offline runs."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch
from helpers import ROOT, log_rows, train_cmd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vidact.clip.spec import ClipSpec
from vidact.tracking import preview_grid, scalars


def test_scalars_keep_numeric_columns_only():
    row = {"epoch": 3, "stage": 1, "train_loss": "1.5", "val_top1": "", "lr": 0.001, "clips_per_s": float("nan")}
    assert scalars(row) == {"train_loss": 1.5, "lr": 0.001}


def test_preview_undoes_the_normalization():
    spec = ClipSpec(frames_per_clip=8, crop_size=4, norm="imagenet")
    pixels = torch.rand(2, 8, 3, 4, 4)
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    grid = preview_grid((pixels - mean) / std, spec)
    assert grid.shape == (2 * 4, 3, 4, 4)  # 4 frames of each clip: 0, 2, 5, 7
    assert abs(grid[1] - pixels[0, 2].numpy()).max() < 1e-5
    assert abs(grid[7] - pixels[1, 7].numpy()).max() < 1e-5


def tensorboard_scalars(folder) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_tensorboard_events_equal_the_csv_and_wandb_runs_offline(synthetic_shards, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = train_cmd(synthetic_shards, out, "--epochs", "2", "--ratios", "1.0", "--wandb")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    folder = out / "ratio_1"
    events = tensorboard_scalars(folder)
    rows = log_rows(folder / "log.csv")
    for column in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "clips_per_s", "data_wait"):
        assert events[column] == pytest.approx({int(r["epoch"]): float(r[column]) for r in rows}, rel=1e-6), column
    acc = EventAccumulator(str(folder))
    acc.Reload()
    assert "train_batch" in acc.Tags()["images"]
    offline = list((folder / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
