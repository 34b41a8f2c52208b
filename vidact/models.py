"""Video classifiers: one factory (:func:`create_model`) over three families, all taking ``(B, T, C, H, W)``.

* ``videomae``: ``transformers.VideoMAEForVideoClassification`` (the two-stage recipe fine-tuned
  ``MCG-NJU/videomae-base-finetuned-kinetics``: 16 frames, 224 px, tubelet 2, patch 16).
* ``vivit``: ``transformers.VivitForVideoClassification`` (the progressive-ratio recipe fine-tuned
  ``google/vivit-b-16x2-kinetics400``: tubelet (2, 16, 16); that checkpoint's config says 32 frames).
* ``vit-mean``: a timm ViT applied to every frame, features averaged over time, one linear head
  (the frame-mean baseline: ``vit_small_patch16_224``).

Weights (`vidact.weights`): a local path (a ``from_pretrained`` directory, a timm state dict
file, or a vidact checkpoint), a Hugging Face id such as the two above (through the usual cache;
offline when cached), or a timm model name for ``vit-mean``. Without weights the model is built
from its size preset with random weights and a warning says so. The weights' own normalization,
when they carry one, becomes the model's (``config["norm"]``, ``config["mean"]``, ``config["std"]``).
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidact.clip.spec import NORMALIZATION
from vidact.weights import Weights, WeightsNotFound, resolve

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
TUBELET: dict[str, int] = {"videomae": 2, "vivit": 2, "vit-mean": 1}

# Input normalization per family, keys of vidact.clip.spec.NORMALIZATION.
NORM: dict[str, str] = {"videomae": "imagenet", "vivit": "imagenet", "vit-mean": "half"}
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
        if c != 3 or h != cfg["image_size"] or w != cfg["image_size"] or (fixed_t and t != cfg["num_frames"]):
            want_t = cfg["num_frames"] if fixed_t else "T"
            raise ValueError(
                f"{self.name}: expected video (B, {want_t}, 3, {cfg['image_size']}, {cfg['image_size']}), "
                f"got {tuple(video.shape)}")

    def head_module(self) -> nn.Module:
        """The final classifier layer(s)."""
        return self.net.get_submodule(self.head_name)

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(backbone, head)`` trainable parameters, disjoint, for separate learning rates."""
        head = [p for p in self.head_module().parameters() if p.requires_grad]
        head_ids = {id(p) for p in head}
        backbone = [p for p in self.parameters() if p.requires_grad and id(p) not in head_ids]
        return backbone, head


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


# --------------------------------------------------------------------------------------------
# Registry


Builder = Callable[..., VideoClassifier]
MODELS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Add a builder ``(num_classes, num_frames, image_size, size, arch, weights) -> VideoClassifier``."""

    def deco(fn: Builder) -> Builder:
        MODELS[name] = fn
        return fn

    return deco


def create_model(
    name: str,
    num_classes: int,
    preset: str = "tiny",
    frames_per_clip: int = 16,
    image_size: int = 224,
    weights: str | Path | None = None,
) -> VideoClassifier:
    """Build model `name` for `num_classes` classes on clips of `frames_per_clip` x `image_size`^2.

    `weights`: ``None`` (random init, warned), a HF ``from_pretrained`` directory (``videomae``,
    ``vivit``; the architecture then comes from its config.json and `preset` is ignored), a timm
    state dict file of the backbone (``vit-mean``), or a vidact checkpoint / wrapper state dict file
    (any family; the architecture comes from its ``model_config``). The head is resized to
    `num_classes` and position embeddings are adapted to `frames_per_clip`/`image_size`.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    build = MODELS[name]
    if weights is None:
        if preset not in SIZES:
            raise ValueError(f"unknown model preset {preset!r}; available: {', '.join(SIZES)}")
        model = build(num_classes, frames_per_clip, image_size, preset, None, None)
        log.warning("%s: no weights given, random init (size %r, %d frames, %d px)", name, preset, frames_per_clip,
                    image_size)
        return model
    source = resolve(name, weights)
    model = _build_with_weights(name, source, num_classes, preset, frames_per_clip, image_size)
    if source.mean is not None:
        _use_normalization(model, source.mean, source.std)
    model.config["init"] = source.spec
    return model


