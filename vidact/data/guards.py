"""What the DALI loader checks before and after a pipeline runs: that the GPU decoder can take a
shard set (refused in one line before a GPU pipeline starts), what a set's format costs (said
once), and which sample stopped a pipeline (DALI names none)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from vidact import jpeg_frames, storage
from vidact.shards import (
    CPU_DECODABLE_CODECS,
    HW_EXT,
    INDEXED_EXTS,
    JPEG_EXT,
    META_EXT,
    NFRAMES_EXT,
    NVDEC_MIN_SIDE,
    OFFSETS_EXT,
    ShardError,
    ShardSet,
    decode_meta,
    iter_tar_samples,
    read_int32,
    read_members,
)
from vidact.video_io import VideoError, count_frames

log = logging.getLogger("vidact.data.dali")

# NVDEC's smallest frame per codec (cuvidGetDecoderCaps; DALI enforces the caps value when it
# opens a clip, so a smaller clip stops the pipeline mid-epoch). `make_shards --min-side` guards it.
NVDEC_MIN_SIDES = {"hevc": 144}
# What DALI 2.4's mixed video decoder opens (FramesDecoderGpu::SelectVideoStream; MJPEG is a
# TODO there, whatever its docstring says), and the chroma layout NVDEC decodes to.
NVDEC_CODECS = ("h264", "mpeg4", "vp8", "vp9", "hevc", "av1")
NVDEC_PIX_FMTS = ("yuv420p", "yuvj420p", None)


def clip_sizes(shards: ShardSet, split: str) -> list[tuple]:
    """(tar, key, height, width) of every sample of `split`, from the stored ``hw`` members."""
    return [(tar, key, *(int(v) for v in np.frombuffer(hw, dtype="<i4")[:2]))
            for tar, idx in zip(shards.tars(split), shards.local_indexes(split))
            for key, hw in read_members(tar, idx, HW_EXT)]


def check_nvdec_size(shards: ShardSet, split: str, min_side: int | None = None) -> list[tuple]:
    """Raises, naming the first clip of `split` with a side under NVDEC's minimum for the set's
    codec (or `min_side`), before a GPU pipeline starts; returns every clip's size (`clip_sizes`)."""
    min_side = min_side or NVDEC_MIN_SIDES.get(shards.codec, NVDEC_MIN_SIDE)
    sizes = clip_sizes(shards, split)
    for tar, key, h, w in sizes:
        if min(h, w) < min_side:
            raise ShardError(
                f"{tar}: sample {key}: {w}x{h} px, under the {min_side} px the GPU decoder (NVDEC) "
                f"takes for {shards.codec}; re-shard with vidact-shards --min-side {min_side}, "
                f"or load on the CPU")
    return sizes


# What NVDEC decodes, by GPU architecture (compute capability), from NVIDIA's NVDEC application
# note (Video Codec SDK 13.0, "NVDEC Hardware Capabilities"), among the codecs DALI opens: on every
# GPU of the architecture, and on some of them ("present in select GPUs").
_BASE = ("h264", "mpeg4")
NVDEC_BY_ARCH = [  # (first compute capability, architecture, every GPU, some GPUs), ascending
    ((0, 0), "Kepler / 1st-gen Maxwell", _BASE, ()),
    ((5, 2), "2nd-gen Maxwell", (*_BASE, "vp8"), ("hevc", "vp9")),
    ((6, 0), "Pascal", (*_BASE, "hevc", "vp9"), ("vp8",)),
    ((7, 0), "Volta / Turing / GA100", (*_BASE, "vp8", "hevc", "vp9"), ()),
    ((8, 6), "GA10x Ampere / Ada", (*_BASE, "vp8", "hevc", "vp9", "av1"), ()),
    ((9, 0), "Hopper", (*_BASE, "vp8", "hevc", "vp9"), ()),
    ((10, 0), "Blackwell", (*_BASE, "vp8", "hevc", "vp9", "av1"), ()),
]


def nvdec_refusal(codec: str, capability: tuple[int, int], gpu: str) -> str | None:
    """Why NVDEC on `gpu` (compute `capability`) cannot decode `codec`, or None when it can (or
    can on some GPUs of its architecture: then the driver decides, and says so at the first clip)."""
    arch = max((a for a in NVDEC_BY_ARCH if tuple(capability) >= a[0]), key=lambda a: a[0])
    _first, name, every, some = arch
    if codec in every or codec in some:
        return None
    return (f"codec {codec}: NVDEC on {gpu} (compute capability {capability[0]}.{capability[1]}, {name}) does not "
            f"decode it (it takes {', '.join(every)}); re-shard with vidact-shards --codec vp9, or load on the CPU "
            "(--device cpu)")


def check_cpu_decodable(shards: ShardSet) -> None:
    """Before a CPU pipeline starts, refuses in one line a set whose codec DALI's CPU decoder does
    not take (H.264, HEVC: NVDEC only)."""
    if shards.codec not in CPU_DECODABLE_CODECS:
        raise ShardError(f"{storage.join(shards.root, 'manifest.json')}: codec {shards.codec}: DALI's CPU decoder "
                         f"takes {', '.join(CPU_DECODABLE_CODECS)} only; load on a GPU (--device cuda), with "
                         "--loader torch, or re-shard with vidact-shards --codec vp9")


