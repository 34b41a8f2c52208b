"""A shard that goes bad in the middle of a training run: the run stops with one line naming
the shard and the sample, the checkpoints stay whole, and once the shard is put back the same
command resumes."""

from __future__ import annotations

import shutil

import pytest
import torch
from helpers import log_rows, run_ok, start, train_cmd, wait_for_lines

pytestmark = pytest.mark.slow


def garble_first_video(tar, idx) -> str:
    """Overwrites the bytes of the first sample's video in place (the tar and its index stay
    valid, the clip does not decode); returns the sample's key."""
    fields = idx.read_text().splitlines()[1].split()
    ext, offset, size, name = fields[0], int(fields[1]), int(fields[2]), fields[3]
    assert ext == "ivf", fields  # the video member comes first (make_shards writes it first)
    with tar.open("r+b") as f:
        f.seek(offset)
        f.write(bytes((i * 37 + 11) % 256 for i in range(size)))
    return name.partition(".")[0]


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_a_shard_that_goes_bad_mid_run_stops_it_naming_the_sample(loader, synthetic_shards, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(synthetic_shards, shards)
    out, trace = tmp_path / "run", tmp_path / "trace.jsonl"
    cmd = train_cmd(shards, out, "--epochs", "3", "--ratios", "1.0", "--loader", loader, "--batch-size", "1",
                    "--no-tensorboard", "--trace-batches", str(trace))
    tar = next(shards.glob("train-*.tar"))
    good = tar.read_bytes()
    proc = start(cmd)
    wait_for_lines(proc, trace, 3)  # epoch 1 under way: the shard goes bad under the run
    key = garble_first_video(tar, tar.with_suffix(".idx"))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err[-2000:]
    line = [x for x in err.splitlines() if x.startswith("python -m vidact.train:")]
    assert len(line) == 1 and tar.name in line[0] and key in line[0], err[-2000:]
    last = out / "ratio_1" / "last.pt"
    had_checkpoint = last.exists()
    if had_checkpoint:  # whatever epochs finished are checkpointed whole
        assert torch.load(last, weights_only=True)["epoch"] >= 1

    tar.write_bytes(good)  # the shard replaced: the same command goes on
    again = run_ok(cmd)
    assert ("resuming" in again.stderr) == had_checkpoint
    assert [r["epoch"] for r in log_rows(out / "ratio_1" / "log.csv")] == ["1", "2", "3"]
