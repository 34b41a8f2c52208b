"""tools/bench.py end to end on the tiny synthetic shard set: the JSON schema, never the speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_loaders import shards as shards  # noqa: F401 - the loader tests' set, as a fixture here

from vidact.data.batch import decode_cost
from vidact.data.tuning import plan_loader

ROOT = Path(__file__).resolve().parents[1]

# The smallest run: the given shards only (no resolution sweep), 1 repeat of 2 batches of 2 clips,
# 4 frames of 32 px, the tiny model; on the CPU, whatever the machine has (the GPU rows have their
# own tests).
TINY = ["--quick", "--device", "cpu", "--resolutions", "native", "--frames", "4", "--crop-size", "32",
        "--batch-sizes", "2", "--batches", "2", "--repeats", "1", "--warmup", "1", "--model-size", "tiny"]


def positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_bench_quick_json_schema(synthetic_shards, tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "tools/bench.py", "--shards", str(synthetic_shards), "--json", str(out),
           "--work", str(tmp_path / "work"), *TINY]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "| loader |" in p.stdout and "| variant |" in p.stdout  # the two markdown tables
    assert "| decoded/kept |" in p.stdout
    report = json.loads(out.read_text())
    assert report["complete"] is True

    for key in ("schema", "date", "command", "machine", "versions", "device", "settings", "sources", "loader",
                "end_to_end", "notes"):
        assert key in report, key
    assert report["command"].startswith("python ") and "--quick" in report["command"]
    machine = report["machine"]
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert isinstance(machine["cores"], int) and machine["cores"] >= 1
    assert positive(machine["memory_gb"])
    for name in ("python", "torch", "dali", "av", "webdataset", "vidact"):
        assert isinstance(report["versions"][name], str) and report["versions"][name], name
    assert report["device"] == "cpu"
    assert [s["resolution"] for s in report["sources"]] == ["native"]
    assert report["sources"][0]["short_side"] == 64 and report["sources"][0]["clips"] == 12

    config = {"resolution": "native", "short_side": 64, "frames": 4, "size": 32, "batch": 2}
    loader = report["loader"]
    # DALI rows run the loader's own plan for the machine (what training gets) and say so
    plan = plan_loader(False, 2, 12, workers=machine["cores"])
    for row in loader:
        assert "error" not in row, row
        assert {k: row[k] for k in config} == config
        assert row["mode"] == "train" and row["loader"] in ("dali", "torch") and row["device"] == "cpu"
        assert isinstance(row["workers"], int) and row["workers"] >= 1
        expected = (plan.pipelines, plan.threads) if row["loader"] == "dali" else (None, None)
        assert (row["pipelines"], row.get("threads")) == expected
        assert row["shape"] == [2, 4, 3, 32, 32]  # the same output tensors from every loader
        for fig in ("clips_per_s", "frames_per_s", "ms_per_batch", "vs_reference", "cpu_ms_per_clip", "cores_busy"):
            assert positive(row[fig]), (fig, row)
        assert row["decoded_per_kept"] >= 1, row  # whole clips (ratio 1) of 20+ frames, T = 4
        assert len(row["runs"]) == 1 and all(positive(r) for r in row["runs"])
        assert row["frames_per_s"] == pytest.approx(row["clips_per_s"] * 4, rel=1e-3)
    variants = {(r["loader"], r["device"]) for r in loader}
    assert ("dali", "cpu") in variants and ("dali", "cuda") not in variants
    workers = sorted(r["workers"] for r in loader if r["loader"] == "torch")
    assert workers == sorted({1, 2, machine["cores"]})
    assert max((r for r in loader if r["loader"] == "torch"), key=lambda r: r["workers"])["vs_reference"] == 1.0

    e2e = {r["variant"]: r for r in report["end_to_end"]}
    assert sorted(e2e) == ["ceiling", "dali", "torch"]
    for row in e2e.values():
        assert "error" not in row, row
        assert {k: row[k] for k in config} == config
        assert row["model"] == "videomae" and row["model_size"] == "tiny"
        for fig in ("steps_per_s", "clips_per_s", "frames_per_s", "vs_ceiling", "vs_reference"):
            assert positive(row[fig]), (fig, row)
        assert isinstance(row["data_wait"], float) and 0.0 <= row["data_wait"] <= 1.0
        assert row["clips_per_s"] == pytest.approx(row["steps_per_s"] * 2, rel=1e-3)
    assert e2e["ceiling"]["loader"] == "none" and e2e["ceiling"]["workers"] is None
    assert e2e["ceiling"]["vs_ceiling"] == 1.0 and e2e["torch"]["vs_reference"] == 1.0
    assert e2e["torch"]["workers"] == max(workers)
    assert (e2e["dali"]["pipelines"], e2e["dali"]["threads"]) == (plan.pipelines, plan.threads)
    assert e2e["ceiling"]["source_loader"] == "dali"
    assert e2e["dali"]["vs_ceiling"] == pytest.approx(e2e["dali"]["steps_per_s"] / e2e["ceiling"]["steps_per_s"],
                                                      rel=0.01)
    assert e2e["dali"]["vs_reference"] == pytest.approx(e2e["dali"]["steps_per_s"] / e2e["torch"]["steps_per_s"],
                                                        rel=0.01)


def cpu_figure(x) -> bool:
    """A CPU-time figure: a non-negative number, or None where nothing was measurable. CPU time is
    read from /proc in 10 ms ticks, so a tiny run's worker processes can read as 0."""
    return x is None or (isinstance(x, (int, float)) and math.isfinite(x) and x >= 0)


