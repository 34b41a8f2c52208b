"""tools/make_shards.py, run as a user runs it: every source layout, bad inputs, the shard
contents (frame counts and frame content against the sources), DALI reading the shards,
determinism, bounded shard size, resume after a kill, exit status, and real videos."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import webdataset as wds
from conftest import (
    REPO,
    assert_frames_match,
    assert_is_frame,
    clip_path,
    decode_frames,
    write_clip,
    write_frame_folder,
)
from PIL import Image

from vidact import __version__
from vidact.clip import sampling
from vidact.prep.make_shards import discover, split_off_val
from vidact.prep.repacked import parse_repacked
from vidact.shards import ShardSet, decode_meta, iter_tar_samples, read_int32


def tar_keys(path: Path) -> list[str]:
    """Sample keys of a shard, in order."""
    return [key for key, _ in iter_tar_samples(path, exts=())]


# The fixtures' clips are 48-96 px: kept at their size (fast), except where a test sets
# --min-side (test_min_side_for_nvdec checks the default).
TOOL = [sys.executable, "tools/make_shards.py", "--min-side", "0"]


# ----------------------------------------------------------------------------- helpers


def make_shards(*args: object, check: int | None = 0) -> subprocess.CompletedProcess:
    """Runs the CLI from the repository root; `check` is the exit status expected."""
    proc = subprocess.run([*TOOL, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    if check is not None:
        assert proc.returncode == check, f"rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def rejects(out: Path, kind: str = "rejected") -> list[dict]:
    """The lines of rejects.jsonl of one kind ("rejected" or "ignored")."""
    lines = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in lines} <= {"rejected", "ignored"}
    return [r for r in lines if r["kind"] == kind]


def samples(out: Path, split: str) -> dict[str, dict]:
    """{key: sample} of a split, read with the webdataset library."""
    urls = [str(out / name) for name in manifest(out)["splits"][split]["shards"]]
    got = {}
    for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        assert s["__key__"] not in got, f"sample {s['__key__']} twice"
        got[s["__key__"]] = s
    return got


def shard_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.suffix in (".tar", ".idx")}


@dataclass
class Clip:
    """A source clip written by the tests: frame i shows pattern ``start + i``."""

    id: str
    label: str | None
    split: str
    codec: str
    width: int
    height: int
    fps: float | Fraction
    n: int
    start: int = 0
    path: Path = field(default=Path())

    def write(self, folder: Path) -> Clip:
        self.path = write_clip(clip_path(folder, self.id, self.codec), self.codec, self.width,
                               self.height, self.fps, self.n, self.start)
        return self


def on_grid(side: int) -> int:
    """A source side as shards store it: the nearest multiple of 16 (half way: up)."""
    return (side + 8) // 16 * 16


def check_sample(s: dict, clip: Clip, ext: str = "ivf", codec: str = "vp9",
                 pix_fmt: str = "yuv420p", size: tuple[int, int] | None = None,
                 label_id: int | None = None) -> dict:
    """One shard sample against its source: members, metadata, frame count, frame content."""
    meta = json.loads(s["json"])
    n = clip.n
    assert meta["id"] == clip.id
    assert meta["num_frames"] == n == read_int32(s["nframes.i32"])
    if label_id is not None:
        assert meta["label_id"] == label_id == read_int32(s["label.i32"])
        assert s["cls"].decode() == str(label_id)
    assert meta["label"] == clip.label
    assert meta["split"] == clip.split
    assert meta["fps"] == pytest.approx(float(clip.fps), abs=1e-3)
    assert meta["duration"] == pytest.approx(n / float(clip.fps), abs=1e-3)
    assert Path(meta["source"]) == clip.path
    width, height = size or (on_grid(clip.width), on_grid(clip.height))
    assert (meta["width"], meta["height"]) == (width, height)
    assert np.frombuffer(s["hw.i32"], "<i4").tolist() == [height, width]
    name, frames, fmt = decode_frames(s[ext])
    assert (name, fmt) == (codec, pix_fmt)
    assert frames.shape == (n, height, width, 3), "shard video decodes to another frame count"
    assert_frames_match(frames, sorted({0, 1, n // 3, n // 2, n - 2, n - 1}), n,
                        f"{clip.id} in shard", offset=clip.start)
    return meta


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "split"])
        w.writerows(rows)


def truncated(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def noise_file(path: Path, size: int = 30_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


# ----------------------------------------------------------------------------- video + CSVs

CLASSES = ["jump", "run", "wave"]


@pytest.fixture(scope="module")
def csv_set(tmp_path_factory):
    """Video class folders with train/val/test CSVs and dictionary.json; four codecs and
    containers, mixed sizes and frame rates, and one of each kind of bad source."""
    tmp = tmp_path_factory.mktemp("csv_set")
    src, out = tmp / "src", tmp / "out"
    specs = [
        ("j_h264", "jump", "train", "h264", 96, 72, 25, 30),
        ("j_mpeg4", "jump", "train", "mpeg4", 64, 48, 30, 24),
        ("j_vp9", "jump", "val", "vp9", 80, 60, 24, 20),
        ("j_mjpeg", "jump", "test", "mjpeg", 64, 48, 15, 32),
        ("r_mpeg4", "run", "train", "mpeg4", 96, 72, Fraction(30000, 1001), 28),
        ("r_vp9", "run", "train", "vp9", 64, 48, 25, 22),
        ("r_h264", "run", "val", "h264", 64, 48, 30, 26),
        ("r_mjpeg", "run", "test", "mjpeg", 80, 60, 25, 20),
        ("w_mjpeg", "wave", "train", "mjpeg", 64, 48, 30, 21),
        ("w_h264", "wave", "train", "h264", 80, 60, 24, 25),
        ("w_mpeg4", "wave", "val", "mpeg4", 64, 48, 25, 30),
        ("w_vp9", "wave", "test", "vp9", 96, 72, 30, 36),
    ]
    clips = {s[0]: Clip(*s, start=11 * k).write(src / s[1]) for k, s in enumerate(specs)}
    (src / "wave" / "w_zero.avi").write_bytes(b"")
    truncated(clips["j_h264"].path, src / "run" / "r_cut.mp4", 0.4)
    truncated(clips["r_mpeg4"].path, src / "jump" / "j_cut.avi", 0.5)
    noise_file(src / "run" / "r_noise.mp4")
    write_clip(src / "swim" / "s_ok.avi", "mpeg4", 64, 48, 25, 20)  # label not in dictionary
    (src / "dance").mkdir()  # an empty class folder no CSV row refers to
    (src / "dictionary.json").write_text(json.dumps({c: i for i, c in enumerate(CLASSES)}))
    rows = {split: [(c.id, c.label, split) for c in clips.values() if c.split == split]
            for split in ("train", "val", "test")}
    rows["train"] += [("w_zero", "wave", "train"), ("r_cut", "run", "train"),
                      ("j_cut", "jump", "train"), ("s_ok", "swim", "train"),
                      ("j_ghost", "jump", "train")]  # no such file
    rows["val"] += [("r_noise", "run", "val")]
    for split, r in rows.items():
        write_csv(src / f"{split}.csv", r)
    proc = make_shards(src, "--out", out, "--workers", 2)
    expected_rejects = {
        src / "wave" / "w_zero.avi": "zero-byte file",
        src / "run" / "r_cut.mp4": "cannot open as video",
        src / "jump" / "j_cut.avi": "truncated or damaged",
        src / "run" / "r_noise.mp4": "cannot open as video",
        src / "swim" / "s_ok.avi": "label 'swim' not in the class list",
        src / "jump" / "j_ghost": "listed in train.csv but not found",
        src / "dance": "empty class folder",
    }
    return SimpleNamespace(src=src, out=out, proc=proc, clips=clips, rejects=expected_rejects)


def test_csv_run_summary(csv_set):
    assert csv_set.proc.returncode == 0
    assert "12 clips (train 6, val 3, test 3)" in csv_set.proc.stdout
    assert "7 rejected" in csv_set.proc.stdout
    assert not list(csv_set.out.glob("*.tmp"))
    # what planning a repack needs: the frames it encoded (the set's), their rate, CPU per frame
    got = parse_repacked(csv_set.proc.stdout)
    frames = sum(json.loads(s["json"])["num_frames"] for split in ("train", "val", "test")
                 for s in samples(csv_set.out, split).values())
    assert got["clips"] == 12 and got["frames"] == frames and got["cpu_ms_per_frame"] > 0


def test_csv_manifest(csv_set):
    m = manifest(csv_set.out)
    assert m["schema_version"] == 1
    assert m["tool_version"] == __version__
    assert m["layout"] == "videos"
    assert m["classes"] == CLASSES
    assert m["rejected"] == 7 and m["ignored"] == 0
    assert m["layout_files"] == [str(csv_set.src / f) for f in ("train.csv", "val.csv", "test.csv", "dictionary.json")]
    assert m["psnr"]["clips"] == 12 and 30 < m["psnr"]["p5"] <= m["psnr"]["median"] < 100
    assert {s: v["count"] for s, v in m["splits"].items()} == {"train": 6, "val": 3, "test": 3}
    for split, per_class in (("train", 2), ("val", 1), ("test", 1)):
        assert m["splits"][split]["per_class"] == {c: per_class for c in CLASSES}
        assert m["splits"][split]["shards"] == [f"{split}-000000.tar"]
    enc = m["encode"]
    keys = ("codec", "encoder", "gop", "pix_fmt", "video_ext", "short_side", "min_side", "align")
    assert {k: enc[k] for k in keys} == {
        "codec": "vp9", "encoder": "libvpx-vp9", "gop": 4, "pix_fmt": "yuv420p",
        "video_ext": "ivf", "short_side": None, "min_side": 0, "align": 16}
    assert isinstance(enc["quality"], int)
    ss = ShardSet.open(csv_set.out)
    assert ss.count("val") == 3 and ss.video_ext == "ivf" and ss.codec == "vp9"
    assert [Path(p).name for p in ss.indexes("test")] == ["test-000000.idx"]


def test_csv_rejects_name_each_bad_source(csv_set):
    got = {Path(r["source"]): r["reason"] for r in rejects(csv_set.out)}
    assert set(got) == set(csv_set.rejects), got
    for source, reason in csv_set.rejects.items():
        assert reason in got[source], (source, got[source])
    # every reason is one line
    assert all("\n" not in r for r in got.values())
    # a reject is also said on the console, naming the file
    assert "w_zero.avi: zero-byte file" in csv_set.proc.stderr


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_csv_samples_match_their_sources(csv_set, split):
    got = samples(csv_set.out, split)
    want = {c.id: c for c in csv_set.clips.values() if c.split == split}
    assert set(got) == set(want)
    for key, s in got.items():
        clip = want[key]
        assert set(s) >= {"ivf", "json", "nframes.i32", "label.i32", "hw.i32", "cls", "offsets.i32", "keyframes.i32"}
        # the source's own frame count, as PyAV decodes it
        assert len(decode_frames(clip.path)[1]) == clip.n
        check_sample(s, clip, label_id=CLASSES.index(clip.label))


def test_csv_index_files_equal_dalis_wds2idx(csv_set, tmp_path):
    wds2idx = Path(sys.executable).parent / "wds2idx"
    assert wds2idx.exists(), f"{wds2idx}: DALI's wds2idx script is missing: the DALI install is broken"
    tars = sorted(csv_set.out.glob("*.tar"))
    assert tars
    for tar in tars:
        ref = tmp_path / (tar.stem + ".idx")
        subprocess.run([sys.executable, str(wds2idx), str(tar), str(ref)], check=True,
                       capture_output=True)
        assert (csv_set.out / (tar.stem + ".idx")).read_text() == ref.read_text(), tar.name


def test_dali_decodes_the_same_frames_as_the_source(csv_set):
    """DALI's CPU decoder on the shard's VP9: frame i (any order, repeats) is source frame i."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    ss = ShardSet.open(csv_set.out)
    tars = [str(p) for s in ("train", "val", "test") for p in ss.tars(s)]
    idxs = [str(p) for s in ("train", "val", "test") for p in ss.indexes(s)]
    wanted = [0, 7, 2, 2, 19, 11, 1]  # every clip has at least 20 frames
    total = 12

    @pipeline_def(batch_size=total, num_threads=2, device_id=None)
    def pipe():
        video, meta, nframes = fn.readers.webdataset(
            paths=tars, index_paths=idxs, ext=["ivf", "json", "nframes.i32"],
            dtypes=[types.UINT8, types.UINT8, types.INT32], missing_component_behavior="error")
        frames = fn.decoders.video(video, device="cpu",
                                   frames=types.Constant(np.array(wanted, np.int32)))
        return frames, fn.pad(meta, fill_value=0), nframes

    p = pipe()
    p.build()
    frames, metas, nframes = p.run()
    seen = set()
    for i in range(total):
        meta = decode_meta(np.array(metas[i]))
        clip = csv_set.clips[meta["id"]]
        seen.add(clip.id)
        assert int(np.array(nframes[i])[0]) == clip.n
        f = np.array(frames[i])
        assert f.shape == (len(wanted), on_grid(clip.height), on_grid(clip.width), 3)
        for k, j in enumerate(wanted):
            assert_is_frame(f[k], j + clip.start, clip.n + clip.start, f"DALI {clip.id}[{j}]")
    assert seen == set(csv_set.clips)


