"""The JPEG-frames tier (`make_shards --codec jpeg`): what the shards hold, that a frame folder's
own JPEGs are kept bit for bit, and that DALI's graphs decode exactly the clip's distinct frames
to the pixels of the reference loader (train, eval, multiview, repeats)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import overclaim_frames, which_frame, write_frame_folder
from PIL import Image, JpegImagePlugin
from test_loaders import (
    CLIPS,
    N_CLIPS,
    check_resumed_epochs,
    clip_frames,
    run,
    write_sources,
)

from vidact import jpeg_frames
from vidact.clip.geometry import whole_box
from vidact.clip.plan import Planner, SampleTables
from vidact.clip.resample import resize
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.data.feed import ClipFeed, FeedOrderError, plan_batch
from vidact.data.guards import locate_bad_sample
from vidact.data.reference import normalize as ref_normalize
from vidact.data.reference import to_tchw
from vidact.prep.make_shards import main as make_shards
from vidact.shards import JPEG_EXT, META_EXT, OFFSETS_EXT, ShardSet, iter_tar_samples


@pytest.fixture(scope="module")
def jpeg_set(tmp_path_factory) -> ShardSet:
    """The loader tests' ten clips (MJPEG AVIs of 12-60 frames, landscape and portrait), as JPEG frames."""
    src = write_sources(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("jpeg")
    assert make_shards([str(src), "--out", str(out), "--workers", "1", "--val-fraction", "0", "--codec", "jpeg",
                        "--shard-size-mb", "0.2", "--min-side", "0"]) == 0
    ss = ShardSet.open(out)
    assert ss.count("train") == N_CLIPS and len(ss.tars("train")) > 1
    return ss


def samples(ss: ShardSet) -> dict[str, dict]:
    """{clip id: {ext: bytes}} of the train split."""
    return {json.loads(s[META_EXT])["id"]: s for tar in ss.tars("train") for _k, s in iter_tar_samples(tar)}


def test_jpeg_shards_hold_one_baseline_420_jpeg_per_frame(jpeg_set):
    encode = jpeg_set.manifest["encode"]
    assert (encode["codec"], encode["quality"], encode["video_ext"]) == ("jpeg", 90, JPEG_EXT)
    assert jpeg_set.manifest["format"] == 2
    found = samples(jpeg_set)
    assert jpeg_set.manifest["bytes_per_clip"] == round(np.mean([len(s[JPEG_EXT]) for s in found.values()]))
    for cid, s in found.items():
        meta, data = json.loads(s[META_EXT]), s[JPEG_EXT]
        offsets = np.frombuffer(s[OFFSETS_EXT], "<i4")
        assert len(offsets) == meta["num_frames"] + 1 and offsets[-1] == len(data) == meta["bytes"]
        assert meta["psnr"] > 30
        for i in (0, meta["num_frames"] // 2, meta["num_frames"] - 1):
            with Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])) as im:
                assert im.format == "JPEG" and not im.info.get("progressive")
                assert JpegImagePlugin.get_sampling(im) == 2 and im.size == (meta["width"], meta["height"])
                level = float(np.asarray(im.convert("RGB"), np.float64).mean())
            source = clip_frames(CLIPS.index(next(c for c in CLIPS if c[1] == cid)), meta["width"],
                                 meta["height"], meta["num_frames"])
            nearest = int(np.argmin(np.abs(source.reshape(len(source), -1).mean(axis=1) - level)))
            assert nearest == i, (cid, i, nearest)  # brightness steps by 3 levels a frame


def frame_folders(root: Path) -> dict[str, Path]:
    """Three frame folders: one of baseline 4:2:0 JPEGs at an aligned size (kept as they are),
    one progressive, one at a size off the 16-pixel grid (both encoded anew)."""
    folders = {"kept": root / "walk" / "kept", "progressive": root / "walk" / "progressive",
               "unaligned": root / "run" / "unaligned"}
    write_frame_folder(folders["kept"], 12, 64, 48)
    for p in write_frame_folder(folders["progressive"], 12, 64, 48):
        with Image.open(p) as im:
            im.load()
            im.save(p, quality=95, progressive=True)
    write_frame_folder(folders["unaligned"], 12, 70, 50)
    return folders


