"""The shard format: the one contract between `tools/make_shards.py` and both loaders.

A shard set is a folder, or an object-store prefix (``s3://bucket/prefix``, see `vidact.storage`)::

    DIR/manifest.json              classes, splits, shard lists and checksums, encode settings, tool
                                   version; written last, so a set with a manifest is complete
    DIR/rejects.jsonl              one line per entry of the source not sharded: {"kind", "source",
                                   "reason"}, kind "rejected" (a bad source) or "ignored" (not a clip)
    DIR/{split}-{000000}.tar       WebDataset shards
    DIR/{split}-{000000}.idx       DALI webdataset index of the tar beside it
    DIR/{split}-{000000}.sha256    checksums of the tar and its index (``sha256sum -c`` format),
                                   written after both: the mark of a finished shard when resuming

Each sample in a tar holds these members (WebDataset: ``{key}.{ext}``; the extension is the
text after the key's *first* dot, so keys never contain dots):

    {key}.{video_ext}    the clip, re-encoded (VP9 in IVF by default: both DALI decoders take it)
    {key}.json           metadata: id, label, label_id, split, fps, num_frames, duration, width,
                         height (as encoded), source_width, source_height (before any resize),
                         source, psnr (dB vs the source at this size, see vidact.fidelity)
                         and, for a segment of a source cut by ``make_shards --max-seconds``
                         (id ``{source id}@{k}``, key ``{source key}_{k}``, see vidact.ids):
                         source_id, segment, segments, segment_start_frame, segment_start_s
    {key}.nframes.i32    decoded frame count, little-endian int32 (DALI reads it as a number, so
                         windows are computed inside the graph)
    {key}.label.i32      label id, little-endian int32 (-1 for unlabeled clips)
    {key}.hw.i32         frame height and width, two little-endian int32 (resize and crop
                         geometry is computed in the graph, before or without a host copy)
    {key}.cls            label id as text (the WebDataset convention, for other tools)

and, for a clip stored as IVF (format 2, the default: VP9 in IVF), what a graph needs to cut it
at its keyframes (`vidact.ivf`, `vidact.clip.cut`) instead of decoding it from frame 0:

    {key}.offsets.i32    N + 1 little-endian int32: byte offset of each frame's 12-byte IVF
                         frame header, then the length of the clip
    {key}.keyframes.i32  N little-endian int32: the keyframe each frame depends on (at or before it)

A clip stored as JPEG frames (``make_shards --codec jpeg``, `vidact.jpeg_frames`) is instead

    {key}.jpegs          the clip's frames, one baseline 4:2:0 JPEG each, back to back
    {key}.offsets.i32    N + 1 little-endian int32: byte offset of each frame's JPEG, then the
                         length of the clip (frame i is bytes offsets[i] .. offsets[i + 1])

The manifest's ``format`` says which: 2 for sets written with these members when the clips are
IVF or JPEG frames, 1 (or absent) for sets written before, which are decoded from frame 0.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import xxhash

from vidact import ivf, reader_shares, storage
from vidact.files import atomic_write_text

SCHEMA_VERSION = 1
FORMAT_VERSION = 2  # 2: IVF clips carry cut tables (offsets, keyframes)

META_EXT = "json"
NFRAMES_EXT = "nframes.i32"
LABEL_EXT = "label.i32"
HW_EXT = "hw.i32"
CLS_EXT = "cls"
OFFSETS_EXT = "offsets.i32"
KEYFRAMES_EXT = "keyframes.i32"
CHECKSUM_EXT = "xxh3"  # XXH3-64 of the members a loader reads (`member_exts`), in that order: 8 bytes
IVF_EXT = "ivf"
JPEG_EXT = "jpegs"

# Container per codec: the one DALI's demuxer and PyAV both read for that codec.
CONTAINER_EXT = {"vp9": IVF_EXT, "vp8": "webm", "mjpeg": "avi", "h264": "mp4", "hevc": "mp4", "jpeg": JPEG_EXT}
# Codecs DALI 2.4's CPU decoders accept (measured, see the project README); the rest need NVDEC.
CPU_DECODABLE_CODECS = ("vp9", "vp8", "mjpeg", "jpeg")
# NVDEC's smallest VP9 / H.264 frame side (HEVC's: vidact.data.guards): make_shards' --min-side default.
NVDEC_MIN_SIDE = 128
# Clip members a graph can take apart (format 2): cut at keyframes (IVF) or one JPEG per frame.
INDEXED_EXTS = (IVF_EXT, JPEG_EXT)

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
UNLABELED = -1
SEGMENT_SEP = "@"  # segment k of source x has id x@k (make_shards --max-seconds)

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class ShardError(RuntimeError):
    """A shard set, shard or sample that cannot be read; the message names it."""


class SampleMeta(TypedDict, total=False):
    """A sample's ``{key}.json`` record: built by `vidact.prep.make_shards`, read by the loaders.
    ``num_frames`` is the clip's decoded frame count N (not the frames per training clip, T)."""

    id: str
    label: str | None
    label_id: int
    split: str
    fps: float
    num_frames: int
    duration: float
    width: int  # encoded size (at least --min-side on both sides)
    height: int
    source_width: int  # the source's size, before any resize
    source_height: int
    source: str
    psnr: float  # dB of the re-encoded clip against its source at this size (vidact.fidelity)
    header_frames: int  # only when the source's header claimed another frame count
    # only for a segment of a source cut by make_shards --max-seconds (id "{source_id}@{segment}"):
    source_id: str
    segment: int  # k, from 0
    segments: int  # how many the source was cut into
    segment_start_frame: int  # the source frame this segment's frame 0 is
    segment_start_s: float


