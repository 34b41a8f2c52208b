"""Every sample checked before it is decoded, in the one place both loaders use: its checksum (the
bytes are the ones make_shards wrote) and its record and tables against its bytes (the bytes make
sense: a shard downloaded from someone else can say anything).

`check_sample` returns the reason a sample is damaged, or None; it costs a CRC-32 of the sample's
bytes (XXH3, ~30 GB/s) and a few vectorized comparisons of its tables.
"""

from __future__ import annotations

import json

import numpy as np

from vidact.ivf import COUNT_AT, FRAME_HEADER_BYTES, HEADER_BYTES, SIGNATURE
from vidact.shards import (
    CHECKSUM_EXT,
    HW_EXT,
    IVF_EXT,
    JPEG_EXT,
    KEYFRAMES_EXT,
    LABEL_EXT,
    META_EXT,
    NFRAMES_EXT,
    OFFSETS_EXT,
    member_exts,
    members_checksum,
)

MAX_SIDE = 1 << 14  # a frame side past this is no frame vidact wrote
_JPEG_SOI = (0xFF, 0xD8)


def as_array(data, dtype=np.uint8) -> np.ndarray:
    return data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype)


def check_sample(members: dict, video_ext: str, cut: bool = True) -> str | None:
    """Why the sample of `members` (by extension; bytes or numpy arrays, ``.i32`` members as int32)
    cannot be used, or None: a member missing, its checksum, an unreadable record, a frame count or
    size out of range, tables that do not fit its bytes (`cut` off: an IVF clip read without its
    tables, decoded from frame 0, is checked without them)."""
    for ext in member_exts(video_ext, cut):
        if ext not in members:
            return f"member .{ext} missing"
    if CHECKSUM_EXT in members and all(ext in members for ext in member_exts(video_ext)):
        if members_checksum([members[ext] for ext in member_exts(video_ext)]) != bytes(as_array(members[CHECKSUM_EXT])):
            return "checksum mismatch: its bytes are not the ones written (damaged in storage or transfer)"
    n, hw = int(as_array(members[NFRAMES_EXT], "<i4")[0]), as_array(members[HW_EXT], "<i4")
    try:
        meta = json.loads(bytes(as_array(members[META_EXT])).rstrip(b"\0").decode())
        assert meta["num_frames"] == n and meta["label_id"] == int(as_array(members[LABEL_EXT], "<i4")[0])
        assert [meta["height"], meta["width"]] == hw.tolist()
    except (ValueError, KeyError, TypeError, AssertionError):
        return "json record unreadable or not the sample's (frame count, label or size)"
    if not (0 < n < 1 << 24 and len(hw) == 2 and 0 < hw.min() and hw.max() <= MAX_SIDE):
        return f"{n} frames of {hw.tolist()} px: out of range"
    data = as_array(members[video_ext])
    if video_ext == IVF_EXT and KEYFRAMES_EXT in members:
        tables = as_array(members[OFFSETS_EXT], "<i4"), as_array(members[KEYFRAMES_EXT], "<i4")
        return ivf_problem(data, n, hw, *tables)
    if video_ext == JPEG_EXT:
        return jpeg_problem(data, n, as_array(members[OFFSETS_EXT], "<i4"))
    return None


def _offsets_problem(offsets: np.ndarray, n: int, first: int, size: int) -> str | None:
    if len(offsets) != n + 1 or offsets[0] != first or offsets[-1] != size or np.any(np.diff(offsets) <= 0):
        return f"frame table does not fit the clip ({len(offsets)} offsets for {n} frames of {size} bytes)"
    return None


def ivf_problem(data: np.ndarray, n: int, hw: np.ndarray, offsets: np.ndarray, keyframes: np.ndarray) -> str | None:
    """An IVF clip's header and tables against its bytes: the header's signature, size and frame
    count, each frame's 12-byte header giving its size, each frame's keyframe at or before it."""
    if len(data) < HEADER_BYTES or bytes(data[:4]) != SIGNATURE:
        return "not an IVF stream (no DKIF header)"
    header = data[:HEADER_BYTES].view("<u2")
    if [int(header[7]), int(header[6])] != hw.tolist():  # bytes 12-15: width, height
        return f"IVF header says {int(header[6])}x{int(header[7])} px, the sample {hw[1]}x{hw[0]}"
    if int(data[COUNT_AT:COUNT_AT + 4].view("<u4")[0]) != n:
        return f"IVF header counts {int(data[COUNT_AT:COUNT_AT + 4].view('<u4')[0])} frames, the sample {n}"
    problem = _offsets_problem(offsets, n, int(header[3]), len(data))
    if problem:
        return problem
    starts = offsets[:-1].astype(np.int64)
    sizes = data[starts[:, None] + np.arange(4)].view("<u4").ravel()
    if np.any(sizes != np.diff(offsets) - FRAME_HEADER_BYTES):
        return "frame table does not match the frames' own headers"
    k = np.arange(n)
    if len(keyframes) != n or np.any(keyframes > k) or np.any(keyframes < 0) or \
            np.any(keyframes[keyframes] != keyframes):
        return "keyframe table does not fit the clip (a frame's keyframe after it, or not a keyframe)"
    return None


def jpeg_problem(data: np.ndarray, n: int, offsets: np.ndarray) -> str | None:
    """A JPEG-frames clip's table against its bytes: every frame a JPEG (its SOI marker)."""
    problem = _offsets_problem(offsets, n, 0, len(data))
    if problem:
        return problem
    starts = offsets[:-1].astype(np.int64)
    if np.any(data[starts] != _JPEG_SOI[0]) or np.any(data[starts + 1] != _JPEG_SOI[1]):
        return "frame table does not point at JPEGs"
    return None
