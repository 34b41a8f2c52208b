"""Checkpoints written before model_config's keys were renamed (``size``, ``num_frames``,
``image_size`` -> ``preset``, ``frames_per_clip``, ``crop_size``) still evaluate, resume and serve
as ``--weights``: `vidact.checkpoint.load` renames the keys, and so does the models package when it
reads a checkpoint itself."""

from __future__ import annotations

import pytest
import torch

from vidact import checkpoint
from vidact.checkpoint import Checkpointer, migrate_config
from vidact.models import create_model

FAMILIES = ["videomae", "vivit", "vit-mean"]
CLASSES = ["a", "b", "c"]
OLD = {"preset": "size", "frames_per_clip": "num_frames", "crop_size": "image_size"}


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def old_config(config: dict) -> dict:
    """`config` as the code before the rename wrote it: same entries, same order, old key names."""
    return {OLD.get(k, k): v for k, v in config.items()}


def save_old_checkpoint(name: str, path, frames: int = 4) -> torch.nn.Module:
    """A tiny model saved as a pre-rename ``best.pt``; returns the model (eval mode)."""
    torch.manual_seed(5)
    model = create_model(name, num_classes=len(CLASSES), preset="tiny", frames_per_clip=frames, crop_size=32).eval()
    cfg = old_config(model.config)
    assert {"size", "num_frames", "image_size"} <= set(cfg) and not set(OLD) & set(cfg)
    torch.save({"model": model.state_dict(), "model_config": cfg, "classes": CLASSES, "epoch": 1,
                "best": {"val_top1": 0.5, "val_top5": 1.0, "epoch": 1, "metric": "val"}}, path)
    return model


def clip(frames: int = 4) -> torch.Tensor:
    return torch.randn(2, frames, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", FAMILIES)
def test_old_checkpoint_loads_with_new_keys_and_same_outputs(name, tmp_path):
    model = save_old_checkpoint(name, tmp_path / "best.pt")
    state = checkpoint.load(tmp_path / "best.pt")
    cfg = state["model_config"]
    assert cfg == model.config and list(cfg) == list(model.config)
    assert not {"size", "num_frames", "image_size"} & set(cfg)

    # rebuilt from the migrated config, as evaluate does (weights read from the file again) ...
    again = create_model(cfg["family"], num_classes=cfg["num_classes"], preset=cfg["preset"],
                         frames_per_clip=cfg["frames_per_clip"], crop_size=cfg["crop_size"],
                         weights=tmp_path / "best.pt").eval()
    # ... and from the config alone with the state dict loaded strictly, as resume does
    bare = create_model(cfg["family"], num_classes=cfg["num_classes"], preset=cfg["preset"],
                        frames_per_clip=cfg["frames_per_clip"], crop_size=cfg["crop_size"]).eval()
    bare.load_state_dict(state["model"])
    x = clip()
    with torch.no_grad():
        want = model(x)
        assert torch.equal(again(x), want) and torch.equal(bare(x), want)
    assert again.config["preset"] == "tiny" and again.config["arch"] == model.config["arch"]


def test_old_vivit_checkpoint_as_weights_at_more_frames(tmp_path):
    """The models package reads the old keys itself: the stored grid comes from ``num_frames``."""
    model = save_old_checkpoint("vivit", tmp_path / "best.pt")
    again = create_model("vivit", num_classes=3, frames_per_clip=8, crop_size=32, weights=tmp_path / "best.pt")
    pos = again.net.vivit.embeddings.position_embeddings
    assert pos.shape[1] == 1 + (8 // 2) * (32 // 16) ** 2
    assert torch.equal(pos[:, 0], model.net.vivit.embeddings.position_embeddings[:, 0])


def test_old_last_checkpoint_resumes(tmp_path):
    """check_compatible compares today's config with the stored one: the old keys must not differ."""
    model = save_old_checkpoint("videomae", tmp_path / checkpoint.LAST)
    fresh = create_model("videomae", num_classes=3, preset="tiny", frames_per_clip=4, crop_size=32).eval()
    state = Checkpointer(tmp_path, CLASSES, torch.device("cpu")).resume(fresh, metric="val")
    assert state.epoch == 1
    with torch.no_grad():
        assert torch.equal(fresh(clip()), model(clip()))


def test_migrate_renames_only_missing_keys():
    old = {"family": "vivit", "size": "tiny", "num_frames": 4, "image_size": 32, "norm": "imagenet"}
    new = migrate_config(old)
    assert new == {"family": "vivit", "preset": "tiny", "frames_per_clip": 4, "crop_size": 32, "norm": "imagenet"}
    assert "size" in old  # the input is left alone
    both = migrate_config({"preset": "small", "size": "tiny", "crop_size": 64})
    assert both == {"preset": "small", "size": "tiny", "crop_size": 64}
    state = {"model": {}, "model_config": old}
    assert checkpoint.migrate(state)["model_config"] == new
    assert checkpoint.migrate({"model": {}}) == {"model": {}}
