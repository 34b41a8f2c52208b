"""Where pretrained weights come from: ``--weights`` as a local path, a Hugging Face model id or a
timm model name, resolved to something the model builders load.

* A path that exists locally always wins (a folder for ``from_pretrained``, a checkpoint or
  state-dict file), even when it is spelled like a hub id.
* ``videomae`` / ``vivit`` / ``timesformer``: ``ORG/NAME`` or ``ORG/NAME@REVISION``, a Hugging Face model id,
  fetched into (or found in) the usual cache (``HF_HOME``, ``HF_HUB_CACHE``); with
  ``HF_HUB_OFFLINE=1``, or no network, only the cache is used.
* ``vit-mean``: ``timm/NAME`` or a timm model name (``vit_small_patch16_224.augreg_in21k``),
  loaded by timm's own pretrained path (the Hugging Face cache again); ``NAME@FILE`` loads FILE
  instead (timm's ``pretrained_cfg_overlay``).

The weights' own normalization (a processor's ``image_mean``/``image_std``, timm's
``pretrained_cfg`` mean/std) is returned with them, so the loader normalizes as the weights expect.

Once resolved, a file is read here too (:func:`_read_weights_file`: safetensors or a torch
pickle), told apart as a vidact checkpoint, a wrapper state dict or a native (timm) state dict
(:func:`_weights_kind`), and loaded (:func:`load_weights`, :func:`_load_timm_backbone`) with its
position table adapted to the model's token grid: ViViT's resampled trilinearly in (t, h, w),
vit-mean's by timm in 2-D; VideoMAE stores none.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidact.checkpoint import is_unsafe, unsafe_message
from vidact.models._base import VideoClassifier, log
from vidact.models.vivit import interpolate_vivit_pos_embed, vivit_grid

HUB_FAMILIES = ("videomae", "vivit", "timesformer")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class WeightsNotFound(ValueError):
    """Weights named by id that are neither local nor in the cache; the message says how to get them."""


@dataclass(frozen=True)
class Weights:
    """Resolved ``--weights``: a local `path` (folder or file), or a `timm_name` (+ optional
    `file`) for timm to load; `mean`/`std` when the weights say how their input is normalized."""

    spec: str
    path: Path | None = None
    timm_name: str | None = None
    file: Path | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


def resolve(family: str, weights: str | Path) -> Weights:
    """`weights` as given on the command line, for model `family`."""
    spec = str(weights)
    local = Path(spec).expanduser()
    if local.exists():
        return Weights(spec, path=local, **_hf_normalization(local))
    if family in HUB_FAMILIES and _HUB_ID.match(spec):
        folder = _hf_snapshot(spec)
        return Weights(spec, path=folder, **_hf_normalization(folder))
    if family == "vit-mean":
        return _timm_weights(spec)
    raise FileNotFoundError(f"{family}: weights not found: {local} (not a local path"
                            + (", nor a Hugging Face id ORG/NAME[@REVISION])" if family in HUB_FAMILIES else ")"))


def _hf_snapshot(spec: str) -> Path:
    """The cached snapshot folder of a hub id, downloading it when the hub is reachable."""
    from huggingface_hub import snapshot_download  # a transformers dependency
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, _, revision = spec.partition("@")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise WeightsNotFound(
            f"{spec}: not in the Hugging Face cache ({_hub_cache()}) and the hub is not reachable "
            f"({e.__class__.__name__}); fetch it where there is a network with "
            f"`hf download {repo_id}{' --revision ' + revision if revision else ''}` and copy that cache "
            "here (or point HF_HOME at it), or pass a local from_pretrained folder") from e


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hf_normalization(folder: Path) -> dict:
    """``image_mean``/``image_std`` of a processor config saved beside the weights, if any."""
    cfg = folder / "preprocessor_config.json" if folder.is_dir() else None
    if cfg is None or not cfg.is_file():
        return {}
    data = json.loads(cfg.read_text())
    if "image_mean" not in data or "image_std" not in data:
        return {}
    return {"mean": tuple(float(x) for x in data["image_mean"]), "std": tuple(float(x) for x in data["image_std"])}


def _timm_weights(spec: str) -> Weights:
    """A timm model name (``timm/NAME`` or ``NAME``, optional ``@FILE``) and its pretrained mean/std."""
    import timm  # imported here: only vit-mean needs it

    name, _, file = spec.partition("@")
    name = name.removeprefix("timm/")
    if not timm.is_model(name):
        raise FileNotFoundError(f"vit-mean: weights not found: {spec} is neither a local path nor a timm model "
                                "name (timm.list_models() lists them)")
    if file and not Path(file).expanduser().is_file():
        raise FileNotFoundError(f"vit-mean: weights file not found: {file}")
    cfg = timm.models.get_pretrained_cfg(name)
    mean, std = (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else (None, None)
    return Weights(spec, timm_name=name, file=Path(file).expanduser() if file else None, mean=mean, std=std)


# --------------------------------------------------------------------------------------------
# Reading and loading weight files


def _read_weights_file(path: Path) -> Mapping[str, Any]:
    """A state dict or checkpoint dict from ``.safetensors`` or a torch pickle (``.pt``/``.pth``/``.bin``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)  # a weights file never runs code
    except pickle.UnpicklingError as e:
        if is_unsafe(e):
            raise ValueError(unsafe_message(path, e)) from None
        raise ValueError(f"{path}: not a readable weights file ({str(e).splitlines()[0]})") from None
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


def stored_config(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """A vidact checkpoint's ``model_config``; None for a bare state dict (or a checkpoint without
    one)."""
    if not isinstance(obj.get("model"), Mapping):
        return None
    stored = obj.get("model_config")
    return None if stored is None else dict(stored)


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
    stored = stored_config(weights)
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
            old = vivit_grid(stored["frames_per_clip"], stored["crop_size"], tub)
            new = vivit_grid(cfg["frames_per_clip"], cfg["crop_size"], tub)
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
            raise ValueError(f"vit-mean: {path} has width {state[key].shape[-1]}, size {model.config['preset']!r} "
                             f"has {own[key].shape[-1]}; pass the size the weights were trained at")
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        state["pos_embed"] = _resample_vit_pos(backbone, state["pos_embed"])
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if mismatched:
        raise ValueError(f"vit-mean: {path} does not fit size {model.config['preset']!r}: shapes differ for "
                         f"{mismatched[:5]}")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    log.info("vit-mean: loaded backbone from %s (%d tensors; missing %d %s; unexpected %d %s)", path,
             len(state) - len(unexpected), len(missing), missing[:5], len(unexpected), unexpected[:5])
