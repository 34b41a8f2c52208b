"""Model factory: shapes, a training step, parameter groups, and every way weights get in (HF
directories, timm state dicts, vidact checkpoints) with heads resized and position tables adapted."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from vidact.checkpoint import rng_state
from vidact.clip.spec import NORMALIZATION
from vidact.models import (
    MODELS,
    NORM,
    SIZES,
    TORCHVISION_FAMILIES,
    VideoClassifier,
    create_model,
    interpolate_vivit_pos_embed,
)

FAMILIES = ["videomae", "vivit", "vit-mean", "timesformer"]
FRAMES, PX, CLASSES = 4, 64, 5


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def clip(batch: int = 2, frames: int = FRAMES, px: int = PX) -> torch.Tensor:
    return torch.randn(batch, frames, 3, px, px, generator=torch.Generator().manual_seed(0))


def tiny(name: str, **kw) -> VideoClassifier:
    kw = {"num_classes": CLASSES, "frames_per_clip": FRAMES, "crop_size": PX, **kw}
    return create_model(name, **kw)


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_shape_and_config(name):
    model = tiny(name)
    assert model.name == name
    assert model(clip(3)).shape == (3, CLASSES)
    cfg = json.loads(json.dumps(model.config))
    assert cfg["family"] == name and cfg["preset"] == "tiny" and cfg["num_classes"] == CLASSES
    assert (cfg["frames_per_clip"], cfg["crop_size"]) == (FRAMES, PX)
    assert cfg["norm"] == NORM[name] and cfg["norm"] in NORMALIZATION


@pytest.mark.parametrize("name", FAMILIES)
def test_one_adamw_step_changes_parameters(name):
    torch.manual_seed(0)
    model = tiny(name)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.cross_entropy(model(clip()), torch.tensor([0, 3]))
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p, before[k])]
    assert not unchanged, unchanged


@pytest.mark.parametrize("name", FAMILIES)
def test_param_groups_split_all_parameters(name):
    model = tiny(name)
    backbone, head = model.param_groups()
    assert backbone and head
    ids_b, ids_h = {id(p) for p in backbone}, {id(p) for p in head}
    assert not ids_b & ids_h
    assert ids_b | ids_h == {id(p) for p in model.parameters()}
    assert ids_h == {id(p) for p in model.head_module().parameters()}
    assert model.head_module().weight.shape[0] == CLASSES


def test_random_init_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="vidact.models"):
        tiny("videomae")
    assert any("no weights given, random init" in r.getMessage() for r in caplog.records)


def test_presets():
    assert (SIZES["base"].hidden, SIZES["base"].layers, SIZES["base"].heads) == (768, 12, 12)
    assert (SIZES["small"].hidden, SIZES["small"].heads) == (384, 6)
    assert set(MODELS) == set(FAMILIES) | set(TORCHVISION_FAMILIES) == set(NORM)
    assert {"r3d_18", "mvit_v2_s", "swin3d_t"} <= set(TORCHVISION_FAMILIES)


# --------------------------------------------------------------------------------------------
# HF from_pretrained directories


def save_hf(name: str, path, num_labels: int = 7, frames: int = 4, px: int = PX):
    """A tiny HF model of family `name` saved with save_pretrained; returns its state dict."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VivitConfig, VivitForVideoClassification

    s = SIZES["tiny"]
    arch = dict(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                intermediate_size=s.intermediate, num_labels=num_labels, num_frames=frames, image_size=px)
    torch.manual_seed(1)
    if name == "videomae":
        net = VideoMAEForVideoClassification(VideoMAEConfig(**arch, patch_size=16, tubelet_size=2))
    else:
        net = VivitForVideoClassification(VivitConfig(**arch, tubelet_size=[2, 16, 16]))
    net.save_pretrained(path)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name,px", [("videomae", PX), ("vivit", PX), ("vivit", 96)])
