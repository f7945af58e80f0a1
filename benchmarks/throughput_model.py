"""Throughput model of stage-one training on 8×H100 nodes (1, 4, 16 nodes), from the model's FLOP count and
the per-worker loader rates measured on CPU: which limit is hit first (data, interconnect, checkpoint
writes, validation).

    python benchmarks/throughput_model.py [--mel-rate 901] [--w2v-rate 120] [--wav-rate 889] [--measure]

Everything that is not a FLOP count is an input, printed with the tables: the target MFU (40%), the
dense bf16 peak (989 TFLOP/s), the per-GPU batch, the loader rates (windows/s per worker; defaults:
benchmarks/RESULTS.md), CPU cores per GPU, the fabric and the file-system bandwidth. `--measure` also
times the CPU parts of one validation (motion metrics of 64 clips, the W&B mouth plot) on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.audio import wav2vec2_flops  # noqa: E402
from models.dit import MotionDiT, MotionDiTConfig, count_parameters  # noqa: E402

FRAMES = 125  # Tp + T frames per training window
PEAK = 989e12  # H100 SXM dense bf16
GPUS_PER_NODE = 8
BATCH = {"B": 256, "L": 128}  # per GPU
NVLINK_BUSBW = 360e9  # bytes/s, NCCL all-reduce bus bandwidth inside an 8-GPU NVLink node (assumed)
FABRICS = {"8×400 Gb/s per node": 40e9, "2×200 Gb/s per node": 5e9}  # inter-node bus bandwidth per GPU (assumed)
FS_WRITE = 2e9  # bytes/s one rank writes to the shared file system (assumed)
CKPT_EVERY, VAL_EVERY = 1000, 2000  # steps: configs/stage1.yaml


def features(args: argparse.Namespace) -> dict[str, dict]:
    """Audio-feature options: DiT input shape, loader rate per worker, encoder FLOPs in the step, bytes to the GPU."""
    w2v = wav2vec2_flops({}, FRAMES * 640)
    return {
        "log-mel, precomputed": {"lc": (1, 80), "rate": args.mel_rate, "encoder": 0.0, "h2d": FRAMES * 80 * 4},
        "wav2vec2, precomputed fp16 (12 layers)": {"lc": (12, 768), "rate": args.w2v_rate, "encoder": 0.0,
                                                   "h2d": FRAMES * 12 * 768 * 4},
        "wav2vec2 on the GPU (wav in the shards)": {"lc": (12, 768), "rate": args.wav_rate, "encoder": w2v,
                                                    "h2d": FRAMES * 640 * 4},
    }


def per_gpu(preset: str, feat: dict, mfu: float) -> dict:
    """Windows/s one GPU needs at `mfu` (of the FLOPs MFU counts), and what it takes to feed it."""
    model = MotionDiT(MotionDiTConfig(preset=preset, audio_layers=feat["lc"][0], audio_dim=feat["lc"][1]))
    counted = 3 * model.flops_per_sample()
    # The GPU runs at the same fraction of its peak whatever the work; the encoder's FLOPs take their share.
    windows = mfu * PEAK / (counted + feat["encoder"])
    step = BATCH[preset] / windows
    return {"params": count_parameters(model), "counted": counted, "windows": windows, "step_s": step,
            "workers": windows / feat["rate"], "h2d": windows * feat["h2d"], "logged_mfu": mfu * counted /
            (counted + feat["encoder"])}


def cluster(preset: str, g: dict, nodes: int, fabric_bw: float, cores_per_gpu: int, val_s: float) -> dict:
    n, p = nodes * GPUS_PER_NODE, g["params"]
    volume = 2 * (n - 1) / n * p * 2  # bytes per GPU per step: reduce-scatter + all-gather of bf16 gradients/params
    comm = volume / (NVLINK_BUSBW if nodes == 1 else fabric_bw)
    rank0 = (2 + 4) * p + 12 * p / n  # bf16 module + fp32 EMA, plus its ZeRO shard of fp32 master + Adam moments
    ckpt = rank0 / FS_WRITE
    ratios = {"data": g["workers"] / cores_per_gpu, "interconnect": comm / g["step_s"],
              "checkpoint": ckpt / (CKPT_EVERY * g["step_s"]), "validation": val_s / (VAL_EVERY * g["step_s"])}
    first = max(ratios, key=ratios.get)
    return {"gpus": n, "windows": n * g["windows"], "volume": volume, "comm": comm, "ckpt_bytes": 18 * p,
            "rank0": rank0, "ckpt": ckpt, "ratios": ratios,
            "first": f"{first} ({'hit' if ratios[first] >= 1 else 'not hit'})"}


def measure_validation() -> float:
    """CPU seconds of one validation's host work on this machine: motion metrics of 64 clips + the mouth plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from pl_modules.validation import motion_validation_metrics

    g = torch.Generator().manual_seed(0)
    outs = [{"gen": torch.randn(16, 100, 70, generator=g), "gt": torch.randn(16, 100, 70, generator=g),
             "kp": torch.randn(16, 21, 3, generator=g), "wav": (torch.randn(16, 64000, generator=g) * 3000).short(),
             "key": ["k"] * 16} for _ in range(4)]
    for o in outs:
        o["gen"][..., 69] = o["gt"][..., 69] = 1.0
    t0 = time.perf_counter()
    motion_validation_metrics(outs)
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.plot(range(100))
    fig.canvas.draw()
    plt.close(fig)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mfu", type=float, default=0.40)
    ap.add_argument("--mel-rate", type=float, default=901.0, help="windows/s per loader worker, precomputed mel")
    ap.add_argument("--w2v-rate", type=float, default=120.0, help="windows/s per worker, precomputed wav2vec2 fp16")
    ap.add_argument("--wav-rate", type=float, default=889.0, help="windows/s per worker, wav audio")
    ap.add_argument("--cores-per-gpu", type=int, default=12, help="CPU cores per GPU for loader workers")
    ap.add_argument("--val-gpu-s", type=float, default=1.0, help="GPU seconds of one validation's generation")
    ap.add_argument("--val-cpu-s", type=float, default=None, help="host seconds of one validation (default: --measure "
                    "or 3.4, this machine's motion metrics of 64 clips)")
    ap.add_argument("--measure", action="store_true")
    args = ap.parse_args()
    val_cpu = measure_validation() if args.measure else (args.val_cpu_s or 3.4)
    val_s = args.val_gpu_s + val_cpu
    print(f"MFU {args.mfu:.0%} of {PEAK / 1e12:.0f} TFLOP/s; per-GPU batch {BATCH}; {args.cores_per_gpu} loader cores "
          f"per GPU; NVLink {NVLINK_BUSBW / 1e9:.0f} GB/s, file system {FS_WRITE / 1e9:.0f} GB/s per rank; checkpoint "
          f"every {CKPT_EVERY} steps, validation every {VAL_EVERY} ({val_s:.1f} s: {args.val_gpu_s:.1f} GPU + "
          f"{val_cpu:.1f} host)\n")
    print("| preset | audio features | MFU GFLOP/window | windows/s per GPU | step ms | loader workers per GPU | "
          "host→GPU GB/s | logged MFU |\n|---|---|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for preset in ("B", "L"):
        for name, feat in features(args).items():
            g = rows[(preset, name)] = per_gpu(preset, feat, args.mfu)
            print(f"| {preset} | {name} | {g['counted'] / 1e9:.1f} | {g['windows']:,.0f} | {1e3 * g['step_s']:.1f} | "
                  f"{g['workers']:.1f} | {g['h2d'] / 1e9:.2f} | {g['logged_mfu']:.0%} |")
    for fabric, bw in FABRICS.items():
        print(f"\nInter-node fabric {fabric} ({bw / 1e9:.0f} GB/s all-reduce bus bandwidth per GPU), features "
              "log-mel precomputed (the time ratios do not depend on the features):\n")
        print("| preset | nodes | GPUs | windows/s | all-reduce MB/GPU/step | comm ms vs step ms | checkpoint GB "
              "(rank 0) | write s vs interval s | data / comm / ckpt / val share | nearest limit |\n"
              "|---|---:|---:|---:|---:|---|---|---|---|---|")
        for preset in ("B", "L"):
            g = rows[(preset, "log-mel, precomputed")]
            for nodes in (1, 4, 16):
                c = cluster(preset, g, nodes, bw, args.cores_per_gpu, val_s)
                r = c["ratios"]
                print(f"| {preset} | {nodes} | {c['gpus']} | {c['windows']:,.0f} | {c['volume'] / 1e6:.0f} | "
                      f"{1e3 * c['comm']:.1f} vs {1e3 * g['step_s']:.1f} | {c['ckpt_bytes'] / 1e9:.2f} "
                      f"({c['rank0'] / 1e9:.2f}) | {c['ckpt']:.2f} vs {CKPT_EVERY * g['step_s']:.0f} | "
                      f"{r['data']:.2f} / {r['interconnect']:.2f} / {r['checkpoint']:.3f} / {r['validation']:.3f} "
                      f"| {c['first']} |")


if __name__ == "__main__":
    main()
