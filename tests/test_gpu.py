"""The DALI loader on a GPU (NVDEC decoding, CUDA kernels) against its CPU backend, on clips whose
frames show their own index (`conftest.pattern_frame`), at sizes NVDEC takes (>= 128 px).

Each check takes the device: its ``[cuda]`` case (marked ``gpu``, run by `tools/gpu_check.py`)
compares the GPU output (NVDEC, `fn.resize`) with the CPU backend's (torch's resize) and reads the
frame index off the pixels; its ``[cpu]`` case runs the GPU's graph on DALI's CPU backend (the CPU
decoder, the GPU's `fn.resize`) against the CPU's graph: the GPU's resize is held within
`PARITY` of the CPU's, and the checking code is tested on machines without a GPU.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GRID, REPO, SAME_FRAME_TOL, overclaim_frames, pattern_levels, write_clip

from vidact.clip import sampling
from vidact.clip.geometry import crop_offset, resize_shorter_size
from vidact.clip.resample import PARITY
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.data.guards import check_nvdec_size
from vidact.prep.make_shards import main as make_shards
from vidact.shards import ShardSet, decode_meta, read_members

# (label, id, width, height, frames): landscape, square, portrait; short side 128, NVDEC's minimum.
CLIPS = [("a", "wide", 160, 128, 45), ("a", "square", 128, 128, 9), ("b", "tall", 128, 176, 90),
         ("b", "long", 144, 128, 120)]
# Eval resizes the short side to 128 (the clips' own) and crops the centre 112.
SPEC = ClipSpec(frames_per_clip=16, crop_size=112, norm="half", ratio=1.0)
# NVDEC vs the CPU decoder, mean abs difference in 0..255 levels: two YUV -> RGB conversions (the
# resize alone is held to PARITY by the [cpu] cases).
LEVELS_TOL = 2.0

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (DALI mixed decoder)")])]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> ShardSet:
    src = tmp_path_factory.mktemp("gpu_src")
    for label, cid, w, h, n in CLIPS:
        write_clip(src / label / f"{cid}.avi", "mjpeg", width=w, height=h, num_frames=n)
    out = tmp_path_factory.mktemp("gpu_shards")
    assert make_shards([str(src), "--out", str(out), "--workers", "1", "--val-fraction", "0"]) == 0
    ss = ShardSet.open(out)
    check_nvdec_size(ss, "train")  # the default --min-side kept them NVDEC-sized
    return ss


@pytest.fixture(scope="module")
def jpeg_shards(tmp_path_factory) -> ShardSet:
    """The same clips as JPEG frames (`make_shards --codec jpeg`): DALI's image decoder, on the
    GPU the hardware JPEG decoder (``mixed``)."""
    src = tmp_path_factory.mktemp("gpu_jpeg_src")
    for label, cid, w, h, n in CLIPS:
        write_clip(src / label / f"{cid}.avi", "mjpeg", width=w, height=h, num_frames=n)
    out = tmp_path_factory.mktemp("gpu_jpeg_shards")
    assert make_shards([str(src), "--out", str(out), "--workers", "1", "--val-fraction", "0", "--codec", "jpeg"]) == 0
    return ShardSet.open(out)


@pytest.fixture(scope="module")
def metas(shards) -> dict[str, dict]:
    return {m["id"]: m for tar, idx in zip(shards.tars("train"), shards.indexes("train"))
            for _, data in read_members(tar, idx, "json") for m in [decode_meta(data)]}


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def clips(shards, device, spec=SPEC, mode="eval", batch_size=2, **kw) -> dict[str, tuple]:
    """{id: (video on the CPU as float, frames, decoded)} of one epoch of the DALI loader on
    `device`: the GPU's graph (on the CPU backend for ``"cpu"``), or ``"cpu-graph"``, the CPU's."""
    dali_resize = device != "cpu-graph"
    device = "cpu" if device == "cpu-graph" else device
    return {i: (v.float().cpu(), f, d) for b in build_loader(shards, "train", "dali", mode, spec, batch_size,
                                                           device=device, workers=2, dali_resize=dali_resize, **kw)
            for i, v, f, d in zip(b.ids, b.video, b.info["frames"], b.info["decoded"])}


def levels(video: torch.Tensor, spec: ClipSpec) -> np.ndarray:
    """Normalized ``(..., C, H, W)`` frames back to 0..255 levels, ``(..., H, W, C)``."""
    mean, std = (torch.tensor(v).view(3, 1, 1) * 255 for v in (spec.mean, spec.std))
    return (video.float().cpu() * std + mean).movedim(-3, -1).numpy()


def shown_frame(img: np.ndarray, box, src_hw: tuple[int, int], num_frames: int) -> tuple[int, float]:
    """(index, distance in levels) of the source frame `img` shows, `img` being the window
    `box` = (y0, x0, h, w) of a source frame of size `src_hw`, scaled: the pattern nearest in the
    blocks whose centres fall inside the window."""
    (H, W), (y0, x0, h, w), (oh, ow) = src_hw, box, img.shape[:2]
    gray, got, cells = img.mean(-1), [], []
    for r in range(GRID):
        for c in range(GRID):
            y, x = int(((r + 0.5) * H / GRID - y0) * oh / h), int(((c + 0.5) * W / GRID - x0) * ow / w)
            if 3 <= y < oh - 3 and 3 <= x < ow - 3:
                got.append(gray[y - 2:y + 3, x - 2:x + 3].mean())
                cells.append((r, c))
    rows, cols = np.array(cells).T
    dist = [float(np.abs(np.array(got) - pattern_levels(j)[rows, cols]).mean()) for j in range(num_frames)]
    return int(np.argmin(dist)), min(dist)


def eval_box(meta: dict, spec: ClipSpec, pos_y: float = 0.5, pos_x: float = 0.5):
    """The source window an eval view shows: resize the short side, then crop."""
    H, W = meta["height"], meta["width"]
    h, w = resize_shorter_size(H, W, spec.resize_short)
    return (crop_offset(h, spec.crop_size, pos_y) * H / h, crop_offset(w, spec.crop_size, pos_x) * W / w,
            spec.crop_size * H / h, spec.crop_size * W / w)


def assert_shows(clip: torch.Tensor, frames, meta: dict, spec: ClipSpec, box, what: str) -> None:
    for t, img in enumerate(levels(clip, spec)):
        got, dist = shown_frame(img, box, (meta["height"], meta["width"]), meta["num_frames"])
        # The pattern comes back within one level every 83 frames (35 and 118): either is the frame.
        alias = np.abs(pattern_levels(got).astype(int) - pattern_levels(int(frames[t]))).max() <= 1
        assert (got == frames[t] or alias) and dist < SAME_FRAME_TOL, f"{what} frame {t}: {got} at {dist:.1f}"


def assert_near_cpu(out: dict, cpu: dict, spec: ClipSpec, device: str) -> None:
    """The GPU's clips against the CPU graph's: within LEVELS_TOL on a GPU (two decoders), within
    PARITY on the CPU backend (the same decoder: only the resize differs)."""
    assert out.keys() == cpu.keys()
    for i in out:
        if device == "cuda":
            diff = np.abs(levels(out[i][0], spec) - levels(cpu[i][0], spec)).mean()
            assert diff < LEVELS_TOL, f"{i}: GPU and CPU differ by {diff:.2f} levels"
        else:
            diff = float((out[i][0] - cpu[i][0]).abs().mean())
            assert diff <= PARITY, f"{i}: fn.resize and the CPU's resize differ by {diff:.2e}"


# --------------------------------------------------------------------------- checks

def test_pixels_show_their_frames(shards, metas, device):
    out, cpu = clips(shards, device), clips(shards, "cpu-graph")
    assert_near_cpu(out, cpu, SPEC, device)
    for i, (video, frames, _) in out.items():
        np.testing.assert_array_equal(frames, sampling.frame_indices(metas[i]["num_frames"], 16, 1.0))
        assert_shows(video, frames, metas[i], SPEC, eval_box(metas[i], SPEC), i)


def test_keyframe_cuts_decode_the_frames_of_a_decode_from_frame_0(shards, metas, device):
    """The glued IVF streams (keyframe runs cut out of each clip inside the graph) decode on the
    device to what the CPU backend decodes from frame 0: the same frames, within a few levels,
    for middle windows, where the cut skips the clip's first third."""
    spec = ClipSpec(frames_per_clip=8, crop_size=112, norm="half", ratio=0.3)
    out, whole = clips(shards, device, spec), clips(shards, "cpu-graph", spec, cut=False)
    assert_near_cpu(out, whole, spec, device)
    assert shards.manifest["format"] == 2  # IVF with keyframe tables: the loader cuts
    for i, (video, frames, _) in out.items():
        np.testing.assert_array_equal(frames, whole[i][1])
        assert_shows(video, frames, metas[i], spec, eval_box(metas[i], spec), i)


