"""A trained model leaves vidact: `vidact-export` writes a ``save_pretrained`` folder that
transformers loads and runs (VideoMAE, ViViT: the same logits as vidact's model on the same clip
tensors, the classes as labels, a video processor that prepares frames as vidact's eval does), or
safetensors and a config that the model card's few timm lines load (ViT-mean)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import write_clip
from helpers import ROOT

from vidact import checkpoint
from vidact.clip.geometry import resize_shorter_size
from vidact.clip.spec import ClipSpec
from vidact.data.reference import normalize, resize, to_tchw
from vidact.models import NORM, create_model
from vidact.video_io import decode_rgb

CLASSES = ["jump", "run", "sit"]
T, CROP = 4, 32


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def trained(family: str, run) -> tuple[torch.nn.Module, ClipSpec]:
    """A run folder as vidact.train leaves it: ratio_1/best.pt, its summary and recipe."""
    torch.manual_seed(3)
    model = create_model(family, num_classes=len(CLASSES), preset="tiny", frames_per_clip=T, crop_size=CROP).eval()
    spec = ClipSpec(frames_per_clip=T, crop_size=CROP, norm=NORM[family], ratio=1.0)
    folder = run / "ratio_1"
    folder.mkdir(parents=True)
    checkpoint.save({"model": model.state_dict(), "model_config": model.config, "classes": CLASSES, "epoch": 3,
                     "best": {"val_top1": 0.5, "val_top5": 1.0, "epoch": 3, "metric": "val"},
                     "recipe": {"model": family}, "ratio": 1.0, "spec": spec.__dict__}, folder / "best.pt")
    (folder / "summary.json").write_text(json.dumps({"best_top1": 0.5, "best_top5": 1.0, "best_epoch": 3,
                                                     "epochs": 4, "metric": "val"}))
    (run / "recipe.json").write_text(json.dumps({"recipe": "demo", "shards": "shards/synthetic", "model": family}))
    return model, spec


def export(ckpt, out) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "vidact.export", "--ckpt", str(ckpt), "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def clip_tensors() -> torch.Tensor:
    return torch.randn(2, T, 3, CROP, CROP, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", ["videomae", "vivit", "timesformer"])
def test_transformers_loads_the_export_and_gives_the_same_logits(family, tmp_path):
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor, pipeline

    model, spec = trained(family, tmp_path / "run")
    out = tmp_path / "export"
    export(tmp_path / "run" / "ratio_1" / "best.pt", out)
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    hf = AutoModelForVideoClassification.from_pretrained(out).eval()
    x = clip_tensors()
    with torch.no_grad():
        diff = (hf(pixel_values=x).logits - model(x)).abs().max().item()
    assert diff <= 1e-4, diff
    assert hf.config.id2label == dict(enumerate(CLASSES)) and hf.config.label2id["sit"] == 2

    # the processor prepares decoded frames as vidact's eval path does: the same resize and
    # mean/std; its centre crop floors an odd margin where vidact's rounds it (one pixel apart)
    video = write_clip(tmp_path / "v.avi", "mjpeg", width=64, height=48, num_frames=T)
    frames = decode_rgb(video)
    got = AutoVideoProcessor.from_pretrained(out)(list(frames), return_tensors="pt")["pixel_values"][0]
    x = resize(to_tchw(frames), resize_shorter_size(48, 64, spec.resize_short))
    y0, x0 = (x.shape[-2] - CROP) // 2, (x.shape[-1] - CROP) // 2
    assert got.shape == (T, 3, CROP, CROP)
    assert (got - normalize(x[..., y0:y0 + CROP, x0:x0 + CROP], spec)).abs().mean() < 2e-3

    result = pipeline("video-classification", model=str(out))(str(video))
    assert [r["label"] for r in result] and {r["label"] for r in result} <= set(CLASSES)
    card = (out / "README.md").read_text()
    assert "top-1 0.500" in card and "shards/synthetic" in card and "jump, run, sit" in card


def test_vit_mean_loads_with_the_lines_in_its_card(tmp_path):
    model, _ = trained("vit-mean", tmp_path / "run")
    out = tmp_path / "export"
    export(tmp_path / "run" / "ratio_1" / "best.pt", out)
    card = (out / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the documented loader, as a user would paste it
    x = clip_tensors()
    with torch.no_grad():
        diff = (scope["classify"](x) - model(x)).abs().max().item()
    assert diff <= 1e-5, diff
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"] == {str(i): c for i, c in enumerate(CLASSES)} and cfg["frames_per_clip"] == T
    np.testing.assert_allclose(cfg["mean"], [0.5] * 3)


def test_export_refuses_a_folder_in_use(tmp_path):
    trained("videomae", tmp_path / "run")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    p = subprocess.run([sys.executable, "-m", "vidact.export", "--ckpt", str(tmp_path / "run" / "ratio_1" / "best.pt"),
                        "--out", str(tmp_path / "busy")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "not an empty folder" in p.stderr
    assert (tmp_path / "busy" / "x").read_text() == "mine"
