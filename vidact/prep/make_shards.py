"""Repacks a video dataset into vidact shards (the engine behind `tools/make_shards.py`).

Steps: find the sources of one of three layouts (video class folders, frame folders,
unlabeled test folders) with their labels and splits; re-encode each clip in parallel workers to
a codec both DALI decoders take, counting its frames by decoding; write the clips in a fixed,
seeded order into size-bounded WebDataset tars with DALI index files, then the manifest and
the rejects report. Shards are written to a temporary name and renamed when complete (or built in
a scratch folder and uploaded, for an object store), so a killed run leaves only finished shards,
which the next run keeps (resume); clips are encoded by local killable workers or Ray tasks.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from vidact import cli, fidelity, storage
from vidact.cli import UsageError
from vidact.files import check_output
from vidact.ids import segment_id, segment_key
from vidact.killable import Failed, run_killable
from vidact.prep.discovery import LAYOUTS, Plan, Source, discover, images
from vidact.prep.probe import probe_paths
from vidact.prep.ray_pool import TaskLost, run_on_ray
from vidact.prep.repacked import Repacked
from vidact.prep.verify import main as verify_main
from vidact.prep.writing import Destination, Members, SplitWriter, write_manifest
from vidact.shards import (
    CONTAINER_EXT,
    CPU_DECODABLE_CODECS,
    NVDEC_MIN_SIDE,
    REJECTS,
    SPLITS,
    SampleMeta,
    ShardError,
    index_name,
    sample_members,
)
from vidact.video_io import (
    DEFAULT_QUALITY,
    Encoded,
    EncodeSettings,
    VideoError,
    encode_image_segments,
    segment_lengths,
    transcode_segments,
)
from vidact.video_probe import VIDEO, probe_file

log = logging.getLogger("vidact.make_shards")

__all__ = ["Plan", "Source", "discover", "main", "ordered", "split_off_val"]


# --------------------------------------------------------------------------- splits and order

def split_off_val(sources: list[Source], fraction: float, seed: int) -> None:
    """Moves a seeded, stratified `fraction` of each class's train clips to 'val', in place.
    Only used when no source is already in 'val'."""
    if fraction <= 0 or any(s.split == "val" for s in sources):
        return
    by_class: dict[int, list[Source]] = defaultdict(list)
    for s in sources:
        if s.split == "train":
            by_class[s.label_id].append(s)
    rng = random.Random(seed)
    for label_id in sorted(by_class):
        clips = sorted(by_class[label_id], key=lambda s: s.key)
        rng.shuffle(clips)
        n_val = round(len(clips) * fraction) if len(clips) > 1 else 0
        for s in clips[:n_val]:
            s.split = "val"


def ordered(sources: list[Source], seed: int) -> dict[str, list[Source]]:
    """Sources per split in their shard order: a seeded shuffle, so that shards mix classes
    and the same input and seed always give the same shards."""
    out: dict[str, list[Source]] = {}
    for split in sorted({s.split for s in sources}, key=lambda x: (SPLITS + (x,)).index(x)):
        items = sorted((s for s in sources if s.split == split), key=lambda s: s.key)
        random.Random(f"{seed}:{split}").shuffle(items)
        out[split] = items
    return out


# --------------------------------------------------------------------------- encoding (workers)

def encode_source(job: tuple[Source, EncodeSettings, float, float | None]
                  ) -> tuple[Source, list[Members] | None, str | None, float]:
    """Worker: one source -> the members of its sample (of each segment's sample, with a
    `max_seconds` as fourth item of `job`), or a reject reason; and the CPU seconds it took (this
    process's, every thread: where it ran, local worker or Ray task)."""
    started = time.process_time()
    source, samples, reason = _encode_source(job)
    return source, samples, reason, time.process_time() - started


def _encode_source(job: tuple[Source, EncodeSettings, float, float | None]
                   ) -> tuple[Source, list[Members] | None, str | None]:
    source, settings, frames_fps, max_seconds = job
    try:
        if source.kind == "frames":
            encs = encode_image_segments(images(source.path), frames_fps, settings, max_seconds)
        else:
            # probed again here, where a hang can be killed: a CSV-listed file was not probed yet
            probe = probe_file(source.path)
            if probe.verdict != VIDEO:
                return source, None, probe.reason
            encs = transcode_segments(source.path, settings, max_seconds)
    except VideoError as e:
        return source, None, str(e)
    except Exception as e:  # noqa: BLE001 - any failure on one clip must not stop the run
        return source, None, f"unexpected {e.__class__.__name__}: {e}"
    if sum(enc.num_frames for enc in encs) < 1:
        return source, None, "0 decodable frames"
    if max_seconds is None:
        meta = sample_meta(source, encs[0])
        return source, [sample_members(source.key, encs[0].data, settings.container_ext, meta,
                                       encs[0].frame_offsets)], None
    samples = []
    for k, enc in enumerate(encs):
        meta = {**sample_meta(source, enc), "id": segment_id(source.id, k), "source_id": source.id, "segment": k,
                "segments": len(encs), "segment_start_frame": enc.start_frame,
                "segment_start_s": round(enc.start_frame / enc.fps, 6)}
        meta.pop("header_frames", None)  # the source's claim, not this segment's
        samples.append(sample_members(segment_key(source.key, k), enc.data, settings.container_ext, meta,
                                      enc.frame_offsets))
    return source, samples, None


def sample_meta(source: Source, enc: Encoded) -> SampleMeta:
    """The json record of one encoded clip of `source`."""
    meta: SampleMeta = {
        "id": source.id,
        "label": source.label,
        "label_id": source.label_id,
        "split": source.split,
        "fps": round(enc.fps, 6),
        "num_frames": enc.num_frames,
        "duration": round(enc.num_frames / enc.fps, 6),
        "width": enc.width,
        "height": enc.height,
        "source_width": enc.source_width,
        "source_height": enc.source_height,
        "source": str(source.path),
        "bytes": len(enc.data),
    }
    if enc.header_frames is not None and enc.header_frames != enc.num_frames:
        meta["header_frames"] = enc.header_frames
    if enc.psnr is not None:
        meta["psnr"] = enc.psnr
    return meta


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=cli.prog("vidact.prep.make_shards"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + """

Layouts (auto-detected, or --layout):
  videos     SRC/{label}/{id}.avi|.mp4|...          (UCF-101, HMDB51)
  frames     SRC/{label}/{video_id}/frame_0001.jpg  (frame folders, encoded at --fps)
  unlabeled  SRC/{id}.avi or SRC/{id}/frame_*.jpg   (test set for predict; label -1)

Labels and splits: train.csv/val.csv/test.csv (id,label,split) with dictionary.json in
--labels (default SRC); or UCF-101's classInd.txt + trainlist0N/testlist0N.txt (--ucf-splits,
--fold); or the folder names alone. No val split given: a seeded, stratified --val-fraction of
train becomes val.

Which files are videos is decided by their content (FFmpeg's probe), not their extension: Ogg,
MPEG-TS, VOB, Y4M... are sharded; text, still images and files the lists do not name are
ignored. Every entry under SRC is sharded, rejected (with a reason) or ignored (with a reason);
split CSVs, dictionary.json and UCF-101's lists are layout files, not counted. Ids are the file
stems; only sources whose stems collide get longer ids (name with extension, then path).

Checking a set: `vidact-shards verify SET` (a folder or s3://) checks every tar and index against
its .sha256 and every sample against its checksum and tables, lists what is damaged and exits 1
if anything is.

Output: OUT/{split}-000000.tar (+ .idx for DALI, + .sha256 checksums), OUT/rejects.jsonl (one
line per rejected or ignored entry, "kind" says which), then OUT/manifest.json, written last.
OUT is a folder or an object-store prefix (s3://bucket/prefix; endpoint, region and credentials
from the AWS environment variables or config files, e.g. AWS_ENDPOINT_URL for a non-AWS store):
shards are built in --scratch one at a time and uploaded as each completes. Each clip's PSNR
against its source (at the shard's size) is stored in its json; the manifest and the last line
summarize it. Re-running the same command resumes: finished shards are kept. Bad sources are
skipped and listed in rejects.jsonl; a source that hangs or crashes the decoder is killed after
--clip-timeout and rejected. The exit status is non-zero only if nothing was sharded, or with
--strict if anything was rejected.""")
    p.add_argument("src", type=Path, help="dataset root")
    p.add_argument("--out", required=True, help="output folder, or s3://bucket/prefix, for the shard set")
    p.add_argument("--layout", choices=LAYOUTS, help="source layout (default: auto-detect)")
    p.add_argument("--labels", type=Path, help="folder with split CSVs and dictionary.json (default: SRC)")
    p.add_argument("--ucf-splits", type=Path, help="folder with UCF-101 classInd.txt and train/testlist files")
    p.add_argument("--fold", type=int, default=1, choices=(1, 2, 3), help="UCF-101 split fold (default 1)")
    p.add_argument("--shard-size-mb", type=float, default=256.0, help="bound on a shard's size (default 256)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes (default: all cores)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="val share split off train when no val list")
    p.add_argument("--seed", type=int, default=0, help="seed of the val split and the shard order")
    p.add_argument("--clip-timeout", type=float, default=600.0,
                   help="seconds one source may take to probe or to encode before its worker is killed "
                        "and the source rejected (default 600); with Ray, each task runs its clip in a "
                        "killable child process under the same limit")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any source was rejected")
    add_encoding_args(p)
    add_segment_args(p)
    add_scale_out_args(p)
    return p


def add_encoding_args(p: argparse.ArgumentParser) -> None:
    """How clips are stored: codec, quality, keyframes, container, size."""
    g = p.add_argument_group("encoding")
    g.add_argument("--codec", default="vp9", choices=sorted(CONTAINER_EXT),
                   help="shard codec (default vp9: DALI's CPU decoder takes VP8/VP9/MJPEG only); jpeg stores "
                        "each frame as its own baseline 4:2:0 JPEG: the loaders decode exactly the frames they "
                        "keep, for about 6x the bytes of vp9 (frame folders of such JPEGs are kept as they are)")
    g.add_argument("--quality", type=int,
                   help="crf (vp9 28, vp8 10, h264 21, hevc 24), qscale for mjpeg (4) or JPEG quality 1-95 for "
                        "jpeg (90)")
    g.add_argument("--gop", type=int, default=EncodeSettings.gop,
                   help=f"keyframe interval in frames (default {EncodeSettings.gop}): the loaders decode from the "
                        "keyframe before each frame they keep, about (gop + 1) / 2 frames per frame kept; "
                        "8 takes 1.2-1.6x fewer bytes and decodes ~1.4x more")
    g.add_argument("--gpu-only", action="store_true",
                   help="allow a --codec only NVDEC decodes (h264, hevc): such shards load on no CPU")
    g.add_argument("--short-side", type=int, help="resize so the shorter side has this many pixels")
    g.add_argument("--min-side", type=int, default=NVDEC_MIN_SIDE,
                   help="scale smaller clips up, aspect ratio kept, so both sides have at least this "
                        f"many pixels; wins over a smaller --short-side (default {NVDEC_MIN_SIDE}: NVDEC, the GPU "
                        "decoder, takes no VP9 frame under that; 0: off)")
    g.add_argument("--fps", type=float, default=10.0, help="frame rate given to frame folders (default 10)")
    g.add_argument("--align", type=int, default=16, choices=(16, 2),
                   help="sides are multiples of this (default 16: DALI 2.4 creates an NVDEC decoder per sample for "
                        "other sizes; 2 keeps sizes nearest the source, to measure that cost)")


def add_segment_args(p: argparse.ArgumentParser) -> None:
    """Long sources cut into segments."""
    g = p.add_argument_group("long videos")
    g.add_argument("--max-seconds", type=float, metavar="S",
                   help="cut every source into consecutive segments of S seconds (round(S*fps) frames), each "
                        "its own clip starting on a keyframe and its own sample: id ID@k (key KEY_k), the "
                        "source's label, source_id, segment k, segment_start_s. A last piece under 1 s and "
                        "under S/2 joins the segment before it. evaluate and predict then report one row per "
                        "source (default: off, one sample per source)")


def add_scale_out_args(p: argparse.ArgumentParser) -> None:
    """Object-store output and encoding on a Ray cluster."""
    g = p.add_argument_group("scaling out", description=(
        "--distributor ray encodes the clips as Ray tasks wherever the cluster has CPUs; this process packs "
        "them in the same order, so the shards are byte-identical to a local run's. Every node needs vidact "
        "installed and the sources at the same path (a shared filesystem)."))
    g.add_argument("--scratch", help="local folder for shards on their way to an object store, one at a time "
                                     "(default: the system's temp folder)")
    g.add_argument("--distributor", choices=("local", "ray"), default="local",
                   help="where clips are encoded: local worker processes (default) or Ray tasks")
    g.add_argument("--ray-address",
                   help="Ray cluster to join (auto, HOST:PORT or ray://HOST:PORT; default: RAY_ADDRESS, "
                        "else a new local Ray with --workers CPUs)")
    g.add_argument("--ray-retries", type=int, default=3,
                   help="times Ray re-runs a task whose worker died (default 3); then the run stops, "
                        "finished shards kept")


def _results(todo: list[Source], settings: EncodeSettings, args: argparse.Namespace) -> Iterator:
    """encode_source's result (or Failed) for every source of `todo`, in order: from local
    killable workers, or from Ray tasks (`vidact.prep.ray_pool`)."""
    jobs = ((s, settings, args.fps, args.max_seconds) for s in todo)
    if args.distributor == "ray":
        return run_on_ray(encode_source, jobs, args.clip_timeout, address=args.ray_address,
                          num_cpus=args.workers, retries=args.ray_retries)
    return run_killable(encode_source, jobs, args.workers, args.clip_timeout)


def _encode_all(todo: list[Source], writers: dict[str, SplitWriter], settings: EncodeSettings,
                args: argparse.Namespace, rejects: list[dict]) -> Repacked:
    """Encodes `todo` (in order, so output is deterministic) into the writers; a clip that
    fails, hangs past --clip-timeout or crashes its worker is rejected."""
    done, started = Repacked(), time.perf_counter()
    first_shards = sum(len(w.shards) for w in writers.values()) if todo else None  # None: said
    results = _results(todo, settings, args)

    def rate() -> str:
        return f"{done.frames / max(time.perf_counter() - started, 1e-9):.0f} frames/s"

    try:
        for source, result in cli.progress(zip(todo, results), len(todo), "encoding", "clips", log, rate):
            samples, reason, cpu = (None, result.reason, 0.0) if isinstance(result, Failed) else result[1:]
            done.cpu_seconds += cpu
            if samples is None:
                rejects.append({"kind": "rejected", "source": str(source.path), "reason": reason})
                log.warning("rejected %s: %s", source.path, reason)
                continue
            writers[source.split].add(samples)
            done.add(samples)
            if first_shards is not None and sum(len(w.shards) for w in writers.values()) > first_shards:
                report_bytes(writers, todo[0], settings, args)
                first_shards = None
    except TaskLost as e:
        raise ShardError(f"{todo[e.index].path}: {e}; finished shards are kept, re-run to resume") from e
    finally:
        results.close()  # stops the workers (cancels the Ray tasks), also on Ctrl-C
    for w in writers.values():
        w.flush()
    if first_shards is not None and done.clips:
        report_bytes(writers, todo[0], settings, args)
    return done


def report_bytes(writers: dict[str, SplitWriter], example: Source, settings: EncodeSettings,
                 args: argparse.Namespace) -> None:
    """After the first shard: bytes per clip so far, and for a JPEG-frames set what VP9 (the
    default codec) takes for its first clip, so the user sees the trade-off before the whole set."""
    metas = [m for w in writers.values() for m in w.metas if "bytes" in m]
    if not metas:
        return
    line = f"{sum(m['bytes'] for m in metas) / len(metas) / 1024:,.0f} KiB per clip as {settings.codec} " \
           f"({len(metas)} clips so far)"
    ours = sum(m["bytes"] for m in metas if m.get("source_id", m["id"]) == example.id)
    if settings.codec == "jpeg" and ours:
        vp9 = EncodeSettings(short_side=settings.short_side, min_side=settings.min_side, align=settings.align)
        _source, samples, _reason = _encode_source((example, vp9, args.fps, args.max_seconds))
        if samples:
            theirs = sum(len(members[0][1]) for members in samples)  # the clip member comes first
            line += f"; {example.id}: {ours / 1024:,.0f} KiB as jpeg, {theirs / 1024:,.0f} KiB as vp9 " \
                    f"(gop {vp9.gop}, crf {DEFAULT_QUALITY['vp9']}): {ours / theirs:.1f}x"
    log.info("make_shards: %s", line)


def check_kept(writers: dict[str, SplitWriter], max_seconds: float | None, video_ext: str) -> None:
    """Finished shards of an earlier run are kept only if they were cut as this run cuts: with
    the same --max-seconds (segments of that many frames), or without; and hold their clips in
    this run's format (``--codec``)."""
    for w in writers.values():
        if w.shards:
            idx = storage.read_text(w.dest.url(index_name(w.shards[0]))).splitlines()
            kept_ext = idx[1].split()[0] if len(idx) > 1 else video_ext  # the video member comes first
            if kept_ext != video_ext:
                raise ShardError(f"{w.dest.url(w.shards[0])}: finished shards hold .{kept_ext} clips, this run "
                                 f"writes .{video_ext}; re-run with the --codec that made them, or write to "
                                 "another --out")
        for m in w.metas:
            if ("source_id" in m) != (max_seconds is not None):
                made = "with" if "source_id" in m else "without"
                raise ShardError(f"{w.dest.url(w.shards[0])}: finished shards were made {made} --max-seconds; "
                                 "re-run with the same options, or write to another --out")
            if max_seconds is not None and m["segment"] < m["segments"] - 1 and \
                    m["num_frames"] != segment_lengths(max_seconds, m["fps"])[0]:
                raise ShardError(f"{w.dest.url(w.shards[0])}: finished shards were cut at another --max-seconds "
                                 f"(segment {m['id']} has {m['num_frames']} frames); re-run with the same "
                                 "options, or write to another --out")


def _report(args: argparse.Namespace, manifest: dict, writers: dict[str, SplitWriter], done: Repacked,
            rejects: list[dict], ignored: list[dict]) -> int:
    """The summary line and the exit status."""
    counts = ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())
    total = sum(v["count"] for v in manifest["splits"].values())
    see = f" (see {storage.join(args.out, REJECTS)})" if rejects or ignored else ""
    if args.max_seconds is not None:
        counts += f"; segments of {args.max_seconds:g} s cut from " + \
            f"{sum(v['sources'] for v in manifest['splits'].values())} sources"
    print(f"make_shards: {total} clips ({counts}) in {sum(len(w.shards) for w in writers.values())} shards "
          f"at {args.out}; {done.line()}; "
          f"{fidelity.summary_line(manifest['psnr'])}; {len(rejects)} rejected, {len(ignored)} ignored{see}")
    if total == 0:
        print("make_shards: nothing could be sharded", file=sys.stderr)
        return 1
    cli.said(args.out)
    if args.strict and rejects:
        return 1
    return 0


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, EncodeSettings]:
    args = build_parser().parse_args(argv)
    args.out = storage.normalize(args.out)
    if args.codec not in CPU_DECODABLE_CODECS and not args.gpu_only:
        raise UsageError(f"--codec {args.codec}: DALI decodes it on a GPU (NVDEC) only, so the shards would load on no "
                         f"CPU (DALI's CPU decoder takes {', '.join(CPU_DECODABLE_CODECS)}); use --codec vp9 (the "
                         "default) or jpeg, or add --gpu-only to write them for GPU machines")
    if args.codec == "jpeg" and args.quality is not None and not 1 <= args.quality <= 95:
        raise UsageError(f"--quality for jpeg is 1-95, got {args.quality}")
    if args.min_side < 0:
        raise UsageError(f"--min-side must be >= 0, got {args.min_side}")
    if not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.clip_timeout <= 0:
        raise UsageError(f"--clip-timeout must be positive, got {args.clip_timeout}")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise UsageError(f"--max-seconds must be positive, got {args.max_seconds}")
    if args.ray_retries < 0:
        raise UsageError(f"--ray-retries must be >= 0, got {args.ray_retries}")
    settings = EncodeSettings(codec=args.codec, gop=args.gop, quality=args.quality, short_side=args.short_side,
                              min_side=args.min_side, align=args.align)
    return args, settings


