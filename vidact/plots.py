"""PNG plots of a run: training curves, accuracy vs observation ratio, confusion matrix.

Figures are built as bare :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas,
never through ``pyplot``: nothing needs a display, no global figure registry keeps them alive
(no memory growth over a long run), and importing this module does not change the backend of
a caller who uses pyplot. Every PNG is written atomically (temp file in the target folder, then
``os.replace``), so a reader never sees half a file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vidact.files import atomic_path

# Splits of the training log: column prefix -> (legend name, colour).
_SPLITS = {"train": ("train", "tab:blue"), "train_eval": ("train (eval)", "tab:orange"), "val": ("val", "tab:green")}
# Confusion-matrix tick labels are kept this many at most; beyond it every n-th class is labeled.
_MAX_TICK_LABELS = 110
_MAX_NAME_CHARS = 24


def _new_figure(width: float, height: float, **kwargs) -> Figure:
    """A pyplot-free figure on the Agg canvas."""
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: Path, dpi: int = 100) -> Path:
    """Writes `fig` to `out_png` atomically (creating parent folders) and releases it."""
    out_png = Path(out_png)
    try:
        with atomic_path(out_png) as tmp:
            # Light compression: big confusion matrices spend most of their time in zlib otherwise.
            fig.savefig(tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": 3})
    finally:
        fig.clear()
    return out_png


def _no_data(ax: Axes, what: str = "no data") -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="gray")


def _numeric(df: pd.DataFrame, column: str) -> pd.Series | None:
    """`column` as floats, or None when it is absent or all NaN."""
    if column not in df.columns:
        return None
    s = pd.to_numeric(df[column], errors="coerce")
    return None if s.isna().all() else s


def _clean_log(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, str]:
    """Drops rows re-logged after a resume (the last one of each (stage, epoch) wins) and picks
    the x values: the epoch column when it increases, else the row number (e.g. a log whose
    epochs restart at every stage)."""
    keys = [c for c in ("stage", "epoch") if c in df.columns]
    if "epoch" in df.columns:
        df = df.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)
        epoch = pd.to_numeric(df["epoch"], errors="coerce")
        if epoch.notna().all() and (epoch.diff().dropna() > 0).all():
            return df, epoch.to_numpy(dtype=float), "epoch"
    return df, np.arange(1, len(df) + 1, dtype=float), "epoch (cumulative)"


def _stage_lines(axes: Sequence[Axes], df: pd.DataFrame, x: np.ndarray) -> None:
    """Vertical dashed lines between the last epoch of a stage and the first of the next."""
    if "stage" not in df.columns or len(df) < 2:
        return
    stage = df["stage"].astype(str).to_numpy()
    for i in np.flatnonzero(stage[1:] != stage[:-1]) + 1:
        xpos = (x[i - 1] + x[i]) / 2
        for ax in axes:
            ax.axvline(xpos, color="gray", linestyle="--", linewidth=1)
        label = stage[i] if stage[i].lower().startswith("stage") else f"stage {stage[i]}"
        axes[0].annotate(label, xy=(xpos, 1), xycoords=("data", "axes fraction"),
                         xytext=(3, -12), textcoords="offset points", fontsize=8, color="gray")


def plot_training_curves(log_csv: Path, out_png: Path, title: str = "", fractions: bool | None = None) -> Path:
    """Loss and top-1/top-5 per epoch from a training log CSV, as a two-panel PNG.

    Columns that are missing or all NaN (a stage without train-eval, say) are skipped; NaN cells
    leave gaps. Accuracies are drawn in percent: `fractions` says whether the log holds fractions
    (True) or percent (False); None guesses fractions when no value exceeds 1. A ``stage``
    column adds a dashed line where the stage changes.
    """
    df = pd.read_csv(log_csv)
    df, x, xlabel = _clean_log(df)
    fig = _new_figure(12, 4.5, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    markersize = 4 if len(df) <= 50 else 0

    drawn_loss = drawn_acc = False
    acc_cols = {f"{p}_top{k}": _numeric(df, f"{p}_top{k}") for p in _SPLITS for k in (1, 5)}
    present = [s for s in acc_cols.values() if s is not None]
    if fractions is None:
        fractions = all(float(s.max()) <= 1.0 for s in present)
    scale = 100.0 if fractions else 1.0
    for prefix, (name, color) in _SPLITS.items():
        loss = _numeric(df, f"{prefix}_loss")
        if loss is not None:
            ax_loss.plot(x, loss.to_numpy(), color=color, marker="o", markersize=markersize, label=name)
            drawn_loss = True
        for k, style in ((1, "-"), (5, "--")):
            acc = acc_cols[f"{prefix}_top{k}"]
            if acc is not None:
                ax_acc.plot(x, acc.to_numpy() * scale, color=color, linestyle=style, marker="o",
                            markersize=markersize, label=f"{name} top-{k}")
                drawn_acc = True

    ax_loss.set(title="loss", xlabel=xlabel, ylabel="loss")
    ax_acc.set(title="accuracy", xlabel=xlabel, ylabel="accuracy (%)")
    for ax, drawn in ((ax_loss, drawn_loss), (ax_acc, drawn_acc)):
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            _no_data(ax)
    if drawn_acc:
        ax_acc.set_ylim(bottom=0)
    if len(x):
        for ax in (ax_loss, ax_acc):
            ax.set_xlim(x.min() - 0.5, x.max() + 0.5)
    _stage_lines((ax_loss, ax_acc), df, x)
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)


def plot_accuracy_vs_ratio(results: Mapping[float, Mapping[str, float | None]], out_png: Path,
                           title: str = "") -> Path:
    """Top-1/top-5 (fractions in `results`, drawn in percent) against the observation ratio,
    one marker per ratio with its value written beside it. Ratios may be strings (JSON keys);
    missing or None values are skipped."""
    ratios = sorted((float(r), v) for r, v in results.items())
    fig = _new_figure(7, 4.5, layout="constrained")
    ax = fig.subplots()
    drawn = False
    for key, color, offset in (("top1", "tab:blue", -14), ("top5", "tab:orange", 6)):
        pts = [(r, float(v[key]) * 100) for r, v in ratios
               if v.get(key) is not None and not math.isnan(float(v[key]))]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, color=color, marker="o", label=key.replace("top", "top-"))
        for xv, yv in pts:
            ax.annotate(f"{yv:.1f}", (xv, yv), xytext=(0, offset), textcoords="offset points", ha="center",
                        fontsize=8, color=color)
        drawn = True
    ax.set(xlabel="observation ratio", ylabel="accuracy (%)", xlim=(0, 1.05), ylim=(0, 105))
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(loc="lower right")
    else:
        _no_data(ax)
    if title:
        ax.set_title(title)
    return _save(fig, out_png)


def _short(name: str) -> str:
    return name if len(name) <= _MAX_NAME_CHARS else name[: _MAX_NAME_CHARS - 1] + "\u2026"


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], out_png: Path, normalize: bool = True,
                   title: str = "") -> Path:
    """Heatmap of a confusion matrix (rows true, columns predicted) with class names on both
    axes and a colour bar. `normalize` divides every row by its count (rows without samples stay
    0). The figure and font grow/shrink with the number of classes; beyond ~110 classes only
    every n-th name is written; up to 15 classes the cell values are written in the cells."""
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    c = cm.shape[0]
    if len(class_names) != c:
        raise ValueError(f"{c} classes in the matrix but {len(class_names)} class names")
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)

    side = float(np.clip(3.5 + 0.13 * c, 6.0, 20.0))
    step = max(1, math.ceil(c / _MAX_TICK_LABELS))
    # Font height ~75% of the space between two labelled rows (the axes take ~72% of the side).
    fontsize = float(np.clip(0.75 * 72 * (side * 0.72) * step / max(c, 1), 4.0, 10.0))
    fig = _new_figure(side + 1.5, side, layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else max(float(cm.max()), 1.0),
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, shrink=0.8,
                 label="fraction of true class" if normalize else "count")

    ticks = np.arange(0, c, step)
    names = [_short(str(class_names[i])) for i in ticks]
    ax.set_xticks(ticks, names, rotation=90 if c > 12 else 45, ha="center" if c > 12 else "right",
                  fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set(xlabel="predicted", ylabel="true")
    if c <= 15:
        for i in range(c):
            for j in range(c):
                v = cm[i, j]
                ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center", fontsize=8,
                        color="white" if v > 0.5 * (1 if normalize else cm.max()) else "black")
    if title:
        ax.set_title(title)
    return _save(fig, out_png, dpi=100)
