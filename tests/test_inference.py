"""The inference core on its own: a checkpoint read once into the model it describes, the clip
spec it was trained with, logits per clip and per source video, keyword arguments only."""

from __future__ import annotations

import pytest
import torch

from vidact.clip.spec import ClipSpec
from vidact.engine import Env, Predictions
from vidact.inference import by_source, clip_spec_of, infer, load_model
from vidact.models import NORM, create_model
from vidact.shards import ShardSet

CPU = Env(0, 1, torch.device("cpu"))


def save_checkpoint(path, classes: list[str], spec: ClipSpec, family: str = "videomae") -> torch.nn.Module:
    """A best.pt as the trainer writes it, of a seeded tiny model."""
    torch.manual_seed(0)
    model = create_model(family, num_classes=len(classes), preset="tiny", frames_per_clip=spec.frames_per_clip,
                         crop_size=spec.crop_size).eval()
    torch.save({"model": model.state_dict(), "model_config": model.config, "classes": classes, "epoch": 1,
                "best": {}, "spec": spec.__dict__}, path)
    return model


def test_a_checkpoint_is_read_once_into_the_model_it_describes(tmp_path, monkeypatch):
    spec = ClipSpec(frames_per_clip=4, crop_size=32, norm=NORM["vivit"])
    original = save_checkpoint(tmp_path / "best.pt", ["a", "b", "c"], spec, family="vivit")
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    model, state = load_model(tmp_path / "best.pt", torch.device("cpu"))
    assert reads == [tmp_path / "best.pt"]  # once, not once more per weights_only attempt
    assert not model.training and model.config["frames_per_clip"] == 4 and model.config["crop_size"] == 32
    clip = torch.randn(2, 4, 3, 32, 32)
    torch.testing.assert_close(model(clip), original(clip), rtol=0, atol=0)
    assert state["classes"] == ["a", "b", "c"]


def test_the_clip_spec_is_the_checkpoints_with_overrides(tmp_path):
    spec = ClipSpec(frames_per_clip=4, crop_size=32, ratio=0.3, window="prefix", flip=0.0)
    state = {"spec": spec.__dict__}
    assert clip_spec_of(state, CPU) == spec  # fp32 on a CPU, as trained
    changed = clip_spec_of(state, CPU, ratio=0.9, window="middle")
    assert (changed.ratio, changed.window, changed.frames_per_clip, changed.flip) == (0.9, "middle", 4, 0.0)
    with pytest.raises(ValueError, match="ratio"):
        clip_spec_of(state, CPU, ratio=1.5)


def test_infer_gives_one_row_per_clip_and_refuses_another_label_set(synthetic_shards, tmp_path):
    shards = ShardSet.open(synthetic_shards)
    spec = ClipSpec(frames_per_clip=4, crop_size=32, norm=NORM["videomae"])
    save_checkpoint(tmp_path / "best.pt", shards.classes, spec)
    one = infer(tmp_path / "best.pt", synthetic_shards, "val", device="cpu", workers=1, need_labels=True)
    three = infer(tmp_path / "best.pt", shards, "val", views=3, device="cpu", workers=1)
    count = shards.manifest["splits"]["val"]["count"]
    for result in (one, three):
        assert len(result.predictions.ids) == count == len(set(result.predictions.ids)) == 6
        assert result.predictions.logits.shape == (count, len(shards.classes)) and result.segments is None
    assert sorted(one.predictions.ids) == sorted(three.predictions.ids)
    assert not torch.allclose(one.predictions.logits, three.predictions.logits)  # three crops averaged
    save_checkpoint(tmp_path / "other.pt", ["x", "y", "z"], spec)
    with pytest.raises(Exception, match="not the same label set"):
        infer(tmp_path / "other.pt", shards, "val", device="cpu", workers=1)


def test_by_source_averages_segment_logits():
    logits = torch.tensor([[1.0, 0.0], [0.0, 4.0], [3.0, 2.0]])
    pred = Predictions(logits, torch.tensor([0, 1, 0]), ["a@0", "b@0", "a@1"])
    got = by_source(pred)
    assert got.ids == ["a", "b"] and got.labels.tolist() == [0, 1]
    assert got.logits.tolist() == [[2.0, 1.0], [0.0, 4.0]]
