"""The benchmark's output: markdown tables on stdout and the JSON report (``--json``).

JSON schema (``--json``), version 2 (1 had no ``peers``, ``repack``, ``decode_only``, ``soak``)::

    {
      "schema": 2,
      "complete": bool,                              # false: written after a configuration of a
                                                     # run still going (or cut short: a time
                                                     # limit, a crash); the rows so far
      "date": "2026-11-23T17:00:00+00:00",          # ISO 8601, local time zone
      "command": "python tools/bench.py ...",
      "machine": {"cpu": str, "cores": int,          # cores usable by this process
                  "cpu_count": int, "memory_gb": float, "platform": str,
                  "gpu": null | {"name": str, "memory_gb": float, "cuda": str, "count": int},
                  "load_avg_start": [1m, 5m, 15m], "load_avg": [...]},  # at start / end (noise!)
      "versions": {"python", "torch", "dali", "av", "webdataset", "vidact",         # str or null
                   "decord", "torchcodec", "git"},                           # short commit, "+dirty" with local edits
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
          "pipelines": int | null,                   # DALI pipelines (threads split among them):
                                                     # the loader's own plan unless --dali-pipelines
          "threads": int,                            # dali only: DALI threads per pipeline
          "storage": "local" | "s3",                 # where the shards were read (--s3: a copy)
          "shape": [B, T, 3, size, size],            # of the first batch (same for all loaders)
          "clips_per_s": float, "frames_per_s": float, "ms_per_batch": float,
          "runs": [float, ...],                      # clips/s of every timed pass
          "cpu_ms_per_clip": float,                  # CPU time (user + system) of the process,
                                                     # its threads and workers per clip, median pass
          "cores_busy": float,                       # CPU seconds per wall second, median pass
          "vs_reference": float,                     # clips/s over the reference loader with
                                                     # the most workers, same config
          "decoded_per_kept": float,                 # frames decoded per frame kept, over the
                                                     # batches measured (vidact.data.batch.decode_cost)
          "decoded_per_clip": float,                 # frames decoded per clip (decoded_per_kept x T)
          "clips_per_video": int,                    # train clips cut from each video read (K)
          "paired": bool,                            # several K of one loader, passes in turns
                                                     # (each starts and ends with a full queue)
          "cpu_vs_k1": float,                        # paired: CPU per clip over K = 1's, the
          "cpu_vs_k1_runs": [float, ...],            # median of each round's ratio
          "error": str}],                            # only when the row failed (figures null)
      "end_to_end": [{                               # one row per config x variant
          "resolution", "short_side", "frames", "size", "batch", "dtype": as above,
          "model": str, "model_size": str, "amp": "bf16" | "fp16" | null, "compile": bool,
          "torch_threads": int,                      # intra-op threads of the training process
          "variant": "ceiling" | "dali" | "torch",
          "loader": "none" | "dali" | "torch", "device": "cpu" | "cuda",
          "workers": int | null,                     # null for the ceiling
          "pipelines": int, "threads": int,          # dali only, as in the loader rows
          "source_loader": "dali" | "torch",         # ceiling only: whose batches it replays
          "steps_per_s": float, "clips_per_s": float, "frames_per_s": float,
          "data_wait": float,                        # share of the epoch spent waiting, 0..1
          "runs": [float, ...],                      # steps/s of every timed pass
          "vs_ceiling": float,                       # steps/s over the ceiling's: dali = (b)/(a)
          "vs_reference": float,                     # steps/s over the torch variant's: (b)/(c)
          "error": str, "skipped": str}],            # figures null; skipped: not applicable here
      "breakdown": [{                                # only with --breakdown
          "resolution", "short_side", "frames", "size", "batch": as above,
          "stage": "pyav_decode" | "pil_decode" | "dali_decode" | "dali_train_read" | "dali_train_plan"
                   | "dali_train_decode" | "dali_train_resize" | "dali_train_normalize" | "dali_eval"
                   | "dali_train" | "torch_train" | "copy",
                   # pyav_/pil_decode: the reference's decoder (video / JPEG frames);
                   # dali_train_X: the train loader cut after X (cumulative: the reader, + the
                   # plans in Python, + the pixels graph's decode, resize, normalize), pipe.run(),
                   # no torch;
                   # dali_train: the loader (+ the copies into torch)
          "device": "cpu" | "cuda", "workers": int,
          "clips_per_s": float, "frames_per_s": float,
          "ms_per_clip": float,                      # wall time per clip
          "ms_per_clip_per_worker": float,           # x workers: busy time of one worker
          "runs": [float, ...], "cpu_ms_per_clip": float, "cores_busy": float, "error": str}],
      "peer_sources": [{"resolution": str, "codec": "mpeg4" | "h264" | ...,   # --peers only: the
                        "short_side": int, "clips": int, "path": str,       # files peers read
                        "build_s": float | null}],      # H.264 copies built this run (null: cached)
      "peers": [{                                    # --peers only: one row per config x peer x
                                                     # --workers, or one "skipped" row per peer
          "resolution", "short_side", "frames", "size", "batch", "dtype", "mode": as "loader",
          "loader": "pyav" | "decord" | "torchcodec",
          "source_codec": str, "source_short_side": int,   # of the files the peer decodes
          "workers": int | null,                     # DataLoader processes (null when skipped)
          "shape": [B, T, 3, size, size],
          "clips_per_s": float | null, "frames_per_s": float, "ms_per_batch": float,
          "runs": [float, ...],
          "cpu_ms_per_clip": float, "cores_busy": float,   # as in "loader"
          "dali_vs_peer": float | null,              # fastest DALI CPU loader row / this row
          "dali_vs_peer_cpu": float | null,          # this row's CPU ms per clip / DALI's lowest
          "skipped": str, "error": str}],            # skipped: why the peer cannot run here
      "repack": [{                                   # --peers only: one row per config
          "resolution", "short_side", "frames", "size", "batch", "dtype", "mode": as above,
          "dali_clips_per_s": float | null,          # fastest DALI CPU loader row
          "best_peer": {"loader": str, "workers": int, "clips_per_s": float} | null,
          "dali_vs_best_peer": float | null,
          "repack_clips": int, "repack_s": float,    # make_shards' per-clip work on the peers'
          "repack_clips_per_s": float,               # files, all cores (timed once per source)
          "repack_cpu_ms_per_clip": float,           # CPU time of that work per clip
          "repack_workers": int, "repack_codec": str,
          "break_even_epochs": float | null,         # (1/repack) / (1/best peer - 1/dali)
          "peer_cpu_ms_per_clip": float | null,      # lowest of the peer rows
          "dali_cpu_ms_per_clip": float | null,      # lowest of the DALI CPU loader rows
          "break_even_epochs_cpu": float | null,     # repack CPU / (peer CPU - DALI CPU), per clip
          "break_even_note": str, "error": str}],    # note: why it never breaks even
      "decode_only": [{                              # --peers or --breakdown: the CPU ceiling
          "resolution", "short_side", "frames", "size", "batch", "dtype", "mode": as above,
          "codec": str,                              # the shard codec
          "decode": "from_start" | "seek",           # frame 0 (DALI CPU) / keyframe before the
                                                     # first wanted frame, to the last wanted
          "workers": int,                            # processes, one FFmpeg thread each
          "clips_per_s": float, "frames_per_s": float,   # frames_per_s: T output frames
          "frames_decoded_per_clip": float, "decoded_frames_per_s": float,
          "runs": [float, ...], "cpu_ms_per_clip": float, "cores_busy": float,
          "dali_share": float | null,                # fastest DALI CPU loader row / this row
          "dali_share_cpu": float | null,            # this CPU ms per clip / DALI loader's: the
                                                     # share of DALI's CPU time that decoding needs
          "error": str}],
      "soak": [{"loader": "dali" | "torch",          # --soak only (no sweep rows then)
                "epoch": int, "rss_mb": float,       # peak RSS of the process + its workers
                "main_rss_mb": float, "workers_rss_mb": float,   # at that peak
                "pss_mb": float,                     # peak PSS of the same (shared pages split)
                "batches": int, "clips_seen": int, "seconds": float, "error": str}],
      "soak_summary": [{"loader": str, "epochs": int, "first_mb": float, "last_mb": float,
                        "max_mb": float, "growth_mb": float,
                        "growth_mb_per_epoch_late": float}],   # slope over the second half
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
from vidact.bench.soak import summarize
from vidact.bench.sources import Source
from vidact.files import atomic_write_json

log = logging.getLogger("vidact.bench")

SCHEMA_VERSION = 2


def build_report(args: argparse.Namespace, argv: list[str] | None, bench: Bench, device_name: str,
                 sources: list[Source], load_start: list[float] | None, elapsed_s: float,
                 complete: bool = True) -> dict[str, Any]:
    """The JSON report of a run (the schema above); `argv` None: the process's own command line."""
    return {
        "schema": SCHEMA_VERSION,
        "complete": complete,
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
        **({"peer_sources": [p.as_dict() for p in bench.peer_sources.values() if not isinstance(p, str)],
            "peers": bench.peer_rows, "repack": bench.repack_rows} if args.peers else {}),
        **({"decode_only": bench.decode_rows} if args.peers or args.breakdown else {}),
        **({"soak": bench.soak_rows, "soak_summary": soak_summary(bench.soak_rows)} if args.soak else {}),
        "notes": bench.notes,
        "elapsed_s": elapsed_s,
    }


