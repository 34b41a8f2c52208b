"""The trainer, evaluate and predict on real DALI CPU batches from synthetic shards."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CODECS, write_clip
from helpers import ROOT, TINY, log_rows, run_ok, train_cmd

from vidact import evaluate, predict, train
from vidact.clip.spec import ClipSpec
from vidact.models import NORM, create_model
from vidact.recipes import get_recipe, override
from vidact.shards import ShardSet
from vidact.synthetic import make_dataset


def test_recipes_hold_the_seed_hyper_parameters():
    vivit = get_recipe("vivit-progressive")
    assert (vivit.frames_per_clip, vivit.batch_size, vivit.weight_decay) == (32, 2, 1e-5)
    assert vivit.ratios == (0.1, 0.3, 0.5, 0.7, 0.9) and vivit.window == "middle"
    assert (vivit.stages[0].lr, vivit.stages[0].epochs) == (2e-4, 30)
    mae = get_recipe("videomae-2stage")
    assert (mae.frames_per_clip, mae.batch_size, mae.accum, mae.weight_decay) == (16, 8, 4, 0.05)
    s1, s2 = mae.stages
    assert (s1.lr, s1.warmup, s1.mixup_alpha, s1.label_smoothing) == (5e-5, 0.1, 0.8, 0.0)
    assert (s2.lr, s2.mixup_alpha, s2.label_smoothing) == (1e-6, 0.0, 0.1)
    vm = get_recipe("vit-mean")
    assert (vm.stages[0].lr, vm.stages[0].head_lr, vm.stages[0].epochs) == (1e-4, 5e-4, 4)
    assert (vm.batch_size, vm.accum, vm.preset) == (16, 4, "small")
    tweaked = override(mae, lr=1e-4, stage2_epochs=3, frames_per_clip=8)
    assert (tweaked.stages[0].lr, tweaked.stages[1].epochs, tweaked.frames_per_clip) == (1e-4, 3, 8)


# --------------------------------------------------------------------------- whole runs

@pytest.mark.slow
def test_progressive_run_writes_everything_and_skips_finished_ratios(synthetic_shards, tmp_path):
    out = tmp_path / "run"
    p = run_ok(train_cmd(synthetic_shards, out, "--epochs", "2", "--ratios", "0.3", "1.0", "--train-eval"))
    for r in ("0.3", "1"):
        folder = out / f"ratio_{r}"
        for name in ("best.pt", "last.pt", "log.csv", "summary.json", "curves.png"):
            assert (folder / name).is_file(), folder / name
        rows = log_rows(folder / "log.csv")
        assert [int(x["epoch"]) for x in rows] == [1, 2]
        assert all(float(x["clips_per_s"]) > 0 and 0 <= float(x["data_wait"]) <= 1 for x in rows)
        assert all(x["val_top1"] and x["train_eval_top1"] for x in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["ratios"]) == {"0.3", "1"}
    assert (out / "accuracy_vs_ratio.png").is_file()
    assert "ratio 0.3: best" in p.stdout
    again = run_ok(train_cmd(synthetic_shards, out, "--epochs", "2", "--ratios", "0.3", "1.0", "--train-eval"))
    assert "finished earlier, skipped" in again.stderr


@pytest.mark.slow
def test_resume_from_the_last_epoch_end_after_sigkill(synthetic_shards, tmp_path):
    """No mid-epoch checkpoints (no --save-every): a run killed in epoch 2 goes on from epoch 1's
    checkpoint, each epoch's steps counted once (test_resume covers mid-epoch resumes)."""
    out = tmp_path / "run"
    cmd = train_cmd(synthetic_shards, out, "--epochs", "3", "--ratios", "0.5", "--batch-size", "1", "--train-eval")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "ratio_0.5" / "log.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "ratio_0.5" / "last.pt").is_file():
            break  # epoch 1 is checkpointed: epoch 2 is under way
        time.sleep(0.05)
    assert proc.poll() is None, "run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [int(r["epoch"]) for r in log_rows(log)]
    assert 1 <= len(done) < 3 and done == list(range(1, len(done) + 1))
    assert not (out / "ratio_0.5" / "summary.json").exists()
    p = run_ok(cmd)
    assert "resuming" in p.stderr
    assert [int(r["epoch"]) for r in log_rows(log)] == [1, 2, 3]
    state = torch.load(out / "ratio_0.5" / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["stage_epoch"] == 3
    assert state["step"] == 3 * 12  # 12 train clips, batch 1, every epoch counted once


@pytest.mark.slow
def test_a_set_without_keyframe_tables_trains(tmp_path):
    """VP8 in WebM (no cut tables): loaded, each clip decoded from frame 0, which the run says once;
    the same make_shards run again with the default codec would mix formats: refused."""
    src, shards = tmp_path / "src", tmp_path / "vp8"
    make_dataset(src, classes=2, train_per_class=3, val_per_class=1, test_per_class=0, seed=4, progress=False)
    run_ok([sys.executable, "tools/make_shards.py", str(src), "--out", str(shards), "--codec", "vp8",
            "--short-side", "64", "--min-side", "0", "--workers", "1"])
    ss = ShardSet.open(shards)
    assert ss.video_ext == "webm" and ss.manifest["format"] == 1
    p = run_ok(train_cmd(shards, tmp_path / "run", "--epochs", "1", "--ratios", "1.0", "--no-tensorboard"))
    assert p.stderr.count("decoded from frame 0") == 1, p.stderr[-2000:]
    assert len(log_rows(tmp_path / "run" / "ratio_1" / "log.csv")) == 1
    assert not list((tmp_path / "run" / "ratio_1").glob("events.out.tfevents.*"))  # --no-tensorboard
    again = subprocess.run([sys.executable, "tools/make_shards.py", str(src), "--out", str(shards), "--short-side",
                            "64", "--min-side", "0", "--workers", "1"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode != 0 and "finished shards hold .webm clips, this run writes .ivf" in again.stderr
    assert ShardSet.open(shards).manifest["format"] == 1  # untouched


@pytest.mark.slow
def test_two_stage_hand_over(synthetic_shards, tmp_path):
    out = tmp_path / "run"
    p = run_ok(train_cmd(synthetic_shards, out, "--epochs", "2", "--stage2-epochs", "1", "--ratios", "1.0",
                         recipe="videomae-2stage"))
    rows = log_rows(out / "ratio_1" / "log.csv")
    assert [(int(r["epoch"]), int(r["stage"])) for r in rows] == [(1, 1), (2, 1), (3, 2)]
    assert float(rows[2]["lr"]) <= 1e-6  # stage 2's own learning rate
    assert "stage 2: starting from best.pt" in p.stderr
    state = torch.load(out / "ratio_1" / "last.pt", weights_only=True)
    assert state["stage"] == 1 and state["epoch"] == 3


@pytest.fixture(scope="module")
def one_epoch_run(synthetic_shards, tmp_path_factory) -> Path:
    """A finished one-epoch run (r = 1.0) of the demo recipe; tests that change it take a copy."""
    out = tmp_path_factory.mktemp("one_epoch") / "run"
    run_ok(train_cmd(synthetic_shards, out, "--epochs", "1", "--ratios", "1.0"))
    return out


@pytest.mark.slow
def test_evaluate_six_views_and_predict_csv(one_epoch_run, synthetic_shards, unlabeled_shards, tmp_path):
    ckpt = one_epoch_run / "ratio_1" / "best.pt"
    p = run_ok([sys.executable, "-m", "vidact.evaluate", "--ckpt", str(ckpt), "--shards", str(synthetic_shards),
                "--split", "val", "--views", "6", "--device", "cpu", "--out", str(tmp_path / "eval")])
    report = json.loads((tmp_path / "eval" / "eval_val_v6.json").read_text())
    assert report["views"] == 6 and report["count"] == 6 and 0 <= report["top1"] <= 1
    assert set(report["per_class"]) == set(json.loads((synthetic_shards / "manifest.json").read_text())["classes"])
    assert (tmp_path / "eval" / "eval_val_v6_confusion.png").is_file()
    assert json.loads(next(x for x in p.stdout.splitlines() if x.startswith("{")))["top1"] == report["top1"]
    sub = tmp_path / "submission.csv"
    run_ok([sys.executable, "-m", "vidact.predict", "--ckpt", str(ckpt), "--shards", str(unlabeled_shards),
            "--views", "6", "--device", "cpu", "--out", str(sub)])
    rows = list(csv.reader(sub.open()))
    assert rows[0] == ["id", "class"] and len(rows) == 7
    classes = json.loads((synthetic_shards / "manifest.json").read_text())["classes"]
    assert all(c in classes for _, c in rows[1:]) and len({i for i, _ in rows[1:]}) == 6

    # Sources whose stems collide (movie.avi/.mp4/.webm) still get one row each, told apart.
    src, shards = tmp_path / "colliding", tmp_path / "colliding_shards"
    for codec in ("mpeg4", "h264", "vp9"):
        write_clip(src / f"movie.{CODECS[codec][1]}", codec, width=64, height=48, num_frames=12)
    run_ok([sys.executable, "tools/make_shards.py", str(src), "--out", str(shards), "--layout", "unlabeled",
            "--min-side", "0", "--workers", "1"])
    run_ok([sys.executable, "-m", "vidact.predict", "--ckpt", str(ckpt), "--shards", str(shards), "--device",
            "cpu", "--out", str(sub)])
    ids = [i for i, _ in list(csv.reader(sub.open()))[1:]]
    assert sorted(ids) == ["movie_avi", "movie_mp4", "movie_webm"]


@pytest.mark.slow
def test_ddp_two_gloo_processes(synthetic_shards, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "vidact.train", "--recipe", "demo", "--shards", str(synthetic_shards), "--out", str(out),
           *TINY, "--epochs", "2", "--ratios", "1.0"]
    p = run_ok(cmd)
    rows = log_rows(out / "ratio_1" / "log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    state = torch.load(out / "ratio_1" / "last.pt", weights_only=True)
    # 12 train clips over 2 ranks at batch 2: 3 optimizer steps per epoch on each rank.
    assert state["step"] == 6
    assert p.stderr.count("ratio_1: 2 epochs done") == 0  # rank 0 writes, no resume


# --------------------------------------------------------------------------- bad input

def train_exit(argv: list[str]) -> int:
    """`vidact.train`'s exit status for `argv`, run in this process (argparse exits, the rest returns)."""
    try:
        return train.main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("flags,message", [
    (["--ratios", "0"], "ratio must be in (0, 1]"),
    (["--ratios", "1.5"], "ratio must be in (0, 1]"),
    (["--frames", "0"], "--frames must be a positive integer"),
    (["--eval-views", "4"], "views must be 1 or a multiple of 3"),
    (["--clips-per-video", "0"], "--clips-per-video must be a positive integer"),
    (["--clips-per-video", "3"], "--batch-size 2 is not a multiple of --clips-per-video 3"),
])
def test_bad_flags_fail_clearly(synthetic_shards, tmp_path, flags, message, capsys):
    assert train_exit(train_cmd(synthetic_shards, tmp_path / "o", *flags)[3:]) == 2
    err = capsys.readouterr().err
    assert message in err and not (tmp_path / "o").exists()


def test_missing_shards_fail_clearly(tmp_path, capsys):
    """A --shards folder that is not there, or is not a shard set: one line each, naming it, and
    nothing written where the run would have gone."""
    assert train_exit(train_cmd(tmp_path / "nope", tmp_path / "o")[3:]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope'}: no such folder" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert train_exit(train_cmd(tmp_path / "empty", tmp_path / "o")[3:]) == 2
    err = capsys.readouterr().err
    assert "not a shard set (no manifest.json); make one with vidact-shards" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_checkpoint_class_mismatch_and_corruption(one_epoch_run, synthetic_shards, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(one_epoch_run, out)
    # A shard set with other classes: evaluate refuses with a clear message.
    other = tmp_path / "other"
    shutil.copytree(synthetic_shards, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["classes"] = ["x", "y", "z"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert evaluate.main(["--ckpt", str(out / "ratio_1" / "best.pt"), "--shards", str(other), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "classes" in err and len(err.strip().splitlines()) == 1
    # Resuming into a run trained on other shards is refused (the run folder's recipe names them) ...
    (out / "ratio_1" / "summary.json").unlink()
    p = subprocess.run(train_cmd(other, out, "--epochs", "2", "--ratios", "1.0"), cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 2 and f"--shards '{synthetic_shards}' then, '{other}' now" in p.stderr, p.stderr[-2000:]
    # ... and so is a checkpoint of other classes, whatever the recipe says.
    recipe = json.loads((out / "recipe.json").read_text())
    (out / "recipe.json").write_text(json.dumps({**recipe, "shards": str(other)}))
    p = subprocess.run(train_cmd(other, out, "--epochs", "2", "--ratios", "1.0"), cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 2 and "classes" in p.stderr
    (out / "recipe.json").write_text(json.dumps(recipe))
    # A corrupt last.pt is reported, not silently replaced.
    last = out / "ratio_1" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    p = subprocess.run(train_cmd(synthetic_shards, out, "--epochs", "2", "--ratios", "1.0"), cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "corrupt checkpoint" in p.stderr and "last.pt" in p.stderr


def test_evaluate_and_predict_report_one_row_per_source(segmented_shards, tmp_path, capsys):
    shards, _ = segmented_shards
    torch.manual_seed(0)
    model = create_model("videomae", num_classes=2, preset="tiny", frames_per_clip=4, crop_size=32)
    spec = ClipSpec(frames_per_clip=4, crop_size=32, norm=NORM["videomae"])
    ckpt = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config, "epoch": 1, "best": {},
                "classes": ShardSet.open(shards).classes, "spec": spec.__dict__}, ckpt)
    common = ["--ckpt", str(ckpt), "--shards", str(shards), "--split", "train", "--device", "cpu",
              "--dali-threads", "1"]
    assert evaluate.main([*common, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval_train_v1.json").read_text())
    assert report["unit"] == "source" and report["segments"] == 4 and report["count"] == 2
    assert sum(c["count"] for c in report["per_class"].values()) == 2 == sum(map(sum, report["confusion"]))
    assert '"unit": "source"' in capsys.readouterr().out
    assert predict.main([*common, "--out", str(tmp_path / "sub.csv")]) == 0
    rows = list(csv.reader((tmp_path / "sub.csv").open()))
    assert [r[0] for r in rows] == ["id", "long", "short"]  # source ids, once each
    assert "2 source videos (4 segments)" in capsys.readouterr().out
