"""make_shards against real-world and hostile source folders: every entry accounted for
(sharded, rejected or ignored), videos found by content, ids that identify, a run that no file
can stop (hangs and crashes are killed), and the PSNR each clip's re-encoding cost."""

from __future__ import annotations

import faulthandler
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import (
    REPO,
    assert_is_frame,
    decode_frames,
    mux_frames,
    pattern_frame,
    write_clip,
    write_frame_folder,
)
from PIL import Image

from vidact import fidelity
from vidact.ids import assign_ids
from vidact.killable import Failed, run_killable
from vidact.prep.discovery import Source, discover
from vidact.shards import read_int32

TOOL = [sys.executable, "tools/make_shards.py"]


# ----------------------------------------------------------------------------- helpers


def make_shards(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs the CLI; a run that does not finish within `timeout` fails the test (no hang)."""
    return subprocess.run([*TOOL, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def report(out: Path) -> tuple[dict, dict[str, str], dict[str, str]]:
    """(manifest, {rejected name: reason}, {ignored name: reason}) of a shard set."""
    lines = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    by_kind = {k: {Path(r["source"]).name: r["reason"] for r in lines if r["kind"] == k}
               for k in ("rejected", "ignored")}
    assert len(lines) == sum(len(v) for v in by_kind.values()), "a line of an unknown kind, or a name twice"
    return json.loads((out / "manifest.json").read_text()), by_kind["rejected"], by_kind["ignored"]


def shard_samples(out: Path) -> dict[str, dict]:
    """{key: {"json": meta, "video": bytes}} of every sample in the set."""
    got: dict[str, dict] = {}
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t:
                key, _, ext = m.name.partition(".")
                data = t.extractfile(m).read()
                entry = got.setdefault(key, {})
                if ext == "json":
                    entry["json"] = json.loads(data)
                elif ext == "nframes.i32":
                    entry["nframes"] = read_int32(data)
                elif ext in ("ivf", "webm", "avi", "mp4"):
                    entry["video"] = data
    return got


def write_video(path: Path, encoder: str, fmt: str | None = None, n: int = 12, width: int = 64,
                height: int = 48, pix_fmt: str = "yuv420p", start: int = 0) -> Path:
    """Pattern frames (frame k shows pattern start + k) with any PyAV encoder and muxer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format=fmt) as out:
        stream = out.add_stream(encoder, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if encoder in ("mpeg2video", "mpeg1video"):
            stream.bit_rate = 2_000_000

        def frames():
            for k in range(n):
                frame = av.VideoFrame.from_ndarray(pattern_frame(start + k, width, height), format="rgb24")
                frame = frame.reformat(format=pix_fmt)
                frame.pts = k
                yield frame

        mux_frames(out, stream, frames())
    return path


def source_frame_count(path: Path) -> int:
    return len(decode_frames(path)[1])


# ----------------------------------------------------------------------------- every entry accounted for


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A user's unlabeled folder: videos in many containers (some with odd or no extension),
    notes, thumbnails, and things that cannot be read at all."""
    src = tmp_path_factory.mktemp("mixed") / "videos"
    videos = {  # id -> (path, frames)
        "clip_ts": write_video(src / "clip_ts.ts", "libx264", n=12, start=3),
        "clip_mts": write_video(src / "clip_mts.mts", "mpeg2video", "mpegts", n=13, start=5),
        "clip_m2ts": write_video(src / "clip_m2ts.m2ts", "libx264", "mpegts", n=14, start=7),
        "clip_vob": write_video(src / "clip_vob.vob", "mpeg2video", "vob", n=15, start=9),
        "clip_y4m": write_video(src / "clip_y4m.y4m", "rawvideo", "yuv4mpegpipe", n=10, start=11),
        "clip_mp4": write_clip(src / "clip_mp4.mp4", "h264", num_frames=16, start=13),
        "wrong_ext": write_video(src / "wrong_ext.dat", "libx264", "mp4", n=11, start=15),  # an mp4
        "no_ext": write_video(src / "no_ext", "libx264", "matroska", n=9, start=17),
    }
    write_frame_folder(src / "frames_clip", 8)
    (src / "frames_clip" / "Thumbs.db").write_bytes(b"\0" * 64)  # ignored, the clip is kept
    (src / "notes.txt").write_text("shot on 2024-05-01\nall clips 25 fps\n" * 40)  # FFmpeg's tty demuxer opens it
    Image.fromarray(pattern_frame(0, 64, 48)).save(src / "thumb.jpg")
    Image.fromarray(pattern_frame(1, 64, 48)).save(src / "clip_mp4.png")  # a thumbnail beside its clip
    shutil.copy(src / "thumb.jpg", src / "poster.mp4")  # a JPEG, whatever its name says
    (src / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (src / "zero.mp4").write_bytes(b"")
    (src / "garbage.avi").write_bytes(np.random.default_rng(3).integers(0, 256, 20_000, np.uint8).tobytes())
    data = videos["clip_mp4"].read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) // 3])  # moov atom lost
    os.mkfifo(src / "fifo.mp4")  # open() blocks on it: must be rejected without opening
    os.symlink(src / "nowhere.avi", src / "dangling.avi")
    (src / "folder.avi").mkdir()
    n_entries = len(list(src.iterdir()))
    out = src.parent / "out"
    started = time.monotonic()
    proc = make_shards(src, "--out", out, "--workers", 2, "--clip-timeout", 20, timeout=90)
    assert proc.returncode == 0, proc.stderr
    return dict(src=src, out=out, proc=proc, videos=videos, n=n_entries, seconds=time.monotonic() - started)


def test_every_entry_is_sharded_rejected_or_ignored(mixed):
    m, rejected, ignored = report(mixed["out"])
    got = shard_samples(mixed["out"])
    sharded = set(got)
    assert sharded == set(mixed["videos"]) | {"frames_clip"}
    assert rejected == {
        "zero.mp4": "zero-byte file",
        "garbage.avi": rejected["garbage.avi"],
        "cut.mp4": rejected["cut.mp4"],
        "fifo.mp4": "not a regular file (FIFO)",
        "dangling.avi": "dangling symlink",
        "folder.avi": "a folder, not a video file",
    }
    assert rejected["garbage.avi"].startswith("cannot open as video")
    assert rejected["cut.mp4"].startswith("cannot open as video")
    assert {k: v for k, v in ignored.items() if not v.startswith("not a video (")} == {
        ".DS_Store": "hidden file", "Thumbs.db": "not a frame image"}
    assert set(ignored) == {".DS_Store", "Thumbs.db", "notes.txt", "thumb.jpg", "clip_mp4.png", "poster.mp4"}
    assert ignored["notes.txt"] == "not a video (text)"  # FFmpeg's tty demuxer would make it a video
    for still in ("thumb.jpg", "clip_mp4.png", "poster.mp4"):  # image2 or *_pipe, as FFmpeg probes it
        assert ignored[still].startswith("not a video (still image, "), ignored[still]
    # every top-level entry once; Thumbs.db is inside the frame folder, which is one clip
    assert len(sharded) + len(rejected) + len(ignored) - 1 == mixed["n"]
    assert (m["rejected"], m["ignored"]) == (6, 6)
    assert "9 clips (test 9)" in mixed["proc"].stdout
    assert "6 rejected, 6 ignored" in mixed["proc"].stdout
    assert "rejected" in mixed["proc"].stderr and "fifo.mp4: not a regular file (FIFO)" in mixed["proc"].stderr


def test_videos_in_every_container_keep_their_frames(mixed):
    got = shard_samples(mixed["out"])
    assert len(mixed["videos"]) == 8 and set(mixed["videos"]) <= set(got)
    for vid, path in mixed["videos"].items():
        meta, n = got[vid]["json"], source_frame_count(path)
        assert meta["num_frames"] == got[vid]["nframes"] == n, vid
        assert meta["source"] == str(path) and meta["id"] == vid
        _, frames, _ = decode_frames(got[vid]["video"])
        assert len(frames) == n, vid
        start = {"clip_ts": 3, "clip_mts": 5, "clip_m2ts": 7, "clip_vob": 9, "clip_y4m": 11, "clip_mp4": 13,
                 "wrong_ext": 15, "no_ext": 17}[vid]
        for k in (0, n - 1):
            assert_is_frame(frames[k], start + k, start + n, f"{vid}[{k}]")


def test_ogg_theora_is_sharded(tmp_path):
    """The user's two .ogv files that used to vanish without a word."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("no ffmpeg CLI (apt-get install ffmpeg): PyAV's wheel has no Theora encoder")
    src = tmp_path / "src"
    src.mkdir()
    for name, n in (("walk", 10), ("run", 14)):
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v",
                        str(n), "-c:v", "libtheora", "-q:v", "8", str(src / f"{name}.ogv")], check=True, timeout=60)
    write_clip(src / "jump.mp4", "h264")
    proc = make_shards(src, "--out", tmp_path / "out", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    got = shard_samples(tmp_path / "out")
    assert set(got) == {"walk", "run", "jump"}
    assert got["walk"]["nframes"] == 10 and got["run"]["nframes"] == 14
    assert "0 rejected, 0 ignored" in proc.stdout


# ----------------------------------------------------------------------------- ids


def test_colliding_stems_get_distinct_ids(tmp_path):
    src = tmp_path / "src"
    write_clip(src / "movie-hello.avi", "mpeg4", start=0)
    write_clip(src / "movie-hello.mp4", "h264", start=20)
    write_video(src / "movie-hello.mpeg", "mpeg1video", "mpeg", start=40)
    write_clip(src / "solo.mp4", "h264", start=60)
    write_clip(src / "x.mp4", "h264", start=80)
    Image.fromarray(pattern_frame(0, 64, 48)).save(src / "x.jpg")  # a thumbnail does not collide
    out = tmp_path / "out"
    proc = make_shards(src, "--out", out, "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    got = shard_samples(out)
    ids = {k: v["json"]["id"] for k, v in got.items()}
    assert ids == {"movie-hello_avi": "movie-hello_avi", "movie-hello_mp4": "movie-hello_mp4",
                   "movie-hello_mpeg": "movie-hello_mpeg", "solo": "solo", "x": "x"}
    # the same clip behind each id (predict's CSV names each of them once, each for its own file)
    for key, want in (("movie-hello_avi", "movie-hello.avi"), ("movie-hello_mpeg", "movie-hello.mpeg")):
        assert Path(got[key]["json"]["source"]).name == want


def _src(rel: str, root: Path) -> Source:
    p = root / rel
    return Source(p.stem if p.suffix else p.name, None, "test", p, "video")


def test_id_levels_are_minimal_and_deterministic():
    root = Path("/data")
    rels = ["jump/x.avi", "run/x.avi", "jump/a.mp4", "jump/a.avi", "jump/a_mp4.webm", "run/solo.mp4",
            "run/v.1.mp4", "run/p q.mp4", "run/p_q.mp4"]
    sources = [_src(r, root) for r in rels]
    assign_ids(sources, root)
    ids = {s.path.relative_to(root).as_posix(): s.id for s in sources}
    assert ids == {
        "jump/x.avi": "jump_x_avi", "run/x.avi": "run_x_avi",  # the name alone still collides: the path
        "jump/a.mp4": "jump_a_mp4", "jump/a_mp4.webm": "a_mp4_webm",  # a_mp4 was taken by a.mp4's name
        "jump/a.avi": "a_avi",
        "run/solo.mp4": "solo", "run/v.1.mp4": "v.1",  # no collision: the stem, dots and all
        "run/p q.mp4": "run_p_q_mp4", "run/p_q.mp4": "run_p_q_mp4-2",  # same key at every level: numbered
    }
    assert len({s.key for s in sources}) == len(sources) and all("." not in s.key for s in sources)
    again = [_src(r, root) for r in reversed(rels)]
    assign_ids(again, root)
    assert {s.path.relative_to(root).as_posix(): s.id for s in again} == ids


# ----------------------------------------------------------------------------- labeled clashes


def test_labeled_layout_clashes(tmp_path):
    """CSV rows name clips by stem: one video among several same-stem files is the clip, two
    videos are a clash the CSV cannot resolve (both rejected), a file listed in two splits is
    rejected, same stems in two classes get path ids, unlisted files are ignored."""
    src = tmp_path / "src"
    write_clip(src / "jump" / "x.avi", "mpeg4")
    write_clip(src / "jump" / "x.mp4", "h264")
    write_clip(src / "jump" / "y.mp4", "h264")
    Image.fromarray(pattern_frame(0, 64, 48)).save(src / "jump" / "y.jpg")
    write_clip(src / "run" / "z.avi", "mpeg4")
    write_clip(src / "wave" / "z.avi", "mpeg4")
    write_clip(src / "wave" / "w.mp4", "h264")
    write_clip(src / "wave" / "extra.mp4", "h264")
    (src / "dictionary.json").write_text(json.dumps({"jump": 0, "run": 1, "wave": 2}))
    (src / "train.csv").write_text("id,label,split\nx,jump,train\ny,jump,train\nz,run,train\nz,wave,train\n"
                                   "w,wave,train\n")
    (src / "test.csv").write_text("id,label,split\nw,wave,test\n")
    out = tmp_path / "out"
    proc = make_shards(src, "--out", out, "--workers", 2, "--val-fraction", 0)
    assert proc.returncode == 0, proc.stderr
    m, rejected, ignored = report(out)
    assert rejected == {"x.avi": "ambiguous: 'x' in train.csv matches x.avi, x.mp4",
                        "x.mp4": "ambiguous: 'x' in train.csv matches x.avi, x.mp4",
                        "w.mp4": "listed with different splits: train in train.csv, test in test.csv"}
    assert ignored.pop("y.jpg").startswith("not a video (still image")
    assert ignored == {"extra.mp4": "not listed in train.csv, test.csv"}
    got = shard_samples(out)
    assert {k: (v["json"]["label"], v["json"]["split"]) for k, v in got.items()} == {
        "y": ("jump", "train"), "run_z_avi": ("run", "train"), "wave_z_avi": ("wave", "train")}
    assert m["layout_files"] == [str(src / "train.csv"), str(src / "test.csv"), str(src / "dictionary.json")]


def test_folder_names_layout_counts_every_file(tmp_path):
    src = tmp_path / "src"
    write_clip(src / "jump" / "x.avi", "mpeg4")
    write_video(src / "jump" / "t.ogg", "libx264", "mpegts")  # odd extension, real video
    write_clip(src / "run" / "x.avi", "mpeg4")
    (src / "run" / "readme.txt").write_text("run clips\n")
    (src / "run" / "sub.mp4").mkdir()
    (src / "README.md").write_text("a dataset\n")
    plan = discover(src)
    assert plan.layout == "videos" and plan.classes == ["jump", "run"]
    assert sorted((s.id, s.label) for s in plan.sources) == [("jump_x_avi", "jump"), ("run_x_avi", "run"),
                                                            ("t", "jump")]
    assert [(Path(r["source"]).name, r["reason"]) for r in plan.rejects] == [("sub.mp4", "a folder, not a video file")]
    ignored = {Path(r["source"]).name: r["reason"] for r in plan.ignored}
    assert ignored.pop("readme.txt").startswith("not a video")
    assert ignored == {"README.md": "not in a class folder"}


# ----------------------------------------------------------------------------- hangs and crashes


def _job(x: object) -> object:
    if x == "hang":
        time.sleep(60)
    if x == "segv":
        faulthandler.disable()  # pytest's handler would print the child's stack: noise
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == "raise":
        raise ValueError("bad input")
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_killable_workers_survive_hangs_and_crashes(workers):
    started = time.monotonic()
    # 2 s: a worker forked from the suite's large process can take a fraction of it to start
    got = list(run_killable(_job, [1, "hang", 2, "segv", 3, "raise", 4, "hang", 5], workers, timeout=2.0))
    elapsed = time.monotonic() - started
    assert got[0::2] == [1, 2, 3, 4, 5]  # in order, and every good job done after each failure
    assert got[1] == got[7] == Failed("timed out after 2 s (--clip-timeout)")
    assert got[3] == Failed("decoder crashed: worker killed by SIGSEGV")
    assert got[5] == Failed("unexpected ValueError: bad input")
    assert elapsed < 15, elapsed  # two hangs of 60 s were cut at 2 s


def test_slow_clip_is_rejected_after_clip_timeout(tmp_path):
    """A clip that takes ~10 s to encode (300 frames up-scaled to 1080 lines) under a 3 s limit:
    its worker is killed, it is rejected with the reason, the short clip beside it is sharded."""
    src = tmp_path / "src"
    write_clip(src / "short.mp4", "h264", num_frames=2)
    write_clip(src / "long.mp4", "h264", num_frames=300)
    started = time.monotonic()
    proc = make_shards(src, "--out", tmp_path / "out", "--workers", 1, "--short-side", 1080, "--clip-timeout", 3,
                       timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    _, rejected, _ = report(tmp_path / "out")
    assert rejected == {"long.mp4": "timed out after 3 s (--clip-timeout)"}
    assert set(shard_samples(tmp_path / "out")) == {"short"}
    assert elapsed < 20, elapsed


# ----------------------------------------------------------------------------- fuzzing


def _fuzz_sources(src: Path, rng: np.random.Generator) -> None:
    base_dir = src.parent / "base"
    bases = [write_clip(base_dir / f"b.{ext}", codec, num_frames=20)
             for ext, codec in (("mp4", "h264"), ("avi", "mpeg4"), ("webm", "vp9"), ("mkv", "mjpeg"))]
    bases.append(write_video(base_dir / "b.ts", "libx264", n=20))
    src.mkdir()
    for i, b in enumerate(bases):
        data = b.read_bytes()
        for j in range(2):  # random truncation points
            (src / f"cut{i}{j}{b.suffix}").write_bytes(data[: int(rng.integers(1, len(data)))])
        for j, (lo, hi) in enumerate(((0, min(512, len(data))), (len(data) // 3, 2 * len(data) // 3))):
            flipped = bytearray(data)  # bytes flipped in the header, then in the middle
            for pos in rng.integers(lo, hi, 8):
                flipped[pos] ^= int(rng.integers(1, 256))
            (src / f"flip{i}{'hm'[j]}{b.suffix}").write_bytes(bytes(flipped))
        (src / f"wrongext{i}.avi" if b.suffix != ".avi" else src / f"wrongext{i}.mp4").write_bytes(data)
    for ext in (".mp4", ".mkv", ".avi"):
        (src / f"garbage{ext}").write_bytes(rng.integers(0, 256, 30_000, np.uint8).tobytes())
    avi = bytearray(bases[1].read_bytes())  # a huge declared frame count in the AVI headers
    for tag, offset in ((b"avih", 8 + 16), (b"strh", 8 + 32)):
        pos = avi.index(tag) + offset
        avi[pos: pos + 4] = (2**31 - 1).to_bytes(4, "little")
    (src / "huge_count.avi").write_bytes(bytes(avi))
    (src / "huge_size.y4m").write_bytes(b"YUV4MPEG2 W30000 H30000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4096))


def test_fuzzed_sources_are_all_accounted_for(tmp_path):
    src = tmp_path / "fuzz"
    _fuzz_sources(src, np.random.default_rng(12))
    n = len(list(src.iterdir()))
    started = time.monotonic()
    proc = make_shards(src, "--out", tmp_path / "out", "--workers", 2, "--clip-timeout", 8, timeout=150)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    m, rejected, ignored = report(tmp_path / "out")
    got = shard_samples(tmp_path / "out")
    sharded = {Path(v["json"]["source"]).name for v in got.values()}
    assert len(sharded) == len(got)
    assert len(sharded) + len(rejected) + len(ignored) == n, (sorted(sharded), rejected, ignored)
    assert not (sharded & set(rejected)) and not (sharded & set(ignored)) and not (set(rejected) & set(ignored))
    assert all(reason.strip() and "\n" not in reason for reason in {**rejected, **ignored}.values())
    assert {f"wrongext{i}" for i in range(5)} <= {Path(s).stem for s in sharded}  # content decides
    assert {"garbage.mp4", "garbage.mkv", "garbage.avi"} <= set(rejected)
    huge = next(v["json"] for v in got.values() if v["json"]["id"] == "huge_count")
    assert huge["num_frames"] == 20 and huge["header_frames"] == 2**31 - 1
    for v in got.values():  # nothing sharded that DALI would choke on: every stored count decodes
        assert len(decode_frames(v["video"])[1]) == v["nframes"] >= 1
    assert m["rejected"] == len(rejected) and m["ignored"] == len(ignored)
    print(f"fuzz: {n} files, {len(sharded)} sharded, {len(rejected)} rejected, {len(ignored)} ignored, "
          f"{elapsed:.1f} s")


# ----------------------------------------------------------------------------- PSNR


def _textured_clip(path: Path, n: int, width: int = 96, height: int = 72, seed: int = 0) -> Path:
    """Moving sinusoids and a little noise: content a codec cannot code perfectly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}

        def frames():
            for k in range(n):
                base = [np.sin(xx / (5 + c) + k * 0.4) * np.cos(yy / (7 + c) - k * 0.3) for c in range(3)]
                rgb = np.stack(base, -1) * 90 + 128 + rng.normal(0, 6, (height, width, 3))
                frame = av.VideoFrame.from_ndarray(np.clip(rgb, 0, 255).astype(np.uint8), format="rgb24")
                frame.pts = k
                yield frame

        mux_frames(out, stream, frames())
    return path


def _independent_psnr(source: Path, shard_video: bytes, n: int) -> float:
    """PSNR as the issue defines it, computed here with PyAV and numpy only: the source decode
    resized to the shard's size the way the encoder's input was made, against the shard decode."""
    with av.open(io.BytesIO(shard_video)) as c:
        shard = [f for f in c.decode(video=0)]
    width, height = shard[0].width, shard[0].height
    with av.open(str(source)) as c:
        src = [f for f in c.decode(video=0)]
    idx = fidelity.sample_indices(n)
    ref = np.stack([src[i].reformat(width=width, height=height, format="yuv420p", interpolation="AREA",
                                    dst_color_range="MPEG").to_ndarray(format="rgb24") for i in idx]).astype(float)
    dec = np.stack([shard[i].to_ndarray(format="rgb24") for i in idx]).astype(float)
    return 10 * np.log10(255.0**2 / np.mean((ref - dec) ** 2))


def test_sample_indices_and_sampler_agree():
    assert fidelity.sample_indices(5) == [0, 1, 2, 3, 4]
    assert fidelity.sample_indices(16) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert fidelity.sample_indices(100) == [0, 16, 24, 40, 56, 72, 80, 96]  # stride 8: 0..96
    for n in (1, 7, 16, 17, 33, 100, 257, 1000):
        sampler = fidelity.FrameSampler()
        for i in range(n):
            sampler.add(i, i)
        assert len(sampler.frames) <= fidelity.KEEP_MAX
        assert set(fidelity.sample_indices(n)) <= set(sampler.frames), n


@pytest.fixture(scope="module")
def psnr_sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("psnr")
    src = tmp / "src"
    clips = {f"t{k}": _textured_clip(src / f"t{k}.mp4", n, seed=k) for k, n in enumerate((12, 30, 61))}
    runs = {}
    for name, extra in (("default", []), ("bad", ["--quality", 63])):
        out = tmp / name
        proc = make_shards(src, "--out", out, "--workers", 2, "--short-side", 64, "--min-side", 0, *extra)
        assert proc.returncode == 0, proc.stderr
        runs[name] = (out, proc)
    return clips, runs


def test_stored_psnr_matches_an_independent_measure(psnr_sets):
    clips, runs = psnr_sets
    got = shard_samples(runs["default"][0])
    assert clips and set(clips) <= set(got)
    for cid, path in clips.items():
        meta = got[cid]["json"]
        assert (meta["width"], meta["height"]) == (80, 64)  # resized: PSNR must not count the resize
        want = _independent_psnr(path, got[cid]["video"], meta["num_frames"])
        assert meta["psnr"] == pytest.approx(want, abs=0.02), cid
        assert 30 < meta["psnr"] < 60


def test_bad_quality_lowers_psnr_and_is_reported(psnr_sets):
    _, runs = psnr_sets
    summary = {k: json.loads((out / "manifest.json").read_text())["psnr"] for k, (out, _) in runs.items()}
    good, bad = summary["default"], summary["bad"]
    assert good["clips"] == bad["clips"] == 3
    assert bad["median"] < good["median"] - 5, (good["median"], bad["median"])
    values = sorted(v["json"]["psnr"] for v in shard_samples(runs["default"][0]).values())
    assert good["median"] == pytest.approx(values[1]) and good["min"] == pytest.approx(values[0])
    assert [w["psnr"] for w in good["worst"]] == values
    assert good["p5"] == pytest.approx(np.percentile(values, 5), abs=0.01)
    assert good["far_below"] == []
    for name, (_, proc) in runs.items():
        assert f"PSNR median {summary[name]['median']:.1f} dB" in proc.stdout
    print(f"PSNR median: default quality {good['median']} dB, --quality 63 {bad['median']} dB")


def test_far_below_flag():
    metas = [{"id": f"c{i}", "split": "train", "psnr": 40.0 + i * 0.1} for i in range(9)]
    metas.append({"id": "bad", "split": "val", "psnr": 22.5})
    s = fidelity.summarize(metas)
    assert s["far_below"] == [{"id": "bad", "split": "val", "psnr": 22.5}]
    assert s["worst"][0]["id"] == "bad" and s["min"] == 22.5
    assert "1 clip more than 10 dB below (worst bad 22.5 dB)" in fidelity.summary_line(s)
    assert fidelity.summarize([{"id": "a", "split": "test"}]) is None


def test_psnr_caps_a_lossless_clip():
    frame = np.full((8, 8, 3), 100, np.uint8)
    assert fidelity.psnr([frame], [frame.copy()]) == fidelity.PSNR_CAP
    off = frame.copy()
    off[0, 0, 0] += 16  # MSE = 256 / 192
    assert fidelity.psnr([frame], [off]) == pytest.approx(10 * np.log10(255**2 / (256 / 192)), abs=0.01)

