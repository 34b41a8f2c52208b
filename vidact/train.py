"""Train a video classifier: `python -m vidact.train --recipe NAME --shards DIR`.

One model per observation ratio (``--ratios``), each in ``OUT/ratio_{r}/`` with ``best.pt``,
``last.pt``, ``log.csv`` (a row per epoch, written as the epoch ends), ``summary.json`` and
``curves.png``; over all ratios ``OUT/summary.json`` and ``OUT/accuracy_vs_ratio.png``.
Re-running the same command resumes from ``last.pt`` (model, optimizer, scheduler, scaler,
epoch, step, RNG) and skips finished ratios. Works under ``torchrun --nproc-per-node N``
(DDP; rank 0 writes).

`train_ratio` reads top to bottom: the model, loaders and optimizer are built by the small
functions above it, the epoch and evaluation passes are `vidact.engine`'s, and
`vidact.checkpoint.Checkpointer` owns saving and resuming.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from vidact.checkpoint import Checkpointer, CheckpointError, RunState
from vidact.clip.sampling import WINDOW_MODES, check_positive_int, check_ratio, views_layout
from vidact.clip.spec import ClipSpec, dtype_name
from vidact.data import LOADERS
from vidact.engine import (
    AMP_MODES,
    CompiledOrEager,
    Env,
    EpochHooks,
    EpochProgress,
    LoaderSettings,
    Optimization,
    StepSettings,
    amp_dtype,
    build_optimizer,
    cosine_with_warmup,
    evaluate_model,
    setup_env,
    share_cpu_threads,
    train_epoch,
    unwrap,
    wrap_ddp,
)
from vidact.files import atomic_write_csv, atomic_write_json, read_csv
from vidact.models import MODELS, SIZES, create_model
from vidact.plots import plot_accuracy_vs_ratio, plot_training_curves
from vidact.recipes import RECIPES, STAGE_FIELDS, Recipe, Stage, get_recipe, override
from vidact.shards import ShardError, ShardSet
from vidact.tracking import Tracker

log = logging.getLogger("vidact.train")

LOG_COLUMNS = ["epoch", "stage", "train_loss", "train_top1", "train_top5", "train_eval_loss", "train_eval_top1",
               "train_eval_top5", "val_loss", "val_top1", "val_top5", "lr", "clips_per_s", "data_wait",
               "epoch_time"]


# --------------------------------------------------------------------------- building blocks

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


def clip_spec(recipe: Recipe, model: torch.nn.Module, ratio: float, amp: torch.dtype | None) -> ClipSpec:
    """The clips this run trains on; the normalization is the model's own."""
    cfg = model.config
    return ClipSpec(frames_per_clip=recipe.frames, crop_size=recipe.size, norm=cfg["norm"], dtype=dtype_name(amp),
                    ratio=ratio, window=recipe.window, random_stride=recipe.random_stride, flip=recipe.flip,
                    mean=cfg.get("mean"), std=cfg.get("std")).check()


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


# --------------------------------------------------------------------------- one ratio

@dataclass
class RatioRun:
    """One ratio's model and what acts on it: the clip spec, AMP, checkpoints, tracking, the
    per-epoch evaluation loaders, the log rows so far."""

    model: torch.nn.Module  # DDP-wrapped when distributed
    forward: CompiledOrEager
    spec: ClipSpec
    amp: torch.dtype | None
    ckpt: Checkpointer
    state: RunState
    tracker: Tracker | None
    train_eval: object | None
    val: object | None
    rows: list[dict]


def start_ratio(run: Run, ratio: float, out: Path) -> RatioRun:
    """Builds the model, resumes from ``out/last.pt`` when there is one, opens tracking."""
    recipe, shards, env = run.recipe, run.shards, run.env
    amp = amp_dtype(env, recipe.amp)
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model, num_classes=len(shards.classes), preset=recipe.model_size,
                         frames_per_clip=recipe.frames, crop_size=recipe.size, weights=recipe.weights).to(env.device)
    spec = clip_spec(recipe, model, ratio, amp)
    ckpt = Checkpointer(out, shards.classes, env.device, writer=env.main)
    state = ckpt.resume(model, metric="val" if run.has_val else "train_eval")
    model = wrap_ddp(model, env)
    # The log keeps the rows the checkpoint covers: a row written just before a kill is redone.
    rows = [r for r in read_csv(out / "log.csv") if int(r["epoch"]) <= state.epoch]
    tracker = None
    if env.main and (run.tensorboard or run.wandb):
        tracker = Tracker(out, state.epoch + 1, {**recipe.as_dict(), "ratio": ratio}, wandb=run.wandb)
    train_eval = run.loaders.build(shards, "train", "eval", spec, env) if recipe.train_eval or not run.has_val else None
    val = run.loaders.build(shards, "val", "eval", spec, env, views=recipe.eval_views) if run.has_val else None
    return RatioRun(model, CompiledOrEager(model, recipe.compile), spec, amp, ckpt, state, tracker, train_eval,
                    val, rows)