def test_repeated_indices(shards, metas, device):
    """Windows of 1-12 frames for T = 16: each frame decoded once, then copied in the graph."""
    spec = ClipSpec(frames_per_clip=16, crop_size=112, norm="half", ratio=0.1)
    out = clips(shards, device, spec)
    assert_near_cpu(out, clips(shards, "cpu-graph", spec), spec, device)
    for i, (video, frames, decoded) in out.items():
        want = sorted(set(frames.tolist()))
        assert len(want) < 16 and decoded.tolist() == want + [-1] * (16 - len(want))
        same = torch.from_numpy(frames[1:] == frames[:-1])
        assert torch.equal(video[1:][same], video[:-1][same])
        assert_shows(video, frames, metas[i], spec, eval_box(metas[i], spec), i)


def test_jpeg_frames_decode_each_distinct_frame_once(jpeg_shards, metas, device):
    """JPEG-frames shards through the image decoder (the GPU's hardware JPEG decoder with
    ``mixed``): eval windows of 1-12 frames for T = 16 and two-clip multiview show the right
    frames, within a few levels of the CPU backend, and decode each distinct frame once."""
    spec = ClipSpec(frames_per_clip=16, crop_size=112, norm="half", ratio=0.1)
    for mode, kw in (("eval", {}), ("multiview", {"num_clips": 2, "num_crops": 1, "flip_views": False})):
        out = clips(jpeg_shards, device, spec, mode, **kw)
        assert_near_cpu(out, clips(jpeg_shards, "cpu-graph", spec, mode, **kw), spec, device)
        for i, (video, frames, decoded) in out.items():
            rows = np.asarray(frames).reshape(-1, 16)
            want = sorted(set(rows.ravel().tolist()))
            assert decoded.tolist() == want + [-1] * (decoded.size - len(want))
            views = video.reshape(-1, *video.shape[-4:])
            for k, row in enumerate(rows):
                assert_shows(views[k], row, metas[i], spec, eval_box(metas[i], spec), f"{i} clip {k}")


