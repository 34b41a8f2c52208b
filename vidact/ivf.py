"""The IVF container of shard clips: what makes a VP9 clip cuttable at its keyframes.

IVF is the simplest container FFmpeg (so DALI's demuxer) reads: a 32-byte file header, then per
frame a 12-byte header (size, pts) and the frame's bytes. A clip can therefore be cut and glued
by byte offsets alone (`vidact.clip.cut` says which runs), inside a DALI graph or here:

    header (32 bytes; frame count at byte 24) | size pts frame | size pts frame | ...

The header's frame count must be the glued stream's: DALI takes it as the stream's length, so
with the source's count an index past the cut's end would decode to a black frame instead of
raising (measured on DALI 2.4's CPU decoder).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from vidact.clip.cut import Cut, keyframe_table

SIGNATURE = b"DKIF"
HEADER_BYTES = 32
FRAME_HEADER_BYTES = 12
COUNT_AT = 24  # the header's frame count: little-endian uint32


class IvfError(ValueError):
    """Bytes that are not an IVF stream of VP9 frames as vidact writes them."""


class IvfTables(NamedTuple):
    """What a graph needs to cut a clip: per frame, where it starts (plus the end of the data)
    and the keyframe it depends on."""

    offsets: np.ndarray  # (N + 1,) int32: byte offset of frame i's 12-byte header; [N]: len(data)
    keyframes: np.ndarray  # (N,) int32: index of the keyframe at or before frame i


def _vp9_is_key(first_byte: int) -> bool:
    """VP9's uncompressed header: frame_marker (2 bits), profile (2 bits, a reserved bit after
    it in profile 3), show_existing_frame, frame_type (0: key frame)."""
    if first_byte >> 6 != 0b10:
        raise IvfError(f"not a VP9 frame (frame marker {first_byte >> 6:#04b})")
    profile = ((first_byte >> 5) & 1) | (((first_byte >> 4) & 1) << 1)
    shift = 1 if profile == 3 else 0
    show_existing = (first_byte >> (3 - shift)) & 1
    return not show_existing and (first_byte >> (2 - shift)) & 1 == 0


def tables(data: bytes) -> IvfTables:
    """The cut tables of an IVF stream of VP9 frames (one shown frame per IVF frame)."""
    if len(data) < HEADER_BYTES or data[:4] != SIGNATURE:
        raise IvfError("not an IVF stream (no DKIF header)")
    pos = struct.unpack_from("<H", data, 6)[0]
    offsets, keys = [], []
    while pos + FRAME_HEADER_BYTES <= len(data):
        size = struct.unpack_from("<I", data, pos)[0]
        if size == 0 or pos + FRAME_HEADER_BYTES + size > len(data):
            raise IvfError(f"frame {len(offsets)} at byte {pos} runs past the end of the stream")
        offsets.append(pos)
        keys.append(_vp9_is_key(data[pos + FRAME_HEADER_BYTES]))
        pos += FRAME_HEADER_BYTES + size
    if not offsets:
        raise IvfError("no frames")
    if len(data) >= 2**31:
        raise IvfError("a clip of 2 GiB or more cannot be cut with int32 offsets")
    return IvfTables(np.asarray([*offsets, len(data)], np.int32), keyframe_table(np.asarray(keys)))


def with_count(header: bytes, count: int) -> bytes:
    """`header` claiming `count` frames."""
    return bytes(header[:COUNT_AT]) + struct.pack("<I", count) + bytes(header[COUNT_AT + 4:HEADER_BYTES])


def glue(data: bytes | np.ndarray, offsets: np.ndarray, cut: Cut) -> np.ndarray:
    """The stream of `cut`'s runs behind `data`'s header, its frame count set to theirs, as uint8
    (what DALI's decoder takes as it is; ``bytes(...)`` for PyAV)."""
    data = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    header = np.frombuffer(with_count(data[:HEADER_BYTES].tobytes(), cut.decoded), np.uint8)
    pieces = [data[offsets[s]:offsets[w + 1]] for s, w in zip(cut.starts.tolist(), cut.wanted.tolist())]
    return np.concatenate([header, *pieces])
