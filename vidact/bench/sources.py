"""The shard sets of the resolution sweep: ``--shards`` as it is, or its first clips re-encoded
at another short side by ``tools/make_shards.py``, cached under ``--work`` while the source shards
and options are unchanged."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidact import storage
from vidact.bench.timing import sig
from vidact.files import atomic_write_text
from vidact.shards import JPEG_EXT, META_EXT, OFFSETS_EXT, ShardSet, decode_meta, iter_tar_samples

log = logging.getLogger("vidact.bench")

BUILD_MARKER = "bench_build.json"


@dataclass(frozen=True)
class Source:
    """One shard set of the resolution sweep."""

    resolution: str
    path: str | Path  # a folder or an object-store URL (s3://...)
    split: str
    codec: str
    clips: int
    short_side: int
    build_s: float | None = None

    @property
    def label(self) -> str:
        return f"native ({self.short_side}p)" if self.resolution == "native" else self.resolution

    def as_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "path": str(self.path), "split": self.split, "codec": self.codec,
                "clips": self.clips, "short_side": self.short_side, "build_s": self.build_s}


def split_samples(shards: ShardSet, split: str, exts: Collection[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) of the split's samples in shard order, only the members in `exts`."""
    for tar in shards.tars(split):
        yield from iter_tar_samples(tar, exts)


def median_short_side(shards: ShardSet, split: str, limit: int = 64) -> int:
    sides = []
    for _, members in split_samples(shards, split, (META_EXT,)):
        meta = decode_meta(members[META_EXT])
        sides.append(min(int(meta["height"]), int(meta["width"])))
        if len(sides) >= limit:
            break
    return int(statistics.median(sides)) if sides else 0


def source_of(path: str | Path, split: str, resolution: str, build_s: float | None = None) -> Source:
    shards = ShardSet.open(path)
    return Source(resolution, path, split, shards.codec, shards.count(split), median_short_side(shards, split),
                  build_s)


def _digest(data: Any) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def derived_source(base: ShardSet, split: str, resolution: str, clips: int, work: Path, workers: int) -> Source:
    """`base`'s first `clips` clips re-encoded with ``--short-side`` (cached in `work`)."""
    short = int(resolution[:-1])
    params = {"source": storage.canonical(base.root), "manifest": base.manifest, "split": split, "clips": clips}
    name = storage.basename(base.root)
    src = work / f"clips-{name}-{split}-{clips}-{_digest(params)}"
    out_params = {**params, "short_side": short}
    out = work / f"{name}-{split}-{clips}clips-{resolution}-{_digest(out_params)}"
    marker = out / BUILD_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("params") == json.loads(
            json.dumps(out_params, sort_keys=True, default=str)):
        log.info("%s: cached shard set %s", resolution, out)
        return source_of(out, "train", resolution)
    started = time.perf_counter()
    if not (src / ".complete").is_file():
        extract_clips(base, split, clips, src)
    reencode(base, src, out, short, resolution, workers)
    build_s = sig(time.perf_counter() - started)
    atomic_write_text(marker, json.dumps({"params": out_params, "build_s": build_s}, sort_keys=True, default=str)
                      + "\n")
    return source_of(out, "train", resolution, build_s)


def extract_clips(base: ShardSet, split: str, clips: int, src: Path) -> None:
    """The first `clips` videos of `split` as ``src/{label}/{key}.{ext}`` (a make_shards
    ``videos`` layout); ``src/.complete`` marks a finished extraction."""
    log.info("extracting %d clips of %s to %s", clips, base.root, src)
    src.mkdir(parents=True, exist_ok=True)
    n = 0
    for key, members in split_samples(base, split, (base.video_ext, META_EXT, OFFSETS_EXT)):
        meta = decode_meta(members[META_EXT])
        label = str(meta.get("label") or "_unlabeled").replace("/", "_").replace(os.sep, "_")
        (src / label).mkdir(exist_ok=True)
        data = members[base.video_ext]
        if base.video_ext == JPEG_EXT:  # a frame folder (make_shards' frames layout)
            offsets = np.frombuffer(members[OFFSETS_EXT], "<i4")
            (src / label / key).mkdir(exist_ok=True)
            for i in range(len(offsets) - 1):
                (src / label / key / f"frame_{i + 1:05d}.jpg").write_bytes(data[offsets[i]:offsets[i + 1]])
        else:
            (src / label / f"{key}.{base.video_ext}").write_bytes(data)
        n += 1
        if n >= clips:
            break
    if n == 0:
        raise RuntimeError(f"{base.root}: split '{split}' has no clips to re-encode")
    atomic_write_text(src / ".complete", f"{n}\n")


def reencode(base: ShardSet, src: Path, out: Path, short: int, resolution: str, workers: int) -> None:
    """``vidact-shards src --out out --short-side short`` with `base`'s codec, GOP, quality and
    alignment."""
    enc = base.manifest["encode"]
    layout = ["--layout", "frames", "--fps", str(enc.get("frames_fps") or 10.0)] if enc["codec"] == "jpeg" \
        else ["--layout", "videos"]
    cmd = [sys.executable, "-m", "vidact.prep.make_shards", str(src), "--out", str(out), *layout,
           "--short-side", str(short), "--codec", str(enc["codec"]), "--gop", str(enc["gop"]),
           "--workers", str(workers), "--val-fraction", "0"]
    if enc.get("quality") is not None:
        cmd += ["--quality", str(enc["quality"])]
    cmd += ["--align", str(enc["align"])]
    log.info("%s: re-encoding to %s (%s)", resolution, out, shlex.join(cmd[1:]))
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"make_shards failed for {resolution} (exit {done.returncode}): {shlex.join(cmd)}")