def test_jpeg_train_frames(jpeg_shards, metas, device):
    spec = ClipSpec(frames_per_clip=8, crop_size=112, norm="half", ratio=0.5, flip=0.0)
    seen = 0
    for b in build_loader(jpeg_shards, "train", "dali", "train", spec, 1, device=device, workers=2):
        for cid, video, f, glued, box in zip(b.ids, b.video, b.info["frames"], b.info["glued"], b.info["crop"]):
            assert glued == len(set(f.tolist()))
            assert_shows(video, f, metas[cid], spec, box, cid)
            seen += 1
    assert seen == len(CLIPS)


def test_index_past_the_end(shards, tmp_path, device):
    """A frame count larger than the video's: checked before decoding (NVDEC would pad or fail),
    the sample is left out and named; the others are decoded."""
    root = Path(shutil.copytree(shards.root, tmp_path / "s"))
    tar = root / Path(shards.tars("train")[0]).name
    key, _claimed = overclaim_frames(tar, 20)
    assert set(clips(ShardSet.open(root), device)) == {c[1] for c in CLIPS} - {key}


def test_multiview(shards, metas, device):
    out = clips(shards, device, mode="multiview", num_clips=2, num_crops=3, flip_views=True)
    cpu = clips(shards, "cpu-graph", mode="multiview", num_clips=2, num_crops=3, flip_views=True)
    assert_near_cpu(out, cpu, SPEC, device)
    for i, (views, frames, _) in out.items():
        assert views.shape == (12, 16, 3, 112, 112)
        for k in range(2):  # view 6k: the centre crop of temporal clip k
            assert_shows(views[6 * k], frames[k], metas[i], SPEC, eval_box(metas[i], SPEC), f"{i} clip {k}")


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_half_dtypes(shards, device, dtype):
    spec = ClipSpec(frames_per_clip=16, crop_size=112, norm="half", dtype=dtype)
    b = next(iter(build_loader(shards, "train", "dali", "eval", spec, 2, device=device, workers=2, dali_resize=True)))
    assert b.video.dtype == spec.torch_dtype and b.video.device.type == device
    assert b.label.device.type == device and b.label.dtype == torch.int64
    assert_near_cpu({i: (v.float().cpu(),) for i, v in zip(b.ids, b.video)},
                    {i: v[:1] for i, v in clips(shards, "cpu-graph").items() if i in b.ids}, spec, device)


