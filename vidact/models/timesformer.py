"""``timesformer``: ``transformers.TimesformerForVideoClassification`` (divided space-time
attention; ``facebook/timesformer-base-finetuned-k400``: 8 frames, 224 px, patch 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidact.models._base import (
    VideoClassifier,
    _check_geometry,
    _from_pretrained,
    _hf_classifier,
    _pair,
    _preset_arch,
    _read_hf_config,
    log,
    register,
)


@register("timesformer")
def _build_timesformer(*, num_classes: int, preset: str, frames_per_clip: int, crop_size: int,
                       arch: dict[str, Any] | None, weights: Path | None) -> VideoClassifier:
    """TimeSformer. Its position and time tables are learned: loaded weights of another clip size
    have them resampled (nearest, as transformers does in a forward) to this one."""
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    if weights is not None:
        raw = _read_hf_config(weights, "timesformer")
        _check_geometry("timesformer", frames_per_clip, crop_size, 1, _pair(raw.get("patch_size", 16)))
        net = _from_pretrained(TimesformerForVideoClassification, weights, num_classes)
        if (raw.get("num_frames"), raw.get("image_size")) != (frames_per_clip, crop_size):
            resize_tables(net, frames_per_clip, crop_size)
            log.info("timesformer: position and time tables resampled from %s frames x %s px to %d x %d px",
                     raw.get("num_frames"), raw.get("image_size"), frames_per_clip, crop_size)
    else:
        if arch is None:
            arch = _preset_arch(TimesformerConfig, preset, lambda s: {"patch_size": s.patch})
        _check_geometry("timesformer", frames_per_clip, crop_size, 1, _pair(arch.get("patch_size", 16)))
        geometry = {"num_frames": frames_per_clip, "image_size": crop_size}  # HF's names
        net = TimesformerForVideoClassification(TimesformerConfig.from_dict({**arch, **geometry,
                                                                             "num_labels": num_classes}))
    return _hf_classifier("timesformer", net, preset, weights is not None, num_classes, frames_per_clip, crop_size, 1,
                          _pair(net.config.patch_size)[0])


def resize_tables(net, frames: int, crop: int) -> None:
    """The time table to `frames` and the position table's patch grid to `crop` px (the CLS entry
    kept), nearest; the config the layers read says the new geometry."""
    emb, grid = net.timesformer.embeddings, crop // net.config.patch_size
    with torch.no_grad():
        time = nn.functional.interpolate(emb.time_embeddings.transpose(1, 2), size=frames, mode="nearest")
        emb.time_embeddings = nn.Parameter(time.transpose(1, 2).contiguous())
        pos = emb.position_embeddings
        old = int((pos.shape[1] - 1) ** 0.5)
        patches = pos[:, 1:].transpose(1, 2).reshape(1, pos.shape[2], old, old)
        patches = nn.functional.interpolate(patches, size=(grid, grid), mode="nearest").flatten(2).transpose(1, 2)
        emb.position_embeddings = nn.Parameter(torch.cat([pos[:, :1], patches], 1).contiguous())
    net.config.num_frames, net.config.image_size = frames, crop
