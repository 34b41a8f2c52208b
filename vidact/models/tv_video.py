"""torchvision's video classifiers by name (``torchvision.models.video``: ``r3d_18``, ``mc3_18``,
``r2plus1d_18``, ``s3d``, ``mvit_v1_b``, ``mvit_v2_s``, ``swin3d_t`` / ``_s`` / ``_b``: whatever
the installed torchvision lists). They take ``(B, C, T, H, W)``: the wrapper's first module turns
vidact's ``(B, T, C, H, W)`` into it. Their input statistics are their weights' (the enum's
``transforms``): R(2+1)D, R3D, MC3 and S3D Kinetics' own, MViT 0.45 / 0.225, Swin3D ImageNet's.

Weights by name (``--weights KINETICS400_V1`` or ``R3D_18_Weights.KINETICS400_V1``) are read from
the torch hub cache (``$TORCH_HOME/hub/checkpoints``, what ``torchvision`` downloads into), never
downloaded here: a missing file is one line naming it and where it comes from. A file path works
too (a torchvision state dict). The head is sized to the set's classes: kept when the weights have
as many, else new (random init).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidact.models._base import NORM, TUBELET, ChannelsFirst, VideoClassifier, register
from vidact.models.loading import WeightsNotFound

# Every video classifier torchvision 0.29 builds (a test holds this to its list_models, so a new
# torchvision's additions are noticed): its classifier layer (sized to the classes) and the input
# statistics of its weights (a test holds them to the weights' transforms). Written out so that
# registering them does not import torchvision's models (~1 s) into every command.
HEADS = {"r3d_18": "fc", "mc3_18": "fc", "r2plus1d_18": "fc", "s3d": "classifier.1", "mvit_v1_b": "head.1",
         "mvit_v2_s": "head.1", "swin3d_t": "head", "swin3d_s": "head", "swin3d_b": "head"}
STATISTICS = {"r3d_18": "kinetics", "mc3_18": "kinetics", "r2plus1d_18": "kinetics", "s3d": "kinetics",
              "mvit_v1_b": "slowfast", "mvit_v2_s": "slowfast", "swin3d_t": "imagenet", "swin3d_s": "imagenet",
              "swin3d_b": "imagenet"}


def weights_enum(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name)


def weights_entry(name: str, spec: str):
    """The weights enum member `spec` names (``KINETICS400_V1`` or ``R3D_18_Weights.KINETICS400_V1``)."""
    enum = weights_enum(name)
    member = spec.rpartition(".")[2] if spec.startswith(enum.__name__ + ".") or "." not in spec else None
    if member is None or member not in enum.__members__:
        raise FileNotFoundError(f"{name}: weights not found: {spec} is neither a local file nor one of "
                                f"{', '.join(f'{enum.__name__}.{m}' for m in enum.__members__)}")
    return enum[member]


def statistics(entry) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the weights' own preprocessing (``entry.transforms()``) normalizes with."""
    preset = entry.transforms()
    return tuple(float(v) for v in preset.mean), tuple(float(v) for v in preset.std)


def hub_file(entry) -> Path:
    """Where torchvision keeps the weights of `entry` once downloaded (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / entry.url.rsplit("/", 1)[1]


def cached_weights(name: str, spec: str) -> tuple[Path, tuple, tuple]:
    """(file, mean, std) of named weights, from the hub cache only."""
    entry = weights_entry(name, spec)
    path = hub_file(entry)
    if not path.is_file():
        raise WeightsNotFound(f"{name}: {type(entry).__name__}.{entry.name} is not in the torch hub cache: put "
                              f"{entry.url} at {path} (or point TORCH_HOME at a cache that has it)")
    mean, std = statistics(entry)
    return path, mean, std


def check_geometry(name: str, frames_per_clip: int, crop_size: int) -> None:
    """The clip sizes the architecture takes (its weights' metadata: MViT's position tables fix 16
    frames of 224 px, S3D's pooling wants at least 14 frames of 224 px)."""
    meta = next(iter(weights_enum(name))).meta
    min_t, (min_h, _) = meta.get("min_temporal_size", 1), meta.get("min_size", (1, 1))
    fixed = name.startswith("mvit")
    if fixed:
        wrong, need = (frames_per_clip, crop_size) != (min_t, min_h), "exactly"
    else:
        wrong, need = frames_per_clip < min_t or crop_size < min_h, "at least"
    if wrong:
        raise ValueError(f"{name} takes {need} {min_t} frames of {min_h} px, got {frames_per_clip} frames of "
                         f"{crop_size} px; set --frames and --crop-size")


def _build(name: str, *, num_classes: int, preset: str, frames_per_clip: int, crop_size: int,
           arch: dict[str, Any] | None, weights: None) -> VideoClassifier:
    """`name` for `num_classes` classes, random init (`wrapper_state` loads weights into it)."""
    from torchvision.models import get_model

    if weights is not None:
        raise ValueError(f"{name}: the builder takes no weights; create_model loads them")
    check_geometry(name, frames_per_clip, crop_size)
    net = nn.Sequential()
    net.add_module("layout", ChannelsFirst())
    net.add_module("model", get_model(name, weights=None, num_classes=num_classes))
    config = {"family": name, "preset": "torchvision", "num_classes": num_classes,
              "frames_per_clip": frames_per_clip, "crop_size": crop_size, "norm": NORM[name], "tubelet": 1,
              "patch": 1, "arch": {"torchvision": name}, "init": "random"}
    return VideoClassifier(name, net, f"model.{HEADS[name]}", config, hf_output=False)


def wrapper_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision model's state dict as the wrapper's (what `load_weights` takes)."""
    return {f"net.model.{k}": v for k, v in state.items()}


def _register(name: str) -> None:
    NORM[name], TUBELET[name] = STATISTICS[name], 1

    @register(name)
    def build(**kwargs: Any) -> VideoClassifier:
        return _build(name, **kwargs)


FAMILIES = tuple(HEADS)
for _name in FAMILIES:
    _register(_name)