def soak_summary(rows: list[dict]) -> list[dict]:
    loaders = dict.fromkeys(r["loader"] for r in rows)
    return [summarize(ok) for name in loaders if (ok := [r for r in rows if r["loader"] == name and r["rss_mb"]])]


def write_report(path: Path, report: dict[str, Any]) -> None:
    atomic_write_json(path, report)
    log.info("wrote %s", path)


def print_tables(args: argparse.Namespace, bench: Bench, device_name: str, cores: int, dtype: str) -> None:
    """The markdown tables of every row, then the notes, on stdout."""
    if args.soak:
        print(f"## Soak: resident memory per epoch ({args.split}, {args.mode} mode, device {device_name})\n")
        print(soak_table(bench.soak_rows))
        if bench.notes:
            print("\nNotes:\n" + "\n".join(f"- {n}" for n in bench.notes))
        return
    print(f"## Loader throughput ({args.mode} mode, device {device_name}, {cores} cores)\n")
    print(loader_table(bench.loader_rows))
    if args.end_to_end:
        print(f"\n## End to end ({args.model}-{args.model_size}, train_steps, batches {dtype})\n")
        print(e2e_table(bench.e2e_rows))
    if args.peers:
        print("\n## Peers: what users run today, on the source files\n")
        print(peers_table(bench.peer_rows))
        print("\n## Repacking: DALI over the best peer, one-time cost, break-even\n")
        print(repack_table(bench.repack_rows))
    if args.peers or args.breakdown:
        print(f"\n## Decode-only ceiling of the shard codec ({cores} processes)\n")
        print(decode_table(bench.decode_rows))
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
    label += " from frame 0" if row[key] == "dali" and row.get("cut") is False else ""
    return label + (f" from {row['storage']}" if row.get("storage", "local") != "local" else "")


