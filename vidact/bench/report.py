"""The benchmark's output: markdown tables on stdout and the JSON report (``--json``).

JSON schema (``--json``), version 1::

    {
      "schema": 1,
      "date": "2026-11-23T17:00:00+00:00",          # ISO 8601, local time zone
      "command": "python tools/bench.py ...",
      "machine": {"cpu": str, "cores": int,          # cores usable by this process
                  "cpu_count": int, "memory_gb": float, "platform": str,
                  "gpu": null | {"name": str, "memory_gb": float, "cuda": str, "count": int},
                  "load_avg_start": [1m, 5m, 15m], "load_avg": [...]},  # at start / end (noise!)
      "versions": {"python", "torch", "dali", "av", "webdataset", "vidact",         # str or null
                   "git"},                           # short commit, "+dirty" with local edits
      "device": "cpu" | "<GPU name>",                # where training and DALI-GPU ran
      "settings": {...},                             # every option after --quick defaults
      "sources": [{"resolution": "native" | "240p", "path": str, "split": str, "codec": str,
                   "clips": int, "short_side": int,  # median short side of the clips, px
                   "build_s": float | null}],        # seconds to build (null: given / cached)
      "loader": [{                                   # one row per config x loader variant
          "resolution": str, "short_side": int, "frames": int, "size": int, "batch": int,
          "mode": "train" | "eval", "dtype": "fp32" | "fp16" | "bf16",
          "loader": "dali" | "torch", "device": "cpu" | "cuda",
          "workers": int,                            # DALI threads or DataLoader processes
          "pipelines": int | null,                   # DALI pipelines (threads split among them)
          "storage": "local" | "s3",                 # where the shards were read (--s3: a copy)
          "shape": [B, T, 3, size, size],            # of the first batch (same for all loaders)
          "clips_per_s": float, "frames_per_s": float, "ms_per_batch": float,
          "runs": [float, ...],                      # clips/s of every timed pass
          "vs_reference": float,                     # clips/s over the reference loader with
                                                     # the most workers, same config
          "decoded_per_kept": float,                 # frames decoded per frame kept, over the
                                                     # batches measured (decode_cost in measure)
          "error": str}],                            # only when the row failed (figures null)
      "end_to_end": [{                               # one row per config x variant
          "resolution", "short_side", "frames", "size", "batch", "dtype": as above,
          "model": str, "model_size": str, "amp": "bf16" | "fp16" | null, "compile": bool,
          "torch_threads": int,                      # intra-op threads of the training process
          "variant": "ceiling" | "dali" | "torch",
          "loader": "none" | "dali" | "torch", "device": "cpu" | "cuda",
          "workers": int | null,                     # null for the ceiling
          "pipelines": int,                          # dali only
          "source_loader": "dali" | "torch",         # ceiling only: whose batches it replays
          "steps_per_s": float, "clips_per_s": float, "frames_per_s": float,
          "data_wait": float,                        # share of the epoch spent waiting, 0..1
          "runs": [float, ...],                      # steps/s of every timed pass
          "vs_ceiling": float,                       # steps/s over the ceiling's: dali = (b)/(a)
          "vs_reference": float,                     # steps/s over the torch variant's: (b)/(c)
          "error": str, "skipped": str}],            # figures null; skipped: not applicable here
      "breakdown": [{                                # only with --breakdown
          "resolution", "short_side", "frames", "size", "batch": as above,
          "stage": "pyav_decode" | "dali_decode" | "dali_eval" | "dali_train" | "torch_train"
                   | "copy",
          "device": "cpu" | "cuda", "workers": int,
          "clips_per_s": float, "frames_per_s": float,
          "ms_per_clip": float,                      # wall time per clip
          "ms_per_clip_per_worker": float,           # x workers: busy time of one worker
          "runs": [float, ...], "error": str}],
      "notes": [str, ...],                           # skipped variants, shape mismatches, ...
      "elapsed_s": float                             # the whole run, shard building included
    }
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from vidact.bench.machine import machine_info, versions
from vidact.bench.measure import Bench
from vidact.bench.sources import Source
from vidact.files import atomic_write_json

log = logging.getLogger("vidact.bench")

SCHEMA_VERSION = 1


def build_report(args: argparse.Namespace, argv: list[str] | None, bench: Bench, device_name: str,
                 sources: list[Source], load_start: list[float] | None, elapsed_s: float) -> dict[str, Any]:
    """The JSON report of a run (the schema above); `argv` None: the process's own command line."""
    return {
        "schema": SCHEMA_VERSION,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python " + shlex.join([sys.argv[0] if argv is None else "tools/bench.py",
                                           *(sys.argv[1:] if argv is None else argv)]),
        "machine": {**machine_info(), "load_avg_start": load_start},
        "versions": versions(),
        "device": device_name,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sources": [s.as_dict() for s in sources],
        "loader": bench.loader_rows,
        "end_to_end": bench.e2e_rows,
        **({"breakdown": bench.breakdown_rows} if args.breakdown else {}),
        "notes": bench.notes,
        "elapsed_s": elapsed_s,
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    atomic_write_json(path, report)
    log.info("wrote %s", path)


