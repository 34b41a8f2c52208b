"""No file vidact reads runs code: checkpoints (``--ckpt``, a run's ``last.pt``) and ``--weights``
files load with the safe unpickler, a crafted pickle is refused in one line naming it (exit 2)
and the file its payload would create stays absent; checkpoints an older vidact wrote (numpy
values inside) are converted by an explicit command."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, train_cmd

from vidact import checkpoint
from vidact.checkpoint import CheckpointError
from vidact.models import create_model


class Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(path, marker) -> None:
    """A file shaped like a vidact checkpoint, with the payload among its values."""
    model = create_model("videomae", num_classes=3, preset="tiny", frames_per_clip=4, crop_size=32)
    torch.save({"model": model.state_dict(), "model_config": model.config, "classes": ["a", "b", "c"],
                "epoch": 1, "note": Payload(marker)}, path)


def refused(cmd: list[str], path, marker, prog: str) -> None:
    """`cmd` exits 2 with one line naming `path` as refused, and the payload never ran."""
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [x for x in p.stderr.splitlines() if x.startswith(f"python -m vidact.{prog}:")]
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(lines) == 1 and f"{path}: refused" in lines[0] and "system" in lines[0], p.stderr[-2000:]
    assert not marker.exists(), "the payload ran"


@pytest.fixture
def evil(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    crafted(path, marker)
    return path, marker


def test_the_payload_would_run_if_loaded_unsafely(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    crafted(path, marker)
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"  # what vidact must never do
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)
    assert marker.exists()


def test_a_crafted_checkpoint_is_refused_by_load(evil):
    path, marker = evil
    with pytest.raises(CheckpointError, match=rf"{path}: refused: .*system.*vidact 0.1 or later"):
        checkpoint.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("prog", ["evaluate", "predict"])
def test_ckpt_of_evaluate_and_predict(evil, synthetic_shards, tmp_path, prog):
    path, marker = evil
    refused([sys.executable, "-m", f"vidact.{prog}", "--ckpt", str(path), "--shards", str(synthetic_shards),
             "--out", str(tmp_path / "out"), "--loader", "torch", "--device", "cpu"], path, marker, prog)


def test_weights_of_train(evil, synthetic_shards, tmp_path):
    path, marker = evil
    refused(train_cmd(synthetic_shards, tmp_path / "run", "--weights", str(path), "--epochs", "1", "--ratios",
                      "1.0", "--no-tensorboard"), path, marker, "train")


def test_last_pt_of_a_run_being_resumed(evil, synthetic_shards, tmp_path):
    path, marker = evil
    last = tmp_path / "run" / "ratio_1" / checkpoint.LAST
    last.parent.mkdir(parents=True)
    path.replace(last)
    refused(train_cmd(synthetic_shards, tmp_path / "run", "--epochs", "1", "--ratios", "1.0", "--no-tensorboard"),
            last, marker, "train")


def old_style_checkpoint(path) -> torch.nn.Module:
    """A checkpoint as vidact wrote it before: numpy's RNG state and numpy scalars inside."""
    model = create_model("vit-mean", num_classes=2, preset="tiny", frames_per_clip=4, crop_size=32)
    np.random.seed(3)
    torch.save({"model": model.state_dict(), "model_config": model.config, "classes": ["a", "b"], "epoch": 2,
                "best": {"val_top1": np.float64(0.75), "epoch": np.int64(2)},
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state()}}, path)
    return model


def test_a_checkpoint_with_numpy_values_is_refused_in_one_line(tmp_path):
    """Checkpoints hold tensors and plain values only: one with numpy values inside (as vidact
    wrote them before 0.1) is refused, naming the file, instead of being read with pickle."""
    path = tmp_path / "last.pt"
    old_style_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"{path}: refused: .*numpy.*vidact 0.1 or later") as e:
        checkpoint.load(path)
    assert "\n" not in str(e.value)


def test_a_fresh_run_checkpoint_round_trips_the_rng_safely(tmp_path):
    state = checkpoint.rng_state()
    torch.save({"rng": state}, tmp_path / "r.pt")
    back = torch.load(tmp_path / "r.pt", weights_only=True)["rng"]
    want = (random.random(), np.random.random(), torch.rand(1))
    checkpoint.set_rng_state(back)
    assert (random.random(), np.random.random()) == want[:2] and torch.equal(torch.rand(1), want[2])


def test_ckpt_of_export(evil, tmp_path):
    path, marker = evil
    refused([sys.executable, "-m", "vidact.export", "--ckpt", str(path), "--out", str(tmp_path / "out")], path,
            marker, "export")
    assert not (tmp_path / "out").exists()


