"""Export a trained model for use outside vidact: `vidact-export --ckpt best.pt --out DIR`.

* ``videomae``, ``vivit``: a ``save_pretrained`` folder: ``config.json`` (the classes as
  ``id2label``/``label2id``, the clip's frames and size), ``model.safetensors``, and the video
  processor's config (``video_preprocessor_config.json``: resize of the short side, centre crop,
  the model's mean/std, frames per clip). ``AutoModelForVideoClassification.from_pretrained(DIR)``
  loads it and ``transformers.pipeline("video-classification", model=DIR)`` runs it on a video file.
* ``vit-mean``: ``model.safetensors`` and ``config.json`` for timm: the backbone timm builds, the
  head, the clip geometry and normalization; ``DIR/README.md`` shows the few lines that load it.
* torchvision's models (``r3d_18``, ...): their own state dict and the name torchvision builds them by.
* your own model (``--model package.module:factory``, named again as for evaluate): its module's
  state dict, and the factory with the keywords it was called with.

Every folder gets a model card (``DIR/README.md``): what the model was trained on, with which
recipe, and its measured accuracy (the run's ``summary.json`` and evaluation reports beside the
checkpoint). The checkpoint is read with the safe loader, and everything written is safetensors
or JSON: the folder runs no code when loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from vidact import cli
from vidact.checkpoint import CheckpointError
from vidact.clip.spec import ClipSpec
from vidact.files import atomic_write_json, atomic_write_text, check_output, umask_modes
from vidact.models import VideoClassifier, add_factory_flag, load_checkpoint_model

log = logging.getLogger(__name__)

HF_FAMILIES = {"videomae": "VideoMAEVideoProcessor", "vivit": "VivitVideoProcessor",
               "timesformer": "TimesformerVideoProcessor"}


def export(ckpt: str | Path, out: str | Path, factory: str | None = None) -> Path:
    """Writes the model of `ckpt` to the folder `out` (new or empty); returns it. `factory`: a
    custom model's ``package.module:factory``, named by the user (see `load_checkpoint_model`)."""
    ckpt, out = Path(ckpt).resolve(), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder; choose another --out")
    model, state = load_checkpoint_model(ckpt, torch.device("cpu"), factory)
    spec = ClipSpec.from_dict(state["spec"])
    classes = list(state["classes"])
    card = model_card(ckpt, model, state, spec, out)  # before anything is written: a failure leaves no folder
    out.mkdir(parents=True, exist_ok=True)
    if model.name in HF_FAMILIES:
        _save_hf(model, spec, classes, out)
    elif model.config["arch"].get("torchvision"):
        _save_torchvision(model, spec, classes, out)
    elif model.config["arch"].get("factory"):
        _save_custom(model, spec, classes, out)
    else:
        _save_timm(model, spec, classes, out)
    atomic_write_text(out / "README.md", card)
    umask_modes(out)  # transformers and safetensors write through temp files (0o600)
    return out


def _save_hf(model: VideoClassifier, spec: ClipSpec, classes: list[str], out: Path) -> None:
    """The transformers model with the classes' names, and its video processor."""
    import transformers

    net = model.net
    net.config.id2label = dict(enumerate(classes))
    net.config.label2id = {c: i for i, c in enumerate(classes)}
    net.save_pretrained(out, safe_serialization=True)
    mean, std = list(spec.mean), list(spec.std)
    if model.name == "vivit":  # its processor computes x * factor - 1 before normalizing: shift the mean
        mean = [m - 1.0 for m in mean]
    processor = getattr(transformers, HF_FAMILIES[model.name])(
        size={"shortest_edge": spec.resize_short}, crop_size={"height": spec.crop_size, "width": spec.crop_size},
        do_rescale=True, rescale_factor=1 / 255, image_mean=mean, image_std=std,
        num_frames=spec.frames_per_clip, do_sample_frames=False)
    processor.save_pretrained(out)