def _source_label(row: dict) -> str:
    return f"native ({row['short_side']}p)" if row["resolution"] == "native" else row["resolution"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def loader_table(rows: list[dict]) -> str:
    header = ["source", "T", "size", "batch", "K", "loader", "device", "workers", "clips/s", "frames/s",
              "runs clips/s", "CPU ms/clip", "CPU vs K=1", "cores busy", "vs ref", "decoded/kept", "decoded/clip"]
    body = [[_source_label(r), str(r["frames"]), str(r["size"]), str(r["batch"]), str(r.get("clips_per_video", 1)),
             _loader_label(r), r["device"], str(r["workers"]), _fmt(r.get("clips_per_s")),
             _fmt(r.get("frames_per_s"), 0), _status(r), _fmt(r.get("cpu_ms_per_clip"), 0),
             _k_ratio(r), _fmt(r.get("cores_busy"), 2), _fmt(r.get("vs_reference"), 2), _fmt(r.get("decoded_per_kept")),
             _fmt(r.get("decoded_per_clip"))] for r in rows]
    return markdown_table(header, body)


def _k_ratio(row: dict) -> str:
    """A paired K row's CPU per clip over K = 1's: the median and the rounds' spread."""
    if row.get("cpu_vs_k1") is None or row.get("clips_per_video", 1) == 1:
        return "-"
    return f"{row['cpu_vs_k1']:.2f} ({_spread(row.get('cpu_vs_k1_runs'), 2)})"


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
              "CPU ms/clip", "runs clips/s"]
    body = [[_source_label(r), str(r["frames"]), str(r["size"]), str(r["batch"]), r["stage"], r["device"],
             str(r["workers"]), _fmt(r.get("clips_per_s")), _fmt(r.get("ms_per_clip")),
             _fmt(r.get("ms_per_clip_per_worker")), _fmt(r.get("cpu_ms_per_clip"), 1),
             _status(r)] for r in rows]
    return markdown_table(header, body)