def build_from_config(cfg: Mapping[str, Any]) -> VideoClassifier:
    """The architecture a checkpoint's ``model_config`` describes, with its normalization; the
    weights are the caller's to load (`load_weights`), so a checkpoint is read once."""
    family = cfg["family"]
    if family not in MODELS:
        raise ValueError(f"unknown model {family!r}; available: {', '.join(sorted(MODELS))}")
    model = MODELS[family](cfg["num_classes"], cfg["num_frames"], cfg["image_size"], cfg["size"], cfg.get("arch"),
                           None)
    model.config.update({k: cfg[k] for k in ("norm", "mean", "std", "init") if k in cfg})
    return model


def _build_with_weights(name: str, source: Weights, num_classes: int, size: str, num_frames: int,
                        image_size: int) -> VideoClassifier:
    """The model with `source`'s weights: a from_pretrained folder, a timm name, or a file."""
    build = MODELS[name]
    if source.timm_name is not None:
        arch = {"timm_name": source.timm_name}
        return build(num_classes, num_frames, image_size, source.timm_name, arch, source.file or "pretrained")
    path = source.path
    if path.is_dir():
        model = build(num_classes, num_frames, image_size, size, None, path)
        log.info("%s: loaded %s (%s); classifier head for %d classes left at random init", name, source.spec,
                 path, num_classes)
        return model
    obj = _read_weights_file(path)
    kind = _weights_kind(obj)
    if kind == "native":
        if name != "vit-mean":
            raise ValueError(f"{name}: {path} is neither a vidact checkpoint nor a from_pretrained directory")
        model = build(num_classes, num_frames, image_size, size, None, None)
        _load_timm_backbone(model, obj, path)
    else:
        stored = obj.get("model_config") if kind == "checkpoint" else None
        if stored is not None and stored.get("family") != name:
            raise ValueError(f"{path} holds a {stored.get('family')!r} model, not {name!r}")
        arch = None
        if stored is not None:  # rebuild the stored architecture, at the requested geometry and classes
            arch = stored.get("arch")
            size = stored.get("size", size)
        model = build(num_classes, num_frames, image_size, size, arch, None)
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


def _check_geometry(name: str, num_frames: int, image_size: int, tubelet: int, patch: tuple[int, int]) -> None:
    """Clips must tile exactly into tubelets and patches."""
    if num_frames < 1 or num_frames % tubelet:
        raise ValueError(f"{name}: num_frames={num_frames} is not a positive multiple of the tubelet size {tubelet}")
    if image_size < 1 or image_size % patch[0] or image_size % patch[1]:
        raise ValueError(f"{name}: image_size={image_size} is not a positive multiple of the patch size {patch}")


