"""The families practitioners reach for first. torchvision's video classifiers by name: the same
logits as torchvision's own model with the same weights (read from a torch hub cache the test
writes, offline), a new head for the set's classes, the weights' normalization, one line for
missing weights or a clip size the architecture cannot take. R3D-18 and TimeSformer through the
commands: train on the synthetic shards, evaluate, predict on files, export (R3D-18: the model
card's lines load it and give the same logits; TimeSformer's export: tests/test_export.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import ROOT, run_ok, train_cmd

from vidact.clip.spec import NORMALIZATION
from vidact.models import NORM, TORCHVISION_FAMILIES, WeightsNotFound, create_model, load_checkpoint_model
from vidact.shards import ShardSet

pytestmark = pytest.mark.usefixtures("two_torch_threads")
T, CROP = 4, 32


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub cache holding R3D-18's Kinetics-400 file (random weights under its name)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.video.R3D_18_Weights.KINETICS400_V1
    path = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True)
    torch.manual_seed(7)
    torch.save(torchvision.models.video.r3d_18(num_classes=400).state_dict(), path)
    return weights


def clip(b: int = 2) -> torch.Tensor:
    return torch.randn(b, T, 3, CROP, CROP, generator=torch.Generator().manual_seed(2))


def test_named_weights_give_torchvisions_logits_with_its_normalization(hub):
    ours = create_model("r3d_18", num_classes=400, frames_per_clip=T, crop_size=CROP, weights="KINETICS400_V1").eval()
    theirs = torchvision.models.video.r3d_18(weights=hub).eval()  # the same file, through torchvision
    x = clip()
    with torch.no_grad():
        diff = (ours(x) - theirs(x.permute(0, 2, 1, 3, 4))).abs().max().item()
    assert diff <= 1e-5, diff
    assert ours.config["norm"] == "kinetics" and ours.config["init"] == "KINETICS400_V1"
    assert ours.config["mean"] == pytest.approx(list(hub.transforms().mean))


def test_a_new_head_for_the_sets_classes_on_the_pretrained_backbone(hub):
    model = create_model("r3d_18", num_classes=3, frames_per_clip=T, crop_size=CROP,
                         weights="R3D_18_Weights.KINETICS400_V1")
    theirs = torchvision.models.video.r3d_18(weights=hub)
    assert model.head_module().out_features == 3
    assert torch.equal(model.net.model.layer4[1].conv2[0].weight, theirs.layer4[1].conv2[0].weight)


def test_missing_weights_and_wrong_sizes_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFound, match=r"r3d_18: R3D_18_Weights.KINETICS400_V1 is not in the torch hub cache: "
                                              r"put https://\S+r3d_18-\w+\.pth at \S+/empty/hub/checkpoints/") as e:
        create_model("r3d_18", num_classes=3, frames_per_clip=T, crop_size=CROP, weights="KINETICS400_V1")
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="IMAGENET1K_V1 is neither a local file nor one of R3D_18_Weights"):
        create_model("r3d_18", num_classes=3, frames_per_clip=T, crop_size=CROP, weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="mvit_v2_s takes exactly 16 frames of 224 px, got 8 frames of 112 px"):
        create_model("mvit_v2_s", num_classes=3, frames_per_clip=8, crop_size=112)


def test_every_torchvision_video_model_is_a_family_with_its_weights_statistics():
    from torchvision.models import get_model_weights, list_models

    assert set(TORCHVISION_FAMILIES) == set(list_models(module=torchvision.models.video))
    for name in TORCHVISION_FAMILIES:
        for weights in get_model_weights(name):
            preset = weights.transforms()
            mean, std = NORMALIZATION[NORM[name]]
            assert (*mean, *std) == pytest.approx((*preset.mean, *preset.std)), name


@pytest.mark.parametrize("name", ["mc3_18", "r2plus1d_18", "swin3d_t"])
def test_other_families_take_vidacts_layout(name):
    model = create_model(name, num_classes=5, frames_per_clip=T, crop_size=CROP).eval()
    with torch.no_grad():
        assert model(clip()).shape == (2, 5)


@pytest.mark.slow
@pytest.mark.parametrize("family,norm", [("r3d_18", "kinetics"), ("timesformer", "imagenet")])
def test_through_train_evaluate_predict_and_export(synthetic_shards, tmp_path, family, norm):
    out = tmp_path / "run"
    run_ok(train_cmd(synthetic_shards, out, "--model", family, "--epochs", "1", "--ratios", "1.0",
                     "--no-tensorboard"))
    ckpt = out / "ratio_1" / "best.pt"
    model, state = load_checkpoint_model(ckpt, torch.device("cpu"))
    assert state["model_config"]["family"] == family and state["model_config"]["norm"] == norm
    report = tmp_path / "eval"
    run_ok([sys.executable, "-m", "vidact.evaluate", "--ckpt", str(ckpt), "--shards", str(synthetic_shards),
            "--split", "val", "--out", str(report), "--device", "cpu", "--loader", "torch"])
    assert json.loads(next(report.glob("eval_val_*.json")).read_text())["count"] > 0
    source = Path(ShardSet.open(synthetic_shards).manifest["source"])
    videos = sorted(p for p in source.rglob("*") if p.suffix in (".mp4", ".avi", ".mkv", ".webm"))
    assert videos, "the synthetic sources"
    preds = tmp_path / "p.csv"
    run_ok([sys.executable, "-m", "vidact.predict", "--ckpt", str(ckpt), "--videos", str(videos[0]), "--out",
            str(preds), "--device", "cpu"])
    assert len(preds.read_text().splitlines()) == 2
    export = tmp_path / "export"
    p = subprocess.run([sys.executable, "-m", "vidact.export", "--ckpt", str(ckpt), "--out", str(export)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    if family == "timesformer":  # a transformers folder (its logits: tests/test_export.py)
        assert json.loads((export / "config.json").read_text())["model_type"] == "timesformer"
        return
    code = re.search(r"```python\n(.*?)```", (export / "README.md").read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the documented loader, as a user would paste it
    spec = state["spec"]
    x = torch.randn(1, spec["frames_per_clip"], 3, spec["crop_size"], spec["crop_size"])
    with torch.no_grad():
        assert (scope["classify"](x) - model(x)).abs().max().item() <= 1e-5


def test_train_refuses_a_model_it_cannot_build_before_writing_anything(synthetic_shards, tmp_path):
    """A clip size the architecture does not take, or named weights not in the cache: one line,
    exit 2, no run folder left behind."""
    for extra in (["--model", "mvit_v2_s"], ["--model", "r3d_18", "--weights", "KINETICS400_V1"]):
        out = tmp_path / extra[1]
        p = subprocess.run(train_cmd(synthetic_shards, out, *extra), cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "TORCH_HOME": str(tmp_path / "empty")})
        assert p.returncode == 2 and not out.exists(), p.stderr
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("python -m vidact.train: ") and ("takes exactly 16 frames of 224 px" in last
                                                                 or "is not in the torch hub cache" in last), last
