"""What a repack costs, to plan one: `make_shards` on a folder of source videos, VP9 (the default
codec, its GOP) and JPEG frames, at each short side, with 1 and 2 local workers and on a local Ray
with 2 workers; beside it the ``ffmpeg`` command line doing the same VP9 encode (same libvpx
options, size, CRF, GOP, one thread, one process per clip) and writing JPEG frames; and the VP9
encoder's speed settings (libvpx ``cpu-used``): bytes, PSNR and CPU per frame of each.

    python -m vidact.bench.repack SRC [--short-side 240 480] [--codecs vp9 jpeg] [--workers 1 2]
                                      [--ray] [--speeds 5 6 7 8] [--json OUT] [--work DIR]

SRC is a folder make_shards takes (class folders of videos). CPU per frame is what the workers
(or ffmpeg processes) spent, decoding the source included; frames per second are wall clock.
The Kinetics-400 line multiplies CPU per frame by 240,000 clips x 10 s x 25 fps.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av

from vidact import cli
from vidact.prep.repacked import parse_repacked
from vidact.shards import NVDEC_MIN_SIDE
from vidact.video_io import DEFAULT_QUALITY, ENCODERS, EncodeSettings, output_size, transcode

K400_FRAMES = 240_000 * 10 * 25


def sources(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in (".mp4", ".avi", ".mkv", ".webm"))


def make_shards_row(src: Path, out: Path, codec: str, short_side: int, workers: int, ray: bool) -> dict:
    """One make_shards run (a fresh output folder): its own figures and the wall clock around it."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "vidact.prep.make_shards", str(src), "--out", str(out), "--codec", codec,
           "--short-side", str(short_side), "--workers", str(workers), "--val-fraction", "0",
           *(["--distributor", "ray"] if ray else [])]
    started = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    got = parse_repacked(p.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"tool": "make_shards" + (" (ray)" if ray else ""), "codec": codec, "short_side": short_side,
            "workers": workers, "clips": int(got["clips"]), "frames": int(got["frames"]),
            "encode_s": got["seconds"], "wall_s": round(wall, 2),
            "frames_per_s": round(got["frames"] / got["seconds"], 1),
            "cpu_ms_per_frame": got["cpu_ms_per_frame"], "bytes_per_clip": manifest["bytes_per_clip"],
            "psnr_median": (manifest.get("psnr") or {}).get("median")}


def ffmpeg_cmd(path: Path, out: Path, codec: str, short_side: int) -> list[str]:
    """The ffmpeg command doing make_shards' encode of `path` (VP9: the same libvpx options;
    JPEG frames: ffmpeg's own JPEG encoder at -q:v 2, libjpeg-turbo's quality not being one of its)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        w, h = output_size(s.codec_context.width, s.codec_context.height, short_side, NVDEC_MIN_SIDE, 16)
    head = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-threads", "1", "-i", str(path),
            "-vf", f"scale={w}:{h}:flags=area", "-an", "-threads", "1"]
    if codec == "jpeg":
        out.mkdir(parents=True, exist_ok=True)
        return [*head, "-pix_fmt", "yuvj420p", "-c:v", "mjpeg", "-q:v", "2", "-f", "image2", str(out / "%05d.jpg")]
    _, opts = ENCODERS["vp9"]
    vpx = [a for k, v in opts.items() for a in (f"-{k}", v)]
    return [*head, "-pix_fmt", "yuv420p", "-c:v", "libvpx-vp9", *vpx, "-crf", str(DEFAULT_QUALITY["vp9"]),
            "-b:v", "0", "-g", str(EncodeSettings().gop), "-f", "ivf", str(out)]


def ffmpeg_row(files: list[Path], work: Path, codec: str, short_side: int, workers: int, frames: int) -> dict:
    """ffmpeg on every file, `workers` processes at a time: wall clock and their CPU."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cmds = [ffmpeg_cmd(f, work / f"{i}{'' if codec == 'jpeg' else '.ivf'}", codec, short_side)
            for i, f in enumerate(files)]
    cpu0, started = _children_cpu(), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for p in pool.map(lambda c: subprocess.run(c, capture_output=True, text=True), cmds):
            if p.returncode != 0:
                raise RuntimeError(f"ffmpeg: {p.stderr.strip()[-300:]}")
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu0
    size = sum(f.stat().st_size for f in work.rglob("*") if f.is_file())
    shutil.rmtree(work, ignore_errors=True)
    return {"tool": "ffmpeg", "codec": codec, "short_side": short_side, "workers": workers, "clips": len(files),
            "frames": frames, "encode_s": round(wall, 2), "wall_s": round(wall, 2),
            "frames_per_s": round(frames / wall, 1), "cpu_ms_per_frame": round(1000 * cpu / frames, 2),
            "bytes_per_clip": round(size / len(files)), "psnr_median": None}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def speed_row(files: list[Path], short_side: int, speed: int) -> dict:
    """Every file through make_shards' own transcode at libvpx cpu-used `speed`, in this process:
    bytes and CPU per frame, PSNR (each clip's, against the frames the encoder was given)."""
    settings = EncodeSettings(short_side=short_side, min_side=NVDEC_MIN_SIDE, speed=speed)  # make_shards' default
    frames = size = 0
    psnrs = []
    started = time.process_time()
    for f in files:
        enc = transcode(f, settings)
        frames, size = frames + enc.num_frames, size + len(enc.data)
        psnrs.append(enc.psnr)
    cpu = time.process_time() - started
    return {"short_side": short_side, "speed": speed, "frames": frames, "bytes_per_frame": round(size / frames),
            "psnr_median": round(statistics.median(psnrs), 2), "psnr_min": round(min(psnrs), 2),
            "cpu_ms_per_frame": round(1000 * cpu / frames, 2)}


