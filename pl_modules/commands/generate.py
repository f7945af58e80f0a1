"""`playmate generate CKPT --audio FILE --reference FILE [...]`: motion .npy, and an mp4 with --video."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Generate head motion for an audio clip (docs/generation.md). Writes OUT.npy: float32 (N, 70) raw motion
(exp 63 · pitch, yaw, roll in degrees · t 3 · scale), N = round(audio duration × 25) frames.
With --video it also writes an mp4 with the audio muxed in, one frame per motion frame: with
--face-model, 512×512 LivePortrait frames of the reference portrait; without it, the synthetic-world
renderer (the procedural head of `playmate synth`, 256×256, captioned "synthetic-world renderer" on
every frame) draws the motion on the reference keypoints. --ground-truth CLIP.npz adds the clip's own
motion beside it (generated | ground truth), for clips that have one (e.g. synthetic clips).

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
  playmate generate runs/stage1/export --audio clip.wav --reference clip.npz --video clip.mp4 \
      --ground-truth clip.npz
  playmate generate runs/stage1/export --audio song.m4a --reference me.npz --pose-mode driving \\
      --driving head.npy --out song.npy
"""


# Kept literal so that building the CLI parser imports no torch; tests check they equal
# pl_modules.inference.pose.POSE_MODES and models.emotion.EMOTIONS.
POSE_MODES = ("generated", "fixed", "driving", "spin")
EMOTIONS = ("neutral", "angry", "disgusted", "contempt", "fear", "happy", "sad", "surprised")


def register(sub: argparse._SubParsersAction) -> None:
    from pl_modules.inference.request import GenerationRequest

    d = GenerationRequest("", "", "")  # the defaults
    p = sub.add_parser(
        "generate",
        help="audio + reference → motion .npy (and an mp4 with --video)",
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
    p.add_argument("--pose-mode", default=d.pose_mode, choices=POSE_MODES,
                   help="generated: the model's head pose (default); fixed: the reference pose; driving: the "
                   "pose changes of --driving applied to the reference pose; spin: a fixed ±20° yaw / ±8° "
                   "pitch figure of eight (6 s period)")
    p.add_argument("--driving", metavar="FILE", help="driving motion .npy (T, 70) or .npz with `motion` "
                   "(for --pose-mode driving; frames past T hold its last pose)")
    p.add_argument("--out", metavar="OUT.npy", help="motion output (default: the audio name with .npy, here)")
    p.add_argument("--video", metavar="OUT.mp4", help="also write an mp4 with the audio: rendered by --face-model, "
                   "or without it drawn by the synthetic-world renderer (256×256, captioned on every frame)")
    p.add_argument("--ground-truth", metavar="FILE", help="motion .npy (T, 70) or .npz with `motion` drawn beside "
                   "the generated motion in --video (generated | ground truth; synthetic-world renderer)")
    p.add_argument("--face-model", metavar="DIR", help="LivePortrait weights dir (…/base_models/*.pth)")
    p.add_argument("--face-preset", default=d.face_preset, choices=("full", "tiny"),
                   help="face-model size the weights have (tiny: test weights from write_random_weights)")
    p.add_argument("--source-image", metavar="IMG",
                   help="portrait to animate when --reference is a .npz (its motion/kp must describe this image)")
    p.add_argument("--save-reference", metavar="OUT.npz", help="write the reference (motion, kp) as a .npz")
    p.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's diffusion.sampling_steps)")
    p.add_argument("--w-a", type=float, help="audio guidance scale (default: the checkpoint's diffusion.w_a)")
    p.add_argument("--w-e", type=float, help="emotion guidance scale (default: the checkpoint's diffusion.w_e)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"sampling seed (default {d.seed})")
    p.add_argument("--device", default=d.device, help=f"torch device, e.g. cpu or cuda (default {d.device})")
    p.add_argument("--render-batch", type=int, default=d.render_batch,
                   help=f"frames per renderer batch (default {d.render_batch})")
    p.add_argument("--threads", type=int, default=d.threads, metavar="N",
                   help="CPU threads for torch (default: $OMP_NUM_THREADS if set, else the cores idle now, "
                   "1 to 4; more threads than idle cores are many times slower on a shared machine)")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from pl_modules.commands import UserError
    from pl_modules.inference.inputs import GenerationError
    from pl_modules.inference.request import GenerationRequest, run_request

    req = GenerationRequest(
        args.checkpoint, args.audio, args.reference, out=args.out, emotion=args.emotion, pose_mode=args.pose_mode,
        driving=args.driving, video=args.video, ground_truth=args.ground_truth, face_model=args.face_model,
        face_preset=args.face_preset,
        source_image=args.source_image, save_reference=args.save_reference, steps=args.steps, w_a=args.w_a,
        w_e=args.w_e, seed=args.seed, device=args.device, render_batch=args.render_batch,
        threads=args.threads,
    )
    try:
        result = run_request(req)
    except (GenerationError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    print(f"wrote {result['motion']}: {result['frames']} frames ({result['frames'] / 25:.2f} s) of motion")
    if result["video"]:
        print(f"wrote {result['video']}: {result['frames']} frames with audio ({result['renderer']})")
    return 0
