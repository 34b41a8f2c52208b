"""Checkpoints and the resume protocol, owned here and nowhere else.

A run folder holds ``last.pt`` (everything needed to resume) and ``best.pt`` (the weights of
the best epoch so far, with what evaluation needs). Both are one dict, written atomically:

    model, model_config, classes          the unwrapped model's weights, its build settings, class names
    recipe, spec, ratio                   the training recipe, the clip spec (a dict), its observation ratio
    shards_encode                         how make_shards scaled the training clips (short_side, min_side, align)
    epoch, best                           epochs finished over all stages; the best epoch's scores
    stage, stage_epoch, step, batch,      (last.pt only) the rest of `RunState`; ``batch`` > 0: taken
    patience, stage_done, stopped_early   inside an epoch, with ``progress`` (`EpochProgress`)
    optimizer, scheduler, scaler, rng     (last.pt only) optimizer state, schedule, grad scaler, RNGs

Everything in them is a tensor or a plain value (numbers, strings, lists, tuples, dicts; the numpy
RNG state converted), so they load with ``torch.load(weights_only=True)``: reading a checkpoint
never runs code from it. A file that needs more is refused in one line.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidact.files import atomic_path
from vidact.metrics import MetricTracker

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save(state: dict[str, Any], path: Path) -> None:
    """Write-then-rename: a killed process leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint read with the safe unpickler (tensors, numbers, strings, lists, tuples, dicts):
    reading a file never runs code from it. A file that needs more is refused, naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not is_unsafe(e):
            raise CheckpointError(f"{path}: corrupt checkpoint (UnpicklingError: {_first_line(e)}); "
                                  "delete it to start over, or restore a good copy") from e
        raise CheckpointError(unsafe_message(path, e)) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: corrupt checkpoint ({e.__class__.__name__}: {_first_line(e)}); "
            "delete it to start over, or restore a good copy") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a vidact checkpoint (no 'model' entry)")
    return state


# What torch's safe unpickler says when a file holds more than tensors and plain values (it wraps
# every unpickling error, a corrupt file's too, in "Weights only load failed").
UNSAFE_MARKS = ("GLOBAL ", "Can only build", "Can only create new object")


def is_unsafe(e: Exception) -> bool:
    """`e`, from ``torch.load(weights_only=True)``, refused an object (not a damaged file)."""
    return any(mark in str(e) for mark in UNSAFE_MARKS)