def sample_key(video_id: str) -> str:
    """A WebDataset key for `video_id`: no dots or path separators (see module docstring)."""
    key = _KEY_UNSAFE.sub("_", video_id).strip("_")
    return key or "clip"


def source_id_of(clip_id: str) -> str:
    """The source of a segment id (``x@2`` -> ``x``); an id without ``@`` is its own source."""
    head, sep, _ = clip_id.rpartition(SEGMENT_SEP)
    return head if sep else clip_id


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def index_name(tar_name: str) -> str:
    return tar_name[: -len(".tar")] + ".idx"


def checksum_name(tar_name: str) -> str:
    return tar_name[: -len(".tar")] + ".sha256"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_text(sums: dict[str, str]) -> str:
    """``sha256sum`` lines (``<hex>  <name>``) for {name: hex digest}."""
    return "".join(f"{digest}  {name}\n" for name, digest in sums.items())


def parse_checksums(text: str) -> dict[str, str]:
    """{name: hex digest} of ``sha256sum`` lines."""
    out = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if digest and name:
            out[name.strip()] = digest.strip()
    return out


def int32_bytes(*values: int) -> bytes:
    return np.asarray(values, dtype="<i4").tobytes()


def read_int32(data: bytes) -> int:
    return int(np.frombuffer(data, dtype="<i4")[0])


def sample_members(key: str, video: bytes, video_ext: str, meta: dict[str, Any],
                   frame_offsets: np.ndarray | None = None) -> list[tuple[str, bytes]]:
    """The (member name, bytes) pairs of one sample, in the order they are written;
    `frame_offsets`: a JPEG-frames clip's table."""
    members = [
        (f"{key}.{video_ext}", video),
        (f"{key}.{META_EXT}", json.dumps(meta, sort_keys=True).encode()),
        (f"{key}.{NFRAMES_EXT}", int32_bytes(meta["num_frames"])),
        (f"{key}.{LABEL_EXT}", int32_bytes(meta["label_id"])),
        (f"{key}.{HW_EXT}", int32_bytes(meta["height"], meta["width"])),
        (f"{key}.{CLS_EXT}", str(meta["label_id"]).encode()),
        *(cut_members(key, video, meta["num_frames"]) if video_ext == IVF_EXT else []),
        *(frame_members(key, video, frame_offsets, meta["num_frames"]) if video_ext == JPEG_EXT else []),
    ]
    by_ext = {name.partition(".")[2]: data for name, data in members}
    return [*members, (f"{key}.{CHECKSUM_EXT}", members_checksum([by_ext[ext] for ext in member_exts(video_ext)]))]


