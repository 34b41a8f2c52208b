"""Checkpoints: one dict with everything needed to resume, written atomically.

Keys: ``model`` (state dict of the unwrapped model), ``model_config``, ``classes``,
``optimizer``, ``scheduler``, ``scaler``, ``stage``, ``epoch`` (epochs finished, counted over
all stages), ``stage_epoch``, ``step``, ``best``, ``rng``, ``recipe``, ``ratio``.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save(state: dict[str, Any], path: Path) -> None:
    """Write-then-rename: a killed process leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: corrupt checkpoint ({e.__class__.__name__}: {str(e).splitlines()[0]}); "
            "delete it to start over, or restore a good copy") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a vidact checkpoint (no 'model' entry)")
    return state


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
