"""Soak (``--soak N``): does a loader's resident memory stay flat over many epochs?

Each loader runs in a fresh process (spawned: it inherits no memory of the benchmark), reads N
epochs of ``--split`` (or N passes of ``--soak-batches`` batches of one endless stream, epochs
following each other as in training), and after every batch reads the resident set size of
itself and of its children (DataLoader workers) from ``/proc``. A row per loader and epoch gives
the largest total seen during the epoch. Worker RSS counts pages shared with the parent once per
process (what ``top`` shows); ``pss_mb`` splits shared pages among their users (the memory the
loader really holds).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import torch

from vidact.bench.machine import descendants
from vidact.bench.measure import Bench, loader_pipelines
from vidact.bench.timing import batch_stream, sig
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.shards import CPU_DECODABLE_CODECS, ShardSet

log = logging.getLogger("vidact.bench")

SOAK_LOADERS = ("dali", "torch")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MiB (0 if it has gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB
    except (OSError, IndexError, ValueError):
        return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size of `pid` in MiB (shared pages split among their users; 0 if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0.0


def memory_now() -> tuple[float, float, float]:
    """(this process's RSS, the sum of its descendants' RSS, the PSS of all of them), MiB."""
    me = os.getpid()
    kids = descendants(me)
    return rss_mb(me), sum(rss_mb(p) for p in kids), pss_mb(me) + sum(pss_mb(p) for p in kids)


def soak_loader(settings: dict[str, Any]) -> list[dict]:
    """The rows of one loader: `epochs` passes of `batches` batches (None: one epoch each)."""
    torch.set_num_threads(1)
    s = settings
    loader = build_loader(s["shards"], s["split"], loader=s["loader"], mode=s["mode"], spec=s["spec"],
                          batch_size=s["batch"], device=s["device"], seed=s["seed"], workers=s["workers"],
                          dali_pipelines=loader_pipelines(s["pipelines"]))
    per_epoch = s["batches"] or len(loader)
    stream = batch_stream(loader)
    rows, clips = [], 0
    for epoch in range(1, s["epochs"] + 1):
        peak, main, workers, pss = 0.0, 0.0, 0.0, 0.0
        t0 = time.perf_counter()
        for _ in range(per_epoch):
            clips += int(next(stream)[0].shape[0])
            m, w, p = memory_now()
            pss = max(pss, p)
            if m + w >= peak:
                peak, main, workers = m + w, m, w
        rows.append({"loader": s["loader"], "epoch": epoch, "rss_mb": round(peak, 1), "main_rss_mb": round(main, 1),
                     "workers_rss_mb": round(workers, 1), "pss_mb": round(pss, 1), "batches": per_epoch,
                     "clips_seen": clips, "seconds": sig(time.perf_counter() - t0)})
        log.info("soak %s epoch %d: %.0f MiB (process %.0f, workers %.0f)", s["loader"], epoch, peak, main, workers)
    stream.close()
    return rows


def _child(settings: dict[str, Any], conn: Any) -> None:
    # A spawned child inherits "spawn" as its default start method; the DataLoader workers must
    # start as they would in the benchmark's own process (fork on Linux), not re-import everything.
    multiprocessing.set_start_method(settings["start_method"], force=True)
    logging.basicConfig(level=settings["log_level"], format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        conn.send(soak_loader(settings))
    except Exception as e:  # noqa: BLE001 - reported to the parent as the loader's error
        conn.send(f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        conn.close()


def run_in_child(settings: dict[str, Any]) -> list[dict] | str:
    """`soak_loader` in a spawned process: its rows, or the error that ended it."""
    settings = {**settings, "start_method": multiprocessing.get_start_method()}
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(settings, send))
    proc.start()
    send.close()
    try:
        return recv.recv()
    except EOFError:
        return f"the soak process died (exit code {proc.join() or proc.exitcode})"
    finally:
        proc.join()


def summarize(rows: list[dict]) -> dict[str, Any]:
    """First/last/peak RSS of one loader, and its growth per epoch over the second half (the first
    epochs fill caches and pools; a leak keeps growing after them)."""
    rss = [r["rss_mb"] for r in rows]
    half = rss[len(rss) // 2:]
    slope = (half[-1] - half[0]) / (len(half) - 1) if len(half) > 1 else 0.0
    return {"loader": rows[0]["loader"], "epochs": len(rows), "first_mb": rss[0], "last_mb": rss[-1],
            "max_mb": max(rss), "growth_mb": round(rss[-1] - rss[0], 1),
            "growth_mb_per_epoch_late": round(slope, 2)}


def run_soak(bench: Bench, spec: ClipSpec) -> None:
    """The soak rows of every loader of `SOAK_LOADERS` (a failed one is a row with ``error``)."""
    a = bench.args
    shards = ShardSet.open(a.shards)
    for loader in SOAK_LOADERS:
        if loader == "dali" and bench.device.type != "cuda" and shards.codec not in CPU_DECODABLE_CODECS:
            bench.note(f"{a.shards}: codec {shards.codec} has no DALI CPU decoder; DALI soak skipped")
            continue
        settings = {"shards": str(a.shards), "split": a.split, "loader": loader, "mode": a.mode, "spec": spec,
                    "batch": a.batch_sizes[0], "device": str(bench.device), "seed": a.seed,
                    "workers": a.dali_threads if loader == "dali" else max(a.workers),
                    "pipelines": max(a.dali_pipelines), "epochs": a.soak, "batches": a.soak_batches,
                    "log_level": logging.WARNING if a.quiet else logging.INFO}
        log.info("soak: %s loader, %d epochs of %s", loader, a.soak, a.split)
        got = run_in_child(settings)
        if isinstance(got, str):
            bench.failed += 1
            bench.note(f"soak {loader}: {got}")
            bench.soak_rows.append({"loader": loader, "epoch": None, "rss_mb": None, "error": got})
        else:
            bench.soak_rows += got