def frame_members(key: str, video: bytes, offsets: np.ndarray | None, num_frames: int) -> list[tuple[str, bytes]]:
    """The frame table of a JPEG-frames clip, checked against the clip and its frame count."""
    if offsets is None or len(offsets) != num_frames + 1 or offsets[0] != 0 or offsets[-1] != len(video):
        raise ShardError(f"sample {key}: frame table does not fit its {num_frames} JPEG frames")
    return [(f"{key}.{OFFSETS_EXT}", np.asarray(offsets).astype("<i4").tobytes())]


def cut_members(key: str, video: bytes, num_frames: int) -> list[tuple[str, bytes]]:
    """The cut tables of an IVF clip (`vidact.ivf.tables`), checked against its frame count."""
    table = ivf.tables(video)
    if len(table.keyframes) != num_frames:
        raise ShardError(f"sample {key}: IVF holds {len(table.keyframes)} frames, {num_frames} decoded")
    return [(f"{key}.{OFFSETS_EXT}", table.offsets.astype("<i4").tobytes()),
            (f"{key}.{KEYFRAMES_EXT}", table.keyframes.astype("<i4").tobytes())]


def member_exts(video_ext: str, cut: bool = True, checksum: bool = False) -> list[str]:
    """The members a loader reads, in this order: an IVF clip's cut tables unless `cut` is off
    (decoded from frame 0, the benchmark's comparison); a JPEG-frames clip's frame table; with
    `checksum`, the sample's checksum (of the others, `cut` on)."""
    exts = [video_ext, META_EXT, NFRAMES_EXT, LABEL_EXT, HW_EXT]
    if video_ext == IVF_EXT and cut:
        exts += [OFFSETS_EXT, KEYFRAMES_EXT]
    if video_ext == JPEG_EXT:
        exts += [OFFSETS_EXT]
    return exts + ([CHECKSUM_EXT] if checksum else [])


def members_checksum(data: list) -> bytes:
    """XXH3-64 of members' bytes, in order, big-endian (~30 GB/s: a clip's in tens of µs)."""
    digest = xxhash.xxh3_64()
    for d in data:
        digest.update(np.ascontiguousarray(d) if isinstance(d, np.ndarray) else d)
    return digest.digest()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """Writes a tar with fixed owner/time fields, so the same members give the same bytes."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def _grouped_members(tar: tarfile.TarFile) -> Iterator[tuple[str, list[tarfile.TarInfo]]]:
    """(key, members) of each sample, in tar order: WebDataset groups consecutive members
    whose names share the text before the first dot."""
    key, group = None, []
    for m in tar:
        if not m.isfile():
            continue
        k = m.name.partition(".")[0]
        if group and k != key:
            yield key, group
            group = []
        key = k
        group.append(m)
    if group:
        yield key, group


def iter_tar_samples(path: Path | str, exts: Collection[str] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) of a shard's samples in order, only the members in `exts` when
    given; `path` is a file or a URL (`vidact.storage`). An unreadable or corrupt shard raises
    :class:`ShardError` naming it."""
    try:
        with storage.open_read(os.fspath(path)) as f, tarfile.open(fileobj=f, mode="r") as tar:
            for key, members in _grouped_members(tar):
                yield key, {m.name.partition(".")[2]: tar.extractfile(m).read() for m in members
                            if exts is None or m.name.partition(".")[2] in exts}
    except FileNotFoundError as e:
        raise ShardError(f"{path}: shard missing ({e})") from e
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ShardError(f"{path}: corrupt shard ({e.__class__.__name__}: {e}); "
                         "delete it and re-run vidact-shards") from e


