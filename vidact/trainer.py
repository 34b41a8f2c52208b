"""One observation ratio's training run: `RatioTrainer` owns its model, loaders, checkpoints and
log, and its epoch loop.

The loop reads top to bottom, as torchtitan's ``Trainer.train`` does: `vidact.engine.train_steps`
yields after every batch, and this loop's body decides what happens between batches (the
tracker's preview, the batch trace, a mid-epoch checkpoint, a stop on SIGTERM); the epoch's end
evaluates, logs a row of ``log.csv`` and checkpoints through `vidact.checkpoint.Checkpointer`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from vidact.checkpoint import Checkpointer, EpochProgress, RunState
from vidact.clip.spec import ClipSpec, dtype_name
from vidact.data import LoaderSettings
from vidact.data.batch import decode_cost
from vidact.engine import (
    BatchDone,
    CompiledOrEager,
    Env,
    Optimization,
    StepSettings,
    amp_dtype,
    build_optimizer,
    cosine_with_warmup,
    epoch_figures,
    evaluate_model,
    train_steps,
    unwrap,
    wrap_ddp,
)
from vidact.files import atomic_write_csv, atomic_write_json, read_csv
from vidact.models import create_model
from vidact.plots import plot_training_curves
from vidact.recipes import Recipe, Stage
from vidact.shards import ShardError, ShardSet
from vidact.tracking import Tracker

log = logging.getLogger("vidact.train")

LOG_COLUMNS = ["epoch", "stage", "train_loss", "train_top1", "train_top5", "train_eval_loss", "train_eval_top1",
               "train_eval_top5", "val_loss", "val_top1", "val_top5", "lr", "clips_per_s", "data_wait",
               "epoch_time", "damaged"]


@dataclass(frozen=True)
class Run:
    """What every ratio's run shares: the recipe, the shard set, how to load, the process."""

    recipe: Recipe
    shards: ShardSet
    loaders: LoaderSettings
    env: Env
    tensorboard: bool = True  # TensorBoard events in each ratio's folder
    wandb: bool = False  # a Weights & Biases run per ratio (WANDB_MODE=offline works offline)
    save_every: int = 0  # optimizer steps between mid-epoch checkpoints (0: at epoch ends only)
    trace_batches: Path | None = None  # JSON lines of every train batch's clip ids (rank 0)

    @property
    def has_val(self) -> bool:
        splits = self.shards.manifest["splits"]
        return "val" in splits and splits["val"]["count"] > 0

    def loader(self, split: str, mode: str, spec: ClipSpec, **kwargs):
        """A loader of `split` for this process."""
        env = self.env
        return self.loaders.build(self.shards, split, mode, spec, env.device, env.rank, env.world_size, **kwargs)


class Stopped(Exception):
    """The run stopped on request (SIGTERM) after writing a checkpoint; re-running resumes."""


