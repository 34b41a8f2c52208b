"""The demo's paired control: the same short run of the `demo` recipe on the synthetic task, once with
the real train labels and once with the train labels shuffled. Real labels must be learned (val
top-1 clearly above chance); shuffled labels must not be (val near chance). A loader that fed the
wrong frames, labels or clips to the model fails the first half; a task whose answer leaked through
something other than the labelled motion (file order, ids, sizes) fails the second.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidact.prep.make_shards import main as make_shards
from vidact.synthetic import SIZES, Shapes, make_dataset

ROOT = Path(__file__).resolve().parents[1]
# Two classes that differ only by direction (move_left, move_right), as in the demo: 16 frames at
# 64 px, tiny VideoMAE, prefix windows, r=0.9. Final-epoch val top-1 is read, not the best epoch's.
# Short clips, stored at 80 px (the crop is 64), keep the pair of runs to about two minutes.
TRAIN_PER_CLASS, VAL_PER_CLASS, EPOCHS = 64, 20, 8
RUN = ["--recipe", "demo", "--ratios", "0.9", "--epochs", str(EPOCHS), "--dali-threads", "2", "--device", "cpu",
       "--no-tensorboard"]


def shuffle_train_labels(src: Path, dst: Path, seed: int = 0) -> None:
    """A copy of a labelled synthetic set whose train clips got a permutation of the train labels
    (files moved between label folders, train.csv rewritten); val and test stay as they were."""
    shutil.copytree(src, dst)
    with (dst / "train.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    labels = np.random.default_rng(seed).permutation([r["label"] for r in rows])
    for row in rows:
        (dst / row["label"] / f"{row['id']}.avi").rename(dst / f"{row['id']}.avi")
    with (dst / "train.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "label", "split"])
        for row, label in zip(rows, labels):
            (dst / f"{row['id']}.avi").rename(dst / label / f"{row['id']}.avi")
            writer.writerow([row["id"], label, "train"])


def train_labels(root: Path) -> dict[str, str]:
    """Train clip id -> label, from train.csv and checked against the label folders."""
    with (root / "train.csv").open(newline="") as f:
        labels = {r["id"]: r["label"] for r in csv.DictReader(f)}
    assert all((root / label / f"{i}.avi").is_file() for i, label in labels.items())
    return labels


def final_val_top1(shards: Path, out: Path) -> tuple[float, float]:
    """(val top-1, train top-1) of the last epoch of a short demo run."""
    cmd = [sys.executable, "-m", "vidact.train", "--shards", str(shards), "--out", str(out), *RUN]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    with (out / "ratio_0.9" / "log.csv").open(newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return float(last["val_top1"]), float(last["train_top1"])


@pytest.mark.slow
def test_real_labels_are_learned_and_shuffled_labels_are_not(tmp_path: Path) -> None:
    real = tmp_path / "real"
    make_dataset(real, classes=2, train_per_class=TRAIN_PER_CLASS, val_per_class=VAL_PER_CLASS,
                 test_per_class=0, seed=3, progress=False, workers=2, shapes=Shapes(SIZES, (2.0, 3.0)))
    shuffle_train_labels(real, tmp_path / "shuffled")
    before, after = (train_labels(tmp_path / name) for name in ("real", "shuffled"))
    assert sorted(before.values()) == sorted(after.values())  # same labels, other clips
    moved = sum(before[i] != after[i] for i in before)
    assert TRAIN_PER_CLASS // 2 < moved < 3 * TRAIN_PER_CLASS // 2  # about half the clips changed label
    scores = {}
    for name in ("real", "shuffled"):
        shards = tmp_path / f"{name}_shards"
        assert make_shards([str(tmp_path / name), "--out", str(shards), "--workers", "2",
                            "--short-side", "80", "--min-side", "0"]) == 0
        scores[name] = final_val_top1(shards, tmp_path / f"run_{name}")
    print("final val top-1, train top-1:", scores)
    (real_val, _), (shuffled_val, _) = scores["real"], scores["shuffled"]
    # Chance is 0.5 on 40 val clips (one standard deviation: 0.08).
    assert real_val >= 0.85, scores
    assert 0.25 <= shuffled_val <= 0.75, scores
