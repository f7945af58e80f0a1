"""Stage two: the emotion controller (docs/design.md).

Two DiT blocks (adaLN-Zero) at the DiT width read the Conformer output of the window and the
condition c = EmoEmbed(e) + T-Proj(t); their output replaces the Exp-MLP's input only. The Pose-MLP
still reads the Conformer output, so an emotion can never change head pose. All gates start at
zero, so at the first step of stage two the model reproduces stage one bit for bit.

Attach with `MotionDiT.attach_emotion_controller`; its parameters are then the ones under the
state-dict prefix `emotion_controller.` (CONTROLLER_PREFIX); everything else is stage one.

Shape legend: B batch · T window frames · D width · E = 8 emotion labels (+ null = 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from models.conformer import Attention, FeedForward, modulate

EMOTIONS = ("neutral", "angry", "disgusted", "contempt", "fear", "happy", "sad", "surprised")
NULL_EMOTION = len(EMOTIONS)  # 8: "no emotion" (CFG), a learned row of the embedding table
CONTROLLER_PREFIX = "emotion_controller."


@dataclass
class EmotionControllerConfig:
    """Configuration of the emotion controller. width/heads left as None take the DiT's values."""

    depth: int = 2  # two DiT blocks (paper Fig. 2 "Emo Controller")
    width: Optional[int] = None  # must equal the DiT width D (it reads and replaces D-wide tokens)
    heads: Optional[int] = None  # attention heads; None = the DiT's
    mlp_ratio: int = 4  # DiT block MLP hidden = 4·D (DiT)
    dropout: float = 0.0  # stage-two data are small (≈30k clips) but the blocks are tiny; off
    train_exp_head: bool = False  # also train the Exp-MLP in stage two (default off: the paper freezes the DiT)
    # Replace the reference frame's expression in f_id by the stage-one null, in training and at
    # inference. Otherwise the reference frame, which shows the clip's emotion, makes the label
    # redundant in training, and at inference the face keeps the reference's emotion.
    drop_reference_expression: bool = True
    p_drop_both: float = 0.1  # per-sample (∅ audio, ∅ emotion) in stage-two training (§8 #13)
    p_drop_emotion: float = 0.1  # per-sample (audio, ∅ emotion) in stage-two training (§8 #13)

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"emotion controller depth must be ≥ 1, got {self.depth}")
        if self.width is not None and self.heads is not None and self.width % self.heads:
            raise ValueError(f"controller width {self.width} must be divisible by heads {self.heads}")
        if min(self.p_drop_both, self.p_drop_emotion) < 0 or self.p_drop_both + self.p_drop_emotion > 1:
            raise ValueError(
                f"need p_drop_both {self.p_drop_both}, p_drop_emotion {self.p_drop_emotion} ≥ 0 with sum ≤ 1"
            )


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (Peebles & Xie): MHSA and MLP, gated by c."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(width, mlp_ratio, dropout)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x (B, T, D), c (B, D) → (B, T, D)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=-1)  # 6 × (B, D)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))  # (B, T, D)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))  # (B, T, D)


class EmotionController(nn.Module):
    """(Conformer output (B, T, D), T-Proj(t) (B, D), emotion (B,)) → Exp-MLP input (B, T, D)."""

    def __init__(self, config: EmotionControllerConfig):
        super().__init__()
        if config.width is None or config.heads is None:
            raise ValueError(
                "EmotionControllerConfig.width/heads are unresolved; use build_emotion_controller"
            )
        self.config = config
        self.width = config.width
        self.emo_embed = nn.Embedding(len(EMOTIONS) + 1, config.width)  # EmoEmbed; row 8 = null
        self.blocks = nn.ModuleList(
            [
                DiTBlock(config.width, config.heads, config.mlp_ratio, config.dropout)
                for _ in range(config.depth)
            ]
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Linear layers: Xavier-uniform, zero bias (DiT); the label table: small normal.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.emo_embed.weight, std=0.02)
        # adaLN-Zero: gates 0 ⇒ each block, hence the controller, is exactly the identity at init.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)

    def forward(self, hidden: Tensor, t_emb: Tensor, emotion: Tensor | None = None) -> Tensor:
        """hidden (B, T, D), t_emb (B, D), emotion (B,) long in [0, 8] or None (all null) → (B, T, D)."""
        b = hidden.shape[0]
        if emotion is None:
            emotion = torch.full((b,), NULL_EMOTION, dtype=torch.long, device=hidden.device)
        if emotion.shape != (b,) or emotion.min() < 0 or emotion.max() > NULL_EMOTION:
            raise ValueError(
                f"emotion must be (B={b},) labels in [0, {NULL_EMOTION}] ({NULL_EMOTION} = null), "
                f"got shape {tuple(emotion.shape)} with values {emotion.unique().tolist()}"
            )
        c = self.emo_embed(emotion.long()) + t_emb  # (B, D)
        for block in self.blocks:
            hidden = block(hidden, c)  # (B, T, D)
        return hidden

    def flops_per_sample(self, frames: int) -> int:
        """Forward FLOPs (2 × MACs incl. attention) for one window of `frames` tokens."""
        n, d = frames, self.width
        per_block = 2 * d * 6 * d + 2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d
        per_block += 2 * 2 * n * d * self.config.mlp_ratio * d
        return len(self.blocks) * per_block


def build_emotion_controller(config: EmotionControllerConfig, dit_config) -> EmotionController:
    """Resolve width/heads from the DiT's config (`MotionDiTConfig`) and build the controller."""
    width = dit_config.width if config.width is None else config.width
    if width != dit_config.width:
        raise ValueError(f"emotion controller width {width} must equal the DiT width {dit_config.width}")
    heads = dit_config.heads if config.heads is None else config.heads
    fields = {**config.__dict__, "width": width, "heads": heads}
    return EmotionController(EmotionControllerConfig(**fields))


# ------------------------------------------------------------------------------------------------
# Stage-two training helpers
# ------------------------------------------------------------------------------------------------


def stage_two_condition_drop(
    emotion: Tensor,
    p_drop_both: float = 0.1,
    p_drop_emotion: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample CFG drops: (∅,∅) with p_drop_both, (a,∅) with p_drop_emotion, else (a,e).

    emotion (B,) long → (audio_drop (B,) bool, emotion (B,) long with dropped entries = NULL_EMOTION).
    Give both to the model (`Drops(audio=audio_drop)` forces exactly these audio drops).
    """
    u = torch.rand(emotion.shape, device=emotion.device, generator=generator)  # (B,)
    audio_drop = u < p_drop_both
    emotion_drop = u < p_drop_both + p_drop_emotion
    return audio_drop, torch.where(emotion_drop, torch.full_like(emotion, NULL_EMOTION), emotion)


def freeze_stage_one(model: nn.Module, train_exp_head: bool = False) -> list[str]:
    """requires_grad=False on every stage-one parameter; returns the names left trainable.

    Trainable: `emotion_controller.*` (and `exp_mlp.*` if train_exp_head). Call before building
    the optimiser / the DeepSpeed engine (ZeRO partitions the parameters it is given at build time),
    and run the frozen trunk in eval mode with `Drops(audio=..., augment=True)` (see `models.dit.Drops`).
    """
    if getattr(model, "emotion_controller", None) is None:
        raise ValueError("freeze_stage_one: attach an emotion controller first (attach_emotion_controller)")
    trainable_prefixes = (CONTROLLER_PREFIX,) + (("exp_mlp.",) if train_exp_head else ())
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(trainable_prefixes))
        if p.requires_grad:
            names.append(name)
    return names
