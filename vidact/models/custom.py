"""Your own model: ``--model package.module:factory`` builds any ``nn.Module``.

The factory is called with ``num_classes`` and, when its signature takes them, ``frames_per_clip``
and ``crop_size``. The module it returns may declare, as attributes:

* ``input_layout``: ``"BTCHW"`` (vidact's clips, the default) or ``"BCTHW"`` (torchvision's video
  models, PyTorchVideo's): the wrapper permutes before calling it;
* ``head_name``: the classifier submodule (``--head-lr`` applies to it; loading weights with
  another class count leaves it at its init), by default the last ``nn.Linear``;
* ``normalization``: a name of ``vidact.clip.spec.NORMALIZATION`` (``imagenet``, the default,
  ``half``, ``kinetics``, ``slowfast``) or ``(mean, std)`` on [0, 1] pixels.

It must return logits ``(B, num_classes)``. The module is imported as Python imports it, with
the working directory added to the path (a ``mymodels.py`` beside you is found).

Importing runs code, so a checkpoint never makes vidact import anything: its ``model_config``
names the factory, and loading it (evaluate, predict, export) needs that same factory named again
with ``--model`` on the command line; without it the command stops in one line saying so.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vidact.clip.spec import NORMALIZATION
from vidact.models._base import ChannelsFirst, VideoClassifier

FAMILY = "custom"
LAYOUTS = ("BTCHW", "BCTHW")
_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")


def is_factory(name: str) -> bool:
    """`name` has the form ``package.module:factory``."""
    return bool(_SPEC.match(name))


class CustomClassifier(VideoClassifier):
    """The wrapper around a factory's module: any clip size passes (the module knows its own)."""

    def _check_input(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"{self.name}: expected video (B, T, 3, H, W), got shape {tuple(video.shape)}")


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable `spec` (``package.module:factory``) names, imported; one-line errors."""
    if not is_factory(spec):
        raise ValueError(f"--model {spec}: not of the form package.module:factory")
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` would: a module beside the user is found
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--model {spec}: cannot import {module_name} ({e}); put it on PYTHONPATH or run from "
                         "its folder") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"--model {spec}: {module_name} has no callable {attr!r}")
    return factory


def factory_kwargs(factory: Callable, num_classes: int, frames_per_clip: int, crop_size: int) -> dict[str, int]:
    """The keywords the factory is called with: the class count, and the clip size if it takes it."""
    offered = {"num_classes": num_classes, "frames_per_clip": frames_per_clip, "crop_size": crop_size}
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return offered
    return {k: v for k, v in offered.items() if k in params or k == "num_classes"}


def build(spec: str, *, num_classes: int, frames_per_clip: int, crop_size: int) -> CustomClassifier:
    """The wrapper around ``factory(num_classes=..., ...)``, its declarations read."""
    factory = load_factory(spec)
    kwargs = factory_kwargs(factory, num_classes, frames_per_clip, crop_size)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:  # its signature; an error inside the factory is the user's, with its traceback
        raise ValueError(f"--model {spec}: cannot be called with {kwargs}: {e}") from None
    module = factory(**kwargs)
    if not isinstance(module, nn.Module):
        raise ValueError(f"--model {spec}: returned {type(module).__name__}, not a torch.nn.Module")
    layout = getattr(module, "input_layout", "BTCHW")
    if layout not in LAYOUTS:
        raise ValueError(f"--model {spec}: input_layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    head = getattr(module, "head_name", None) or _last_linear(spec, module)
    norm, mean, std = _normalization(spec, getattr(module, "normalization", "imagenet"))
    net = nn.Sequential()
    net.add_module("layout", ChannelsFirst() if layout == "BCTHW" else nn.Identity())
    net.add_module("model", module)
    config = {"family": FAMILY, "preset": "custom", "num_classes": num_classes, "frames_per_clip": frames_per_clip,
              "crop_size": crop_size, "norm": norm, "mean": list(mean), "std": list(std), "tubelet": 1, "patch": 1,
              "arch": {"factory": spec, "kwargs": kwargs, "input_layout": layout, "head": head}, "init": "factory"}
    model = CustomClassifier(spec, net, f"model.{head}", config, hf_output=False)
    try:
        model.head_module()  # a head_name that names nothing fails here, not at the optimizer
    except AttributeError:
        raise ValueError(f"--model {spec}: head_name {head!r} names no submodule of the module") from None
    return model


def _last_linear(spec: str, module: nn.Module) -> str:
    linear = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"--model {spec}: no nn.Linear to call the head; set head_name on the module")
    return linear[-1]


def _normalization(spec: str, declared: Any) -> tuple[str, tuple, tuple]:
    if isinstance(declared, str):
        if declared not in NORMALIZATION:
            raise ValueError(f"--model {spec}: normalization {declared!r} is not one of {', '.join(NORMALIZATION)}")
        return declared, *NORMALIZATION[declared]
    try:
        mean, std = (tuple(float(v) for v in x) for x in declared)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"--model {spec}: normalization {declared!r} is neither a name ({', '.join(NORMALIZATION)}) "
                         "nor (mean, std) of 3 values each, std > 0")
    return "custom", mean, std


def factory_name(value: str) -> str:
    """argparse's type for ``--model`` on the commands that load a checkpoint."""
    if not is_factory(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not package.module:factory (a family's checkpoint needs no "
                                         "--model: it names its model)")
    return value


def add_factory_flag(p: argparse.ArgumentParser) -> None:
    """``--model``, for a checkpoint of the user's own model: its factory named again."""
    p.add_argument("--model", dest="factory", metavar="MODULE:FACTORY", type=factory_name,
                   help="a checkpoint of your own model: its package.module:factory, named again (loading imports "
                        "and runs that code, which a checkpoint alone never makes vidact do)")


def check_trusted(cfg: dict[str, Any], factory: str | None, source: str) -> None:
    """A checkpoint's own model code is imported only when the user named that factory too."""
    stored = cfg["arch"]["factory"]
    if factory is None:
        raise ValueError(f"{source}: its model is built by {stored}, and loading it imports and runs that code; "
                         f"pass --model {stored} to allow it")
    if factory != stored:
        raise ValueError(f"{source}: its model is built by {stored}, not --model {factory}")
