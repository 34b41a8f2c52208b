"""vidact.synthetic (tools/make_synthetic.py): layouts, MPEG-4 part 2 encoding, determinism, and
that the class is carried by motion in the middle of the clip (not by any single frame or by the
clip's ends)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vidact import synthetic as ms

ALL = list(ms.CLASS_NAMES)


# ----------------------------------------------------------------------------- helpers


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def decode(path: Path) -> tuple[str, np.ndarray]:
    """(codec name, frames (T, H, W, 3) uint8) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        name = stream.codec_context.name
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return name, np.stack(frames)


def bar_track(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: x, y of the bright bar's centroid and its orientation (radians, mod pi).

    The frame is a torus (the bar wraps around the edges), so the centroid is a circular mean
    and the second moments are taken around it in wrapped coordinates.
    """
    _, h, w, _ = frames.shape
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    xs, ys = [], []
    angles = []
    for mask in luma > 180:
        yy, xx = np.nonzero(mask)
        assert len(xx) > 20, "the bar should always be visible"
        cx = (np.angle(np.exp(2j * np.pi * (xx + 0.5) / w).mean()) / (2 * np.pi) * w) % w
        cy = (np.angle(np.exp(2j * np.pi * (yy + 0.5) / h).mean()) / (2 * np.pi) * h) % h
        dx = (xx + 0.5 - cx + w / 2) % w - w / 2
        dy = (yy + 0.5 - cy + h / 2) % h - h / 2
        mu20, mu02, mu11 = (dx * dx).mean(), (dy * dy).mean(), (dx * dy).mean()
        xs.append(cx)
        ys.append(cy)
        angles.append(0.5 * math.atan2(2 * mu11, mu20 - mu02))
    return np.array(xs), np.array(ys), np.array(angles)


def unwrap_sum(values: np.ndarray, period: float) -> float:
    """Net change of a periodic quantity, summing frame-to-frame steps mapped to +-period/2."""
    steps = (np.diff(values) + period / 2) % period - period / 2
    return float(steps.sum())


def motion(frames: np.ndarray, first: int, last: int) -> tuple[float, float, float]:
    """Net (dx, dy, dtheta) of the bar from frame `first` to frame `last` (inclusive)."""
    _, h, w, _ = frames.shape
    x, y, a = bar_track(frames[first : last + 1])
    return unwrap_sum(x, w), unwrap_sum(y, h), unwrap_sum(a, math.pi)


def bulb_angle(frames: np.ndarray) -> np.ndarray:
    """Per frame: the direction (radians, full circle, y down) from the bar's centroid to the
    centroid of the red bulb, in wrapped coordinates."""
    _, h, w, _ = frames.shape
    x, y, _ = bar_track(frames)
    out = []
    for frame, cx, cy in zip(frames.astype(np.int16), x, y):
        yy, xx = np.nonzero((frame[..., 0] > 190) & (frame[..., 1] < 130) & (frame[..., 2] < 130))
        assert len(xx) > 5, "the bulb should always be visible"
        dx = np.angle(np.exp(2j * np.pi * (xx + 0.5 - cx) / w).mean()) / (2 * np.pi) * w
        dy = np.angle(np.exp(2j * np.pi * (yy + 0.5 - cy) / h).mean()) / (2 * np.pi) * h
        out.append(math.atan2(dy, dx))
    return np.array(out)


def labels_of(root: Path) -> dict[str, str]:
    return {r["id"]: r["label"] for s in ms.SPLITS for r in read_csv(root / f"{s}.csv")}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """All 6 classes, 1 clip per class and split (18 clips)."""
    root = tmp_path_factory.mktemp("videos") / "synth"
    summary = ms.make_dataset(
        root, classes=6, train_per_class=1, val_per_class=1, test_per_class=1, progress=False
    )
    return root, summary


# ----------------------------------------------------------------------------- layouts


def test_videos_layout(videos: tuple[Path, dict]) -> None:
    root, summary = videos
    assert {k: summary[k] for k in ("train", "val", "test", "clips")} == {
        "train": 6,
        "val": 6,
        "test": 6,
        "clips": 18,
    }
    assert summary["classes"] == ALL and summary["reused"] is False
    assert json.loads((root / "dictionary.json").read_text()) == {
        name: i for i, name in enumerate(sorted(ALL))
    }
    seen = set()
    for split in ms.SPLITS:
        with (root / f"{split}.csv").open() as f:
            assert f.readline() == "id,label,split\n"
        rows = read_csv(root / f"{split}.csv")
        assert len(rows) == 6
        assert sorted(r["label"] for r in rows) == sorted(ALL)  # one per class
        assert {r["split"] for r in rows} == {split}
        for r in rows:
            assert (root / r["label"] / f"{r['id']}.avi").is_file()
            seen.add(r["id"])
    assert len(seen) == 18
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(ALL)
    assert len(list(root.glob("*/*.avi"))) == 18
    truth = json.loads((root / "ground_truth.json").read_text())
    assert set(truth) == seen
    for info in truth.values():
        assert set(info) == {"fps", "num_frames", "width", "height", "action_start", "action_end"}


def test_avis_are_mpeg4_part2_with_ground_truth_frames(videos: tuple[Path, dict]) -> None:
    root, _ = videos
    truth = json.loads((root / "ground_truth.json").read_text())
    labels = labels_of(root)
    assert truth and truth.keys() == labels.keys()
    for clip_id, info in truth.items():
        path = root / labels[clip_id] / f"{clip_id}.avi"
        with av.open(str(path)) as container:
            assert container.format.name == "avi"
            stream = container.streams.video[0]
            assert stream.codec_context.name == "mpeg4"
            assert stream.codec_context.pix_fmt == "yuv420p"
            assert float(stream.average_rate) == info["fps"]
            assert (stream.width, stream.height) == (info["width"], info["height"])
            count = sum(1 for _ in container.decode(stream))
        assert count == info["num_frames"]
        assert info["width"] % 2 == 0 and info["height"] % 2 == 0
        # 2..5 s per clip; the action sits around 20%..80% of it.
        assert 2.0 - 1e-9 <= info["num_frames"] / info["fps"] <= 5.0 + 1e-9
        last = info["num_frames"] - 1
        assert 0.14 * last <= info["action_start"] <= 0.26 * last
        assert 0.74 * last <= info["action_end"] <= 0.86 * last


def test_frames_layout(tmp_path: Path) -> None:
    root = tmp_path / "hmdb"
    summary = ms.make_dataset(
        root, layout="frames", classes=3, train_per_class=2, val_per_class=1,
        test_per_class=1, seed=3, progress=False,
    )  # fmt: skip
    assert (summary["train"], summary["val"], summary["test"], summary["clips"]) == (6, 3, 3, 12)
    assert json.loads((root / "dictionary.json").read_text()) == {
        "move_left": 0,
        "move_right": 1,
        "move_up": 2,
    }
    truth = json.loads((root / "ground_truth.json").read_text())
    rows = [r for s in ms.SPLITS for r in read_csv(root / f"{s}.csv")]
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12  # ids unique dataset-wide
    assert not list(root.rglob("*.avi"))
    for r in rows:
        folder = root / r["label"] / r["id"]
        names = sorted(p.name for p in folder.iterdir())
        info = truth[r["id"]]
        assert 5 <= len(names) <= 20
        assert names == [f"frame_{i:04d}.jpg" for i in range(1, len(names) + 1)]
        assert len(names) == info["num_frames"]
        with Image.open(folder / names[0]) as im:
            assert im.format == "JPEG"
            assert im.size == (info["width"], info["height"])
        assert info["action_start"] < info["action_end"] < info["num_frames"]


def test_unlabeled_layout(tmp_path: Path) -> None:
    root = tmp_path / "unlabeled"
    summary = ms.make_dataset(
        root, layout="unlabeled", classes=4, test_per_class=2, seed=1, progress=False
    )
    assert summary["test"] == 8 and summary["clips"] == 8 and "train" not in summary
    assert not [p for p in root.iterdir() if p.is_dir()]  # no class folders
    assert not (root / "train.csv").exists() and not (root / "dictionary.json").exists()
    with (root / "answers.csv").open() as f:
        assert f.readline() == "id,label\n"
    answers = read_csv(root / "answers.csv")
    assert len(answers) == 8
    assert sorted(a["label"] for a in answers) == sorted(ALL[:4] * 2)
    assert sorted(p.stem for p in root.glob("*.avi")) == sorted(a["id"] for a in answers)
    assert all(a["id"].startswith("clip_") for a in answers)  # the id does not name the class
    truth = json.loads((root / "ground_truth.json").read_text())
    for a in answers:
        name, frames = decode(root / f"{a['id']}.avi")
        assert name == "mpeg4"
        assert len(frames) == truth[a["id"]]["num_frames"]


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_data_other_seed_differs(tmp_path: Path) -> None:
    kwargs = dict(classes=2, train_per_class=1, val_per_class=1, test_per_class=1, progress=False)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ms.make_dataset(a, seed=7, **kwargs)
    ms.make_dataset(b, seed=7, workers=2, **kwargs)  # rendered in two processes, same bytes
    ms.make_dataset(c, seed=8, **kwargs)
    for name in ("train.csv", "val.csv", "test.csv", "dictionary.json", "ground_truth.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    labels = labels_of(a)
    for clip_id, label in labels.items():
        assert (a / label / f"{clip_id}.avi").read_bytes() == (b / label / f"{clip_id}.avi").read_bytes()
    assert (a / "ground_truth.json").read_bytes() != (c / "ground_truth.json").read_bytes()
    clip_id, label = next(iter(labels.items()))
    other = labels_of(c)
    same = next((i for i, lab in other.items() if lab == label), None)
    assert same is not None
    _, fa = decode(a / label / f"{clip_id}.avi")
    _, fc = decode(c / label / f"{same}.avi")
    assert fa.shape != fc.shape or not np.array_equal(fa, fc)


def test_render_clip_is_seeded() -> None:
    one = ms.render_clip("rotate_cw", ms.clip_rng(0, 3), 128, 96, 30)
    two = ms.render_clip("rotate_cw", ms.clip_rng(0, 3), 128, 96, 30)
    three = ms.render_clip("rotate_cw", ms.clip_rng(0, 4), 128, 96, 30)
    assert one.shape == (30, 96, 128, 3) and one.dtype == np.uint8
    assert np.array_equal(one, two)
    assert not np.array_equal(one, three)


# ----------------------------------------------------------------------------- motion


def test_decoded_motion_matches_class(videos: tuple[Path, dict]) -> None:
    """In every decoded clip, the bar does what its label says between action_start and
    action_end, and goes nowhere (but does move) before and after."""
    root, _ = videos
    truth = json.loads((root / "ground_truth.json").read_text())
    assert set(labels_of(root).values()) == set(ALL)  # every class checked
    for clip_id, label in labels_of(root).items():
        info = truth[clip_id]
        _, frames = decode(root / label / f"{clip_id}.avi")
        w, h = info["width"], info["height"]
        s, e = info["action_start"], info["action_end"]
        dx, dy, da = motion(frames, s, e)
        # The bulb's direction turns the full circle, so it says which way and how far.
        turn = unwrap_sum(bulb_angle(frames[s : e + 1]), 2 * math.pi)
        expect = {  # moves go once around the frame
            "move_right": dx > 0.85 * w,
            "move_left": dx < -0.85 * w,
            "move_down": dy > 0.85 * h,
            "move_up": dy < -0.85 * h,
            "rotate_cw": da > math.pi / 2 and turn > 0.6 * math.pi,  # y down: growing is clockwise
            "rotate_ccw": da < -math.pi / 2 and turn < -0.6 * math.pi,
        }
        assert expect[label], (clip_id, label, dx, dy, da, turn, info)
        x, y, _ = bar_track(frames[[0, -1]])
        lo, hi = ms.REST_REGION
        margin = 0.1 * min(w, h)
        assert lo * w - margin < x[0] < hi * w + margin and lo * h - margin < y[0] < hi * h + margin
        if label.startswith("move_"):
            home = math.hypot(*(((a - b) + p / 2) % p - p / 2 for a, b, p in ((x[1], x[0], w), (y[1], y[0], h))))
            assert home < 0.15 * min(w, h), (clip_id, label, "a move ends where it rested")
            assert abs(turn) < math.pi / 4, (clip_id, label, turn)
            assert abs(da) < math.pi / 4, (clip_id, label, da)
            across = dy if label in ("move_left", "move_right") else dx
            assert abs(across) < 0.15 * min(w, h), (clip_id, label, dx, dy)
        else:
            assert math.hypot(dx, dy) < 0.15 * min(w, h), (clip_id, label, dx, dy)
        # Ends: jitter without a net move (the distractor motion).
        for first, last in ((0, s), (e, info["num_frames"] - 1)):
            if last - first < 3:
                continue
            x, y, _ = bar_track(frames[first : last + 1])
            assert math.hypot(unwrap_sum(x, w), unwrap_sum(y, h)) < 0.15 * min(w, h)
            steps = np.hypot(np.diff(x), np.diff(y))
            assert steps.mean() > 0.3, "the bar should jitter at the ends"


def test_prefix_carries_no_class_signal() -> None:
    """Clips of different classes drawn from the same generator are identical up to the start
    of the action and differ after it: the beginning of a clip cannot tell the class."""
    span = (12, 40)
    clips = {name: ms.render_clip(name, ms.clip_rng(5, 9), 160, 120, 50, span=span) for name in ALL}
    ref = clips["move_left"]
    for name, frames in clips.items():
        assert np.array_equal(frames[: span[0] + 1], ref[: span[0] + 1]), name
    for i, a in enumerate(ALL):
        for b in ALL[i + 1 :]:
            assert not np.array_equal(clips[a][span[0] + 2], clips[b][span[0] + 2]), (a, b)


def test_middle_frame_alone_does_not_give_direction() -> None:
    """At the middle of the action, move_left and move_right frames show the same bar (same
    size, colour and orientation) on the same background, only at mirrored offsets."""
    span = (10, 50)
    mid = 30
    left = ms.render_clip("move_left", ms.clip_rng(2, 0), 192, 144, 60, span=span)[mid]
    right = ms.render_clip("move_right", ms.clip_rng(2, 0), 192, 144, 60, span=span)[mid]
    luma_l = left.astype(np.float32).mean(axis=2)
    luma_r = right.astype(np.float32).mean(axis=2)
    bright_l, bright_r = (luma_l > 180).sum(), (luma_r > 180).sum()
    assert bright_l > 50 and abs(int(bright_l) - int(bright_r)) <= 0.1 * bright_l
    assert abs(float(left.mean()) - float(right.mean())) < 1.0
    _, _, a_l = bar_track(left[None])
    _, _, a_r = bar_track(right[None])
    assert abs(((a_l[0] - a_r[0]) + math.pi / 2) % math.pi - math.pi / 2) < 0.05


def test_bulb_points_anywhere_at_rest() -> None:
    """The rest orientation covers the full circle (the bulb is not always on one side), so the
    last frame of a turn says nothing of its direction."""
    angles = []
    for index in range(40):
        frames = ms.render_clip("rotate_cw", ms.clip_rng(12, index), 128, 96, 20, span=(4, 15))
        angles.append(bulb_angle(frames[:1])[0])
    quadrant = np.floor((np.array(angles) % (2 * math.pi)) / (math.pi / 2))
    assert set(quadrant.astype(int)) == {0, 1, 2, 3}


def test_rest_poses_do_not_depend_on_class() -> None:
    """Where the bar rests before the action is drawn the same way for every class (uniform over
    ``REST_REGION``; moves wrap around and come home): move_right clips do not start on the left."""
    xs = []
    for index in range(40):
        frames = ms.render_clip("move_right", ms.clip_rng(11, index), 128, 96, 20, span=(4, 15))
        x, _, _ = bar_track(frames[:1])
        xs.append(x[0] / 128)
    xs = np.array(xs)
    assert (xs < 0.5).mean() > 0.25 and (xs > 0.5).mean() > 0.25


# ----------------------------------------------------------------------------- variety, CLI


def test_clip_shapes_vary() -> None:
    shapes = [ms._clip_shape(ms.clip_rng(0, i), "videos") for i in range(200)]
    assert {(w, h) for w, h, _, _ in shapes} == set(ms.SIZES)
    assert {fps for _, _, fps, _ in shapes} == set(ms.FPS_CHOICES)
    assert all(w % 2 == 0 and h % 2 == 0 for w, h, _, _ in shapes)
    assert all(2 * fps <= n <= 5 * fps for _, _, fps, n in shapes)
    frames = [ms._clip_shape(ms.clip_rng(0, i), "frames")[3] for i in range(200)]
    assert min(frames) == 5 and max(frames) == 20


def test_square_and_shorter_clips_on_request() -> None:
    square = ms.Shapes(ms.SQUARE_SIZES, (1.5, 3.0))
    shapes = [ms._clip_shape(ms.clip_rng(0, i), "videos", square) for i in range(200)]
    assert {(w, h) for w, h, _, _ in shapes} == set(ms.SQUARE_SIZES) and all(w == h for w, h, _, _ in shapes)
    assert all(round(1.5 * fps) <= n <= round(3.0 * fps) for _, _, fps, n in shapes)
    # the same random draws pick the size and fps: only the size table differs
    plain = [ms._clip_shape(ms.clip_rng(0, i), "videos") for i in range(200)]
    assert [fps for _, _, fps, _ in shapes] == [fps for _, _, fps, _ in plain]
    assert ms.Shapes().as_params() == {} and square.as_params()["duration_s"] == [1.5, 3.0]


def test_generated_dataset_varies(videos: tuple[Path, dict]) -> None:
    root, _ = videos
    truth = json.loads((root / "ground_truth.json").read_text())
    assert len({(i["width"], i["height"]) for i in truth.values()}) > 1
    assert len({i["fps"] for i in truth.values()}) > 1
    assert len({i["num_frames"] for i in truth.values()}) > 1


def test_rerun_reuses_force_rewrites_foreign_dir_refused(tmp_path: Path) -> None:
    root = tmp_path / "d"
    kwargs = dict(classes=2, train_per_class=1, val_per_class=0, test_per_class=0, progress=False)
    assert ms.make_dataset(root, **kwargs)["reused"] is False
    stamp = (root / "train.csv").stat().st_mtime_ns
    assert ms.make_dataset(root, **kwargs)["reused"] is True
    assert (root / "train.csv").stat().st_mtime_ns == stamp
    assert ms.make_dataset(root, force=True, **kwargs)["reused"] is False
    assert ms.make_dataset(root, **{**kwargs, "seed": 1})["reused"] is False  # other options
    assert not list(tmp_path.glob(".d.tmp-*"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        ms.make_dataset(foreign, **kwargs)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = ms.main(
        [str(out), "--classes", "2", "--train-per-class", "1", "--val-per-class", "1",
         "--test-per-class", "0", "--seed", "4", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    assert "4 clips, videos layout (train=2, val=2, test=0) written" in capsys.readouterr().out
    assert len(read_csv(out / "train.csv")) == 2 and read_csv(out / "test.csv") == []
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["move_left", "move_right"]
    with pytest.raises(SystemExit) as exc:
        ms.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("--layout", "frames", "unlabeled", "--train-per-class", "dictionary.json"):
        assert word in text
    for bad in (["--classes", "7"], ["--classes", "1"], ["--layout", "nope"]):
        with pytest.raises(SystemExit) as exc:
            ms.main([str(tmp_path / "bad"), *bad])
        assert exc.value.code == 2
    assert not (tmp_path / "bad").exists()
