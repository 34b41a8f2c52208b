"""Repacks a video dataset into vidact shards (the engine behind `tools/make_shards.py`).

Steps: find the sources of one of three layouts (video class folders, frame folders,
unlabeled test folders) with their labels and splits; re-encode each clip in parallel workers to
a codec both DALI decoders take, counting its frames by decoding; write the clips in a fixed,
seeded order into size-bounded WebDataset tars with DALI index files, then the manifest and
the rejects report. Shards are written to a temporary name and renamed when complete, so a
killed run leaves only finished shards, which the next run keeps (resume).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import os
import random
import re
import sys
import tarfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from vidact import __version__
from vidact.shards import (
    CONTAINER_EXT,
    CPU_DECODABLE_CODECS,
    MANIFEST,
    META_EXT,
    REJECTS,
    SCHEMA_VERSION,
    SPLITS,
    UNLABELED,
    ShardError,
    atomic_write_text,
    index_name,
    sample_key,
    sample_members,
    shard_name,
    write_dali_index,
    write_tar,
)
from vidact.video_io import EncodeSettings, VideoError, encode_image_sequence, transcode

log = logging.getLogger("vidact.make_shards")

VIDEO_EXTS = {".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
LAYOUTS = ("videos", "frames", "unlabeled")


@dataclass
class Source:
    id: str
    label: str | None
    split: str
    path: Path
    kind: str  # "video" or "frames"
    label_id: int = UNLABELED
    key: str = ""


@dataclass
class Plan:
    """What was found: classes, sources to pack, and sources already known to be bad."""

    layout: str
    classes: list[str]
    sources: list[Source]
    rejects: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- discovery

def _is_video(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTS


def _natural(p: Path) -> list:
    """Sort key that puts frame_2 before frame_10 (names need no zero padding)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS), key=_natural)


def detect_layout(root: Path) -> str:
    """Guesses the layout from what lies one and two levels down."""
    entries = sorted(root.iterdir())
    if any(_is_video(p) for p in entries):
        return "unlabeled"
    for sub in (p for p in entries if p.is_dir()):
        children = sorted(sub.iterdir())
        if any(_is_video(c) for c in children):
            return "videos"
        if any(c.is_file() and c.suffix.lower() in IMAGE_EXTS for c in children):
            return "unlabeled"
        if any(c.is_dir() and _images(c) for c in children):
            return "frames"
    raise SystemExit(f"make_shards: {root}: no videos or frame folders found (layouts: {', '.join(LAYOUTS)})")


def _read_dictionary(path: Path) -> list[str]:
    try:
        mapping = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"make_shards: {path}: unreadable dictionary ({e})") from e
    ids = sorted(mapping.values())
    if ids != list(range(len(ids))):
        raise SystemExit(f"make_shards: {path}: class ids must be 0..{len(ids) - 1} without gaps")
    return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]


def _clip_path(root: Path, label: str, clip_id: str, kind: str) -> Path | None:
    folder = root / label
    if kind == "frames":
        p = folder / clip_id
        return p if p.is_dir() else None
    for ext in sorted(VIDEO_EXTS):
        p = folder / f"{clip_id}{ext}"
        if p.is_file():
            return p
    return None


