"""Video decode and encode with PyAV: what make_shards, the reference loader and tests share.

Frames are counted by *decoding*, never read from a container header: headers lie (a VP9 WebM
of 120 frames holds 121 packets; UCF-style AVIs may claim more frames than they hold). Scaling
runs on one thread (``threads=1``): swscale's slice threads hang a killable worker forked after them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain, islice
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

from vidact import ivf, jpeg_frames
from vidact.clip.cut import plan_cut
from vidact.colour import yuv420_to_rgb
from vidact.fidelity import PSNR_CAP, FrameSampler, count_and_psnr
from vidact.shards import CONTAINER_EXT

log = logging.getLogger(__name__)

# PyAV encoder name and options per shard codec. Every one writes yuv420p (NVDEC takes 4:2:0
# only), constant frame rate (pts = frame index) and a keyframe every `gop` frames, so a window in
# the middle of a clip decodes without starting from frame 0.
ENCODERS = {
    # realtime + cpu-used 8: encode about as fast as libx264 veryfast; no alt-ref / lag so that
    # every packet is one shown frame and decoded frame i is source frame i.
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                           "auto-alt-ref": "0", "row-mt": "0"}),
    "vp8": ("libvpx", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                       "auto-alt-ref": "0"}),
    "h264": ("libx264", {"preset": "veryfast", "bf": "0"}),
    "hevc": ("libx265", {"preset": "veryfast", "x265-params": "bframes=0:log-level=error"}),
    "mjpeg": ("mjpeg", {}),
    "jpeg": ("libjpeg-turbo", {}),  # one baseline 4:2:0 JPEG per frame (vidact.jpeg_frames), not a video codec
}
# Quality per codec at default settings: visually clean on action datasets, small files.
DEFAULT_QUALITY = {"vp9": 28, "vp8": 10, "h264": 21, "hevc": 24, "mjpeg": 4, "jpeg": jpeg_frames.DEFAULT_QUALITY}
# Segments (make_shards --max-seconds): a last piece shorter than this (and than half a segment)
# is no segment of its own but the end of the one before it.
MERGE_TAIL_S = 1.0

T = TypeVar("T")


class VideoError(RuntimeError):
    """A source that cannot be used; ``str(e)`` is the one-line reason for rejects.jsonl."""


@dataclass(frozen=True)
class EncodeSettings:
    codec: str = "vp9"
    gop: int = 4  # a kept frame costs ~(gop + 1) / 2 decoded: 4 measured 1.2-1.6x the bytes of 8 (RESULTS)
    quality: int | None = None  # crf (vp9/vp8/h264/hevc) or qscale (mjpeg); None: DEFAULT_QUALITY
    short_side: int | None = None  # resize so the shorter side is this many pixels
    min_side: int = 0  # and both sides at least this many (NVDEC's minimum; make_shards: 128)
    align: int = 16  # sides are multiples of this (ALIGN; 2, the 4:2:0 minimum, only to measure the cost)
    speed: int | None = None  # libvpx cpu-used (vp8/vp9); None: ENCODERS' (chosen by vidact.bench.repack)

    @property
    def container_ext(self) -> str:
        return CONTAINER_EXT[self.codec]

    def as_dict(self) -> dict:
        return {
            "codec": self.codec,
            "encoder": ENCODERS[self.codec][0],
            "gop": 1 if self.codec == "jpeg" else self.gop,
            "quality": self.quality if self.quality is not None else DEFAULT_QUALITY[self.codec],
            "short_side": self.short_side,
            "min_side": self.min_side,
            "pix_fmt": "yuvj420p" if self.codec == "jpeg" else "yuv420p",
            "video_ext": self.container_ext,
            "align": self.align,
        }


@dataclass(frozen=True)
class Encoded:
    data: bytes
    num_frames: int
    fps: float
    width: int
    height: int
    header_frames: int | None  # what the source container claimed, for the record
    source_width: int  # the source's frame size, before any resize
    source_height: int
    psnr: float | None = None  # dB against the encoder's input (vidact.fidelity)
    start_frame: int = 0  # the source frame this clip starts at (a segment of --max-seconds)
    frame_offsets: np.ndarray | None = None  # a JPEG-frames clip's table (vidact.jpeg_frames.pack)


# Shard frame sides are multiples of this: NVDEC codes frames in 16-pixel macroblocks, and DALI
# 2.4 caches its hardware decoders by coded size but looks them up by display size, so an
# unaligned clip costs a new decoder per sample on a GPU (a multiple of 16 is also even, 4:2:0).
ALIGN = 16


def output_size(width: int, height: int, short_side: int | None, min_side: int = 0,
                align: int = ALIGN) -> tuple[int, int]:
    """(width, height), both multiples of `align`, after an optional resize, aspect ratio kept as
    near as the alignment allows: the shorter side to `short_side` (or up to `min_side` if it
    would be smaller), each side then rounded to the nearest multiple (never under `min_side`)."""
    short = min(width, height)
    target = max(short_side or short, min_side)
    if target != short:
        width, height = width * target / short, height * target / short
    return _aligned(width, min_side, align), _aligned(height, min_side, align)


def _aligned(size: float, min_side: int, align: int) -> int:
    """`size` rounded to the nearest multiple of `align` (at least one), up when that falls
    under `min_side`."""
    near = max(align, int(size / align + 0.5) * align)
    return near if near >= min_side else -(-min_side // align) * align


def _fps_of(stream: av.video.stream.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        return Fraction(25)
    return Fraction(rate).limit_denominator(1001)


def _open_video(source: Path | bytes) -> av.container.InputContainer:
    if isinstance(source, Path):
        if not source.exists():
            raise VideoError("file not found")
        if source.stat().st_size == 0:
            raise VideoError("zero-byte file")
    try:
        container = av.open(str(source) if isinstance(source, Path) else io.BytesIO(source))
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise VideoError(f"cannot open as video ({e.__class__.__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoError("no video stream")
    return container


def single_threaded(stream: av.video.stream.VideoStream) -> None:
    """Decode on the calling thread. vidact decodes in many processes at once (make_shards'
    workers, the reference loader's DataLoader workers, one per core), so FFmpeg's own threads
    only oversubscribe the cores; and a frame-threaded decoder freed in a forked DataLoader
    worker was seen to hang forever in avcodec_free_context."""
    stream.thread_type = "NONE"
    stream.thread_count = 1


def iter_frames(source: Path | bytes) -> Iterator[av.VideoFrame]:
    """Every decodable frame of the first video stream, in decode order. Decoder errors raise
    :class:`VideoError` naming the frame where decoding broke (a truncated or damaged file)."""
    container = _open_video(source)
    try:
        stream = container.streams.video[0]
        single_threaded(stream)
        n = 0
        try:
            for packet in container.demux(stream):
                # The demuxer flags a packet cut short by the end of the file (a truncated AVI):
                # its frame would decode to garbage without any decoder error.
                if packet.is_corrupt:
                    raise VideoError(f"truncated or damaged: corrupt packet after {n} frames")
                for frame in packet.decode():
                    n += 1
                    yield frame
        except av.error.FFmpegError as e:
            raise VideoError(f"decode error after {n} frames ({e.__class__.__name__}: {e})") from e
    finally:
        container.close()


def count_frames(source: Path | bytes) -> int:
    return sum(1 for _ in iter_frames(source))


def frames_to_rgb(frames: list[av.VideoFrame]) -> np.ndarray:
    """RGB ``(T, H, W, 3)`` uint8 of decoded frames, converted as DALI converts them."""
    f0 = frames[0]
    fmt = f0.format.name
    if fmt in ("yuv420p", "yuvj420p") and f0.width % 2 == 0 and f0.height % 2 == 0:
        planes = np.stack([f.to_ndarray() for f in frames])
        return yuv420_to_rgb(planes, f0.height, f0.width, full_range=fmt == "yuvj420p")
    return np.stack([f.reformat(format="rgb24", threads=1).to_ndarray() for f in frames])


def _seek_frames(source: Path | bytes, first: int, fps: float) -> Iterator[tuple[int, av.VideoFrame]]:
    """(index, frame) from the keyframe at or before frame `first`, for constant-frame-rate
    clips whose timestamps are ``index / fps`` (shard clips). Indices come from timestamps."""
    container = _open_video(source)
    try:
        stream = container.streams.video[0]
        single_threaded(stream)
        tb = float(stream.time_base)
        start = stream.start_time or 0
        if first > 0:
            container.seek(start + int(first / fps / tb), stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    raise VideoError("frame without timestamp: cannot seek in this clip")
                yield round((frame.pts - start) * tb * fps), frame
        except av.error.FFmpegError as e:
            raise VideoError(f"decode error ({e.__class__.__name__}: {e})") from e
    finally:
        container.close()


def decode_positions(stream: bytes, positions: np.ndarray, expect: int | None = None) -> np.ndarray:
    """RGB frames at `positions` (ascending, distinct) of a clip's stream decoded from its start
    (a keyframe cut glued by `vidact.ivf.glue`), which must hold `expect` frames when given."""
    frames = list(iter_frames(stream))
    if expect is not None and len(frames) != expect:
        raise VideoError(f"the cut stream decodes to {len(frames)} frames, {expect} expected")
    if len(positions) and positions[-1] >= len(frames):
        raise VideoError(f"frame {int(positions[-1])} requested, the stream decodes to {len(frames)}")
    return frames_to_rgb([frames[p] for p in positions.tolist()])


def decode_cut(data: bytes, indices: Sequence[int]) -> tuple[np.ndarray, int]:
    """RGB frames at `indices` (any order, repeats allowed) of an IVF clip, decoding only the
    keyframe cut that leads to them (as the loaders do), and the number of frames decoded."""
    table, (distinct, order) = ivf.tables(data), np.unique(np.asarray(indices, np.int64), return_inverse=True)
    if distinct[0] < 0 or distinct[-1] >= len(table.keyframes):
        raise VideoError(f"frames {distinct.tolist()[-3:]} requested, clip has {len(table.keyframes)}")
    cut = plan_cut(table.keyframes, distinct)
    return decode_positions(bytes(ivf.glue(data, table.offsets, cut)), cut.positions, cut.decoded)[order], cut.decoded


def decode_rgb(source: Path | bytes, indices: Sequence[int] | None = None, fps: float | None = None) -> np.ndarray:
    """RGB frames ``(T, H, W, 3) uint8``: all of them, or those at `indices` (any order,
    repeats allowed); `decode_counted` says how."""
    if indices is None:
        return frames_to_rgb(list(iter_frames(source)))
    return decode_counted(source, indices, fps)[0]


def decode_counted(source: Path | bytes, indices: Sequence[int], fps: float | None = None,
                   size: tuple[int, int] | None = None) -> tuple[np.ndarray, int]:
    """RGB frames at `indices` (any order, repeats allowed) and how many frames the decoder
    decoded for them. An IVF clip (shard format 2) is cut at its keyframes (`decode_cut`); given
    the `fps` of another shard clip (constant rate, timestamps ``index / fps``), decoding starts
    at the keyframe before the first wanted frame; otherwise at frame 0, up to the last wanted.
    `size` (width, height): each frame scaled as `encode_frames` scales a clip into a shard."""
    if isinstance(source, bytes) and source[:4] == ivf.SIGNATURE:
        return decode_cut(source, indices)
    wanted = np.asarray(indices, dtype=np.int64)
    last = int(wanted.max())
    keep = set(wanted.tolist())
    got: dict[int, av.VideoFrame] = {}
    seen = decoded = 0  # last index + 1, frames decoded (`got` holds only the wanted ones)
    frames = _seek_frames(source, int(wanted.min()), fps) if fps else enumerate(iter_frames(source))
    for i, frame in frames:
        seen, decoded = i + 1, decoded + 1
        if i in keep:
            got[i] = frame
        if i >= last:
            break
    missing = sorted(keep - got.keys())
    if missing:
        raise VideoError(f"frames {missing[:5]} requested, clip decodes to fewer ({seen} seen)")
    if size is not None:
        got = {i: shard_frame(f, *size) for i, f in got.items()}
    return frames_to_rgb([got[i] for i in wanted.tolist()]), decoded


def shard_frame(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """`frame` as `encode_frames` hands it to a VP9 encoder: area-scaled to the shard's size,
    4:2:0, limited range (the codec's loss aside, what a shard clip decodes to)."""
    return frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA", threads=1,
                          dst_color_range="MPEG")


def encode_frames(frames: Iterable[av.VideoFrame | np.ndarray], fps: Fraction | float,
                  settings: EncodeSettings, size: tuple[int, int] | None = None,
                  sampler: FrameSampler | None = None) -> tuple[bytes, int, int, int]:
    """Encodes frames (PyAV frames or RGB arrays) to the shard codec; returns
    (bytes, frames written, width, height). `size` defaults to the first frame's, made even.
    `sampler` keeps some of the encoder's input frames, for measuring fidelity."""
    encoder, options = ENCODERS[settings.codec]
    quality = settings.quality if settings.quality is not None else DEFAULT_QUALITY[settings.codec]
    buf = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    fmt = {"webm": "webm", "mp4": "mp4", "avi": "avi", "ivf": "ivf"}[settings.container_ext]
    # bitexact: no random container UIDs (Matroska/WebM) or version tags, so the same frames
    # give the same bytes and make_shards output is reproducible.
    out = av.open(buf, mode="w", format=fmt, container_options={"fflags": "+bitexact"})
    stream = None
    n = 0
    width = height = 0
    try:
        for frame in frames:
            if isinstance(frame, np.ndarray):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if stream is None:
                width, height = size or output_size(frame.width, frame.height, settings.short_side,
                                                    settings.min_side, settings.align)
                stream = out.add_stream(encoder, rate=rate)
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuvj420p" if settings.codec == "mjpeg" else "yuv420p"
                opts = dict(options)
                if settings.codec == "mjpeg":
                    stream.codec_context.qscale = quality  # type: ignore[attr-defined]
                    opts.update({"qmin": str(quality), "qmax": str(quality)})
                else:
                    opts.update({"crf": str(quality), "g": str(settings.gop)})
                    if settings.codec in ("vp9", "vp8"):
                        opts.update(b="0", **({"cpu-used": str(settings.speed)} if settings.speed is not None else {}))
                stream.options = opts
                stream.gop_size = settings.gop
                stream.thread_count = 1  # deterministic bytes; make_shards parallelizes over clips
                stream.codec_context.time_base = Fraction(1) / rate
            # Explicit output range: a full-range (yuvj420p, MJPEG) source is otherwise copied
            # unconverted into the limited-range yuv420p stream and decodes with wrong levels.
            img = frame.reformat(width=width, height=height, format=stream.pix_fmt,
                                 interpolation="AREA", threads=1,
                                 dst_color_range="JPEG" if settings.codec == "mjpeg" else "MPEG")
            img.pts = n
            img.time_base = Fraction(1) / rate
            if sampler is not None:
                sampler.add(n, img)
            for packet in stream.encode(img):
                out.mux(packet)
            n += 1
        if stream is None:
            raise VideoError("0 decodable frames")
        for packet in stream.encode(None):
            out.mux(packet)
    finally:
        out.close()
    return buf.getvalue(), n, width, height


def segment_lengths(max_seconds: float | None, fps: float) -> tuple[int | None, int]:
    """(frames per segment, fewest frames a last segment may have) for ``--max-seconds`` at
    `fps`: segments of ``round(S * fps)`` frames; a shorter tail joins the previous segment
    when it is under MERGE_TAIL_S and under half a segment. (None, 1): one clip, no cut."""
    if max_seconds is None:
        return None, 1
    length = max(1, round(max_seconds * fps))
    return length, max(1, min(round(MERGE_TAIL_S * fps), length // 2))


def split_frames(frames: Iterable[T], length: int | None, min_tail: int = 1) -> Iterator[Iterator[T]]:
    """Consecutive pieces of `frames`, `length` each (None: one piece, all of them); a last piece
    of fewer than `min_tail` frames is appended to the one before. Streams: each piece must be
    consumed before the next is asked for, and at most `min_tail` frames are held."""
    src = iter(frames)
    if length is None:
        yield src
        return
    state: dict = {"ahead": [], "done": False}

    def piece() -> Iterator[T]:
        ahead, state["ahead"] = state["ahead"], []
        yield from chain(ahead, islice(src, length - len(ahead)))
        more = list(islice(src, min_tail))  # is what follows long enough to be a segment?
        if len(more) < min_tail:
            state["done"] = True
            yield from more
        else:
            state["ahead"] = more

    while not state["done"]:
        yield piece()


Clip = tuple[int, bytes, int, int, int, "float | None", "np.ndarray | None"]


def encode_segments(frames: Iterable[av.VideoFrame | np.ndarray], fps: Fraction | float, settings: EncodeSettings,
                    max_seconds: float | None = None, size: tuple[int, int] | None = None,
                    what: str = "source gave") -> list[Clip]:
    """Encodes `frames` as one clip, or cut into consecutive segments of `max_seconds`
    (`segment_lengths`), each its own clip starting on a keyframe, and checks every clip: it must
    decode to the frames it was given. Returns (start frame, bytes, frames, width, height, psnr,
    JPEG frame offsets or None) per clip."""
    length, min_tail = segment_lengths(max_seconds, float(fps))
    out: list[Clip] = []
    start = 0
    for piece in split_frames(frames, length, min_tail):
        if settings.codec == "jpeg":
            rgb = ShardRGB(piece, settings, size)
            quality = DEFAULT_QUALITY["jpeg"] if settings.quality is None else settings.quality
            data, offsets, psnr = jpeg_frames.encode_clip(rgb, quality)
            n, (height, width) = len(offsets) - 1, rgb.size
        else:
            sampler, offsets = FrameSampler(), None
            data, n, width, height = encode_frames(piece, fps, settings, size=size, sampler=sampler)
            check, psnr = count_and_psnr(iter_frames(data), sampler, n)
            if check != n:
                where = f" (segment {len(out)})" if length else ""
                raise VideoError(f"re-encoded clip decodes to {check} frames, {what} {n}{where}")
        out.append((start, data, n, width, height, psnr, offsets))
        start += n
        size = width, height  # every segment of a source has the size of its first
    return out


class ShardRGB:
    """RGB frames scaled to a shard's size (`size`, or the settings' size of the first frame) as
    the video codecs' input is scaled (area, in YUV 4:2:0 for video frames) and converted as DALI
    converts (`yuv420_to_rgb`; swscale's own conversion is 2-3 levels off); iterate once, then
    ``size`` is (height, width)."""

    def __init__(self, frames: Iterable[av.VideoFrame | np.ndarray], settings: EncodeSettings,
                 size: tuple[int, int] | None):
        self.frames, self.settings, self.wh = frames, settings, size

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.frames:
            if isinstance(frame, np.ndarray):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            if self.wh is None:
                s = self.settings
                self.wh = output_size(frame.width, frame.height, s.short_side, s.min_side, s.align)
            width, height = self.wh
            if frame.format.name == "rgb24":  # a still image: scaled in RGB, no colour round trip
                yield frame.reformat(width=width, height=height, interpolation="AREA", threads=1).to_ndarray()
                continue
            img = frame.reformat(width=width, height=height, format="yuvj420p", interpolation="AREA", threads=1,
                                 dst_color_range="JPEG")
            yield yuv420_to_rgb(img.to_ndarray()[None], height, width, full_range=True)[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.wh[1], self.wh[0]


def transcode(path: Path, settings: EncodeSettings) -> Encoded:
    """Re-encodes a source video for a shard and checks the result: the output must decode to
    exactly as many frames as were read from the source."""
    return transcode_segments(path, settings)[0]


def transcode_segments(path: Path, settings: EncodeSettings, max_seconds: float | None = None) -> list[Encoded]:
    """`transcode`, cut into segments of at most `max_seconds` (plus a short tail, see
    `segment_lengths`) when given: one checked clip per segment, in source order."""
    container = _open_video(path)
    stream = container.streams.video[0]
    fps = _fps_of(stream)
    header = int(stream.frames) or None
    source_size = stream.codec_context.width, stream.codec_context.height
    container.close()
    clips = encode_segments(iter_frames(path), fps, settings, max_seconds)
    return [Encoded(data, n, float(fps), width, height, header, *source_size, psnr, start, offsets)
            for start, data, n, width, height, psnr, offsets in clips]


def encode_image_sequence(paths: Sequence[Path], fps: float, settings: EncodeSettings) -> Encoded:
    """Encodes a folder of JPEG frames (in the given order) as one clip at `fps`. An unreadable
    image rejects the clip, naming the file."""
    return encode_image_segments(paths, fps, settings)[0]


def encode_image_segments(paths: Sequence[Path], fps: float, settings: EncodeSettings,
                          max_seconds: float | None = None) -> list[Encoded]:
    """`encode_image_sequence`, cut into segments of at most `max_seconds` when given."""
    from PIL import Image, UnidentifiedImageError

    if not paths:
        raise VideoError("frame folder has no images")

    def frames() -> Iterator[np.ndarray]:
        for p in paths:
            try:
                with Image.open(p) as im:
                    yield np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
                    ValueError) as e:  # garbage bytes may parse as a huge or odd image
                raise VideoError(f"unreadable image {p.name} ({e.__class__.__name__})") from e

    first = next(frames())
    size = output_size(first.shape[1], first.shape[0], settings.short_side, settings.min_side, settings.align)
    as_is = jpeg_frames.stored_as_is(paths, size) if settings.codec == "jpeg" else None
    if as_is is not None:  # no second generation loss: the folder's own JPEGs
        clips = stored_segments(as_is, fps, max_seconds, size)
    else:
        clips = encode_segments(frames(), fps, settings, max_seconds, size=size, what="folder has")
    return [Encoded(data, n, float(fps), width, height, len(paths), first.shape[1], first.shape[0], psnr, start,
                    offsets) for start, data, n, width, height, psnr, offsets in clips]


def stored_segments(jpegs: list[bytes], fps: float, max_seconds: float | None, size: tuple[int, int]) -> list[Clip]:
    """A frame folder's own JPEGs as clips (segments as `encode_segments` cuts them): PSNR 100."""
    out: list[Clip] = []
    start = 0
    for piece in split_frames(jpegs, *segment_lengths(max_seconds, fps)):
        data, offsets = jpeg_frames.pack(list(piece))
        out.append((start, data, len(offsets) - 1, *size, PSNR_CAP, offsets))
        start += len(offsets) - 1
    return out
