"""Train a video classifier: `python -m vidact.train --recipe NAME --shards DIR`.

One model per observation ratio (``--ratios``), each in ``OUT/ratio_{r}/`` with ``best.pt``,
``last.pt``, ``log.csv`` (a row per epoch, written as the epoch ends), ``summary.json`` and
``curves.png``; over all ratios ``OUT/summary.json`` and ``OUT/accuracy_vs_ratio.png``.
Re-running the same command resumes from ``last.pt`` (model, optimizer, scheduler, scaler,
epoch, step, RNG) and skips finished ratios. Works under ``torchrun --nproc-per-node N``
(DDP; rank 0 writes).

The loop below reads top to bottom: everything it needs is built by the small functions
above it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from vidact import checkpoint
from vidact.checkpoint import CheckpointError
from vidact.contract import ClipSpec
from vidact.data import build_loader
from vidact.metrics import MetricTracker, average_views
from vidact.models import NORM, create_model
from vidact.recipes import RECIPES, STAGE_FIELDS, Recipe, Stage, get_recipe, override
from vidact.sampling import check_num_frames, check_ratio
from vidact.shards import ShardError, ShardSet

log = logging.getLogger("vidact.train")

LOG_COLUMNS = ["epoch", "stage", "train_loss", "train_top1", "train_top5", "train_eval_loss", "train_eval_top1",
               "train_eval_top5", "val_loss", "val_top1", "val_top5", "lr", "clips_per_s", "data_wait",
               "epoch_time"]


# --------------------------------------------------------------------------- environment

@dataclass(frozen=True)
class Env:
    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_env(device: str | None) -> Env:
    """Single process, or DDP when started by torchrun (RANK/WORLD_SIZE in the environment)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Env(rank, world, dev)


def amp_dtype(env: Env, amp: str) -> torch.dtype | None:
    """Autocast dtype: bf16 where the GPU has it, else fp16 (with a grad scaler); none on CPU."""
    if env.device.type != "cuda" or amp == "off":
        return None
    if amp in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


# --------------------------------------------------------------------------- building blocks

def clip_spec(recipe: Recipe, ratio: float, amp: torch.dtype | None) -> ClipSpec:
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")
    return ClipSpec(num_frames=recipe.frames, size=recipe.size, norm=NORM[recipe.model], dtype=dtype,
                    ratio=ratio, window=recipe.window, random_stride=recipe.random_stride,
                    flip=recipe.flip).check()


