"""K train clips from one decode (``--clips-per-video``): each sample read yields K clips with
their own window, crop and flip (the draws of (seed, epoch, clip id, k)); the union of their frames
is decoded once; the DALI and reference loaders give the same clips (VP9 and JPEG frames); a batch
of B clips holds B / K samples; a resumed epoch goes on with the same batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_jpeg_frames import fake_samples
from test_loaders import N_CLIPS, cut_tables, write_sources

from vidact.clip.cut import plan_cut
from vidact.clip.plan import Planner, SampleTables, draw, train_plan
from vidact.clip.resample import PARITY
from vidact.clip.spec import ClipSpec
from vidact.data import build_loader
from vidact.data.feed import STAND_IN_FRAME, plan_batch
from vidact.prep.make_shards import main as make_shards
from vidact.shards import JPEG_EXT, ShardSet

SPEC = ClipSpec(frames_per_clip=6, crop_size=32, ratio=0.8, random_stride=True, flip=0.5)


@pytest.fixture(scope="module", params=["vp9", "jpeg"])
def shards(request, tmp_path_factory) -> ShardSet:
    src = write_sources(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp(f"shards_{request.param}")
    assert make_shards([str(src), "--out", str(out), "--workers", "1", "--val-fraction", "0", "--codec",
                        request.param, "--shard-size-mb", "0.05", "--min-side", "0"]) == 0
    return ShardSet.open(out)


def epoch(ss: ShardSet, loader: str, clips: int, batch: int, **kw) -> list:
    return list(build_loader(ss, "train", loader, "train", SPEC, batch, device="cpu", workers=2, seed=3,
                             num_clips=clips, **kw))


def same(a, b) -> bool:
    return (np.array_equal(a.frames, b.frames) and np.array_equal(a.distinct, b.distinct)
            and (a.boxes, a.views, a.draws) == (b.boxes, b.views, b.draws))


def test_a_plan_of_k_clips_is_k_one_clip_plans_decoded_together():
    tables = SampleTables(120, 48, 64)
    draws = tuple(draw(3, 1, "x", k) for k in range(3))
    plan = train_plan(SPEC, tables, draws)
    assert plan.per_clip and plan.clips == 3 and same(Planner(SPEC, "train", num_clips=3, seed=3)(tables, "x", 1), plan)
    for k, d in enumerate(draws):
        one = train_plan(SPEC, tables, d)
        np.testing.assert_array_equal(plan.frames[k], one.frames[0])
        assert (plan.boxes[k], plan.views[k], plan.crops[k]) == (one.box, one.views[0], one.crop)
        select, order = plan.clip_frames(k)
        np.testing.assert_array_equal(plan.distinct[select][order], one.frames[0])
    np.testing.assert_array_equal(plan.distinct, np.unique(plan.frames))  # the union, once
    assert same(train_plan(SPEC, tables, draws[0]), Planner(SPEC, "train", seed=3)(tables, "x", 1))  # K = 1
    with pytest.raises(ValueError, match="clips per sample must be >= 1"):
        Planner(SPEC, "train", num_clips=0)


@pytest.mark.parametrize("clips", [2, 3])
def test_each_sample_gives_k_clips_decoded_once_and_both_loaders_agree(shards, clips):
    keyframes = cut_tables(shards) if shards.video_ext != JPEG_EXT else None
    runs = {loader: epoch(shards, loader, clips, 2 * clips) for loader in ("dali", "torch")}
    for loader, batches in runs.items():
        assert all(b.video.shape == (2 * clips, 6, 3, 32, 32) for b in batches), loader
        ids = [i for b in batches for i in b.ids]
        assert len(ids) == (N_CLIPS // 2) * 2 * clips and all(ids[j:j + clips] == [ids[j]] * clips
                                                              for j in range(0, len(ids), clips))
        assert all(torch.equal(b.label[::clips].repeat_interleave(clips), b.label) for b in batches)
    by_id = {loader: {b.ids[j]: (b.video[j:j + clips], {k: v[j:j + clips] for k, v in b.info.items()})
                      for b in batches for j in range(0, len(b.ids), clips)} for loader, batches in runs.items()}
    dali, ref = by_id["dali"], by_id["torch"]  # the loaders read in other orders: by sample
    assert dali.keys() == ref.keys() and len(dali) == (N_CLIPS // 2) * 2
    for cid, (video, info) in dali.items():
        for key in info:
            np.testing.assert_array_equal(info[key], ref[cid][1][key], err_msg=key)
        diff = (video.float() - ref[cid][0].float()).abs().mean(dim=(1, 2, 3, 4))
        assert diff.max() <= PARITY, diff
        union = np.unique(info["frames"])
        want = plan_cut(keyframes[cid], union).decoded if keyframes else len(union)
        assert info["glued"][0] == want and not info["glued"][1:].any()  # once per sample
        np.testing.assert_array_equal(info["decoded"][0][:len(union)], union)
        np.testing.assert_allclose(info["window_u"], [draw(3, 0, cid, k).u for k in range(clips)], rtol=1e-6)
        assert len({tuple(c) for c in info["crop"]}) == clips  # each its own crop


def test_the_k_clips_are_the_one_clip_loaders_clips_of_their_draws(shards):
    """Clip 0 of each sample is what the K = 1 loader makes of it (its draws are k = 0's); the other
    clips differ (other windows, crops, flips)."""
    one = {i: v for b in epoch(shards, "dali", 1, 2) for i, v in zip(b.ids, b.video)}
    two = epoch(shards, "dali", 2, 4)
    flips = set()
    for b in two:
        for j in range(0, len(b.ids), 2):
            assert torch.equal(b.video[j], one[b.ids[j]])
            assert not torch.equal(b.video[j + 1], b.video[j])
        flips |= set(b.info["flip"].tolist())
    assert flips == {0, 1}


def test_k_must_divide_the_batch():
    with pytest.raises(ValueError, match="batch size 5 is not a multiple of 2 clips per video"):
        build_loader("/nonexistent", "train", "dali", "train", SPEC, 5, device="cpu", num_clips=2)


@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_a_resumed_epoch_of_k_clips_goes_on_with_the_same_batches(shards, loader):
    whole = [(b.ids, b.video) for b in epoch(shards, loader, 2, 2)]
    first = build_loader(shards, "train", loader, "train", SPEC, 2, device="cpu", workers=2, seed=3, num_clips=2)
    it = iter(first)
    head = [next(it) for _ in range(3)]
    rest = epoch(shards, loader, 2, 2, resume=first.state())
    assert len(head) + len(rest) == len(whole) == N_CLIPS
    for b, (ids, video) in zip(head + rest, whole):
        assert b.ids == ids and torch.equal(b.video, video)


@pytest.mark.parametrize("share", [True, False])
def test_jpeg_frames_two_clips_share_are_decoded_once_on_the_cpu(share):
    """K = 3 clips of 20-frame samples (windows overlap): each clip's distinct frames are graph
    entries with its box and view; a frame a clip before took is a stand-in whose ``source`` is
    the entry that holds it (the CPU resize takes that one's pixels), and the rebuild's index puts
    every clip frame at an entry holding that frame. Without sharing (DALI's resize, a GPU) every
    entry carries its own frame."""
    spec = ClipSpec(frames_per_clip=8, crop_size=32, ratio=1.0, random_stride=True)
    planner = Planner(spec, "train", num_clips=3, seed=1)
    batch, inputs = plan_batch(fake_samples([(20, 1), (25, 2)]), planner, epoch=0, video_ext=JPEG_EXT, serial=0,
                               share=share)
    jpegs, sources = inputs[0], [int(s) for s in inputs[1]]
    frame_of = [None if np.array_equal(j, STAND_IN_FRAME) else int(j[2]) for j in jpegs]  # fake frame k's bytes
    held = [frame_of[s] for s in sources]  # the frame each entry's pixels come from
    assert None not in held
    for s, here in zip(sources, range(len(jpegs))):
        assert (frame_of[here] is None) == (s != here) and (share or s == here)
    for sample, (n, _) in enumerate([(20, 1), (25, 2)]):
        plan = planner(SampleTables(n, 48, 64, jpeg=True), f"c{n}", 0)
        assert batch.ids[3 * sample:3 * sample + 3] == [f"c{n}"] * 3
        np.testing.assert_array_equal(batch.info["frames"][3 * sample:3 * sample + 3], plan.frames)
    entries_per_frame = np.array(held)[batch.index if batch.index is not None else np.arange(len(held))]
    np.testing.assert_array_equal(entries_per_frame, batch.info["frames"].reshape(-1))
    real = [f for f in frame_of if f is not None]
    unions = sum(len(np.unique(planner(SampleTables(n, 48, 64, jpeg=True), f"c{n}", 0).frames)) for n in (20, 25))
    assert len(real) == (unions if share else len(jpegs)) and len(jpegs) > unions  # the windows overlap


def test_the_gpus_graph_makes_the_same_k_clips(shards):
    """The graph a GPU runs (DALI's fn.slice + fn.resize per clip branch; JPEG frames two clips
    share decoded for each, since that resize cannot take another entry's frame), run on DALI's
    CPU backend: the same clips as the CPU's graph within the resize parity."""
    cpu = {(b.ids[j], j % 2): b.video[j] for b in epoch(shards, "dali", 2, 4) for j in range(len(b.ids))}
    gpu_graph = epoch(shards, "dali", 2, 4, dali_resize=True)
    assert sum(len(b.ids) for b in gpu_graph) == len(cpu)
    for b in gpu_graph:
        for j, cid in enumerate(b.ids):
            diff = float((b.video[j].float() - cpu[(cid, j % 2)].float()).abs().mean())
            assert diff <= PARITY, (cid, j, diff)