def test_frame_folder_jpegs_are_kept_bit_for_bit(tmp_path):
    folders = frame_folders(tmp_path / "src")
    out = tmp_path / "shards"
    assert make_shards([str(tmp_path / "src"), "--out", str(out), "--workers", "1", "--val-fraction", "0",
                        "--codec", "jpeg", "--min-side", "0"]) == 0
    found = samples(ShardSet.open(out))
    assert found.keys() == folders.keys()
    for name, folder in folders.items():
        s = found[name]
        offsets = np.frombuffer(s[OFFSETS_EXT], "<i4")
        stored = [hashlib.sha256(s[JPEG_EXT][a:b]).hexdigest() for a, b in zip(offsets[:-1], offsets[1:])]
        files = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())]
        meta = json.loads(s[META_EXT])
        if name == "kept":
            assert stored == files and meta["psnr"] == 100.0
        else:  # re-encoded: other bytes, still baseline 4:2:0 at the aligned size, the right frames
            assert not set(stored) & set(files) and meta["psnr"] < 100.0
            assert (meta["width"], meta["height"]) == (64, 48)  # 70 x 50 to the 16-pixel grid
            frames, decoded = jpeg_frames.decode_frames(s[JPEG_EXT], offsets, [0, 5, 11])
            assert decoded == 3
            assert [which_frame(f, 12) for f in frames] == [0, 5, 11]


def test_make_shards_says_bytes_per_clip_against_vp9(tmp_path, caplog):
    frame_folders(tmp_path / "src")
    with caplog.at_level(logging.INFO, logger="vidact.make_shards"):
        assert make_shards([str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--workers", "1",
                            "--codec", "jpeg", "--min-side", "0", "--val-fraction", "0"]) == 0
    line = next(r.getMessage() for r in caplog.records if "KiB per clip as jpeg" in r.getMessage())
    assert "as vp9 (gop 4, crf 28)" in line, line


@pytest.mark.parametrize("t,ratio", [(8, 1.0), (16, 0.3), (32, 0.1)])
def test_dali_decodes_each_distinct_frame_once_and_equals_the_reference(jpeg_set, t, ratio):
    """Eval and two-clip multiview: DALI's clips equal the reference loader's (libjpeg-turbo both,
    the same resize: the same pixels), both decode the distinct frames once (multiview: their
    union); T = 32 over windows of 1-6 frames repeats frames."""
    spec = ClipSpec(frames_per_clip=t, crop_size=32, ratio=ratio)
    for mode, kw in (("eval", {}), ("multiview", {"num_clips": 2, "num_crops": 1, "flip_views": False})):
        dali = {i: (v, f, g) for b in run(jpeg_set, "dali", mode, spec, **kw)
                for i, v, f, g in zip(b.ids, b.video, b.info["frames"], b.info["glued"])}
        ref = {i: (v, f, g) for b in run(jpeg_set, "torch", mode, spec, **kw)
               for i, v, f, g in zip(b.ids, b.video, b.info["frames"], b.info["glued"])}
        assert dali.keys() == ref.keys() and len(dali) == N_CLIPS
        for i, (video, frames, glued) in dali.items():
            np.testing.assert_array_equal(frames, ref[i][1])
            assert glued == ref[i][2] == len(np.unique(frames)), (mode, i)
            assert float((video - ref[i][0]).abs().max()) < 1e-5, (mode, i)


