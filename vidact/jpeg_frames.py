"""The JPEG-frames clip format (``make_shards --codec jpeg``): each frame its own baseline 4:2:0
JPEG, the frames of a clip concatenated in one shard member, with a table of where each starts.

Decoding a frame costs one JPEG decode and nothing else: no keyframe, no frames before it, so a
loader decodes exactly the frames it keeps (``decoded_per_kept`` 1) for about 6x the bytes of VP9
(`../bench/RESULTS.md`). Baseline 4:2:0 is what the GPUs' hardware JPEG decoders take. Frame
folders whose JPEGs already are that, at the shard's size, are stored as they are, bit for bit.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from vidact.fidelity import KEEP_MAX, psnr, sample_indices

DEFAULT_QUALITY = 90
_SUBSAMPLING_420 = 2  # Pillow's code for 4:2:0 (JpegImagePlugin.get_sampling)


class FramesError(ValueError):
    """A JPEG-frames clip that cannot be read; the message says which frame and why."""


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """One ``(H, W, 3)`` uint8 frame as a baseline, 4:2:0, quality-`quality` JPEG (JFIF)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=_SUBSAMPLING_420,
                              progressive=False, optimize=False)
    return buf.getvalue()


def pack(frames: Sequence[bytes]) -> tuple[bytes, np.ndarray]:
    """The clip member (the JPEGs back to back) and its table: N + 1 int32 byte offsets, frame i
    being ``data[offsets[i]:offsets[i + 1]]``."""
    offsets = np.cumsum([0, *(len(f) for f in frames)]).astype(np.int64)
    if offsets[-1] >= 2**31:
        raise FramesError(f"clip of {offsets[-1]} bytes: over the 2 GiB a table of int32 offsets can address")
    return b"".join(frames), offsets.astype(np.int32)


def offsets_of(table: bytes | np.ndarray) -> np.ndarray:
    return np.frombuffer(table, dtype="<i4") if isinstance(table, bytes) else np.asarray(table, dtype=np.int32)


def frame_count(data: bytes, table: bytes | np.ndarray) -> int:
    """N, after checking the table against the clip member (ascending, ending at its length)."""
    offsets = offsets_of(table)
    if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(data) or np.any(np.diff(offsets) <= 0):
        raise FramesError(f"frame table does not fit the clip ({len(offsets) - 1} frames, {len(data)} bytes)")
    return len(offsets) - 1


def decode_one(jpeg: bytes) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 of one JPEG: libjpeg-turbo's default (fancy) upsampling, as DALI's
    CPU image decoder."""
    try:
        with Image.open(io.BytesIO(jpeg)) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise FramesError(f"undecodable JPEG ({e.__class__.__name__}: {e})") from e


def decode_frames(data: bytes, table: bytes | np.ndarray, indices: Sequence[int]) -> tuple[np.ndarray, int]:
    """RGB frames at `indices` (any order, repeats allowed) and how many JPEGs were decoded for
    them: each distinct frame once."""
    offsets, wanted = offsets_of(table), np.asarray(indices, dtype=np.int64)
    n = frame_count(data, offsets)
    distinct = np.unique(wanted)
    if distinct[0] < 0 or distinct[-1] >= n:
        raise FramesError(f"frames {distinct.tolist()[-3:]} requested, clip has {n}")
    got = {}
    for i in distinct.tolist():
        try:
            got[i] = decode_one(data[offsets[i]:offsets[i + 1]])
        except FramesError as e:
            raise FramesError(f"frame {i}: {e}") from e
    return np.stack([got[i] for i in wanted.tolist()]), len(distinct)


def encode_clip(frames: Iterable[np.ndarray], quality: int) -> tuple[bytes, np.ndarray, float | None]:
    """RGB frames, each encoded to a JPEG. Returns (clip member, offsets, PSNR of the decoded
    JPEGs against their input on `vidact.fidelity`'s sample of frames)."""
    jpegs, reference, kept = [], {}, 1
    for n, rgb in enumerate(frames):
        jpegs.append(encode_jpeg(rgb, quality))
        if n % kept == 0:  # FrameSampler's thinning: at most KEEP_MAX references held
            reference[n] = rgb
            if len(reference) > KEEP_MAX:
                kept *= 2
                reference = {i: f for i, f in reference.items() if i % kept == 0}
    if not jpegs:
        raise FramesError("0 decodable frames")
    data, offsets = pack(jpegs)
    measured = [i for i in sample_indices(len(jpegs)) if i in reference]
    score = psnr([reference[i] for i in measured], [decode_one(jpegs[i]) for i in measured]) if measured else None
    return data, offsets, score


def stored_as_is(paths: Sequence[Path], size: tuple[int, int]) -> list[bytes] | None:
    """The bytes of every file of a frame folder when all are JPEGs a loader can take as they are:
    baseline (not progressive), three components subsampled 4:2:0, `size` (width, height: the
    shard's, aligned); None when any is not (the folder is then decoded and encoded)."""
    out = []
    for p in paths:
        data = p.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as im:
                fits = (im.format == "JPEG" and im.mode == "RGB" and im.size == tuple(size)
                        and not im.info.get("progressive") and not im.info.get("progression")
                        and JpegImagePlugin.get_sampling(im) == _SUBSAMPLING_420)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None
        if not fits:
            return None
        out.append(data)
    return out
