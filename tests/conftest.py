"""Shared test helpers: clips whose frames show their own index, JPEG frame folders, and the
real sample videos fetched by `tools/fetch_test_videos.sh`.

Frame ``i`` of every synthetic clip is a 4x4 grid of gray blocks whose levels depend on ``i``
(:func:`pattern_frame`), so "frame i of a shard equals frame i of the source" is checked by
content: the decoded frame is close to pattern ``i`` and clearly far from patterns ``i +- 1``.
Gray (R = G = B) keeps chroma neutral, so 4:2:0 subsampling does not blur the pattern, and the
grid is laid out in relative coordinates, so a resized clip still matches the pattern drawn at
its new size.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidact.bench.local_s3 import free_port  # noqa: F401 - one definition, the tests import it from here

REPO = Path(__file__).resolve().parents[1]
OPENCV_DIR = REPO / "tests" / ".cache" / "opencv-doc"
OPENCV_FILES = ("vtest.avi", "Megamind.avi", "Megamind_bugy.avi", "tree.avi")

# Source codecs the tests write: key -> (PyAV encoder, container extension, pixel format).
CODECS = {
    "h264": ("libx264", "mp4", "yuv420p"),
    "mpeg4": ("mpeg4", "avi", "yuv420p"),
    "vp9": ("libvpx-vp9", "webm", "yuv420p"),
    "mjpeg": ("mjpeg", "avi", "yuvj420p"),
}

GRID = 4
# Levels stay inside limited-range luma (16..235) so no codec clips them.
LEVEL_LO, LEVEL_SPAN = 24, 200
# Adjacent frames differ by STEP levels in every block (mod the span): far above codec noise.
STEP = 53


def pattern_levels(i: int) -> np.ndarray:
    """The GRID x GRID gray levels of frame `i`."""
    blocks = np.arange(GRID * GRID).reshape(GRID, GRID)
    return (LEVEL_LO + (i * STEP + blocks * 17) % LEVEL_SPAN).astype(np.uint8)


def pattern_frame(i: int, width: int, height: int) -> np.ndarray:
    """RGB frame ``(height, width, 3) uint8`` that encodes its index `i`."""
    levels = pattern_levels(i)
    rows = np.minimum(np.arange(height) * GRID // height, GRID - 1)
    cols = np.minimum(np.arange(width) * GRID // width, GRID - 1)
    gray = levels[rows[:, None], cols[None, :]]
    return np.repeat(gray[:, :, None], 3, axis=2)


def frame_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames, over the inner part of every block (block
    edges are where resizing and codecs legitimately smear)."""
    h, w = a.shape[:2]
    mask = np.zeros((h, w), dtype=bool)
    for r in range(GRID):
        for c in range(GRID):
            y0, y1 = r * h // GRID, (r + 1) * h // GRID
            x0, x1 = c * w // GRID, (c + 1) * w // GRID
            my, mx = max(1, (y1 - y0) // 4), max(1, (x1 - x0) // 4)
            mask[y0 + my : y1 - my, x0 + mx : x1 - mx] = True
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16))[mask].mean())


# A decoded frame within this of its pattern counts as "the same frame" (codec noise on flat
# blocks is a few levels); neighbouring patterns are at least ~25 away on average.
SAME_FRAME_TOL = 6.0


def assert_is_frame(frame: np.ndarray, i: int, num_frames: int, what: str = "frame") -> None:
    """`frame` shows pattern `i`: close to it, and clearly farther from frames i-1 and i+1."""
    h, w = frame.shape[:2]
    d_self = frame_diff(frame, pattern_frame(i, w, h))
    assert d_self < SAME_FRAME_TOL, f"{what}: differs from source frame {i} by {d_self:.1f}"
    for j in (i - 1, i + 1):
        if 0 <= j < num_frames:
            d_other = frame_diff(frame, pattern_frame(j, w, h))
            assert d_other > 3 * d_self + 10, (
                f"{what}: as close to frame {j} ({d_other:.1f}) as to frame {i} ({d_self:.1f})")


