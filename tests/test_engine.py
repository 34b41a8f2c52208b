"""The engine on its own: one optimizer step per family on real DALI batches, mixup, label
smoothing, the schedule, the compile fallback, and the epoch generator the trainer drives."""

from __future__ import annotations

import pytest
import torch

from vidact.checkpoint import EpochProgress
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.engine import (
    CompiledOrEager,
    Env,
    Optimization,
    StepSettings,
    build_optimizer,
    cosine_with_warmup,
    epoch_figures,
    mixup,
    soft_cross_entropy,
    train_steps,
)
from vidact.models import NORM, create_model

CPU = Env(0, 1, torch.device("cpu"))


@pytest.mark.parametrize("family", ["videomae", "vivit", "vit-mean"])
def test_one_optimizer_step_per_family_on_dali_batches(synthetic_shards, family):
    spec = ClipSpec(frames_per_clip=4, crop_size=32, norm=NORM[family])
    loader = build_loader(synthetic_shards, "train", "dali", "train", spec, batch_size=3, device="cpu", workers=2)
    video, labels, ids = next(iter(loader))
    assert video.shape == (3, 4, 3, 32, 32) and len(ids) == 3
    torch.manual_seed(0)
    model = create_model(family, num_classes=3, preset="tiny", frames_per_clip=4, crop_size=32)
    opt = build_optimizer(model, lr=1e-3, head_lr=5e-3, weight_decay=0.05)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 5e-3]
    before = [p.detach().clone() for p in model.parameters()]
    loss = soft_cross_entropy(model(video), torch.nn.functional.one_hot(labels, 3).float())
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert changed == len(before)


def test_mixup_targets_are_convex_mixtures():
    torch.manual_seed(0)
    video = torch.randn(6, 2, 3, 4, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, target = mixup(video, labels, 3, alpha=0.8, prob=1.0)
    torch.testing.assert_close(target.sum(1), torch.ones(6))
    assert (target >= 0).all() and (target.max(1).values < 1).any()  # really mixed
    # The video is mixed with the same weights as the targets: recover lambda from one pair.
    plain, onehot = mixup(video, labels, 3, alpha=0.8, prob=0.0)
    assert torch.equal(plain, video) and torch.equal(onehot, torch.nn.functional.one_hot(labels, 3).float())


def test_label_smoothing_matches_torch():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 2, 3])
    ours = soft_cross_entropy(logits, torch.nn.functional.one_hot(labels, 4).float(), 0.1)
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1))


def test_cosine_schedule_with_warmup_values():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, total_steps=100, warmup=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warmup over 10 steps
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.5)  # cosine half way
    assert lrs[99] < 0.001 and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_compile_failure_falls_back_to_eager_with_a_warning(caplog):

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    model = torch.nn.Linear(4, 2)
    run = CompiledOrEager(model, enabled=True, backend=broken_backend)
    x = torch.randn(3, 4)
    with caplog.at_level("WARNING", logger="vidact.train"):
        out = run(x)
    torch.testing.assert_close(out, model(x))
    assert "falling back to eager" in caplog.text and run.fn is model


class Linear(torch.nn.Module):
    """The smallest model `train_steps` takes: a linear head on mean pixels, with param groups."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.head = torch.nn.Linear(3, classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.head(video.mean(dim=(1, 3, 4)))

    def param_groups(self):
        return [], list(self.head.parameters())


def batches(n: int, size: int = 2) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 2, 3, 4, 4, generator=g), torch.tensor([i % 3, (i + 1) % 3][:size]),
             [f"c{i}_{j}" for j in range(size)]) for i in range(n)]


class Resumed:
    """A resumed loader: its length is the epoch's, its batches the rest after `start`."""

    def __init__(self, data: list, start: int):
        self.data, self.start = data, start

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.data[self.start:])


def optimization(model: torch.nn.Module, accum: int) -> Optimization:
    opt = build_optimizer(model, 0.1, None, 0.0)
    return Optimization(opt, cosine_with_warmup(opt, 10, 0.0), torch.amp.GradScaler("cpu", enabled=False),
                        StepSettings(accum=accum))


def test_train_steps_yields_every_batch_and_steps_on_accumulation_boundaries():
    torch.manual_seed(0)
    model, data = Linear(), batches(5)
    opt = optimization(model, accum=2)
    progress = EpochProgress()
    seen, weights = [], []
    for done in train_steps(model, model, data, opt, CPU, None, 3, progress):
        seen.append((done.index, done.ids, done.stepped, done.last))
        weights.append(model.head.weight.detach().clone())
        assert torch.equal(done.video, data[done.index][0])  # the batch as loaded, before mixup
    assert seen == [(i, data[i][2], i in (1, 3, 4), i == 4) for i in range(5)]  # accum 2; the last batch steps
    moved = [not torch.equal(a, b) for a, b in zip(weights, weights[1:])]
    assert moved == [True, False, True, True]  # weights change only after an optimizer step
    assert (progress.batches, progress.clips) == (5, 10) and progress.seconds > 0
    figures = epoch_figures(progress, CPU)
    assert 0.0 <= figures["top1"] <= 1.0 and figures["clips_per_s"] > 0 and figures["loss"] > 0


def test_a_resumed_epoch_continues_the_counts_and_figures_of_an_unbroken_one():
    """Stopped after 3 batches and resumed from its progress, an epoch reports what an unbroken
    one reports: the same loss, accuracy and clip count."""
    def run(stop_after: int | None) -> dict:
        torch.manual_seed(0)
        model, data = Linear(), batches(6)
        opt, progress = optimization(model, accum=1), EpochProgress()
        steps = train_steps(model, model, data, opt, CPU, None, 3, progress)
        for done in steps:
            if done.index + 1 == stop_after:
                steps.close()  # the generator ends where the trainer's loop leaves it
                rest = train_steps(model, model, Resumed(data, stop_after), opt, CPU, None, 3, progress)
                assert [(d.index, d.last) for d in rest] == [(3, False), (4, False), (5, True)]
                break
        return {**epoch_figures(progress, CPU), "clips": progress.clips, "batches": progress.batches}

    whole, resumed = run(None), run(3)
    for key in ("loss", "top1", "top5", "clips", "batches"):
        assert resumed[key] == pytest.approx(whole[key]), key
    assert whole["batches"] == 6
