"""Tests of `vidact.plots`: every plot writes a real, non-blank PNG atomically, copes with
missing/NaN columns, marks stage changes and scales to many classes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vidact import plots
from vidact.plots import plot_accuracy_vs_ratio, plot_confusion, plot_training_curves

FULL_COLUMNS = ["epoch", "train_loss", "train_top1", "train_top5", "train_eval_loss", "train_eval_top1",
                "train_eval_top5", "val_loss", "val_top1", "val_top5", "lr", "clips_per_s", "data_wait"]


def assert_png(path: Path) -> np.ndarray:
    """`path` is a PNG that is not one flat colour; returns its pixels."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        px = np.asarray(im.convert("RGB"))
    assert px.shape[0] > 50 and px.shape[1] > 50
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 10, "blank image"
    # no temp files left behind
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    return px


def make_log(n: int = 6, columns: list[str] | None = None, stage: list[int] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    e = np.arange(1, n + 1)
    data = {
        "epoch": e,
        "train_loss": 3 / e, "train_top1": 1 - 0.8 / e, "train_top5": 1 - 0.3 / e,
        "train_eval_loss": 3.2 / e, "train_eval_top1": 1 - 0.85 / e, "train_eval_top5": 1 - 0.35 / e,
        "val_loss": 3.5 / e, "val_top1": 0.9 - 0.8 / e, "val_top5": 0.95 - 0.4 / e,
        "lr": np.linspace(1e-4, 1e-6, n), "clips_per_s": rng.uniform(50, 60, n), "data_wait": rng.uniform(0, .1, n),
    }
    df = pd.DataFrame({c: data[c] for c in (columns or FULL_COLUMNS)})
    if stage is not None:
        df["stage"] = stage
    return df


def test_training_curves_full_log(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    make_log().to_csv(csv, index=False)
    out = plot_training_curves(csv, tmp_path / "sub" / "curves.png", title="demo")
    assert out == tmp_path / "sub" / "curves.png"
    assert_png(out)


def test_training_curves_missing_columns_and_nan(tmp_path: Path) -> None:
    df = make_log(5, columns=["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr"])
    df.loc[2, "val_loss"] = np.nan
    df.loc[[0, 1], "val_top5"] = np.nan
    df["train_eval_loss"] = np.nan  # a stage without train-eval: column present but empty
    csv = tmp_path / "log.csv"
    df.to_csv(csv, index=False)
    assert_png(plot_training_curves(csv, tmp_path / "curves.png"))
    # a single row and a log with no metric columns at all still give a picture
    make_log(1).to_csv(csv, index=False)
    assert_png(plot_training_curves(csv, tmp_path / "one.png"))
    pd.DataFrame({"epoch": [1, 2], "lr": [1e-3, 1e-4]}).to_csv(csv, index=False)
    assert_png(plot_training_curves(csv, tmp_path / "none.png"))


def test_training_curves_stage_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = []
    orig = plots._stage_lines

    def spy(axes, df_, x):
        orig(axes, df_, x)
        lines.extend(line.get_xdata()[0] for ax in axes for line in ax.get_lines()
                     if line.get_linestyle() == "--" and line.get_color() == "gray")

    monkeypatch.setattr(plots, "_stage_lines", spy)
    csv = tmp_path / "log.csv"
    df = make_log(6, stage=[1, 1, 1, 1, 2, 2])
    df.to_csv(csv, index=False)
    with_stage = assert_png(plot_training_curves(csv, tmp_path / "with.png"))
    # one line per panel, between the last epoch of stage 1 and the first of stage 2
    assert lines == [4.5, 4.5]
    df.drop(columns="stage").to_csv(csv, index=False)
    without = assert_png(plot_training_curves(csv, tmp_path / "without.png"))
    assert with_stage.shape == without.shape
    assert (with_stage != without).any(), "stage change drew nothing"


def test_training_curves_epochs_restarting_per_stage_and_resume_duplicates(tmp_path: Path) -> None:
    df = make_log(6, stage=[1, 1, 1, 2, 2, 2])
    df["epoch"] = [1, 2, 3, 1, 2, 3]
    # a resumed run re-logged stage-1 epoch 3
    df = pd.concat([df.iloc[:3], df.iloc[2:3], df.iloc[3:]], ignore_index=True)
    csv = tmp_path / "log.csv"
    df.to_csv(csv, index=False)
    cleaned, x, label = plots._clean_log(pd.read_csv(csv))
    assert len(cleaned) == 6 and list(x) == [1, 2, 3, 4, 5, 6] and "cumulative" in label
    assert_png(plot_training_curves(csv, tmp_path / "curves.png"))


def test_accuracy_vs_ratio(tmp_path: Path) -> None:
    results = {0.1: {"top1": 0.31, "top5": 0.6}, 0.5: {"top1": 0.62, "top5": 0.88},
               0.3: {"top1": 0.5, "top5": 0.8}, 0.9: {"top1": 0.8, "top5": None}, 0.7: {"top1": 0.71}}
    out = plot_accuracy_vs_ratio(results, tmp_path / "a" / "ratio.png", title="ViViT UCF-101")
    assert_png(out)
    # JSON-style string keys and a single point
    assert_png(plot_accuracy_vs_ratio({"1.0": {"top1": 0.9, "top5": 0.99}}, tmp_path / "single.png"))


@pytest.mark.parametrize("num_classes", [3, 60])
def test_confusion(tmp_path: Path, num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    cm = rng.integers(0, 5, size=(num_classes, num_classes)) + np.diag(rng.integers(10, 30, num_classes))
    cm[1] = 0  # a class with no samples
    names = [f"class_{i}_with_a_rather_long_name" for i in range(num_classes)]
    px = assert_png(plot_confusion(cm, names, tmp_path / f"cm{num_classes}.png"))
    if num_classes > 50:
        assert px.shape[0] > 1000  # the figure grows with the number of classes
    else:
        assert_png(plot_confusion(cm, names, tmp_path / f"cm{num_classes}_counts.png", normalize=False))


def test_confusion_rejects_mismatched_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="class names"):
        plot_confusion(np.eye(3), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="square"):
        plot_confusion(np.ones((2, 3)), ["a", "b"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    out = tmp_path / "ratio.png"
    plot_accuracy_vs_ratio({0.5: {"top1": 0.5, "top5": 0.7}}, out)
    first = out.read_bytes()
    plot_accuracy_vs_ratio({0.5: {"top1": 0.2, "top5": 0.9}}, out)
    assert out.read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ratio.png"]


def test_failed_save_removes_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_accuracy_vs_ratio({0.5: {"top1": 0.5}}, tmp_path / "r.png")
    assert list(tmp_path.iterdir()) == []


def test_no_pyplot_figures_accumulate(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    for i in range(3):
        plot_accuracy_vs_ratio({0.5: {"top1": 0.1 * i, "top5": math.nan}}, tmp_path / "r.png")
    assert len(plt.get_fignums()) == before