def train_ratio(run: Run, ratio: float, out: Path) -> dict:
    """Trains one model at one observation ratio, resuming from ``out/last.pt`` if present."""
    recipe, shards, env = run.recipe, run.shards, run.env
    r = start_ratio(run, ratio, out)
    state = r.state
    for s in range(state.stage, len(recipe.stages)):
        stage = recipe.stages[s]
        if s != state.stage:  # stage handover: the best weights so far, fresh optimizer and schedule
            state.next_stage(s)
            r.ckpt.forget_saved()
            r.ckpt.load_best(unwrap(r.model))
            log.info("stage %d: starting from best.pt (epoch %d, %s top-1 %.4f)", s + 1, state.best["epoch"],
                     state.best["metric"], state.best["val_top1"])
        if state.stage_done or state.stage_epoch >= stage.epochs:
            continue
        # The loader's epochs are the run's: epoch e draws the same clips and augmentations
        # whether it is trained straight through or resumed in its middle (batch `state.batch`).
        loader = run.loaders.build(shards, "train", "train", r.spec, env, seed=recipe.seed,
                                   resume={"epoch": state.epoch, "batches": state.batch})
        if len(loader) == 0:
            raise ShardError(f"{shards.root}: train split has fewer clips per rank than one batch "
                             f"({recipe.batch_size}); lower --batch-size")
        opt = build_optimization(unwrap(r.model), stage, recipe, len(loader), env, r.amp)
        progress = r.ckpt.restore(opt.optimizer, opt.scheduler, opt.scaler)
        while state.stage_epoch < stage.epochs and not state.stage_done:
            train_one_epoch(run, r, loader, opt, out, desc=f"r={ratio:g} s{s + 1} ep {state.stage_epoch + 1}"
                                                          f"/{stage.epochs}", progress=progress)
            progress = None
        if state.stage_done:
            log.info("early stop: %d epochs without improvement", state.patience)
    if r.tracker is not None:
        r.tracker.close()
    return finish_ratio(run, ratio, out, state, r.rows)


def train_one_epoch(run: Run, r: RatioRun, loader, opt: Optimization, out: Path, desc: str,
                    progress: EpochProgress | None = None) -> None:
    """Trains one epoch (the rest of it after `progress`), evaluates, then logs and checkpoints
    it; may checkpoint inside the epoch (``--save-every``, a stop request)."""
    env, state = run.env, r.state
    started = time.perf_counter() - (progress.seconds if progress else 0.0)
    hooks = EpochHooks(first_batch=(lambda video: r.tracker.log_preview(video, r.spec)) if r.tracker else None,
                       batch_ids=batch_tracer(run, state),
                       after_step=lambda p: save_mid_epoch(run, r, opt, p))
    tr = train_epoch(r.model, r.forward, loader, opt, env, r.amp, len(run.shards.classes), desc, hooks, progress)
    r.model.eval()
    te = evaluate_model(r.forward, r.train_eval, env, r.amp, "train-eval") if r.train_eval else {}
    va = evaluate_model(r.forward, r.val, env, r.amp, "val") if r.val else {}
    score = va if r.val else te
    improved = state.end_epoch(math.ceil(len(loader) / run.recipe.accum), score["top1"], score["top5"],
                               run.recipe.early_stop)
    row = epoch_row(state, opt.optimizer.param_groups[0]["lr"], time.perf_counter() - started, tr, te, va)
    r.rows.append(row)
    if env.main:
        atomic_write_csv(out / "log.csv", r.rows, LOG_COLUMNS)
    if r.tracker is not None:
        r.tracker.log_row(row)
    save_checkpoint(run, r, opt, improved)
    if env.world_size > 1:
        dist.barrier()
    log.info("%s: train loss %.4f top1 %.3f | val top1 %s | %.1f clips/s, data wait %.0f%%", desc, tr["loss"],
             tr["top1"], f"{va['top1']:.3f}" if va else "-", tr["clips_per_s"], 100 * tr["data_wait"])
    if STOP.requested(env):
        raise Stopped(f"stopped after epoch {state.epoch}; checkpoint {out / 'last.pt'}")


def save_checkpoint(run: Run, r: RatioRun, opt: Optimization, improved: bool,
                    progress: EpochProgress | None = None) -> None:
    """``last.pt`` (and ``best.pt`` when `improved`); with `progress`, one inside the epoch."""
    run_info = {"recipe": run.recipe.as_dict(), "ratio": r.spec.ratio, "spec": r.spec.__dict__}
    r.ckpt.save(unwrap(r.model), r.state, run_info, opt.optimizer, opt.scheduler, opt.scaler, improved,
                progress=progress)


