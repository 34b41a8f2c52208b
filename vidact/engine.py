"""What training, evaluation, prediction and the benchmark share: the process environment, AMP,
the compile fallback, the optimizer and schedule, one training epoch, evaluation and logits.

Nothing here knows about recipes, checkpoints, loaders or command lines: the epoch is a
generator (`train_steps`) that the caller's loop drives, so `vidact.trainer` decides in its own
loop body when to checkpoint, trace or stop; `vidact.inference` and ``tools/bench.py`` call the
same pieces.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from vidact.metrics import MetricTracker, average_views

log = logging.getLogger(__name__)

AMP_MODES = ("auto", "bf16", "fp16", "off")


# --------------------------------------------------------------------------- environment

@dataclass(frozen=True)
class Env:
    """This process: its rank among `world_size` and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_env(device: str | None, timeout_s: float | None = None) -> Env:
    """Single process, or DDP when started by torchrun (RANK/WORLD_SIZE in the environment).
    `timeout_s` bounds how long a rank waits on the others (torch's default: 30 minutes), so a
    node that died does not keep the survivors waiting that long."""
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
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s) if timeout_s else None)
    return Env(rank, world, dev)


def amp_dtype(env: Env, amp: str) -> torch.dtype | None:
    """Autocast dtype: bf16 where the GPU has it, else fp16 (with a grad scaler); none on CPU."""
    if env.device.type != "cuda" or amp == "off":
        return None
    if amp in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def share_cpu_threads(env: Env, loader_threads: int | None) -> None:
    """On a CPU the loader's threads/workers and torch's intra-op threads share the cores;
    oversubscribed, torch's threads spin and a step gets several times slower
    (vidact/bench/RESULTS.md), so torch gets the cores the loader leaves."""
    if env.device.type != "cpu":
        return
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores - (loader_threads or cores)))
    log.info("CPU run: %d torch thread(s) beside %d loader thread(s)", torch.get_num_threads(),
             loader_threads or cores)


# --------------------------------------------------------------------------- optimization

