"""What a new user hits in the first hour, each with the command, its exit status, the one line it
prints and what it leaves on disk: a run folder that remembers what it ran, a codec no CPU loader
can decode, output places that cannot be written, files readable by other accounts, what each
command wrote listed, and no debris from a failed command."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, log_rows, run_ok, train_cmd

from vidact import evaluate, export, predict, train
from vidact.data import build_loader
from vidact.models import create_model
from vidact.shards import ShardError, ShardSet

pytestmark = pytest.mark.slow


def exit_of(main, argv: list[str]) -> int:
    """A command's exit status, run in this process (argparse exits, the rest returns)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def one_error_line(capsys) -> str:
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip() and not x.startswith(("WARNING", "INFO"))]
    err = [x for x in err if ": " in x and not x[:2].isdigit()]
    assert len(err) == 1, err
    return err[0]


def test_a_run_folder_remembers_what_it_ran(synthetic_shards, tmp_path):
    """Run again in a finished run's folder: more epochs extend it from its last checkpoint (said
    in one line, recipe.json saying the new count); other settings are refused in one line naming
    them and the ways out, touching nothing; --restart starts it over with them."""
    out = tmp_path / "run"
    base = ["--epochs", "1", "--ratios", "1.0", "--no-tensorboard"]
    run_ok(train_cmd(synthetic_shards, out, *base))
    longer = run_ok(train_cmd(synthetic_shards, out, *base, "--epochs", "2"))
    assert "extending the last stage from 1 to 2 epochs" in longer.stderr
    assert [r["epoch"] for r in log_rows(out / "ratio_1" / "log.csv")] == ["1", "2"]
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["stages"][0]["epochs"] == 2 and recipe["frames"] == 4
    shorter = run_ok(train_cmd(synthetic_shards, out, *base))  # fewer epochs than trained: kept as it is
    assert "trained for 2 epochs in its last stage (this command asks 1): kept as it is" in shorter.stderr
    assert json.loads((out / "recipe.json").read_text()) == recipe and len(log_rows(out / "ratio_1" / "log.csv")) == 2
    for flags, named in ((["--frames", "8"], "--frames 4 then, 8 now"), (["--lr", "0.1"], "--lr 0.002 then, 0.1 now")):
        p = subprocess.run(train_cmd(synthetic_shards, out, *base, "--epochs", "2", *flags), cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        lines = [x for x in p.stderr.splitlines() if x.startswith("python -m vidact.train:")]
        assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
        assert named in lines[0] and "use another --out, or --restart" in lines[0], lines[0]
        assert json.loads((out / "recipe.json").read_text()) == recipe  # nothing touched
    again = run_ok(train_cmd(synthetic_shards, out, *base, "--lr", "0.001", "--restart"))
    assert "--restart" in again.stderr
    assert json.loads((out / "recipe.json").read_text())["stages"][0]["lr"] == 0.001
    assert [r["epoch"] for r in log_rows(out / "ratio_1" / "log.csv")] == ["1"]  # a new run
    assert f"-> {out / 'recipe.json'}" in again.stdout and f"-> {out / 'ratio_1'}" in again.stdout


def test_a_codec_no_cpu_decodes_is_refused_by_the_cpu_loader(tmp_path):
    """H.264 shards (--gpu-only): the DALI loader on a CPU refuses them in one line before a
    pipeline starts, naming the manifest and the ways out."""
    from conftest import write_clip

    for label in ("a", "b"):
        write_clip(tmp_path / "src" / label / f"{label}.avi", "mpeg4", num_frames=12)
    run_ok([sys.executable, "-m", "vidact.prep.make_shards", str(tmp_path / "src"), "--out", str(tmp_path / "s"),
            "--codec", "h264", "--gpu-only", "--val-fraction", "0", "--workers", "1", "--min-side", "0"])
    with pytest.raises(ShardError, match=r"manifest.json: codec h264: DALI's CPU decoder takes .* --loader torch") as e:
        build_loader(tmp_path / "s", "train", "dali", "eval", device="cpu")
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, synthetic_shards):
    model = create_model("vit-mean", num_classes=len(ShardSet.open(synthetic_shards).classes), preset="tiny",
                         frames_per_clip=4, crop_size=32)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    spec = {"frames_per_clip": 4, "crop_size": 32, "norm": "half", "dtype": "fp32", "ratio": 1.0,
            "window": "middle"}
    torch.save({"model": model.state_dict(), "model_config": model.config, "epoch": 1, "best": {},
                "classes": ShardSet.open(synthetic_shards).classes, "spec": spec}, path)
    return path


def test_an_output_place_that_cannot_be_written_is_refused_before_any_work(synthetic_shards, ckpt, tmp_path,
                                                                           capsys):
    """Under /proc or inside a file: every command says so in one line, exit 2, before reading
    anything, and leaves nothing behind."""
    (tmp_path / "afile").write_text("x")
    shards = str(synthetic_shards)
    for place in ("/proc/vidact-out", str(tmp_path / "afile" / "out")):
        commands = [
            (train.main, ["--shards", shards, "--out", place, "--model-size", "tiny", "--device", "cpu"]),
            (evaluate.main, ["--ckpt", str(ckpt), "--shards", shards, "--out", place, "--device", "cpu"]),
            (predict.main, ["--ckpt", str(ckpt), "--shards", shards, "--split", "val", "--out", f"{place}/p.csv",
                            "--device", "cpu"]),
            (export.main, ["--ckpt", str(ckpt), "--out", place]),
        ]
        for main, argv in commands:
            assert exit_of(main, argv) == 2, (main.__module__, place)
            line = one_error_line(capsys)
            assert place.split("/out")[0] in line and ("takes no new files" in line or "is a file" in line), line
    assert not (tmp_path / "afile" / "out").exists() and (tmp_path / "afile").read_text() == "x"


def test_exported_files_are_readable_by_others(ckpt, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert exit_of(export.main, ["--ckpt", str(ckpt), "--out", str(tmp_path / "exp")]) == 0
    finally:
        os.umask(old)
    assert f"-> {tmp_path / 'exp'}" in capsys.readouterr().out
    for path in [tmp_path / "exp", *(tmp_path / "exp").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_evaluate_lists_what_it_wrote(synthetic_shards, ckpt, tmp_path, capsys):
    argv = ["--ckpt", str(ckpt), "--shards", str(synthetic_shards), "--out", str(tmp_path), "--device", "cpu",
            "--dali-threads", "2"]
    assert exit_of(evaluate.main, argv) == 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / 'eval_val_v1.json'}" in out and f"-> {tmp_path / 'eval_val_v1_confusion.png'}" in out
    assert (tmp_path / "eval_val_v1.json").is_file()


def test_a_batch_larger_than_the_split_is_refused_first_leaving_nothing(synthetic_shards, tmp_path, capsys):
    """12 train clips, batch 64: refused before any loader is built, no run folder, no TensorBoard
    file; make_shards on a missing source leaves no output folder either."""
    argv = ["--shards", str(synthetic_shards), "--out", str(tmp_path / "run"), "--batch-size", "64",
            "--model-size", "tiny", "--device", "cpu"]
    assert exit_of(train.main, argv) == 2
    assert "the train split has 12 clips, fewer than one batch of 64; lower --batch-size" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()
    p = subprocess.run([sys.executable, "-m", "vidact.prep.make_shards", str(tmp_path / "nothing"), "--out",
                        str(tmp_path / "shards")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no such folder" in p.stderr, p.stderr
    assert not (tmp_path / "shards").exists()
