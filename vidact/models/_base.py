"""What every model family shares, kept apart from the package ``__init__`` so the family modules
can import it while ``__init__`` imports them (no import cycle): the wrapper
(:class:`VideoClassifier`), the size presets, the registry, the config a model carries and the
helpers the builders have in common (geometry checks, HF ``from_pretrained``).

``model.config`` names the clip geometry as the clip spec does: ``frames_per_clip`` (T),
``crop_size`` (the square crop), ``preset`` (the size preset, or a timm model name).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidact.clip.spec import NORMALIZATION

log = logging.getLogger("vidact.models")


@dataclass(frozen=True)
class Size:
    """Transformer width/depth preset shared by the three families."""

    hidden: int
    layers: int
    heads: int
    mlp_ratio: int = 4
    patch: int = 16

    @property
    def intermediate(self) -> int:
        return self.hidden * self.mlp_ratio


SIZES: dict[str, Size] = {
    # Trains on a CPU in minutes; meant for 112 px (or less) and 8-16 frames. Four layers of 128,
    # not two of 96: telling a turn's direction relates tokens across space and time, and on the
    # demo task the 2-layer model stayed near 0.6-0.8 val top-1 (README, "What the demo shows").
    "tiny": Size(hidden=128, layers=4, heads=4),
    # ViT-S: timm vit_small_patch16_224 (the frame-mean baseline's backbone), VideoMAE-S.
    "small": Size(hidden=384, layers=12, heads=6),
    # ViT-B: the seeds' videomae-base and vivit-b-16x2 configs.
    "base": Size(hidden=768, layers=12, heads=12),
}

# Frames per temporal token (the tubelet depth); vit-mean embeds each frame on its own.
TUBELET: dict[str, int] = {"videomae": 2, "vivit": 2, "vit-mean": 1, "timesformer": 1}

# Input normalization per family, keys of vidact.clip.spec.NORMALIZATION.
NORM: dict[str, str] = {"videomae": "imagenet", "vivit": "imagenet", "vit-mean": "half", "timesformer": "imagenet"}
assert set(NORM.values()) <= set(NORMALIZATION)

# HF config entries that are not architecture (labels, geometry, bookkeeping): left out of config["arch"].
_HF_VOLATILE = {
    "id2label", "label2id", "num_labels", "num_frames", "image_size", "transformers_version",
    "architectures", "_name_or_path", "dtype", "torch_dtype", "problem_type",
}

class VideoClassifier(nn.Module):
    """``video (B, T, C, H, W) -> logits (B, num_classes)`` around a HF or timm network ``net``.

    ``config`` is a JSON-able dict that rebuilds the same architecture (see :func:`create_model`);
    ``head_name`` names the classifier submodule of ``net`` (the part sized to the dataset).
    """

    def __init__(self, name: str, net: nn.Module, head_name: str, config: dict[str, Any], hf_output: bool) -> None:
        super().__init__()
        self.name = name
        self.net = net
        self.head_name = head_name
        self.config = config
        self._hf_output = hf_output  # HF models return a ModelOutput with .logits

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of normalized clips."""
        self._check_input(video)
        if self._hf_output:
            return self.net(pixel_values=video).logits
        return self.net(video)

    def _check_input(self, video: torch.Tensor) -> None:
        """Fail with a readable message instead of a shape error deep inside the network."""
        cfg = self.config
        if video.ndim != 5:
            raise ValueError(f"{self.name}: expected video (B, T, C, H, W), got shape {tuple(video.shape)}")
        _, t, c, h, w = video.shape
        fixed_t = cfg["family"] != "vit-mean"  # vit-mean averages over any number of frames
        crop = cfg["crop_size"]
        if c != 3 or h != crop or w != crop or (fixed_t and t != cfg["frames_per_clip"]):
            want_t = cfg["frames_per_clip"] if fixed_t else "T"
            raise ValueError(f"{self.name}: expected video (B, {want_t}, 3, {crop}, {crop}), got {tuple(video.shape)}")

    def head_module(self) -> nn.Module:
        """The final classifier layer(s)."""
        return self.net.get_submodule(self.head_name)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(backbone, head)`` trainable parameters, disjoint, for separate learning rates."""
        head = [p for p in self.head_module().parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        backbone = [p for p in self.parameters() if p.requires_grad and id(p) not in head_ids]
        return backbone, head


class ChannelsFirst(nn.Module):
    """``(B, T, C, H, W) -> (B, C, T, H, W)``, the layout torchvision's video models take."""

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return video.permute(0, 2, 1, 3, 4)


