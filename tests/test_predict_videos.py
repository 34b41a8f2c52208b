"""`vidact.predict --videos`: plain video files predicted without sharding them first, with the
frames, views and transforms used on shards; unreadable files are reported, one line each, and
the rest predicted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import write_clip

from vidact import checkpoint
from vidact import predict as predict_cli
from vidact.clip.spec import ClipSpec
from vidact.models import NORM, create_model
from vidact.shards import META_EXT, ShardSet, iter_tar_samples


@pytest.fixture(scope="module")
def ckpt(unlabeled_shards, tmp_path_factory):
    """A vit-mean checkpoint of three classes (weights seeded: the logits, not the accuracy, are
    compared)."""
    classes = ShardSet.open(unlabeled_shards).classes or ["left", "right", "still"]
    torch.manual_seed(7)
    model = create_model("vit-mean", num_classes=len(classes), preset="tiny", frames_per_clip=4, crop_size=32)
    spec = ClipSpec(frames_per_clip=4, crop_size=32, norm=NORM["vit-mean"], ratio=0.6)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    checkpoint.save({"model": model.state_dict(), "model_config": model.config, "classes": classes, "epoch": 1,
                     "spec": spec.__dict__, "shards_encode": {"short_side": 64, "min_side": 0}}, path)
    return path


@pytest.fixture(scope="module")
def shard_videos(unlabeled_shards, tmp_path_factory):
    """The unlabeled set's clips as the files its shards hold (``{id}.ivf``), plus a text file
    and a truncated video beside them."""
    folder = tmp_path_factory.mktemp("videos")
    ss = ShardSet.open(unlabeled_shards)
    for tar in ss.tars("test"):
        for _, sample in iter_tar_samples(tar, {META_EXT, ss.video_ext}):
            (folder / f"{json.loads(sample[META_EXT])['id']}.{ss.video_ext}").write_bytes(sample[ss.video_ext])
    assert len(list(folder.iterdir())) == 6
    (folder / "notes.txt").write_text("a note beside the videos\n" * 20)
    broken = write_clip(folder / "broken.mp4", "h264", num_frames=12)
    broken.write_bytes(broken.read_bytes()[:300])
    return folder


@pytest.fixture
def predict(capsys):
    """`vidact.predict` run in this process on the CPU with two decode workers: its exit status
    checked against `check`, its stderr returned."""

    def run(*args: str, check: int = 0) -> str:
        try:
            code = predict_cli.main([*args, "--device", "cpu", "--workers", "2"])
        except SystemExit as e:  # argparse
            code = e.code
        err = capsys.readouterr().err
        assert code == check, err[-2000:]
        return err

    return run


def rows(path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("views", ["1", "3"])
def test_videos_give_the_logits_their_shards_give(predict, ckpt, unlabeled_shards, shard_videos, tmp_path,
                                                   views):
    by_shards, by_files = tmp_path / "shards.csv", tmp_path / "files.csv"
    predict("--ckpt", str(ckpt), "--shards", str(unlabeled_shards), "--loader", "torch", "--views", views,
            "--out", str(by_shards))
    err = predict("--ckpt", str(ckpt), "--videos", str(shard_videos), "--views", views, "--out", str(by_files))
    files = rows(by_files)
    # Files: in the order named (a folder's files sorted), each with its file beside its id.
    assert files[0] == ["id", "class", "source"] and [r[2] for r in files[1:]] == sorted(r[2] for r in files[1:])
    assert all(Path(r[2]).stem == r[0] for r in files[1:])
    assert sorted(r[:2] for r in files[1:]) == sorted(rows(by_shards)[1:]) and len(files) == 1 + 6
    topk = rows(tmp_path / "files_topk.csv")
    assert sorted(r[:-1] for r in topk[1:]) == sorted(rows(tmp_path / "shards_topk.csv")[1:])  # to 4 decimals
    assert topk[0] == ["id", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3", "source"]
    assert all(abs(sum(float(x) for x in r[2:-1:2]) - 1) < 1e-3 for r in topk[1:])  # 3 classes: all of them
    skipped = [x for x in err.splitlines() if x.startswith("python -m vidact.predict: skipped")]
    assert len(skipped) == 2, err
    assert any("notes.txt: not a video (text)" in x for x in skipped)
    assert any("broken.mp4:" in x for x in skipped)


def test_nothing_readable_is_an_error(predict, ckpt, tmp_path):
    (tmp_path / "a.txt").write_text("not a video")
    err = predict("--ckpt", str(ckpt), "--videos", str(tmp_path / "a.txt"), str(tmp_path / "gone.avi"), "--out",
                str(tmp_path / "out.csv"), check=2)
    assert "gone.avi: no such file or folder" in err and "no video could be read" in err
    assert not (tmp_path / "out.csv").exists()


def test_shards_and_videos_are_one_or_the_other(predict, ckpt, tmp_path):
    err = predict("--ckpt", str(ckpt), "--out", str(tmp_path / "o.csv"), check=2)
    assert "one of the arguments --shards --videos is required" in err


def test_files_are_scaled_as_their_shards_were(tmp_path):
    """A 100x76 source sharded at make_shards' defaults becomes 176x128 (--min-side 128, 16-pixel
    sides): a file is scaled alike before the eval transform, so its clip is its shard clip's up
    to the codec's loss; scaled straight from the source it is several times further off."""
    from vidact.data import build_loader
    from vidact.predict_videos import video_clip
    from vidact.prep.make_shards import main as make_shards

    for label in ("a", "b"):
        write_clip(tmp_path / "src" / label / f"{label}1.avi", "mpeg4", width=100, height=76, num_frames=30)
    assert make_shards([str(tmp_path / "src"), "--out", str(tmp_path / "shards"), "--workers", "1",
                        "--val-fraction", "0"]) == 0
    spec = ClipSpec(frames_per_clip=8, crop_size=112, ratio=0.5)
    sharded = {i: v for b in build_loader(tmp_path / "shards", "train", "torch", "eval", spec, 2, device="cpu",
                                          workers=0) for i, v in zip(b.ids, b.video)}
    assert sorted(sharded) == ["a1", "b1"]
    for label in ("a", "b"):
        path = tmp_path / "src" / label / f"{label}1.avi"
        alike = (video_clip(path, spec, 1, {"short_side": None, "min_side": 128}) - sharded[f"{label}1"]).abs().mean()
        straight = (video_clip(path, spec, 1, {"short_side": None, "min_side": 0}) - sharded[f"{label}1"]).abs().mean()
        assert alike < 0.02 and straight > 3 * alike, (alike, straight)