def test_from_pretrained_resizes_head_and_positions(name, px, tmp_path, caplog):
    saved = save_hf(name, tmp_path)
    with caplog.at_level(logging.WARNING, logger="vidact.models"):
        model = create_model(name, num_classes=3, frames_per_clip=8, crop_size=px, weights=tmp_path)
    assert not any("random init" in r.getMessage() for r in caplog.records)
    assert model.head_module().weight.shape == (3, SIZES["tiny"].hidden)
    assert model(clip(2, 8, px)).shape == (2, 3)
    assert model.config["preset"] == "tiny" and model.config["init"] == str(tmp_path)

    loaded = model.net.state_dict()
    pos_key = "vivit.embeddings.position_embeddings"
    body = [k for k in saved if not k.startswith("classifier.") and k != pos_key]
    assert any(".1." in k for k in body)  # the last encoder layer is compared too
    for k in body:
        assert torch.equal(loaded[k], saved[k]), k
    if name == "vivit":
        grid = 8 // 2 * (px // 16) ** 2
        assert loaded[pos_key].shape == (1, 1 + grid, SIZES["tiny"].hidden)
        assert torch.equal(loaded[pos_key][:, 0], saved[pos_key][:, 0])
    else:  # VideoMAE: fixed sin-cos table rebuilt from the config for 8 frames
        assert model.net.videomae.embeddings.position_embeddings.shape[1] == 8 // 2 * (px // 16) ** 2


def test_from_pretrained_wrong_family(tmp_path):
    save_hf("vivit", tmp_path)
    with pytest.raises(ValueError, match="model_type"):
        create_model("videomae", num_classes=3, frames_per_clip=4, crop_size=PX, weights=tmp_path)


def test_vivit_interpolation_keeps_layout():
    """A table constant over time keeps every spatial slice under a pure time resize; CLS row kept."""
    t, h, w, d = 2, 3, 4, 5
    spatial = torch.randn(1, h * w, d)
    pos = torch.cat([torch.randn(1, 1, d), spatial.repeat(1, t, 1)], dim=1)
    out = interpolate_vivit_pos_embed(pos, (t, h, w), (4, h, w))
    assert out.shape == (1, 1 + 4 * h * w, d)
    assert torch.equal(out[:, 0], pos[:, 0])
    torch.testing.assert_close(out[:, 1:], spatial.repeat(1, 4, 1))
    assert interpolate_vivit_pos_embed(pos, (t, h, w), (t, h, w)) is pos


