"""End to end: one model trained by `vidact.engine.train_steps`, the trainer's own epoch loop
(autocast, clipping, AdamW, cosine schedule), on the ceiling (replayed batches already on the
device), the DALI loader and the reference loader, from the same initial weights."""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vidact.bench.measure import Bench, Config, loader_pipelines, loader_plan
from vidact.bench.timing import ListLoader, Take, batch_stream, sig, synchronizer, take_clones
from vidact.checkpoint import EpochProgress
from vidact.clip.spec import dtype_name
from vidact.data import build_loader
from vidact.engine import (
    CompiledOrEager,
    Env,
    Optimization,
    StepSettings,
    amp_dtype,
    build_optimizer,
    cosine_with_warmup,
    epoch_figures,
    train_steps,
)
from vidact.models import create_model

log = logging.getLogger("vidact.bench")

CEILING_BATCHES = 8  # distinct batches the ceiling replays
VARIANTS = ("ceiling", "dali", "torch")
LR = 1e-4  # backbone and head
WEIGHT_DECAY = 0.05
STEPS = StepSettings(accum=1, clip_grad=1.0)  # one batch is one optimizer step; no mixup, no smoothing

# A loader for one epoch of `train_steps` (its length settable through ``.n``) and what closes it.
LoaderFactory = Callable[[], tuple[Any, Callable[[], None]]]


@dataclass
class Trainer:
    """The model of one configuration and its initial weights: every variant starts from them."""

    bench: Bench
    cfg: Config
    num_classes: int
    env: Env
    amp: torch.dtype | None
    model: torch.nn.Module
    init_state: dict

    def optimization(self) -> Optimization:
        """AdamW and a cosine schedule over every step `measure` takes (no warmup), as in training."""
        a = self.bench.args
        optimizer = build_optimizer(self.model, LR, None, WEIGHT_DECAY)
        scheduler = cosine_with_warmup(optimizer, a.warmup + a.repeats * a.batches + 1, 0.0)
        scaler = torch.amp.GradScaler(self.env.device.type, enabled=self.amp == torch.float16)
        return Optimization(optimizer, scheduler, scaler, STEPS)

    def measure(self, loader_factory: LoaderFactory, variant: str, timed: bool = True) -> dict:
        """`--warmup` steps, then `--repeats` timed epochs of `--batches` steps (untimed:
        only max(2, `--warmup`) steps, to warm the model up)."""
        a = self.bench.args
        self.model.load_state_dict(self.init_state)
        opt = self.optimization()
        run = CompiledOrEager(self.model, a.compile)
        sync = synchronizer(self.env.device)
        loader, close = loader_factory()
        steps, waits = [], []
        try:
            def epoch(n: int) -> dict:
                loader.n = n
                progress = EpochProgress()
                for _ in train_steps(self.model, run, loader, opt, self.env, self.amp, self.num_classes, progress,
                                     f"bench {variant}"):
                    pass
                return epoch_figures(progress, self.env)

            if not timed:
                epoch(max(2, a.warmup))
                return {}
            if a.warmup:
                epoch(a.warmup)
            for _ in range(a.repeats):
                sync()
                t0 = time.perf_counter()
                result = epoch(a.batches)
                sync()
                steps.append(a.batches / (time.perf_counter() - t0))
                waits.append(result["data_wait"])
        finally:
            close()
        sps = statistics.median(steps)
        return {"steps_per_s": sig(sps), "clips_per_s": sig(sps * self.cfg.batch),
                "frames_per_s": sig(sps * self.cfg.batch * self.cfg.frames),
                "data_wait": sig(statistics.median(waits)), "runs": [sig(s) for s in steps]}


def run_end_to_end(bench: Bench, cfg: Config, num_classes: int) -> None:
    """The end-to-end rows of `cfg` (ceiling, dali, torch), each compared with the ceiling and
    with the reference loader."""
    a = bench.args
    env = Env(0, 1, bench.device)
    amp = amp_dtype(env, a.amp)
    base = {**cfg.row(), "model": a.model, "model_size": a.model_size, "amp": dtype_name(amp) if amp else None,
            "compile": bool(a.compile), "torch_threads": torch.get_num_threads()}
    trainer = build_trainer(bench, cfg, num_classes, env, amp, base)
    if trainer is None:
        return
    rows = measure_variants(trainer, base)
    trainer = None  # frees the model before the next configuration builds its own
    gc.collect()
    if bench.device.type == "cuda":
        torch.cuda.empty_cache()
    speed = {r["variant"]: r.get("steps_per_s") for r in rows}
    for r in rows:
        r.setdefault("steps_per_s", None)
        own = r["steps_per_s"]
        r["vs_ceiling"] = sig(own / speed["ceiling"]) if own and speed.get("ceiling") else None
        r["vs_reference"] = sig(own / speed["torch"]) if own and speed.get("torch") else None
        if own:
            log.info("%s e2e %s: %.2f steps/s, data wait %.0f%%", cfg, r["variant"], own, 100 * r["data_wait"])
    bench.e2e_rows += rows