def run_bench(shards: Path, tmp_path: Path, *extra: str, name: str = "bench.json") -> tuple[dict, str]:
    out = tmp_path / name
    cmd = [sys.executable, "tools/bench.py", "--shards", str(shards), "--json", str(out),
           "--work", str(tmp_path / "work"), *TINY, *extra]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text()), p.stdout


@pytest.mark.slow
def test_bench_peers_json_schema(synthetic_shards, tmp_path):
    """--peers: a row per peer (figures, or skipped with the reason), the repacking summary and
    the decode-only ceiling, both ways; --sources finds the originals under another folder."""
    sources = json.loads((synthetic_shards / "manifest.json").read_text())["source"]
    report, stdout = run_bench(synthetic_shards, tmp_path, "--peers", "--no-end-to-end", "--sources", sources)
    assert report["schema"] == 2 and "| peer |" in stdout and "| decode |" in stdout
    config = {"resolution": "native", "short_side": 64, "frames": 4, "size": 32, "batch": 2}
    assert [p["resolution"] for p in report["peer_sources"]] == ["native"]
    assert report["peer_sources"][0]["codec"] == "mpeg4" and report["peer_sources"][0]["clips"] == 12
    peers = report["peers"]
    assert {r["loader"] for r in peers} == {"pyav", "decord", "torchcodec"}
    workers = sorted({1, 2, report["machine"]["cores"]})
    for name in ("pyav", "decord", "torchcodec"):
        rows = [r for r in peers if r["loader"] == name]
        if any("skipped" in r for r in rows):  # an unavailable peer: one row that says why
            assert len(rows) == 1 and isinstance(rows[0]["skipped"], str) and rows[0]["skipped"]
            assert rows[0]["clips_per_s"] is None
            continue
        assert sorted(r["workers"] for r in rows) == workers, name
        for row in rows:
            assert "error" not in row, row
            assert {k: row[k] for k in config} == config and row["mode"] == "train"
            assert row["source_codec"] == "mpeg4" and isinstance(row["source_short_side"], int)
            assert row["shape"] == [2, 4, 3, 32, 32]  # the same tensors as vidact's loaders
            for fig in ("clips_per_s", "frames_per_s", "ms_per_batch", "dali_vs_peer"):
                assert positive(row[fig]), (fig, row)
            for fig in ("cpu_ms_per_clip", "dali_vs_peer_cpu"):
                assert cpu_figure(row[fig]), (fig, row)
    assert any("skipped" not in r for r in peers if r["loader"] == "pyav")  # PyAV is a dependency

    (repack,) = report["repack"]
    assert {k: repack[k] for k in config} == config
    for fig in ("dali_clips_per_s", "dali_vs_best_peer", "repack_clips_per_s", "repack_s"):
        assert positive(repack[fig]), (fig, repack)
    for fig in ("repack_cpu_ms_per_clip", "peer_cpu_ms_per_clip", "dali_cpu_ms_per_clip"):
        assert cpu_figure(repack[fig]), (fig, repack)
    assert repack["best_peer"]["loader"] in ("pyav", "decord", "torchcodec") and repack["repack_codec"] == "vp9"
    assert positive(repack["break_even_epochs"]) or repack["break_even_note"].startswith("never")

    decode = report["decode_only"]
    assert [r["decode"] for r in decode] == ["from_start", "seek"]
    for row in decode:
        assert {k: row[k] for k in config} == config and row["codec"] == "vp9"
        assert row["workers"] == report["machine"]["cores"]
        for fig in ("clips_per_s", "frames_decoded_per_clip", "decoded_frames_per_s", "dali_share"):
            assert positive(row[fig]), (fig, row)
        for fig in ("cpu_ms_per_clip", "dali_share_cpu"):
            assert cpu_figure(row[fig]), (fig, row)