def test_train_clip_is_the_reference_crop_of_the_frames_it_names(jpeg_set):
    """Train: each clip is the drawn window of the JPEG frames it reports (repeats included), one
    crop and flip for all: the whole pixels of its drawn box, resized as the reference resizes,
    to the pixel; ``glued`` counts its distinct frames."""
    spec = ClipSpec(frames_per_clip=8, crop_size=40, ratio=0.5)
    found, checked, flips = samples(jpeg_set), 0, set()
    for batch in run(jpeg_set, "dali", "train", spec, batch_size=5, seed=3):
        for cid, video, frames, glued, box, flip in zip(batch.ids, batch.video, batch.info["frames"],
                                                        batch.info["glued"], batch.info["crop"], batch.info["flip"]):
            s = found[cid]
            src, decoded = jpeg_frames.decode_frames(s[JPEG_EXT], s[OFFSETS_EXT], frames)
            assert glued == decoded == len(np.unique(frames))
            top, left, h, w = whole_box(*src.shape[1:3], box)
            mine = ref_normalize(resize(to_tchw(src)[..., top:top + h, left:left + w], (40, 40)), spec)
            mine, other = (mine.flip(-1), mine) if flip else (mine, mine.flip(-1))
            assert float((video - mine).abs().max()) < 1e-5, cid  # the same pixels, normalized
            assert ((video - other).abs().mean(dim=(1, 2, 3)) > 1e-2).all(), cid
            flips.add(int(flip))
            checked += 1
    assert checked == N_CLIPS - N_CLIPS % 5 and flips == {0, 1}


@pytest.mark.parametrize("pipelines", [1, 2])
def test_a_resumed_jpeg_epoch_goes_on_with_the_same_batches(jpeg_set, pipelines):
    """JPEG-frames train batches resume as clip batches do: resumed after k batches, the loader
    hands out the batches (clips, draws, pixels) of the uninterrupted epoch after its first k,
    with one pipeline or two taking turns (each with its own frame feed)."""
    spec = ClipSpec(frames_per_clip=6, crop_size=32, ratio=0.6, random_stride=True)
    assert len(check_resumed_epochs(jpeg_set, spec, pipelines)) >= 4


def fake_samples(clips: list[tuple[int, int]]) -> list[dict]:
    """A reader batch (members by extension) of JPEG-frames clips ``(frames, label)`` whose frame
    k's JPEG bytes are ``[k] * (k + 1)`` (not JPEGs: the feed only slices them)."""
    out = []
    for n, label in clips:
        frames = [b"\xff\xd8" + bytes([k]) * (k + 1) for k in range(n)]
        meta = {"id": f"c{n}", "num_frames": n, "label_id": label, "height": 48, "width": 64}
        out.append({JPEG_EXT: np.frombuffer(b"".join(frames), np.uint8),
                    META_EXT: np.frombuffer(json.dumps(meta).encode() + b"\0\0", np.uint8),
                    "nframes.i32": np.array([n], np.int32), "label.i32": np.array([label], np.int32),
                    "hw.i32": np.array([48, 64], np.int32),
                    OFFSETS_EXT: np.cumsum([0] + [len(f) for f in frames]).astype(np.int32)})
    return out


