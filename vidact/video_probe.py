"""Is this file a video? Decided by what FFmpeg finds in it, not by its name (read by the shard
maker and by ``vidact.predict --videos``).

A user's folder holds Ogg/Theora, MPEG-TS, VOB, Y4M files and videos with odd or no
extensions, beside notes and thumbnails. :func:`probe_file` opens each with FFmpeg (through
PyAV): a video stream makes it a video; a still image (FFmpeg opens a JPEG as a one-frame video),
text (FFmpeg's `tty` demuxer renders a ``.txt`` as ANSI art) or a file FFmpeg cannot open is
*ignored*, except that a file FFmpeg cannot open whose name says it is a video is *rejected* (a
broken video, the user must hear of it). Opening can hang or crash on hostile input, so the shard
maker probes in killable workers (`vidact.prep.probe.probe_paths`); :func:`entry_problem` first
rejects what must not be opened at all (a FIFO blocks ``open()``), without opening it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import av

# Names that say "video": used only to tell a broken video (rejected) from a file that is not a
# video (ignored) when FFmpeg cannot open it, and to guess the layout. Content decides the rest.
VIDEO_LIKE_EXTS = frozenset(
    ".avi .mp4 .mkv .webm .mov .m4v .mpg .mpeg .mpe .m1v .m2v .wmv .asf .flv .f4v .3gp .3g2 "
    ".ogv .ogg .ogm .ts .mts .m2ts .m2t .vob .y4m .mxf .nut .ivf .rm .rmvb .divx .xvid .dv "
    ".h264 .264 .h265 .265 .hevc .mjpeg .mjpg".split())
# Demuxers of single pictures (FFmpeg shows them as one-frame video streams) and of text.
_IMAGE_DEMUXERS = frozenset({"image2", "gif", "apng", "ico", "tiff", "psd"})
_TEXT_DEMUXERS = frozenset({"tty"})

VIDEO, IGNORED, REJECTED = "video", "ignored", "rejected"


@dataclass(frozen=True)
class Probe:
    verdict: str  # VIDEO, IGNORED or REJECTED
    reason: str = ""


def looks_like_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_LIKE_EXTS


def entry_problem(path: Path) -> str | None:
    """Why `path` cannot be used as a video file, found without opening it; None for a regular
    file (a symlink to one included)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "dangling symlink" if path.is_symlink() else "file not found"
    except OSError as e:
        return f"cannot stat ({e.strerror})"
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "a folder, not a video file"
    for test, what in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return f"not a regular file ({what})"
    return None if stat.S_ISREG(mode) else "not a regular file"


def _is_image_demuxer(name: str) -> bool:
    # jpeg_pipe, png_pipe, webp_pipe, ...: content-probed pictures (yuv4mpegpipe is a video)
    return name in _IMAGE_DEMUXERS or name.endswith("_pipe")


def probe_file(path: Path) -> Probe:
    """The verdict on one file (see the module docstring). May block or crash on hostile input:
    call it in a killable worker, after :func:`entry_problem`."""
    problem = entry_problem(path)
    if problem:
        return Probe(REJECTED, problem)
    named_video = looks_like_video(path)
    if os.stat(path).st_size == 0:
        return Probe(REJECTED, "zero-byte file") if named_video else Probe(IGNORED, "not a video (empty file)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError, OSError) as e:
        if named_video:
            return Probe(REJECTED, f"cannot open as video ({e.__class__.__name__}: {e})")
        return Probe(IGNORED, "not a video (FFmpeg cannot open it)")
    with container:
        demuxer = container.format.name
        streams = [s for s in container.streams.video
                   if not s.disposition & av.stream.Disposition.attached_pic]  # cover art
    if demuxer in _TEXT_DEMUXERS:
        return Probe(IGNORED, "not a video (text)")
    if not streams:
        return Probe(REJECTED if named_video else IGNORED,
                     "no video stream" if named_video else "not a video (no video stream)")
    if _is_image_demuxer(demuxer):
        return Probe(IGNORED, f"not a video (still image, {demuxer})")
    return Probe(VIDEO)
