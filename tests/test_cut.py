"""Keyframe cuts: the IVF tables of a real VP9 clip, the cut plan (`vidact.clip.cut`); the glued
stream (`vidact.ivf.glue`) decodes (DALI's CPU decoder and PyAV) to the very frames asked for, and
an index past its end still raises."""

from __future__ import annotations

import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
import pytest
from conftest import assert_is_frame, pattern_frame
from nvidia.dali import pipeline_def

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


def test_dalis_decoder_gives_the_frames_of_a_glued_cut(clip):
    """DALI's CPU decoder, fed glued cuts and the positions of the wanted frames in them (as the
    loader's feed hands them over), returns exactly the wanted frames."""
    rng = np.random.default_rng(0)
    wants = [np.array([0]), np.array([59]), np.arange(20, 36), np.array([3, 5, 17, 30, 31, 59]),
             *(np.unique(rng.integers(0, N, 16)) for _ in range(6))]
    t = ivf.tables(clip)
    cuts = [plan_cut(t.keyframes, want) for want in wants]

    @pipeline_def(batch_size=len(wants), num_threads=1, device_id=None, exec_dynamic=True)
    def pipe():
        stream, positions = fn.external_source(
            source=lambda: ([ivf.glue(clip, t.offsets, c) for c in cuts], [c.positions.astype(np.int32) for c in cuts]),
            num_outputs=2, batch=True)
        return fn.decoders.video(stream, device="cpu", frames=positions, pad_mode="none")

    p = pipe()
    p.build()
    for want, frames in zip(wants, p.run()[0]):
        frames = np.asarray(frames)
        assert len(frames) == len(want)
        for got, i in zip(frames, want):
            assert_is_frame(got, int(i), N, f"frame {i} of a glued cut")


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