def build_optimizer(model: torch.nn.Module, stage: Stage, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with two groups: backbone at ``stage.lr``, head at ``stage.head_lr``."""
    backbone, head = model.param_groups()
    return torch.optim.AdamW([
        {"params": backbone, "lr": stage.lr, "name": "backbone"},
        {"params": head, "lr": stage.head_lr or stage.lr, "name": "head"},
    ], weight_decay=weight_decay)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int,
                       warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup`` of the steps, then cosine to 0; stepped per optimizer step."""
    warm = int(round(warmup * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def mixup(video: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float,
          prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup on the device (seed 001): one lambda per batch, soft targets that sum to 1."""
    target = F.one_hot(labels, num_classes).float()
    if alpha <= 0 or random.random() >= prob:
        return video, target
    lam = random.betavariate(alpha, alpha)
    perm = torch.randperm(video.shape[0], device=video.device)
    return lam * video + (1 - lam) * video[perm], lam * target + (1 - lam) * target[perm]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / target.shape[1]
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


class CompiledOrEager:
    """`torch.compile` when asked, falling back to eager (with a warning) if compiling fails."""

    def __init__(self, model: torch.nn.Module, enabled: bool, backend: str | Callable = "inductor"):
        self.eager = model
        self.fn = model
        if enabled:
            try:
                self.fn = torch.compile(model, backend=backend)
            except Exception as e:  # noqa: BLE001 - any compile failure means: run eager
                log.warning("torch.compile unavailable (%s); running eager", e)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fn is self.eager:
            return self.eager(x)
        try:
            return self.fn(x)
        except Exception as e:  # noqa: BLE001
            log.warning("torch.compile failed (%s: %s); falling back to eager", e.__class__.__name__,
                        str(e).splitlines()[0] if str(e) else "")
            self.fn = self.eager
            return self.eager(x)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def write_log(path: Path, rows: list[dict]) -> None:
    """Rewrites the whole CSV through a temp file: never half a row on disk."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- one epoch

def train_epoch(model, run, loader, optimizer, scheduler, scaler, stage: Stage, recipe: Recipe, env: Env,
                num_classes: int, amp: torch.dtype | None, desc: str) -> dict:
    """One pass over the train loader; returns metrics, clips/s and the data-wait share."""
    model.train()
    tracker = MetricTracker()
    accum = recipe.accum
    steps_per_epoch = len(loader)
    wait = 0.0
    clips = 0
    start = time.perf_counter()
    bar = tqdm(total=steps_per_epoch, desc=desc, disable=not env.main or None, mininterval=1.0, leave=False)
    it = iter(loader)
    i = 0
    while True:
        t0 = time.perf_counter()
        try:
            video, labels, _ = next(it)
        except StopIteration:
            break
        wait += time.perf_counter() - t0
        video, target = mixup(video, labels, num_classes, stage.mixup_alpha, stage.mixup_prob)
        boundary = (i + 1) % accum == 0 or i + 1 == steps_per_epoch
        sync = contextlib.nullcontext() if boundary or env.world_size == 1 else model.no_sync()
        with sync:
            with torch.autocast(env.device.type, dtype=amp, enabled=amp is not None):
                logits = run(video)
                loss = soft_cross_entropy(logits, target, stage.label_smoothing)
            scaler.scale(loss / accum).backward()
        if boundary:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        tracker.update(loss.detach(), logits.detach().float(), target)
        clips += video.shape[0]
        i += 1
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    metrics = tracker.reduce(env.device).compute()
    counts = torch.tensor([clips, elapsed, wait], dtype=torch.float64, device=env.device)
    if env.world_size > 1:
        dist.all_reduce(counts)
        counts[1:] /= env.world_size
    return {"loss": metrics["loss"], "top1": metrics["top1"], "top5": metrics["top5"],
            "clips_per_s": float(counts[0] / max(counts[1], 1e-9)),
            "data_wait": float(counts[2] / max(counts[1], 1e-9))}


@torch.no_grad()
def evaluate_model(run, loader, env: Env, amp: torch.dtype | None, desc: str = "eval",
                   keep_logits: bool = False) -> tuple[dict, dict]:
    """Loss/top-1/top-5 over a loader (multi-view batches: logits averaged over views)."""
    tracker = MetricTracker()
    kept: dict[str, list] = {"logits": [], "labels": [], "ids": []}
    for video, labels, ids in tqdm(loader, desc=desc, disable=not env.main or None, mininterval=1.0, leave=False):
        with torch.autocast(env.device.type, dtype=amp, enabled=amp is not None):
            if video.dim() == 6:
                b, v = video.shape[:2]
                logits = average_views(run(video.flatten(0, 1)).float().view(b, v, -1))
            else:
                logits = run(video).float()
        labeled = labels >= 0
        if labeled.any():
            loss = F.cross_entropy(logits[labeled], labels[labeled])
            tracker.update(loss, logits[labeled], labels[labeled])
        if keep_logits:
            kept["logits"].append(logits.cpu())
            kept["labels"].append(labels.cpu())
            kept["ids"].extend(ids)
    return tracker.reduce(env.device).compute(), kept


# --------------------------------------------------------------------------- one ratio

@dataclass(frozen=True)
class Context:
    """What every ratio's run shares: recipe, shard set, loader kind, processes."""

    recipe: Recipe
    shards: ShardSet
    loader: str
    env: Env

    def loader_for(self, split: str, mode: str, spec: ClipSpec, seed: int | None = None, views: int = 1):
        r, env = self.recipe, self.env
        seed = r.seed if seed is None else seed
        if mode == "eval" and views > 1:
            clips, flip = views_layout(views)
            return build_loader(self.shards, split, self.loader, "multiview", spec, r.batch_size, env.device,
                                env.rank, env.world_size, seed, r.workers, num_clips=clips, flip_views=flip,
                                dali_pipelines=r.dali_pipelines)
        return build_loader(self.shards, split, self.loader, mode, spec, r.batch_size, env.device, env.rank,
                            env.world_size, seed, r.workers, dali_pipelines=r.dali_pipelines)


def views_layout(views: int) -> tuple[int, bool]:
    """(temporal clips, flip) of a view count: 6k = k clips x 3 crops x 2 flips, 3k = k x 3."""
    if views % 6 == 0:
        return views // 6, True
    if views % 3 == 0:
        return views // 3, False
    raise ValueError(f"views must be 1 or a multiple of 3 (clips x 3 crops [x 2 flips]), got {views}")


def train_ratio(ctx: Context, ratio: float, out: Path) -> dict:
    """Trains one model at one observation ratio, resuming from ``out/last.pt`` if present."""
    recipe, shards, env = ctx.recipe, ctx.shards, ctx.env
    classes = shards.classes
    amp = amp_dtype(env, recipe.amp)
    spec = clip_spec(recipe, ratio, amp)
    has_val = "val" in shards.manifest["splits"] and shards.manifest["splits"]["val"]["count"] > 0
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model, len(classes), recipe.model_size, recipe.frames, recipe.size,
                         recipe.weights).to(env.device)
    state = None
    last = out / "last.pt"
    if last.exists():
        state = checkpoint.load(last, env.device)
        check_compatible(state, classes, model.config, last)
        model.load_state_dict(state["model"])
        log.info("resuming %s: %d epochs done (stage %d)", out, state["epoch"], state["stage"] + 1)
    if env.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    run = CompiledOrEager(model, recipe.compile)

    # The log keeps the rows the checkpoint covers: a row written just before a kill is redone.
    rows = [r for r in read_log(out / "log.csv") if int(r["epoch"]) <= state["epoch"]] if state else []
    fresh_best = {"val_top1": -1.0, "val_top5": 0.0, "epoch": 0, "metric": "val" if has_val else "train_eval"}
    best = state["best"] if state else fresh_best
    epoch = state["epoch"] if state else 0
    step = state["step"] if state else 0
    stopped_early = state.get("stopped_early", False) if state else False
    start_stage = state["stage"] if state else 0
    train_eval = ctx.loader_for("train", "eval", spec) if recipe.train_eval or not has_val else None
    val = ctx.loader_for("val", "eval", spec, views=recipe.eval_views) if has_val else None

    for s in range(start_stage, len(recipe.stages)):
        stage = recipe.stages[s]
        resuming_stage = state is not None and state["stage"] == s
        stage_epoch = state["stage_epoch"] if resuming_stage else 0
        if resuming_stage and (state.get("stage_done") or stage_epoch >= stage.epochs):
            continue
        if s > 0 and not resuming_stage:
            # Stage handover: start from the best weights so far, fresh optimizer and schedule.
            unwrap(model).load_state_dict(checkpoint.load(out / "best.pt", env.device)["model"])
            log.info("stage %d: starting from best.pt (epoch %d, %s top-1 %.4f)", s + 1, best["epoch"],
                     best["metric"], best["val_top1"])
        # A resumed run reseeds the loader from the epoch so it does not replay epoch 1's draws.
        loader = ctx.loader_for("train", "train", spec, seed=recipe.seed * 1000 + epoch)
        if len(loader) == 0:
            raise ShardError(f"{shards.root}: train split has fewer clips per rank than one batch "
                             f"({recipe.batch_size}); lower --batch-size")
        optimizer = build_optimizer(unwrap(model), stage, recipe.weight_decay)
        steps = stage.epochs * math.ceil(len(loader) / recipe.accum)
        scheduler = cosine_with_warmup(optimizer, steps, stage.warmup)
        scaler = torch.amp.GradScaler(env.device.type, enabled=amp == torch.float16)
        patience = 0
        if resuming_stage:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            checkpoint.set_rng_state(state["rng"])
            patience = state.get("patience", 0)
        state = None

        while stage_epoch < stage.epochs:
            desc = f"r={ratio:g} s{s + 1} ep {stage_epoch + 1}/{stage.epochs}"
            started = time.perf_counter()
            tr = train_epoch(model, run, loader, optimizer, scheduler, scaler, stage, recipe, env, len(classes),
                             amp, desc)
            model.eval()
            te = evaluate_model(run, train_eval, env, amp, "train-eval")[0] if train_eval else {}
            va = evaluate_model(run, val, env, amp, "val")[0] if val else {}
            epoch += 1
            stage_epoch += 1
            step += math.ceil(len(loader) / recipe.accum)
            row = {"epoch": epoch, "stage": s + 1, "lr": optimizer.param_groups[0]["lr"],
                   "epoch_time": round(time.perf_counter() - started, 3),
                   **{f"train_{k}": v for k, v in tr.items() if k in ("loss", "top1", "top5")},
                   "clips_per_s": round(tr["clips_per_s"], 3), "data_wait": round(tr["data_wait"], 4),
                   **{f"train_eval_{k}": te[k] for k in ("loss", "top1", "top5") if k in te},
                   **{f"val_{k}": va[k] for k in ("loss", "top1", "top5") if k in va}}
            rows.append(row)
            score = va if val else te
            improved = score["top1"] > best["val_top1"]
            if improved:
                best = {**best, "val_top1": score["top1"], "val_top5": score["top5"], "epoch": epoch, "stage": s + 1}
                patience = 0
            else:
                patience += 1
            stop = recipe.early_stop > 0 and patience >= recipe.early_stop
            if env.main:
                write_log(out / "log.csv", rows)
                ckpt = {"model": unwrap(model).state_dict(), "model_config": unwrap(model).config, "classes": classes,
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(), "stage": s, "stage_epoch": stage_epoch, "epoch": epoch,
                        "step": step, "best": best, "rng": checkpoint.rng_state(), "recipe": recipe.as_dict(),
                        "ratio": ratio, "spec": spec.__dict__, "patience": patience, "stage_done": stop,
                        "stopped_early": stopped_early or stop}
                if improved:
                    checkpoint.save({k: ckpt[k] for k in ("model", "model_config", "classes", "epoch", "best",
                                                           "recipe", "ratio", "spec")}, out / "best.pt")
                checkpoint.save(ckpt, last)
            if env.world_size > 1:
                dist.barrier()
            if env.main:
                log.info("%s: train loss %.4f top1 %.3f | val top1 %s | %.1f clips/s, data wait %.0f%%", desc,
                         tr["loss"], tr["top1"], f"{va['top1']:.3f}" if va else "-", tr["clips_per_s"],
                         100 * tr["data_wait"])
            if stop:
                log.info("early stop: %d epochs without improvement", patience)
                stopped_early = True
                break
    summary = {"ratio": ratio, "window": recipe.window, "best_top1": best["val_top1"], "best_top5": best["val_top5"],
               "best_epoch": best["epoch"], "metric": best["metric"], "epochs": epoch, "stopped_early": stopped_early,
               "model": recipe.model, "model_size": recipe.model_size, "classes": len(classes),
               "final": rows[-1] if rows else {}}
    if env.main:
        from vidact.plots import plot_training_curves

        plot_training_curves(out / "log.csv", out / "curves.png", title=f"{recipe.model} r={ratio:g}")
        write_json(out / "summary.json", summary)
    return summary


def check_compatible(state: dict, classes: list[str], model_config: dict, path: Path) -> None:
    if state.get("classes") != classes:
        raise CheckpointError(f"{path}: trained on {len(state.get('classes') or [])} classes, the shards have "
                              f"{len(classes)} (or other names); use another --out or the matching shards")
    mismatch = {k for k in model_config if state["model_config"].get(k) != model_config[k]}
    if mismatch:
        raise CheckpointError(f"{path}: model settings differ from this run ({', '.join(sorted(mismatch))}); "
                              "use another --out or the same flags")


# --------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vidact.train", description=__doc__.split("\n\n")[0],
                                epilog="Recipes: " + "; ".join(f"{k}: {r.notes}" for k, r in RECIPES.items()))
    p.add_argument("--recipe", default="demo", choices=sorted(RECIPES), help="named preset (default demo)")
    p.add_argument("--shards", type=Path, required=True, help="shard set from tools/make_shards.py")
    p.add_argument("--out", type=Path, help="output folder (default runs/<recipe>)")
    p.add_argument("--loader", choices=("dali", "torch"), default="dali", help="data loader (default dali)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    g = p.add_argument_group("recipe overrides (default: the recipe's value)")
    g.add_argument("--model", choices=("videomae", "vivit", "vit-mean"))
    g.add_argument("--model-size", choices=("tiny", "small", "base"))
    g.add_argument("--weights", help="pretrained weights: from_pretrained folder or checkpoint file")
    g.add_argument("--frames", type=int, help="frames per clip")
    g.add_argument("--size", type=int, help="crop size in pixels")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--accum", type=int, help="gradient accumulation steps")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--ratios", type=float, nargs="+", help="observation ratios in (0, 1], one model each")
    g.add_argument("--window", choices=("middle", "prefix"), help="observation window placement")
    g.add_argument("--random-stride", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--flip", type=float, help="train-time horizontal flip chance (0 for direction-sensitive classes)")
    g.add_argument("--train-eval", action=argparse.BooleanOptionalAction, default=None,
                   help="deterministic pass over train after each epoch")
    g.add_argument("--early-stop", type=int, help="patience in epochs (0: off)")
    g.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"))
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    g.add_argument("--eval-views", type=int, help="views of per-epoch validation (1, or 3k/6k)")
    g.add_argument("--seed", type=int)
    g.add_argument("--workers", type=int, help="DALI threads / DataLoader workers")
    g.add_argument("--dali-pipelines", type=int, help="DALI pipelines per process (a GPU has several NVDECs)")
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
    check_num_frames(recipe.frames, "--frames")
    check_num_frames(recipe.batch_size, "--batch-size")
    check_num_frames(recipe.accum, "--accum")
    check_num_frames(recipe.dali_pipelines, "--dali-pipelines")
    if recipe.eval_views != 1:
        views_layout(recipe.eval_views)
    for st in recipe.stages:
        check_num_frames(st.epochs, "--epochs")
    return recipe


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        recipe = recipe_from_args(args)
        shards = ShardSet.open(args.shards)
        shards.tars("train")
        env = setup_env(args.device)
    except (ValueError, ShardError, FileNotFoundError) as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    if not env.main:
        logging.getLogger().setLevel(logging.WARNING)
    ctx = Context(recipe, shards, args.loader, env)
    if env.device.type == "cpu":
        # On a CPU the loader's threads/workers and torch's intra-op threads share the cores;
        # oversubscribed, torch's threads spin and a step gets several times slower (bench/RESULTS.md).
        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores - (recipe.workers or cores)))
        log.info("CPU run: %d torch thread(s) beside %d loader thread(s)", torch.get_num_threads(),
                 recipe.workers or cores)
    out = args.out or Path("runs") / args.recipe
    out.mkdir(parents=True, exist_ok=True)
    if env.main:
        write_json(out / "recipe.json", {"recipe": args.recipe, **recipe.as_dict(), "loader": args.loader,
                                         "shards": str(args.shards)})
    results = {}
    try:
        for ratio in recipe.ratios:
            folder = out / f"ratio_{ratio:g}"
            folder.mkdir(exist_ok=True)
            if (folder / "summary.json").is_file():
                results[ratio] = json.loads((folder / "summary.json").read_text())
                log.info("ratio %g: finished earlier, skipped (%s)", ratio, folder / "summary.json")
                continue
            results[ratio] = train_ratio(ctx, ratio, folder)
    except (ShardError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"train: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if env.main:
        from vidact.plots import plot_accuracy_vs_ratio

        table = {r: {"top1": s["best_top1"], "top5": s["best_top5"]} for r, s in results.items()}
        write_json(out / "summary.json", {"recipe": args.recipe, "model": recipe.model, "window": recipe.window,
                                          "ratios": {f"{r:g}": s for r, s in results.items()}})
        plot_accuracy_vs_ratio(table, out / "accuracy_vs_ratio.png", title=f"{args.recipe}: best top-1 vs ratio")
        for r, s in results.items():
            print(f"ratio {r:g}: best {s['metric']} top-1 {s['best_top1']:.3f} top-5 {s['best_top5']:.3f} "
                  f"(epoch {s['best_epoch']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
