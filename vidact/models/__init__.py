"""Video classifiers: one factory (:func:`create_model`) over the families, all taking ``(B, T, C, H, W)``.

* ``videomae`` (:mod:`vidact.models.videomae`): ``transformers.VideoMAEForVideoClassification``
  (the two-stage recipe fine-tuned ``MCG-NJU/videomae-base-finetuned-kinetics``: 16 frames, 224 px,
  tubelet 2, patch 16).
* ``vivit`` (:mod:`vidact.models.vivit`): ``transformers.VivitForVideoClassification`` (the
  progressive-ratio recipe fine-tuned ``google/vivit-b-16x2-kinetics400``: tubelet (2, 16, 16);
  that checkpoint's config says 32 frames).
* ``vit-mean`` (:mod:`vidact.models.vit_mean`): a timm ViT applied to every frame, features
  averaged over time, one linear head (the frame-mean baseline: ``vit_small_patch16_224``).
* ``timesformer`` (:mod:`vidact.models.timesformer`): ``transformers.TimesformerForVideoClassification``
  (``facebook/timesformer-base-finetuned-k400``: 8 frames, 224 px, patch 16; its learned
  position and time tables resampled by transformers at other clip sizes).
* torchvision's video classifiers by their names (:mod:`vidact.models.tv_video`: ``r3d_18``,
  ``mc3_18``, ``r2plus1d_18``, ``s3d``, ``mvit_v1_b``, ``mvit_v2_s``, ``swin3d_t/s/b``), weights
  named as in torchvision (``KINETICS400_V1``) read from the torch hub cache, offline.
* your own (:mod:`vidact.models.custom`): ``package.module:factory``, any ``nn.Module`` the factory
  returns for ``num_classes`` (its input layout, head and normalization declared on it). A
  checkpoint of one loads only when the same factory is named again (``factory=``): importing it
  runs code, which a file alone never makes vidact do.

Weights (:mod:`vidact.models.loading`): a local path (a ``from_pretrained`` directory, a timm state
dict file, or a vidact checkpoint), a Hugging Face id such as the two above (through the usual
cache; offline when cached), or a timm model name for ``vit-mean``. Without weights the model is
built from its size preset with random weights and a warning says so. The weights' own
normalization, when they carry one, becomes the model's (``config["norm"]``, ``config["mean"]``,
``config["std"]``).

This package is the interface: code outside it imports from ``vidact.models`` only, never from its
modules (``tests/test_layout.py`` checks it). The shared pieces live in ``_base`` so that the family
modules, which register themselves on import, need not import this ``__init__``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import vidact.checkpoint as checkpoint
from vidact.clip.spec import NORMALIZATION

# Importing the families registers them (videomae, then vivit through loading, then vit-mean).
from vidact.models import custom, timesformer, tv_video, videomae, vit_mean, vivit  # noqa: F401
from vidact.models._base import (
    MODELS,
    NORM,
    SIZES,
    TUBELET,
    Builder,
    Size,
    VideoClassifier,
    log,
    register,
)
from vidact.models.loading import (
    Weights,
    WeightsNotFound,
    _load_timm_backbone,
    _read_weights_file,
    _strip_wrappers,
    _weights_kind,
    load_weights,
    resolve,
    stored_config,
)
from vidact.models.vit_mean import FrameMeanViT
from vidact.models.vivit import interpolate_vivit_pos_embed, vivit_grid

TORCHVISION_FAMILIES = tv_video.FAMILIES  # torchvision's video classifiers, by their names

__all__ = [
    "MODELS", "NORM", "SIZES", "TORCHVISION_FAMILIES", "TUBELET", "Builder", "FrameMeanViT", "Size",
    "VideoClassifier", "Weights",
    "WeightsNotFound", "build_from_config", "check_model", "create_model",
    "load_checkpoint_model", "interpolate_vivit_pos_embed", "load_weights", "register",
    "add_factory_flag", "is_factory", "resolve", "vivit_grid",
]

is_factory = custom.is_factory  # ``package.module:factory``: the user's own model
add_factory_flag = custom.add_factory_flag  # ``--model`` of the commands that load its checkpoints


def create_model(
    name: str,
    *,
    num_classes: int,
    preset: str = "tiny",
    frames_per_clip: int = 16,
    crop_size: int = 224,
    weights: str | Path | None = None,
) -> VideoClassifier:
    """Build model `name` for `num_classes` classes on clips of `frames_per_clip` x `crop_size`^2.

    `weights`: ``None`` (random init, warned), a HF ``from_pretrained`` directory (``videomae``,
    ``vivit``, ``timesformer``; the architecture then comes from its config.json and `preset` is ignored), a timm
    state dict file of the backbone (``vit-mean``), or a vidact checkpoint / wrapper state dict file
    (any family; the architecture comes from its ``model_config``). The head is resized to
    `num_classes` and position embeddings are adapted to `frames_per_clip`/`crop_size`.
    Keyword arguments only: positional ones were easy to swap (frames and crop are both ints).
    `name` may be ``package.module:factory`` (:mod:`vidact.models.custom`).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if is_factory(name):
        return _create_custom(name, num_classes, frames_per_clip, crop_size, weights)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    build = MODELS[name]
    target = {"num_classes": num_classes, "frames_per_clip": frames_per_clip, "crop_size": crop_size}
    if weights is None:
        if preset not in SIZES:
            raise ValueError(f"unknown model preset {preset!r}; available: {', '.join(SIZES)}")
        model = build(**target, preset=preset, arch=None, weights=None)
        log.warning("%s: no weights given, random init (size %r, %d frames, %d px)", name, model.config["preset"],
                    frames_per_clip, crop_size)
        return model
    if name in tv_video.FAMILIES and not Path(str(weights)).expanduser().exists():
        path, mean, std = tv_video.cached_weights(name, str(weights))  # named: the torch hub cache, offline
        source = Weights(str(weights), path=path, mean=mean, std=std)
    else:
        source = resolve(name, weights)
    model = _build_with_weights(name, source, preset, target)
    if source.mean is not None:
        _use_normalization(model, source.mean, source.std)
    model.config["init"] = source.spec
    return model


