"""Which frames a keyframe cut hands the decoder (a sample's plan holds one: `vidact.clip.plan`;
`vidact.ivf.glue` glues its runs into the stream both loaders decode).

DALI 2.4's video decoder has no index: asked for frame i, it decodes every frame from 0 to i. A
clip stored with a table of its keyframes can instead be cut: for each wanted frame (ascending,
distinct), the run of frames from the keyframe it depends on up to it — or, when the previous
wanted frame lies in the same GOP, from the frame after that one, since the decoder's state
already holds it. The runs glued in order are a valid stream; wanted frame j is at position
``cumsum(run lengths)[j] - 1`` in it. With GOP g a kept frame costs about (g + 1) / 2 decoded
frames, wherever the window lies.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Cut(NamedTuple):
    """Frame runs ``[starts[j], wanted[j]]`` of the source and where each wanted frame lands."""

    starts: np.ndarray  # (D,) int: first source frame of run j
    wanted: np.ndarray  # (D,) int: last source frame of run j (a wanted frame)
    positions: np.ndarray  # (D,) int: wanted[j]'s index in the glued stream
    decoded: int  # frames in the glued stream: what the decoder decodes


def keyframe_table(is_key: np.ndarray) -> np.ndarray:
    """Per frame, the index of the keyframe at or before it (frame 0 must be a keyframe)."""
    is_key = np.asarray(is_key, dtype=bool)
    if len(is_key) == 0 or not is_key[0]:
        raise ValueError("a stream must start with a keyframe")
    return np.maximum.accumulate(np.where(is_key, np.arange(len(is_key)), 0)).astype(np.int32)


def plan_cut(keyframes: np.ndarray, wanted: np.ndarray) -> Cut:
    """The runs that decode the ascending, distinct frames `wanted` given each frame's keyframe."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if len(wanted) == 0 or np.any(np.diff(wanted) <= 0):
        raise ValueError(f"wanted frames must be ascending and distinct, got {wanted.tolist()}")
    key = np.asarray(keyframes, dtype=np.int64)[wanted]
    prev = np.concatenate([[-1], wanted[:-1]])
    starts = np.where(key <= prev, prev + 1, key)
    lengths = wanted - starts + 1
    positions = np.cumsum(lengths) - 1
    return Cut(starts, wanted, positions, int(lengths.sum()))
