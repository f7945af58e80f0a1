"""The experiment schema: the single source of defaults for `playmate train` (stages zero, one and two).

YAML files under configs/ only override these values; `configs.loader.load_config` validates them.
Field metadata `range` / `choices` are checked at load time; `ExperimentConfig.check` holds the
cross-field rules. Units and reasons sit next to each default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from configs.evaluation import METRICS, EvaluationConfig  # noqa: F401  (part of the schema)
from models.audio import AudioEncoderConfig
from models.diffusion import DiffusionConfig
from models.dit import MotionDiTConfig
from models.emotion import EmotionControllerConfig
from models.liveportrait.loading import CHECKPOINT_FILES


@dataclass
class DataConfig:
    """Where the shards are and how training windows are cut from clips."""

    train_shards: list[str] = MISSING  # dataset dirs (with manifest.json), tar globs or brace URLs
    val_shards: list[str] = field(default_factory=list)  # held-out clips: deterministic, non-resampled
    stats: Optional[str] = None  # stats.json; default: the one in the first train dataset dir
    batch_size: int = field(default=64, metadata={"range": (1, None)})  # GLOBAL windows per step
    num_workers: int = field(default=4, metadata={"range": (0, 256)})  # per rank
    shuffle_buffer: int = field(default=256, metadata={"range": (0, None)})  # samples (compressed)
    epoch_windows: int = field(default=20_000, metadata={"range": (1, None)})  # windows per epoch, all ranks
    windows_per_clip: int = field(default=1, metadata={"range": (1, 64)})  # windows cut per decoded clip
    audio_source: str = field(default="wav", metadata={"choices": ("wav", "precomputed")})
    # Bad samples over the whole run on a rank: once min_bad_samples are bad and more than this
    # fraction of all samples read, training stops naming the worst shards.
    max_bad_fraction: float = field(default=0.01, metadata={"range": (0.0, 1.0)})
    # A data worker that delivers no batch for this long is an error (a hung read), not a hang.
    loader_timeout_s: float = field(default=600.0, metadata={"range": (1.0, None)})
    min_bad_samples: int = field(default=20, metadata={"range": (1, None)})  # before the fraction is judged
    val_max_clips: int = field(default=64, metadata={"range": (1, None)})
    val_batch_size: int = field(default=16, metadata={"range": (1, None)})  # per rank


@dataclass
class OptimConfig:
    """AdamW (docs/design.md: the paper states only "Adam") with linear warm-up, then cosine decay (or constant)."""

    lr: float = field(default=1e-4, metadata={"range": (0.0, 1.0)})
    # After warm-up: "cosine" from lr to min_lr_ratio·lr at trainer.max_steps, or "constant".
    # Measured (tiny, 1,500 CPU steps, held-out lip sync at w_a = 1.5): r 0.90 cosine vs 0.67 constant.
    decay: str = field(default="cosine", metadata={"choices": ("constant", "cosine")})
    min_lr_ratio: float = field(default=0.1, metadata={"range": (0.0, 1.0)})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # (β1, β2), each in [0, 1)
    weight_decay: float = field(default=0.01, metadata={"range": (0.0, None)})
    warmup_steps: int = field(default=1000, metadata={"range": (0, None)})
    grad_clip: float = field(default=1.0, metadata={"range": (0.0, None)})  # 0 disables
    # torch's fused AdamW kernel: one launch for all parameters, and it skips a step with non-finite
    # gradients on the device (found_inf) without a host sync; false: torch's default implementation.
    fused: bool = True
    ema_decay: float = field(default=0.999, metadata={"range": (0.0, 1.0)})  # fp32 EMA of trainable weights
    ema_every: int = field(default=1, metadata={"range": (1, None)})  # steps between EMA updates
    # A step with a non-finite loss or gradient is skipped; this many in a row stop training.
    max_bad_steps: int = field(default=3, metadata={"range": (1, None)})

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas {list(self.betas)} must be two numbers in [0, 1), e.g. [0.9, 0.999]")


@dataclass
class TrainerConfig:
    """Lightning Trainer settings; `configs/trainer/*.yaml` holds the strategy groups."""

    accelerator: str = field(default="auto", metadata={"choices": ("auto", "cpu", "gpu")})
    devices: int = field(default=1, metadata={"range": (1, None)})  # per node (== SLURM ntasks-per-node)
    num_nodes: int = field(default=1, metadata={"range": (1, None)})
    strategy: str = field(
        default="auto", metadata={"choices": ("auto", "ddp", "deepspeed_stage_2", "deepspeed_stage_3")}
    )
    precision: str = field(default="32-true", metadata={"choices": ("32-true", "bf16-mixed", "16-mixed")})
    max_steps: int = field(default=100_000, metadata={"range": (1, None)})
    val_every_n_steps: int = field(default=2000, metadata={"range": (0, None)})  # 0 = never
    log_every_n_steps: int = field(default=50, metadata={"range": (1, None)})
    ckpt_every_n_steps: int = field(default=1000, metadata={"range": (1, None)})
    keep_last_checkpoints: int = field(default=3, metadata={"range": (1, None)})
    limit_val_batches: int = field(default=8, metadata={"range": (0, None)})
    accumulate_grad_batches: int = field(default=1, metadata={"range": (1, None)})
    # DeepSpeed reduce/allgather bucket in elements: a number ≥ 1e6, or "auto" = a quarter of the trainable
    # parameters clamped to [5e6, 5e8], so gradient reduction overlaps backward (pl_modules/strategy.py).
    deepspeed_bucket_size: str = "auto"
    # torch.compile every Conformer block (nn.Module.compile: parameter names, hence checkpoints, unchanged).
    # Off by default: compile time and speed-up not measured on a GPU yet.
    compile: bool = False
    deterministic: bool = False


def parse_bucket_size(value: str | float) -> float | None:
    """`trainer.deepspeed_bucket_size` → elements, or None for "auto" (sized from the model)."""
    if str(value).strip().lower() == "auto":
        return None
    try:
        size = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither 'auto' nor a number of elements (e.g. 2e7)") from None
    if size < 1e6:
        raise ValueError(f"{value} elements is below 1e6; use 'auto' or a number ≥ 1e6") from None
    return size


@dataclass
class LoggerConfig:
    """Weights & Biases; offline automatically when no API key is configured."""

    name: str = field(default="wandb", metadata={"choices": ("wandb", "none")})
    project: str = "playmate"
    entity: Optional[str] = None
    mode: str = field(default="auto", metadata={"choices": ("auto", "online", "offline", "disabled")})
    tags: list[str] = field(default_factory=list)
    log_media: bool = True  # plots (and videos when rendering) at validation


@dataclass
class Stage2Config:
    """Stage two: emotion controller on the frozen stage-one DiT (docs/design.md).

    The controller, its condition dropout (emotion.p_drop_both, emotion.p_drop_emotion) and the
    Exp-MLP flag (emotion.train_exp_head) are configured in the `emotion` section.
    """

    init_from: Optional[str] = None  # stage-one Lightning ckpt, DeepSpeed dir, or `playmate export` dir


@dataclass
class Stage0Config:
    """Stage zero: the motion-decoupling fine-tune of the face model (docs/stage-zero.md).

    The data section reads frame pairs from the shards' mp4 members: data.batch_size and
    data.epoch_windows count pairs. Loss weights and their sources: docs/stage-zero.md.
    """

    face_model_dir: Optional[str] = None  # public LivePortrait weights (base_models/): the start, loaded strictly
    face_model_preset: str = field(default="full", metadata={"choices": ("full", "tiny")})  # tiny: tests only
    # Face-model modules that train (FaceModel attribute names); the others stay bit-identical.
    trainable: list[str] = field(default_factory=lambda: ["motion_extractor"])
    vgg_weights: Optional[str] = None  # torchvision's ImageNet VGG19 file (vgg19-dcbb9e9d.pth)
    vgg_width: float = field(default=1.0, metadata={"range": (0.01, 1.0)})  # < 1: generated test weights only
    # Side of the crops F and M see (area-resized from the 256² frames); 256 is the release's. The face model is
    # fully convolutional, so a multiple of 32 works: smaller sides only make CPU tests 4× cheaper per halving.
    image_size: int = field(default=256, metadata={"range": (64, 256)})
    pairs_per_clip: int = field(default=4, metadata={"range": (1, 1024)})  # (i, j) pairs per decoded clip
    val_pairs_per_clip: int = field(default=2, metadata={"range": (1, 1024)})  # fixed by crc32(clip key)
    w_cross: float = field(default=1.0, metadata={"range": (0.0, None)})  # L_p (the paper's loss)
    w_rec_l1: float = field(default=10.0, metadata={"range": (0.0, None)})  # L1(Î^rec_j, I_j)
    w_rec_perc: float = field(default=1.0, metadata={"range": (0.0, None)})  # pyramid VGG(Î^rec_j, I_j)
    w_equivariance: float = field(default=10.0, metadata={"range": (0.0, None)})  # FOMM equivariance
    w_deformation: float = field(default=1.0, metadata={"range": (0.0, None)})  # small-δ prior mean|δ|
    w_pose_anchor: float = field(default=0.1, metadata={"range": (0.0, None)})  # |angles − public M's| (°)
    equivariance_sigma: float = field(default=0.05, metadata={"range": (0.0, 0.5)})  # random affine std
    perceptual_scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.125])  # each 1/n
    perceptual_layer_weights: list[float] = field(default_factory=lambda: [10.0] * 5)  # relu1_1 … relu5_1
    log_pairs: int = field(default=4, metadata={"range": (0, 64)})  # pairs in the W&B image per validation

    def __post_init__(self) -> None:
        unknown = [n for n in self.trainable if n not in CHECKPOINT_FILES]
        if unknown or not self.trainable:
            raise ValueError(f"trainable {unknown or '[]'} is not a non-empty list of face-model modules; "
                             f"choose from {list(CHECKPOINT_FILES)}")
        bad = [s for s in self.perceptual_scales if not 0 < s <= 1 or abs(round(1 / s) * s - 1) > 1e-6]
        if bad or not self.perceptual_scales:
            raise ValueError(f"perceptual_scales {bad or '[]'}: every scale must be 1/n for an integer n ≥ 1")
        if self.image_size % 32:
            raise ValueError(f"image_size {self.image_size} must be a multiple of 32 (W's hourglass halves it 5 times)")
        if len(self.perceptual_layer_weights) != 5:
            raise ValueError(f"perceptual_layer_weights has {len(self.perceptual_layer_weights)} values; "
                             "give 5 (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1)")


@dataclass
class ExperimentConfig:
    """Everything `playmate train` needs; stage one and stage two differ only by values."""

    name: str = MISSING  # experiment name: the run directory is runs/<name> unless run_dir is set
    stage: str = field(default="stage1", metadata={"choices": ("stage0", "stage1", "stage2")})
    run_dir: str = "runs/${name}"  # stable across requeues (never a timestamp)
    seed: int = 0
    # MISSING on purpose: the preset's sizes fill depth/width/heads only when the section is built
    # from the YAML (every experiment selects a model group, e.g. `defaults: {model: B}`).
    model: MotionDiTConfig = MISSING
    emotion: EmotionControllerConfig = field(default_factory=EmotionControllerConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    # Keys (fnmatch patterns) allowed to differ from the run directory's stored config on resume,
    # beyond the operational ones that always may (pl_modules/run_identity.py), e.g. [optim.lr].
    allow_changes: list[str] = field(default_factory=list)
    stage0: Stage0Config = field(default_factory=Stage0Config)
    eval: EvaluationConfig = field(default_factory=EvaluationConfig)

    def check(self) -> list[tuple[str, str]]:
        """Cross-field rules, as (key, message-with-fix) pairs."""
        errors = []
        t = self.trainer
        world = t.devices * t.num_nodes
        if self.data.batch_size % (world * t.accumulate_grad_batches):
            errors.append((
                "data.batch_size",
                f"global batch {self.data.batch_size} is not divisible by devices×num_nodes×accumulate = "
                f"{t.devices}×{t.num_nodes}×{t.accumulate_grad_batches}; use a multiple of "
                f"{world * t.accumulate_grad_batches}",
            ))
        try:
            parse_bucket_size(t.deepspeed_bucket_size)
        except ValueError as e:
            errors.append(("trainer.deepspeed_bucket_size", str(e)))
        if t.strategy.startswith("deepspeed") and t.accelerator == "cpu":
            errors.append(("trainer.strategy", f"{t.strategy} needs CUDA GPUs; use trainer=ddp or trainer=cpu on CPU"))
        if t.precision != "32-true" and t.accelerator == "cpu" and t.precision != "bf16-mixed":
            errors.append(("trainer.precision", f"{t.precision} needs a GPU; use 32-true or bf16-mixed on CPU"))
        if self.stage == "stage2" and not self.stage2.init_from:
            errors.append(("stage2.init_from",
                           "stage two starts from a stage-one checkpoint; set stage2.init_from=PATH"))
        if self.optim.warmup_steps > t.max_steps:
            errors.append(("optim.warmup_steps", f"{self.optim.warmup_steps} warm-up steps exceed trainer.max_steps "
                           f"{t.max_steps}: the learning rate would never reach optim.lr; lower it"))
        if self.eval.every_n_steps and not self.data.val_shards:
            errors.append(("eval.every_n_steps", "evaluation during training needs held-out clips: set "
                           "data.val_shards, or eval.every_n_steps=0"))
        if self.stage == "stage0":
            errors += self.stage0_errors()
        return errors

    def stage0_errors(self) -> list[tuple[str, str]]:
        errors = []
        for key in ("face_model_dir", "vgg_weights"):
            if not getattr(self.stage0, key):
                errors.append((f"stage0.{key}", f"stage zero needs it; set stage0.{key}=PATH (docs/stage-zero.md)"))
        if self.eval.every_n_steps:
            errors.append(("eval.every_n_steps", "evaluation generates motion (stages one and two); set it to 0"))
        return errors
