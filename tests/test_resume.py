"""Exact mid-epoch resume: a run killed (SIGKILL) or stopped (SIGTERM) inside an epoch and run
again trains on exactly the clips, in the same order, that an uninterrupted run trains on."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from helpers import log_rows, run_ok, start, train_cmd, wait_for_lines

# 12 train clips, batch 1: 12 optimizer steps an epoch, a checkpoint after each.
ARGS = ("--epochs", "2", "--ratios", "0.5", "--batch-size", "1", "--save-every", "1", "--no-tensorboard")


def trace(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def seen(path) -> list[tuple[int, int, tuple[str, ...]]]:
    """(epoch, batch, ids) in the order trained, a batch redone after a kill counted once."""
    last = {}
    for t in trace(path):
        key = (t["epoch"], t["batch"])
        if key in last:  # trained before the kill, lost with it, trained again: the same clips
            assert last[key] == tuple(t["ids"]), key
        last[key] = tuple(t["ids"])
    return [(e, b, ids) for (e, b), ids in sorted(last.items())]


@pytest.fixture(scope="module", params=["dali", "torch"])
def straight(request, synthetic_shards, tmp_path_factory):
    """An uninterrupted run's trace and log, per loader."""
    out = tmp_path_factory.mktemp(f"straight_{request.param}")
    run_ok(train_cmd(synthetic_shards, out / "run", *ARGS, "--loader", request.param,
                     "--trace-batches", str(out / "trace.jsonl")))
    lines = trace(out / "trace.jsonl")
    gop = json.loads((synthetic_shards / "manifest.json").read_text())["encode"]["gop"]
    assert len(lines) == 24
    for t in lines:  # one clip of T = 4 frames, and what the decoder decoded for it: a GOP per frame at most
        assert t["kept"] == 4 and 1 <= t["decoded"] <= 4 * gop, t
    return request.param, seen(out / "trace.jsonl"), log_rows(out / "run" / "ratio_0.5" / "log.csv")


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_at_the_next_batch(straight, synthetic_shards, tmp_path):
    loader, expected, expected_log = straight
    path = tmp_path / "trace.jsonl"
    cmd = train_cmd(synthetic_shards, tmp_path / "run", *ARGS, "--loader", loader, "--trace-batches", str(path))
    proc = start(cmd)
    wait_for_lines(proc, path, 12 + 5)  # inside epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(tmp_path / "run" / "ratio_0.5" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["batch"] >= 4
    p = run_ok(cmd)
    assert "resuming" in p.stderr
    assert seen(path) == expected
    rows = log_rows(tmp_path / "run" / "ratio_0.5" / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert torch.load(tmp_path / "run" / "ratio_0.5" / "last.pt", weights_only=True)["step"] == 2 * 12  # once each
    for got, want in zip(rows, expected_log):  # the same batches, the same updates
        assert float(got["train_loss"]) == pytest.approx(float(want["train_loss"]), rel=1e-5)
        assert got["val_top1"] == want["val_top1"]


@pytest.mark.slow
def test_sigterm_checkpoints_inside_the_epoch_and_exits_0(straight, synthetic_shards, tmp_path):
    loader, expected, _ = straight
    if loader != "dali":
        pytest.skip("one loader is enough for the signal path")
    path = tmp_path / "trace.jsonl"
    cmd = train_cmd(synthetic_shards, tmp_path / "run", *ARGS, "--loader", loader, "--trace-batches", str(path))
    proc = start(cmd)
    wait_for_lines(proc, path, 5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped in epoch 1 after batch" in err and "run the same command to resume" in err
    state = torch.load(tmp_path / "run" / "ratio_0.5" / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and 5 <= state["batch"] < 12
    run_ok(cmd)
    assert seen(path) == expected


@pytest.mark.slow
def test_k_clips_per_video_count_steps_and_resume_exactly(synthetic_shards, tmp_path):
    """--clips-per-video 2 with batches of 2 clips: a batch is one video's two clips, an epoch 12
    batches (every video once, two clips each), the schedule's steps counted so; killed inside
    epoch 2, the run resumes with exactly the batches of an uninterrupted run."""
    args = (*ARGS, "--clips-per-video", "2", "--batch-size", "2")
    runs = {}
    for name in ("straight", "killed"):
        path = tmp_path / f"{name}.jsonl"
        cmd = train_cmd(synthetic_shards, tmp_path / name, *args, "--trace-batches", str(path))
        if name == "killed":
            proc = start(cmd)
            wait_for_lines(proc, path, 12 + 5)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        p = run_ok(cmd)
        runs[name] = seen(path)
        state = torch.load(tmp_path / name / "ratio_0.5" / "last.pt", weights_only=True)
        assert state["step"] == 2 * 12 and state["recipe"]["clips_per_video"] == 2
    assert "2 clips per video read: an epoch is 12 batches of 2 clips (1 videos each)" in p.stderr
    assert runs["killed"] == runs["straight"] and len(runs["straight"]) == 24
    assert all(ids[0] == ids[1] and len(ids) == 2 for _, _, ids in runs["straight"])
    by_epoch = [sorted(ids[0] for e, _, ids in runs["straight"] if e == epoch) for epoch in (1, 2)]
    assert by_epoch[0] == by_epoch[1] and len(set(by_epoch[0])) == 12  # every video once an epoch
    lines = trace(tmp_path / "straight.jsonl")
    assert all(t["kept"] == 8 for t in lines)  # two clips of T = 4
