"""What Ray workers import in tests/test_scale_out.py: kept light (no torch, no DALI), since every
Ray worker, and the one that replaces a killed worker, imports it before running a task."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from vidact.prep import make_shards


def encode_or_kill_worker(job, marker: str, victim: str):
    """`vidact.prep.make_shards.encode_source`, except that the first time it meets clip `victim` it kills
    the Ray worker running it (this runs in the task's killable child: its parent is the worker)."""
    if job[0].id == victim and not os.path.exists(marker):
        Path(marker).write_text(str(os.getppid()))
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)  # the kernel ends this child with its parent (PR_SET_PDEATHSIG)
    return make_shards.encode_source(job)


def sleep_then_echo(job: tuple[int, float]) -> int:
    """Sleeps `job[1]` seconds, returns `job[0]`: a clip that hangs, for the time limit."""
    time.sleep(job[1])
    return job[0]