def _scan_class_folders(root: Path, kind: str, rejects: list[dict]) -> dict[str, list[tuple[str, Path]]]:
    """{label: [(id, path)]} from ROOT/{label}/...; empty class folders are reported."""
    found: dict[str, list[tuple[str, Path]]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if kind == "frames":
            clips = [(c.name, c) for c in sorted(folder.iterdir()) if c.is_dir()]
        else:
            clips = [(c.stem, c) for c in sorted(folder.iterdir()) if _is_video(c)]
        if not clips:
            rejects.append({"source": str(folder), "reason": "empty class folder"})
            continue
        found[folder.name] = clips
    return found


def _from_csvs(root: Path, labels_dir: Path, kind: str, classes: list[str], rejects: list[dict]) -> list[Source]:
    sources = []
    for split in SPLITS:
        path = labels_dir / f"{split}.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                clip_id, label = row["id"].strip(), row["label"].strip()
                split_name = (row.get("split") or split).strip()
                clip = _clip_path(root, label, clip_id, kind)
                if clip is None:
                    rejects.append({"source": str(root / label / clip_id),
                                    "reason": f"listed in {path.name} but not found"})
                    continue
                sources.append(Source(clip_id, label, split_name, clip, kind))
    return sources


def _from_ucf_lists(root: Path, lists: Path, fold: int, rejects: list[dict]) -> tuple[list[str], list[Source]]:
    """UCF-101's classInd.txt / trainlist0N.txt / testlist0N.txt (test -> 'test' split)."""
    class_ind = lists / "classInd.txt"
    if not class_ind.is_file():
        raise SystemExit(f"make_shards: {class_ind}: missing (needed with --ucf-splits)")
    classes = [line.split()[1] for line in class_ind.read_text().splitlines() if line.strip()]
    sources = []
    for split, name in (("train", f"trainlist{fold:02d}.txt"), ("test", f"testlist{fold:02d}.txt")):
        path = lists / name
        if not path.is_file():
            raise SystemExit(f"make_shards: {path}: missing (fold {fold})")
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rel = line.split()[0]
            label, filename = rel.split("/", 1)
            clip = root / rel
            if not clip.is_file():
                rejects.append({"source": str(clip), "reason": f"listed in {name} but not found"})
                continue
            sources.append(Source(Path(filename).stem, label, split, clip, "video"))
    return classes, sources


def discover(root: Path, layout: str | None = None, labels_dir: Path | None = None,
             ucf_splits: Path | None = None, fold: int = 1) -> Plan:
    """Finds sources, labels and splits (see the CLI help for the rules)."""
    if not root.is_dir():
        raise SystemExit(f"make_shards: {root}: not a folder")
    layout = layout or detect_layout(root)
    rejects: list[dict] = []
    labels_dir = labels_dir or root
    dictionary = labels_dir / "dictionary.json"

    if layout == "unlabeled":
        classes = _read_dictionary(dictionary) if dictionary.is_file() else []
        sources = []
        for p in sorted(root.iterdir()):
            if _is_video(p):
                sources.append(Source(p.stem, None, "test", p, "video"))
            elif p.is_dir() and _images(p):
                sources.append(Source(p.name, None, "test", p, "frames"))
            elif p.is_dir():
                rejects.append({"source": str(p), "reason": "frame folder has no images"})
        return Plan(layout, classes, _unique_keys(sources), rejects)

    kind = "frames" if layout == "frames" else "video"
    if ucf_splits is not None:
        classes, sources = _from_ucf_lists(root, ucf_splits, fold, rejects)
    elif any((labels_dir / f"{s}.csv").is_file() for s in SPLITS):
        if not dictionary.is_file():
            raise SystemExit(f"make_shards: {dictionary}: missing (needed beside the split CSVs)")
        classes = _read_dictionary(dictionary)
        _scan_class_folders(root, kind, rejects)  # reports empty class folders
        sources = _from_csvs(root, labels_dir, kind, classes, rejects)
    else:
        found = _scan_class_folders(root, kind, rejects)
        classes = _read_dictionary(dictionary) if dictionary.is_file() else sorted(found)
        sources = [Source(cid, label, "train", p, kind) for label, clips in found.items() for cid, p in clips]

    index = {name: i for i, name in enumerate(classes)}
    kept = []
    for s in sources:
        if s.label not in index:
            rejects.append({"source": str(s.path), "reason": f"label '{s.label}' not in the class list"})
            continue
        s.label_id = index[s.label]
        kept.append(s)
    return Plan(layout, classes, _unique_keys(kept), rejects)


def _unique_keys(sources: list[Source]) -> list[Source]:
    """Gives each source a WebDataset key, unique across the shard set."""
    seen: Counter[str] = Counter()
    for s in sources:
        base = sample_key(s.id)
        seen[base] += 1
        s.key = base if seen[base] == 1 else f"{base}_{seen[base]}"
    return sources


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

Members = list[tuple[str, bytes]]


def encode_source(job: tuple[Source, EncodeSettings, float]) -> tuple[Source, Members | None, str | None]:
    """Worker: one source -> the members of its sample, or a reject reason."""
    source, settings, frames_fps = job
    try:
        if source.kind == "frames":
            enc = encode_image_sequence(_images(source.path), frames_fps, settings)
        else:
            enc = transcode(source.path, settings)
    except VideoError as e:
        return source, None, str(e)
    except Exception as e:  # noqa: BLE001 - any failure on one clip must not stop the run
        return source, None, f"unexpected {e.__class__.__name__}: {e}"
    if enc.num_frames < 1:
        return source, None, "0 decodable frames"
    meta = {
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
    }
    if enc.header_frames is not None and enc.header_frames != enc.num_frames:
        meta["header_frames"] = enc.header_frames
    return source, sample_members(source.key, enc.data, settings.container_ext, meta), None


# --------------------------------------------------------------------------- shard writing

class SplitWriter:
    """Writes one split's samples into size-bounded shards, resuming after finished ones."""

    def __init__(self, out: Path, split: str, max_bytes: int):
        self.out, self.split, self.max_bytes = out, split, max_bytes
        self.done_keys: set[str] = set()
        self.metas: list[dict] = []
        self.shards: list[str] = []
        for i in range(1_000_000):
            path = out / shard_name(split, i)
            if not path.is_file():
                break
            self._adopt(path)
        self.pending: list[tuple[str, bytes]] = []
        self.pending_bytes = 0

    def _adopt(self, path: Path) -> None:
        """Keeps a shard finished by an earlier run: its samples are not encoded again."""
        try:
            with tarfile.open(path, "r") as tar:
                for m in tar:
                    key, _, ext = m.name.partition(".")
                    if ext == META_EXT:
                        self.metas.append(json.loads(tar.extractfile(m).read()))
                        self.done_keys.add(key)
        except (tarfile.TarError, OSError, json.JSONDecodeError) as e:
            raise ShardError(f"{path}: corrupt finished shard ({e}); delete it and re-run") from e
        if not (self.out / index_name(path.name)).is_file():
            write_dali_index(path, self.out / index_name(path.name))
        self.shards.append(path.name)

    def add(self, members: list[tuple[str, bytes]], meta: dict) -> None:
        size = sum(len(d) + 1024 for _, d in members)  # + tar headers and padding
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self.flush()
        self.pending.extend(members)
        self.pending_bytes += size
        self.metas.append(meta)

    def flush(self) -> None:
        if not self.pending:
            return
        name = shard_name(self.split, len(self.shards))
        tmp = self.out / (name + ".tmp")
        write_tar(tmp, self.pending)
        write_dali_index(tmp, self.out / index_name(name))
        os.replace(tmp, self.out / name)  # the shard appears only when complete
        self.shards.append(name)
        self.pending, self.pending_bytes = [], 0


def write_manifest(out: Path, plan: Plan, writers: dict[str, SplitWriter], settings: EncodeSettings,
                   args: argparse.Namespace, rejects: list[dict]) -> dict:
    splits = {}
    for split, w in writers.items():
        per_class = Counter(m["label"] if m["label"] is not None else "(unlabeled)" for m in w.metas)
        splits[split] = {"count": len(w.metas), "shards": w.shards, "per_class": dict(sorted(per_class.items()))}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "tool": "vidact make_shards",
        "tool_version": __version__,
        "source": str(args.src),
        "layout": plan.layout,
        "classes": plan.classes,
        "splits": splits,
        "encode": {**settings.as_dict(), "frames_fps": args.fps},
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "shard_size_mb": args.shard_size_mb,
        "rejected": len(rejects),
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="make_shards.py",
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

Output: OUT/{split}-000000.tar (+ .idx for DALI), OUT/manifest.json, OUT/rejects.jsonl.
Re-running the same command resumes: finished shards are kept. Bad sources are skipped and
listed in rejects.jsonl; the exit status is non-zero only if nothing was sharded, or with
--strict if anything was rejected.""")
    p.add_argument("src", type=Path, help="dataset root")
    p.add_argument("--out", type=Path, required=True, help="output folder for the shard set")
    p.add_argument("--layout", choices=LAYOUTS, help="source layout (default: auto-detect)")
    p.add_argument("--labels", type=Path, help="folder with split CSVs and dictionary.json (default: SRC)")
    p.add_argument("--ucf-splits", type=Path, help="folder with UCF-101 classInd.txt and train/testlist files")
    p.add_argument("--fold", type=int, default=1, choices=(1, 2, 3), help="UCF-101 split fold (default 1)")
    p.add_argument("--codec", default="vp9", choices=sorted(CONTAINER_EXT),
                   help="shard codec (default vp9: DALI's CPU decoder takes VP8/VP9/MJPEG only)")
    p.add_argument("--quality", type=int, help="crf, or qscale for mjpeg (default per codec)")
    p.add_argument("--gop", type=int, default=8, help="keyframe interval in frames (default 8)")
    p.add_argument("--short-side", type=int, help="resize so the shorter side has this many pixels")
    p.add_argument("--min-side", type=int, default=128,
                   help="scale smaller clips up, aspect ratio kept, so both sides have at least this "
                        "many pixels; wins over a smaller --short-side (default 128: NVDEC, the GPU "
                        "decoder, takes no VP9 frame under 128x128; 0: off)")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate given to frame folders (default 10)")
    p.add_argument("--shard-size-mb", type=float, default=256.0, help="bound on a shard's size (default 256)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes (default: all cores)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="val share split off train when no val list")
    p.add_argument("--seed", type=int, default=0, help="seed of the val split and the shard order")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any source was rejected")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.codec not in CPU_DECODABLE_CODECS:
        log.warning("codec %s decodes on the GPU (NVDEC) only; DALI's CPU backend needs vp9, vp8 or mjpeg",
                    args.codec)
    if args.min_side < 0:
        raise SystemExit(f"make_shards: --min-side must be >= 0, got {args.min_side}")
    if not 0 <= args.val_fraction < 1:
        raise SystemExit(f"make_shards: --val-fraction must be in [0, 1), got {args.val_fraction}")
    settings = EncodeSettings(codec=args.codec, gop=args.gop, quality=args.quality, short_side=args.short_side,
                              min_side=args.min_side)

    plan = discover(args.src, args.layout, args.labels, args.ucf_splits, args.fold)
    split_off_val(plan.sources, args.val_fraction, args.seed)
    per_split = ordered(plan.sources, args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.tmp"):
        stale.unlink()
    max_bytes = int(args.shard_size_mb * 2**20)
    writers = {split: SplitWriter(args.out, split, max_bytes) for split in per_split}
    todo = [s for split, items in per_split.items() for s in items if s.key not in writers[split].done_keys]
    kept = sum(len(w.metas) for w in writers.values())
    if kept:
        log.info("resuming: %d clips in finished shards kept, %d to encode", kept, len(todo))

    rejects = list(plan.rejects)
    started = time.perf_counter()
    encoded = 0
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(max(1, args.workers)) if args.workers > 1 else None
    try:
        jobs = ((s, settings, args.fps) for s in todo)
        results = pool.imap(encode_source, jobs, chunksize=1) if pool else map(encode_source, jobs)
        for source, members, reason in tqdm(results, total=len(todo), desc="encoding", unit="clip",
                                            mininterval=1.0, disable=None):
            if members is None:
                rejects.append({"source": str(source.path), "reason": reason})
                log.warning("rejected %s: %s", source.path, reason)
                continue
            writers[source.split].add(members, json.loads(members[1][1]))
            encoded += 1
        for w in writers.values():
            w.flush()
    except KeyboardInterrupt:
        log.error("interrupted: finished shards are kept; re-run the same command to resume")
        return 130
    finally:
        if pool:
            pool.terminate()
    elapsed = time.perf_counter() - started

    atomic_write_text(args.out / REJECTS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects))
    manifest = write_manifest(args.out, plan, writers, settings, args, rejects)
    counts = ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())
    total = sum(v["count"] for v in manifest["splits"].values())
    rate = encoded / elapsed if elapsed > 0 and encoded else 0.0
    print(f"make_shards: {total} clips ({counts}) in {sum(len(w.shards) for w in writers.values())} shards "
          f"at {args.out}; encoded {encoded} in {elapsed:.1f}s ({rate:.2f} clips/s); "
          f"{len(rejects)} rejected" + (f" (see {args.out / REJECTS})" if rejects else ""))
    if total == 0:
        print("make_shards: nothing could be sharded", file=sys.stderr)
        return 1
    if args.strict and rejects:
        return 1
    return 0