def peers_table(rows: list[dict]) -> str:
    header = ["source", "T", "size", "batch", "peer", "files", "workers", "clips/s", "runs clips/s", "CPU ms/clip",
              "DALI / peer", "DALI / peer (CPU)"]
    body = [[_source_label(r), str(r["frames"]), str(r["size"]), str(r["batch"]), r["loader"],
             f"{r['source_codec']} {r['source_short_side']}p" if r.get("source_codec") else "-",
             _fmt(r.get("workers")), _fmt(r.get("clips_per_s")), _status(r), _fmt(r.get("cpu_ms_per_clip"), 0),
             _fmt(r.get("dali_vs_peer"), 2), _fmt(r.get("dali_vs_peer_cpu"), 2)] for r in rows]
    return markdown_table(header, body)


def repack_table(rows: list[dict]) -> str:
    header = ["source", "T", "batch", "DALI CPU clips/s", "best peer", "peer clips/s", "DALI / best peer",
              "repack clips/s", "break-even epochs", "CPU ms/clip: DALI", "best peer", "repack",
              "break-even epochs (CPU)"]
    body = []
    for r in rows:
        best = r.get("best_peer") or {}
        body.append([_source_label(r), str(r["frames"]), str(r["batch"]), _fmt(r.get("dali_clips_per_s")),
                     f"{best['loader']} x{best['workers']}" if best else "-", _fmt(best.get("clips_per_s")),
                     _fmt(r.get("dali_vs_best_peer"), 2),
                     _fmt(r.get("repack_clips_per_s")) if "error" not in r else f"error: {r['error'][:40]}",
                     _fmt(r.get("break_even_epochs"), 2) if r.get("break_even_epochs") is not None else "never",
                     _fmt(r.get("dali_cpu_ms_per_clip"), 0), _fmt(r.get("peer_cpu_ms_per_clip"), 0),
                     _fmt(r.get("repack_cpu_ms_per_clip"), 0),
                     _fmt(r.get("break_even_epochs_cpu"), 2) if r.get("break_even_epochs_cpu") is not None
                     else "never"])
    return markdown_table(header, body)


def decode_table(rows: list[dict]) -> str:
    header = ["source", "T", "batch", "codec", "decode", "processes", "clips/s", "frames decoded/clip",
              "runs clips/s", "CPU ms/clip", "DALI share", "DALI share (CPU)"]
    body = [[_source_label(r), str(r["frames"]), str(r["batch"]), r["codec"], r["decode"], str(r["workers"]),
             _fmt(r.get("clips_per_s")), _fmt(r.get("frames_decoded_per_clip")), _status(r),
             _fmt(r.get("cpu_ms_per_clip"), 0), _fmt(r.get("dali_share"), 2), _fmt(r.get("dali_share_cpu"), 2)]
            for r in rows]
    return markdown_table(header, body)


def soak_table(rows: list[dict]) -> str:
    """RSS per epoch (MiB, peak of the process and its workers), a column per loader; every epoch
    up to 10, then every 5th and the last."""
    loaders = list(dict.fromkeys(r["loader"] for r in rows))
    by = {(r["loader"], r["epoch"]): r for r in rows}
    epochs = sorted({r["epoch"] for r in rows if r["epoch"]})
    shown = [e for e in epochs if e <= 10 or e % 5 == 0 or e == epochs[-1]]
    header = ["epoch", *[f"{name} {what} MiB" for name in loaders for what in ("RSS", "PSS")]]
    body = [[str(e), *[_fmt(by.get((name, e), {}).get(key)) for name in loaders for key in ("rss_mb", "pss_mb")]]
            for e in shown]
    return markdown_table(header, body)
