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
never runs code from it. A file that needs more is refused in one line; checkpoints written by an
older vidact (numpy values inside) are rewritten once by ``python -m vidact.checkpoint --convert``.
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import sys
import zipfile
from collections.abc import Mapping
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
    return migrate(state)


# What torch's safe unpickler says when a file holds more than tensors and plain values (it wraps
# every unpickling error, a corrupt file's too, in "Weights only load failed").
UNSAFE_MARKS = ("GLOBAL ", "Can only build", "Can only create new object")


def is_unsafe(e: Exception) -> bool:
    """`e`, from ``torch.load(weights_only=True)``, refused an object (not a damaged file)."""
    return any(mark in str(e) for mark in UNSAFE_MARKS)


def unsafe_message(path: Path, e: Exception) -> str:
    """One line: `path` was refused, what it holds that the safe unpickler does not take, and
    how to convert it when an older vidact wrote it."""
    what = re.search(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", str(e))
    held = f" ({what.group(1) or what.group(2)})" if what else ""
    return (f"{path}: refused: it holds objects beyond tensors and plain values{held}, and loading those can "
            f"run code; if an older vidact wrote it, convert it once with "
            f"`python -m vidact.checkpoint --convert {path}`")


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


# Keys as checkpoints written before the one-word-per-quantity rename spell them: old -> new.
LEGACY_CONFIG_KEYS: dict[str, str] = {"size": "preset", "num_frames": "frames_per_clip", "image_size": "crop_size"}
LEGACY_SPEC_KEYS: dict[str, str] = {"num_frames": "frames_per_clip", "size": "crop_size"}


def _renamed(entries: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """`entries` with old keys renamed, each only when its new name is absent; order kept, input
    not modified."""
    todo = {old: new for old, new in renames.items() if old in entries and new not in entries}
    return {todo.get(k, k): v for k, v in entries.items()}


def migrate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored ``model_config`` under today's key names (``preset``, ``frames_per_clip``,
    ``crop_size``), so old checkpoints rebuild, resume and evaluate."""
    return _renamed(config, LEGACY_CONFIG_KEYS)


def migrate(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written by an older vidact, read as today's: the one place old checkpoints
    are converted, on load. Its ``model_config`` and clip ``spec`` get today's key names."""
    if isinstance(state.get("model_config"), Mapping):
        state["model_config"] = migrate_config(state["model_config"])
    if isinstance(state.get("spec"), Mapping):
        state["spec"] = _renamed(state["spec"], LEGACY_SPEC_KEYS)
    return state


# --------------------------------------------------------------------------- converting older checkpoints

def plain(obj: Any, where: str = "checkpoint") -> Any:
    """`obj` with numpy arrays as tensors and numpy scalars as Python numbers, an older vidact's
    numpy RNG state as today's dict: what the safe unpickler takes. Anything else is refused."""
    if isinstance(obj, np.generic):  # before the Python types: np.float64 is a float
        return obj.item()
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise CheckpointError(f"{where} is a numpy array of {obj.dtype}: not a value vidact writes")
        return torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj)
    if isinstance(obj, Mapping):
        if where.endswith("rng") and isinstance(obj.get("numpy"), tuple):
            kind, keys, pos, has_gauss, gauss = obj["numpy"]
            obj = {**obj, "numpy": {"kind": kind, "keys": keys, "pos": pos, "has_gauss": has_gauss, "gauss": gauss}}
        return {k: plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise CheckpointError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}: not a value vidact writes")


def numpy_values() -> list:
    """The numpy globals an older vidact's checkpoints hold (arrays and scalars of numbers: its
    RNG state and scores), allowlisted for the safe unpickler when converting: numeric arrays
    and scalars only, no object arrays, no functions, so converting runs no code either. Files
    written under numpy 1.x name the array builders ``numpy.core...``, under 2.x ``numpy._core``."""
    core = getattr(np, "_core", None) or np.core
    kinds = ("Bool", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
             "Float16", "Float32", "Float64", "Long", "ULong", "LongLong", "ULongLong")
    dtypes = getattr(np, "dtypes", None)
    numeric = [getattr(dtypes, f"{k}DType") for k in kinds if hasattr(dtypes, f"{k}DType")]
    builders = [core.multiarray._reconstruct, core.multiarray.scalar]
    old_names = [(f, f"numpy.core.multiarray.{f.__name__}") for f in builders]
    return [*builders, *old_names, np.ndarray, np.dtype, *numeric]


def convert(path: Path) -> Path:
    """An older vidact's checkpoint at `path` rewritten as the safe loader reads it (its numpy
    values as tensors and numbers), the original kept beside it as ``PATH.orig``; returns that."""
    try:
        with torch.serialization.safe_globals(numpy_values()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: holds more than numbers, arrays and tensors: not converted "
                              f"({_first_line(e)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a vidact checkpoint (no 'model' entry)")
    converted = plain(state, str(path))
    backup = path.with_name(path.name + ".orig")
    path.replace(backup)
    save(converted, path)
    load(path)  # the safe loader takes it now
    return backup


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m vidact.checkpoint",
        description="vidact reads checkpoints with torch's safe unpickler only (tensors and plain values: a "
                    "file cannot run code while it is read). Checkpoints an older vidact wrote also hold numpy "
                    "values, which it refuses: --convert rewrites them (reading numeric numpy values only).")
    p.add_argument("--convert", type=Path, nargs="+", required=True, metavar="PATH",
                   help="checkpoints to rewrite in the safe form, each original kept as PATH.orig")
    args = p.parse_args(argv)
    status = 0
    for path in args.convert:
        try:
            load(path)
            print(f"{path}: already loads safely; unchanged")
            continue
        except CheckpointError as e:
            if not str(e).startswith(f"{path}: refused"):
                print(f"checkpoint: {e}", file=sys.stderr)
                status = 2
                continue
        try:
            print(f"{path}: converted (original kept as {convert(path)})")
        except (CheckpointError, OSError, RuntimeError, TypeError, ValueError) as e:
            print(f"checkpoint: {_first_line(e)}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
