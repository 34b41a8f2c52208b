"""Keyframe cuts: the IVF tables of a real VP9 clip, the cut plan (`vidact.clip.cut`), and the
graphs' cut arithmetic held equal to it byte for byte; the glued stream decodes (DALI's CPU
decoder and PyAV) to the very frames asked for, and an index past its end still raises."""

from __future__ import annotations

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
import pytest
from conftest import assert_is_frame, pattern_frame
from nvidia.dali import pipeline_def

from pipelines.clips import union_plan
from pipelines.decoding import Sample, cut_stream
from vidact import ivf
from vidact.clip.cut import keyframe_table, plan_cut
from vidact.video_io import EncodeSettings, decode_cut, encode_frames, iter_frames

N, GOP = 60, 8


@pytest.fixture(scope="module")
def clip() -> bytes:
    """60 pattern frames (frame i shows its index) as VP9 in IVF, a keyframe every 8 frames."""
    frames = [pattern_frame(i, 64, 48) for i in range(N)]
    data, n, w, h = encode_frames(frames, 10, EncodeSettings(codec="vp9", gop=GOP))
    assert (n, w, h) == (N, 64, 48) and data[:4] == ivf.SIGNATURE
    return data


def test_tables_of_a_real_clip(clip):
    t = ivf.tables(clip)
    assert len(t.offsets) == N + 1 and t.offsets[0] == ivf.HEADER_BYTES and t.offsets[-1] == len(clip)
    assert np.all(np.diff(t.offsets) > ivf.FRAME_HEADER_BYTES)
    assert t.keyframes.tolist() == [i // GOP * GOP for i in range(N)]  # libvpx keeps the interval
    with pytest.raises(ivf.IvfError, match="DKIF"):
        ivf.tables(clip[4:])
    with pytest.raises(ivf.IvfError, match="past the end"):
        ivf.tables(clip[:-5])


def test_plan_cut_runs_from_keyframes_and_continues_inside_a_gop():
    keys = keyframe_table(np.arange(40) % 8 == 0)
    cut = plan_cut(keys, [3, 5, 17, 30, 31, 39])
    assert cut.starts.tolist() == [0, 4, 16, 24, 31, 32]  # 5 follows 3 in its GOP: from 4
    assert cut.positions.tolist() == [3, 5, 7, 14, 15, 23] and cut.decoded == 24
    assert plan_cut(keys, [39]).decoded == 8  # a late frame costs its GOP, not the clip
    with pytest.raises(ValueError, match="ascending and distinct"):
        plan_cut(keys, [5, 5])
    with pytest.raises(ValueError, match="keyframe"):
        keyframe_table(np.array([False, True]))


@pytest.mark.parametrize("wanted", [[0], [59], [3, 5, 17, 30, 31, 59], list(range(20, 36)), [7, 8, 9, 47, 48]])
def test_the_cut_decodes_to_the_frames_asked_for(clip, wanted):
    frames, decoded = decode_cut(clip, wanted[::-1] + wanted[:1])  # any order, repeats allowed
    for got, i in zip(frames, wanted[::-1] + wanted[:1]):
        assert_is_frame(got, i, N, f"frame {i}")
    glued = ivf.glue(clip, ivf.tables(clip).offsets, plan_cut(ivf.tables(clip).keyframes, wanted))
    assert sum(1 for _ in iter_frames(glued)) == decoded == plan_cut(ivf.tables(clip).keyframes, wanted).decoded


def _graph_cut(clip: bytes, wants: list[np.ndarray], m: int):
    """`cut_stream` run on a pipeline fed the clip, its tables and each padded `want`."""
    t = ivf.tables(clip)
    data = np.frombuffer(clip, np.uint8)

    def source(info):
        want = wants[info.idx_in_epoch % len(wants)]
        padded = np.concatenate([want, np.full(m - len(want), want[-1])]).astype(np.int32)
        return data, t.offsets, t.keyframes, padded, np.array([len(want)], np.float32)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, exec_dynamic=True)
    def pipe():
        video, offsets, keys, want, count = fn.external_source(
            source=source, num_outputs=5, batch=False,
            dtype=[types.UINT8, types.INT32, types.INT32, types.INT32, types.FLOAT])
        sample = Sample(video, None, None, None, None, offsets, keys)
        stream, positions, total = cut_stream(sample, want, m, count[0])
        return stream, positions, total, fn.decoders.video(stream, device="cpu", frames=positions, pad_mode="none")

    p = pipe()
    p.build()
    return [[np.asarray(o[0]) for o in p.run()] for _ in wants]


