"""Probing many files for the shard maker: `vidact.video_probe.probe_file` in killable workers,
so a file that hangs or crashes FFmpeg is rejected instead of stopping the run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vidact.killable import Failed, run_killable
from vidact.video_probe import REJECTED, Probe, probe_file


def probe_paths(paths: Sequence[Path], workers: int, timeout: float) -> list[Probe]:
    """:func:`probe_file` for each path in killable workers; a hang or crash rejects that file."""
    if not paths:
        return []
    out = []
    for result in run_killable(probe_file, paths, workers, timeout):
        out.append(Probe(REJECTED, result.reason) if isinstance(result, Failed) else result)
    return out
