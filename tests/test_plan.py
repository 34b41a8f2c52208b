"""A sample's plan (`vidact.clip.plan`): train draws as a function of (seed, epoch, clip), the
frames, cut, box and views of train, eval and multi-view plans, and the view order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidact.clip.cut import keyframe_table, plan_cut
from vidact.clip.geometry import random_crop_box, resize_shorter_size, whole_box
from vidact.clip.plan import Planner, SampleTables, clip_views, draw, eval_plan, train_plan
from vidact.clip.sampling import frame_indices, temporal_view_fractions
from vidact.clip.spec import ClipSpec

KEYS = keyframe_table(np.arange(90) % 4 == 0)


def test_draws_are_a_function_of_seed_epoch_and_clip():
    d = draw(0, 0, "clip_a")
    assert d == draw(0, 0, "clip_a")
    others = [draw(1, 0, "clip_a"), draw(0, 1, "clip_a"), draw(0, 0, "clip_b"), draw(0, 0, "clip_a", 1)]
    assert all(o != d for o in others) and len({o.u for o in others}) == 4
    values = np.array([[x.u, *x.stride, *x.crop, x.flip] for x in (draw(0, 0, f"c{i}") for i in range(2000))])
    assert values.min() >= 0 and values.max() < 1
    # Uniform in every coordinate: each decile holds about a tenth of 2,000 draws.
    for column in values.T:
        counts = np.histogram(column, bins=10, range=(0, 1))[0]
        assert counts.min() > 150 and counts.max() < 250


def test_train_plan_is_the_sampling_and_geometry_functions():
    spec = ClipSpec(frames_per_clip=8, crop_size=112, ratio=0.5, random_stride=True, flip=0.5)
    tables = SampleTables(90, 240, 320, KEYS)
    for i in range(20):
        d = draw(3, 2, f"clip{i}")
        plan = train_plan(spec, tables, d)
        want = frame_indices(90, 8, 0.5, "middle", d.u, d.stride)
        np.testing.assert_array_equal(plan.frames, [want])
        np.testing.assert_array_equal(plan.distinct[plan.order], plan.frames)
        assert np.all(np.diff(plan.distinct) > 0)
        cut = plan_cut(KEYS, plan.distinct)
        np.testing.assert_array_equal(plan.positions, cut.positions)
        assert plan.decoded == cut.decoded
        box = random_crop_box(240, 320, *d.crop)
        assert plan.crop == pytest.approx(box) and plan.box == whole_box(240, 320, box)
        assert plan.size == (112, 112) and plan.views == ((0.5, 0.5, d.flip < 0.5),)


def test_a_short_window_repeats_frames_but_decodes_each_once():
    plan = train_plan(ClipSpec(frames_per_clip=16, ratio=0.1), SampleTables(40, 64, 64, jpeg=True), draw(0, 0, "x"))
    assert len(plan.distinct) == 4 and plan.decoded == 4 and plan.cut is None
    np.testing.assert_array_equal(plan.distinct[plan.order[0]], plan.frames[0])
    assert np.all(np.diff(plan.order[0]) >= 0)


def test_a_clip_stored_without_cut_tables_is_decoded_from_frame_0():
    plan = eval_plan(ClipSpec(frames_per_clip=4, ratio=0.5), SampleTables(40, 64, 64))
    assert plan.cut is None and plan.decoded == plan.distinct[-1] + 1
    np.testing.assert_array_equal(plan.positions, plan.distinct)


def test_eval_plan_resizes_the_whole_frame_and_crops_its_center():
    spec = ClipSpec(frames_per_clip=8, crop_size=224)
    plan = eval_plan(spec, SampleTables(50, 240, 320, KEYS))
    np.testing.assert_array_equal(plan.frames[0], frame_indices(50, 8))
    assert plan.box == (0, 0, 240, 320) and plan.size == resize_shorter_size(240, 320, 256) == (256, 341)
    assert plan.views == ((0.5, 0.5, False),)


@pytest.mark.parametrize("h,w,sides", [(240, 320, [(0.5, 0.0), (0.5, 1.0)]), (320, 240, [(0.0, 0.5), (1.0, 0.5)]),
                                       (224, 224, [(0.5, 0.0), (0.5, 1.0)])])
def test_multiview_crops_are_center_then_sides_then_flipped(h, w, sides):
    plan = eval_plan(ClipSpec(frames_per_clip=4), SampleTables(50, h, w), 1, 3, True)
    anchors = [(0.5, 0.5), *sides]
    assert list(plan.views) == [(y, x, f) for f in (False, True) for y, x in anchors]


@pytest.mark.parametrize("clips, crops, flip, views", [(1, 3, True, 6), (2, 3, False, 6), (5, 3, False, 15),
                                                       (2, 1, True, 4)])
def test_multiview_temporal_clips_are_decoded_as_one_union(clips, crops, flip, views):
    spec = ClipSpec(frames_per_clip=8, ratio=0.5)
    planner = Planner(spec, "multiview", clips, crops, flip)
    plan = planner(SampleTables(90, 240, 320, KEYS), "x")
    assert plan.clips * len(plan.views) == views == clips * planner.spatial
    for k, u in enumerate(temporal_view_fractions(clips)):
        np.testing.assert_array_equal(plan.frames[k], frame_indices(90, 8, 0.5, "middle", u))
    np.testing.assert_array_equal(plan.distinct, np.unique(plan.frames))
    np.testing.assert_array_equal(plan.distinct[plan.order], plan.frames)
    assert plan.decoded == plan_cut(KEYS, plan.distinct).decoded


def test_clip_views_puts_each_clips_views_first():
    """Pixels as the graphs give them, (B, K*T, S, ...), value = 100 k + 10 s + t, come out as
    (B, K*S, T, ...) in the plan's view order: clip 0's views, then clip 1's."""
    k, t, s = 2, 3, 4
    x = torch.tensor([[[100 * (i // t) + 10 * j + i % t for j in range(s)] for i in range(k * t)]], dtype=torch.float32)
    out = clip_views(x[..., None, None, None].expand(1, k * t, s, 3, 2, 2), k, s)
    assert out.shape == (1, k * s, t, 3, 2, 2)
    assert out[0, :, :, 0, 0, 0].tolist() == [[100 * (v // s) + 10 * (v % s) + i for i in range(t)]
                                              for v in range(k * s)]


def test_bad_planner_input_is_refused():
    with pytest.raises(ValueError, match="mode"):
        Planner(ClipSpec(), "test")
    with pytest.raises(ValueError, match="num_crops"):
        eval_plan(ClipSpec(), SampleTables(10, 64, 64), 1, 2)