def test_dali_eval_loader_reads_the_shards(csv_set):
    """The DALI eval loader on these shards: labels, and the frame indices it chose equal
    vidact.clip.sampling's for each clip's stored frame count."""
    from vidact.clip.spec import ClipSpec
    from vidact.data import build_loader

    ss = ShardSet.open(csv_set.out)
    ids = set()
    for b in build_loader(ss, "train", "dali", "eval", ClipSpec(frames_per_clip=8, crop_size=32, ratio=0.5), 6,
                          device="cpu", workers=2):
        assert b.video.shape[1:] == (8, 3, 32, 32)
        for cid, label, idx in zip(b.ids, b.label.tolist(), b.info["frames"]):
            clip = csv_set.clips[cid]
            ids.add(cid)
            assert label == CLASSES.index(clip.label)
            np.testing.assert_array_equal(idx, sampling.frame_indices(clip.n, 8, 0.5, "middle"))
    assert ids == {c.id for c in csv_set.clips.values() if c.split == "train"}


# ----------------------------------------------------------------------------- UCF-101 lists

UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "Basketball"]


def _ucf_tree(root: Path, lists: Path, train_per_class: int, test_per_class: int,
              real_clips: bool) -> dict[str, Clip]:
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text(
        "".join(f"{i + 1} {c}\n" for i, c in enumerate(UCF_CLASSES)))
    clips, train_lines, test_lines = {}, [], []
    for ci, c in enumerate(UCF_CLASSES):
        for g in range(1, train_per_class + test_per_class + 1):
            vid = f"v_{c}_g{g:02d}_c01"
            split = "train" if g <= train_per_class else "test"
            rel = f"{c}/{vid}.avi"
            (train_lines if split == "train" else test_lines).append(
                f"{rel} {ci + 1}" if split == "train" else rel)
            clip = Clip(vid, c, split, "mpeg4", 64, 48, 25, 20, start=len(clips) * 3)
            if real_clips:
                clip.write(root / c)
            else:
                (root / c).mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(b"")
                clip.path = root / rel
            clips[vid] = clip
    train_lines.append(f"{UCF_CLASSES[0]}/v_{UCF_CLASSES[0]}_g99_c01.avi 1")  # missing file
    (lists / "trainlist01.txt").write_text("\r\n".join(train_lines) + "\r\n")  # CRLF as shipped
    (lists / "testlist01.txt").write_text("\r\n".join(test_lines) + "\r\n")
    return clips


