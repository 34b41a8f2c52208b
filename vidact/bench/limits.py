"""The rows that put the DALI loader in context (``--peers``): the peer loaders on the source
files, the one-time cost of repacking and its break-even, and the decode-only ceiling."""

from __future__ import annotations

import logging
from typing import Any

from vidact.bench import ceiling
from vidact.bench.measure import Bench, Config
from vidact.bench.peers import PEERS, PeerSource, peer_loader, peer_source, repack_rate, unavailable
from vidact.bench.sources import Source
from vidact.bench.timing import batch_stream, rate_figures, sig, timed_passes, torch_threads
from vidact.shards import ShardError, ShardSet

log = logging.getLogger("vidact.bench")


def open_peer_sources(bench: Bench, base: ShardSet, sources: list[Source]) -> None:
    """The peers' files of every shard set (a reason string where they cannot be had)."""
    for src in sources:
        try:
            bench.peer_sources[src.resolution] = peer_source(bench, base, src)
        except (OSError, RuntimeError, ShardError, ValueError) as e:
            bench.peer_sources[src.resolution] = f"no source files for the peers: {e}"
            bench.note(f"{src.label}: peers skipped ({e})")


def dali_cpu_rows(bench: Bench, cfg: Config) -> list[dict]:
    """The measured DALI CPU loader rows of `cfg`, one clip per video read (as the peers cut)."""
    key = cfg.row()
    return [r for r in bench.loader_rows if r["loader"] == "dali" and r["device"] == "cpu"
            and r.get("clips_per_s") and r.get("clips_per_video", 1) == 1
            and all(r.get(k) == v for k, v in key.items())]


def dali_cpu_rate(bench: Bench, cfg: Config) -> float | None:
    """clips/s of the fastest DALI CPU loader row of `cfg` (None if none was measured)."""
    return max((r["clips_per_s"] for r in dali_cpu_rows(bench, cfg)), default=None)


def dali_cpu_cost(bench: Bench, cfg: Config) -> float | None:
    """The lowest CPU ms per clip of `cfg`'s DALI CPU loader rows (None if none was measured)."""
    return min((r["cpu_ms_per_clip"] for r in dali_cpu_rows(bench, cfg) if r.get("cpu_ms_per_clip")), default=None)


def measure_peer(bench: Bench, cfg: Config, src: PeerSource, peer: str, workers: int) -> dict:
    a = bench.args
    loader = peer_loader(src, peer, a.mode, cfg.spec, cfg.batch, workers, a.seed)
    stream = batch_stream(loader)
    shape: list[int] = []
    try:
        def step() -> int:
            video = next(stream)[0]
            if not shape:
                shape.extend(video.shape)
            return int(video.shape[0])

        with torch_threads(bench.consumer_threads()):
            passes = timed_passes(step, a.batches, a.repeats, a.warmup, lambda: None)
    finally:
        stream.close()
        del loader
    return {"shape": shape, **rate_figures(passes, cfg.frames, a.batches)}


def run_peers(bench: Bench, cfg: Config) -> None:
    """A row per peer x ``--workers`` (one ``skipped`` row per peer that cannot run), then the
    repacking summary of `cfg`."""
    a = bench.args
    src = bench.peer_sources.get(cfg.source.resolution, "no source files for the peers")
    dali = dali_cpu_rate(bench, cfg)
    rows = []
    for peer in PEERS:
        base = {**cfg.row(), "mode": a.mode, "loader": peer, "source_codec": getattr(src, "codec", None),
                "source_short_side": getattr(src, "short_side", None)}
        reason = src if isinstance(src, str) else unavailable(peer, src.clips[0] if src.clips else None)
        if reason:
            bench.note(f"{cfg.source.label}: peer {peer} skipped ({reason})")
            rows.append({**base, "workers": None, "skipped": reason, "clips_per_s": None})
            continue
        for w in a.workers:
            row = bench.guarded(f"{cfg} peer {peer} x{w}", lambda p=peer, w=w: measure_peer(bench, cfg, src, p, w),
                                {**base, "workers": w})
            row.setdefault("clips_per_s", None)
            if row["clips_per_s"]:
                log.info("%s peer %s x%d: %.1f clips/s", cfg, peer, w, row["clips_per_s"])
            rows.append(row)
    dali_cpu = dali_cpu_cost(bench, cfg)
    for r in rows:
        r["dali_vs_peer"] = sig(dali / r["clips_per_s"]) if dali and r["clips_per_s"] else None
        r["dali_vs_peer_cpu"] = sig(r["cpu_ms_per_clip"] / dali_cpu) if dali_cpu and r.get("cpu_ms_per_clip") else None
    bench.peer_rows += rows
    if not isinstance(src, str):
        bench.repack_rows.append(repack_summary(bench, cfg, src, rows, dali))


