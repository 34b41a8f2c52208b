"""Where pretrained weights come from: ``--weights`` as a local path, a Hugging Face model id or a
timm model name, resolved to something the model builders load.

* A path that exists locally always wins (a folder for ``from_pretrained``, a checkpoint or
  state-dict file), even when it is spelled like a hub id.
* ``videomae`` / ``vivit``: ``ORG/NAME`` or ``ORG/NAME@REVISION``, a Hugging Face model id,
  fetched into (or found in) the usual cache (``HF_HOME``, ``HF_HUB_CACHE``); with
  ``HF_HUB_OFFLINE=1``, or no network, only the cache is used.
* ``vit-mean``: ``timm/NAME`` or a timm model name (``vit_small_patch16_224.augreg_in21k``),
  loaded by timm's own pretrained path (the Hugging Face cache again); ``NAME@FILE`` loads FILE
  instead (timm's ``pretrained_cfg_overlay``).

The weights' own normalization (a processor's ``image_mean``/``image_std``, timm's
``pretrained_cfg`` mean/std) is returned with them, so the loader normalizes as the weights expect.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

HUB_FAMILIES = ("videomae", "vivit")
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