def check_model(name: str, *, preset: str = "tiny", frames_per_clip: int = 16, crop_size: int = 224,
                weights: str | Path | None = None) -> None:
    """What `create_model` would refuse, found before anything is built or written: an unknown
    model or preset, a clip size the architecture does not take (torchvision's models), weights
    that are not there (resolved as create_model resolves them; nothing is loaded), a factory that
    does not import or build what it declares."""
    if is_factory(name):  # built once (the user's code: what it declares is checked, one line each)
        custom.build(name, num_classes=1, frames_per_clip=frames_per_clip, crop_size=crop_size)
        if weights is not None and not Path(str(weights)).expanduser().is_file():
            raise FileNotFoundError(f"{name}: weights not found: {weights} (a vidact checkpoint or a state dict file)")
        return
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    if weights is None and preset not in SIZES:
        raise ValueError(f"unknown model preset {preset!r}; available: {', '.join(SIZES)}")
    if name in tv_video.FAMILIES:
        tv_video.check_geometry(name, frames_per_clip, crop_size)
        if weights is not None and not Path(str(weights)).expanduser().exists():
            tv_video.cached_weights(name, str(weights))
    elif weights is not None:
        resolve(name, weights)


def load_checkpoint_model(path: str | Path, device: torch.device,
                          factory: str | None = None) -> tuple[VideoClassifier, dict[str, Any]]:
    """The model of a vidact checkpoint (best.pt or last.pt) in eval mode on `device`, and the
    checkpoint dict. The file is read once, by the safe loader: the model is built from its stored
    config, then its weights loaded. `factory`: the user's own model code the checkpoint may name,
    named by the user too (a checkpoint alone imports nothing)."""
    state = checkpoint.load(path, "cpu")
    model = build_from_config(state["model_config"], factory, source=str(path))
    load_weights(model, state, source=str(path))
    return model.to(device).eval(), state


