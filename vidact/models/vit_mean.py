"""``vit-mean``: a timm ViT applied to every frame, features averaged over time, one linear head
(the frame-mean baseline: ``vit_small_patch16_224``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidact.models._base import SIZES, VideoClassifier, _check_geometry, _config, _pair, log, register
from vidact.models.loading import WeightsNotFound


class FrameMeanViT(nn.Module):
    """Frame-mean baseline: image backbone on each frame, temporal mean of the frame features, linear head."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        feats = self.backbone(video.flatten(0, 1))  # (B*T, D): CLS token after the final norm
        return self.head(feats.view(b, t, -1).mean(1))


@register("vit-mean")
def _build_vit_mean(*, num_classes: int, preset: str, frames_per_clip: int, crop_size: int,
                    arch: dict[str, Any] | None, weights: Path | None) -> VideoClassifier:
    """Per-frame timm ViT + temporal mean (the frame-mean baseline). A size preset builds timm's
    `VisionTransformer` (a state-dict file is then loaded by create_model); ``arch["timm_name"]``
    builds that timm model, with timm's pretrained weights when `weights` is ``"pretrained"`` or a
    file (timm's ``pretrained_cfg_overlay``)."""
    from timm.models.vision_transformer import VisionTransformer

    if arch is not None and "timm_name" in arch:
        return _build_timm_vit_mean(num_classes, frames_per_clip, crop_size, arch["timm_name"], weights)
    if weights is not None:
        raise ValueError(f"vit-mean: weights must be a state dict file (.pth/.bin/.safetensors) or a timm model "
                         f"name, not a directory: {weights}")
    if arch is None:
        s = SIZES[preset]
        # vit_small_patch16_224's constructor arguments at size "small"; timm defaults for the rest.
        arch = {"patch_size": s.patch, "embed_dim": s.hidden, "depth": s.layers, "num_heads": s.heads,
                "mlp_ratio": float(s.mlp_ratio)}
    _check_geometry("vit-mean", frames_per_clip, crop_size, 1, _pair(arch["patch_size"]))
    backbone = VisionTransformer(img_size=crop_size, num_classes=0, **arch)
    net = FrameMeanViT(backbone, num_classes)
    config = _config("vit-mean", preset, num_classes, frames_per_clip, crop_size, 1, int(arch["patch_size"]),
                     dict(arch))
    return VideoClassifier("vit-mean", net, "head", config, hf_output=False)


def _build_timm_vit_mean(num_classes: int, frames_per_clip: int, crop_size: int, timm_name: str,
                         weights: str | Path | None) -> VideoClassifier:
    """vit-mean on a timm model by name; timm resamples a pretrained position table to `crop_size`."""
    import timm

    kwargs: dict[str, Any] = {"pretrained": weights is not None}
    if weights not in (None, "pretrained"):
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
    try:
        backbone = timm.create_model(timm_name, num_classes=0, img_size=crop_size, **kwargs)
    except (OSError, RuntimeError) as e:  # not cached and no hub: say how to get it
        raise WeightsNotFound(f"timm/{timm_name}: pretrained weights not in the Hugging Face cache and the hub is "
                              f"not reachable ({e.__class__.__name__}); fetch them where there is a network "
                              f"(`hf download timm/{timm_name}`) and copy that cache here, or pass NAME@FILE") from e
    patch = _pair(backbone.patch_embed.patch_size)
    _check_geometry("vit-mean", frames_per_clip, crop_size, 1, patch)
    if weights is not None:
        log.info("vit-mean: timm %s with pretrained weights (%s); head left at random init", timm_name,
                 weights)
    net = FrameMeanViT(backbone, num_classes)
    config = _config("vit-mean", timm_name, num_classes, frames_per_clip, crop_size, 1, patch[0],
                     {"timm_name": timm_name})
    return VideoClassifier("vit-mean", net, "head", config, hf_output=False)
