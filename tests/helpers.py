"""Helpers of the tests that run the commands: the training command line of a tiny run, running
it, reading its log, and watching a run in progress. Shared here, not imported from a test file."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A tiny, fast configuration of any recipe: 4 frames of 32 px, batch 2.
TINY = ["--model-size", "tiny", "--frames", "4", "--crop-size", "32", "--batch-size", "2", "--accum", "1",
        "--dali-threads", "2", "--device", "cpu", "--eval-views", "1"]


def train_cmd(shards: Path, out: Path, *extra: str, recipe: str = "demo") -> list[str]:
    return [sys.executable, "-m", "vidact.train", "--recipe", recipe, "--shards", str(shards), "--out", str(out),
            *TINY, *extra]


def run_ok(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def log_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def start(cmd: list[str]) -> subprocess.Popen:
    """A command in the background, its stderr kept for the failure message."""
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_lines(proc: subprocess.Popen, path: Path, n: int, timeout: float = 300) -> None:
    """Until `path` has `n` lines (a batch trace growing); fails if the run ends or stalls first."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"run ended or stalled before {n} batches: {proc.poll()}")