def which_frame(frame: np.ndarray, num_frames: int) -> int:
    """The index whose pattern `frame` is closest to."""
    h, w = frame.shape[:2]
    return int(np.argmin([frame_diff(frame, pattern_frame(j, w, h)) for j in range(num_frames)]))


def write_clip(path: Path, codec: str = "h264", width: int = 64, height: int = 48,
               fps: float | Fraction = 25, num_frames: int = 24, start: int = 0) -> Path:
    """Writes a clip of `num_frames` pattern frames (``start``, ``start + 1``, ...) with PyAV.
    `codec` is a key of :data:`CODECS`; the container follows from `path`'s extension."""
    encoder, _, pix_fmt = CODECS[codec]
    rate = Fraction(fps).limit_denominator(1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "mjpeg":
            stream.options = {"qmin": "2", "qmax": "3"}
        elif codec == "mpeg4":
            stream.bit_rate = 2_000_000
        elif codec == "vp9":
            stream.options = {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        else:
            stream.options = {"crf": "18", "preset": "veryfast"}

        def frames():
            for k in range(num_frames):
                frame = av.VideoFrame.from_ndarray(pattern_frame(start + k, width, height), format="rgb24")
                frame = frame.reformat(format=pix_fmt)
                frame.pts, frame.time_base = k, Fraction(1) / rate
                yield frame

        mux_frames(out, stream, frames())
    return path


def mux_frames(out, stream, frames) -> None:
    """Encodes `frames` (av.VideoFrame, pts set) into `stream`, flushes it, muxes into `out`."""
    for frame in frames:
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def clip_path(folder: Path, name: str, codec: str) -> Path:
    """``folder/name.{ext}`` with the container extension of `codec`."""
    return folder / f"{name}.{CODECS[codec][1]}"


def write_frame_folder(folder: Path, num_frames: int, width: int = 64, height: int = 48,
                       first_number: int = 1, quality: int = 95) -> list[Path]:
    """Writes ``frame_0001.jpg ...`` pattern frames (frame k shows pattern k) with Pillow."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(num_frames):
        p = folder / f"frame_{first_number + k:04d}.jpg"
        Image.fromarray(pattern_frame(k, width, height)).save(p, quality=quality)
        paths.append(p)
    return paths


def decode_frames(source: Path | bytes) -> tuple[str, np.ndarray, str]:
    """(codec name, RGB frames ``(T, H, W, 3)``, pixel format) of every frame PyAV decodes."""
    with av.open(str(source) if isinstance(source, Path) else io.BytesIO(source)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        name = stream.codec_context.name
    if not frames:
        return name, np.zeros((0, 0, 0, 3), np.uint8), ""
    return name, np.stack([f.to_ndarray(format="rgb24") for f in frames]), frames[0].format.name


def assert_frames_match(frames: np.ndarray, indices: Sequence[int], num_frames: int,
                        what: str = "clip", offset: int = 0) -> None:
    """Frames ``frames[k]`` for ``k`` in `indices` show pattern ``k + offset``."""
    for k in indices:
        assert_is_frame(frames[k], k + offset, num_frames + offset, f"{what} frame {k}")


def overclaim_frames(tar: Path, extra: int) -> tuple[str, int]:
    """Makes the first sample of shard `tar` claim `extra` frames more than its video has (its
    ``nframes.i32`` member, rewritten in place at the offset of the DALI index beside it);
    returns (sample key, frames claimed)."""
    fields = next(line.split() for line in tar.with_suffix(".idx").read_text().splitlines()
                  if " nframes.i32 " in line)
    i = fields.index("nframes.i32")
    offset, key = int(fields[i + 1]), fields[i + 3].partition(".")[0]
    data = bytearray(tar.read_bytes())
    claimed = int(np.frombuffer(bytes(data[offset:offset + 4]), "<i4")[0]) + extra
    data[offset:offset + 4] = np.int32(claimed).tobytes()
    tar.write_bytes(bytes(data))
    return key, claimed


@pytest.fixture
def opencv_videos() -> Path:
    """The folder of OpenCV's sample videos; skips when `tools/fetch_test_videos.sh` could not
    fetch them (no network / no apt)."""
    missing = [f for f in OPENCV_FILES if not (OPENCV_DIR / f).is_file()
               or (OPENCV_DIR / f).stat().st_size == 0]
    if missing:
        pytest.skip(f"real sample videos absent ({', '.join(missing)}); run "
                    f"tools/fetch_test_videos.sh {OPENCV_DIR.relative_to(REPO)}")
    return OPENCV_DIR


@pytest.fixture
def two_torch_threads():
    """Tiny models: two threads are as fast as more, and keep the suite polite on shared machines."""
    old = torch.get_num_threads()
    torch.set_num_threads(min(old, 2))
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory) -> Path:
    """A small labeled shard set from the synthetic generator: 3 classes, 4/2/2 clips per class."""
    from vidact.prep.make_shards import main as make_shards
    from vidact.synthetic import make_dataset

    src = tmp_path_factory.mktemp("synthetic") / "src"
    make_dataset(src, classes=3, train_per_class=4, val_per_class=2, test_per_class=2, seed=1, progress=False)
    out = tmp_path_factory.mktemp("synthetic_shards")
    assert make_shards([str(src), "--out", str(out), "--workers", "1", "--short-side", "64",
                        "--min-side", "0"]) == 0  # CPU tests: small is fast (NVDEC needs 128)
    return out


@pytest.fixture(scope="session")
def unlabeled_shards(tmp_path_factory) -> Path:
    """Unlabeled test clips (3 classes x 2) with the labeled set's dictionary beside them."""
    from vidact.prep.make_shards import main as make_shards
    from vidact.synthetic import make_dataset

    src = tmp_path_factory.mktemp("unlabeled") / "src"
    make_dataset(src, layout="unlabeled", classes=3, test_per_class=2, seed=2, progress=False)
    out = tmp_path_factory.mktemp("unlabeled_shards")
    assert make_shards([str(src), "--out", str(out), "--workers", "1", "--short-side", "64",
                        "--min-side", "0"]) == 0  # CPU tests: small is fast (NVDEC needs 128)
    return out




@pytest.fixture(scope="session")
def local_s3():
    """The local S3 server measurements use (`vidact.bench.local_s3`: moto on 127.0.0.1, a free
    port, counting requests and bytes served), for this session only. The standard AWS variables
    point every process started after this (DALI, s3fs, subprocesses) at it with dummy
    credentials; they are restored, and the server killed, at the end."""
    from vidact.bench.local_s3 import LocalS3

    with LocalS3() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(local_s3):
    """An s3fs filesystem on the local S3 server."""
    return local_s3.filesystem()


@pytest.fixture(scope="session")
def segmented_shards(tmp_path_factory):
    """Two sources cut by ``--max-seconds 5``: ``jump/long.avi`` (12 s at 10 fps: segments of 50,
    50 and 20 frames) and ``run/short.avi`` (3 s: one segment); frame i shows pattern i."""
    from vidact.prep.make_shards import main as make_shards

    tmp = tmp_path_factory.mktemp("segmented")
    src, out = tmp / "src", tmp / "out"
    long = write_clip(src / "jump" / "long.avi", "mpeg4", 64, 48, 10, 120)
    short = write_clip(src / "run" / "short.avi", "mpeg4", 64, 48, 10, 30)
    assert make_shards([str(src), "--out", str(out), "--workers", "1", "--min-side", "0", "--val-fraction", "0",
                        "--max-seconds", "5"]) == 0
    return out, {"long": long, "short": short}