def main(argv: list[str] | None = None) -> int:
    """``vidact-shards SRC --out OUT ...`` makes a shard set; ``vidact-shards verify SET`` checks one."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    name = cli.prog("vidact.prep.make_shards")
    try:
        args, settings = _parse(argv)
        if not storage.is_remote(args.out):
            check_output(args.out)  # before any probing: a wrong --out fails at once, creating nothing
        if not args.src.is_dir():
            raise UsageError(f"{args.src}: no such folder (the dataset to shard)")
        prober = partial(probe_paths, workers=args.workers, timeout=args.clip_timeout)
        plan = discover(args.src, args.layout, args.labels, args.ucf_splits, args.fold, prober=prober)
        storage.make_location(args.out)  # a found source only: a failed run leaves no empty folder
    except (UsageError, OSError) as e:
        return cli.fail(name, e)
    except KeyboardInterrupt:
        log.error("interrupted while probing the sources; nothing was written")
        return 130
    for r in plan.rejects:
        log.warning("rejected %s: %s", r["source"], r["reason"])
    if plan.ignored:
        log.info("ignored %d entries that are not clips (listed in %s)", len(plan.ignored),
                 storage.join(args.out, REJECTS))
    split_off_val(plan.sources, args.val_fraction, args.seed)
    try:
        dest = Destination(args.out, args.scratch)
    except OSError as e:
        return cli.fail(name, e)
    try:
        return _shard(args, settings, plan, dest)
    except UsageError as e:
        return cli.fail(name, e)
    except (ShardError, OSError, RuntimeError) as e:
        return cli.fail(name, e, cli.EXIT_FAILED)
    finally:
        dest.close()


def _shard(args: argparse.Namespace, settings: EncodeSettings, plan: Plan, dest: Destination) -> int:
    """Encodes what `dest` does not hold yet, then writes the rejects and the manifest."""
    per_split = ordered(plan.sources, args.seed)
    max_bytes = int(args.shard_size_mb * 2**20)
    writers = {split: SplitWriter(dest, split, max_bytes) for split in per_split}
    check_kept(writers, args.max_seconds, settings.container_ext)
    todo = [s for split, items in per_split.items() for s in items if s.key not in writers[split].done_keys]
    kept = sum(len(w.metas) for w in writers.values())
    if kept:
        log.info("resuming: %d clips in finished shards kept, %d to encode", kept, len(todo))
    rejects = list(plan.rejects)
    started = time.perf_counter()
    try:
        done = _encode_all(todo, writers, settings, args, rejects)
    except KeyboardInterrupt:
        log.error("interrupted: finished shards are kept; re-run the same command to resume")
        return 130
    done.seconds = time.perf_counter() - started
    manifest = write_manifest(dest, plan, writers, settings, args, rejects, plan.ignored)
    return _report(args, manifest, writers, done, rejects, plan.ignored)


if __name__ == "__main__":
    sys.exit(main())