def k400_core_hours(cpu_ms_per_frame: float) -> float:
    return cpu_ms_per_frame * K400_FRAMES / 1000 / 3600


def tables(runs: list[dict], speeds: list[dict]) -> str:
    lines = ["| tool | codec | short side | workers | frames/s | CPU ms per frame | KiB per clip | PSNR median "
             "| Kinetics-400 core-hours |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        psnr = f"{r['psnr_median']:.1f}" if r["psnr_median"] is not None else "-"
        lines.append(f"| {r['tool']} | {r['codec']} | {r['short_side']} | {r['workers']} | {r['frames_per_s']:.0f} "
                     f"| {r['cpu_ms_per_frame']:.2f} | {r['bytes_per_clip'] / 1024:.0f} | {psnr} "
                     f"| {k400_core_hours(r['cpu_ms_per_frame']):,.0f} |")
    if speeds:
        lines += ["", "| VP9 cpu-used | short side | bytes per frame | PSNR median (min) | CPU ms per frame |",
                  "|---|---|---|---|---|"]
        lines += [f"| {s['speed']} | {s['short_side']} | {s['bytes_per_frame']:,} | {s['psnr_median']:.2f} "
                  f"({s['psnr_min']:.2f}) | {s['cpu_ms_per_frame']:.2f} |" for s in speeds]
    return "\n".join(lines)


def build_parser():
    p = cli.parser("vidact.bench.repack", __doc__)
    p.add_argument("src", type=Path, help="source videos in class folders (what make_shards takes)")
    p.add_argument("--short-side", type=int, nargs="+", default=[240, 480], help="output short sides (default 240 480)")
    p.add_argument("--codecs", nargs="*", choices=("vp9", "jpeg"), default=["vp9", "jpeg"],
                   help="shard codecs of the make_shards and ffmpeg rows (default: vp9 jpeg; none: only the speeds)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local worker counts (default 1 2)")
    p.add_argument("--ray", action="store_true", help="also on a local Ray with the largest worker count")
    p.add_argument("--no-ffmpeg", action="store_true", help="leave out the ffmpeg rows")
    p.add_argument("--speeds", type=int, nargs="*", default=[5, 6, 7, 8], choices=range(0, 9), metavar="0-8",
                   help="VP9 cpu-used values to compare (default 5 6 7 8; none: leave out; FFmpeg takes up to 8)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    p.add_argument("--json", type=Path, help="write the rows here too")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    files = sources(args.src)
    if not files:
        return cli.fail("vidact.bench.repack", f"{args.src}: no videos (.mp4, .avi, .mkv, .webm) under it")
    work = args.work or Path(tempfile.mkdtemp(prefix="vidact-repack-"))
    runs = []
    for codec in args.codecs:
        for side in args.short_side:
            for workers in args.workers:
                runs.append(make_shards_row(args.src, work / "out", codec, side, workers, ray=False))
                print(json.dumps(runs[-1]), flush=True)
                if not args.no_ffmpeg:
                    runs.append(ffmpeg_row(files, work / "ffmpeg", codec, side, workers, runs[-1]["frames"]))
                    print(json.dumps(runs[-1]), flush=True)
            if args.ray:
                runs.append(make_shards_row(args.src, work / "out", codec, side, max(args.workers), ray=True))
                print(json.dumps(runs[-1]), flush=True)
    speeds = [speed_row(files, side, s) for side in args.short_side for s in args.speeds]
    print(tables(runs, speeds))
    if args.json:
        args.json.write_text(json.dumps({"src": str(args.src), "runs": runs, "speeds": speeds}, indent=2))
        cli.said(args.json)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