def test_two_pipelines(shards, device):
    one, two = clips(shards, device), clips(shards, device, dali_pipelines=2)
    assert one.keys() == two.keys() and len(one) == len(CLIPS)
    for i in one:
        torch.testing.assert_close(one[i][0], two[i][0], atol=1e-3, rtol=0)


def test_train_frames_and_sharding(shards, metas, device):
    spec = ClipSpec(frames_per_clip=8, crop_size=112, norm="half", ratio=0.3, flip=0.0)
    ids = []
    for rank in (0, 1):
        for b in build_loader(shards, "train", "dali", "train", spec, 1, device=device, rank=rank, world_size=2):
            assert b.video.device.type == device
            for cid, video, f, u, box in zip(b.ids, b.video, b.info["frames"], b.info["window_u"], b.info["crop"]):
                want = sampling.frame_indices(metas[cid]["num_frames"], 8, 0.3, "middle", float(u))
                np.testing.assert_array_equal(f, want)
                assert_shows(video, f, metas[cid], spec, box, cid)
                ids.append(cid)
    assert sorted(ids) == sorted(metas)


def test_ddp_step(shards, tmp_path, device):
    """One DistributedDataParallel step on a DALI batch: NCCL on CUDA (gloo on the CPU)."""
    import torch.distributed as dist

    dev = torch.device(device, 0) if device == "cuda" else torch.device("cpu")
    dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=f"file://{tmp_path}/pg",
                            rank=0, world_size=1)
    try:
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2).to(dev))
        b = next(iter(build_loader(shards, "train", "dali", "train", SPEC, 2, device=dev, workers=2)))
        before = model.module.weight.detach().clone()
        loss = torch.nn.functional.cross_entropy(model(b.video.float().mean(dim=(1, 3, 4))), b.label)
        loss.backward()
        torch.optim.SGD(model.parameters(), lr=1.0).step()
        assert torch.isfinite(loss) and not torch.equal(before, model.module.weight.detach())
    finally:
        dist.destroy_process_group()


def test_gpu_check_without_cuda_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p = subprocess.run([sys.executable, "tools/gpu_check.py"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and p.stdout.count("\n") == 1 and "no CUDA" in p.stdout, p.stdout + p.stderr


def test_gpu_check_names_each_missing_piece():
    """On a CUDA box without some dependency, the check says which, one line each, and what to
    do, before running anything (here the pieces are taken away by injection)."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "tools"))

    def load(module):
        if module in ("webdataset", "pytest"):
            raise ImportError(f"No module named '{module}'")
        return __import__(module)

    def no_nvdec(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    lines = gpu_check.missing_pieces(load, no_nvdec)
    assert len(lines) == 3, lines
    assert "webdataset (webdataset) does not import" in lines[0] and "pip install webdataset" in lines[0]
    assert "pytest (pytest) does not import" in lines[1]
    assert "libnvcuvid.so.1" in lines[2] and "NVIDIA_DRIVER_CAPABILITIES" in lines[2]
    assert gpu_check.missing_pieces(lambda m: None, lambda n: None) == []  # all here: nothing said


def test_gpu_check_evidence_line_reports_k_clips(tmp_path, monkeypatch):
    """The evidence line of `make gpu-check` gives K = 2 over K = 1 per set and loader (the DALI
    rows that cut, the reference) from the measuring child's evidence.json."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "tools"))
    clip = {"clips_per_s": 10.0, "decoded_frames_per_s": 100.0}
    k_rows = [{"set": s, "loader": loader, "device": "cuda" if loader == "dali" else "cpu", "cut": cut,
               "clips_per_video": k, "cpu_vs_k1": ratio}
              for s in ("vp9", "jpeg") for loader, cut, k, ratio in
              (("dali", True, 1, 1.0), ("dali", True, 2, 0.55), ("dali", False, 2, 0.9), ("torch", False, 2, 0.6))]
    (tmp_path / "evidence.json").write_text(json.dumps({
        "d1_alignment": {"aligned": clip, "unaligned": clip}, "d2_cut": {"cut": clip, "from_frame_0": clip},
        "reference": clip, "dali_vs_reference": 2.0, "r3d_18_end_to_end": [], "clips_per_video": k_rows}))
    monkeypatch.setattr(gpu_check.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    ok, line = gpu_check.evidence_line(tmp_path, 2)
    assert ok and line.endswith("K = 2 over K = 1, CPU per clip at 224 px: vp9 dali/cuda 0.55; vp9 torch/cpu 0.60; "
                                "jpeg dali/cuda 0.55; jpeg torch/cpu 0.60"), line