@pytest.fixture(scope="module")
def ucf_set(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ucf")
    clips = _ucf_tree(tmp / "UCF-101", tmp / "ucfTrainTestlist", 5, 2, real_clips=True)
    proc = make_shards(tmp / "UCF-101", "--ucf-splits", tmp / "ucfTrainTestlist", "--out",
                       tmp / "out", "--workers", 2, "--seed", 3)
    return SimpleNamespace(root=tmp / "UCF-101", out=tmp / "out", clips=clips, proc=proc)


def test_ucf_lists_layout(ucf_set):
    m = manifest(ucf_set.out)
    assert m["classes"] == UCF_CLASSES
    counts = {s: v["count"] for s, v in m["splits"].items()}
    assert counts == {"train": 12, "val": 3, "test": 6}  # 5 train per class: 1 goes to val
    for split in ("train", "val", "test"):
        per_class = m["splits"][split]["per_class"]
        assert set(per_class) == set(UCF_CLASSES), (split, per_class)
    assert set(m["splits"]["val"]["per_class"].values()) == {1}
    got = {**samples(ucf_set.out, "train"), **samples(ucf_set.out, "val"),
           **samples(ucf_set.out, "test")}
    assert set(got) == set(ucf_set.clips)
    for key, s in got.items():
        clip = ucf_set.clips[key]
        meta = json.loads(s["json"])
        assert meta["split"] in (("train", "val") if clip.split == "train" else ("test",))
        clip.split = meta["split"]
        check_sample(s, clip, label_id=UCF_CLASSES.index(clip.label))
    (r,) = rejects(ucf_set.out)
    assert r["source"].endswith("v_ApplyEyeMakeup_g99_c01.avi")
    assert "listed in trainlist01.txt but not found" in r["reason"]


def test_val_split_is_stratified_and_seeded(tmp_path):
    """10 train clips per class: 2 per class go to val; the same seed gives the same split and
    other seeds give other splits; small classes keep their clips in train."""
    _ucf_tree(tmp_path / "root", tmp_path / "lists", 10, 1, real_clips=False)

    def split_with(seed: int) -> dict[str, str]:
        plan = discover(tmp_path / "root", "videos", ucf_splits=tmp_path / "lists")
        split_off_val(plan.sources, 0.2, seed)
        return {s.id: s.split for s in plan.sources}

    a = split_with(0)
    assert a == split_with(0)
    for c in UCF_CLASSES:
        mine = [v for k, v in a.items() if f"_{c}_" in k]
        assert mine.count("val") == 2 and mine.count("train") == 8 and mine.count("test") == 1
    others = [split_with(seed) for seed in (1, 2, 3)]
    assert all(o != a for o in others)
    assert all(list(o.values()).count("val") == 6 for o in others)

    # 1, 2 and 3 train clips per class: val takes round(20 %) and never a class's last clip
    for n_train, n_val in ((1, 0), (2, 0), (3, 1)):
        root, lists = tmp_path / f"r{n_train}", tmp_path / f"l{n_train}"
        _ucf_tree(root, lists, n_train, 1, real_clips=False)
        plan = discover(root, "videos", ucf_splits=lists)
        split_off_val(plan.sources, 0.2, 0)
        for c in UCF_CLASSES:
            mine = [s.split for s in plan.sources if s.label == c]
            assert mine.count("val") == n_val and mine.count("train") == n_train - n_val


def test_no_val_split_when_val_csv_given(tmp_path):
    """A dataset with its own val list keeps it: nothing is moved from train."""
    plan_sources = []
    for i, split in enumerate(["train"] * 6 + ["val"]):
        plan_sources.append(SimpleNamespace(split=split, label_id=0, key=f"k{i}"))
    split_off_val(plan_sources, 0.2, 0)
    assert [s.split for s in plan_sources] == ["train"] * 6 + ["val"]


# ----------------------------------------------------------------------------- folder names


def test_folder_names_layout(tmp_path):
    src = tmp_path / "src"
    clips = [
        Clip("a1", "b_cls", "train", "mpeg4", 64, 48, 25, 20, start=0),
        Clip("a2", "b_cls", "train", "h264", 64, 48, 25, 22, start=5),
        Clip("a3", "b_cls", "train", "vp9", 64, 48, 25, 24, start=9),
        Clip("c1", "a_cls", "train", "mjpeg", 64, 48, 30, 20, start=13),
        Clip("c2", "a_cls", "train", "mpeg4", 64, 48, 30, 21, start=17),
        Clip("c3", "a_cls", "train", "h264", 80, 60, 30, 23, start=21),
        Clip("c4", "a_cls", "train", "mpeg4", 64, 48, 30, 20, start=27),
    ]
    for c in clips:
        c.write(src / c.label)
    (src / "z_empty").mkdir()
    out = tmp_path / "out"
    make_shards(src, "--out", out, "--workers", 2)
    m = manifest(out)
    assert m["classes"] == ["a_cls", "b_cls"]  # sorted folder names, the empty one left out
    assert {s: v["count"] for s, v in m["splits"].items()} == {"train": 5, "val": 2}
    assert m["splits"]["val"]["per_class"] == {"a_cls": 1, "b_cls": 1}
    assert rejects(out) == [{"kind": "rejected", "source": str(src / "z_empty"), "reason": "empty class folder"}]
    assert rejects(out, "ignored") == []
    got = {**samples(out, "train"), **samples(out, "val")}
    by_id = {c.id: c for c in clips}
    assert set(got) == set(by_id)
    for key, s in got.items():
        clip = by_id[key]
        clip.split = json.loads(s["json"])["split"]
        check_sample(s, clip, label_id=m["classes"].index(clip.label))


# ----------------------------------------------------------------------------- frame folders


def test_frame_folder_layout(tmp_path):
    src = tmp_path / "hmdb"
    folders = {  # (label, video id): (frames, width, height)
        ("brush_hair", "v_brush_1"): (5, 64, 48),
        ("brush_hair", "v_brush_2"): (12, 80, 60),
        ("cartwheel", "v_cart_1"): (20, 64, 48),
        ("cartwheel", "v_cart_2"): (8, 96, 72),
    }
    for (label, vid), (n, w, h) in folders.items():
        write_frame_folder(src / label / vid, n, w, h)
    bad = write_frame_folder(src / "brush_hair" / "v_bad", 6)
    bad[2].write_bytes(b"GIF89a garbage, not a JPEG")  # parses as an absurdly large GIF
    bad = write_frame_folder(src / "brush_hair" / "v_bad_noise", 6)
    noise_file(bad[4], 2000)
    bad = write_frame_folder(src / "cartwheel" / "v_bad_cut", 6)
    bad[1].write_bytes(bad[1].read_bytes()[:300])  # a JPEG cut short
    (src / "cartwheel" / "v_empty").mkdir()
    (src / "cartwheel" / "notes.txt").write_text("not a clip")

    out = tmp_path / "out"
    make_shards(src, "--out", out, "--fps", 8, "--workers", 2, "--val-fraction", 0)
    m = manifest(out)
    assert m["layout"] == "frames"
    assert m["classes"] == ["brush_hair", "cartwheel"]
    assert m["encode"]["frames_fps"] == 8.0
    assert {s: v["count"] for s, v in m["splits"].items()} == {"train": 4}
    got = {Path(r["source"]).name: r["reason"] for r in rejects(out)}
    assert got == {"v_bad": "unreadable image frame_0003.jpg (DecompressionBombError)",
                   "v_bad_noise": "unreadable image frame_0005.jpg (UnidentifiedImageError)",
                   "v_bad_cut": "unreadable image frame_0002.jpg (OSError)",
                   "v_empty": "frame folder has no images"}
    assert {Path(r["source"]).name: r["reason"] for r in rejects(out, "ignored")} == {"notes.txt": "not a frame folder"}
    shard = samples(out, "train")
    assert set(shard) == {vid for _, vid in folders}
    for (label, vid), (n, w, h) in folders.items():
        assert len(list((src / label / vid).glob("*.jpg"))) == n
        clip = Clip(vid, label, "train", "vp9", w, h, 8, n, path=src / label / vid)
        meta = check_sample(shard[vid], clip, label_id=m["classes"].index(label))
        assert meta["duration"] == pytest.approx(n / 8)


# ----------------------------------------------------------------------------- unlabeled


@pytest.fixture(scope="module")
def unlabeled_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("unlabeled") / "test_videos"
    clips = [Clip("u1", None, "test", "mpeg4", 96, 72, 25, 20, start=0).write(src),
             Clip("u2", None, "test", "h264", 96, 72, 30, 24, start=7).write(src)]
    write_frame_folder(src / "u3", 10, 96, 72)
    clips.append(Clip("u3", None, "test", "vp9", 96, 72, 10, 10, path=src / "u3"))
    return SimpleNamespace(src=src, clips={c.id: c for c in clips})


@pytest.mark.parametrize("codec, ext, name, pix_fmt", [
    ("vp9", "ivf", "vp9", "yuv420p"),
    ("mjpeg", "avi", "mjpeg", "yuvj420p"),
    ("h264", "mp4", "h264", "yuv420p"),
])
def test_unlabeled_layout_and_codecs(unlabeled_src, tmp_path, codec, ext, name, pix_fmt):
    out = tmp_path / "out"
    if codec == "h264":  # NVDEC only: refused in one line, nothing written, unless asked for
        refused = make_shards(unlabeled_src.src, "--out", out, "--codec", codec, check=2)
        assert "loads on no CPU" in refused.stderr or "load on no CPU" in refused.stderr, refused.stderr
        assert "--gpu-only" in refused.stderr and refused.stderr.count("\n") == 1 and not out.exists()
    make_shards(unlabeled_src.src, "--out", out, "--codec", codec, "--workers", 2,
                *(["--gpu-only"] if codec == "h264" else []))
    m = manifest(out)
    assert m["layout"] == "unlabeled" and m["classes"] == []
    assert {s: v["count"] for s, v in m["splits"].items()} == {"test": 3}
    assert m["splits"]["test"]["per_class"] == {"(unlabeled)": 3}
    assert m["encode"]["codec"] == codec and m["encode"]["video_ext"] == ext
    got = samples(out, "test")
    assert set(got) == set(unlabeled_src.clips)
    for key, s in got.items():
        assert ext in s and ("offsets.i32" in s) == (ext == "ivf")
        check_sample(s, unlabeled_src.clips[key], ext=ext, codec=name, pix_fmt=pix_fmt,
                     label_id=-1)
    with tarfile.open(out / "test-000000.tar") as tar:
        tables = ("offsets.i32", "keyframes.i32") if ext == "ivf" else ()
        assert sorted(n for n in tar.getnames() if n.startswith("u1.")) == sorted(
            f"u1.{e}" for e in (ext, "json", "nframes.i32", "label.i32", "hw.i32", "cls", "xxh3", *tables))


def test_short_side_resize(unlabeled_src, tmp_path):
    out = tmp_path / "out"
    make_shards(unlabeled_src.src, "--out", out, "--short-side", 32, "--workers", 2)
    assert manifest(out)["encode"]["short_side"] == 32
    for key, s in samples(out, "test").items():
        meta = check_sample(s, unlabeled_src.clips[key], size=(48, 32), label_id=-1)  # 42.7 x 32 on the grid
        assert min(meta["width"], meta["height"]) == 32
        assert meta["width"] % 16 == 0 and meta["height"] % 16 == 0


def test_min_side_for_nvdec(tmp_path):
    """NVDEC decodes no VP9 frame under 128 px: by default every clip gets 128 on both sides,
    aspect ratio kept, even over a smaller --short-side, and the json keeps the source size.
    The DALI loader's GPU start-up check passes these and names a clip sharded smaller."""
    from vidact.data.guards import check_nvdec_size
    from vidact.prep.make_shards import main
    from vidact.shards import ShardError

    n = 12
    write_clip(tmp_path / "src" / "a" / "small.avi", "mjpeg", width=160, height=120, num_frames=n)
    args = [str(tmp_path / "src"), "--workers", "1", "--val-fraction", "0"]
    assert main([*args, "--out", str(tmp_path / "out"), "--short-side", "64"]) == 0
    s = samples(tmp_path / "out", "train")["small"]
    meta = json.loads(s["json"])
    # 170.7 x 128 on the 16-pixel grid: 176 x 128 (the aspect as near as the grid allows)
    assert [meta[k] for k in ("width", "height", "source_width", "source_height")] == [176, 128, 160, 120]
    assert manifest(tmp_path / "out")["encode"]["min_side"] == 128
    _, frames, _ = decode_frames(s["ivf"])
    assert frames.shape == (n, 128, 176, 3)
    assert_frames_match(frames, [0, n // 2, n - 1], n, "scaled up")
    check_nvdec_size(ShardSet.open(tmp_path / "out"), "train")

    assert main([*args, "--out", str(tmp_path / "off"), "--min-side", "0", "--short-side", "64"]) == 0
    with pytest.raises(ShardError, match=r"train-000000.tar: sample small: 80x64 px.*--min-side 128"):
        check_nvdec_size(ShardSet.open(tmp_path / "off"), "train")


# ----------------------------------------------------------------------------- exit status


def test_all_sources_bad_fails(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "zero.avi").write_bytes(b"")
    noise_file(src / "noise.mp4")
    proc = make_shards(src, "--out", tmp_path / "out", "--workers", 1, check=1)
    assert "nothing could be sharded" in proc.stderr
    assert "0 clips" in proc.stdout
    assert {Path(r["source"]).name for r in rejects(tmp_path / "out")} == {"zero.avi", "noise.mp4"}


def test_strict_fails_on_any_reject(unlabeled_src, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(unlabeled_src.clips["u1"].path, src / "good.avi")
    (src / "bad.avi").write_bytes(b"")
    make_shards(src, "--out", tmp_path / "lenient", "--workers", 1, check=0)
    make_shards(src, "--out", tmp_path / "strict", "--workers", 1, "--strict", check=1)
    assert manifest(tmp_path / "strict")["splits"]["test"]["count"] == 1  # still written


def test_no_sources_at_all(tmp_path):
    (tmp_path / "src").mkdir()
    proc = make_shards(tmp_path / "src", "--out", tmp_path / "out", check=None)
    assert proc.returncode != 0
    assert "no videos or frame folders found" in proc.stderr


def test_missing_dictionary_beside_csvs(tmp_path):
    write_clip(tmp_path / "src" / "a" / "x.avi", "mpeg4")
    write_csv(tmp_path / "src" / "train.csv", [("x", "a", "train")])
    proc = make_shards(tmp_path / "src", "--out", tmp_path / "out", check=None)
    assert proc.returncode != 0 and "dictionary.json: missing" in proc.stderr


def test_an_out_that_is_a_file_fails_before_any_work(tmp_path):
    """The output place is checked first: a file at --out (or above it) is one line naming it, not
    a probe of every source and then a promise of a rejects.jsonl that could not be written."""
    write_clip(tmp_path / "src" / "a" / "x.avi", "mpeg4")
    (tmp_path / "taken").write_text("not a folder")
    for out in (tmp_path / "taken", tmp_path / "taken" / "set"):
        proc = make_shards(tmp_path / "src", "--out", out, check=2)
        assert proc.stderr.strip() == f"tools/make_shards.py: {out}: {tmp_path / 'taken'} is a file, not a folder; " \
                                      "choose another place"
        assert "rejects.jsonl" not in proc.stdout + proc.stderr
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_help_mentions_the_layouts():
    proc = make_shards("--help")
    for word in ("videos", "frames", "unlabeled", "classInd.txt", "dictionary.json",
                 "--shard-size-mb", "--short-side", "--min-side", "--strict", "resumes"):
        assert word in proc.stdout, word


# ----------------------------------------------------------------------------- many clips:
# determinism, bounded shard size, resume

SHARD_MB = 0.03  # ~2 samples of these clips per shard


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """30 UCF-like MPEG-4 AVIs (3 classes x 10), and two clean runs of the same command."""
    tmp = tmp_path_factory.mktemp("many")
    src = tmp / "src"
    clips = {}
    for k in range(30):
        label = f"class{k % 3}"
        clip = Clip(f"{label}_clip{k:02d}", label, "train", "mpeg4", 96, 72, 25, 40,
                    start=(k * 13) % 200).write(src / label)
        clips[clip.id] = clip
    args = [src, "--shard-size-mb", SHARD_MB, "--seed", 5]
    a = make_shards(*args, "--out", tmp / "a", "--workers", 2)
    b = make_shards(*args, "--out", tmp / "b", "--workers", 1)
    return SimpleNamespace(src=src, tmp=tmp, clips=clips, args=args, a=tmp / "a", b=tmp / "b",
                           proc_a=a, proc_b=b)


@pytest.mark.slow
def test_same_input_and_seed_give_identical_shards(many):
    a, b = shard_files(many.a), shard_files(many.b)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs between two runs"
    assert manifest(many.a) == manifest(many.b)


@pytest.mark.slow
def test_bounded_shard_size_and_every_sample_once(many):
    m = manifest(many.a)
    assert {s: v["count"] for s, v in m["splits"].items()} == {"train": 24, "val": 6}
    max_bytes = SHARD_MB * 2**20
    seen = []
    for split in ("train", "val"):
        names = m["splits"][split]["shards"]
        assert len(names) >= 3, names
        assert names == [f"{split}-{i:06d}.tar" for i in range(len(names))]
        keys_in_split = []
        for name in names:
            tar = many.a / name
            assert (many.a / name.replace(".tar", ".idx")).is_file()
            keys = tar_keys(tar)
            # bounded: over the limit only by tar's end-of-archive padding (10 KiB records)
            assert len(keys) == 1 or tar.stat().st_size <= max_bytes + 10240, (name, keys)
            idx = (many.a / name.replace(".tar", ".idx")).read_text().splitlines()
            assert idx[0] == f"v1.2 {len(keys)}"
            keys_in_split += keys
        assert len(keys_in_split) == len(set(keys_in_split)) == m["splits"][split]["count"]
        assert set(keys_in_split) == set(samples(many.a, split))
        seen += keys_in_split
    assert sorted(seen) == sorted(many.clips)


@pytest.mark.slow
def test_different_seed_changes_order_and_val(many, tmp_path):
    out = tmp_path / "out"
    make_shards(many.src, "--shard-size-mb", SHARD_MB, "--seed", 6, "--out", out,
                "--workers", 2)
    a = manifest(many.a)["splits"]
    c = manifest(out)["splits"]
    assert {s: v["count"] for s, v in c.items()} == {"train": 24, "val": 6}
    val_a = set(samples(many.a, "val"))
    val_c = set(samples(out, "val"))
    order_a = [k for n in a["train"]["shards"] for k in tar_keys(many.a / n)]
    order_c = [k for n in c["train"]["shards"] for k in tar_keys(out / n)]
    assert val_a != val_c
    assert order_a != order_c


@pytest.mark.slow
def test_resume_after_kill(many):
    out = many.tmp / "killed"
    cmd = [*TOOL, *map(str, many.args), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "train-000000.tar"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert first.exists(), "no shard appeared before the run ended"
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    # no half-written shard is visible: every .tar is complete and indexed
    visible = sorted(out.glob("*.tar"))
    assert visible and len(visible) < len(shard_files(many.a)) // 2
    for tar in visible:
        assert tar_keys(tar)
        assert tar.with_suffix(".idx").is_file()
        with tarfile.open(tar) as t:
            for member in t:
                assert len(t.extractfile(member).read()) == member.size

    again = make_shards(*many.args, "--out", out, "--workers", 2)
    assert "resuming" in again.stderr
    assert not list(out.glob("*.tmp"))
    final, clean = shard_files(out), shard_files(many.a)
    assert sorted(final) == sorted(clean)
    for name in clean:
        assert final[name] == clean[name], f"{name} differs from a clean run"
    assert manifest(out)["splits"] == manifest(many.a)["splits"]

    # a second re-run has nothing to do and changes nothing
    third = make_shards(*many.args, "--out", out, "--workers", 2)
    assert "0 to encode" in third.stderr and "encoded 0" in third.stdout
    assert shard_files(out) == clean


# ----------------------------------------------------------------------------- real videos


@pytest.mark.slow
def test_real_videos(opencv_videos, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = ["vtest", "Megamind", "Megamind_bugy", "tree"]
    for n in names:
        os.symlink(opencv_videos / f"{n}.avi", src / f"{n}.avi")
    out = tmp_path / "out"
    make_shards(src, "--out", out, "--short-side", 112, "--workers", 2)
    assert rejects(out) == []
    got = samples(out, "test")
    assert set(got) == set(names)
    for name in names:
        source = opencv_videos / f"{name}.avi"
        with av.open(str(source)) as c:
            header = c.streams.video[0].frames
            src_frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        meta = json.loads(got[name]["json"])
        _, frames, fmt = decode_frames(got[name]["ivf"])
        assert fmt == "yuv420p"
        assert meta["num_frames"] == len(src_frames) == len(frames) == read_int32(
            got[name]["nframes.i32"])
        assert min(meta["width"], meta["height"]) == 112 and meta["width"] % 16 == 0
        if header != len(src_frames):
            assert meta["header_frames"] == header
        else:
            assert "header_frames" not in meta
        # content: shard frame i is the source frame i, resized
        h, w = frames.shape[1:3]
        for i in (0, len(frames) // 2, len(frames) - 1):
            ref = np.asarray(Image.fromarray(src_frames[i]).resize((w, h), Image.BILINEAR))
            diff = np.abs(frames[i].astype(int) - ref.astype(int)).mean()
            assert diff < 10, (name, i, diff)

    tree = json.loads(got["tree"]["json"])
    assert tree["header_frames"] == 444 and tree["num_frames"] < 444  # the header lies
    bugy = json.loads(got["Megamind_bugy"]["json"])
    # the damaged copy decodes without an error: it is sharded with the frames it decodes
    assert bugy["num_frames"] == 270
    assert json.loads(got["vtest"]["json"])["num_frames"] == 795
    buf = io.BytesIO(got["vtest"]["ivf"])
    with av.open(buf) as c:
        assert c.streams.video[0].codec_context.name == "vp9"


# ----------------------------------------------------------------------------- --max-seconds


def test_max_seconds_cuts_long_sources_into_segments(segmented_shards, capsys):
    out, sources = segmented_shards
    m = manifest(out)
    assert m["max_seconds"] == 5 and m["splits"]["train"]["count"] == 4 and m["splits"]["train"]["sources"] == 2
    got = samples(out, "train")
    assert sorted(got) == ["long_0", "long_1", "long_2", "short_0"]  # keys: no "@", unique
    for key, (source, k, start, n) in {"long_0": ("long", 0, 0, 50), "long_1": ("long", 1, 50, 50),
                                       "long_2": ("long", 2, 100, 20), "short_0": ("short", 0, 0, 30)}.items():
        meta = decode_meta(got[key]["json"])
        assert meta["id"] == f"{source}@{k}" and meta["source_id"] == source and meta["segment"] == k
        assert meta["segments"] == (3 if source == "long" else 1)
        assert meta["segment_start_frame"] == start and meta["segment_start_s"] == pytest.approx(start / 10)
        assert meta["num_frames"] == n == read_int32(got[key]["nframes.i32"])
        assert meta["label"] == ("jump" if source == "long" else "run")  # the source's label
        assert Path(meta["source"]) == sources[source] and "psnr" in meta
        frames = decode_frames(got[key]["ivf"])[1]
        assert len(frames) == n  # frame i of segment k is source frame start + i
        assert_frames_match(frames, [0, 1, n - 1], n, key, offset=start)


def test_max_seconds_resume_and_options(segmented_shards, tmp_path):
    out, sources = segmented_shards
    src = sources["long"].parents[1]
    again = make_shards(src, "--out", out, "--val-fraction", 0, "--max-seconds", 5, "--workers", 1)
    assert "encoded 0" in again.stdout and "from 2 sources" in again.stdout  # whole sources kept
    other = make_shards(src, "--out", out, "--val-fraction", 0, "--max-seconds", 4, "--workers", 1, check=1)
    assert "another --max-seconds" in other.stderr
    plain = make_shards(src, "--out", out, "--val-fraction", 0, "--workers", 1, check=1)
    assert "made with --max-seconds" in plain.stderr
    assert make_shards(src, "--out", tmp_path / "x", "--max-seconds", 0, check=None).returncode != 0
