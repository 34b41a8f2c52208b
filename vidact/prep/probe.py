"""Probing many files for the shard maker: `vidact.video_probe.probe_file` in killable workers,
so a file that hangs or crashes FFmpeg is rejected instead of stopping the run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from vidact import cli
from vidact.killable import Failed, run_killable
from vidact.video_probe import REJECTED, Probe, probe_file

log = logging.getLogger(__name__)


def probe_paths(paths: Sequence[Path], workers: int, timeout: float) -> list[Probe]:
    """:func:`probe_file` for each path in killable workers; a hang or crash rejects that file."""
    if not paths:
        return []
    log.info("probing %d files (%d workers)", len(paths), workers)
    out = []
    results = run_killable(probe_file, paths, workers, timeout)
    for result in cli.progress(results, len(paths), "probing", "files", log):
        out.append(Probe(REJECTED, result.reason) if isinstance(result, Failed) else result)
    return out
