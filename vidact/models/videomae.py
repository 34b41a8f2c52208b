"""``videomae``: ``transformers.VideoMAEForVideoClassification`` (the two-stage recipe fine-tuned
``MCG-NJU/videomae-base-finetuned-kinetics``: 16 frames, 224 px, tubelet 2, patch 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


@register("videomae")
def _build_videomae(*, num_classes: int, preset: str, frames_per_clip: int, crop_size: int,
                    arch: dict[str, Any] | None, weights: Path | None) -> VideoClassifier:
    """VideoMAE (the two-stage recipe). Its position table is fixed sin-cos, so changing geometry
    needs no resampling."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    # Position embeddings: transformers 5.23 builds VideoMAEEmbeddings.position_embeddings as a plain
    # tensor attribute (neither parameter nor buffer) from config (num_frames, image_size, patch,
    # tubelet) via get_sinusoid_encoding_table. It is never in a state dict, so building with the new
    # num_frames/image_size yields the table for the new token count; a checkpoint that does store one
    # (old conversions) has it reported as an unexpected key and dropped. As in the original VideoMAE
    # code the table is 1-D over the flattened (t, h, w) index: it is regenerated, not interpolated.
    geometry = {"num_frames": frames_per_clip, "image_size": crop_size}  # HF's names
    if weights is not None:
        raw = _read_hf_config(weights, "videomae")
        _check_geometry("videomae", frames_per_clip, crop_size, int(raw.get("tubelet_size", 2)),
                        _pair(raw.get("patch_size", 16)))
        net = _from_pretrained(VideoMAEForVideoClassification, weights, num_classes, **geometry)
        if (raw.get("num_frames"), raw.get("image_size")) != (frames_per_clip, crop_size):
            log.info("videomae: fixed sin-cos position table rebuilt for %d frames x %d px (saved: %s x %s)",
                     frames_per_clip, crop_size, raw.get("num_frames"), raw.get("image_size"))
    else:
        if arch is None:
            arch = _preset_arch(VideoMAEConfig, preset, lambda s: {"patch_size": s.patch, "tubelet_size": 2})
        _check_geometry("videomae", frames_per_clip, crop_size, int(arch.get("tubelet_size", 2)),
                        _pair(arch.get("patch_size", 16)))
        net = VideoMAEForVideoClassification(VideoMAEConfig.from_dict({**arch, **geometry, "num_labels": num_classes}))
    return _hf_classifier("videomae", net, preset, weights is not None, num_classes, frames_per_clip, crop_size,
                          int(net.config.tubelet_size), _pair(net.config.patch_size)[0])