# --------------------------------------------------------------------------------------------
# Registry


Builder = Callable[..., VideoClassifier]
MODELS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Add a builder ``(*, num_classes, preset, frames_per_clip, crop_size, arch, weights) -> VideoClassifier``."""

    def deco(fn: Builder) -> Builder:
        MODELS[name] = fn
        return fn

    return deco


# --------------------------------------------------------------------------------------------
# Helpers the builders share


def _check_geometry(name: str, frames_per_clip: int, crop_size: int, tubelet: int, patch: tuple[int, int]) -> None:
    """Clips must tile exactly into tubelets and patches."""
    if frames_per_clip < 1 or frames_per_clip % tubelet:
        raise ValueError(f"{name}: frames_per_clip={frames_per_clip} is not a positive multiple of the tubelet "
                         f"size {tubelet}")
    if crop_size < 1 or crop_size % patch[0] or crop_size % patch[1]:
        raise ValueError(f"{name}: crop_size={crop_size} is not a positive multiple of the patch size {patch}")


def _config(family: str, preset: str, num_classes: int, frames_per_clip: int, crop_size: int,
            tubelet: int, patch: int, arch: dict[str, Any]) -> dict[str, Any]:
    """The wrapper's JSON-able description; ``arch`` rebuilds the exact network."""
    return {
        "family": family, "preset": preset, "num_classes": num_classes, "frames_per_clip": frames_per_clip,
        "crop_size": crop_size, "norm": NORM[family], "tubelet": tubelet, "patch": patch,
        "arch": arch, "init": "random",
    }


def _size_name(hidden: int, layers: int, heads: int) -> str:
    """The preset a loaded architecture matches, else ``custom``."""
    for key, s in SIZES.items():
        if (s.hidden, s.layers, s.heads) == (hidden, layers, heads):
            return key
    return "custom"


def _pair(x: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    return (int(x[0]), int(x[1])) if isinstance(x, list | tuple) else (int(x), int(x))


def _read_hf_config(path: Path, model_type: str) -> dict[str, Any]:
    """config.json of a from_pretrained directory, checked to be of the expected model type."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: not a from_pretrained directory (no config.json)")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("model_type") != model_type:
        raise ValueError(f"{path}: config.json has model_type {cfg.get('model_type')!r}, expected {model_type!r}")
    return cfg


def _hf_arch(cfg: Any) -> dict[str, Any]:
    """A HF config's architecture entries (no labels, no geometry), JSON-able."""
    return {k: v for k, v in cfg.to_dict().items() if k not in _HF_VOLATILE}


def _preset_arch(config_cls: Any, preset: str, extra: Callable[[Size], dict[str, Any]]) -> dict[str, Any]:
    """A size preset as a transformers config's architecture entries (`_HF_VOLATILE` left out);
    `extra`: the family's own entries of that size (patch, tubelet)."""
    s = SIZES[preset]
    cfg = config_cls(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                     intermediate_size=s.intermediate, **extra(s)).to_dict()
    return {k: v for k, v in cfg.items() if k not in _HF_VOLATILE}


def _hf_classifier(family: str, net: nn.Module, preset: str, loaded: bool, num_classes: int, frames_per_clip: int,
                   crop_size: int, tubelet: int, patch: int) -> VideoClassifier:
    """The wrapper of a transformers video classifier; a loaded one's size is named from its config."""
    cfg = net.config
    preset = _size_name(cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) if loaded else preset
    config = _config(family, preset, num_classes, frames_per_clip, crop_size, tubelet, patch, _hf_arch(cfg))
    return VideoClassifier(family, net, "classifier", config, hf_output=True)


def _from_pretrained(cls: Any, path: Path, num_classes: int, **overrides: Any) -> nn.Module:
    """Local-only from_pretrained with the head resized to `num_classes`, in fp32."""
    # Label maps rather than num_labels: the saved id2label would otherwise disagree with num_labels.
    id2label = {i: f"LABEL_{i}" for i in range(num_classes)}
    label2id = {v: k for k, v in id2label.items()}
    net = cls.from_pretrained(path, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True,
                              local_files_only=True, **overrides)
    if net.config.num_labels != num_classes:  # pragma: no cover - guards a transformers behaviour change
        raise RuntimeError(f"{path}: head has {net.config.num_labels} classes after loading, wanted {num_classes}")
    return net.float()
