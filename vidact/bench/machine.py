"""What the figures were measured on: cores, CPU, memory, GPU, load, software versions."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        gpu = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
               "count": torch.cuda.device_count()}
    return {"cpu": cpu, "cores": usable_cores(), "cpu_count": os.cpu_count(), "memory_gb": memory,
            "platform": platform.platform(), "gpu": gpu, "load_avg": load_average()}


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (field 3 onwards); [] if it has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            fields = _stat_fields(int(d.name))
            if len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def tree_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this process, its threads, its live descendants
    and the children it has reaped: a loader's CPU cost, whoever else shares the machine. This
    process's own time is read to the nanosecond (DALI's threads live here, and a short pass of a
    fast loader is under one 10 ms clock tick); its descendants' from /proc, in ticks."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + reaped.ru_utime + reaped.ru_stime
    ticks = 0
    for pid in descendants(os.getpid()):
        fields = _stat_fields(pid)
        if len(fields) > 14:
            ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total + ticks / CLOCK_TICKS


def load_average() -> list[float] | None:
    """1/5/15-minute load averages: other jobs on the machine make every figure noisier."""
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _version(dist: str, module: str | None = None) -> str | None:
    """The version of `module` (its ``__version__``) or of the installed distribution `dist`;
    None when it is missing or broken: a report names what it finds, it does not need it."""
    with contextlib.suppress(Exception):
        if module:
            return str(__import__(module, fromlist=["__version__"]).__version__)
        return metadata.version(dist)
    return None


# The checkout vidact runs from, when it does (an installed package has none).
REPO = Path(__file__).resolve().parents[2]


def _git_commit() -> str | None:
    """The checkout's short commit, ``+dirty`` with local edits to tracked files; None when vidact
    runs from an installed package, not a checkout."""
    git = None
    if not (REPO / ".git").exists():
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        git = out.stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if git and dirty:
            git += "+dirty"
    return git


def versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), "torch": _version("torch", "torch"),
            "dali": _version("nvidia-dali", "nvidia.dali"), "av": _version("av", "av"),
            "webdataset": _version("webdataset"), "vidact": _version("vidact", "vidact"),
            "decord": _version("decord"), "torchcodec": _version("torchcodec"), "git": _git_commit()}