def check_gpu_decodable(shards: ShardSet, split: str, device: torch.device | None = None) -> list[tuple]:
    """Before a GPU pipeline starts, refuses in one line what DALI 2.4's mixed decoder cannot take
    on `device`: a codec it does not open (MJPEG) or this GPU's NVDEC lacks (AV1 on a Hopper),
    chroma other than 4:2:0, clips under NVDEC's minimum (`check_nvdec_size`); returns every
    clip's size."""
    manifest = storage.join(shards.root, "manifest.json")
    if shards.video_ext == JPEG_EXT:  # the hardware JPEG decoder (or nvJPEG's CUDA path): any size
        return clip_sizes(shards, split)
    if shards.codec not in NVDEC_CODECS:
        raise ShardError(f"{manifest}: codec {shards.codec}: DALI 2.4's GPU decoder opens {', '.join(NVDEC_CODECS)} "
                         "only; re-shard with vidact-shards --codec vp9, or load on the CPU (--device cpu)")
    if device is not None and device.type == "cuda":
        refusal = nvdec_refusal(shards.codec, torch.cuda.get_device_capability(device),
                                torch.cuda.get_device_name(device))
        if refusal:
            raise ShardError(f"{manifest}: {refusal}")
    pix_fmt = shards.manifest["encode"].get("pix_fmt")
    if pix_fmt not in NVDEC_PIX_FMTS:
        raise ShardError(f"{manifest}: chroma {pix_fmt}: NVDEC decodes 4:2:0 only; re-shard with "
                         "vidact-shards (it writes yuv420p), or load on the CPU (--device cpu)")
    return check_nvdec_size(shards, split)


_SAID: set[tuple] = set()  # what was said once per process


def note_format(shards: ShardSet, sizes: list[tuple] | None) -> None:
    """Says once per shard set what costs it carries: clips without cut tables (VP8, MJPEG) are
    decoded from frame 0; on a GPU, clips with sides off the 16-pixel grid make DALI
    2.4 create a hardware decoder per sample (its decoder cache misses on them): `sizes`, the
    split's clip sizes, are given on a GPU."""
    if shards.video_ext not in INDEXED_EXTS and (shards.root, "format") not in _SAID:
        _SAID.add((shards.root, "format"))
        log.info("%s: %s clips have no keyframe tables: each is decoded from frame 0 (vidact-shards' default, "
                 "VP9 in IVF, and --codec jpeg decode only the frames a clip keeps)", shards.root, shards.codec)
    if not shards.checksummed and (shards.root, "checksum") not in _SAID:
        _SAID.add((shards.root, "checksum"))
        log.info("%s: written before per-sample checksums: each sample's tables are checked before it is decoded, "
                 "its bytes are not (vidact-shards writes them; vidact-shards verify checks a set)", shards.root)
    if sizes and (shards.root, "aligned") not in _SAID:
        _SAID.add((shards.root, "aligned"))
        off = sum(1 for _tar, _key, h, w in sizes if h % 16 or w % 16)
        if off:
            log.warning("%s: %d of %d clips have a side that is not a multiple of 16; DALI 2.4 creates a "
                        "new NVDEC decoder for each of them: re-shard with vidact-shards (it aligns "
                        "sizes)", shards.root, off, len(sizes))


def locate_bad_sample(tars: list[str], video_ext: str) -> str | None:
    """The first unreadable shard or sample, as '<shard>: sample <key>: <reason>' (shards are
    paths or URLs, read through `vidact.storage`)."""
    for tar_path in tars:
        try:
            for key, sample in iter_tar_samples(tar_path):
                reason = _sample_problem(sample, video_ext)
                if reason:
                    return f"{tar_path}: sample {key}: {reason}"
        except ShardError as e:
            return str(e)
    return None


def jpeg_clip_frames(sample: dict[str, bytes]) -> int:
    """The frames of a JPEG-frames sample that decode, in order, up to the first that does not."""
    data, table = sample[JPEG_EXT], sample.get(OFFSETS_EXT)
    if table is None:
        raise jpeg_frames.FramesError(f"member .{OFFSETS_EXT} missing")
    offsets = jpeg_frames.offsets_of(table)
    n = jpeg_frames.frame_count(data, offsets)
    for i in range(n):
        try:
            jpeg_frames.decode_one(data[offsets[i]:offsets[i + 1]])
        except jpeg_frames.FramesError as e:
            raise jpeg_frames.FramesError(f"frame {i}: {e}") from e
    return n


def _sample_problem(sample: dict[str, bytes], video_ext: str) -> str | None:
    for ext in (video_ext, META_EXT, NFRAMES_EXT):
        if ext not in sample:
            return f"member .{ext} missing"
    try:
        n = count_frames(sample[video_ext]) if video_ext != JPEG_EXT else jpeg_clip_frames(sample)
    except (VideoError, jpeg_frames.FramesError) as e:
        return f"video undecodable: {e}"
    claimed = read_int32(sample[NFRAMES_EXT])
    if n < claimed:
        return f"video decodes to {n} frames, the shard says {claimed} (truncated?)"
    try:
        decode_meta(np.frombuffer(sample[META_EXT], dtype=np.uint8))
    except ValueError as e:
        return f"unreadable json record ({e})"
    return None