def build_optimizer(model: torch.nn.Module, lr: float, head_lr: float | None,
                    weight_decay: float) -> torch.optim.AdamW:
    """AdamW with two groups: backbone at `lr`, head at `head_lr` (default: `lr`)."""
    backbone, head = model.param_groups()
    return torch.optim.AdamW([
        {"params": backbone, "lr": lr, "name": "backbone"},
        {"params": head, "lr": head_lr or lr, "name": "head"},
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
    """Mixup on the device (the VideoMAE recipe): one lambda per batch, soft targets summing to 1."""
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


def wrap_ddp(model: torch.nn.Module, env: Env) -> torch.nn.Module:
    if env.world_size == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[env.device.index] if env.device.type == "cuda" else None)


# --------------------------------------------------------------------------- one epoch

@dataclass(frozen=True)
class StepSettings:
    """How one batch becomes an update: accumulation, clipping, mixup, label smoothing."""

    accum: int = 1
    clip_grad: float = 1.0
    mixup_alpha: float = 0.0
    mixup_prob: float = 1.0
    label_smoothing: float = 0.0


@dataclass
class Optimization:
    """The optimizer, its schedule and the fp16 grad scaler of one training stage."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    settings: StepSettings = field(default_factory=StepSettings)

    def step(self, model: torch.nn.Module) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.settings.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()


@dataclass
class BatchDone:
    """What `train_steps` yields after each batch: the trainer's loop decides what to do with it
    (the tracker's preview of a first batch, the batch trace, a checkpoint, a stop)."""

    index: int  # 0-based position of this batch in the epoch
    ids: list[str]  # its clip ids
    video: torch.Tensor  # the batch as the loader gave it (before mixup): what the model sees
    stepped: bool  # an optimizer step ended with this batch
    last: bool  # the epoch's last batch
    info: dict  # the loader's per-clip extras (`vidact.data.batch.Batch.info`): frames, decoded...


def train_steps(model: torch.nn.Module, run: Callable, loader, opt: Optimization, env: Env,
                amp: torch.dtype | None, num_classes: int, progress, desc: str = "train") -> Iterator[BatchDone]:
    """One pass over the train loader (the rest of it after `progress`, for a resumed epoch),
    yielding after every batch. `progress` (a `vidact.checkpoint.EpochProgress`) is advanced in
    place: batches, clips, seconds, data wait, metric sums; `epoch_figures` reduces it."""
    model.train()
    p = progress
    steps_per_epoch = len(loader)
    start = time.perf_counter() - p.seconds
    bar = tqdm(total=steps_per_epoch, initial=p.batches, desc=desc, disable=not env.main or None,
               mininterval=1.0, leave=False)
    it = iter(loader)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            p.wait += time.perf_counter() - t0
            video, labels, ids = batch
            stepped = _train_batch(model, run, opt, env, amp, num_classes, video, labels, p, steps_per_epoch)
            p.batches += 1
            p.seconds = time.perf_counter() - start
            bar.update(1)
            yield BatchDone(p.batches - 1, ids, video, stepped, p.batches == steps_per_epoch,
                            getattr(batch, "info", {}))
    finally:
        bar.close()


def _train_batch(model: torch.nn.Module, run: Callable, opt: Optimization, env: Env, amp: torch.dtype | None,
                 num_classes: int, video: torch.Tensor, labels: torch.Tensor, p, steps_per_epoch: int) -> bool:
    """Forward and backward of one batch (gradients accumulated over ``accum`` batches, synced
    across ranks only on the last of them); an optimizer step when the accumulation is complete."""
    s = opt.settings
    video, target = mixup(video, labels, num_classes, s.mixup_alpha, s.mixup_prob)
    boundary = (p.batches + 1) % s.accum == 0 or p.batches + 1 == steps_per_epoch
    sync = contextlib.nullcontext() if boundary or env.world_size == 1 else model.no_sync()
    with sync:
        with torch.autocast(env.device.type, dtype=amp, enabled=amp is not None):
            logits = run(video)
            loss = soft_cross_entropy(logits, target, s.label_smoothing)
        opt.scaler.scale(loss / s.accum).backward()
    if boundary:
        opt.step(model)
    p.tracker.update(loss.detach(), logits.detach().float(), target)
    p.clips += video.shape[0]
    return boundary


def epoch_figures(progress, env: Env) -> dict:
    """An epoch's metrics reduced over ranks; clips/s summed, time and wait averaged over ranks."""
    metrics = progress.tracker.reduce(env.device).compute()
    counts = torch.tensor([progress.clips, progress.seconds, progress.wait], dtype=torch.float64, device=env.device)
    if env.world_size > 1:
        dist.all_reduce(counts)
        counts[1:] /= env.world_size
    return {"loss": metrics["loss"], "top1": metrics["top1"], "top5": metrics["top5"],
            "clips_per_s": float(counts[0] / max(counts[1], 1e-9)),
            "data_wait": float(counts[2] / max(counts[1], 1e-9))}


# --------------------------------------------------------------------------- inference

@dataclass
class Predictions:
    """Logits (views averaged), labels (-1: unlabeled) and ids of every clip this rank saw."""

    logits: torch.Tensor
    labels: torch.Tensor
    ids: list[str]


@torch.no_grad()
def _infer(run: Callable, loader, env: Env, amp: torch.dtype | None, desc: str,
           keep: Predictions | None) -> dict:
    tracker = MetricTracker()
    kept_logits, kept_labels = [], []
    for video, labels, ids in tqdm(loader, desc=desc, disable=not env.main or None, mininterval=1.0, leave=False):
        with torch.autocast(env.device.type, dtype=amp, enabled=amp is not None):
            if video.dim() == 6:  # (B, V, T, C, H, W): one forward over all views, logits averaged
                b, v = video.shape[:2]
                logits = average_views(run(video.flatten(0, 1)).float().view(b, v, -1))
            else:
                logits = run(video).float()
        labeled = labels >= 0
        if labeled.any():
            tracker.update(F.cross_entropy(logits[labeled], labels[labeled]), logits[labeled], labels[labeled])
        if keep is not None:
            kept_logits.append(logits.cpu())
            kept_labels.append(labels.cpu())
            keep.ids.extend(ids)
    if keep is not None and kept_logits:
        keep.logits, keep.labels = torch.cat(kept_logits), torch.cat(kept_labels)
    return tracker.reduce(env.device).compute()


def evaluate_model(run: Callable, loader, env: Env, amp: torch.dtype | None, desc: str = "eval") -> dict:
    """Loss/top-1/top-5 over a loader (multi-view batches: logits averaged over views),
    reduced over ranks."""
    return _infer(run, loader, env, amp, desc, None)


def predict_logits(run: Callable, loader, env: Env, amp: torch.dtype | None, num_classes: int,
                   desc: str = "predict") -> tuple[dict, Predictions]:
    """`evaluate_model`'s metrics and every clip's logits, labels and id; under DDP those of
    all ranks (each rank reads its own share of the clips)."""
    keep = Predictions(torch.empty(0, num_classes), torch.empty(0, dtype=torch.int64), [])
    metrics = _infer(run, loader, env, amp, desc, keep)
    if env.world_size > 1:
        shares: list = [None] * env.world_size
        dist.all_gather_object(shares, (keep.logits, keep.labels, keep.ids))
        keep = Predictions(torch.cat([s[0] for s in shares]), torch.cat([s[1] for s in shares]),
                           [i for s in shares for i in s[2]])
    return metrics, keep