def test_file_ids_are_the_ids_make_shards_gives():
    """Stems, longer only where they collide, as `vidact.ids` makes shard ids: a file's row has
    the id its shard clip would have."""
    from pathlib import Path

    from vidact.predict_videos import video_ids

    files = [Path("/d/a/x.avi"), Path("/d/b/x.avi"), Path("/d/c/y.mp4"), Path("/d/m.avi"), Path("/d/m.mp4")]
    assert video_ids(files) == ["a_x_avi", "b_x_avi", "y", "m_avi", "m_mp4"]
    # a relative path beside an absolute one: ids as if both were absolute
    here = Path.cwd()
    assert video_ids([Path("a/x.avi"), here / "b" / "x.avi"]) == ["a_x_avi", "b_x_avi"]


def test_a_file_that_hangs_is_killed_and_listed(predict, ckpt, shard_videos, tmp_path, monkeypatch):
    """A file whose decoding hangs (here: made to, in the forked worker) is killed after
    --clip-timeout and listed in one line; the other files are predicted."""
    import time

    from vidact import predict_videos as pv

    real = pv.video_clip

    first = sorted(p.name for p in shard_videos.glob("*.ivf"))[0]

    def hangs_on_the_first(path, *args):
        if path.name == first:
            time.sleep(600)
        return real(path, *args)

    monkeypatch.setattr(pv, "video_clip", hangs_on_the_first)
    started = time.monotonic()
    err = predict("--ckpt", str(ckpt), "--videos", str(shard_videos), "--clip-timeout", "3", "--out",
                  str(tmp_path / "p.csv"))
    assert time.monotonic() - started < 120
    hung = [x for x in err.splitlines() if "timed out after 3 s" in x]
    assert len(hung) == 1 and first in hung[0], err
    assert len(rows(tmp_path / "p.csv")) == 1 + 5  # the six clips but the one that hung
