"""Checkpoints on their own: where a run stands (`RunState`), how far an epoch got
(`EpochProgress`), and `Checkpointer` writing and reading them back as a resumed run needs."""

from __future__ import annotations

import pytest
import torch

from vidact.checkpoint import BEST, LAST, Checkpointer, CheckpointError, EpochProgress, RunState


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.config = {"family": "test", "num_classes": 3}

    def forward(self, x):
        return self.fc(x)


def trained(seed: int) -> tuple[Tiny, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1))
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    return model, opt, sched


def progress_after(batches: int) -> EpochProgress:
    p = EpochProgress(batches=batches, clips=2 * batches, seconds=1.5, wait=0.25)
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    p.tracker.update(torch.tensor(0.7), logits, torch.nn.functional.one_hot(torch.tensor([0, 1]), 3).float())
    return p


def test_run_state_counts_epochs_keeps_the_best_and_stops_early():
    state = RunState.fresh("val")
    assert state.end_epoch(steps=5, top1=0.4, top5=0.9, early_stop=2)
    assert not state.end_epoch(steps=5, top1=0.3, top5=0.9, early_stop=2) and not state.stage_done
    assert not state.end_epoch(steps=5, top1=0.4, top5=1.0, early_stop=2)  # a tie is no gain
    assert (state.epoch, state.step, state.patience, state.stage_done, state.stopped_early) == (3, 15, 2, True, True)
    assert state.best == {"val_top1": 0.4, "val_top5": 0.9, "epoch": 1, "stage": 1, "metric": "val"}


def test_a_mid_epoch_checkpoint_restores_weights_optimizer_and_progress(tmp_path):
    model, opt, sched = trained(0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = RunState.fresh("val")
    state.end_epoch(steps=3, top1=0.5, top5=1.0, early_stop=0)
    writer = Checkpointer(tmp_path, ["a", "b", "c"], torch.device("cpu"))
    writer.save(model, state, {"ratio": 0.5}, opt, sched, scaler, improved=False, progress=progress_after(4))
    assert (tmp_path / LAST).is_file() and not (tmp_path / BEST).exists()  # best.pt only when improved

    fresh, fresh_opt, fresh_sched = trained(1)
    reader = Checkpointer(tmp_path, ["a", "b", "c"], torch.device("cpu"))
    resumed = reader.resume(fresh, metric="val")
    assert (resumed.epoch, resumed.step, resumed.batch) == (1, 3, 4)  # inside epoch 2, after batch 4
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    progress = reader.restore(fresh_opt, fresh_sched, scaler)
    assert (progress.batches, progress.clips, progress.seconds, progress.wait) == (4, 8, 1.5, 0.25)
    assert progress.tracker.compute() == pytest.approx(progress_after(4).tracker.compute())
    assert fresh_sched.state_dict()["last_epoch"] == sched.state_dict()["last_epoch"] == 3
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert reader.restore(fresh_opt, fresh_sched, scaler) is None  # once only


def test_a_checkpoint_of_other_classes_or_settings_is_refused(tmp_path):
    model, opt, sched = trained(0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    Checkpointer(tmp_path, ["a", "b", "c"], torch.device("cpu")).save(
        model, RunState.fresh("val"), {}, opt, sched, scaler, improved=True)
    assert (tmp_path / BEST).is_file()
    with pytest.raises(CheckpointError, match="trained on 3 classes, the shards have 2"):
        Checkpointer(tmp_path, ["a", "b"], torch.device("cpu")).resume(Tiny(), "val")
    other = Tiny()
    other.config = {**other.config, "family": "other"}
    with pytest.raises(CheckpointError, match=r"model settings differ from this run \(family\)"):
        Checkpointer(tmp_path, ["a", "b", "c"], torch.device("cpu")).resume(other, "val")


def test_a_missing_or_truncated_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Checkpointer(tmp_path, ["a"], torch.device("cpu")).load_best(Tiny())
    (tmp_path / LAST).write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(CheckpointError, match="corrupt checkpoint.*delete it to start over"):
        Checkpointer(tmp_path, ["a"], torch.device("cpu")).resume(Tiny(), "val")