@pytest.mark.slow
def test_bench_peers_without_sources_are_skipped_not_absent(synthetic_shards, tmp_path):
    empty = tmp_path / "nowhere"
    empty.mkdir()
    report, _ = run_bench(synthetic_shards, tmp_path, "--peers", "--no-end-to-end", "--sources", str(empty),
                          "--batches", "1", "--workers", "1")
    rows = report["peers"]
    assert sorted(r["loader"] for r in rows) == ["decord", "pyav", "torchcodec"]
    assert all("not found" in r["skipped"] and r["clips_per_s"] is None for r in rows)
    assert report["repack"] == [] and any("peers skipped" in n for n in report["notes"])
    assert len(report["decode_only"]) == 2  # the ceiling needs only the shards


@pytest.mark.slow
def test_bench_soak_json_schema(synthetic_shards, tmp_path):
    report, stdout = run_bench(synthetic_shards, tmp_path, "--soak", "2", "--split", "val", "--workers", "1")
    assert "| epoch |" in stdout and report["loader"] == [] and report["end_to_end"] == []
    rows = report["soak"]
    assert [(r["loader"], r["epoch"]) for r in rows] == [("dali", 1), ("dali", 2), ("torch", 1), ("torch", 2)]
    for row in rows:
        assert "error" not in row, row
        for fig in ("rss_mb", "main_rss_mb", "pss_mb", "seconds"):
            assert positive(row[fig]), (fig, row)
        assert row["workers_rss_mb"] >= 0 and row["batches"] == 3  # 6 val clips, batch 2
    assert positive(next(r for r in rows if r["loader"] == "torch")["workers_rss_mb"])  # its worker counted
    assert [s["loader"] for s in report["soak_summary"]] == ["dali", "torch"]
    for s in report["soak_summary"]:
        assert s["epochs"] == 2 and positive(s["max_mb"]) and isinstance(s["growth_mb"], float)


def test_decode_cost_counts_what_the_decoder_decoded():
    # two clips of T = 4 (a repeat counts as kept); a multiview sample's clips share one count
    info = {"frames": np.array([[10, 10, 11, 12], [0, 3, 6, 9]]), "glued": np.array([5, 9])}
    assert decode_cost(info) == (14, 8)
    assert decode_cost({"frames": info["frames"][None], "glued": np.array([14])}) == (14, 8)


def test_a_peer_that_imports_but_cannot_decode_is_skipped_with_the_fix(tmp_path, monkeypatch):
    """torchcodec imports without the system FFmpeg libraries and fails only when it decodes:
    the bench tries one frame first, so such a peer is a `skipped` row saying what to do, not an
    error from a DataLoader worker."""
    from conftest import write_clip

    from vidact.bench import peers

    clip = peers.PeerClip(str(write_clip(tmp_path / "a.mp4", "mpeg4", num_frames=6)), 6, 25.0, 0, "a")
    assert peers.unavailable("pyav", clip) is None
    broken = peers.PeerClip(str(tmp_path / "missing.mp4"), 6, 25.0, 0, "m")
    assert "av cannot decode" in peers.unavailable("pyav", broken) and "pip install av" in peers.unavailable(
        "pyav", broken)

    def no_libraries(path, idx, fps):
        raise RuntimeError("Could not load libtorchcodec. Likely causes: FFmpeg is not properly installed")

    monkeypatch.setitem(peers.DECODERS, "torchcodec", no_libraries)
    reason = peers.unavailable("torchcodec", clip)
    assert reason.startswith("torchcodec.decoders cannot decode") and "apt-get install ffmpeg" in reason


