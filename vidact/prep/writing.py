"""Writing a shard set: shards, their DALI indexes and checksum sidecars, then rejects.jsonl and
the manifest (last). Written to a folder, or built in a scratch folder and uploaded to an object
store; a re-run keeps the shards an earlier run finished (resume).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from vidact import __version__, fidelity, storage
from vidact.files import atomic_path
from vidact.prep.discovery import Plan
from vidact.shards import (
    CHECKSUM_EXT,
    FORMAT_VERSION,
    INDEXED_EXTS,
    MANIFEST,
    META_EXT,
    REJECTS,
    SCHEMA_VERSION,
    ShardError,
    checksum_name,
    checksum_text,
    index_name,
    iter_tar_samples,
    parse_checksums,
    read_members,
    sample_key,
    sha256_file,
    shard_name,
    write_dali_index,
    write_tar,
)
from vidact.video_io import EncodeSettings

__all__ = ["Destination", "Members", "SplitWriter", "write_manifest"]

# The (name, bytes) tar members of one sample.
Members = list[tuple[str, bytes]]


class Destination:
    """Where finished shards go: a local ``--out`` is written in place (each file through a temp
    name and a rename); an object-store ``--out`` (``s3://bucket/prefix``) is reached through a
    local scratch folder that holds one shard at a time, uploaded as it completes. Either way a
    shard is followed by its checksum sidecar, the manifest comes last, and a re-run keeps the
    shards whose sidecar is there (a local tar from before sidecars is checked and given one)."""

    def __init__(self, location: str, scratch: str | None = None):
        self.location = location
        self.remote = storage.is_remote(location)
        storage.make_location(location)
        self.scratch = tempfile.mkdtemp(prefix="vidact-shards-", dir=scratch) if self.remote else None
        self.work = Path(self.scratch or location)  # where tars and indexes are written first
        self.present = storage.listing(location)
        for stale in ([] if self.remote else self.work.glob("*.tmp")):
            stale.unlink()

    def url(self, name: str) -> str:
        return storage.join(self.location, name)

    def finished(self, tar: str) -> bool:
        return checksum_name(tar) in self.present or (not self.remote and tar in self.present)

    def adopt(self, tar: str) -> tuple[list[dict], dict[str, str]]:
        """The json records and checksums of finished shard `tar` of an earlier run."""
        idx, sidecar = index_name(tar), checksum_name(tar)
        try:
            if self.remote:
                metas = [json.loads(d) for _, d in read_members(self.url(tar), self.url(idx), META_EXT)]
                return metas, parse_checksums(storage.read_text(self.url(sidecar)))
            metas = [json.loads(sample[META_EXT]) for _, sample in iter_tar_samples(self.work / tar, {META_EXT})]
        except (ShardError, OSError, json.JSONDecodeError, KeyError) as e:
            raise ShardError(f"{self.url(tar)}: corrupt finished shard ({e.__cause__ or e}); "
                             "delete it and re-run") from e
        if idx not in self.present:
            write_dali_index(self.work / tar, self.work / idx)
        if sidecar not in self.present:
            return metas, self.publish(tar)
        return metas, parse_checksums((self.work / sidecar).read_text())

    def publish(self, tar: str) -> dict[str, str]:
        """Shard `tar` and its index are complete in `work`: checksums them, uploads both (an
        object store), then writes the sidecar. Returns {file name: sha256}."""
        idx = index_name(tar)
        sums = {name: sha256_file(self.work / name) for name in (tar, idx)}
        if self.remote:
            for name in (tar, idx):
                storage.upload(self.work / name, self.url(name))
                (self.work / name).unlink()
        self.write_text(checksum_name(tar), checksum_text(sums))
        return sums

    def write_text(self, name: str, text: str) -> None:
        storage.write_bytes(self.url(name), text.encode())

    def close(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


class SplitWriter:
    """Writes one split's samples into size-bounded shards, resuming after finished ones."""

    def __init__(self, dest: Destination, split: str, max_bytes: int):
        self.dest, self.split, self.max_bytes = dest, split, max_bytes
        self.done_keys: set[str] = set()
        self.metas: list[dict] = []
        self.shards: list[str] = []
        self.checksums: dict[str, str] = {}
        while dest.finished(name := shard_name(split, len(self.shards))):
            metas, sums = dest.adopt(name)  # kept: its samples are not encoded again
            self.metas += metas
            self.done_keys |= {sample_key(m.get("source_id", m["id"])) for m in metas}  # sources
            self.checksums.update(sums)
            self.shards.append(name)
        self.pending: list[tuple[str, bytes]] = []
        self.pending_bytes = 0

    def add(self, samples: list[Members]) -> None:
        """Adds one source's samples (its segments) to the same shard: a finished shard never
        holds part of a source, so a resumed run skips or encodes whole sources."""
        size = sum(len(d) + 1024 for members in samples for _, d in members)  # + tar headers and padding
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self.flush()
        for members in samples:
            self.pending.extend(members)
            self.metas.append(json.loads(members[1][1]))
        self.pending_bytes += size

    def flush(self) -> None:
        if not self.pending:
            return
        name = shard_name(self.split, len(self.shards))
        with atomic_path(self.dest.work / name) as tmp:  # the shard appears only when complete
            write_tar(tmp, self.pending)
            write_dali_index(tmp, self.dest.work / index_name(name))
        self.checksums.update(self.dest.publish(name))
        self.shards.append(name)
        self.pending, self.pending_bytes = [], 0


def bytes_per_clip(metas: list[dict]) -> int | None:
    """Mean bytes of a clip member (None for clips written before json records held it)."""
    sizes = [m["bytes"] for m in metas if "bytes" in m]
    return round(sum(sizes) / len(sizes)) if sizes else None


def write_manifest(dest: Destination, plan: Plan, writers: dict[str, SplitWriter], settings: EncodeSettings,
                   args: argparse.Namespace, rejects: list[dict], ignored: list[dict]) -> dict:
    """rejects.jsonl, then manifest.json (last: a set with a manifest is complete). The manifest
    lists the sha256 of every other file of the set."""
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects + ignored)
    dest.write_text(REJECTS, lines)
    splits, sums = {}, {}
    for split, w in writers.items():
        per_class = Counter(m["label"] if m["label"] is not None else "(unlabeled)" for m in w.metas)
        splits[split] = {"count": len(w.metas), "shards": w.shards, "per_class": dict(sorted(per_class.items()))}
        if args.max_seconds is not None:  # count: segments; sources: the videos they were cut from
            splits[split]["sources"] = len({m["source_id"] for m in w.metas})
        sums.update(w.checksums)
    sums[REJECTS] = hashlib.sha256(lines.encode()).hexdigest()
    manifest = {
        "schema_version": SCHEMA_VERSION,
        # 2: IVF clips carry their cut tables, JPEG frames their frame table; 1 (or no key: written
        # before) decoded from frame 0
        "format": FORMAT_VERSION if settings.container_ext in INDEXED_EXTS else 1,
        "sample_checksum": CHECKSUM_EXT,  # each sample's {key}.xxh3 (vidact.shards.members_checksum)
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
        **({"max_seconds": args.max_seconds} if args.max_seconds is not None else {}),
        "rejected": len(rejects),
        "ignored": len(ignored),
        "layout_files": plan.layout_files,
        "psnr": fidelity.summarize([m for w in writers.values() for m in w.metas]),
        "bytes_per_clip": bytes_per_clip([m for w in writers.values() for m in w.metas]),
        "sha256": dict(sorted(sums.items())),
    }
    dest.write_text(MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest
