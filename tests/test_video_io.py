"""vidact.video_io: transcoding keeps every frame in place, sizes, indexed decode, bad files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import (
    CODECS,
    assert_frames_match,
    assert_is_frame,
    clip_path,
    decode_frames,
    which_frame,
    write_clip,
    write_frame_folder,
)

from vidact.video_io import (
    EncodeSettings,
    VideoError,
    count_frames,
    decode_rgb,
    encode_image_sequence,
    output_size,
    segment_lengths,
    split_frames,
    transcode,
)

N = 30


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """One 96x72, 30-frame pattern clip per source codec."""
    d = tmp_path_factory.mktemp("sources")
    fps = {"h264": 25, "mpeg4": Fraction(30000, 1001), "vp9": 24, "mjpeg": 15}
    return {c: write_clip(clip_path(d, f"src_{c}", c), c, 96, 72, fps[c], N) for c in CODECS}


# ----------------------------------------------------------------------------- transcode


@pytest.mark.parametrize("codec", list(CODECS))
def test_transcode_keeps_frame_count_and_content(sources, codec):
    src = sources[codec]
    src_name, src_frames, _ = decode_frames(src)
    assert src_name == {"h264": "h264", "mpeg4": "mpeg4", "vp9": "vp9", "mjpeg": "mjpeg"}[codec]
    assert len(src_frames) == N
    assert_frames_match(src_frames, range(N), N, f"source {codec}")  # the fixture itself is sound

    enc = transcode(src, EncodeSettings())
    assert enc.num_frames == N
    assert (enc.width, enc.height) == (96, 80)  # on the 16-pixel grid (72 -> 80)
    name, frames, pix_fmt = decode_frames(enc.data)
    assert (name, pix_fmt) == ("vp9", "yuv420p")
    assert len(frames) == N == count_frames(enc.data)
    # every frame is the source frame with the same index, not a neighbour
    assert_frames_match(frames, range(N), N, f"{codec} -> vp9")
    assert [which_frame(f, N) for f in frames] == list(range(N))


def test_transcode_records_fps_and_header_count(sources):
    assert transcode(sources["h264"], EncodeSettings()).fps == pytest.approx(25.0)
    enc = transcode(sources["mpeg4"], EncodeSettings())
    assert enc.fps == pytest.approx(29.97, abs=1e-3)
    assert enc.header_frames == N  # AVI headers carry a frame count
    assert transcode(sources["vp9"], EncodeSettings()).header_frames is None  # WebM's do not


@pytest.mark.parametrize("codec, name, pix_fmt", [
    ("vp9", "vp9", "yuv420p"), ("vp8", "vp8", "yuv420p"), ("h264", "h264", "yuv420p"),
    ("mjpeg", "mjpeg", "yuvj420p"),
])
@pytest.mark.parametrize("src", ["mpeg4", "mjpeg"])
def test_transcode_to_each_shard_codec(sources, src, codec, name, pix_fmt):
    """Includes full-range (MJPEG, yuvj420p) input into limited-range output and back: the
    levels must survive, not be stretched or squeezed."""
    enc = transcode(sources[src], EncodeSettings(codec=codec))
    got_name, frames, got_fmt = decode_frames(enc.data)
    assert (got_name, got_fmt) == (name, pix_fmt)
    assert len(frames) == N
    assert_frames_match(frames, [0, 1, N // 2, N - 2, N - 1], N, f"{src} -> {codec}")


def test_transcode_keyframe_interval(sources):
    enc = transcode(sources["h264"], EncodeSettings(gop=5))
    import io

    with av.open(io.BytesIO(enc.data)) as c:
        keys = [p.is_keyframe for p in c.demux(video=0) if p.size]
    assert [i for i, k in enumerate(keys) if k] == list(range(0, N, 5))


def test_transcode_is_deterministic(sources):
    a = transcode(sources["mpeg4"], EncodeSettings())
    b = transcode(sources["mpeg4"], EncodeSettings())
    assert a.data == b.data


def test_transcode_short_side_resize(sources):
    enc = transcode(sources["h264"], EncodeSettings(short_side=32))
    assert (enc.width, enc.height) == (48, 32)  # 96x72 -> 42.7x32 -> the 16-pixel grid
    _, frames, _ = decode_frames(enc.data)
    assert frames.shape == (N, 32, 48, 3)
    assert_frames_match(frames, [0, 7, N - 1], N, "resized")


# ----------------------------------------------------------------------------- output_size


@pytest.mark.parametrize("w, h, short, expected", [
    (320, 240, None, (320, 240)),
    (321, 241, None, (320, 240)),  # odd sizes aligned (and so even for 4:2:0)
    (320, 240, 128, (176, 128)),   # 170.67 -> the nearest multiple of 16
    (240, 320, 128, (128, 176)),   # portrait: the width is the short side
    (1920, 1080, 256, (448, 256)),  # 455.1 -> 448
    (720, 528, 120, (160, 128)),   # OpenCV's Megamind.avi: 163.6 x 120 -> 160 x 128
    (768, 576, None, (768, 576)),  # OpenCV's vtest.avi: aligned already
    (640, 480, 480, (640, 480)),
    (1, 1, None, (16, 16)),
    (3, 5, 1, (16, 16)),
])
def test_output_size(w, h, short, expected):
    out = output_size(w, h, short)
    assert out == expected
    assert out[0] % 16 == 0 and out[1] % 16 == 0


def test_output_size_align_2_keeps_the_nearest_even_size():
    assert output_size(320, 240, 256) == (336, 256)  # 341.3 -> the nearest multiple of 16
    assert output_size(320, 240, 256, align=2) == (342, 256)  # the nearest even size (make_shards --align 2)


@pytest.mark.parametrize("w, h, short, min_side, expected", [
    (160, 120, None, 128, (176, 128)),  # scaled up, aspect kept as near as 16-pixel steps allow
    (120, 160, 64, 128, (128, 176)),    # --min-side wins over a smaller --short-side
    (320, 240, 256, 128, (336, 256)),   # a larger --short-side wins (341.3 -> 336)
    (320, 240, None, 128, (320, 240)),  # large enough: untouched
    (101, 101, None, 101, (112, 112)),  # a minimum off the grid: rounded up, never under it
])
def test_output_size_min_side(w, h, short, min_side, expected):
    assert output_size(w, h, short, min_side) == expected


@pytest.mark.parametrize("short", [32, 64, 112, 128, 256])
def test_output_size_short_side_is_exact_when_aligned(short):
    for w, h in [(320, 240), (240, 320), (176, 144), (1280, 720), (100, 100)]:
        ow, oh = output_size(w, h, short)
        assert min(ow, oh) == short and ow % 16 == 0 and oh % 16 == 0
        assert abs(ow - oh * w / h) <= 8 and abs(oh - ow * h / w) <= 8  # the nearest 16-pixel step


# ----------------------------------------------------------------------------- decode_rgb


def test_decode_rgb_any_order_with_repeats(sources):
    src = sources["h264"]
    wanted = [17, 0, 17, 29, 3, 3, 0]
    frames = decode_rgb(src, wanted)
    assert frames.shape == (len(wanted), 72, 96, 3) and frames.dtype == np.uint8
    for k, i in enumerate(wanted):
        assert_is_frame(frames[k], i, N, f"decode_rgb[{k}]")


@pytest.mark.parametrize("codec", ["vp9", "vp8", "h264", "mjpeg"])
def test_decode_rgb_with_seek_equals_sequential_decode(sources, codec):
    """Shard clips (constant rate, pts = index / fps) seek to the keyframe before the first
    wanted frame; the frames must be exactly those of a decode from frame 0."""
    enc = transcode(sources["mpeg4"], EncodeSettings(codec=codec, gop=4))
    rng = np.random.default_rng(0)
    for wanted in ([21, 22, 29], [5, 5, 9, 13], [N - 1], [0, 11], *(rng.integers(0, N, 6) for _ in range(5))):
        seq = decode_rgb(enc.data, wanted)
        seek = decode_rgb(enc.data, wanted, fps=enc.fps)
        np.testing.assert_array_equal(seek, seq)
        for k, i in enumerate(wanted):
            assert_is_frame(seek[k], int(i), N, f"{codec} seek[{k}]")


def test_decode_rgb_all_frames(sources):
    frames = decode_rgb(sources["vp9"])
    assert frames.shape == (N, 72, 96, 3)
    assert [which_frame(f, N) for f in frames] == list(range(N))


def test_decode_rgb_past_the_end_raises(sources):
    msg = r"frames \[30, 40\] requested, clip decodes to fewer \(30 seen\)"
    with pytest.raises(VideoError, match=msg):
        decode_rgb(sources["h264"], [2, 30, 40])


# ----------------------------------------------------------------------------- bad files


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.avi"
    p.write_bytes(b"")
    with pytest.raises(VideoError, match="zero-byte file"):
        transcode(p, EncodeSettings())
    with pytest.raises(VideoError, match="zero-byte file"):
        count_frames(p)


def test_random_bytes_file(tmp_path):
    p = tmp_path / "noise.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="cannot open as video"):
        transcode(p, EncodeSettings())


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="file not found"):
        count_frames(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path):
    p = tmp_path / "frame.jpg"
    write_frame_folder(tmp_path / "f", 1)
    p.write_bytes((tmp_path / "f" / "frame_0001.jpg").read_bytes())
    # a JPEG opens as a one-frame "video": that is fine, it decodes
    assert count_frames(p) == 1
    text = tmp_path / "notes.avi"
    text.write_text("id,label\n" * 100)
    with pytest.raises(VideoError, match="cannot open as video"):
        count_frames(text)


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_truncated_mp4_is_rejected(sources, tmp_path):
    """The moov atom is at the end of the file: a cut mp4 cannot even be opened."""
    p = _truncate(sources["h264"], tmp_path / "cut.mp4", 0.4)
    with pytest.raises(VideoError, match="cannot open as video"):
        transcode(p, EncodeSettings())


@pytest.mark.parametrize("codec", ["mpeg4", "mjpeg"])
def test_truncated_avi_is_rejected(sources, tmp_path, codec):
    """A cut AVI opens and decodes without a decoder error, its last packet cut short: the
    demuxer flags that packet as corrupt, and the clip is rejected rather than sharded with a
    garbage last frame."""
    p = _truncate(sources[codec], tmp_path / "cut.avi", 0.4)
    with pytest.raises(VideoError, match=r"truncated or damaged|decode error"):
        transcode(p, EncodeSettings())


def test_truncated_webm_keeps_only_whole_frames(sources, tmp_path):
    """WebM drops the cut block: what decodes is a shorter clip of intact frames (the shard
    records the decoded count; nothing in the file says frames are missing)."""
    p = _truncate(sources["vp9"], tmp_path / "cut.webm", 0.5)
    enc = transcode(p, EncodeSettings())
    assert 0 < enc.num_frames < N
    _, frames, _ = decode_frames(enc.data)
    assert_frames_match(frames, range(enc.num_frames), N, "cut webm")


# ----------------------------------------------------------------------------- frame folders


def test_encode_image_sequence(tmp_path):
    paths = write_frame_folder(tmp_path / "v", 12, 80, 60)
    enc = encode_image_sequence(paths, 8.0, EncodeSettings())
    assert (enc.num_frames, enc.fps, enc.width, enc.height) == (12, 8.0, 80, 64)  # 60 on the 16-pixel grid
    name, frames, _ = decode_frames(enc.data)
    assert name == "vp9" and len(frames) == 12
    assert_frames_match(frames, range(12), 12, "jpeg folder")


def test_encode_image_sequence_unreadable_jpeg(tmp_path):
    paths = write_frame_folder(tmp_path / "v", 6)
    paths[3].write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(VideoError, match="unreadable image frame_0004.jpg"):
        encode_image_sequence(paths, 8.0, EncodeSettings())


def test_encode_image_sequence_empty(tmp_path):
    with pytest.raises(VideoError, match="frame folder has no images"):
        encode_image_sequence([], 8.0, EncodeSettings())


@pytest.mark.parametrize("n, want", [(120, [50, 50, 20]), (100, [50, 50]), (105, [50, 55]), (59, [59]),
                                     (5, [5]), (0, [])])
def test_split_frames_merges_a_short_tail(n, want):
    # 5 s segments at 10 fps: 50 frames; a tail under 1 s (10 frames) joins the segment before
    length, min_tail = segment_lengths(5, 10)
    assert (length, min_tail) == (50, 10)
    pieces = [list(p) for p in split_frames(range(n), length, min_tail)]
    if n:
        assert [len(p) for p in pieces] == want and [i for p in pieces for i in p] == list(range(n))
    else:
        assert pieces == [[]]  # one empty piece: encoding it rejects the source (0 frames)
    assert segment_lengths(None, 25) == (None, 1) and segment_lengths(0.5, 25) == (12, 6)


def test_a_process_that_scaled_frames_still_forks_working_encoders(tmp_path):
    """A process that converted and scaled frames, then runs transcodes in killable workers (as
    make_shards and predict --videos do): each worker finishes its clip. (With swscale's slice
    threads in the parent's cached scaler, every forked worker hung until its time limit.)"""
    import subprocess
    import sys

    src = write_clip(tmp_path / "c.mp4", width=320, height=240, num_frames=30)
    script = f"""
from functools import partial
from pathlib import Path
from vidact.killable import run_killable
from vidact.video_io import EncodeSettings, decode_rgb, transcode
src = Path({str(src)!r})
decode_rgb(src)
transcode(src, EncodeSettings(short_side=128))
jobs = run_killable(partial(transcode, settings=EncodeSettings(short_side=96)), [src, src], 1, 20)
print(",".join(type(r).__name__ for r in jobs))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0 and p.stdout.strip() == "Encoded,Encoded", (p.stdout, p.stderr[-2000:])
