"""What re-encoding cost: PSNR of a shard clip against the frames its encoder was given.

The reference is the source decode brought to the shard's size and pixel format (exactly what
the encoder received), so the number measures the codec and `--quality`, not the resize. Both
sides go to RGB through the same conversion. It is cheap enough to run for every clip: at most
:data:`KEEP_MAX` reference frames are held while encoding (a stride that doubles as the clip
turns out longer; the frame count is only known at the end), and the shard clip is decoded once
anyway to count its frames. PSNR is pooled over up to :data:`SAMPLE_FRAMES` evenly spaced frames
(one MSE over all their pixels, so identical frames do not give an infinite mean).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import av
import numpy as np

SAMPLE_FRAMES = 8
KEEP_MAX = 16
PSNR_CAP = 100.0  # dB, for a clip that came back bit-exact (MSE 0)
FAR_BELOW_DB = 10.0  # a clip this far under the set's median PSNR (10x its MSE) is flagged
WORST_LISTED = 5


def sample_indices(num_frames: int) -> list[int]:
    """The frames PSNR is measured on: multiples of the smallest power-of-two stride that leaves
    at most KEEP_MAX of them, then up to SAMPLE_FRAMES of those, evenly spaced."""
    stride = 1
    while -(-num_frames // stride) > KEEP_MAX:
        stride *= 2
    kept = list(range(0, num_frames, stride))
    if len(kept) <= SAMPLE_FRAMES:
        return kept
    pos = np.linspace(0, len(kept) - 1, SAMPLE_FRAMES).round().astype(int)
    return [kept[p] for p in pos]


class FrameSampler:
    """Keeps the encoder's input frames that :func:`sample_indices` may pick, for any final count."""

    def __init__(self) -> None:
        self.stride = 1
        self.frames: dict[int, av.VideoFrame] = {}

    def add(self, index: int, frame: av.VideoFrame) -> None:
        if index % self.stride:
            return
        self.frames[index] = frame
        if len(self.frames) > KEEP_MAX:
            self.stride *= 2
            self.frames = {i: f for i, f in self.frames.items() if i % self.stride == 0}


def psnr(reference: list[np.ndarray], decoded: list[np.ndarray]) -> float:
    """PSNR in dB of uint8 frames over all their pixels together, capped at PSNR_CAP."""
    err = sum(float(np.square(a.astype(np.float64) - b.astype(np.float64)).sum())
              for a, b in zip(reference, decoded, strict=True))
    mse = err / sum(a.size for a in reference)
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, round(10 * math.log10(255.0**2 / mse), 2))


def count_and_psnr(decoded: Iterable[av.VideoFrame], sampler: FrameSampler,
                   num_frames: int) -> tuple[int, float | None]:
    """Counts the decoded shard frames and measures PSNR against the kept reference frames on
    the sampled indices both sides have. None when no frame could be compared."""
    wanted = set(sample_indices(num_frames)) & sampler.frames.keys()
    ref, out = [], []
    n = 0
    for frame in decoded:
        if n in wanted:
            ref.append(sampler.frames[n].reformat(format="rgb24", threads=1).to_ndarray())
            out.append(frame.reformat(format="rgb24", threads=1).to_ndarray())
        n += 1
    return n, (psnr(ref, out) if ref else None)


def summarize(metas: list[dict]) -> dict | None:
    """The shard set's fidelity for the manifest: median, 5th percentile, worst clips, and the
    clips more than FAR_BELOW_DB under the median. None when no clip carries a PSNR."""
    scored = sorted((m["psnr"], m["id"], m["split"]) for m in metas if m.get("psnr") is not None)
    if not scored:
        return None
    values = np.array([s[0] for s in scored])
    median = float(np.median(values))
    return {
        "metric": f"PSNR (dB, RGB) vs the source at the shard's size, up to {SAMPLE_FRAMES} frames per clip",
        "clips": len(scored),
        "median": round(median, 2),
        "p5": round(float(np.percentile(values, 5)), 2),
        "min": round(float(values[0]), 2),
        "worst": [{"id": i, "split": s, "psnr": p} for p, i, s in scored[:WORST_LISTED]],
        "far_below_db": FAR_BELOW_DB,
        "far_below": [{"id": i, "split": s, "psnr": p} for p, i, s in scored if p < median - FAR_BELOW_DB],
    }


def summary_line(summary: dict | None) -> str:
    """One phrase for make_shards' last line."""
    if summary is None:
        return "PSNR n/a"
    text = f"PSNR median {summary['median']:.1f} dB, 5th percentile {summary['p5']:.1f} dB"
    far = summary["far_below"]
    if far:
        text += (f", {len(far)} clip{'s' if len(far) > 1 else ''} more than {FAR_BELOW_DB:g} dB below "
                 f"(worst {far[0]['id']} {far[0]['psnr']:.1f} dB)")
    return text