def save_mid_epoch(run: Run, r: RatioRun, opt: Optimization, progress: EpochProgress) -> None:
    """After an optimizer step inside an epoch: a checkpoint every ``--save-every`` steps, and
    one before stopping when the process was asked to (SIGTERM)."""
    steps = r.state.step + math.ceil(progress.batches / run.recipe.accum)
    stop = STOP.requested(run.env)
    if stop or (run.save_every and steps % run.save_every == 0):
        save_checkpoint(run, r, opt, False, progress)
    if stop:
        raise Stopped(f"stopped in epoch {r.state.epoch + 1} after batch {progress.batches}; "
                      f"checkpoint {r.ckpt.out / 'last.pt'}")


def batch_tracer(run: Run, state: RunState):
    """`EpochHooks.batch_ids` writing ``{"epoch", "batch", "ids"}`` lines (``--trace-batches``),
    one file per rank under DDP."""
    if run.trace_batches is None:
        return None
    path = run.trace_batches
    if run.env.world_size > 1:
        path = path.with_name(f"{path.name}.rank{run.env.rank}")

    def trace(batch: int, ids: list[str]) -> None:
        with path.open("a") as f:
            f.write(json.dumps({"epoch": state.epoch + 1, "batch": batch, "ids": list(ids)}) + "\n")

    return trace


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


def finish_ratio(run: Run, ratio: float, out: Path, state: RunState, rows: list[dict]) -> dict:
    """The ratio's summary (``summary.json``) and curves (``curves.png``), written by rank 0."""
    recipe, best = run.recipe, state.best
    summary = {"ratio": ratio, "window": recipe.window, "best_top1": best["val_top1"], "best_top5": best["val_top5"],
               "best_epoch": best["epoch"], "metric": best["metric"], "epochs": state.epoch,
               "stopped_early": state.stopped_early, "model": recipe.model, "model_size": recipe.model_size,
               "classes": len(run.shards.classes), "final": rows[-1] if rows else {}}
    if run.env.main:
        plot_training_curves(out / "log.csv", out / "curves.png", title=f"{recipe.model} r={ratio:g}")
        atomic_write_json(out / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vidact.train", description=__doc__.split("\n\n")[0],
                                epilog="Recipes: " + "; ".join(f"{k}: {r.notes}" for k, r in RECIPES.items()))
    p.add_argument("--recipe", default="demo", choices=sorted(RECIPES), help="named preset (default demo)")
    p.add_argument("--shards", required=True, help="shard set from tools/make_shards.py: a folder or s3://bucket/prefix")
    p.add_argument("--out", type=Path, help="output folder (default runs/<recipe>)")
    p.add_argument("--loader", choices=LOADERS, default="dali", help="data loader (default dali)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="TensorBoard events in each ratio's folder (default on): tensorboard --logdir OUT")
    p.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps inside an epoch (with the loader's "
                        "position: a killed run resumes at the next batch); SIGTERM always checkpoints, then "
                        "exits 0")
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others before failing (default torch's "
                        "30 min); a short one lets the survivors of a dead node exit, to be relaunched")
    p.add_argument("--trace-batches", type=Path, metavar="FILE",
                   help="append every train batch's clip ids to FILE as JSON lines (to check what a run saw)")
    p.add_argument("--wandb", action="store_true",
                   help="also log to Weights & Biases (project vidact; WANDB_MODE=offline runs without a network)")
    g = p.add_argument_group("recipe overrides (default: the recipe's value)")
    g.add_argument("--model", choices=sorted(MODELS))
    g.add_argument("--model-size", choices=list(SIZES), help="model preset")
    g.add_argument("--weights", help="pretrained weights: a local from_pretrained folder or checkpoint file, a "
                   "Hugging Face id ORG/NAME[@REVISION] (videomae, vivit), or a timm name [timm/]NAME[@FILE] "
                   "(vit-mean); ids come from the Hugging Face cache, offline when cached (HF_HUB_OFFLINE=1)")
    g.add_argument("--frames", type=int, help="frames per clip")
    g.add_argument("--size", type=int, help="crop size in pixels")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--accum", type=int, help="gradient accumulation steps")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--ratios", type=float, nargs="+", help="observation ratios in (0, 1], one model each")
    g.add_argument("--window", choices=WINDOW_MODES, help="observation window placement")
    g.add_argument("--random-stride", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--flip", type=float, help="train-time horizontal flip chance (0 for direction-sensitive classes)")
    g.add_argument("--train-eval", action=argparse.BooleanOptionalAction, default=None,
                   help="deterministic pass over train after each epoch")
    g.add_argument("--early-stop", type=int, help="patience in epochs (0: off)")
    g.add_argument("--amp", choices=AMP_MODES)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    g.add_argument("--eval-views", type=int, help="views of per-epoch validation (1, or 3k/6k)")
    g.add_argument("--seed", type=int)
    g.add_argument("--workers", type=int, help="DALI threads / DataLoader workers")
    g.add_argument("--dali-pipelines", type=int,
                   help="DALI pipelines per process (default 1: one already decodes a batch's clips in parallel, "
                        "one NVDEC session each, with this rank's share of the cores; more only overlap the "
                        "end-of-batch barrier)")
    g.add_argument("--single-stage", action="store_true", help="drop the recipe's later stages")
    s = p.add_argument_group("stage settings (first stage; --stage2-X for the second)")
    for name, kind in (("epochs", int), ("lr", float), ("head_lr", float), ("warmup", float),
                       ("label_smoothing", float), ("mixup_alpha", float), ("mixup_prob", float)):
        s.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name)
        s.add_argument(f"--stage2-{name.replace('_', '-')}", type=kind, dest=f"stage2_{name}",
                       help=argparse.SUPPRESS)
    return p


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    recipe = get_recipe(args.recipe)
    if args.single_stage:
        recipe = replace(recipe, stages=recipe.stages[:1])
    fields = set(Recipe.__dataclass_fields__) | set(STAGE_FIELDS) | {f"stage2_{f}" for f in STAGE_FIELDS}
    changes = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "ratios" in changes:
        changes["ratios"] = tuple(changes["ratios"])
    recipe = override(recipe, **changes)
    for r in recipe.ratios:
        check_ratio(r)
    counts = [(recipe.frames, "--frames"), (recipe.batch_size, "--batch-size"), (recipe.accum, "--accum"),
              (recipe.dali_pipelines, "--dali-pipelines"), *((st.epochs, "--epochs") for st in recipe.stages)]
    for value, flag in counts:
        check_positive_int(value, flag)
    if recipe.eval_views != 1:
        views_layout(recipe.eval_views)
    return recipe