def test_a_frame_batch_plans_each_clip_and_rebuilds_it():
    """The feed's plan of a JPEG-frames batch: only each clip's distinct frames' JPEGs go to the
    graph, each with its clip's box (whole pixels), size, view and flip, in the plan's order, and
    the frames coming back are put into clips (a view without repeats, a gather with them)."""
    spec = ClipSpec(frames_per_clip=8, crop_size=32)
    planner = Planner(spec, "train", seed=4)
    for clips, repeats in (([(40, 3), (30, 4)], False), ([(40, 3), (5, 4)], True)):
        batch, inputs = plan_batch(fake_samples(clips), planner, epoch=2, video_ext=JPEG_EXT, serial=9)
        assert batch.ids == [f"c{n}" for n, _ in clips] and batch.label.tolist() == [3, 4]
        jpegs, sources, starts, shapes, sizes, serials, pos_y, pos_x, flips = inputs
        assert (batch.index is not None) == repeats and {int(s) for s in serials} == {9}
        assert [int(s) for s in sources] == list(range(len(jpegs)))  # one clip per sample: each its own
        want = []
        for c, (n, _label) in enumerate(clips):
            plan = planner(SampleTables(n, 48, 64, jpeg=True), f"c{n}", 2)
            np.testing.assert_array_equal(batch.info["frames"][c], plan.frames[0])
            assert batch.info["glued"][c] == len(plan.distinct)
            np.testing.assert_array_equal(batch.info["crop"][c], np.float32(plan.crop))
            want += [(k, plan.box, plan.views[0][2]) for k in plan.distinct]
        assert [(j[2], j.size - 3) for j in jpegs] == [(k, k) for k, *_ in want]  # frame k's own bytes
        for (_k, box, flip), start, shape, size, y, x, f in zip(want, starts, shapes, sizes, pos_y, pos_x, flips):
            assert (*start.tolist(), *shape.tolist()) == box and size.tolist() == [32, 32]
            assert (float(y), float(x), bool(f)) == (0.5, 0.5, flip)
        decoded = torch.tensor([float(k) for k, *_ in want]).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)
        clips_out = batch.rebuild(decoded.contiguous())
        assert clips_out.shape == (2, 8, 3, 2, 2)
        np.testing.assert_array_equal(clips_out[:, :, 0, 0, 0].numpy(), batch.info["frames"])


def test_frames_that_come_back_out_of_turn_are_refused():
    feed = ClipFeed(lambda: fake_samples([(20, 1)]), Planner(ClipSpec(frames_per_clip=4, crop_size=16), "train"),
                    JPEG_EXT)
    feed(), feed()
    with pytest.raises(FeedOrderError, match="feed batch 1 came back where batch 0 was due"):
        feed.take(1)
    assert feed.take(1).serial == 1
    with pytest.raises(FeedOrderError, match="batch none was due"):
        feed.take(2)


def test_a_jpeg_clip_claiming_more_frames_than_its_table_is_named(jpeg_set, tmp_path):
    """A frame count past the frame table: the sample is checked before decoding, named once and
    left out (its slot takes another clip of the batch)."""
    root = Path(shutil.copytree(jpeg_set.root, tmp_path / "s"))
    tar = root / Path(jpeg_set.tars("train")[0]).name
    key, _claimed = overclaim_frames(tar, 5)
    L = build_loader(ShardSet.open(root), "train", "dali", "train", ClipSpec(frames_per_clip=4, crop_size=32), 2,
                     device="cpu", workers=2)
    assert all(len(b.ids) == 2 and key not in b.ids for b in L)
    assert len(L.skipped) == 1 and L.skipped[0].startswith(f"{tar}: sample {key}: ")


def test_a_damaged_frame_is_named(jpeg_set, tmp_path):
    tar = jpeg_set.tars("train")[0]
    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t]
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w", format=tarfile.USTAR_FORMAT) as t:
        for m, data in members:
            if m.name.endswith(f".{JPEG_EXT}"):
                offsets = np.frombuffer(next(d for n, d in members if n.name == m.name.replace(JPEG_EXT, OFFSETS_EXT)),
                                        "<i4")
                data = data[:offsets[1]] + b"\0" * (offsets[2] - offsets[1]) + data[offsets[2]:]  # frame 1 zeroed
            t.addfile(m, io.BytesIO(data))
    found = locate_bad_sample([str(bad)], JPEG_EXT)
    assert found and "frame 1: undecodable JPEG" in found, found


def test_reference_decode_counts_distinct_frames():
    jpegs = [jpeg_frames.encode_jpeg(np.full((16, 32, 3), 10 * k, np.uint8), 90) for k in range(6)]
    data, offsets = jpeg_frames.pack(jpegs)
    frames, decoded = jpeg_frames.decode_frames(data, offsets, [4, 1, 1, 4, 5])
    assert decoded == 3 and frames.shape == (5, 16, 32, 3)
    assert [int(round(f.mean() / 10)) for f in frames] == [4, 1, 1, 4, 5]
    with pytest.raises(jpeg_frames.FramesError, match="clip has 6"):
        jpeg_frames.decode_frames(data, offsets, [6])
    assert torch.tensor(offsets).tolist()[-1] == len(data)


