"""Write a small, seeded, learnable action-recognition dataset whose classes need motion.

A bright hand (a bar with a red bulb) moves once around the frame left/right/up/down or turns
clockwise/counter-clockwise in the middle of each clip and only jitters at the ends, beside a
drifting distractor disc; clips vary in size, fps and duration.

``render``   the scene: background, the hand's and the distractor's paths, :func:`render_clip`
``plan``     what each clip is: ids, labels and splits, shapes, per-clip generators
``dataset``  :func:`make_dataset`: the layouts (AVI, JPEG folders, unlabeled), tables, marker
``cli``      the command line (``vidact-synthetic``, ``tools/make_synthetic.py``,
             ``python -m vidact.synthetic``)

From Python: ``vidact.synthetic.make_dataset(Path(OUT), layout=..., ...)`` returns the counts
per split.
"""

from __future__ import annotations

from vidact.synthetic.cli import build_parser, main
from vidact.synthetic.dataset import (
    FF_QP2LAMBDA,
    GENERATOR_VERSION,
    GOP_SIZE,
    JPEG_QUALITY,
    MARKER,
    MPEG4_QSCALE,
    make_dataset,
    write_avi,
    write_jpegs,
)
from vidact.synthetic.plan import (
    DURATION_RANGE_S,
    FPS_CHOICES,
    FRAMES_LAYOUT_RANGE,
    LAYOUTS,
    SIZES,
    SPLITS,
    SQUARE_SIZES,
    ClipInfo,
    Shapes,
    _clip_shape,
    class_names,
    clip_rng,
    render_planned,
)
from vidact.synthetic.render import (
    ACTION_END_FRAC,
    ACTION_START_FRAC,
    BULB_COLOR,
    BULB_SCALE,
    CLASS_NAMES,
    REST_REGION,
    _bar_path,
    render_clip,
    sample_action_span,
)

__all__ = [
    "ACTION_END_FRAC", "ACTION_START_FRAC", "BULB_COLOR", "BULB_SCALE", "CLASS_NAMES", "DURATION_RANGE_S",
    "FF_QP2LAMBDA", "FPS_CHOICES", "FRAMES_LAYOUT_RANGE", "GENERATOR_VERSION", "GOP_SIZE", "JPEG_QUALITY",
    "LAYOUTS", "MARKER", "MPEG4_QSCALE", "REST_REGION", "SIZES", "SPLITS", "SQUARE_SIZES", "ClipInfo", "Shapes",
    "_bar_path", "_clip_shape", "build_parser", "class_names", "clip_rng", "main", "make_dataset",
    "render_clip", "render_planned", "sample_action_span", "write_avi", "write_jpegs",
]