def build_from_config(cfg: dict[str, Any], factory: str | None = None, source: str = "checkpoint") -> VideoClassifier:
    """The architecture a checkpoint's ``model_config`` describes, with its normalization; the
    weights are the caller's to load (`load_weights`), so a checkpoint is read once. A custom
    model is built only when `factory` names the same code (`custom.check_trusted`)."""
    family = cfg["family"]
    if family == custom.FAMILY:
        custom.check_trusted(cfg, factory, source)
        return custom.build(factory, num_classes=cfg["num_classes"], frames_per_clip=cfg["frames_per_clip"],
                            crop_size=cfg["crop_size"])
    if factory is not None:
        raise ValueError(f"{source}: holds a {family!r} model, not one of --model {factory}; leave --model out")
    if family not in MODELS:
        raise ValueError(f"unknown model {family!r}; available: {', '.join(sorted(MODELS))}")
    model = MODELS[family](num_classes=cfg["num_classes"], frames_per_clip=cfg["frames_per_clip"],
                           crop_size=cfg["crop_size"], preset=cfg["preset"], arch=cfg.get("arch"), weights=None)
    model.config.update({k: cfg[k] for k in ("norm", "mean", "std", "init") if k in cfg})
    return model


def _create_custom(spec: str, num_classes: int, frames_per_clip: int, crop_size: int,
                   weights: str | Path | None) -> VideoClassifier:
    """The user's module; `weights`: a vidact checkpoint of the same factory or the module's own state dict."""
    model = custom.build(spec, num_classes=num_classes, frames_per_clip=frames_per_clip, crop_size=crop_size)
    if weights is None:
        log.info("%s: built by the factory (its own init)", spec)
        return model
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: weights not found: {path} (a vidact checkpoint or a state dict file)")
    obj = _read_weights_file(path)
    stored = stored_config(obj)
    keys = [_strip_wrappers(k) for k in obj]
    if stored is None and not all(k.startswith("net.model.") for k in keys):  # the module's own state dict
        obj = {f"net.model.{k}": v for k, v in zip(keys, obj.values())}
    elif stored is not None and (stored.get("arch") or {}).get("factory") != spec:
        raise ValueError(f"{path} holds a {stored.get('family')!r} model, not one built by {spec}")
    load_weights(model, obj, source=str(path))
    model.config["init"] = str(weights)
    return model


def _build_with_weights(name: str, source: Weights, preset: str, target: dict[str, int]) -> VideoClassifier:
    """The model with `source`'s weights: a from_pretrained folder, a timm name, or a file.
    `target`: what the builder sizes the model to (``num_classes``, ``frames_per_clip``, ``crop_size``)."""
    build = MODELS[name]
    if source.timm_name is not None:
        arch = {"timm_name": source.timm_name}
        return build(**target, preset=source.timm_name, arch=arch, weights=source.file or "pretrained")
    path = source.path
    if path.is_dir():
        model = build(**target, preset=preset, arch=None, weights=path)
        log.info("%s: loaded %s (%s); classifier head for %d classes left at random init", name, source.spec,
                 path, target["num_classes"])
        return model
    obj = _read_weights_file(path)
    if _weights_kind(obj) == "native":
        if name in tv_video.FAMILIES:  # torchvision's own state dict (its head kept if the classes agree)
            model = build(**target, preset=preset, arch=None, weights=None)
            load_weights(model, tv_video.wrapper_state(obj), source=str(path))
            return model
        if name != "vit-mean":
            raise ValueError(f"{name}: {path} is neither a vidact checkpoint nor a from_pretrained directory")
        model = build(**target, preset=preset, arch=None, weights=None)
        _load_timm_backbone(model, obj, path)
        return model
    stored = stored_config(obj)  # old checkpoints' key names already renamed
    if stored is not None and stored.get("family") != name:
        raise ValueError(f"{path} holds a {stored.get('family')!r} model, not {name!r}")
    arch = None
    if stored is not None:  # rebuild the stored architecture, at the requested geometry and classes
        arch = stored.get("arch")
        preset = stored.get("preset", preset)
    model = build(**target, preset=preset, arch=arch, weights=None)
    load_weights(model, obj, source=str(path))
    if stored is not None and "mean" in stored:  # the normalization it was trained with
        model.config.update(norm=stored["norm"], mean=stored["mean"], std=stored["std"])
    return model


def _use_normalization(model: VideoClassifier, mean: tuple, std: tuple) -> None:
    """The weights' own input statistics: a known table entry's name when they match one."""
    known = [k for k, (m, s) in NORMALIZATION.items()
             if max(abs(a - b) for a, b in zip((*m, *s), (*mean, *std))) < 1e-4]
    model.config["norm"] = known[0] if known else "custom"
    model.config["mean"], model.config["std"] = list(mean), list(std)
    log.info("%s: input normalization from the weights: mean %s std %s", model.name, mean, std)