def test_the_graph_decodes_exactly_the_distinct_frames(jpeg_set):
    """The JPEG-frames graph cut after its resize, fed as the loader feeds it: one frame per
    distinct frame of the batch's clips, each its clip's box at the crop size."""
    from vidact.bench.stages import build_stage

    spec = ClipSpec(frames_per_clip=16, crop_size=40, ratio=0.3)
    step = build_stage(jpeg_set.root, "train", spec, "resize", batch=5, threads=1, seed=7)
    assert step() == 5 and step() == 5


def test_bench_sweep_copies_keep_the_format(jpeg_set, tmp_path):
    """`tools/bench.py --resolutions` re-shards a JPEG-frames set as JPEG frames (its clips taken
    out as frame folders), at the asked short side."""
    from vidact.bench.sources import derived_source

    src = derived_source(jpeg_set, "train", "160p", 3, tmp_path, workers=1)
    made = ShardSet.open(src.path)
    assert (src.codec, src.clips, src.short_side) == ("jpeg", 3, 160)
    assert made.manifest["encode"]["video_ext"] == JPEG_EXT and made.manifest["layout"] == "frames"
    assert all(s[META_EXT] and len(np.frombuffer(s[OFFSETS_EXT], "<i4")) > 1 for s in samples(made).values())


@pytest.mark.slow
def test_bench_breakdown_of_a_jpeg_set_measures_every_stage(jpeg_set, tmp_path):
    """`tools/bench.py --breakdown` on JPEG frames: the reference's decoder row is PIL's
    (``pil_decode``, each distinct frame once), not PyAV reading the frames as a video; no row
    fails."""
    from test_bench import run_bench

    report, _ = run_bench(jpeg_set.root, tmp_path, "--breakdown", "--no-end-to-end")
    rows = {r["stage"]: r for r in report["breakdown"]}
    assert "pil_decode" in rows and "pyav_decode" not in rows
    assert {"dali_train_resize", "dali_train", "torch_train"} <= rows.keys()
    for stage, row in rows.items():
        assert "error" not in row and row["clips_per_s"] > 0, (stage, row)


def test_the_cpu_resize_cuts_whole_pixels_and_refuses_a_box_off_the_frame():
    """`resize_boxes` (the CPU graphs' resize): neighbouring frames with one box resize together,
    each as the reference resizes it alone, a clip (``FHWC``) at once; a box past the decoded frame
    (a json whose size lies) is refused, naming both sizes."""
    from pipelines.decoding import resize_boxes

    assert whole_box(48, 64, (0.5, 1.49, 47.6, 62.7)) == (1, 1, 47, 63)  # half up, clamped to the frame
    frames = [np.random.default_rng(k).integers(0, 256, (48, 64, 3), np.uint8) for k in range(3)]
    starts = [np.array([2, 3], np.int32)] * 2 + [np.array([0, 0], np.int32)]
    shapes = [np.array([38, 57], np.int32)] * 3
    sizes = [np.array([32, 32], np.float32)] * 3
    out = resize_boxes(frames, starts, shapes, sizes)
    for f, (y0, x0), (h, w), o in zip(frames, starts, shapes, out):
        want = resize(torch.from_numpy(f[None, y0:y0 + h, x0:x0 + w]).permute(0, 3, 1, 2), (32, 32))[0]
        assert o.shape == (32, 32, 3) and o.flags.c_contiguous
        np.testing.assert_array_equal(o, want.permute(1, 2, 0).numpy())
    clip = resize_boxes([np.stack(frames)], starts[:1], shapes[:1], [np.array([20, 24], np.float32)])
    assert clip[0].shape == (3, 20, 24, 3)
    with pytest.raises(ValueError, match=r"leave a decoded frame of 48 x 64: the clip is not the size"):
        resize_boxes(frames[:1], [np.array([0, 0], np.int32)], [np.array([50, 64], np.int32)], sizes[:1])
