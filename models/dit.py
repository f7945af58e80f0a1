"""MotionDiT: the stage-one audio-driven motion diffusion transformer (docs/design.md).

    audio feats ─► AudioAligner ─► (null if dropped) ─► A-Proj ─┐
    [context | x_t] ─► M-Proj (context: noised, or start token) ─┴─ + pos ─► Conformer × depth ─►
        final adaLN norm ─► window tokens z ─┬─► Pose-MLP ─────────────────────────► ε̂ pose (7)
                                             └─► [EmotionController] ─► Exp-MLP ──► ε̂ exp (63)
    c = T-Proj(t) + ID-Proj(f_id) modulates every Conformer block and the final norm (adaLN-Zero).

The network predicts ε for the T window frames only; the Tp context frames are clean (noise
augmented) previous motion. The diffusion process itself lives in `models.diffusion`.

Shape legend: B batch · T window frames · Tp context frames · S = Tp + T · M = 70 motion dims
(exp 63 · pose 7) · L encoder layers · C encoder channels · D width · I = 133 identity dims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from models.aligner import AudioAligner
from models.conformer import ConformerBlock, TimestepEmbedder, modulate, sinusoidal_embedding
from models.motion import EXP, EXP_DIM, MOTION_DIM, NUM_KP, POSE, POSE_DIM, MotionStats, normalize_motion

KP_DIM = NUM_KP * 3  # 63: canonical keypoints x_c, flattened
ID_DIM = KP_DIM + MOTION_DIM  # 133: x_c (63) + reference motion (70)
REF_EXP = slice(KP_DIM + EXP.start, KP_DIM + EXP.stop)  # the reference frame's expression inside f_id


@dataclass
class MotionDiTConfig:
    """Configuration of MotionDiT. depth/width/heads left as None take the preset's values."""

    preset: str = "B"  # one of PRESETS: tiny (tests, demo) · S · B (default) · L
    depth: Optional[int] = None  # Conformer blocks
    width: Optional[int] = None  # D; must be divisible by heads and even (D/2 head hidden layer)
    heads: Optional[int] = None  # attention heads (head width 64 for S/B/L)
    conv_kernel: int = 15  # depthwise conv over 15 frames = 0.6 s at 25 fps
    ffn_mult: int = 4  # FFN hidden = 4·D, the Conformer/Transformer standard
    dropout: float = 0.1  # Conformer/DiT default
    tp: int = 25  # context frames of previous motion (JoyVASA n_prev_motions=25)
    t_window: int = 100  # generated frames per window: 4 s at 25 fps (JoyVASA n_motions=100)
    audio_layers: int = 12  # L of the encoder features: 12 for wav2vec2-base, 1 for mel
    audio_dim: int = 768  # C of the encoder features: 768 for wav2vec2-base, n_mels for mel
    audio_window: int = 2  # ±2 frames stacked per motion frame (Playmate2/Hallo convention)
    aligner_layers: int = 2  # trainable self-attention layers of the aligner (Fig. 2 "Self Attn")
    audio_dropout_prob: float = 0.1  # CFG: audio → learned null embedding in training
    start_token_prob: float = 0.1  # context → learned start token in training (how window 1 is made)
    # Reference expression → learned null in training. The reference frame of an emotional clip
    # shows that emotion; a stage-two model drops it always, so the label alone sets the emotion.
    ref_exp_drop_prob: float = 0.5
    context_noise_max: float = 0.1  # training context noise σ ~ U[0, max] in normalised units (§8 #6)
    context_noise_eval: float = 0.0  # fixed context noise σ outside training (0: use the context as is)
    freq_dim: int = 256  # sinusoidal features of the timestep before T-Proj's MLP (DiT)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"model preset {self.preset!r} is not one of {sorted(PRESETS)}")
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.width % self.heads or self.width % 2:
            raise ValueError(f"width {self.width} must be even and divisible by heads {self.heads}")
        if self.conv_kernel % 2 == 0 or self.conv_kernel < 1:
            raise ValueError(f"conv_kernel {self.conv_kernel} must be a positive odd number")
        for name in ("depth", "tp", "t_window", "audio_layers", "audio_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("dropout", "audio_dropout_prob", "start_token_prob", "ref_exp_drop_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.context_noise_max < 0 or self.context_noise_eval < 0:
            raise ValueError(
                f"context noise must be ≥ 0, got max {self.context_noise_max}, eval {self.context_noise_eval}"
            )


class TrunkOutput(NamedTuple):
    """What the heads (and a stage-two emotion controller) read from the trunk."""

    hidden: Tensor  # (B, T, D) Conformer output of the window frames, after the final adaLN norm
    t_emb: Tensor  # (B, D) T-Proj(t), the timestep embedding the emotion controller also uses


@dataclass
class Condition:
    """Everything the ε-predictor is conditioned on besides x_t and t, batched along B."""

    audio: Tensor  # (B, Tp + T, L, C) encoder features of context + window, or (B, T, L, C) if context is None
    id_feat: Tensor  # (B, 133) from `make_id_feat`
    context: Tensor | None = None  # (B, Tp, 70) clean normalised previous frames; None ⇒ start token
    emotion: Tensor | None = None  # (B,) long in [0, 8] (8 = null); only with an emotion controller
    # (B, Tp + T, D) the aligner's output for `audio` (before the CFG null replaces it), computed once
    # by `MotionDiT.with_aligned_audio`: its input never changes while a window is sampled. None ⇒ the
    # forward runs the aligner. Valid only without augmentation (training draws start tokens per step).
    aligned_audio: Tensor | None = None

    def repeat(self, k: int) -> Condition:
        """k copies stacked along the batch axis (the passes of classifier-free guidance): (B, …) → (k·B, …)."""
        cat = (lambda v: None if v is None else torch.cat([v] * k))  # noqa: E731
        return Condition(cat(self.audio), cat(self.id_feat), cat(self.context), cat(self.emotion),
                         cat(self.aligned_audio))


@dataclass
class Drops:
    """Per-sample condition drops and training-time augmentation (in the spirit of DiT's force_drop_ids).

    A mask (B,) bool forces the drop where True. Left None, a drop is drawn at random with the
    config's probability when augmenting, else nothing is dropped; a forced `context` mask is
    OR-ed with the random start-token draw. A stage-two model always drops the reference
    expression unless `ref_exp` says otherwise.
    """

    audio: Tensor | None = None  # True ⇒ f_a → the learned null audio (CFG)
    context: Tensor | None = None  # True ⇒ the context → the learned start token (e.g. clips cut at frame 0)
    ref_exp: Tensor | None = None  # True ⇒ the reference expression in f_id → the learned null
    augment: bool | None = None  # random drops and context noise; None ⇒ the module's training mode


def make_id_feat(kp_canonical: Tensor, ref_motion: Tensor) -> Tensor:
    """f_id = [x_c (21, 3) flattened | normalised reference motion (70)]: (B, 21, 3), (B, 70) → (B, 133)."""
    kp = rearrange(kp_canonical, "b k c -> b (k c)")  # (B, 63)
    return torch.cat([kp, ref_motion], dim=-1)  # (B, 133)


def reference_id_feat(kp_canonical: Tensor, ref_motion: Tensor, stats: MotionStats) -> Tensor:
    """f_id from a raw reference frame: (B, 21, 3), raw (B, 70) → (B, 133).

    The reference pose is normalised by itself (→ 0), as in training windows and at inference,
    where the reference frame's pose is the pose mean (docs/design.md).
    """
    ref = normalize_motion(ref_motion, stats, ref_motion[..., POSE])  # (B, 70)
    return make_id_feat(kp_canonical, ref)  # (B, 133)


def mlp_head(width: int, out_dim: int) -> nn.Sequential:
    """Pose-MLP / Exp-MLP: D → D/2 → out."""
    return nn.Sequential(nn.Linear(width, width // 2), nn.SiLU(), nn.Linear(width // 2, out_dim))


class MotionDiT(nn.Module):
    """Audio-, identity- and context-conditioned ε-predictor over windows of 70-d motion."""

    def __init__(self, config: MotionDiTConfig):
        super().__init__()
        self.config = c = config
        d = c.width
        self.audio_aligner = AudioAligner(
            c.audio_layers, c.audio_dim, d, c.heads, c.aligner_layers, c.audio_window, c.dropout
        )
        self.null_audio = nn.Parameter(torch.zeros(d))  # learned "no audio" f_a (CFG)
        self.null_ref_exp = nn.Parameter(torch.zeros(EXP_DIM))  # learned "no reference expression"
        self.a_proj = nn.Linear(d, d)  # A-Proj
        self.m_proj = nn.Linear(MOTION_DIM, d)  # M-Proj
        self.t_proj = TimestepEmbedder(d, c.freq_dim)  # T-Proj
        self.id_proj = nn.Linear(ID_DIM, d)  # ID-Proj
        self.start_motion = nn.Parameter(torch.zeros(c.tp, d))  # replaces M-Proj(context)
        self.start_audio = nn.Parameter(torch.zeros(c.tp, d))  # replaces A-Proj(f_a) of the context
        self.blocks = nn.ModuleList(
            [ConformerBlock(d, c.heads, c.conv_kernel, c.dropout, c.ffn_mult) for _ in range(c.depth)]
        )
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.pose_mlp = mlp_head(d, POSE_DIM)  # Pose-MLP, always reads the trunk output
        self.exp_mlp = mlp_head(d, EXP_DIM)  # Exp-MLP, reads the emotion controller's output if any
        self.register_module("emotion_controller", None)  # stage two: `attach_emotion_controller`
        self.initialize_weights()

    def initialize_weights(self) -> None:
        # Linear layers: Xavier-uniform weights, zero biases (DiT).
        def _basic(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(_basic)
        # Learned tokens and the timestep MLP: small normal, as DiT's embedding tables.
        for p in (self.null_audio, self.start_motion, self.start_audio):
            nn.init.normal_(p, std=0.02)
        for layer in (self.t_proj.mlp[0], self.t_proj.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        # adaLN-Zero: modulation layers output 0 ⇒ all gates 0 ⇒ every block is the identity.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_modulation[-1].weight)
        nn.init.zeros_(self.final_modulation[-1].bias)
        # Output layers of both heads are zero ⇒ ε̂ ≡ 0 at init (a test asserts it).
        for head in (self.pose_mlp, self.exp_mlp):
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    # --------------------------------------------------------------------------------------------
    # Stage two
    # --------------------------------------------------------------------------------------------

    def attach_emotion_controller(self, controller: nn.Module) -> None:
        """Insert the controller between the trunk and the Exp-MLP (state-dict prefix `emotion_controller.`)."""
        if getattr(controller, "width", self.config.width) != self.config.width:
            raise ValueError(f"controller width {controller.width} ≠ DiT width {self.config.width}")
        self.emotion_controller = controller

    # --------------------------------------------------------------------------------------------
    # Forward
    # --------------------------------------------------------------------------------------------

    def _masks(
        self, b: int, device: torch.device, has_context: bool, drops: Drops, augment: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample (B,) bool masks: audio → null; context → start token; reference expression → null."""
        c, no = self.config, torch.zeros(b, dtype=torch.bool, device=device)
        rand = (lambda p: torch.rand(b, device=device) < p) if augment else (lambda p: no)  # noqa: E731
        audio = rand(c.audio_dropout_prob) if drops.audio is None else drops.audio.to(device, torch.bool)
        if not has_context:  # first window: nothing to condition on
            start = torch.ones(b, dtype=torch.bool, device=device)
        else:  # forced drops (clips cut at their first frame) plus start_token_prob of all samples
            forced = no if drops.context is None else drops.context.to(device, torch.bool)
            start = forced | rand(c.start_token_prob)
        if drops.ref_exp is not None:
            ref = drops.ref_exp.to(device, torch.bool)
        elif self.drops_reference_expression():
            ref = torch.ones(b, dtype=torch.bool, device=device)
        else:
            ref = rand(c.ref_exp_drop_prob)
        return audio, start, ref

    def drops_reference_expression(self) -> bool:
        """A stage-two model never reads the reference expression: the requested label sets the emotion."""
        ctrl = self.emotion_controller
        return ctrl is not None and getattr(ctrl.config, "drop_reference_expression", False)

    def _id_feat(self, id_feat: Tensor, drop_ref: Tensor) -> Tensor:
        """f_id (B, 133) with the reference expression replaced by the learned null where drop_ref (B,)."""
        null = self.null_ref_exp.to(id_feat.dtype)
        ref_exp = torch.where(drop_ref[:, None], null, id_feat[:, REF_EXP])  # (B, 63)
        head, tail = id_feat[:, : REF_EXP.start], id_feat[:, REF_EXP.stop :]  # x_c (B, 63), ref pose (B, 7)
        return torch.cat([head, ref_exp, tail], dim=-1)  # (B, 133)

    def _motion_tokens(self, x_t: Tensor, context: Tensor | None, start: Tensor, augment: bool) -> Tensor:
        """M-Proj of [context | noisy window]: context noise-augmented, or the start token: (B, S, D)."""
        c, b, dtype = self.config, x_t.shape[0], self.m_proj.weight.dtype
        if context is None:
            ctx_tokens = self.start_motion.to(dtype).expand(b, -1, -1)  # (B, Tp, D)
        else:
            context = context.to(dtype)
            if augment:
                sigma = torch.rand(b, 1, 1, device=x_t.device, dtype=dtype) * c.context_noise_max  # (B, 1, 1)
                context = context + sigma * torch.randn_like(context)
            elif c.context_noise_eval > 0:
                context = context + c.context_noise_eval * torch.randn_like(context)
            ctx_tokens = torch.where(start[:, None, None], self.start_motion.to(dtype), self.m_proj(context))
        return torch.cat([ctx_tokens, self.m_proj(x_t.to(dtype))], dim=1)  # (B, S, D)

    def _align(self, audio: Tensor, n: int, start: Tensor, may_start: bool) -> Tensor:
        """The aligner over the audio of context + window: (B, S|T, L, C) → f_a (B, S, D).

        Start-token samples see no context audio, exactly as the first window at inference: their
        context frames are the first window frame repeated (what the ±2-frame stacking's edge
        padding would give) and are masked out of the aligner's attention.
        """
        b, tp = audio.shape[0], self.config.tp
        if audio.shape[1] == n:  # (B, T, L, C): first window, nothing before it
            audio = torch.cat([audio[:, :1].expand(-1, tp, -1, -1), audio], dim=1)  # (B, S, L, C)
        key_mask = None
        if may_start:
            edge = audio[:, tp : tp + 1].expand(-1, tp, -1, -1)  # (B, Tp, L, C)
            ctx_audio = torch.where(start[:, None, None, None], edge, audio[:, :tp])  # (B, Tp, L, C)
            audio = torch.cat([ctx_audio, audio[:, tp:]], dim=1)  # (B, S, L, C)
            key_mask = torch.ones(b, audio.shape[1], dtype=torch.bool, device=audio.device)  # (B, S)
            key_mask[:, :tp] = ~start[:, None]
        return self.audio_aligner(audio, key_mask)  # (B, S, D)

    def _audio_tokens(self, f_a: Tensor, start: Tensor, drop: Tensor) -> Tensor:
        """A-Proj of the aligned audio f_a (B, S, D), the learned null where `drop`, the start token's
        audio where `start`: → (B, S, D)."""
        dtype, tp = self.m_proj.weight.dtype, self.config.tp
        f_a = torch.where(drop[:, None, None], self.null_audio.to(dtype), f_a)  # (B, S, D)
        a_tokens = self.a_proj(f_a)  # (B, S, D)
        a_ctx = torch.where(start[:, None, None], self.start_audio.to(dtype), a_tokens[:, :tp])  # (B, Tp, D)
        return torch.cat([a_ctx, a_tokens[:, tp:]], dim=1)  # (B, S, D)

    @torch.no_grad()
    def with_aligned_audio(self, cond: Condition, frames: int, drops: Drops | None = None) -> Condition:
        """`cond` with `aligned_audio` filled: the aligner's output, computed once for all sampling steps.

        The aligner reads only the audio features and the start-token mask, and neither changes while
        a window is sampled, so the samplers call this once per window instead of running the aligner
        at every step and in every CFG pass (the null-audio passes replace f_a after the aligner).
        frames: T, the window frames of x_t. Outside training only (no augmentation); `drops` must be
        the forward's (its context drops).
        """
        drops, n = drops or Drops(), frames
        b, device = cond.id_feat.shape[0], cond.id_feat.device
        _, start, _ = self._masks(b, device, cond.context is not None, drops, augment=False)
        may_start = cond.context is None or drops.context is not None
        aligned = self._align(cond.audio, n, start, may_start)  # (B, S, D)
        return Condition(cond.audio, cond.id_feat, cond.context, cond.emotion, aligned)

    def trunk(self, x_t: Tensor, t: Tensor, cond: Condition, drops: Drops | None = None) -> TrunkOutput:
        """Projections + Conformer. Shapes as in `forward`; returns hidden (B, T, D), t_emb (B, D)."""
        c, drops = self.config, drops or Drops()
        b, n, _ = x_t.shape
        augment = self.training if drops.augment is None else drops.augment
        self._check_shapes(x_t, t, cond)
        dtype, device = self.m_proj.weight.dtype, x_t.device
        audio_drop, start, ref_drop = self._masks(b, device, cond.context is not None, drops, augment)

        # Global condition (adaLN): c = T-Proj(t) + ID-Proj(f_id).
        t_emb = self.t_proj(t)  # (B, D)
        c_glob = t_emb + self.id_proj(self._id_feat(cond.id_feat.to(dtype), ref_drop))  # (B, D)

        may_start = cond.context is None or augment or drops.context is not None
        h = self._motion_tokens(x_t, cond.context, start, augment)  # (B, S, D)
        if cond.aligned_audio is None:
            f_a = self._align(cond.audio, n, start, may_start)  # (B, S, D)
        elif augment:
            raise ValueError("Condition.aligned_audio is for sampling only: training draws start tokens "
                             "per step, so the aligner must run in the forward (leave it None)")
        else:
            f_a = cond.aligned_audio  # (B, S, D) from `with_aligned_audio`
        h = h + self._audio_tokens(f_a, start, audio_drop)  # (B, S, D)
        h = h + sinusoidal_embedding(torch.arange(c.tp + n, device=device), c.width).to(dtype)  # (B, S, D)
        for block in self.blocks:
            h = block(h, c_glob)  # (B, S, D)
        shift, scale = self.final_modulation(c_glob).chunk(2, dim=-1)  # 2 × (B, D)
        h = modulate(self.final_norm(h), shift, scale)  # (B, S, D)
        return TrunkOutput(hidden=h[:, c.tp :], t_emb=t_emb)  # (B, T, D), (B, D)

    def heads(self, hidden: Tensor, t_emb: Tensor, emotion: Tensor | None = None) -> Tensor:
        """Pose-MLP on the trunk output; Exp-MLP on the controller's output when one is attached.

        hidden (B, T, D), t_emb (B, D), emotion (B,) long in [0, 8] (8 = null; None = null) → ε̂ (B, T, 70).
        """
        pose = self.pose_mlp(hidden)  # (B, T, 7)
        if self.emotion_controller is not None:
            hidden = self.emotion_controller(hidden, t_emb, emotion)  # (B, T, D)
        elif emotion is not None:
            raise ValueError("an emotion label was given but no emotion controller is attached")
        exp = self.exp_mlp(hidden)  # (B, T, 63)
        return torch.cat([exp, pose], dim=-1)  # (B, T, 70): layout order exp | pose

    def forward(self, x_t: Tensor, t: Tensor, cond: Condition, drops: Drops | None = None) -> Tensor:
        """Predict ε for the window: x_t (B, T, 70) noisy normalised motion, t (B,) diffusion steps → ε̂ (B, T, 70).

        `cond` (`Condition`) holds the audio features, f_id, the optional context and emotion label;
        `drops` (`Drops`) forces or draws the per-sample drops. ε̂ is in the layout order: exp (63), pose (7).
        """
        out = self.trunk(x_t, t, cond, drops)
        return self.heads(out.hidden, out.t_emb, cond.emotion)  # (B, T, 70)

    def _check_shapes(self, x_t: Tensor, t: Tensor, cond: Condition) -> None:
        c, audio, id_feat, context = self.config, cond.audio, cond.id_feat, cond.context
        if x_t.ndim != 3 or x_t.shape[-1] != MOTION_DIM:
            raise ValueError(f"x_t has shape {tuple(x_t.shape)}, expected (B, T, {MOTION_DIM})")
        b, n, _ = x_t.shape
        if t.shape != (b,):
            raise ValueError(f"t has shape {tuple(t.shape)}, expected ({b},)")
        if id_feat.shape != (b, ID_DIM):
            raise ValueError(f"id_feat has shape {tuple(id_feat.shape)}, expected ({b}, {ID_DIM})")
        if context is not None and context.shape != (b, c.tp, MOTION_DIM):
            raise ValueError(
                f"context has shape {tuple(context.shape)}, expected ({b}, {c.tp}, {MOTION_DIM})"
            )
        aligned = cond.aligned_audio
        if aligned is not None and aligned.shape != (b, c.tp + n, c.width):
            raise ValueError(f"aligned_audio has shape {tuple(aligned.shape)}, expected ({b}, {c.tp + n}, {c.width})")
        allowed = (c.tp + n,) if context is not None else (c.tp + n, n)
        if audio.ndim != 4 or audio.shape[0] != b or audio.shape[1] not in allowed:
            raise ValueError(
                f"audio has shape {tuple(audio.shape)}, expected (B={b}, frames in {allowed}, L, C): "
                f"Tp={c.tp} context + T={n} window frames (T alone only when context is None)"
            )

    def compile_blocks(self, **kwargs) -> None:
        """torch.compile every Conformer block in place (`nn.Module.compile`): parameter and state-dict
        names stay unchanged, so checkpoints load into compiled and eager models alike. kwargs go to
        torch.compile (e.g. backend="eager" in tests)."""
        for block in self.blocks:
            block.compile(**kwargs)

    # --------------------------------------------------------------------------------------------
    # Accounting
    # --------------------------------------------------------------------------------------------

    def flops_per_sample(self, t_window: int | None = None, tp: int | None = None) -> int:
        """Forward FLOPs of one sample (2 × MACs of every matmul/conv, attention scores included).

        Elementwise ops (norms, activations, softmax) are not counted, as in the usual MFU convention.
        Includes the attached emotion controller, if any. Training ≈ 3× this (forward + backward).
        """
        c = self.config
        n = c.t_window if t_window is None else t_window
        s = (c.tp if tp is None else tp) + n
        d, hid = c.width, c.ffn_mult * c.width
        flops = self.audio_aligner.flops_per_sample(s)
        flops += 2 * s * d * d + 2 * s * MOTION_DIM * d  # A-Proj, M-Proj
        flops += 2 * (c.freq_dim * d + d * d) + 2 * ID_DIM * d  # T-Proj, ID-Proj
        per_block = 2 * d * 12 * d  # adaLN modulation
        per_block += 2 * (2 * s * d * hid * 2)  # two half FFNs
        per_block += 2 * s * d * 3 * d + 4 * s * s * d + 2 * s * d * d  # MHSA
        per_block += 2 * s * d * 2 * d + 2 * s * d * c.conv_kernel + 2 * s * d * d  # conv module
        flops += c.depth * per_block
        flops += 2 * d * 2 * d  # final modulation
        flops += 2 * n * (d * d // 2 + d // 2 * POSE_DIM) + 2 * n * (d * d // 2 + d // 2 * EXP_DIM)
        if self.emotion_controller is not None:
            flops += self.emotion_controller.flops_per_sample(n)
        return flops


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build_motion_dit(config: MotionDiTConfig) -> MotionDiT:
    """The one constructor the LightningModule calls (config from the OmegaConf schema)."""
    return MotionDiT(config)


# ------------------------------------------------------------------------------------------------
# Presets: tiny first (tests, demo), B is the default
# ------------------------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, int]] = {
    # tiny's width is 128, not 64: M-Proj must carry all 70 motion dims of x_t (at t ≈ N, ε ≈ x_t),
    # and a 64-d bottleneck leaves the expression ε half-unpredictable (measured: MSE 0.52 at t = 999).
    "tiny": {"depth": 2, "width": 128, "heads": 4},
    "S": {"depth": 6, "width": 256, "heads": 4},
    "B": {"depth": 8, "width": 512, "heads": 8},
    "L": {"depth": 12, "width": 768, "heads": 12},
}