def test_the_graph_cut_is_the_plan_byte_for_byte(clip):
    rng = np.random.default_rng(0)
    wants = [np.array([0]), np.array([59]), np.arange(20, 36), np.array([3, 5, 17, 30, 31, 59]),
             *(np.unique(rng.integers(0, N, 16)) for _ in range(6))]
    t = ivf.tables(clip)
    for want, (stream, positions, total, frames) in zip(wants, _graph_cut(clip, wants, 16)):
        cut = plan_cut(t.keyframes, want)
        assert stream.tobytes() == ivf.glue(clip, t.offsets, cut), want
        assert positions.tolist() == cut.positions.tolist() and int(total) == cut.decoded
        assert len(frames) == len(want)
        for got, i in zip(frames, want):
            assert_is_frame(got, int(i), N, f"graph-cut frame {i}")


def test_an_index_past_the_glued_end_still_raises(clip):
    """The glued header claims the runs' frame count: DALI's decoder then refuses an index past
    it (with the source's count it would hand back a black frame)."""
    t = ivf.tables(clip)
    cut = plan_cut(t.keyframes, [40, 41])
    glued = np.frombuffer(ivf.glue(clip, t.offsets, cut), np.uint8)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe(index):
        video = fn.external_source(source=lambda: [glued], batch=True, dtype=types.UINT8)
        return fn.decoders.video(video, device="cpu", frames=types.Constant(np.array([index], np.int32)),
                                 pad_mode="none")

    ok = pipe(cut.decoded - 1)
    ok.build()
    assert_is_frame(np.asarray(ok.run()[0][0])[0], 41, N)
    bad = pipe(cut.decoded)
    bad.build()
    with pytest.raises(RuntimeError):
        bad.run()


def test_the_union_of_clips_is_numpys(clip):
    """`union_plan` sorts and de-duplicates in graph arithmetic: the union of K clips' indices
    and where each clip's frames are in it, as np.unique gives them."""
    rng = np.random.default_rng(1)
    cases = [[np.sort(rng.integers(0, 50, 6)) for _ in range(k)] for k in (1, 2, 3) for _ in range(3)]
    cases.append([np.array([4, 4, 5, 5, 6, 6]), np.array([5, 6, 7, 8, 9, 9])])  # repeats across clips

    for clips in cases:
        want, count, decoded, orders = _graph_union(clips)
        union = np.unique(np.concatenate(clips))
        d, m = len(union), 6 * len(clips)
        assert count == d and want[:d].tolist() == union.tolist() and set(want[d:].tolist()) <= {union[-1]}
        assert decoded.tolist() == union.tolist() + [-1] * (m - d)
        for c, order in zip(clips, orders):
            assert union[order].tolist() == c.tolist()


def _graph_union(clips: list[np.ndarray]):
    """`union_plan` of the K clips' 6 indices each, run in a pipeline."""
    stacked = np.stack(clips).astype(np.int32)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        frames = fn.external_source(source=lambda: [stacked], batch=True, dtype=types.INT32)
        u = union_plan([_Frames(frames[j]) for j in range(len(clips))], 6)
        return (u.want, fn.cast(u.count, dtype=types.INT32), u.decoded, *u.orders)

    p = pipe()
    p.build()
    want, count, decoded, *orders = [np.asarray(o[0]) for o in p.run()]
    return want, int(count), decoded, orders


class _Frames:
    """The one field of a `FramePlan` that `union_plan` reads."""

    def __init__(self, frames):
        self.frames = frames