def _config(family: str, size: str, num_classes: int, num_frames: int, image_size: int,
            tubelet: int, patch: int, arch: dict[str, Any]) -> dict[str, Any]:
    """The wrapper's JSON-able description; ``arch`` rebuilds the exact network."""
    return {
        "family": family, "size": size, "num_classes": num_classes, "num_frames": num_frames,
        "image_size": image_size, "norm": NORM[family], "tubelet": tubelet, "patch": patch,
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


# --------------------------------------------------------------------------------------------
# Families


@register("videomae")
def _build_videomae(num_classes: int, num_frames: int, image_size: int, size: str,
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
    geometry = {"num_frames": num_frames, "image_size": image_size}
    if weights is not None:
        raw = _read_hf_config(weights, "videomae")
        _check_geometry("videomae", num_frames, image_size, int(raw.get("tubelet_size", 2)),
                        _pair(raw.get("patch_size", 16)))
        net = _from_pretrained(VideoMAEForVideoClassification, weights, num_classes, **geometry)
        if (raw.get("num_frames"), raw.get("image_size")) != (num_frames, image_size):
            log.info("videomae: fixed sin-cos position table rebuilt for %d frames x %d px (saved: %s x %s)",
                     num_frames, image_size, raw.get("num_frames"), raw.get("image_size"))
    else:
        if arch is None:
            s = SIZES[size]
            arch = VideoMAEConfig(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                                  intermediate_size=s.intermediate, patch_size=s.patch, tubelet_size=2).to_dict()
            arch = {k: v for k, v in arch.items() if k not in _HF_VOLATILE}
        _check_geometry("videomae", num_frames, image_size, int(arch.get("tubelet_size", 2)),
                        _pair(arch.get("patch_size", 16)))
        net = VideoMAEForVideoClassification(VideoMAEConfig.from_dict({**arch, **geometry, "num_labels": num_classes}))
    cfg = net.config
    size = _size_name(cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) if weights else size
    config = _config("videomae", size, num_classes, num_frames, image_size, int(cfg.tubelet_size),
                     _pair(cfg.patch_size)[0], _hf_arch(cfg))
    return VideoClassifier("videomae", net, "classifier", config, hf_output=True)


def vivit_grid(num_frames: int, image_size: int | tuple[int, int], tubelet: tuple[int, int, int]) -> tuple[int, ...]:
    """ViViT's (t, h, w) token grid for a clip."""
    h, w = _pair(image_size)
    return num_frames // tubelet[0], h // tubelet[1], w // tubelet[2]


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
def _build_vivit(num_classes: int, num_frames: int, image_size: int, size: str,
                      arch: dict[str, Any] | None, weights: Path | None) -> VideoClassifier:
    """ViViT (the progressive-ratio recipe): learned position table, interpolated in (t, h, w) when geometry changes."""
    from transformers import VivitConfig, VivitForVideoClassification

    geometry = {"num_frames": num_frames, "image_size": image_size}
    if weights is not None:
        raw = _read_hf_config(weights, "vivit")
        tub = tuple(raw.get("tubelet_size", (2, 16, 16)))
        _check_geometry("vivit", num_frames, image_size, tub[0], tub[1:])
        # Load at the checkpoint's own geometry (so its position table loads as is), then move
        # everything into a model built for the new geometry with the table interpolated.
        src = _from_pretrained(VivitForVideoClassification, weights, num_classes)
        old = vivit_grid(src.config.num_frames, src.config.image_size, tuple(src.config.tubelet_size))
        new = vivit_grid(num_frames, image_size, tuple(src.config.tubelet_size))
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
            s = SIZES[size]
            arch = VivitConfig(hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                               intermediate_size=s.intermediate, tubelet_size=[2, s.patch, s.patch],
                               pooler_output_size=s.hidden).to_dict()
            arch = {k: v for k, v in arch.items() if k not in _HF_VOLATILE}
        tub = tuple(arch.get("tubelet_size", (2, 16, 16)))
        _check_geometry("vivit", num_frames, image_size, tub[0], tub[1:])
        net = VivitForVideoClassification(VivitConfig.from_dict({**arch, **geometry, "num_labels": num_classes}))
    cfg = net.config
    size = _size_name(cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) if weights else size
    config = _config("vivit", size, num_classes, num_frames, image_size, int(cfg.tubelet_size[0]),
                     int(cfg.tubelet_size[1]), _hf_arch(cfg))
    return VideoClassifier("vivit", net, "classifier", config, hf_output=True)


@register("vit-mean")
def _build_vit_mean(num_classes: int, num_frames: int, image_size: int, size: str,
                    arch: dict[str, Any] | None, weights: Path | None) -> VideoClassifier:
    """Per-frame timm ViT + temporal mean (the frame-mean baseline). A size preset builds timm's
    `VisionTransformer` (a state-dict file is then loaded by create_model); ``arch["timm_name"]``
    builds that timm model, with timm's pretrained weights when `weights` is ``"pretrained"`` or a
    file (timm's ``pretrained_cfg_overlay``)."""
    from timm.models.vision_transformer import VisionTransformer

    if arch is not None and "timm_name" in arch:
        return _build_timm_vit_mean(num_classes, num_frames, image_size, arch["timm_name"], weights)
    if weights is not None:
        raise ValueError(f"vit-mean: weights must be a state dict file (.pth/.bin/.safetensors) or a timm model "
                         f"name, not a directory: {weights}")
    if arch is None:
        s = SIZES[size]
        # vit_small_patch16_224's constructor arguments at size "small"; timm defaults for the rest.
        arch = {"patch_size": s.patch, "embed_dim": s.hidden, "depth": s.layers, "num_heads": s.heads,
                "mlp_ratio": float(s.mlp_ratio)}
    _check_geometry("vit-mean", num_frames, image_size, 1, _pair(arch["patch_size"]))
    backbone = VisionTransformer(img_size=image_size, num_classes=0, **arch)
    net = FrameMeanViT(backbone, num_classes)
    config = _config("vit-mean", size, num_classes, num_frames, image_size, 1, int(arch["patch_size"]), dict(arch))
    return VideoClassifier("vit-mean", net, "head", config, hf_output=False)


def _build_timm_vit_mean(num_classes: int, num_frames: int, image_size: int, timm_name: str,
                         weights: str | Path | None) -> VideoClassifier:
    """vit-mean on a timm model by name; timm resamples a pretrained position table to `image_size`."""
    import timm

    kwargs: dict[str, Any] = {"pretrained": weights is not None}
    if weights not in (None, "pretrained"):
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
    try:
        backbone = timm.create_model(timm_name, num_classes=0, img_size=image_size, **kwargs)
    except (OSError, RuntimeError) as e:  # not cached and no hub: say how to get it
        raise WeightsNotFound(f"timm/{timm_name}: pretrained weights not in the Hugging Face cache and the hub is "
                              f"not reachable ({e.__class__.__name__}); fetch them where there is a network "
                              f"(`hf download timm/{timm_name}`) and copy that cache here, or pass NAME@FILE") from e
    patch = _pair(backbone.patch_embed.patch_size)
    _check_geometry("vit-mean", num_frames, image_size, 1, patch)
    if weights is not None:
        log.info("vit-mean: timm %s with pretrained weights (%s); head left at random init", timm_name,
                 weights)
    net = FrameMeanViT(backbone, num_classes)
    config = _config("vit-mean", timm_name, num_classes, num_frames, image_size, 1, patch[0],
                     {"timm_name": timm_name})
    return VideoClassifier("vit-mean", net, "head", config, hf_output=False)


# --------------------------------------------------------------------------------------------
# Weights


def _read_weights_file(path: Path) -> Mapping[str, Any]:
    """A state dict or checkpoint dict from ``.safetensors`` or a torch pickle (``.pt``/``.pth``/``.bin``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Full vidact checkpoints carry numpy RNG state, which the safe unpickler refuses; these are
        # our own local files, so load them fully.
        log.debug("%s: not loadable with weights_only=True, loading as a trusted checkpoint", path)
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict or checkpoint dict, got {type(obj).__name__}")
    return obj


def _weights_kind(obj: Mapping[str, Any]) -> str:
    """``checkpoint`` (dict with ``model``), ``wrapper`` (VideoClassifier state dict) or ``native``."""
    if isinstance(obj.get("model"), Mapping):
        return "checkpoint"
    keys = [_strip_wrappers(k) for k in obj]
    if keys and all(k.startswith("net.") for k in keys):
        return "wrapper"
    return "native"


def _strip_wrappers(key: str) -> str:
    """Drop DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes."""
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_weights(model: VideoClassifier, weights: str | Path | Mapping[str, Any], source: str | None = None) -> None:
    """Load a vidact checkpoint (dict with ``model`` and ``model_config``) or a bare wrapper state dict.

    Position embeddings are adapted to the model's geometry (ViViT: trilinear, vit-mean: timm
    resample; VideoMAE has none stored). A head whose class count differs is skipped with a warning.
    """
    if not isinstance(weights, Mapping):
        source = source or str(weights)
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{model.name}: weights not found: {path}")
        weights = _read_weights_file(path)
    source = source or "state dict"
    stored = weights.get("model_config") if isinstance(weights.get("model"), Mapping) else None
    state = weights["model"] if isinstance(weights.get("model"), Mapping) else weights
    state = {_strip_wrappers(k): v for k, v in state.items()}
    own = model.state_dict()
    _adapt_pos_embed(model, state, own, stored)

    head_prefix = f"net.{model.head_name}."
    skipped = [k for k in state if k.startswith(head_prefix) and k in own and state[k].shape != own[k].shape]
    if skipped:
        log.warning("%s: %s has a head of another size %s, head left at random init", model.name, source,
                    tuple(state[skipped[0]].shape))
        for k in skipped:
            del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise RuntimeError(f"{model.name}: {source} does not fit this model: missing {missing[:8]}, "
                           f"unexpected {unexpected[:8]}")
    log.info("%s: loaded weights from %s", model.name, source)


def _adapt_pos_embed(model: VideoClassifier, state: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                     stored: Mapping[str, Any] | None) -> None:
    """Resize a stored position table in place to the model's token grid."""
    cfg = model.config
    if cfg["family"] == "vivit":
        key = "net.vivit.embeddings.position_embeddings"
        if key in state and state[key].shape != own[key].shape:
            if stored is None:
                raise ValueError("vivit: position table of another size and no model_config to say its grid")
            tub = tuple(stored["arch"]["tubelet_size"])
            old = vivit_grid(stored["num_frames"], stored["image_size"], tub)
            new = vivit_grid(cfg["num_frames"], cfg["image_size"], tub)
            state[key] = interpolate_vivit_pos_embed(state[key], old, new)
            log.info("vivit: position embeddings interpolated from grid %s to %s (t, h, w)", old, new)
    elif cfg["family"] == "vit-mean":
        key = "net.backbone.pos_embed"
        if key in state and state[key].shape != own[key].shape:
            state[key] = _resample_vit_pos(model.net.backbone, state[key])


def _resample_vit_pos(backbone: nn.Module, pos: torch.Tensor) -> torch.Tensor:
    """timm's 2-D resample of a (1, prefix + h*w, D) table (square source grid) to the backbone's grid."""
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(backbone, "no_embed_class", False) else backbone.num_prefix_tokens
    new = resample_abs_pos_embed(pos, new_size=list(backbone.patch_embed.grid_size), num_prefix_tokens=prefix)
    log.info("vit-mean: position embeddings resampled from %d to %d tokens", pos.shape[1], new.shape[1])
    return new


def _load_timm_backbone(model: VideoClassifier, state: Mapping[str, Any], path: Path) -> None:
    """A timm ViT state dict into vit-mean's backbone: head dropped, pos embed resampled, strict=False."""
    state = state.get("state_dict", state) if isinstance(state.get("state_dict"), Mapping) else state
    state = {_strip_wrappers(k): v for k, v in state.items() if not _strip_wrappers(k).startswith("head.")}
    backbone = model.net.backbone
    own = backbone.state_dict()
    for key in ("cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"):
        if key in state and key in own and state[key].shape[-1] != own[key].shape[-1]:
            raise ValueError(f"vit-mean: {path} has width {state[key].shape[-1]}, size {model.config['size']!r} "
                             f"has {own[key].shape[-1]}; pass the size the weights were trained at")
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        state["pos_embed"] = _resample_vit_pos(backbone, state["pos_embed"])
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if mismatched:
        raise ValueError(f"vit-mean: {path} does not fit size {model.config['size']!r}: shapes differ for "
                         f"{mismatched[:5]}")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    log.info("vit-mean: loaded backbone from %s (%d tensors; missing %d %s; unexpected %d %s)", path,
             len(state) - len(unexpected), len(missing), missing[:5], len(unexpected), unexpected[:5])