def unsafe_message(path: Path, e: Exception) -> str:
    """One line: `path` was refused, and what it holds that the safe unpickler does not take."""
    what = re.search(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", str(e))
    held = f" ({what.group(1) or what.group(2)})" if what else ""
    return (f"{path}: refused: it holds objects beyond tensors and plain values{held}, and loading those can "
            "run code; use a checkpoint vidact 0.1 or later wrote")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def rng_state() -> dict[str, Any]:
    """The RNGs' states as tensors and plain values (the safe unpickler takes no numpy arrays)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """The RNGs as `rng_state` saved them (a checkpoint loaded onto a GPU holds its tensors
    there: the generators take CPU tensors)."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@dataclass
class EpochProgress:
    """How far the current training epoch got: batches seen, clips, seconds, data wait and the
    running metric sums. `vidact.engine.train_steps` advances it; a mid-epoch checkpoint saves
    it, so the resumed epoch's figures count every batch once."""

    batches: int = 0
    clips: int = 0
    seconds: float = 0.0
    wait: float = 0.0
    tracker: MetricTracker = field(default_factory=MetricTracker)

    def state_dict(self) -> dict:
        return {"batches": self.batches, "clips": self.clips, "seconds": self.seconds, "wait": self.wait,
                "tracker": self.tracker.state_dict()}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> EpochProgress:
        tracker = MetricTracker()
        tracker.load_state_dict(state["tracker"], device)
        return cls(state["batches"], state["clips"], state["seconds"], state["wait"], tracker)


@dataclass
class RunState:
    """Where a run stands: counters over all stages and within the current one, and the best
    epoch so far (``best``: val_top1, val_top5, epoch, stage, metric)."""

    stage: int = 0
    stage_epoch: int = 0
    epoch: int = 0
    step: int = 0
    batch: int = 0  # batches of epoch `epoch + 1` done (a checkpoint taken inside an epoch)
    best: dict[str, Any] = field(default_factory=dict)
    patience: int = 0
    stage_done: bool = False
    stopped_early: bool = False

    @classmethod
    def fresh(cls, metric: str) -> RunState:
        return cls(best={"val_top1": -1.0, "val_top5": 0.0, "epoch": 0, "metric": metric})

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> RunState:
        return cls(**{f.name: ckpt[f.name] for f in fields(cls) if f.name in ckpt})

    def next_stage(self, stage: int) -> None:
        self.stage, self.stage_epoch, self.patience, self.stage_done = stage, 0, 0, False

    def end_epoch(self, steps: int, top1: float, top5: float, early_stop: int) -> bool:
        """Counts a finished epoch and its score; True when it is the best so far. Sets
        ``stage_done`` after `early_stop` epochs without improvement (0: never)."""
        self.epoch += 1
        self.batch = 0
        self.stage_epoch += 1
        self.step += steps
        improved = top1 > self.best["val_top1"]
        if improved:
            self.best = {**self.best, "val_top1": top1, "val_top5": top5, "epoch": self.epoch,
                         "stage": self.stage + 1}
            self.patience = 0
        else:
            self.patience += 1
        if early_stop > 0 and self.patience >= early_stop:
            self.stage_done = self.stopped_early = True
        return improved


class Checkpointer:
    """Saves and restores one run folder's checkpoints. `writer` is False on DDP ranks other
    than 0: they restore but never write."""

    def __init__(self, out: Path, classes: list[str], device: torch.device, writer: bool = True):
        self.out, self.classes, self.device, self.writer = out, classes, device, writer
        self.saved: dict[str, Any] | None = None  # last.pt, until its optimizer state is restored

    def resume(self, model: torch.nn.Module, metric: str) -> RunState:
        """Loads ``last.pt`` into `model` when there is one (checking it belongs to this run)
        and returns where the run stands; a fresh state otherwise."""
        path = self.out / LAST
        if not path.exists():
            return RunState.fresh(metric)
        self.saved = load(path, self.device)
        check_compatible(self.saved, self.classes, model.config, path)
        model.load_state_dict(self.saved["model"])
        state = RunState.from_checkpoint(self.saved)
        log.info("resuming %s: %d epochs done (stage %d)", self.out, state.epoch, state.stage + 1)
        return state

    def restore(self, optimizer, scheduler, scaler) -> EpochProgress | None:
        """Optimizer, schedule, scaler and RNGs of the resumed stage (once, after `resume`),
        and how far its epoch had got when the checkpoint was taken inside one."""
        if self.saved is None:
            return None
        optimizer.load_state_dict(self.saved["optimizer"])
        scheduler.load_state_dict(self.saved["scheduler"])
        scaler.load_state_dict(self.saved["scaler"])
        set_rng_state(self.saved["rng"])
        progress = self.saved.get("progress")
        self.saved = None
        return EpochProgress.from_state(progress, self.device) if progress else None

    def forget_saved(self) -> None:
        """The resumed stage was already finished: its optimizer state is not wanted."""
        self.saved = None

    def load_best(self, model: torch.nn.Module) -> None:
        model.load_state_dict(load(self.out / BEST, self.device)["model"])

    def save(self, model: torch.nn.Module, state: RunState, run_info: dict[str, Any], optimizer, scheduler,
             scaler, improved: bool, progress: EpochProgress | None = None) -> None:
        """``last.pt`` every epoch, ``best.pt`` too when the epoch improved; with `progress`, a
        ``last.pt`` inside an epoch. `run_info` holds ``recipe``, ``ratio`` and ``spec``."""
        if not self.writer:
            return
        ckpt = {"model": model.state_dict(), "model_config": model.config, "classes": self.classes,
                **run_info, **asdict(state)}
        if progress is not None:
            ckpt.update(batch=progress.batches, progress=progress.state_dict())
        if improved:
            save({k: ckpt[k] for k in ("model", "model_config", "classes", "epoch", "best", *run_info)},
                 self.out / BEST)
        save({**ckpt, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
              "scaler": scaler.state_dict(), "rng": rng_state()}, self.out / LAST)


def check_compatible(state: dict, classes: list[str], model_config: dict, path: Path) -> None:
    if state.get("classes") != classes:
        raise CheckpointError(f"{path}: trained on {len(state.get('classes') or [])} classes, the shards have "
                              f"{len(classes)} (or other names); use another --out or the matching shards")
    mismatch = {k for k in model_config if state["model_config"].get(k) != model_config[k]}
    if mismatch:
        raise CheckpointError(f"{path}: model settings differ from this run ({', '.join(sorted(mismatch))}); "
                              "use another --out or the same flags")