class StopRequest:
    """SIGTERM (how SLURM and Kubernetes preempt) asks the run to stop at the next optimizer
    step; under DDP the ranks agree first, so they stop at the same step."""

    def __init__(self) -> None:
        self.flag = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, lambda signum, frame: setattr(self, "flag", True))

    def requested(self, env: Env) -> bool:
        if env.world_size == 1:
            return self.flag
        flag = torch.tensor([float(self.flag)], device=env.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


STOP = StopRequest()


def clip_spec(recipe: Recipe, model: torch.nn.Module, ratio: float, amp: torch.dtype | None) -> ClipSpec:
    """The clips this run trains on; the normalization is the model's own."""
    cfg = model.config
    return ClipSpec(frames_per_clip=recipe.frames_per_clip, crop_size=recipe.crop_size, norm=cfg["norm"],
                    dtype=dtype_name(amp), ratio=ratio, window=recipe.window, random_stride=recipe.random_stride,
                    flip=recipe.flip, mean=cfg.get("mean"), std=cfg.get("std")).check()


def build_optimization(model: torch.nn.Module, stage: Stage, recipe: Recipe, batches: int,
                       env: Env, amp: torch.dtype | None) -> Optimization:
    """AdamW (backbone/head learning rates), cosine schedule over the stage's optimizer steps,
    a grad scaler for fp16 autocast."""
    optimizer = build_optimizer(model, stage.lr, stage.head_lr, recipe.weight_decay)
    steps = stage.epochs * math.ceil(batches / recipe.accum)
    return Optimization(optimizer, cosine_with_warmup(optimizer, steps, stage.warmup),
                        torch.amp.GradScaler(env.device.type, enabled=amp == torch.float16),
                        StepSettings(recipe.accum, recipe.clip_grad, stage.mixup_alpha, stage.mixup_prob,
                                     stage.label_smoothing))


def epoch_row(state: RunState, lr: float, seconds: float, tr: dict, te: dict, va: dict) -> dict:
    """One `LOG_COLUMNS` row of the CSV log."""
    return {"epoch": state.epoch, "stage": state.stage + 1, "lr": lr, "epoch_time": round(seconds, 3),
            **{f"train_{k}": tr[k] for k in ("loss", "top1", "top5")},
            "clips_per_s": round(tr["clips_per_s"], 3), "data_wait": round(tr["data_wait"], 4),
            **{f"train_eval_{k}": te[k] for k in ("loss", "top1", "top5") if k in te},
            **{f"val_{k}": va[k] for k in ("loss", "top1", "top5") if k in va}}


class RatioTrainer:
    """One model trained at one observation ratio in ``out``: built (or resumed from
    ``out/last.pt``) on construction, trained by `train`."""

    def __init__(self, run: Run, ratio: float, out: Path):
        recipe, env = run.recipe, run.env
        self.run, self.ratio, self.out, self.env, self.recipe = run, ratio, out, env, recipe
        self.amp = amp_dtype(env, recipe.amp)
        torch.manual_seed(recipe.seed)
        model = create_model(recipe.model, num_classes=len(run.shards.classes), preset=recipe.preset,
                             frames_per_clip=recipe.frames_per_clip, crop_size=recipe.crop_size,
                             weights=recipe.weights).to(env.device)
        self.spec = clip_spec(recipe, model, ratio, self.amp)
        self.ckpt = Checkpointer(out, run.shards.classes, env.device, writer=env.main)
        self.state = self.ckpt.resume(model, metric="val" if run.has_val else "train_eval")
        # The DALI pipeline count decides the clips' order: a run left to choose keeps its checkpoint's.
        self.resumed_pipelines = (self.ckpt.saved or {}).get("train_pipelines")
        self.train_pipelines: int | None = None
        self.model = wrap_ddp(model, env)
        self.forward = CompiledOrEager(self.model, recipe.compile)
        # The log keeps the rows the checkpoint covers: a row written just before a kill is redone.
        self.rows = [r for r in read_csv(out / "log.csv") if int(r["epoch"]) <= self.state.epoch]
        self.tracker = None
        if env.main and (run.tensorboard or run.wandb):
            self.tracker = Tracker(out, self.state.epoch + 1, {**recipe.as_dict(), "ratio": ratio}, wandb=run.wandb)
        use_train_eval = recipe.train_eval or not run.has_val
        self.train_eval = run.loader("train", "eval", self.spec) if use_train_eval else None
        self.val = run.loader("val", "eval", self.spec, views=recipe.eval_views) if run.has_val else None
        self.train_loader = None

    def damaged(self, train_loader) -> list[str]:
        """The damaged samples the run's loaders left out so far ('<shard>: sample <key>: <why>')."""
        loaders = (train_loader, self.train_eval, self.val)
        return sorted({s for loader in loaders if loader is not None for s in loader.skipped})

    def train(self) -> dict:
        """Every stage's remaining epochs; returns the ratio's summary."""
        state = self.state
        for s in range(state.stage, len(self.recipe.stages)):
            if s != state.stage:  # stage handover: the best weights so far, fresh optimizer and schedule
                state.next_stage(s)
                self.ckpt.forget_saved()
                self.ckpt.load_best(unwrap(self.model))
                log.info("stage %d: starting from best.pt (epoch %d, %s top-1 %.4f)", s + 1, state.best["epoch"],
                         state.best["metric"], state.best["val_top1"])
            stage = self.recipe.stages[s]
            if not state.stage_done and state.stage_epoch < stage.epochs:
                self.train_stage(s, stage)
            if state.stage_done:
                log.info("early stop: %d epochs without improvement", state.patience)
        if self.tracker is not None:
            self.tracker.close()
        return self.finish()

    def train_stage(self, s: int, stage: Stage) -> None:
        """The stage's remaining epochs, the first one resumed where a checkpoint left it."""
        state = self.state
        # The loader's epochs are the run's: epoch e draws the same clips and augmentations
        # whether it is trained straight through or resumed in its middle (batch `state.batch`).
        saved = (self.ckpt.saved or {}).get("loader_states") or []
        mine = saved[self.env.rank] if len(saved) == self.env.world_size and state.batch else {}
        loader = self.run.loader("train", "train", self.spec, seed=self.recipe.seed,
                                 resume={**mine, "epoch": state.epoch, "batches": state.batch},
                                 dali_pipelines=self.recipe.dali_pipelines or self.resumed_pipelines,
                                 clips_per_video=self.recipe.clips_per_video)
        self.train_pipelines = getattr(loader, "pipelines", None)  # DALI's, as chosen: saved for a resume
        self.train_loader = loader
        if len(loader) == 0:
            raise ShardError(f"{self.run.shards.root}: train split has fewer videos per rank than one batch reads "
                             f"({self.recipe.batch_size // self.recipe.clips_per_video}); lower --batch-size")
        if self.recipe.clips_per_video > 1:
            log.info("%d clips per video read: an epoch is %d batches of %d clips (%d videos each)",
                     self.recipe.clips_per_video, len(loader), self.recipe.batch_size,
                     self.recipe.batch_size // self.recipe.clips_per_video)
        opt = build_optimization(unwrap(self.model), stage, self.recipe, len(loader), self.env, self.amp)
        progress = self.ckpt.restore(opt.optimizer, opt.scheduler, opt.scaler) or EpochProgress()
        while state.stage_epoch < stage.epochs and not state.stage_done:
            desc = f"r={self.ratio:g} s{s + 1} ep {state.stage_epoch + 1}/{stage.epochs}"
            self.train_epoch(loader, opt, desc, progress)
            progress = EpochProgress()

    def train_epoch(self, loader, opt: Optimization, desc: str, progress: EpochProgress) -> None:
        """Trains one epoch (the rest of it after `progress`), evaluates, logs and checkpoints it.
        Between batches: the tracker's preview of the epoch's first batch, the batch trace, and
        after an optimizer step a checkpoint (``--save-every``) or a stop (SIGTERM)."""
        started = time.perf_counter() - progress.seconds
        steps = train_steps(self.model, self.forward, loader, opt, self.env, self.amp, len(self.run.shards.classes),
                            progress, desc)
        with contextlib.closing(steps):
            for batch in steps:
                if batch.index == 0 and self.tracker is not None:
                    self.tracker.log_preview(batch.video, self.spec)
                self.trace(batch)
                if batch.stepped and not batch.last:
                    self.between_steps(opt, progress)
        self.end_epoch(loader, opt, desc, epoch_figures(progress, self.env), started)

    def between_steps(self, opt: Optimization, progress: EpochProgress) -> None:
        """After an optimizer step inside an epoch: a checkpoint every ``--save-every`` steps, and
        one before stopping when the process was asked to (SIGTERM)."""
        steps = self.state.step + math.ceil(progress.batches / self.recipe.accum)
        stop = STOP.requested(self.env)
        if stop or (self.run.save_every and steps % self.run.save_every == 0):
            self.save(opt, False, progress)
        if stop:
            raise Stopped(f"stopped in epoch {self.state.epoch + 1} after batch {progress.batches}; "
                          f"checkpoint {self.out / 'last.pt'}")

    def end_epoch(self, loader, opt: Optimization, desc: str, tr: dict, started: float) -> None:
        """Evaluates the epoch's model, writes its ``log.csv`` row (its time counted from
        `started`, evaluation included) and checkpoints; stops after it when asked to."""
        env, state = self.env, self.state
        self.model.eval()
        te = evaluate_model(self.forward, self.train_eval, env, self.amp, "train-eval") if self.train_eval else {}
        va = evaluate_model(self.forward, self.val, env, self.amp, "val") if self.val else {}
        score = va if self.val else te
        improved = state.end_epoch(math.ceil(len(loader) / self.recipe.accum), score["top1"], score["top5"],
                                   self.recipe.early_stop)
        row = epoch_row(state, opt.optimizer.param_groups[0]["lr"], time.perf_counter() - started, tr, te, va)
        row["damaged"] = len(self.damaged(loader))  # damaged samples left out so far, every split
        self.rows.append(row)
        if env.main:
            atomic_write_csv(self.out / "log.csv", self.rows, LOG_COLUMNS)
        if self.tracker is not None:
            self.tracker.log_row(row)
        self.save(opt, improved)
        if env.world_size > 1:
            dist.barrier()
        log.info("%s: train loss %.4f top1 %.3f | val top1 %s | %.1f clips/s, data wait %.0f%%", desc, tr["loss"],
                 tr["top1"], f"{va['top1']:.3f}" if va else "-", tr["clips_per_s"], 100 * tr["data_wait"])
        if STOP.requested(env):
            raise Stopped(f"stopped after epoch {state.epoch}; checkpoint {self.out / 'last.pt'}")

    def save(self, opt: Optimization, improved: bool, progress: EpochProgress | None = None) -> None:
        """``last.pt`` (and ``best.pt`` when `improved`); with `progress`, one inside the epoch."""
        encode = self.run.shards.manifest.get("encode", {})
        run_info = {"recipe": self.recipe.as_dict(), "ratio": self.spec.ratio, "spec": self.spec.__dict__,
                    # how make_shards scaled the clips: predict --videos scales files alike
                    "shards_encode": {k: encode.get(k) for k in ("short_side", "min_side", "align")},
                    "train_pipelines": self.train_pipelines}
        if progress is not None:  # inside an epoch: every rank's loader position (DALI: its readers' checkpoints)
            states = [self.train_loader.state()]
            if self.env.world_size > 1:
                states = [None] * self.env.world_size
                dist.all_gather_object(states, self.train_loader.state())
            run_info["loader_states"] = states
        self.ckpt.save(unwrap(self.model), self.state, run_info, opt.optimizer, opt.scheduler, opt.scaler, improved,
                       progress=progress)

    def trace(self, batch: BatchDone) -> None:
        """A ``{"epoch", "batch", "ids", "decoded", "kept"}`` line per train batch
        (``--trace-batches``), one file per rank under DDP: the clips, and the frames the decoder
        decoded for them against the frames they keep (the batch's ``decoded_per_kept``)."""
        path = self.run.trace_batches
        if path is None:
            return
        if self.env.world_size > 1:
            path = path.with_name(f"{path.name}.rank{self.env.rank}")
        line = {"epoch": self.state.epoch + 1, "batch": batch.index, "ids": list(batch.ids)}
        if "glued" in batch.info:
            line["decoded"], line["kept"] = decode_cost(batch.info)
        with path.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def finish(self) -> dict:
        """The ratio's summary (``summary.json``) and curves (``curves.png``), written by rank 0."""
        recipe, best, state = self.recipe, self.state.best, self.state
        summary = {"ratio": self.ratio, "window": recipe.window, "best_top1": best["val_top1"],
                   "best_top5": best["val_top5"], "best_epoch": best["epoch"], "metric": best["metric"],
                   "epochs": state.epoch, "stopped_early": state.stopped_early, "model": recipe.model,
                   "model_size": recipe.preset, "classes": len(self.run.shards.classes),
                   "damaged_samples": self.damaged(self.train_loader), "final": self.rows[-1] if self.rows else {}}
        if self.env.main:
            title = f"{recipe.model} r={self.ratio:g}"
            plot_training_curves(self.out / "log.csv", self.out / "curves.png", title=title)
            atomic_write_json(self.out / "summary.json", summary)
        return summary
