"""Named training presets: the three earlier training scripts vidact replaces, and a CPU demo.
Nothing else.

Every field is a command-line flag of `python -m vidact.train` (``--field-name``, or the name
`FLAG_NAMES` gives); a flag given on the command line overrides the recipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


@dataclass(frozen=True)
class Stage:
    """One training stage: its own epochs, learning rates and regularization."""

    epochs: int = 10
    lr: float = 1e-4  # backbone learning rate
    head_lr: float | None = None  # None: same as lr
    warmup: float = 0.0  # share of the stage's optimizer steps spent warming up linearly
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # 0: mixup off
    mixup_prob: float = 1.0


@dataclass(frozen=True)
class Recipe:
    model: str = "videomae"
    preset: str = "base"  # model size (vidact.models.SIZES); the flag is --model-size
    weights: str | None = None
    frames_per_clip: int = 16  # T; the flag is --frames
    crop_size: int = 224  # pixels, square
    batch_size: int = 8  # clips per batch (per process)
    # train clips cut from each video read (their frames decoded once): a batch holds
    # batch_size / clips_per_video videos, and an epoch sees every video clips_per_video times
    clips_per_video: int = 1
    accum: int = 1
    weight_decay: float = 0.05
    clip_grad: float = 1.0
    stages: tuple[Stage, ...] = (Stage(),)
    ratios: tuple[float, ...] = (1.0,)
    window: str = "middle"
    random_stride: bool = False
    flip: float = 0.5  # train-time horizontal flip chance
    train_eval: bool = True  # a deterministic pass over train after each epoch (progressive-ratio protocol)
    early_stop: int = 0  # epochs without val top-1 gain before a stage stops; 0: never
    amp: str = "auto"  # auto: bf16 where supported, else fp16 with a grad scaler; off on CPU
    compile: bool = False
    eval_views: int = 1  # views of the per-epoch validation (1: the center crop)
    seed: int = 0
    workers: int | None = None  # --loader torch: DataLoader processes
    dali_threads: int | None = None  # --loader dali: DALI threads
    # DALI pipelines per process; None: chosen for the machine (vidact.data.tuning), and a resumed
    # run keeps the count its checkpoint was trained with (the count decides the clips' order)
    dali_pipelines: int | None = None
    notes: str = field(default="", compare=False)

    def as_dict(self) -> dict:
        """The recipe as the run's files hold it (recipe.json, checkpoints, tracking): keys are
        the flags' names (`FLAG_NAMES`), the words a user typed."""
        return {FLAG_NAMES.get(k, k): v for k, v in asdict(self).items()}


# Recipe fields whose flag (and key in the run's files) has another name: the command line keeps
# the short words, inside the code one word per quantity.
FLAG_NAMES = {"preset": "model_size", "frames_per_clip": "frames"}


RECIPES: dict[str, Recipe] = {
    # ViViT-B on UCF-101, progressive observation ratios, one run per ratio.
    "vivit-progressive": Recipe(
        model="vivit", preset="base", frames_per_clip=32, crop_size=224, batch_size=2, weight_decay=1e-5,
        stages=(Stage(epochs=30, lr=2e-4),), ratios=(0.1, 0.3, 0.5, 0.7, 0.9), window="middle",
        notes="progressive ratios: ViViT-B, 32 frames, AdamW 2e-4 wd 1e-5, cosine, batch 2, 30 epochs"),
    # VideoMAE-B, mixup stage then a polishing stage; 6-view TTA at evaluation.
    "videomae-2stage": Recipe(
        model="videomae", preset="base", frames_per_clip=16, crop_size=224, batch_size=8, accum=4,
        weight_decay=0.05, random_stride=False, train_eval=False,
        stages=(Stage(epochs=30, lr=5e-5, warmup=0.1, mixup_alpha=0.8, mixup_prob=1.0),
                Stage(epochs=10, lr=1e-6, warmup=0.1, label_smoothing=0.1)),
        notes="two stages: VideoMAE-B 16 frames, 5e-5 then 1e-6, wd 0.05, warmup 10%, mixup 0.8, LS 0.1, accum 4"),
    # Frame-mean baseline: timm ViT-S per frame + temporal mean pooling, differential LR.
    "vit-mean": Recipe(
        model="vit-mean", preset="small", frames_per_clip=16, crop_size=224, batch_size=16, accum=4,
        weight_decay=0.05, train_eval=False, stages=(Stage(epochs=4, lr=1e-4, head_lr=5e-4),),
        notes="frame-mean baseline: vit_small_patch16_224 + mean pooling, backbone 1e-4 / head 5e-4, wd 0.05, accum 4"),
    # Tiny VideoMAE on the synthetic set: about 3 minutes per ratio on a 2-core CPU, val top-1
    # above 0.9 at r=0.9. Prefix windows (early action prediction): the synthetic action starts
    # at 15-25% of a clip, so r=0.1 sees only jitter and accuracy rises with the ratio. 16 frames, not
    # 8: at 8 the hand moved about a patch (16 px) between the two frames of a tubelet and the model
    # stayed near 0.6 (README, "What the demo shows").
    "demo": Recipe(
        model="videomae", preset="tiny", frames_per_clip=16, crop_size=64, batch_size=8, accum=1,
        weight_decay=0.05, stages=(Stage(epochs=10, lr=2e-3, warmup=0.1),), ratios=(0.1, 0.5, 0.9),
        window="prefix",
        # No flips: the synthetic classes come in mirror pairs (move_left/move_right, rotate_cw/ccw).
        flip=0.0, train_eval=False,
        notes="tiny VideoMAE (4 layers of 128), random init, synthetic data, CPU, 16 frames, prefix windows, no flips"),
}

STAGE_FIELDS = tuple(f.name for f in fields(Stage))


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]


def override(recipe: Recipe, **changes) -> Recipe:
    """The recipe with flags applied: Recipe fields directly, Stage fields (epochs, lr, ...) to
    the first stage, or ``stage2_<field>`` to the second."""
    top = {k: v for k, v in changes.items() if k in Recipe.__dataclass_fields__}
    stages = list(recipe.stages)
    for k, v in changes.items():
        if k in STAGE_FIELDS:
            stages[0] = replace(stages[0], **{k: v})
        elif k.startswith("stage2_") and k[7:] in STAGE_FIELDS:
            if len(stages) < 2:
                raise ValueError(f"--{k.replace('_', '-')}: recipe has one stage")
            stages[1] = replace(stages[1], **{k[7:]: v})
        elif k not in top:
            raise ValueError(f"unknown setting {k!r}")
    return replace(recipe, **top, stages=tuple(stages))
