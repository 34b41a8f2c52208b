"""What a make_shards run encoded and what it cost, for planning a repack: clips, frames, wall
seconds and the workers' CPU seconds (wherever they ran), said in its summary line, which
`parse_repacked` reads back (the repack benchmark, `vidact.bench.repack`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from vidact.prep.writing import Members
from vidact.shards import META_EXT


@dataclass
class Repacked:
    """What this run encoded and what it cost (a resumed run: its own part): the figures for
    planning a repack (frames per second, CPU per frame), said in the summary line."""

    clips: int = 0
    frames: int = 0
    cpu_seconds: float = 0.0  # of the workers, wherever they ran (rejected clips included)
    seconds: float = 0.0

    def add(self, samples: list[Members]) -> None:
        self.clips += 1
        self.frames += sum(json.loads(data)["num_frames"] for members in samples
                           for name, data in members if name.endswith(f".{META_EXT}"))

    def line(self) -> str:
        per_s = self.frames / self.seconds if self.seconds > 0 else 0.0
        per_frame = 1000 * self.cpu_seconds / self.frames if self.frames else 0.0
        return (f"encoded {self.clips} clips, {self.frames} frames in {self.seconds:.1f} s "
                f"({self.clips / max(self.seconds, 1e-9):.2f} clips/s, {per_s:.1f} frames/s; "
                f"{per_frame:.2f} CPU ms per frame)")


REPACKED_LINE = re.compile(r"encoded (?P<clips>\d+) clips, (?P<frames>\d+) frames in (?P<seconds>[\d.]+) s "
                           r"\([\d.]+ clips/s, [\d.]+ frames/s; (?P<cpu_ms_per_frame>[\d.]+) CPU ms per frame\)")


def parse_repacked(text: str) -> dict[str, float]:
    """The figures of `Repacked.line` in make_shards' output (for the repack benchmark)."""
    m = REPACKED_LINE.search(text)
    if m is None:
        raise ValueError("no 'encoded N clips, F frames in S s (...)' line in make_shards' output")
    return {k: float(v) for k, v in m.groupdict().items()}