@pytest.mark.slow
def test_bench_json_is_written_after_every_configuration(synthetic_shards, tmp_path):
    """A long run's JSON exists, with the rows measured so far and ``"complete": false``, from
    its first configuration on: a run cut short (a time limit, a crash) loses nothing measured."""
    out = tmp_path / "bench.json"
    at = TINY.index("--frames") + 1
    cmd = [sys.executable, "tools/bench.py", "--shards", str(synthetic_shards), "--json", str(out),
           "--work", str(tmp_path / "work"), "--no-end-to-end", "-q", *TINY[:at], "4", "6", *TINY[at + 1:]]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    deadline = time.time() + 180
    while first is None and proc.poll() is None and time.time() < deadline:
        if out.is_file():
            first = json.loads(out.read_text())  # written atomically: never half a file
        time.sleep(0.02)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert first is not None and first["complete"] is False
    assert {r["frames"] for r in first["loader"]} == {4}  # the first configuration's rows, measured
    assert all(positive(r["cpu_ms_per_clip"]) for r in first["loader"])
    final = json.loads(out.read_text())
    assert final["complete"] is True and {r["frames"] for r in final["loader"]} == {4, 6}


@pytest.mark.parametrize("local_s3", [False, True])
def test_resume_cost_reads_less_than_the_skipped_part(shards, tmp_path, local_s3):  # noqa: F811
    """vidact.bench.resume_cost on a 10-clip set, batches of 1, resumed at 90 %: the resumed loader
    restored its readers and read (locally: rchar; on the local S3 server: bytes it served) less
    than the 9 skipped batches did; its first batch is the epoch's next (the tool asserts it)."""
    from vidact.bench import resume_cost

    out = tmp_path / "r.json"
    assert resume_cost.main([str(shards.root), "--at", "0.9", "--batch-size", "1", "--shuffle-buffer", "1",
                             "--json", str(out), *(["--local-s3"] if local_s3 else [])]) == 0
    (point,) = json.loads(out.read_text())["points"]
    assert point["restored"] and point["skipped_batches"] == 9, point
    assert 0 < point["resume_bytes"] < 0.6 * point["skipped_bytes"], point


