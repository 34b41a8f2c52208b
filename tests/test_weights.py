"""Pretrained weights by name: Hugging Face ids and timm names through a real (offline) cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, train_cmd
from test_models import save_hf

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def to_hub_cache(hf_home: Path, repo_id: str, folder: Path) -> Path:
    """`folder` laid out as the Hugging Face cache holds a downloaded model (``refs/main``)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SNAPSHOT
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return snapshot


def offline_env(hf_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.mark.slow
def test_train_from_a_hub_id_uses_its_weights_and_normalization(synthetic_shards, tmp_path):
    hf_home = tmp_path / "hf"
    saved = tmp_path / "saved"
    save_hf("videomae", saved, frames=16)
    (saved / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.45, 0.45, 0.45],
                                                                 "image_std": [0.225, 0.225, 0.225]}))
    to_hub_cache(hf_home, "acme/tiny-videomae", saved)
    out = tmp_path / "run"
    cmd = train_cmd(synthetic_shards, out, "--epochs", "1", "--ratios", "1.0", "--model", "videomae",
                    "--weights", "acme/tiny-videomae", "--no-tensorboard")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=offline_env(hf_home))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "loaded acme/tiny-videomae" in p.stderr and "random init (size" not in p.stderr
    assert "sin-cos position table rebuilt for 4 frames x 32 px" in p.stderr
    import torch

    state = torch.load(out / "ratio_1" / "best.pt", weights_only=True)
    assert state["model_config"]["init"] == "acme/tiny-videomae"
    assert state["spec"]["norm"] == "slowfast" and state["spec"]["mean"] == (0.45, 0.45, 0.45)  # a known entry


def test_a_hub_id_missing_offline_is_one_line(synthetic_shards, tmp_path):
    cmd = train_cmd(synthetic_shards, tmp_path / "run", "--model", "vivit", "--weights", "acme/not-here@v2")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=offline_env(tmp_path / "hf"))
    assert p.returncode == 2
    line = [x for x in p.stderr.splitlines() if x.startswith("python -m vidact.train:")]
    assert len(line) == 1 and "acme/not-here@v2" in line[0] and "hf download acme/not-here --revision v2" in line[0]


def test_a_local_path_wins_over_a_hub_id_of_the_same_spelling(tmp_path, monkeypatch):
    from vidact.models import resolve

    monkeypatch.chdir(tmp_path)
    save_hf("vivit", tmp_path / "acme" / "tiny")
    assert resolve("vivit", "acme/tiny").path == Path("acme/tiny")


def test_timm_name_loads_timm_pretrained_weights_from_the_cache(tmp_path):
    hf_home = tmp_path / "hf"
    code_save = (
        "import timm, torch, sys; from safetensors.torch import save_file; torch.manual_seed(3)\n"
        "m = timm.create_model('vit_tiny_patch16_224', pretrained=False)\n"
        "save_file(m.state_dict(), sys.argv[1] if len(sys.argv) > 1 else 'model.safetensors')\n")
    folder = tmp_path / "timm"
    folder.mkdir()
    subprocess.run([sys.executable, "-c", code_save, str(folder / "model.safetensors")], check=True, timeout=300)
    to_hub_cache(hf_home, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", folder)
    code = (
        "import torch; from safetensors.torch import load_file\n"
        "from vidact.models import create_model\n"
        f"saved = load_file({str(folder / 'model.safetensors')!r})\n"
        "m = create_model('vit-mean', num_classes=3, frames_per_clip=2, crop_size=32,"
        " weights='timm/vit_tiny_patch16_224')\n"
        "b = m.net.backbone.state_dict()\n"
        "assert torch.equal(b['blocks.11.mlp.fc2.weight'], saved['blocks.11.mlp.fc2.weight'])\n"
        "assert b['pos_embed'].shape[1] == 1 + 4, b['pos_embed'].shape\n"
        "assert m.config['norm'] == 'half' and m.config['arch'] == {'timm_name': 'vit_tiny_patch16_224'}\n"
        "print('ok', m(torch.zeros(1, 2, 3, 32, 32)).shape)\n"
        "f = create_model('vit-mean', num_classes=3, frames_per_clip=2, crop_size=32,"
        f" weights='vit_tiny_patch16_224@{folder}/model.safetensors')\n"
        "key = 'blocks.0.attn.qkv.weight'\n"
        "assert torch.equal(f.net.backbone.state_dict()[key], saved[key])\n")
    p = run_python(code, offline_env(hf_home))
    assert p.returncode == 0 and "ok" in p.stdout, p.stderr[-3000:]
    missing = run_python("from vidact.models import create_model\n"
                         "create_model('vit-mean', num_classes=3, frames_per_clip=2, crop_size=32,"
                         " weights='timm/vit_base_patch16_224')",
                         offline_env(tmp_path / "empty"))
    assert missing.returncode != 0 and "hf download timm/vit_base_patch16_224" in missing.stderr


@pytest.mark.parametrize("name", ["vivit", "videomae"])
def test_sixteen_frame_weights_load_into_thirty_two_frames(name, tmp_path, caplog):
    import logging

    from vidact.models import create_model

    save_hf(name, tmp_path, frames=16, px=32)
    with caplog.at_level(logging.INFO, logger="vidact.models"):
        model = create_model(name, num_classes=3, frames_per_clip=32, crop_size=32, weights=tmp_path)
    text = "\n".join(r.getMessage() for r in caplog.records)
    if name == "vivit":
        assert "interpolated from grid (8, 2, 2) to (16, 2, 2)" in text
        assert model.net.vivit.embeddings.position_embeddings.shape[1] == 1 + 16 * 4
    else:
        assert "sin-cos position table rebuilt for 32 frames x 32 px (saved: 16 x 32)" in text
        assert model.net.videomae.embeddings.position_embeddings.shape[1] == 16 * 4
    assert "classifier head for 3 classes left at random init" in text