def print_tables(args: argparse.Namespace, bench: Bench, device_name: str, cores: int, dtype: str) -> None:
    """The markdown tables of every row, then the notes, on stdout."""
    print(f"## Loader throughput ({args.mode} mode, device {device_name}, {cores} cores)\n")
    print(loader_table(bench.loader_rows))
    if args.end_to_end:
        print(f"\n## End to end ({args.model}-{args.model_size}, train_epoch, batches {dtype})\n")
        print(e2e_table(bench.e2e_rows))
    if args.breakdown:
        print("\n## Breakdown (where a clip's time goes)\n")
        print(breakdown_table(bench.breakdown_rows))
    if bench.notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in bench.notes))


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if 0 < abs(v) < 10 ** -digits * 100:  # small figures keep two significant digits
            return f"{v:.2g}"
        return f"{v:.{digits}f}"
    return str(v)


def _spread(runs: Sequence[float] | None, digits: int = 1) -> str:
    return f"{min(runs):.{digits}f}–{max(runs):.{digits}f}" if runs else "-"


def _status(row: dict, digits: int = 1) -> str:
    """The spread of the timed passes, or why the row has no figures."""
    for key in ("error", "skipped"):
        if key in row:
            return f"{key}: {row[key][:60]}"
    return _spread(row.get("runs"), digits)


def _loader_label(row: dict, key: str = "loader") -> str:
    pipes = row.get("pipelines")
    label = f"{row[key]} ({pipes} pipelines)" if pipes and pipes > 1 else row[key]
    return label + (f" from {row['storage']}" if row.get("storage", "local") != "local" else "")


def _source_label(row: dict) -> str:
    return f"native ({row['short_side']}p)" if row["resolution"] == "native" else row["resolution"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def loader_table(rows: list[dict]) -> str:
    header = ["source", "T", "size", "batch", "loader", "device", "workers", "clips/s", "frames/s", "runs clips/s",
              "vs ref", "decoded/kept"]
    body = [[_source_label(r), str(r["frames"]), str(r["size"]), str(r["batch"]), _loader_label(r), r["device"],
             str(r["workers"]), _fmt(r.get("clips_per_s")), _fmt(r.get("frames_per_s"), 0),
             _status(r),
             _fmt(r.get("vs_reference"), 2), _fmt(r.get("decoded_per_kept"))] for r in rows]
    return markdown_table(header, body)


def e2e_table(rows: list[dict]) -> str:
    header = ["source", "T", "size", "batch", "model", "variant", "device", "workers", "steps/s", "clips/s",
              "data wait", "runs steps/s", "vs ceiling", "vs ref"]
    body = [[_source_label(r), str(r["frames"]), str(r["size"]), str(r["batch"]), f"{r['model']}-{r['model_size']}",
             _loader_label(r, "variant"), r.get("device", "-"), _fmt(r.get("workers")), _fmt(r.get("steps_per_s"), 2),
             _fmt(r.get("clips_per_s")),
             f"{100 * r['data_wait']:.0f}%" if r.get("data_wait") is not None else "-",
             _status(r, 2),
             _fmt(r.get("vs_ceiling"), 2), _fmt(r.get("vs_reference"), 2)] for r in rows]
    return markdown_table(header, body)


def breakdown_table(rows: list[dict]) -> str:
    header = ["source", "T", "size", "batch", "stage", "device", "workers", "clips/s", "ms/clip", "ms/clip/worker",
              "runs clips/s"]
    body = [[_source_label(r), str(r["frames"]), str(r["size"]), str(r["batch"]), r["stage"], r["device"],
             str(r["workers"]), _fmt(r.get("clips_per_s")), _fmt(r.get("ms_per_clip")),
             _fmt(r.get("ms_per_clip_per_worker")),
             _status(r)] for r in rows]
    return markdown_table(header, body)
