"""vidact.clip.sampling: the seed-000 window numbers, T indices in a window, random stride,
multi-view order, input checks, and properties over thousands of random cases."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from vidact.clip import sampling
from vidact.clip.sampling import (
    EPS,
    frame_indices,
    indices_in_window,
    start_range,
    strided_indices,
    temporal_view_fractions,
    window,
)


def seconds(w: sampling.Window, fps: float) -> tuple[float, float]:
    """(start, duration) of a window in seconds."""
    return w.start / fps, w.length / fps


def temporal_view_starts(num_frames: int, ratio: float, mode: str, num_clips: int) -> list[float]:
    """Starts (in frames) of the K temporal clips of multi-view evaluation."""
    return [window(num_frames, ratio, mode, u).start for u in temporal_view_fractions(num_clips)]


FPS = 30
N_10_5S = 315  # a 10.5 s clip at 30 fps (seed 000's worked example)


# ----------------------------------------------------------------------------- seed-000 numbers


def test_seed000_eval_start_10_5s_clip_ratio_0_3():
    start, observed = seconds(window(N_10_5S, 0.3), FPS)
    assert start == pytest.approx(3.675)
    assert observed == pytest.approx(3.15)


@pytest.mark.parametrize("fps", [20, 30, 60])
def test_window_in_seconds_does_not_depend_on_fps(fps):
    n = round(10.5 * fps)
    assert seconds(window(n, 0.3), fps)[0] == pytest.approx(3.675)


def test_seed000_train_start_range_ratio_0_3():
    lo, hi = start_range(N_10_5S, 0.3, "middle")
    assert (lo / FPS, hi / FPS) == (pytest.approx(2.1), pytest.approx(5.25))
    assert seconds(window(N_10_5S, 0.3, u=0.0), FPS)[0] == pytest.approx(2.1)
    assert seconds(window(N_10_5S, 0.3, u=0.999999), FPS)[0] == pytest.approx(5.25, abs=1e-4)
    assert window(N_10_5S, 0.3, u=0.5).start == window(N_10_5S, 0.3).start


def test_train_start_is_uniform_over_the_range():
    rng = np.random.default_rng(0)
    starts = np.array([seconds(window(N_10_5S, 0.3, u=u), FPS)[0] for u in rng.random(4000)])
    assert starts.min() >= 2.1 - 1e-9 and starts.max() <= 5.25 + 1e-9
    # uniform on [2.1, 5.25]: mean 3.675, each quarter of the range holds about a quarter
    assert starts.mean() == pytest.approx(3.675, abs=0.05)
    quarters = np.histogram(starts, bins=4, range=(2.1, 5.25))[0] / len(starts)
    assert np.all(np.abs(quarters - 0.25) < 0.03), quarters


@pytest.mark.parametrize("ratio, lo_s, hi_s", [
    (0.1, 2.1, 7.35),   # [0.2 D, 0.8 D - 0.1 D]
    (0.5, 2.1, 3.15),   # still non-empty
    (0.6, 0.0, 4.2),    # 0.8 D - 0.6 D == 0.2 D: empty, fallback [0, D - observed]
    (0.7, 0.0, 3.15),   # fallback
    (0.9, 0.0, 1.05),   # fallback
    (1.0, 0.0, 0.0),    # the whole video
])
def test_start_range_per_ratio(ratio, lo_s, hi_s):
    lo, hi = start_range(N_10_5S, ratio, "middle")
    assert lo / FPS == pytest.approx(lo_s, abs=1e-9)
    assert hi / FPS == pytest.approx(hi_s, abs=1e-9)
    # the eval start is the midpoint of the same range
    assert seconds(window(N_10_5S, ratio), FPS)[0] == pytest.approx((lo_s + hi_s) / 2)


def test_fallback_when_middle_range_is_empty_ratio_0_7():
    d, obs = 10.5, 0.7 * 10.5
    assert seconds(window(N_10_5S, 0.7), FPS)[0] == pytest.approx((d - obs) / 2)
    starts = [seconds(window(N_10_5S, 0.7, u=u), FPS)[0] for u in np.linspace(0, 0.999, 50)]
    assert min(starts) == pytest.approx(0.0)
    assert max(starts) == pytest.approx(d - obs, abs=0.01)
    assert all(s + obs <= d + 1e-9 for s in starts)


@pytest.mark.parametrize("u", [None, 0.0, 0.3, 0.99])
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.9])
def test_prefix_mode_starts_at_zero(ratio, u):
    w = window(N_10_5S, ratio, "prefix", u)
    assert w.start == 0.0 and w.first == 0
    assert w.count == math.ceil(ratio * N_10_5S - EPS)
    assert frame_indices(N_10_5S, 8, ratio, "prefix", u)[0] == 0


@pytest.mark.parametrize("n, t", [(315, 32), (40, 16), (17, 17), (100, 7), (5, 1)])
def test_ratio_one_is_the_whole_video_by_linspace(n, t):
    w = window(n, 1.0)
    assert (w.start, w.first, w.count) == (0.0, 0, n)
    idx = frame_indices(n, t, 1.0)
    expected = np.floor(np.linspace(0, n - 1, t) + EPS).astype(np.int64) if t > 1 else [0]
    np.testing.assert_array_equal(idx, expected)
    if t > 1:
        assert idx[0] == 0 and idx[-1] == n - 1


def test_seed000_window_frames_32_of_ratio_0_3():
    """The frames of the 10.5 s example: window [110.25, 204.75) -> frames 111..204."""
    w = window(N_10_5S, 0.3)
    assert (w.first, w.count) == (111, 94)
    idx = frame_indices(N_10_5S, 32, 0.3)
    assert idx[0] == 111 and idx[-1] == 204
    assert len(idx) == 32 and np.all(np.diff(idx) >= 2)


# ----------------------------------------------------------------------------- T in a window


def test_short_window_repeats_frames_in_sorted_order():
    idx = indices_in_window(10, 3, 8)
    np.testing.assert_array_equal(idx, [10, 10, 10, 10, 11, 11, 11, 12])
    assert set(idx.tolist()) == {10, 11, 12}  # every frame of the window is used


def test_single_frame_window_repeats_it():
    np.testing.assert_array_equal(indices_in_window(7, 1, 5), [7] * 5)
    np.testing.assert_array_equal(frame_indices(1, 4, 0.5), [0, 0, 0, 0])


def test_exact_fit_uses_every_frame_once():
    np.testing.assert_array_equal(indices_in_window(20, 16, 16), np.arange(20, 36))


@pytest.mark.parametrize("count", [8, 15, 22, 29, 36, 100])
def test_random_stride_is_equally_spaced_inside_the_window(count):
    first, t = 50, 8
    strides = set()
    for u_stride in np.linspace(0, 0.999, 17):
        for u_off in (0.0, 0.4, 0.999):
            idx = strided_indices(first, count, t, u_stride, u_off)
            assert len(idx) == t
            assert idx[0] >= first and idx[-1] <= first + count - 1
            steps = set(np.diff(idx).tolist())
            assert len(steps) == 1, idx
            strides.add(steps.pop())
    possible = min(4, (count - 1) // (t - 1))
    assert strides == set(range(1, possible + 1)), (count, strides)


def test_random_stride_offset_reaches_both_window_ends():
    lo = strided_indices(0, 40, 8, 0.99, 0.0)
    hi = strided_indices(0, 40, 8, 0.99, 0.9999)
    assert lo[0] == 0 and lo[1] - lo[0] == 4
    assert hi[-1] == 39


def test_random_stride_falls_back_to_linspace_on_short_windows():
    np.testing.assert_array_equal(strided_indices(5, 3, 8, 0.9, 0.9), indices_in_window(5, 3, 8))


def test_frame_indices_with_stride_stays_in_the_train_window():
    w = window(N_10_5S, 0.3, u=0.42)
    idx = frame_indices(N_10_5S, 16, 0.3, u=0.42, stride_u=(0.99, 0.5))
    assert np.all(np.diff(idx) == 4)
    assert w.first <= idx[0] and idx[-1] < w.first + w.count


# ----------------------------------------------------------------------------- multi-view


def test_temporal_view_starts():
    assert temporal_view_starts(N_10_5S, 0.3, "middle", 1) == [window(N_10_5S, 0.3).start]
    lo, hi = start_range(N_10_5S, 0.3, "middle")
    assert temporal_view_starts(N_10_5S, 0.3, "middle", 2) == pytest.approx(
        [lo + 0.25 * (hi - lo), lo + 0.75 * (hi - lo)])
    for k in (1, 2, 5):
        starts = temporal_view_starts(N_10_5S, 0.5, "middle", k)
        fracs = sampling.temporal_view_fractions(k)
        assert starts == pytest.approx([window(N_10_5S, 0.5, u=u).start for u in fracs])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("ratio", [0, 0.0, 1.5, -1, float("nan"), "0.5", None])
def test_bad_ratio_raises(ratio):
    with pytest.raises(ValueError, match=r"observation ratio must be in \(0, 1\]"):
        window(100, ratio)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_bad_frame_count_raises(n):
    with pytest.raises(ValueError, match="frame count must be a positive integer"):
        window(n, 0.5)


@pytest.mark.parametrize("t", [0, -1])
def test_bad_frames_per_clip_raises(t):
    with pytest.raises(ValueError, match="frames per clip must be a positive integer"):
        frame_indices(100, t, 0.5)


def test_bad_mode_raises():
    with pytest.raises(ValueError, match=r"window mode must be one of .*'foo'"):
        window(100, 0.5, "foo")
    with pytest.raises(ValueError, match="window mode"):
        temporal_view_starts(100, 0.5, "foo", 2)


def test_bad_temporal_clip_count_raises():
    with pytest.raises(ValueError, match="temporal clips"):
        temporal_view_starts(100, 0.5, "middle", 0)


# ----------------------------------------------------------------------------- properties


def _random_cases(count: int, seed: int):
    rng = random.Random(seed)
    for _ in range(count):
        n = rng.choice([rng.randint(1, 12), rng.randint(1, 5000)])
        t = rng.randint(1, 64)
        ratio = rng.choice([1.0, round(rng.uniform(0.05, 1.0), 1), 1.0 - rng.random()])
        mode = rng.choice(sampling.WINDOW_MODES)
        u = rng.choice([None, rng.random(), 0.0])
        stride_u = rng.choice([None, (rng.random(), rng.random())])
        yield n, t, ratio, mode, u, stride_u


def test_properties_over_random_cases():
    for n, t, ratio, mode, u, stride_u in _random_cases(4000, seed=1234):
        case = (n, t, ratio, mode, u, stride_u)
        w = window(n, ratio, mode, u)
        # the window holds the frames whose timestamps lie in [start, start + length)
        assert 0 <= w.first and w.count >= 1 and w.first + w.count <= n, (case, w)
        assert w.start + w.length <= n + 1e-6, (case, w)
        assert abs(w.count - max(1.0, min(w.length, n))) <= 1.0 + 1e-6, (case, w)
        # first frame at or after the start (the last frame when the window holds none)
        assert w.first == min(max(math.ceil(w.start - EPS), 0), n - 1), (case, w)
        idx = frame_indices(n, t, ratio, mode, u, stride_u)
        assert idx.shape == (t,), case
        assert idx.dtype.kind == "i", case
        assert idx.min() >= 0 and idx.max() <= n - 1, (case, idx)
        assert np.all(np.diff(idx) >= 0), (case, idx)
        assert idx[0] >= w.first and idx[-1] < w.first + w.count, (case, w, idx)
        if stride_u is None and t > 1:
            # linspace spans the whole window: its first and last frame are both used
            assert idx[0] == w.first and idx[-1] == w.first + w.count - 1, (case, w, idx)


def test_train_windows_stay_inside_the_allowed_start_range():
    for n, _, ratio, mode, u, _ in _random_cases(2000, seed=99):
        lo, hi = start_range(n, ratio, mode)
        assert 0 <= lo <= hi <= max(0.0, n - ratio * n) + 1e-9
        start = window(n, ratio, mode, u).start
        assert lo - 1e-9 <= start <= hi + 1e-9
        if mode == "middle" and _middle_range_nonempty(ratio):
            assert lo == pytest.approx(0.2 * n)


def _middle_range_nonempty(ratio: float) -> bool:
    return 0.8 - ratio > 0.2 + 1e-9