def train_ratios(run: Run, out: Path) -> dict[float, dict]:
    """Every ratio of the recipe, each in ``out/ratio_{r}``; finished ratios are skipped."""
    results = {}
    for ratio in run.recipe.ratios:
        folder = out / f"ratio_{ratio:g}"
        folder.mkdir(exist_ok=True)
        if (folder / "summary.json").is_file():
            results[ratio] = json.loads((folder / "summary.json").read_text())
            log.info("ratio %g: finished earlier, skipped (%s)", ratio, folder / "summary.json")
            continue
        results[ratio] = train_ratio(run, ratio, folder)
    return results


def report(name: str, recipe: Recipe, results: dict[float, dict], out: Path) -> None:
    """``out/summary.json`` over all ratios, ``accuracy_vs_ratio.png`` and one line per ratio."""
    table = {r: {"top1": s["best_top1"], "top5": s["best_top5"]} for r, s in results.items()}
    atomic_write_json(out / "summary.json", {"recipe": name, "model": recipe.model, "window": recipe.window,
                                             "ratios": {f"{r:g}": s for r, s in results.items()}})
    plot_accuracy_vs_ratio(table, out / "accuracy_vs_ratio.png", title=f"{name}: best top-1 vs ratio")
    for r, s in results.items():
        print(f"ratio {r:g}: best {s['metric']} top-1 {s['best_top1']:.3f} top-5 {s['best_top5']:.3f} "
              f"(epoch {s['best_epoch']})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        recipe = recipe_from_args(args)
        shards = ShardSet.open(args.shards)
        shards.tars("train")
        env = setup_env(args.device, args.dist_timeout)
    except (ValueError, ShardError, FileNotFoundError) as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    if not env.main:
        logging.getLogger().setLevel(logging.WARNING)
    share_cpu_threads(env, recipe.workers)
    run = Run(recipe, shards, LoaderSettings(args.loader, recipe.batch_size, recipe.workers, recipe.dali_pipelines),
              env, tensorboard=args.tensorboard, wandb=args.wandb, save_every=args.save_every,
              trace_batches=args.trace_batches)
    STOP.install()
    out = args.out or Path("runs") / args.recipe
    out.mkdir(parents=True, exist_ok=True)
    if env.main:
        atomic_write_json(out / "recipe.json", {"recipe": args.recipe, **recipe.as_dict(), "loader": args.loader,
                                                "shards": str(args.shards)})
    try:
        results = train_ratios(run, out)
    except Stopped as e:
        print(f"train: {e}; run the same command to resume", file=sys.stderr)
        return 0
    except (ShardError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if env.main:
        report(args.recipe, recipe, results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