def test_repack_sets_make_shards_beside_ffmpeg_and_the_speed_settings(tmp_path):
    """vidact.bench.repack on two synthetic clips: make_shards' own figures (the frames it encoded
    are the sources'), ffmpeg's same VP9 encode of the same frames at a size alike, and cpu-used
    reaching the encoder (another speed, other bytes)."""
    from vidact.bench import repack
    from vidact.synthetic import make_dataset
    from vidact.video_io import count_frames

    src = tmp_path / "src"
    make_dataset(src, classes=2, train_per_class=1, val_per_class=0, test_per_class=0, seed=3, progress=False)
    frames = sum(count_frames(p) for p in repack.sources(src))
    out = tmp_path / "r.json"
    assert repack.main([str(src), "--short-side", "128", "--codecs", "vp9", "--workers", "1", "--speeds", "5", "8",
                        "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    ours, theirs = got["runs"]
    assert (ours["tool"], theirs["tool"]) == ("make_shards", "ffmpeg")
    assert ours["frames"] == theirs["frames"] == frames and ours["clips"] == 2
    assert ours["cpu_ms_per_frame"] > 0 and theirs["cpu_ms_per_frame"] > 0
    assert 0.5 < theirs["bytes_per_clip"] / ours["bytes_per_clip"] < 2  # one encode, two libvpx builds
    slow, fast = got["speeds"]
    assert slow["frames"] == fast["frames"] == frames and slow["bytes_per_frame"] != fast["bytes_per_frame"]


def test_s3_start_counts_each_index_once_and_each_tar_once_per_epoch(shards, tmp_path):  # noqa: F811
    """vidact.bench.s3_start on the 10-clip set (several tars) on its own local S3 server: the DALI
    loader fetched each index once (2 pipelines), the next epoch's readers none, and its readers
    opened (a HEAD each) every tar once between them, at the start and at the next epoch."""
    from vidact.bench import s3_start

    out = tmp_path / "s.json"
    assert s3_start.main([str(shards.root), "--loader", "dali", "torch", "--batch-size", "1",
                          "--json", str(out)]) == 0
    dali, ref = json.loads(out.read_text())
    n = len(shards.tars("train"))
    assert dali["shards"] == ref["shards"] == n > 1
    assert dali["build_index_requests"] == ref["build_index_requests"] == n
    assert dali["next_epoch_readers_index_requests"] == 0
    assert dali["next_epoch_readers_head_requests"] == n and dali["build_head_requests"] < 2 * n  # not n per reader


def test_bench_rows_per_clips_per_video(synthetic_shards, tmp_path):
    """--clips-per-video 1 2: the loader rows once per K (train), each with the frames its decoder
    decoded per clip; decoded/clip is the sample's decode shared by its K clips (at r = 1 the K
    windows are the same frames: exactly half)."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "tools/bench.py", "--shards", str(synthetic_shards), "--json", str(out), "--work",
           str(tmp_path / "work"), *TINY, "--clips-per-video", "1", "2", "--no-end-to-end", "--workers", "1"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "| K |" in p.stdout and "| decoded/clip |" in p.stdout
    rows = [r for r in json.loads(out.read_text())["loader"] if r["cut"] or r["loader"] == "torch"]
    by = {(r["loader"], r["clips_per_video"]): r for r in rows}
    assert set(by) == {("dali", 1), ("dali", 2), ("torch", 1), ("torch", 2)}
    for loader in ("dali", "torch"):
        one, two = by[(loader, 1)], by[(loader, 2)]
        assert one["shape"] == two["shape"] == [2, 4, 3, 32, 32] and positive(two["cpu_ms_per_clip"])
        assert two["decoded_per_clip"] == pytest.approx(one["decoded_per_clip"] / 2, rel=0.35)
        # measured in turns: K = 2's CPU per clip over K = 1's, round by round (1 repeat: one round)
        assert one["paired"] and two["paired"] and one["cpu_vs_k1_runs"] == [1.0]
        assert len(two["cpu_vs_k1_runs"]) == 1 and two["cpu_vs_k1"] == two["cpu_vs_k1_runs"][0] > 0
    assert "| CPU vs K=1 |" in p.stdout


def test_paired_passes_count_each_loaders_own_work():
    """Loaders measured in turns: each pass's CPU time is its own steps' work, including what it
    goes on doing in the background after its last step (a prefetch refilling its queue), and
    none of the other loader's; the ratio of two steps' CPU per item is what they burn."""
    from vidact.bench.timing import Restless, cpu_ratios, paired_passes, settle

    def burn(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def loader(cost: float, background: float):
        def step() -> int:
            burn(cost)
            threading.Thread(target=burn, args=(background,)).start()  # its refill, after the step
            return 1
        return step

    # most of each step's work in the background: counted in the next loader's pass, it would be
    # off by a third
    heavy, light = loader(0.002, 0.1), loader(0.001, 0.05)
    passes = paired_passes([heavy, light], n=5, repeats=2, warmup=1, sync=lambda: None)
    assert [len(p) for p in passes] == [2, 2]
    for (items, seconds, cpu), cost in [(p, 0.102) for p in passes[0]] + [(p, 0.051) for p in passes[1]]:
        assert items == 5 and cpu == pytest.approx(5 * cost, rel=0.2), cpu
        assert seconds >= 0.5 * cpu  # its wall clock runs until the work is done (one thread at a time: the GIL)
    assert all(r == pytest.approx(0.5, rel=0.2) for r in cpu_ratios(passes[1], passes[0]))

    busy = threading.Thread(target=burn, args=(0.6,))  # a loader that does not stop
    busy.start()
    with pytest.raises(Restless, match="still at work"):
        settle(limit_s=0.3)
    busy.join()


def test_gpu_evidence_clips_per_video_rows_run_on_the_cpu(synthetic_shards):
    """The K = 1 / K = 2 rows `make gpu-check` gathers, on the CPU (tiny): each loader's two Ks
    measured in turns, K = 2's CPU per clip over K = 1's, half the frames decoded per clip."""
    from vidact.bench.gpu_evidence import clips_per_video

    rows = clips_per_video({"vp9": synthetic_shards}, "cpu", batch=2, size=32, batches=1, repeats=1)
    by = {(r["loader"], r["clips_per_video"]): r for r in rows if r["cut"] or r["loader"] == "torch"}
    assert set(by) == {("dali", 1), ("dali", 2), ("torch", 1), ("torch", 2)}
    assert all(r["set"] == "vp9" and r["paired"] for r in rows)
    for loader in ("dali", "torch"):
        one, two = by[(loader, 1)], by[(loader, 2)]
        assert one["cpu_vs_k1"] == 1.0 and positive(two["cpu_vs_k1"])
        assert two["decoded_per_clip"] == pytest.approx(one["decoded_per_clip"] / 2, rel=0.35)


@pytest.mark.slow
def test_gpu_evidence_model_row_runs_on_the_cpu(synthetic_shards):
    """The R3D-18 end-to-end rows `make gpu-check` gathers, measured here on the CPU (tiny): the
    ceiling, DALI and the reference loader, each with clips/s and its data-wait share."""
    from vidact.bench.gpu_evidence import model_end_to_end

    rows = model_end_to_end(synthetic_shards, "cpu", batch=2, batches=1, repeats=1)
    assert [r["variant"] for r in rows] == ["ceiling", "dali", "torch"]
    assert all(r["model"] == "r3d_18" and positive(r["clips_per_s"]) and r["data_wait"] >= 0 for r in rows), rows


def test_dali_against_peers_takes_one_clip_per_video_rows():
    """The peers cut one clip per video read: DALI's figure beside them is its K = 1 row, not a
    K = 2 row's lower CPU per clip."""
    from types import SimpleNamespace

    from vidact.bench.limits import dali_cpu_cost, dali_cpu_rate

    key = {"resolution": "native", "frames": 16, "size": 224, "batch": 4}
    rows = [{**key, "loader": "dali", "device": "cpu", "clips_per_video": k, "clips_per_s": rate, "cpu_ms_per_clip": ms}
            for k, rate, ms in ((1, 90.0, 16.0), (2, 130.0, 11.0))]
    bench, cfg = SimpleNamespace(loader_rows=rows), SimpleNamespace(row=lambda: key)
    assert dali_cpu_cost(bench, cfg) == 16.0 and dali_cpu_rate(bench, cfg) == 90.0


def write_painted_clip(path: Path, steps: list[int], time_base: Fraction, bframes: int) -> None:
    """A libx264 clip whose frame i is grey level 6 i, frame i + 1 `steps[i]` time-base units after
    frame i."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = time_base
        stream.options = {"g": "8", "bf": str(bframes)}
        pts = 0
        for i, step in enumerate(steps):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 6 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            pts += step
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


# (steps, time base, B-frames, fps the peer is given, whether the rate is constant)
CLIP_TIMINGS = {
    "25 fps": ([40] * 40, Fraction(1, 1000), 0, 25.0, True),
    "29.97 fps, B-frames": ([1001] * 40, Fraction(1, 30000), 2, 30000 / 1001, True),
    "variable": ([20 if i % 3 else 90 for i in range(40)], Fraction(1, 1000), 0, 25.0, False),
    "one gap before the window": ([90 if i == 5 else 40 for i in range(40)], Fraction(1, 1000), 0, 25.0, False),
}


@pytest.mark.parametrize("timing", list(CLIP_TIMINGS))
def test_pyav_peer_takes_frames_by_count_on_a_variable_frame_rate(tmp_path, timing):
    """The PyAV peer seeks by time where a clip's timestamps are its first one's plus index / fps
    (B-frames and a 29.97 rate too), and counts frames from the start where they are not (a
    variable frame rate, even one gap before the wanted frames): the frames it gives are those the
    project's own decoder counts, each frame's index painted in its pixels."""
    from vidact.bench.peers import _constant_rate_start, pyav_frames
    from vidact.video_io import decode_counted

    steps, time_base, bframes, fps, constant = CLIP_TIMINGS[timing]
    path = tmp_path / "clip.mp4"
    write_painted_clip(path, steps, time_base, bframes)
    assert (_constant_rate_start(str(path), fps) is not None) == constant
    idx = np.array([17, 18, 24, 30, 39])
    got = pyav_frames(str(path), idx, fps)
    want, _ = decode_counted(path, idx)
    assert np.array_equal(got, want)
    assert [round(float(f.mean()) / 6) for f in got] == idx.tolist()
