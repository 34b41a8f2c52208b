"""Train a video classifier: `python -m vidact.train --recipe NAME --shards DIR`.

One model per observation ratio (``--ratios``), each in ``OUT/ratio_{r}/`` with ``best.pt``,
``last.pt``, ``log.csv`` (a row per epoch, written as the epoch ends), ``summary.json`` and
``curves.png``; over all ratios ``OUT/summary.json`` and ``OUT/accuracy_vs_ratio.png``.
Re-running the same command resumes from ``last.pt`` (model, optimizer, scheduler, scaler,
epoch, step, RNG) and skips finished ratios. Works under ``torchrun --nproc-per-node N``
(DDP; rank 0 writes).

This module is the command line: the flags, the recipe they make, one `vidact.trainer.RatioTrainer`
per ratio, the report over all ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch.distributed as dist

from vidact import cli
from vidact.checkpoint import CheckpointError
from vidact.cli import UsageError
from vidact.clip.sampling import WINDOW_MODES, check_positive_int, check_ratio, views_layout
from vidact.data import LOADERS, LoaderSettings
from vidact.engine import AMP_MODES, setup_env, share_cpu_threads
from vidact.files import atomic_write_json, check_output
from vidact.models import MODELS, SIZES, check_model, is_factory
from vidact.plots import plot_accuracy_vs_ratio
from vidact.recipes import RECIPES, STAGE_FIELDS, Recipe, get_recipe, override
from vidact.rundir import RUN_FILE, check_rerun
from vidact.shards import ShardError, ShardSet
from vidact.trainer import STOP, RatioTrainer, Run, Stopped

log = logging.getLogger("vidact.train")

# --------------------------------------------------------------------------- command line

STAGE_HELP = {"epochs": "epochs of the stage", "lr": "peak learning rate of the backbone (cosine after warmup)",
              "head_lr": "peak learning rate of the classification head (default: --lr)",
              "warmup": "warmup, in epochs", "label_smoothing": "label smoothing of the loss",
              "mixup_alpha": "Mixup's Beta(alpha, alpha) (0: off)", "mixup_prob": "chance a batch is mixed"}
TWO_STAGES = ", ".join(k for k, r in RECIPES.items() if len(r.stages) > 1) or "none"


def build_parser() -> argparse.ArgumentParser:
    recipes = "; ".join(f"{k}: {r.notes}" for k, r in RECIPES.items())
    p = cli.parser("vidact.train", __doc__, epilog=f"Recipes: {recipes}")
    p.add_argument("--recipe", default="demo", choices=sorted(RECIPES), help="named preset (default demo)")
    p.add_argument("--shards", required=True, help="shard set (vidact-shards): a folder or s3://bucket/prefix")
    p.add_argument("--out", type=Path, help="output folder (default runs/<recipe>); running again in it resumes, "
                                            "extends (more --epochs) or refuses other settings")
    p.add_argument("--restart", action="store_true",
                   help="start the run in --out over: its checkpoints, logs and summaries are removed first")
    cli.add_loader_flags(p, LOADERS)
    cli.add_device_flag(p)
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="TensorBoard events in each ratio's folder (default on): tensorboard --logdir OUT")
    p.add_argument("--save-every", type=int, default=0, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps inside an epoch (with the loader's "
                        "position: a killed run resumes at the next batch); SIGTERM always checkpoints, then "
                        "exits 0")
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others before failing (default torch's "
                        "30 min); a short one lets the survivors of a dead node exit, to be relaunched")
    p.add_argument("--max-bad-samples", type=int, metavar="N",
                   help="damaged samples to leave out (each said once, counted in log.csv and summary.json) before "
                        "the run stops (default: 1 %% of a split, at least 10)")
    p.add_argument("--trace-batches", type=Path, metavar="FILE",
                   help="append every train batch's clip ids to FILE as JSON lines (to check what a run saw)")
    p.add_argument("--wandb", action="store_true",
                   help="also log to Weights & Biases (project vidact; WANDB_MODE=offline runs without a network)")
    g = p.add_argument_group("recipe overrides (default: the recipe's value)")
    add_model_flags(g)
    g.add_argument("--frames", dest="frames_per_clip", type=int, help="frames per clip (T)")
    g.add_argument("--crop-size", type=int, help="crop size in pixels (square)")
    g.add_argument("--batch-size", type=int, help="clips per batch (per process under torchrun)")
    g.add_argument("--clips-per-video", type=int, metavar="K",
                   help="train clips cut from each video read, each its own window, crop and flip, their frames "
                        "decoded once (VideoMAE's repeated sampling; default 1): a batch holds batch-size / K videos "
                        "and an epoch sees every video K times")
    g.add_argument("--accum", type=int, help="gradient accumulation steps")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--ratios", type=float, nargs="+", help="observation ratios in (0, 1], one model each")
    g.add_argument("--window", choices=WINDOW_MODES, help="observation window placement")
    g.add_argument("--random-stride", action=argparse.BooleanOptionalAction, default=None,
                   help="train-time random temporal stride (1-4, the VideoMAE recipe's)")
    g.add_argument("--flip", type=float, help="train-time horizontal flip chance (0 for direction-sensitive classes)")
    g.add_argument("--train-eval", action=argparse.BooleanOptionalAction, default=None,
                   help="deterministic pass over train after each epoch")
    g.add_argument("--early-stop", type=int, help="patience in epochs (0: off)")
    g.add_argument("--amp", choices=AMP_MODES,
                   help="mixed precision: auto (bf16 where the GPU has it, else fp16; off on a CPU)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    g.add_argument("--eval-views", type=int, help="views of per-epoch validation (1, or 3k/6k)")
    g.add_argument("--seed", type=int, help="seed of the model's initialization, shuffling and train draws")
    g.add_argument("--dali-pipelines", type=int,
                   help="DALI pipelines per process, this rank's threads split among them (default: chosen "
                        "for the machine and said in the log: on a CPU one single-thread pipeline per core, "
                        "measured 10-45%% more clips/s than one; on a GPU one, whose threads decode the batch's "
                        "clips in parallel; a resumed run keeps its checkpoint's count)")
    g.add_argument("--single-stage", action="store_true", help="drop the recipe's later stages")
    add_stage_flags(p)
    return p


def add_model_flags(g: argparse._ArgumentGroup) -> None:
    """--model, --model-size, --weights: what is trained, from what."""
    g.add_argument("--model", type=model_name, metavar="NAME|MODULE:FACTORY",
                   help=f"model family ({', '.join(sorted(MODELS))}), or your own: package.module:factory returning "
                        "an nn.Module for num_classes (see README, 'Your own model')")
    g.add_argument("--model-size", dest="preset", choices=list(SIZES), help="model preset (size)")
    g.add_argument("--weights", help="pretrained weights: a local from_pretrained folder or checkpoint file, a "
                   "Hugging Face id ORG/NAME[@REVISION] (videomae, vivit), a timm name [timm/]NAME[@FILE] "
                   "(vit-mean), or a torchvision weights name such as KINETICS400_V1 (r3d_18, ..., from the torch "
                   "hub cache), or for your own model a checkpoint or state dict file; ids come from the Hugging Face "
                   "cache, offline when cached (HF_HUB_OFFLINE=1)")


def add_stage_flags(p: argparse.ArgumentParser) -> None:
    """Each stage setting, for the first stage and (``--stage2-X``) the second."""
    s = p.add_argument_group("stage settings (first stage; --stage2-X for the second)")
    for name, kind in (("epochs", int), ("lr", float), ("head_lr", float), ("warmup", float),
                       ("label_smoothing", float), ("mixup_alpha", float), ("mixup_prob", float)):
        s.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name, help=STAGE_HELP[name])
        s.add_argument(f"--stage2-{name.replace('_', '-')}", type=kind, dest=f"stage2_{name}",
                       help=f"the same, for the second stage (recipes with two: {TWO_STAGES})")


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
    counts = [(recipe.frames_per_clip, "--frames"), (recipe.batch_size, "--batch-size"), (recipe.accum, "--accum"),
              (recipe.clips_per_video, "--clips-per-video"),
              *((st.epochs, "--epochs") for st in recipe.stages)]
    if recipe.dali_pipelines is not None:
        counts.append((recipe.dali_pipelines, "--dali-pipelines"))
    for value, flag in counts:
        check_positive_int(value, flag)
    if recipe.eval_views != 1:
        views_layout(recipe.eval_views)
    if recipe.batch_size % recipe.clips_per_video:
        raise UsageError(f"--batch-size {recipe.batch_size} is not a multiple of --clips-per-video "
                         f"{recipe.clips_per_video} (a batch holds whole videos' clips)")
    return recipe


def train_ratios(run: Run, out: Path) -> dict[float, dict]:
    """Every ratio of the recipe, each in ``out/ratio_{r}``; finished ratios are skipped."""
    results = {}
    for ratio in run.recipe.ratios:
        folder = out / f"ratio_{ratio:g}"
        folder.mkdir(exist_ok=True)
        done = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else None
        if done is not None and (done["epochs"] >= sum(s.epochs for s in run.recipe.stages) or done["stopped_early"]):
            results[ratio] = done
            log.info("ratio %g: finished earlier, skipped (%s)", ratio, folder / "summary.json")
            continue
        results[ratio] = RatioTrainer(run, ratio, folder).train()
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
    cli.said(out / RUN_FILE, out / "summary.json", out / "accuracy_vs_ratio.png",
             *(out / f"ratio_{r:g}" for r in results))


def model_name(value: str) -> str:
    """A family name or ``package.module:factory`` (argparse's type: its error names the families)."""
    if value in MODELS or is_factory(value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither a model family ({', '.join(sorted(MODELS))}) nor "
                                     "package.module:factory")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    out = args.out or Path("runs") / args.recipe
    try:
        recipe = recipe_from_args(args)
        check_output(out)
        check_model(recipe.model, preset=recipe.preset, frames_per_clip=recipe.frames_per_clip,
                    crop_size=recipe.crop_size, weights=recipe.weights)  # before anything is written
        shards = ShardSet.open(args.shards)
        shards.tars("train")
        env = setup_env(args.device, args.dist_timeout)
        videos = recipe.batch_size // recipe.clips_per_video  # a batch's videos
        if shards.count("train") // env.world_size < videos:  # before building anything
            per = f" per process ({env.world_size} processes)" if env.world_size > 1 else ""
            batch = (f"{videos} videos (--batch-size {recipe.batch_size} / --clips-per-video "
                     f"{recipe.clips_per_video})" if recipe.clips_per_video > 1 else str(videos))
            raise UsageError(f"{shards.root}: the train split has {shards.count('train')} clips{per}, fewer than one "
                             f"batch of {batch}; lower --batch-size")
    except (ValueError, ShardError, FileNotFoundError, UsageError) as e:
        return cli.fail(parser, e)
    if not env.main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        ran = check_rerun(out, {"recipe": args.recipe, **json.loads(json.dumps(recipe.as_dict())),
                                "loader": args.loader, "shards": str(args.shards)}, args.restart, env.main)
    except UsageError as e:
        return cli.fail(parser, e)
    settings = LoaderSettings(args.loader, recipe.batch_size, recipe.workers, recipe.dali_threads,
                              recipe.dali_pipelines, args.max_bad_samples)
    share_cpu_threads(env, settings.loader_workers)
    run = Run(recipe, shards, settings, env, tensorboard=args.tensorboard, wandb=args.wandb,
              save_every=args.save_every, trace_batches=args.trace_batches)
    STOP.install()
    out.mkdir(parents=True, exist_ok=True)
    if env.main:
        atomic_write_json(out / RUN_FILE, ran)
    try:
        results = train_ratios(run, out)
    except Stopped as e:
        print(f"{parser.prog}: {e}; run the same command to resume", file=sys.stderr)
        return 0
    except (ShardError, CheckpointError, ValueError, FileNotFoundError) as e:
        return cli.fail(parser, e)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if env.main:
        report(args.recipe, recipe, results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
