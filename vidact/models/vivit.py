"""``vivit``: ``transformers.VivitForVideoClassification`` (the progressive-ratio recipe fine-tuned
``google/vivit-b-16x2-kinetics400``: tubelet (2, 16, 16); that checkpoint's config says 32 frames).

Its position table is learned, so another clip geometry needs the table resampled over the
(t, h, w) token grid: :func:`interpolate_vivit_pos_embed`, used here for ``from_pretrained``
folders and by :mod:`vidact.models.loading` for vidact checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vidact.models._base import (
    VideoClassifier,
    _check_geometry,
    _from_pretrained,
    _hf_arch,
    _hf_classifier,
    _pair,
    _preset_arch,
    _read_hf_config,
    log,
    register,
)


def vivit_grid(frames_per_clip: int, crop_size: int | tuple[int, int],
               tubelet: tuple[int, int, int]) -> tuple[int, ...]:
    """ViViT's (t, h, w) token grid for a clip."""
    h, w = _pair(crop_size)
    return frames_per_clip // tubelet[0], h // tubelet[1], w // tubelet[2]


def interpolate_vivit_pos_embed(
    pos: torch.Tensor, old_grid: tuple[int, ...], new_grid: tuple[int, ...]
) -> torch.Tensor:
    """Resize ViViT's learned ``(1, 1 + t*h*w, D)`` table to another (t, h, w) grid, CLS row kept.

    Tokens are ordered t-major then h then w (Conv3d output flattened), so the table reshapes to a
    (D, t, h, w) volume that is resampled trilinearly.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return pos
    t, h, w = old_grid
    if pos.shape[1] != 1 + t * h * w:
        raise ValueError(f"position table of {pos.shape[1]} rows does not match 1 + grid {old_grid}")
    dim = pos.shape[-1]
    volume = pos[:, 1:].reshape(1, t, h, w, dim).permute(0, 4, 1, 2, 3).float()
    volume = F.interpolate(volume, size=new_grid, mode="trilinear", align_corners=False)
    grid = volume.permute(0, 2, 3, 4, 1).reshape(1, -1, dim).to(pos.dtype)
    return torch.cat([pos[:, :1], grid], dim=1)


@register("vivit")
def _build_vivit(*, num_classes: int, preset: str, frames_per_clip: int, crop_size: int,
                 arch: dict[str, Any] | None, weights: Path | None) -> VideoClassifier:
    """ViViT (the progressive-ratio recipe): learned position table, interpolated in (t, h, w) when geometry changes."""
    from transformers import VivitConfig, VivitForVideoClassification

    geometry = {"num_frames": frames_per_clip, "image_size": crop_size}  # HF's names
    if weights is not None:
        raw = _read_hf_config(weights, "vivit")
        tub = tuple(raw.get("tubelet_size", (2, 16, 16)))
        _check_geometry("vivit", frames_per_clip, crop_size, tub[0], tub[1:])
        # Load at the checkpoint's own geometry (so its position table loads as is), then move
        # everything into a model built for the new geometry with the table interpolated.
        src = _from_pretrained(VivitForVideoClassification, weights, num_classes)
        old = vivit_grid(src.config.num_frames, src.config.image_size, tuple(src.config.tubelet_size))
        new = vivit_grid(frames_per_clip, crop_size, tuple(src.config.tubelet_size))
        if old == new:
            net = src
        else:
            state = src.state_dict()
            key = "vivit.embeddings.position_embeddings"
            state[key] = interpolate_vivit_pos_embed(state[key], old, new)
            net = VivitForVideoClassification(VivitConfig.from_dict({**_hf_arch(src.config), **geometry,
                                                                     "num_labels": num_classes}))
            net.load_state_dict(state)
            log.info("vivit: position embeddings interpolated from grid %s to %s (t, h, w)", old, new)
            del src
    else:
        if arch is None:
            arch = _preset_arch(VivitConfig, preset,
                                lambda s: {"tubelet_size": [2, s.patch, s.patch], "pooler_output_size": s.hidden})
        tub = tuple(arch.get("tubelet_size", (2, 16, 16)))
        _check_geometry("vivit", frames_per_clip, crop_size, tub[0], tub[1:])
        net = VivitForVideoClassification(VivitConfig.from_dict({**arch, **geometry, "num_labels": num_classes}))
    return _hf_classifier("vivit", net, preset, weights is not None, num_classes, frames_per_clip, crop_size,
                          int(net.config.tubelet_size[0]), int(net.config.tubelet_size[1]))