def _save_timm(model: VideoClassifier, spec: ClipSpec, classes: list[str], out: Path) -> None:
    """vit-mean: the backbone and head weights, and what timm needs to rebuild them."""
    arch = dict(model.config["arch"])
    timm_name = arch.pop("timm_name", "vit_base_patch16_224")  # a preset: timm's ViT with these arguments
    _save_weights(model.net, spec, classes, out, {"family": "vit-mean", "timm_model": timm_name, "timm_kwargs": arch})


def _save_torchvision(model: VideoClassifier, spec: ClipSpec, classes: list[str], out: Path) -> None:
    """A torchvision video model: its own state dict, and the name torchvision builds it by."""
    _save_weights(model.net.get_submodule("model"), spec, classes, out,
                  {"family": model.name, "torchvision_model": model.config["arch"]["torchvision"]})


def _save_custom(model: VideoClassifier, spec: ClipSpec, classes: list[str], out: Path) -> None:
    """The user's module: its own state dict, and the factory call that rebuilds it."""
    arch = model.config["arch"]
    _save_weights(model.net.get_submodule("model"), spec, classes, out,
                  {"family": "custom", "factory": arch["factory"], "factory_kwargs": arch["kwargs"],
                   "input_layout": arch["input_layout"]})


def _save_weights(module: torch.nn.Module, spec: ClipSpec, classes: list[str], out: Path, built: dict) -> None:
    """`module`'s state dict as ``model.safetensors``, and ``config.json``: how it is `built`, the
    classes, the clip geometry and normalization the loading lines of the card read."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(out / "model.safetensors"))
    atomic_write_json(out / "config.json", {
        **built, "num_classes": len(classes), "frames_per_clip": spec.frames_per_clip, "crop_size": spec.crop_size,
        "resize_short": spec.resize_short, "mean": list(spec.mean), "std": list(spec.std),
        "id2label": dict(enumerate(classes))})


TORCHVISION_LOADER = '''import json, torch, torchvision
from safetensors.torch import load_file

cfg = json.load(open("DIR/config.json"))
model = torchvision.models.get_model(cfg["torchvision_model"], weights=None, num_classes=cfg["num_classes"])
model.load_state_dict(load_file("DIR/model.safetensors"))
model.eval()


def classify(video):  # (B, T, 3, crop, crop), normalized with cfg["mean"], cfg["std"] on [0, 1] pixels
    return model(video.permute(0, 2, 1, 3, 4))  # torchvision takes (B, 3, T, H, W); cfg["id2label"] names the logits
'''

TIMM_LOADER = '''import json, timm, torch
from safetensors.torch import load_file

cfg = json.load(open("DIR/config.json"))
backbone = timm.create_model(cfg["timm_model"], pretrained=False, num_classes=0, img_size=cfg["crop_size"],
                             **cfg["timm_kwargs"])
head = torch.nn.Linear(backbone.num_features, cfg["num_classes"])
weights = load_file("DIR/model.safetensors")
backbone.load_state_dict({k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")})
head.load_state_dict({k[len("head."):]: v for k, v in weights.items() if k.startswith("head.")})


def classify(video):  # (B, T, 3, crop, crop), normalized with cfg["mean"], cfg["std"] on [0, 1] pixels
    b, t = video.shape[:2]
    return head(backbone(video.flatten(0, 1)).view(b, t, -1).mean(1))  # logits; cfg["id2label"] names them
'''

CUSTOM_LOADER = '''import importlib, json, torch
from safetensors.torch import load_file

cfg = json.load(open("DIR/config.json"))
module, _, name = cfg["factory"].partition(":")  # your code: importable here as it was in training
model = getattr(importlib.import_module(module), name)(**cfg["factory_kwargs"])
model.load_state_dict(load_file("DIR/model.safetensors"))
model.eval()


def classify(video):  # (B, T, 3, crop, crop), normalized with cfg["mean"], cfg["std"] on [0, 1] pixels
    return model(video.permute(0, 2, 1, 3, 4) if cfg["input_layout"] == "BCTHW" else video)  # logits
'''

HF_LOADER = '''from transformers import AutoModelForVideoClassification, pipeline

model = AutoModelForVideoClassification.from_pretrained("DIR")  # pixel_values (B, T, 3, crop, crop)
classify = pipeline("video-classification", model="DIR")
print(classify("some_video.mp4"))  # note: the pipeline samples its frames from the video's start
# The video processor resizes and normalizes as vidact's eval does; its centre crop floors an odd
# margin where vidact's rounds it, so the two crops can be one pixel apart.
'''


def same_checkpoint(named: Path, ckpt: Path) -> bool:
    """`named` (as an evaluation report names it, maybe relative to where it ran) is `ckpt`."""
    if named.resolve() == ckpt.resolve():
        return True
    # a relative name from another working directory: its folder and file must match, not just "best.pt"
    return not named.is_absolute() and len(named.parts) >= 2 and ckpt.resolve().parts[-len(named.parts):] == named.parts


def measured(ckpt: Path) -> list[str]:
    """Lines of the accuracy measured for `ckpt`: its run's summary and evaluation reports (a
    report that cannot be read is said, not fatal)."""
    lines = []
    summary = ckpt.parent / "summary.json"
    reports = sorted(ckpt.parent.parent.glob("*/eval_*.json")) + sorted(ckpt.parent.parent.glob("*/*/eval_*.json"))
    for path in ([summary] if summary.is_file() else []) + reports:
        try:
            r = json.loads(path.read_text())
            if path == summary:
                lines.append(f"- validation ({r.get('metric', 'val')}): top-1 {r['best_top1']:.3f}, top-5 "
                             f"{r['best_top5']:.3f} at epoch {r['best_epoch']} of {r['epochs']}")
            elif same_checkpoint(Path(r.get("checkpoint", "")), ckpt):
                lines.append(f"- {r['split']} split, {r['views']} view(s): top-1 {r['top1']:.3f}, top-5 "
                             f"{r['top5']:.3f} over {r['count']} {r.get('unit', 'clip')}s ({path.name})")
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("export: %s: not read for the model card (%s)", path, e)
    return lines or ["- no measurement found beside the checkpoint (summary.json, eval_*.json)"]


def model_card(ckpt: Path, model: VideoClassifier, state: dict[str, Any], spec: ClipSpec, out: Path) -> str:
    recipe_file = ckpt.parent.parent / "recipe.json"
    recipe = json.loads(recipe_file.read_text()) if recipe_file.is_file() else state.get("recipe", {})
    classes = state["classes"]
    arch = model.config["arch"]
    loader = (HF_LOADER if model.name in HF_FAMILIES else TORCHVISION_LOADER if arch.get("torchvision")
              else CUSTOM_LOADER if arch.get("factory") else TIMM_LOADER).replace("DIR", str(out))
    return "\n".join([
        f"# {model.name} ({model.config['preset']}) video classifier, trained with vidact", "",
        f"- classes ({len(classes)}): {', '.join(classes)}",
        f"- trained on: {recipe.get('shards', 'unknown shard set')}, recipe {recipe.get('recipe', 'unknown')}",
        f"- clips: {spec.frames_per_clip} frames of {spec.crop_size}x{spec.crop_size} (short side resized to "
        f"{spec.resize_short}, centre crop), observation ratio {spec.ratio:g} ({spec.window} window), "
        f"normalized with mean {list(spec.mean)} and std {list(spec.std)} on [0, 1] pixels",
        f"- checkpoint: {ckpt} (epoch {state.get('epoch')})", "", "## Measured accuracy", "", *measured(ckpt), "",
        "## Recipe", "", "```json", json.dumps(recipe, indent=2, default=str), "```", "", "## Load it", "",
        "```python", loader.rstrip(), "```", ""])


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("vidact.export", __doc__, epilog=__doc__.split("\n\n", 1)[1],
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint to export (best.pt)")
    p.add_argument("--out", type=Path, required=True, help="folder to write (new or empty)")
    add_factory_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        check_output(args.out)
        out = export(args.ckpt, args.out, args.factory)
    except (CheckpointError, FileExistsError, ValueError, cli.UsageError) as e:
        return cli.fail(p, e)
    print(f"{p.prog}: {args.ckpt} exported ({', '.join(sorted(f.name for f in out.iterdir()))})")
    cli.said(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
