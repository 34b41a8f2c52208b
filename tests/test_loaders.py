"""DALI pipelines and the reference loader on real shards: frame choice, per-clip transforms,
parity between the loaders, multi-view order, rank sharding, partial batches, bad shards."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import overclaim_frames

from vidact.clip import sampling
from vidact.clip.cut import plan_cut
from vidact.clip.geometry import resize_shorter_size
from vidact.clip.resample import PARITY
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.data.reference import crop as ref_crop
from vidact.data.reference import normalize as ref_normalize
from vidact.data.reference import resize as ref_resize
from vidact.data.reference import to_tchw
from vidact.prep.make_shards import main as make_shards
from vidact.shards import KEYFRAMES_EXT, META_EXT, ShardError, ShardSet, iter_tar_samples
from vidact.video_io import decode_rgb

ROOT = Path(__file__).resolve().parents[1]
# (label, id, width, height, frames, fps): landscape and portrait clips of different lengths.
CLIPS = [
    ("a", "a0", 96, 64, 40, 10), ("a", "a1", 80, 64, 25, 12), ("a", "a2", 64, 96, 50, 15),
    ("b", "b0", 96, 72, 31, 10), ("b", "b1", 64, 80, 44, 20), ("b", "b2", 96, 64, 12, 8),
    ("c", "c0", 80, 80, 36, 10), ("c", "c1", 96, 64, 60, 25), ("c", "c2", 72, 96, 27, 10),
    ("c", "c3", 96, 64, 45, 10),
]
N_CLIPS = len(CLIPS)


def clip_frames(seed: int, width: int, height: int, frames: int) -> np.ndarray:
    """A static random texture (so crops and flips are identifiable) whose brightness steps
    with the frame index (so frames are identifiable)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(-40, 40, size=(height // 8, width // 8, 3))
    texture = np.kron(texture, np.ones((8, 8, 1), dtype=np.int64))
    level = 40 + 3 * np.arange(frames).reshape(-1, 1, 1, 1)
    return np.clip(texture[None] + level, 0, 255).astype(np.uint8)


def write_mjpeg(path: Path, frames: np.ndarray, fps: int) -> None:
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuvj420p"
        s.options = {"qmin": "2", "qmax": "2"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def write_sources(src: Path) -> Path:
    """`CLIPS` as MJPEG AVIs in class folders under `src` (make_shards' videos layout)."""
    for i, (label, cid, w, h, n, fps) in enumerate(CLIPS):
        (src / label).mkdir(exist_ok=True)
        write_mjpeg(src / label / f"{cid}.avi", clip_frames(i, w, h, n), fps)
    return src


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> ShardSet:
    src = write_sources(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("shards")
    # Everything in 'train' (no val split) and small shards, so the split spans several tars.
    # CPU tests: the clips stay small (fast), under NVDEC's 128 px (GPU tests: test_gpu.py).
    assert make_shards([str(src), "--out", str(out), "--workers", "1", "--val-fraction", "0",
                        "--shard-size-mb", "0.05", "--min-side", "0"]) == 0
    ss = ShardSet.open(out)
    assert ss.count("train") == N_CLIPS and len(ss.tars("train")) > 1
    return ss


def metas(ss: ShardSet) -> dict[str, dict]:
    import json
    import tarfile

    out = {}
    for tar in ss.tars("train"):
        with tarfile.open(tar) as t:
            for m in t:
                if m.name.endswith(".json"):
                    meta = json.loads(t.extractfile(m).read())
                    out[meta["id"]] = meta
    return out


def cut_tables(ss: ShardSet) -> dict[str, np.ndarray]:
    """Every train clip's keyframe table (its ``keyframes.i32`` member), by clip id."""
    out = {}
    for tar in ss.tars("train"):
        for _key, sample in iter_tar_samples(tar, {META_EXT, KEYFRAMES_EXT}):
            out[json.loads(sample[META_EXT])["id"]] = np.frombuffer(sample[KEYFRAMES_EXT], "<i4")
    return out


def shard_video(ss: ShardSet, clip_id: str) -> bytes:
    import tarfile

    for tar in ss.tars("train"):
        with tarfile.open(tar) as t:
            for m in t:
                if m.name == f"{clip_id}.{ss.video_ext}":
                    return t.extractfile(m).read()
    raise KeyError(clip_id)


def run(ss, loader="dali", mode="eval", spec=None, batch_size=4, **kw):
    spec = spec or ClipSpec(frames_per_clip=8, crop_size=48, ratio=1.0)
    return list(build_loader(ss, "train", loader, mode, spec, batch_size, device="cpu", workers=2, **kw))


# --------------------------------------------------------------------------- frame choice

@pytest.mark.parametrize("ratio,window", [(1.0, "middle"), (0.5, "middle"), (0.1, "middle"),
                                          (0.3, "prefix")])
@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_eval_frames_are_the_sampling_modules(shards, loader, ratio, window):
    spec = ClipSpec(frames_per_clip=8, crop_size=48, ratio=ratio, window=window)
    info = metas(shards)
    seen = 0
    for batch in run(shards, loader, "eval", spec):
        for cid, frames in zip(batch.ids, batch.info["frames"]):
            n = info[cid]["num_frames"]
            np.testing.assert_array_equal(frames, sampling.frame_indices(n, 8, ratio, window))
            seen += 1
    assert seen == N_CLIPS


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_train_frames_follow_the_drawn_window(shards, loader):
    spec = ClipSpec(frames_per_clip=6, crop_size=48, ratio=0.3)
    info = metas(shards)
    us = []
    for batch in run(shards, loader, "train", spec, batch_size=2, seed=3):
        for cid, frames, u in zip(batch.ids, batch.info["frames"], batch.info["window_u"]):
            n = info[cid]["num_frames"]
            np.testing.assert_array_equal(frames, sampling.frame_indices(n, 6, 0.3, "middle", float(u)))
            us.append(float(u))
    assert len(us) == N_CLIPS and len(set(us)) == N_CLIPS  # random, one draw per clip


def test_train_draws_are_seeded(shards):
    spec = ClipSpec(frames_per_clip=6, crop_size=48, ratio=0.5)

    def draws(seed):
        return {cid: (tuple(f), tuple(c)) for b in run(shards, "dali", "train", spec, 2, seed=seed)
                for cid, f, c in zip(b.ids, b.info["frames"], b.info["crop"])}

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)


def test_random_stride_in_dali_graph(shards):
    spec = ClipSpec(frames_per_clip=4, crop_size=48, ratio=1.0, random_stride=True)
    info = metas(shards)
    strides = set()
    for _ in range(3):
        for b in run(shards, "dali", "train", spec, 2, seed=len(strides)):
            for cid, f in zip(b.ids, b.info["frames"]):
                n = info[cid]["num_frames"]
                d = np.diff(f)
                assert f.min() >= 0 and f.max() < n
                if (n - 1) >= 3:  # the window holds T frames: equally spaced, stride 1..4
                    assert len(set(d.tolist())) == 1 and 1 <= d[0] <= 4
                strides.add(int(d[0]))
    assert len(strides) > 1


def test_ratio_windows_differ_as_specified(shards):
    info = metas(shards)
    full = {cid: f for b in run(shards, "dali", "eval", ClipSpec(frames_per_clip=8, crop_size=48, ratio=1.0))
            for cid, f in zip(b.ids, b.info["frames"])}
    short = {cid: f for b in run(shards, "dali", "eval", ClipSpec(frames_per_clip=8, crop_size=48, ratio=0.1))
             for cid, f in zip(b.ids, b.info["frames"])}
    assert full.keys() == short.keys() and len(full) == N_CLIPS
    for cid, f in full.items():
        n = info[cid]["num_frames"]
        assert f[0] == 0 and f[-1] == n - 1  # r = 1.0: the whole clip
        s = short[cid]
        w = sampling.window(n, 0.1, "middle")
        assert s[-1] - s[0] <= max(1, int(np.ceil(0.1 * n)))  # r = 0.1: a tenth of it
        assert s[0] == w.first and w.start >= 0.2 * n - 1e-9  # in the middle region



# --------------------------------------------------------------------------- distinct-frame decoding

@pytest.mark.parametrize("mode,kw,spec", [
    ("eval", {}, ClipSpec(frames_per_clip=32, crop_size=32, ratio=0.1)),
    ("eval", {}, ClipSpec(frames_per_clip=8, crop_size=32, ratio=1.0)),
    ("train", {"seed": 2}, ClipSpec(frames_per_clip=32, crop_size=32, ratio=0.3, random_stride=True)),
    ("train", {"seed": 2}, ClipSpec(frames_per_clip=4, crop_size=32, ratio=0.9, random_stride=True)),
    ("multiview", {"num_clips": 2, "num_crops": 1, "flip_views": False},
     ClipSpec(frames_per_clip=32, crop_size=32, ratio=0.1)),
])
def test_decoder_gets_each_distinct_frame_once(shards, mode, kw, spec):
    """The decoder restarts for every repeated index: it gets each frame once, ascending (the
    ``decoded`` output, padded with -1; a multiview sample's clips in one pass, their union), and
    decodes only the keyframe cut that leads to them (``glued``: `plan_cut` on the sample's
    table, never more than decoding from frame 0)."""
    repeats = seen = 0
    keyframes = cut_tables(shards)
    for b in run(shards, "dali", mode, spec, batch_size=2, **kw):  # 10 clips: no partial batch
        t = spec.frames_per_clip
        for cid, f, d, glued in zip(b.ids, b.info["frames"], b.info["decoded"], b.info["glued"]):
            want = sorted(set(f.reshape(-1).tolist()))  # multiview: every clip of the sample
            np.testing.assert_array_equal(d, want + [-1] * (f.size - len(want)))
            assert glued == plan_cut(keyframes[cid], want).decoded <= want[-1] + 1
            repeats += sum(len(set(row.tolist())) < t for row in f.reshape(-1, t))
            seen += len(f.reshape(-1, t))
    assert seen == N_CLIPS * kw.get("num_clips", 1)
    assert repeats == (seen if spec.frames_per_clip == 32 else 0)  # windows of 1-18 frames: T = 32 repeats


@pytest.mark.parametrize("mode,kw", [("train", {"seed": 7}), ("eval", {}),
                                     ("multiview", {"num_clips": 2, "num_crops": 1, "flip_views": False})])
def test_both_loaders_carry_out_the_same_plans(shards, mode, kw):
    """Per clip, the DALI and reference loaders report the same plan (`vidact.clip.plan`): frame
    indices, distinct frames, the frames their decoders decoded (one keyframe cut of the union of a
    multi-view sample's clips), and for train the same draws, crop box and flip (a function of
    seed, epoch and clip, whatever order the clips are read in)."""
    spec = ClipSpec(frames_per_clip=8, crop_size=32, ratio=0.5, random_stride=True)
    keyframes = cut_tables(shards)
    plans = {}
    for loader in ("dali", "torch"):
        plans[loader] = {cid: {k: v[j] for k, v in b.info.items()}
                         for b in run(shards, loader, mode, spec, batch_size=2, **kw) for j, cid in enumerate(b.ids)}
    dali, ref = plans["dali"], plans["torch"]
    assert dali.keys() == ref.keys() and len(dali) == N_CLIPS
    for cid, info in dali.items():
        assert info.keys() == ref[cid].keys()
        for key, value in info.items():
            np.testing.assert_array_equal(value, ref[cid][key], err_msg=f"{cid} {key}")
        union = np.unique(info["frames"])
        assert info["glued"] == plan_cut(keyframes[cid], union).decoded
    if mode == "train":
        assert len({float(i["window_u"]) for i in dali.values()}) == N_CLIPS


def test_short_windows_expand_to_the_reference_clip(shards):
    """T = 32 from windows of 1-6 frames: the repeated frames are copies of one decoded frame,
    and the clips equal the reference loader's (which decodes every index), in eval and
    multiview with two temporal clips."""
    spec = ClipSpec(frames_per_clip=32, crop_size=32, ratio=0.1)
    for mode, kw in (("eval", {}), ("multiview", {"num_clips": 2, "num_crops": 1})):
        dali = {i: (v, f) for b in run(shards, "dali", mode, spec, **kw)
                for i, v, f in zip(b.ids, b.video, b.info["frames"])}
        ref = {i: v for b in run(shards, "torch", mode, spec, **kw) for i, v in zip(b.ids, b.video)}
        assert dali.keys() == ref.keys() and len(dali) == N_CLIPS
        for i, (video, frames) in dali.items():
            assert float((video - ref[i]).abs().mean()) <= PARITY, (mode, i)
            clips = video.reshape(-1, *video.shape[-4:]) if mode == "multiview" else video[None]
            f = frames.reshape(-1, 32)
            for c, clip in enumerate(clips):  # multiview: views of clip 0 (plain, flipped), then clip 1
                row = f[c // 2] if mode == "multiview" else f[0]
                same = row[1:] == row[:-1]
                assert same.any() and torch.equal(clip[1:][same], clip[:-1][same])
                assert not torch.equal(clip[1:][~same], clip[:-1][~same]) or not (~same).any()


# --------------------------------------------------------------------------- transforms



def roi_resize(frames: np.ndarray, box, size: int) -> torch.Tensor:
    """Crop the fractional window `box` = (y0, x0, h, w) and resize, with torch alone."""
    y0, x0, h, w = (float(v) for v in box)
    x = to_tchw(frames).float()
    H, W = x.shape[-2:]
    # Sample the window's pixel centers bilinearly (grid_sample), then area-average.
    scale = 4
    ys = y0 + (torch.arange(size * scale) + 0.5) * h / (size * scale)
    xs = x0 + (torch.arange(size * scale) + 0.5) * w / (size * scale)
    gy, gx = torch.meshgrid(ys / H * 2 - 1, xs / W * 2 - 1, indexing="ij")
    grid = torch.stack([gx, gy], -1).expand(x.shape[0], -1, -1, -1)
    fine = F.grid_sample(x, grid, mode="bilinear", align_corners=False, padding_mode="border")
    return F.avg_pool2d(fine, scale)


@pytest.mark.parametrize("t", [8, 16, 32])
@pytest.mark.parametrize("ratio,window", [(0.3, "middle"), (1.0, "middle"), (0.5, "prefix")])
def test_cut_clips_equal_the_reference_loaders(shards, t, ratio, window):
    """On format-2 shards DALI decodes keyframe cuts in the graph, the reference loader its own
    cut through PyAV: the same frame indices and the same pixels, in eval and in two-clip
    multiview (decoded as one union), repeats included (T = 32 over windows of 4-60 frames)."""
    spec = ClipSpec(frames_per_clip=t, crop_size=32, ratio=ratio, window=window)
    for mode, kw in (("eval", {}), ("multiview", {"num_clips": 2, "num_crops": 1, "flip_views": False})):
        dali = {i: (v, f) for b in run(shards, "dali", mode, spec, **kw)
                for i, v, f in zip(b.ids, b.video, b.info["frames"])}
        ref = {i: (v, f) for b in run(shards, "torch", mode, spec, **kw)
               for i, v, f in zip(b.ids, b.video, b.info["frames"])}
        assert dali.keys() == ref.keys() and len(dali) == N_CLIPS
        for i, (video, frames) in dali.items():
            np.testing.assert_array_equal(frames, ref[i][1])
            diff = float((video - ref[i][0]).abs().mean())
            assert diff <= PARITY, (mode, i, diff)


def test_train_clip_has_one_crop_and_flip_for_all_frames(shards):
    spec = ClipSpec(frames_per_clip=6, crop_size=48, ratio=1.0)
    flips = set()
    checked = 0
    for batch in run(shards, "dali", "train", spec, batch_size=5, seed=11):
        for cid, video, frames, box, flip in zip(batch.ids, batch.video, batch.info["frames"],
                                                  batch.info["crop"], batch.info["flip"]):
            src = decode_rgb(shard_video(shards, cid), frames)
            mine = ref_normalize(roi_resize(src, box, 48), spec)
            other = mine if flip else mine.flip(-1)
            mine = mine.flip(-1) if flip else mine
            err = (video - mine).abs().mean(dim=(1, 2, 3))  # per frame
            wrong = (video - other).abs().mean(dim=(1, 2, 3))
            assert err.max() < 0.08, (cid, err)
            assert (wrong > 4 * err).all()  # the opposite flip is clearly worse on every frame
            flips.add(int(flip))
            checked += 1
    assert checked == N_CLIPS and flips == {0, 1}


def test_dali_eval_equals_reference_loader(shards):
    spec = ClipSpec(frames_per_clip=8, crop_size=48, ratio=0.7)
    dali = {i: v for b in run(shards, "dali", "eval", spec) for i, v in zip(b.ids, b.video)}
    ref = {i: v for b in run(shards, "torch", "eval", spec) for i, v in zip(b.ids, b.video)}
    assert dali.keys() == ref.keys() and len(dali) == N_CLIPS
    diffs = [float((dali[i] - ref[i]).abs().mean()) for i in dali]
    print(f"DALI vs reference eval: mean abs diff {np.mean(diffs):.4f} (max per clip {max(diffs):.4f})")
    assert max(diffs) <= PARITY  # the same decode and resize: YUV -> RGB roundings apart, ~1e-4
    # The frames are the right ones: one frame later is clearly different.
    for i in dali:
        shifted = (dali[i][1:] - ref[i][:-1]).abs().mean()
        assert shifted > 3 * (dali[i] - ref[i]).abs().mean() or dali[i].shape[0] == 1


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_multiview_six_views_in_documented_order(shards, loader):
    spec = ClipSpec(frames_per_clip=4, crop_size=48, ratio=1.0)
    info = metas(shards)
    eval_out = {i: v for b in run(shards, loader, "eval", spec) for i, v in zip(b.ids, b.video)}
    batches = run(shards, loader, "multiview", spec, batch_size=3)
    assert len(eval_out) == N_CLIPS and sorted(i for b in batches for i in b.ids) == sorted(eval_out)
    for batch in batches:
        assert batch.video.shape[1:] == (6, 4, 3, 48, 48)
        for cid, views in zip(batch.ids, batch.video):
            meta = info[cid]
            torch.testing.assert_close(views[0], eval_out[cid])  # view 0: the eval center crop
            for j in range(3):  # views 3..5: views 0..2 flipped
                torch.testing.assert_close(views[3 + j], views[j].flip(-1))
            # views 1, 2: left/right (landscape) or top/bottom (portrait) of the resized clip
            x = to_tchw(decode_rgb(shard_video(shards, cid), batch.info["frames"][batch.ids.index(cid)][0]))
            x = ref_resize(x, resize_shorter_size(x.shape[-2], x.shape[-1], spec.resize_short))
            landscape = meta["width"] >= meta["height"]
            for j, pos in ((1, (0.5, 0.0) if landscape else (0.0, 0.5)), (2, (0.5, 1.0) if landscape else (1.0, 0.5))):
                want = ref_normalize(ref_crop(x, 48, *pos, False), spec)
                assert (views[j] - want).abs().mean() <= PARITY
            distinct = {tuple(v.flatten()[:200].tolist()) for v in views}
            if meta["width"] != meta["height"]:
                assert len(distinct) == 6


def test_multiview_temporal_clips(shards):
    spec = ClipSpec(frames_per_clip=4, crop_size=48, ratio=0.5)
    info = metas(shards)
    batches = run(shards, "dali", "multiview", spec, batch_size=5, num_clips=2)
    assert sum(len(b.ids) for b in batches) == N_CLIPS
    for batch in batches:
        assert batch.video.shape[1] == 12
        for cid, frames in zip(batch.ids, batch.info["frames"]):
            n = info[cid]["num_frames"]
            for k, u in enumerate(sampling.temporal_view_fractions(2)):
                np.testing.assert_array_equal(frames[k], sampling.frame_indices(n, 4, 0.5, "middle", u))


@pytest.mark.parametrize("dtype,want", [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                        ("fp32", torch.float32)])
def test_output_contract(shards, dtype, want):
    spec = ClipSpec(frames_per_clip=5, crop_size=32, dtype=dtype, norm="half")
    for loader in ("dali", "torch"):
        b = run(shards, loader, "eval", spec, batch_size=4)[0]
        assert b.video.shape == (4, 5, 3, 32, 32) and b.video.dtype == want
        assert b.label.dtype == torch.int64 and b.label.shape == (4,)
        assert all(isinstance(i, str) for i in b.ids)
        assert -1.01 <= float(b.video.float().min()) and float(b.video.float().max()) <= 1.01


# --------------------------------------------------------------------------- epochs and ranks

@pytest.mark.parametrize("loader", ["dali", "torch"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_two_ranks_cover_each_sample_once(shards, loader, mode):
    spec = ClipSpec(frames_per_clip=2, crop_size=32)
    ids = []
    for rank in (0, 1):
        L = build_loader(shards, "train", loader, mode, spec, batch_size=1, device="cpu", rank=rank,
                         world_size=2, workers=2)
        got = [i for b in L for i in b.ids]
        assert len(got) == len(L) == N_CLIPS // 2
        ids.extend(got)
    assert sorted(ids) == sorted(metas(shards))


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_partial_last_batch(shards, loader):
    spec = ClipSpec(frames_per_clip=2, crop_size=32)
    L = build_loader(shards, "train", loader, "eval", spec, batch_size=3, device="cpu", workers=2)
    for _ in range(2):  # two epochs, same shape
        sizes = [len(b.ids) for b in L]
        assert sizes == [3, 3, 3, 1] and len(L) == 4
    T = build_loader(shards, "train", loader, "train", spec, batch_size=3, device="cpu", workers=2)
    for _ in range(2):
        sizes = [len(b.ids) for b in T]
        assert sizes == [3, 3, 3] and len(T) == 3  # train drops the partial batch


# --------------------------------------------------------------------------- bad shards

def copy_set(ss: ShardSet, dst: Path) -> Path:
    shutil.copytree(ss.root, dst)
    return dst


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_missing_shard_is_named(shards, tmp_path, loader):
    root = copy_set(shards, tmp_path / "s")
    victim = sorted(root.glob("train-*.tar"))[1]
    victim.unlink()
    with pytest.raises(ShardError, match=victim.name):
        run(ShardSet.open(root), loader)


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_corrupt_sample_is_named_and_left_out(shards, tmp_path, loader):
    """A sample whose video is garbage (tar and index intact): said once, naming its shard and
    key, and left out; the other clips are handed out (tests/test_damaged.py: every kind)."""
    root = copy_set(shards, tmp_path / "s")
    tar = sorted(root.glob("train-*.tar"))[0]
    data = bytearray(tar.read_bytes())
    # Overwrite the middle of the first video member (it starts after a 512-byte tar header).
    idx = (root / tar.name.replace(".tar", ".idx")).read_text().split("\n")[1].split()
    offset, size, name = int(idx[1]), int(idx[2]), idx[3]
    data[offset: offset + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    tar.write_bytes(bytes(data))
    key = name.split(".")[0]
    L = build_loader(ShardSet.open(root), "train", loader, "eval", ClipSpec(frames_per_clip=8, crop_size=48), 2,
                     device="cpu", workers=2)
    ids = [i for b in L for i in b.ids]
    assert len(L.skipped) == 1 and f"{tar.name}: sample {key}: " in L.skipped[0], L.skipped
    assert len(ids) == N_CLIPS - 1 and key not in ids


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_frame_count_past_the_video_end_is_named_and_left_out(shards, tmp_path, loader):
    """A sample whose frame count claims more frames than its video holds (DALI's decoder would
    pad with black frames): checked before decoding, said once naming shard and sample, left out."""
    root = copy_set(shards, tmp_path / "s")
    tar = sorted(root.glob("train-*.tar"))[0]
    key, _claimed = overclaim_frames(tar, 20)
    L = build_loader(ShardSet.open(root), "train", loader, "eval", ClipSpec(frames_per_clip=8, crop_size=32), 2,
                     device="cpu", workers=2)
    ids = [i for b in L for i in b.ids]
    assert len(L.skipped) == 1 and L.skipped[0].startswith(f"{tar}: sample {key}: ") and key not in ids


def test_not_a_shard_set(tmp_path):
    with pytest.raises(ShardError, match="not a shard set"):
        build_loader(tmp_path, "train", "dali")


# --------------------------------------------------------------------------- preview

def test_preview_png_and_npz(shards, tmp_path):
    png, npz = tmp_path / "sheet.png", tmp_path / "clips.npz"
    base = [sys.executable, "-m", "vidact.preview", "--shards", str(shards.root), "--split", "train",
            "--frames", "4", "--crop-size", "32", "--batch-size", "3", "--device", "cpu"]
    subprocess.run(base + ["--out", str(png)], check=True, cwd=ROOT, capture_output=True)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (4 * 96, 3 * (96 + 14))
    subprocess.run(base + ["--out", str(npz), "--loader", "torch", "--mode", "eval"], check=True,
                   cwd=ROOT, capture_output=True)
    data = np.load(npz)
    assert data["video"].shape == (3, 4, 3, 32, 32) and data["frames"].shape == (3, 4)
    assert len(data["ids"]) == 3 and data["label"].tolist() == [int(x) for x in data["label"]]
    bad = subprocess.run(base + ["--out", str(png), "--ratio", "0"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "ratio" in bad.stderr


@pytest.mark.parametrize("cores,local_ranks,pipelines,batch,gpu,workers,want", [
    (16, 1, 1, 8, False, None, 16),
    (16, 8, 1, 8, False, None, 2),  # torchrun --nproc-per-node 8: each rank its 2 cores
    (16, 8, 1, 8, True, None, 8),  # CUDA: a decoder thread (NVDEC session) per clip of the batch
    (16, 1, 2, 4, True, None, 8),
    (16, 1, 7, 4, False, None, 2),
    (2, 4, 1, 1, False, None, 1),  # never 0
    (16, 8, 1, 2, False, 6, 6),  # --workers is this process's count
])
def test_dali_threads(cores, local_ranks, pipelines, batch, gpu, workers, want):
    from vidact.data.tuning import dali_threads

    assert dali_threads(cores, local_ranks, pipelines, batch, gpu, workers) == want


def test_rank_cores_follow_affinity_and_local_world_size(monkeypatch):
    from vidact.data import tuning

    monkeypatch.setattr(tuning.os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert (tuning.rank_cores(), tuning.local_world_size()) == (3, 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert tuning.local_world_size() == 1


@pytest.mark.parametrize("gpu,batch,samples,pipelines,workers,cores,ranks,want", [
    (False, 8, 1000, None, None, 2, 1, (2, 1)),  # CPU: one single-thread pipeline per core
    (False, 8, 10000, None, None, 32, 1, (8, 4)),  # at most MAX_AUTO_PIPELINES, threads shared out
    (False, 8, 100, None, None, 16, 1, (1, 16)),  # 100 samples: readers of 8+ batches -> one
    (False, 4, 100, None, None, 16, 2, (3, 2)),  # 2 local ranks: 8 cores each; 100 // 32 = 3
    (False, 8, 1000, None, 3, 16, 1, (3, 1)),  # --workers: this process's threads
    (False, 8, 1000, 1, None, 4, 1, (1, 4)),  # --dali-pipelines as set
    (True, 8, 1000, None, None, 4, 1, (1, 8)),  # GPU: one pipeline, a thread per clip
])
def test_loader_plan_follows_the_machine(gpu, batch, samples, pipelines, workers, cores, ranks, want):
    from vidact.data.tuning import plan_loader

    plan = plan_loader(gpu, batch, samples, pipelines, workers, cores=cores, local_ranks=ranks)
    assert (plan.pipelines, plan.threads) == want and plan.why


def test_auto_loader_says_what_it_chose(shards, caplog, monkeypatch):
    from vidact.data import dali

    monkeypatch.setattr(dali, "_NOTED", set())  # said once per process: earlier tests said it
    spec = ClipSpec(frames_per_clip=4, crop_size=32, ratio=1.0)
    with caplog.at_level(logging.INFO, logger="vidact.data.dali"):
        loader = build_loader(shards, "train", "dali", "eval", spec, 1, device="cpu", workers=2)
    assert (loader.pipelines, loader.threads) == (1, 2)  # 10 clips: too few for two readers of 8 batches
    assert any("1 pipeline x 2 threads" in r.getMessage() and "8+ batches" in r.getMessage() for r in caplog.records)


def test_small_clips_fail_the_gpu_check_at_start(shards):
    """The CPU fixture's clips (64-96 px) are under NVDEC's minimum: the DALI loader on CUDA
    refuses them at start, naming a clip, instead of failing mid-epoch."""
    from vidact.data.guards import check_nvdec_size

    with pytest.raises(ShardError, match=r"train-\d+\.tar: sample \w+: \d+x\d+ px, under the 128 px"):
        check_nvdec_size(shards, "train")
    check_nvdec_size(shards, "train", min_side=64)


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_flip_probability_zero_never_flips(shards, loader):
    spec = ClipSpec(frames_per_clip=2, crop_size=32, flip=0.0)
    flips = [int(f) for b in run(shards, loader, "train", spec, batch_size=2, seed=4) for f in b.info["flip"]]
    assert len(flips) == N_CLIPS and set(flips) == {0}


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_train_ranks_get_equal_batch_counts(shards, loader):
    """10 clips over 3 ranks (shares 3, 3, 4): every rank yields 3 batches of 1, so DDP ranks
    step together; the one extra clip of rank 2 is left for another epoch."""
    spec = ClipSpec(frames_per_clip=2, crop_size=32)
    for rank in range(3):
        L = build_loader(shards, "train", loader, "train", spec, batch_size=1, device="cpu", rank=rank,
                         world_size=3, workers=2)
        for _ in range(2):
            assert len(L) == 3 and len(list(L)) == 3


def test_several_dali_pipelines_per_process(shards):
    """Two pipelines per rank (one per hardware decoder on a GPU): the eval output is the same
    set of clips with the same values, and 2 ranks x 2 pipelines still cover every clip once."""
    spec = ClipSpec(frames_per_clip=4, crop_size=32, ratio=0.7)
    one = {i: v for b in run(shards, "dali", "eval", spec) for i, v in zip(b.ids, b.video)}
    two = {i: v for b in build_loader(shards, "train", "dali", "eval", spec, 4, device="cpu", workers=2,
                                      dali_pipelines=2) for i, v in zip(b.ids, b.video)}
    assert one.keys() == two.keys()
    for i in one:
        torch.testing.assert_close(one[i], two[i])
    ids, counts = [], []
    for rank in (0, 1):
        L = build_loader(shards, "train", "dali", "eval", spec, 2, device="cpu", rank=rank, world_size=2,
                         dali_pipelines=2)
        got = [i for b in L for i in b.ids]
        assert len(list(L)) == len(L)
        ids.extend(got)
        T = build_loader(shards, "train", "dali", "train", spec, 2, device="cpu", rank=rank, world_size=2,
                         dali_pipelines=2)
        counts.append([len(T), len(list(T)), len(list(T))])
    assert sorted(ids) == sorted(metas(shards))
    # 10 clips, 4 readers of 2-3 clips, batch 2: one full batch per reader, 2 per rank.
    assert counts == [[2, 2, 2], [2, 2, 2]]
    with pytest.raises(ValueError, match="dali_pipelines"):
        build_loader(shards, "train", "dali", "eval", spec, 2, device="cpu", dali_pipelines=0)


@pytest.mark.parametrize("loader", ["dali", "torch"])
@pytest.mark.parametrize("done", [3, 4])  # an odd count of samples too: the reference's workers take turns
def test_resumed_train_loader_goes_on_with_the_next_batch(shards, loader, done):
    """A train loader rebuilt with ``resume=state()`` after `done` batches yields exactly the
    batches (clips and pixels) the uninterrupted loader yields next, and the next epoch too."""
    spec = ClipSpec(frames_per_clip=2, crop_size=32, flip=0.5)

    def make(resume=None):
        return build_loader(shards, "train", loader, "train", spec, batch_size=1, device="cpu", workers=2,
                            seed=5, resume=resume)

    def seen(batches):
        return [(b.ids, float(b.video.double().sum())) for b in batches]

    straight = make()
    epochs = [seen(straight), seen(straight)]
    first = make()
    it = iter(first)
    head = seen(next(it) for _ in range(done))
    again = make(resume=first.state())
    assert head + seen(again) == epochs[0]
    assert seen(again) == epochs[1]


def check_resumed_epochs(ss: ShardSet, spec: ClipSpec, pipelines: int) -> list:
    """Resumes the train loader of `ss` after 1, 3 and all but one of an epoch's batches and
    checks each hands out exactly the rest of the uninterrupted epoch (clips, pixels, frames,
    draws, crops); returns that epoch's batches."""
    def epoch(resume=None):
        return [(b.ids, b.video, b.info["frames"], b.info["window_u"], b.info["crop"]) for b in build_loader(
            ss, "train", "dali", "train", spec, 2, device="cpu", workers=2, seed=5, dali_pipelines=pipelines,
            resume=resume)]

    whole = epoch()
    for k in (1, 3, len(whole) - 1):
        rest = epoch({"epoch": 0, "batches": k})
        assert len(rest) == len(whole) - k
        for (ids, video, *info), (ids0, video0, *info0) in zip(rest, whole[k:]):
            assert ids == ids0 and torch.equal(video, video0)
            for got, want in zip(info, info0):
                np.testing.assert_array_equal(got, want)
    return whole


@pytest.mark.parametrize("pipelines", [1, 2])
def test_a_resumed_dali_epoch_goes_on_with_the_same_batches(shards, pipelines):
    """Resumed after k batches, the train loader hands out exactly the batches (clips, draws,
    pixels) an uninterrupted epoch hands out after its first k: its reader pipelines skip the
    k batches without decoding them, in the order the pipelines take turns."""
    spec = ClipSpec(frames_per_clip=4, crop_size=32, ratio=0.6, random_stride=True)
    whole = check_resumed_epochs(shards, spec, pipelines)
    assert len(whole) == N_CLIPS // 2 if pipelines == 1 else len(whole) >= 4


def test_the_gpu_guard_knows_codecs(shards, tmp_path):
    """DALI 2.4's GPU decoder opens no MJPEG, and NVDEC's minimum is 144 px for HEVC: both are
    refused in one line before a GPU pipeline starts, naming the file and what to do."""
    from vidact.data.guards import check_gpu_decodable

    for codec, says in (("mjpeg", r"manifest.json: codec mjpeg: DALI 2.4's GPU decoder opens .*--codec vp9"),
                        ("hevc", r"sample \w+: \d+x\d+ px, under the 144 px the GPU decoder \(NVDEC\) takes for hevc")):
        root = Path(shutil.copytree(shards.root, tmp_path / codec))
        m = json.loads((root / "manifest.json").read_text())
        m["encode"]["codec"] = codec
        (root / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(ShardError, match=says):
            check_gpu_decodable(ShardSet.open(root), "train")


@pytest.mark.parametrize("codec,capability,refused", [
    ("av1", (9, 0), "Hopper"), ("av1", (8, 0), "GA100"), ("av1", (8, 9), None), ("av1", (12, 0), None),
    ("vp9", (9, 0), None), ("vp9", (5, 0), "1st-gen Maxwell"), ("vp9", (5, 2), None), ("hevc", (6, 1), None),
])
def test_the_gpu_guard_knows_the_device(codec, capability, refused):
    """The codecs NVDEC decodes differ by GPU (AV1 on Ada, not on Hopper): a set the GPU at hand
    cannot decode is refused in one line naming the GPU, its architecture and the way out;
    codecs only some GPUs of an architecture take are left to the driver."""
    from vidact.data.guards import nvdec_refusal

    line = nvdec_refusal(codec, capability, "GPU X")
    if refused is None:
        assert line is None
    else:
        assert line.startswith(f"codec {codec}: NVDEC on GPU X (compute capability {capability[0]}.{capability[1]}, ")
        assert refused in line and "--codec vp9" in line and "\n" not in line


def test_every_eval_epoch_is_the_same_with_several_pipelines(shards):
    """10 clips over 4 readers of 2-3 clips, batch 2: DALI pads the last batch of every reader to
    the largest reader's share, so a reader kept for the next epoch would start it with a batch of
    repeats; each epoch gets readers of its own, and every epoch hands out the same clips."""
    spec = ClipSpec(frames_per_clip=2, crop_size=32)
    L = build_loader(shards, "train", "dali", "eval", spec, 2, device="cpu", workers=2, dali_pipelines=4)
    epochs = [[i for b in L for i in b.ids] for _ in range(3)]
    assert epochs[0] == epochs[1] == epochs[2] and sorted(epochs[0]) == sorted(metas(shards))


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_an_epoch_left_unfinished_goes_on_where_it_stopped(shards, loader):
    """Both loaders: iterating again after leaving an epoch after 2 batches hands out the rest of
    that epoch (not a new one), and the epoch after is whole."""
    spec = ClipSpec(frames_per_clip=2, crop_size=32)
    for mode in ("eval", "train"):
        L = build_loader(shards, "train", loader, mode, spec, 2, device="cpu", workers=2, seed=1)
        whole = [b.ids for b in build_loader(shards, "train", loader, mode, spec, 2, device="cpu", workers=2,
                                             seed=1)]
        it = iter(L)
        head = [next(it).ids for _ in range(2)]
        del it
        assert head + [b.ids for b in L] == whole, (loader, mode)
        assert len([b.ids for b in L]) == len(whole)


@pytest.mark.parametrize("pipelines", [1, 2])
def test_a_resume_restores_the_readers_instead_of_replaying(shards, pipelines, caplog):
    """``resume=state()`` taken after k batches holds each reader's checkpoint: the resumed loader
    restores them (no replay of the k batches) and hands out the rest of the epoch, pixels equal;
    the same state under another pipeline count replays, said in one line."""
    spec = ClipSpec(frames_per_clip=4, crop_size=32, ratio=0.6, random_stride=True)

    def loader(resume=None, p=pipelines):
        return build_loader(shards, "train", "dali", "train", spec, 1, device="cpu", workers=2, seed=5,
                            dali_pipelines=p, resume=resume, shuffle_buffer=4)

    whole = [(b.ids, b.video) for b in loader()]
    first = loader()
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state()
    assert len(state["readers"]) == pipelines and all(isinstance(r, bytes) for r in state["readers"])
    resumed = loader(state)
    assert resumed.restored  # taken up, not replayed
    rest = [(b.ids, b.video) for b in resumed]
    assert [i for i, _ in rest] == [i for i, _ in whole[3:]]
    assert all(torch.equal(v, w) for (_, v), (_, w) in zip(rest, whole[3:]))
    with caplog.at_level(logging.INFO, logger="vidact.data.dali"):
        other = loader(state, p=3 - pipelines)
    assert not other.restored and any("reading its first 3 batches again" in r.getMessage() for r in caplog.records)
