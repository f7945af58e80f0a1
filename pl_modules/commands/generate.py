"""`playmate generate CKPT --audio FILE --reference FILE [...]`: motion .npy, and an mp4 with a face model."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Generate head motion for an audio clip (DESIGN §7). Writes OUT.npy: float32 (N, 70) raw motion
(exp 63 · pitch, yaw, roll in degrees · t 3 · scale), N = round(audio duration × 25) frames.
With --video and --face-model it also renders 512×512 frames and writes an mp4 with the audio.

CKPT is a Lightning .ckpt file, a DeepSpeed .ckpt directory or a `playmate export` directory.
Audio: any file FFmpeg reads (wav, mp3, aac, m4a, flac, ogg, mp4 …), any rate and channel count;
it is resampled to 16 kHz mono. Long audio is generated in 4 s windows, each conditioned on the
previous window's last frames.

--reference is either a .npz with `motion` ((70,) or (T, 70): first frame used) and `kp` (21, 3)
canonical keypoints, or a face-centred portrait image (PNG/JPG), which needs --face-model.

Examples:
  playmate generate runs/stage1/export --audio talk.mp3 --reference me.npz --out talk.npy
  playmate generate runs/stage2/export --audio talk.wav --reference me.png --emotion happy \\
      --face-model weights/liveportrait --video talk.mp4
  playmate generate runs/stage1/export --audio song.m4a --reference me.npz --pose-mode driving \\
      --driving head.npy --out song.npy
"""


# Kept literal so that building the CLI parser imports no torch; tests check they equal
# pl_modules.generate.POSE_MODES and models.emotion.EMOTIONS.
POSE_MODES = ("generated", "fixed", "driving", "spin")
EMOTIONS = ("neutral", "angry", "disgusted", "contempt", "fear", "happy", "sad", "surprised")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="audio + reference → motion .npy (and an mp4 with a face model)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CKPT", help=".ckpt file, DeepSpeed .ckpt dir or export dir")
    p.add_argument("--audio", required=True, metavar="FILE", help="audio (or video) file, any format and rate")
    p.add_argument("--reference", required=True, metavar="FILE",
                   help="reference .npz (motion, kp) or portrait image (needs --face-model)")
    p.add_argument("--emotion", metavar="NAME",
                   help=f"stage-two checkpoints only; one of: {', '.join(EMOTIONS)}. A stage-two model never "
                   "copies the reference's expression; without --emotion it chooses one itself")
    p.add_argument("--pose-mode", default="generated", choices=POSE_MODES,
                   help="generated: the model's head pose (default); fixed: the reference pose; driving: the "
                   "pose changes of --driving applied to the reference pose; spin: a fixed ±20° yaw / ±8° "
                   "pitch figure of eight (6 s period)")
    p.add_argument("--driving", metavar="FILE", help="driving motion .npy (T, 70) or .npz with `motion` "
                   "(for --pose-mode driving; frames past T hold its last pose)")
    p.add_argument("--out", metavar="OUT.npy", help="motion output (default: the audio name with .npy, here)")
    p.add_argument("--video", metavar="OUT.mp4", help="also render an mp4 with the audio (needs --face-model)")
    p.add_argument("--face-model", metavar="DIR", help="LivePortrait weights dir (…/base_models/*.pth)")
    p.add_argument("--face-preset", default="full", choices=("full", "tiny"),
                   help="face-model size the weights have (tiny: test weights from write_random_weights)")
    p.add_argument("--source-image", metavar="IMG",
                   help="portrait to animate when --reference is a .npz (its motion/kp must describe this image)")
    p.add_argument("--save-reference", metavar="OUT.npz", help="write the reference (motion, kp) as a .npz")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's diffusion.sampling_steps)")
    p.add_argument("--w-a", type=float, help="audio guidance scale (default: the checkpoint's, 1.5)")
    p.add_argument("--w-e", type=float, help="emotion guidance scale (default: the checkpoint's, 1.5)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--render-batch", type=int, default=4, help="frames per renderer batch (default 4)")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    import numpy as np

    from pl_modules import generate as g
    from pl_modules.cli import UserError

    if args.video and not args.face_model:
        raise UserError("--video needs --face-model DIR (the LivePortrait weights) to render frames")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be ≥ 1, got {args.steps}")
    out = Path(args.out) if args.out else Path(Path(args.audio).stem + ".npy")
    try:
        face = load_face(args) if args.face_model else None
        ref = g.load_reference(args.reference, face)
        if args.save_reference:
            g.save_reference(args.save_reference, ref)
        motion = g.generate_motion(
            args.checkpoint, args.audio, ref, emotion=args.emotion, pose_mode=args.pose_mode,
            driving=args.driving, steps=args.steps, w_a=args.w_a, w_e=args.w_e, seed=args.seed,
            device=args.device,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, motion)
        print(f"wrote {out}: {motion.shape[0]} frames ({motion.shape[0] / 25:.2f} s) of motion")
        if args.video:
            frames = render_video(args, face, ref, motion)
            print(f"wrote {args.video}: {frames} frames with audio")
    except (g.GenerationError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    return 0


def load_face(args: argparse.Namespace):
    from models.liveportrait import FaceModelConfig, load_face_model

    cfg = FaceModelConfig.tiny() if args.face_preset == "tiny" else None
    try:
        return load_face_model(args.face_model, args.device, cfg)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        from pl_modules.generate import GenerationError

        raise GenerationError(f"--face-model {args.face_model}: {e}") from None


def render_video(args: argparse.Namespace, face, ref, motion) -> int:
    """Render `motion` from the reference crop (or --source-image) and mux the 16 kHz audio: frame count."""
    import numpy as np

    from datamodules.video import encode_mp4
    from pl_modules import generate as g

    image = ref.image
    if args.source_image:
        image = g.load_portrait(args.source_image)
    if image is None:
        raise g.GenerationError("--video with a .npz reference needs --source-image IMG (the portrait to animate)")
    frames = face.render(image, ref.motion, ref.kp, motion, batch_size=args.render_batch)  # (N, 512, 512, 3)
    wav = g.load_audio(args.audio)  # exactly N·640 samples
    pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)
    Path(args.video).parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(frames, fps=25, audio=pcm, sample_rate=16_000, path=args.video)
    return len(frames)