def repack_summary(bench: Bench, cfg: Config, src: PeerSource, rows: list[dict], dali: float | None) -> dict:
    """DALI over the best peer, the repacking rate (timed once per source) and the epochs after
    which repacking has paid for itself: repack time per clip over the time per clip each epoch
    saves, ``(1/R) / (1/peer - 1/dali)``."""
    a = bench.args
    res = cfg.source.resolution
    if res not in bench.repack_cache:
        shards = ShardSet.open(cfg.source.path)
        bench.repack_cache[res] = bench.guarded(
            f"{cfg.source.label} repack", lambda: repack_rate(src.clips, shards, shards.manifest["encode"].get(
                "short_side"), bench.cores, a.sweep_clips), {})
    repack = bench.repack_cache[res]
    ok = [r for r in rows if r.get("clips_per_s")]
    best = max(ok, key=lambda r: r["clips_per_s"]) if ok else None
    out: dict[str, Any] = {**cfg.row(), "mode": a.mode, "dali_clips_per_s": dali,
                           "best_peer": {k: best[k] for k in ("loader", "workers", "clips_per_s")} if best else None,
                           **repack}
    peer = best["clips_per_s"] if best else None
    out["dali_vs_best_peer"] = sig(dali / peer) if dali and peer else None
    rate = repack.get("repack_clips_per_s")
    saved = (1 / peer - 1 / dali) if dali and peer else None
    out["break_even_epochs"] = sig(1 / rate / saved, 3) if rate and saved and saved > 0 else None
    if saved is not None and saved <= 0:
        out["break_even_note"] = f"never: the best peer ({best['loader']}) is as fast as DALI or faster"
    # The same in CPU time per clip: what the wall clock says when nobody else uses the machine.
    costs = [r["cpu_ms_per_clip"] for r in ok if r.get("cpu_ms_per_clip")]
    out["peer_cpu_ms_per_clip"] = min(costs) if costs else None
    out["dali_cpu_ms_per_clip"] = dali_cpu_cost(bench, cfg)
    cpu_saved = out["peer_cpu_ms_per_clip"] - out["dali_cpu_ms_per_clip"] if costs and out["dali_cpu_ms_per_clip"] \
        else None
    repack_cpu = repack.get("repack_cpu_ms_per_clip")
    out["break_even_epochs_cpu"] = sig(repack_cpu / cpu_saved, 3) if repack_cpu and cpu_saved and cpu_saved > 0 \
        else None
    return out


def run_decode_only(bench: Bench, cfg: Config) -> None:
    """The decode-only ceiling of `cfg`'s shard codec with all cores, both ways, and the DALI
    loader's share of each."""
    a = bench.args
    per_pass = cfg.batch * a.batches
    base = {**cfg.row(), "mode": a.mode, "codec": cfg.source.codec, "workers": bench.cores}
    if cfg.source.codec == "jpeg":  # nothing to seek: the loader decodes exactly its frames
        bench.note(f"{cfg.source.label}: decode-only ceiling is for video codecs; a JPEG-frames set decodes "
                   "one JPEG per distinct frame (decoded_per_kept 1)")
        return

    def measure() -> dict:
        clips = ceiling.wanted_windows(cfg.source.path, cfg.source.split, cfg.spec, a.mode, a.seed, per_pass)
        return ceiling.decode_ceiling(clips, bench.cores, per_pass, a.repeats, cfg.frames)

    got = bench.guarded(f"{cfg} decode only", lambda: {"ways": measure()}, base)
    dali = dali_cpu_rate(bench, cfg)
    for way in ceiling.DECODE_WAYS:
        if "error" in got:
            bench.decode_rows.append({**base, "decode": way, "clips_per_s": None, "error": got["error"]})
            continue
        row = {**base, "decode": way, **got["ways"][way]}
        row["decoded_frames_per_s"] = sig(row["clips_per_s"] * row["frames_decoded_per_clip"])
        row["dali_share"] = sig(dali / row["clips_per_s"]) if dali else None
        dali_cpu = dali_cpu_cost(bench, cfg)
        row["dali_share_cpu"] = sig(row["cpu_ms_per_clip"] / dali_cpu) if dali_cpu and row.get("cpu_ms_per_clip") \
            else None
        log.info("%s decode only (%s): %.1f clips/s", cfg, way, row["clips_per_s"])
        bench.decode_rows.append(row)