# --------------------------------------------------------------------------------------------
# timm state dicts (vit-mean)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vit_mean_timm_state_dict(suffix, tmp_path, caplog):
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    s = SIZES["tiny"]
    torch.manual_seed(2)
    src = VisionTransformer(img_size=32, patch_size=16, embed_dim=s.hidden, depth=s.layers, num_heads=s.heads,
                            num_classes=10)
    state = {k: v.clone().contiguous() for k, v in src.state_dict().items()}
    file = tmp_path / f"vit{suffix}"
    save_file(state, str(file)) if suffix == ".safetensors" else torch.save(state, file)

    with caplog.at_level(logging.INFO, logger="vidact.models"):
        model = create_model("vit-mean", num_classes=3, frames_per_clip=FRAMES, crop_size=PX, weights=file)
    assert any("missing" in r.getMessage() and "unexpected" in r.getMessage() for r in caplog.records)
    backbone = model.net.backbone.state_dict()
    assert backbone["pos_embed"].shape == (1, 1 + (PX // 16) ** 2, s.hidden)
    assert torch.equal(backbone["pos_embed"][:, 0], state["pos_embed"][:, 0])
    for k in state:
        if not k.startswith("head.") and k != "pos_embed":
            assert torch.equal(backbone[k], state[k]), k
    assert model.head_module().weight.shape == (3, s.hidden)
    assert model(clip()).shape == (2, 3)


def test_vit_mean_timm_state_dict_of_other_width(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    src = VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=2, num_classes=0)
    torch.save(src.state_dict(), tmp_path / "vit.pth")
    with pytest.raises(ValueError, match="width"):
        create_model("vit-mean", num_classes=3, crop_size=PX, weights=tmp_path / "vit.pth")


# --------------------------------------------------------------------------------------------
# vidact checkpoints


@pytest.mark.parametrize("name", FAMILIES)
def test_vidact_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(3)
    model = tiny(name).eval()
    # RNG state as the trainer stores it: tensors and plain values, read by the safe loader
    ckpt = {"model": model.state_dict(), "model_config": model.config, "rng": rng_state()}
    torch.save(ckpt, tmp_path / "best.pt")
    again = tiny(name, weights=tmp_path / "best.pt").eval()
    x = clip()
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert again.config["arch"] == model.config["arch"]
    # as vidact stored it before 0.1 (a numpy array inside): refused in one line
    torch.save({**ckpt, "rng": {"numpy": np.random.get_state()}}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"old.pt: refused: .*numpy.*vidact 0.1 or later"):
        tiny(name, weights=tmp_path / "old.pt")


def test_vidact_checkpoint_to_more_frames_interpolates_vivit(tmp_path):
    model = tiny("vivit")
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    again = tiny("vivit", frames_per_clip=8, weights=tmp_path / "m.pt")
    pos = again.net.vivit.embeddings.position_embeddings
    assert pos.shape[1] == 1 + 4 * (PX // 16) ** 2
    assert torch.equal(pos[:, 0], model.net.vivit.embeddings.position_embeddings[:, 0])
    assert again(clip(1, 8)).shape == (1, CLASSES)


def test_vidact_checkpoint_with_other_classes_keeps_backbone(tmp_path, caplog):
    model = tiny("videomae")
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    with caplog.at_level(logging.WARNING, logger="vidact.models"):
        again = tiny("videomae", num_classes=2, weights=tmp_path / "m.pt")
    assert any("head left at random init" in r.getMessage() for r in caplog.records)
    assert again.head_module().weight.shape[0] == 2
    for (k, a), b in zip(model.named_parameters(), again.parameters()):
        if not k.startswith("net.classifier."):
            assert torch.equal(a, b), k


def test_vidact_checkpoint_of_other_family(tmp_path):
    model = tiny("vit-mean")
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="vit-mean"):
        tiny("videomae", weights=tmp_path / "m.pt")


# --------------------------------------------------------------------------------------------
# Bad inputs


def test_unknown_name_lists_models():
    with pytest.raises(ValueError, match="videomae.*vit-mean.*vivit"):
        create_model("resnet", num_classes=3)


@pytest.mark.parametrize("name", ["videomae", "vivit"])
def test_frames_not_multiple_of_tubelet(name):
    with pytest.raises(ValueError, match="tubelet"):
        tiny(name, frames_per_clip=5)


@pytest.mark.parametrize("name", FAMILIES)
def test_crop_size_not_multiple_of_patch(name):
    with pytest.raises(ValueError, match="patch"):
        tiny(name, crop_size=72)


def test_missing_weights_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        tiny("vivit", weights=missing)


def test_wrong_clip_shape_is_a_clear_error():
    model = tiny("videomae")
    with pytest.raises(ValueError, match="expected video"):
        model(clip(2, FRAMES, 32))
    with pytest.raises(ValueError, match="expected video"):
        model(clip(2)[0])
    assert tiny("vit-mean")(clip(2, 6)).shape == (2, CLASSES)  # any frame count for the mean


def test_timesformer_from_pretrained_resamples_its_tables_to_another_clip_size(tmp_path, caplog):
    """A saved TimeSformer of 8 frames x 64 px used at 4 frames x 32 px: every weight but the head
    and the two tables loaded as saved, the tables resampled (said); a checkpoint of it rebuilds
    the same network: the same logits."""
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    s = SIZES["tiny"]
    torch.manual_seed(1)
    net = TimesformerForVideoClassification(TimesformerConfig(
        hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        intermediate_size=s.intermediate, num_labels=7, num_frames=8, image_size=PX))
    net.save_pretrained(tmp_path / "tf")
    with caplog.at_level(logging.INFO, logger="vidact.models"):
        model = create_model("timesformer", num_classes=3, frames_per_clip=4, crop_size=32, weights=tmp_path / "tf")
    assert "tables resampled from 8 frames x 64 px to 4 x 32 px" in caplog.text
    saved, loaded = net.state_dict(), model.net.state_dict()
    tables = ("timesformer.embeddings.time_embeddings", "timesformer.embeddings.position_embeddings")
    assert all(torch.equal(loaded[k], v) for k, v in saved.items() if not k.startswith(("classifier.", *tables)))
    assert loaded[tables[0]].shape[1] == 4 and loaded[tables[1]].shape[1] == 1 + 2 * 2
    assert torch.equal(loaded[tables[0]][0, 1], saved[tables[0]][0, 2])  # nearest: frame 1 of 4 is frame 2 of 8
    x = clip(2, 4, 32)
    torch.save({"model": model.state_dict(), "model_config": model.config}, tmp_path / "best.pt")
    again = create_model("timesformer", num_classes=3, frames_per_clip=4, crop_size=32, weights=tmp_path / "best.pt")
    with torch.no_grad():
        assert torch.equal(model.eval()(x), again.eval()(x)) and model(x).shape == (2, 3)
