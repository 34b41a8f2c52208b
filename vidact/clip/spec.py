"""The clip spec: what every loader must produce, and the constants both loaders share.

A batch is ``(video, label, ids)``: ``video`` is ``(B, T, C, H, W)`` (``(B, V, T, C, H, W)`` for
multi-view) normalized with the model's mean/std in the requested dtype; ``label`` is int64
``(B,)`` (-1 for unlabeled clips); ``ids`` is a list of B clip ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidact.clip.sampling import WINDOW_MODES, check_positive_int, check_ratio

# Per-model normalization (RGB, on [0, 1] pixels). VideoMAE and the progressive-ratio ViViT use ImageNet
# statistics; timm's augreg ViTs and Google's ViViT checkpoints use 0.5/0.5.
NORMALIZATION = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # torchvision's Kinetics-400 video weights: R(2+1)D, R3D, MC3, S3D; PySlowFast's (MViT's weights)
    "kinetics": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
    "slowfast": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
}

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_name(dtype: torch.dtype | None) -> str:
    """The `DTYPES` name of a torch dtype; ``None`` (no autocast) is fp32."""
    return {v: k for k, v in DTYPES.items()}.get(dtype, "fp32")


# Train-time random resized crop (the VideoMAE recipe's): area scale and aspect ratio ranges, flip chance.
CROP_SCALE = (0.8, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
FLIP_PROB = 0.5


def eval_resize(crop: int) -> int:
    """Short side before the eval center crop: 256 for a 224 crop, scaled alike for others."""
    return round(crop * 256 / 224)


@dataclass(frozen=True)
class ClipSpec:
    """What a loader must produce: frames per clip, crop size, normalization, dtype, and the
    observation window (ratio in (0, 1], mode ``middle``/``prefix``).

    ``norm`` names a `NORMALIZATION` entry; pretrained weights that bring their own statistics
    give them as ``mean``/``std`` (with ``norm="custom"``); otherwise those are filled from the
    table."""

    frames_per_clip: int = 16  # T (the source's frame count N is `num_frames` in the shards)
    crop_size: int = 224  # pixels, square
    norm: str = "imagenet"
    dtype: str = "fp32"
    ratio: float = 1.0
    window: str = "middle"
    random_stride: bool = False
    flip: float = FLIP_PROB  # train-time horizontal flip chance; 0 for direction-sensitive classes
    mean: tuple[float, float, float] | None = None  # RGB on [0, 1] pixels; None: NORMALIZATION[norm]
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        for i, name in enumerate(("mean", "std")):
            value = getattr(self, name)
            if value is None and self.norm in NORMALIZATION:
                value = NORMALIZATION[self.norm][i]
            if value is not None:  # frozen: set through object, as dataclasses do
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def resize_short(self) -> int:
        return eval_resize(self.crop_size)

    @classmethod
    def from_dict(cls, saved: dict) -> ClipSpec:
        """A spec stored in a checkpoint (``spec.__dict__``; `vidact.checkpoint.load` renames an
        old one's keys)."""
        return cls(**saved)

    def check(self) -> ClipSpec:
        check_positive_int(self.frames_per_clip, "frames per clip")
        check_positive_int(self.crop_size, "crop size")
        check_ratio(self.ratio)
        if self.window not in WINDOW_MODES:
            raise ValueError(f"window mode must be one of {WINDOW_MODES}, got {self.window!r}")
        if self.mean is None or self.std is None or len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"normalization must be one of {sorted(NORMALIZATION)} or 3 means and 3 stds, "
                             f"got {self.norm!r} {self.mean} {self.std}")
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {self.flip}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        return self
