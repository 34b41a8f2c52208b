"""The demo's paired control: the same short run learns from the synthetic clips' real labels
(validation clearly above chance) and learns nothing from shuffled ones (near chance), so what
the demo shows is the content of the clips reaching the model through the loader."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys

import pytest
from test_train import ROOT

from vidact.synthetic import SQUARE_SIZES, Shapes, make_dataset

pytestmark = pytest.mark.slow

RUN = ["--recipe", "demo", "--model-size", "tiny", "--frames", "8", "--size", "32", "--batch-size", "8",
       "--ratios", "1.0", "--epochs", "12", "--lr", "2e-3", "--workers", "2", "--device", "cpu",
       "--no-tensorboard"]


def shuffle_train_labels(src) -> None:
    """Train labels permuted among the train clips (validation keeps the true ones)."""
    path = src / "train.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    labels = [r["label"] for r in rows]
    random.Random(0).shuffle(labels)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": label} for r, label in zip(rows, labels))


def final_val_top1(tmp_path, shuffled: bool) -> float:
    """Validation top-1 after the last epoch (not the best of several noisy ones)."""
    src, shards, out = tmp_path / "src", tmp_path / "shards", tmp_path / "run"
    make_dataset(src, classes=2, train_per_class=40, val_per_class=20, test_per_class=0, seed=3, progress=False,
                 shapes=Shapes(SQUARE_SIZES, (1.5, 2.5)))
    if shuffled:
        shuffle_train_labels(src)
    for cmd in (["tools/make_shards.py", str(src), "--out", str(shards), "--workers", "2"],
                ["-m", "vidact.train", "--shards", str(shards), "--out", str(out), *RUN]):
        p = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-3000:]
    return float(json.loads((out / "ratio_1" / "summary.json").read_text())["final"]["val_top1"])


def test_real_labels_are_learned_and_shuffled_ones_are_not(tmp_path):
    real = final_val_top1(tmp_path / "real", shuffled=False)
    shuffled = final_val_top1(tmp_path / "shuffled", shuffled=True)
    # 40 validation clips of move_left / move_right: chance is 0.5, its spread about 0.08.
    assert real >= 0.8, real
    assert shuffled <= 0.7, shuffled