def write_dali_index(tar_path: Path, idx_path: Path) -> int:
    """Writes the index file DALI's webdataset reader wants (format v1.2, as DALI's wds2idx
    writes it) and returns the number of samples."""
    with tarfile.open(tar_path, "r") as tar:
        samples = [[f"{m.name.partition('.')[2]} {m.offset_data} {m.size} {m.name}" for m in members]
                   for _, members in _grouped_members(tar)]
    if not samples:
        raise ShardError(f"{tar_path}: no samples to index")
    text = f"v1.2 {len(samples)}\n" + "".join(" ".join(s) + "\n" for s in samples)
    atomic_write_text(idx_path, text)
    return len(samples)


@dataclass(frozen=True)
class ShardSet:
    """A shard set read through its manifest, wherever it lives: `root` is a folder or an
    object-store URL (``s3://bucket/prefix``), a string either way. Shards and indexes are named
    by strings that DALI's reader, `open_file` and `vidact.storage` all take."""

    root: str
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | os.PathLike) -> ShardSet:
        root = storage.normalize(root)
        url = storage.join(root, MANIFEST)
        try:
            text = storage.read_text(url)
        except FileNotFoundError as e:
            if not storage.is_remote(root) and not os.path.isdir(root):
                raise ShardError(f"{root}: no such folder (a shard set vidact-shards wrote)") from e
            raise ShardError(f"{root}: not a shard set (no {MANIFEST}); make one with vidact-shards") from e
        except OSError as e:  # names the object: no credentials, endpoint unreachable, denied...
            raise ShardError(f"{e} (reading the manifest)") from e
        except UnicodeDecodeError as e:
            raise ShardError(f"{url}: unreadable manifest ({e})") from e
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as e:
            raise ShardError(f"{url}: unreadable manifest ({e})") from e
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise ShardError(
                f"{url}: schema version {manifest.get('schema_version')!r}, this vidact reads "
                f"{SCHEMA_VERSION}; re-run vidact-shards"
            )
        return cls(root, manifest)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def video_ext(self) -> str:
        return self.manifest["encode"]["video_ext"]

    @property
    def codec(self) -> str:
        return self.manifest["encode"]["codec"]

    @property
    def checksummed(self) -> bool:
        """Whether each sample carries its checksum (sets written before it do not)."""
        return self.manifest.get("sample_checksum") == CHECKSUM_EXT

    def url(self, name: str) -> str:
        """The path or URL of file `name` of this set."""
        return storage.join(self.root, name)

    @cached_property
    def _present(self) -> dict[str, int]:
        """{name: size} of the set's files: one listing answers every existence check."""
        try:
            return storage.listing(self.root)
        except OSError as e:
            raise ShardError(f"{e} (listing the shard set)") from e

    def _existing(self, names: list[str], what: str) -> list[str]:
        for name in names:
            if name not in self._present:
                raise ShardError(f"{self.url(name)}: {what}")
        return [self.url(name) for name in names]

    def split_info(self, split: str) -> dict[str, Any]:
        splits = self.manifest["splits"]
        if split not in splits or not splits[split]["shards"]:
            have = ", ".join(s for s in splits if splits[s]["shards"]) or "none"
            raise ShardError(f"{self.root}: no '{split}' split in this shard set (have: {have})")
        return splits[split]

    def count(self, split: str) -> int:
        return int(self.split_info(split)["count"])

    def tars(self, split: str) -> list[str]:
        """Shard paths or URLs of a split; a missing shard is an error naming it."""
        return self._existing(list(self.split_info(split)["shards"]), f"shard listed in {MANIFEST} is missing")

    def indexes(self, split: str) -> list[str]:
        """The DALI index of each shard of `tars(split)`, in the same order."""
        names = [index_name(n) for n in self.split_info(split)["shards"]]
        return self._existing(names, "DALI index missing; re-run vidact-shards")

    def local_indexes(self, split: str) -> list[str]:
        """`indexes(split)` as local files. DALI's reader reads every index of a split whenever
        one is built (per pipeline, per epoch): on an object store that is a request per shard each
        time, one after another. A remote set's indexes are fetched once, concurrently, into a
        folder of this process (removed when it exits); a local set's are themselves."""
        urls = self.indexes(split)
        if not storage.is_remote(self.root):
            return urls
        if split not in self._index_copies:
            try:
                data = storage.read_many(urls)
            except OSError as e:
                raise ShardError(f"{e} (reading the DALI indexes)") from e
            folder = tempfile.mkdtemp(prefix=f"{split}-", dir=reader_shares.cache_folder())
            paths = [os.path.join(folder, storage.basename(url)) for url in urls]
            for path, d in zip(paths, data):
                Path(path).write_bytes(d)
            self._index_copies[split] = paths
        return self._index_copies[split]

    @cached_property
    def _index_copies(self) -> dict:
        """What this process has of the split indexes: local copies of a remote set's (by split),
        their texts (by ("texts", split)), reader shares (by (split, reader, readers))."""
        return {}

    def reader_share(self, split: str, reader: int, readers: int) -> tuple[list[str], list[str]]:
        """The tars and DALI index files of reader `reader` of `readers`: samples
        [N*k//S, N*(k+1)//S) of `split` in order (DALI's own split of a reader given every tar and
        ``shard_id=k, num_shards=S``), as a reader given only these (``num_shards=1``) reads them.
        Its indexes, written once per process, list only its samples: DALI opens every tar it is
        given each time a reader is built (per pipeline, per epoch; on s3:// a request each), so a
        reader opens its own tars, not all of them."""
        key = (split, reader, readers)
        if key not in self._index_copies:
            try:
                self._index_copies[key] = reader_shares.write_share(
                    self.tars(split), self.indexes(split), self.index_texts(split), reader, readers, split)
            except ValueError as e:
                raise ShardError(str(e)) from e
        return self._index_copies[key]

    def index_texts(self, split: str) -> list[str]:
        """The text of each DALI index of `split` (a remote set's from its local copies), read once
        per process: every reader share and the reference loader's counts take them."""
        if ("texts", split) not in self._index_copies:
            out = []
            for url, local in zip(self.indexes(split), self.local_indexes(split)):
                try:
                    out.append(Path(local).read_text() if local != url else self.read_text(url))
                except UnicodeDecodeError as e:
                    raise ShardError(f"{url}: not text ({e})") from e
            self._index_copies[("texts", split)] = out
        return self._index_copies[("texts", split)]

    def open_file(self, url: str):
        """A seekable binary file object of one of the set's files (a path or URL from `tars`,
        `indexes` or `url`); a missing or unreadable one is a :class:`ShardError` naming it."""
        try:
            return storage.open_read(url)
        except OSError as e:
            raise ShardError(str(e)) from e

    def read_text(self, url: str) -> str:
        try:
            return storage.read_text(url)
        except OSError as e:
            raise ShardError(str(e)) from e
        except UnicodeDecodeError as e:
            raise ShardError(f"{url}: not text ({e})") from e


def read_members(tar_path: str | Path, idx_path: str | Path, ext: str) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of every sample's `ext` member, read at the offsets of the DALI index
    (no tar walk: a few bytes per sample, fetched together from object storage)."""
    tar_path, idx_path = os.fspath(tar_path), os.fspath(idx_path)
    try:
        lines = storage.read_text(idx_path).splitlines()[1:]
        found = []
        for line in lines:
            fields = line.split()
            found += [(fields[i + 3].partition(".")[0], int(fields[i + 1]), int(fields[i + 2]))
                      for i in range(0, len(fields), 4) if fields[i] == ext]
        data = storage.read_ranges(tar_path, [(offset, size) for _, offset, size in found])
    except (OSError, ValueError, IndexError) as e:
        raise ShardError(f"{tar_path}: cannot read .{ext} members at the offsets of {idx_path} ({e})") from e
    yield from ((key, d) for (key, _, _), d in zip(found, data))


def decode_meta(data: bytes | np.ndarray) -> SampleMeta:
    """The JSON record of a sample, from raw bytes (DALI hands them over as a uint8 array,
    zero-padded to the batch's longest record)."""
    if isinstance(data, np.ndarray):
        data = data.tobytes()
    return json.loads(bytes(data).rstrip(b"\0").decode())