def build_trainer(bench: Bench, cfg: Config, num_classes: int, env: Env, amp: torch.dtype | None,
                  base: dict) -> Trainer | None:
    """The seeded model of `cfg`; None (and an error row per variant) when it cannot be built."""
    a = bench.args
    try:
        torch.manual_seed(a.seed)
        model = create_model(a.model, num_classes=num_classes, preset=a.model_size, frames_per_clip=cfg.frames,
                             crop_size=cfg.size).to(bench.device)
        init_state = copy.deepcopy(model.state_dict())
    except Exception as e:  # noqa: BLE001
        bench.failed += 1
        log.error("%s: model failed: %s", cfg, e)
        bench.e2e_rows += [{**base, "variant": v, "error": f"{e.__class__.__name__}: {e}"} for v in VARIANTS]
        return None
    return Trainer(bench, cfg, num_classes, env, amp, model, init_state)


def measure_variants(trainer: Trainer, base: dict) -> list[dict]:
    """The ceiling, dali and torch rows, in that order; the DALI loader is gone before the
    reference loader starts."""
    bench, cfg, a = trainer.bench, trainer.cfg, trainer.bench.args
    dali_loader, stream, ceiling, dali_problem = dali_batches(bench, cfg)
    ceiling_from = "dali"
    if not ceiling:
        # No DALI batches: the ceiling replays the reference loader's (same spec, same tensors).
        ceiling_from, ceiling = "torch", reference_batches(bench, cfg)
    rows = [ceiling_row(trainer, ceiling, {**base, "variant": "ceiling", "loader": "none",
                                           "source_loader": ceiling_from, "device": bench.device.type,
                                           "workers": None})]
    dali_base = {**base, "variant": "dali", "loader": "dali", "device": bench.device.type, "workers": a.dali_threads,
                 "pipelines": max(a.dali_pipelines), **loader_plan(dali_loader)}
    if stream is not None:
        rows.append(bench.guarded(f"{cfg} e2e dali", lambda: trainer.measure(
            lambda: (Take(stream, a.batches), lambda: None), "dali"), dali_base))
        stream.close()
    else:
        rows.append({**dali_base, **dali_problem})
    ceiling.clear()
    del dali_loader  # frees the DALI pipeline (threads, buffers) before the reference loader starts
    gc.collect()

    def reference() -> tuple[Any, Callable[[], None]]:
        s = batch_stream(build_loader(cfg.source.path, cfg.source.split, loader="torch", mode="train",
                                      spec=cfg.spec, batch_size=cfg.batch, device=bench.device, seed=a.seed,
                                      workers=max(a.workers)))
        return Take(s, a.batches), s.close

    rows.append(bench.guarded(f"{cfg} e2e torch", lambda: trainer.measure(reference, "torch"),
                              {**base, "variant": "torch", "loader": "torch", "device": bench.device.type,
                               "workers": max(a.workers)}))
    return rows


def ceiling_row(trainer: Trainer, ceiling: list, base: dict) -> dict:
    """The model's own speed on replayed batches, after its untimed warm-up."""
    bench, a = trainer.bench, trainer.bench.args
    if not ceiling:
        bench.failed += 1
        return {**base, "error": "no loader produced batches for the ceiling (see log)"}
    # The model's own warm-up (first steps allocate, autograd builds its graph), untimed and
    # before every variant, so the first variant measured is not penalized.
    with contextlib.suppress(Exception):
        trainer.measure(lambda: (ListLoader(ceiling, 1), lambda: None), "model warm-up", timed=False)
    return bench.guarded(f"{trainer.cfg} e2e ceiling", lambda: trainer.measure(
        lambda: (ListLoader(ceiling, a.batches), lambda: None), "ceiling"), base)


def dali_batches(bench: Bench, cfg: Config) -> tuple[Any, Iterator[Any] | None, list, dict[str, str]]:
    """The DALI train loader on the benchmark device, its batch stream and the ceiling's batches
    cloned from it; or no stream and why (``error`` or ``skipped``)."""
    a = bench.args
    if bench.device.type != "cuda" and not bench.dali_cpu_ok(cfg.source):
        return None, None, [], {"skipped": f"codec {cfg.source.codec} has no DALI CPU decoder"}
    loader = None
    try:
        loader = build_loader(cfg.source.path, cfg.source.split, loader="dali", mode="train", spec=cfg.spec,
                              batch_size=cfg.batch, device=bench.device, seed=a.seed, workers=a.dali_threads,
                              dali_pipelines=loader_pipelines(max(a.dali_pipelines)))
        stream = batch_stream(loader)
        return loader, stream, take_clones(stream, min(CEILING_BATCHES, a.batches)), {}
    except Exception as e:  # noqa: BLE001
        bench.failed += 1
        log.error("%s: DALI loader failed: %s", cfg, e)
        return loader, None, [], {"error": f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def reference_batches(bench: Bench, cfg: Config) -> list:
    """The ceiling's batches cloned from the reference loader (the most workers); none if it fails."""
    a = bench.args
    with contextlib.suppress(Exception):
        stream = batch_stream(build_loader(cfg.source.path, cfg.source.split, loader="torch", mode="train",
                                           spec=cfg.spec, batch_size=cfg.batch, device=bench.device, seed=a.seed,
                                           workers=max(a.workers)))
        batches = take_clones(stream, min(CEILING_BATCHES, a.batches))
        stream.close()
        return batches
    return []
