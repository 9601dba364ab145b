"""Prediction speed and memory of the standard U-Net: the original's 204³→110³ tiling
against larger blocks (`--block-size auto`), achieved GFLOP/s against this machine's
measured conv3d peak, and peak memory as the region grows 8×.

Each configuration runs ``incasem predict`` in a fresh process (random weights in the
standard architecture: speed does not depend on the weights) and reads its peak RSS.

    python benchmarks/bench_predict.py [--blocks 104,200] [--roi 200] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from incasem.io.volume import create_volume
from incasem.model.checkpoint import ModelCard, save_checkpoint
from incasem.model.unet import UNet, UNetConfig, standard_config


def conv_flops(config: UNetConfig, input_shape: tuple[int, int, int]) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward pass, counted layer by layer with hooks."""
    model = UNet(config).eval()
    total = [0.0]

    def count(module: torch.nn.Conv3d, _inputs: tuple, output: torch.Tensor) -> None:
        kernel = module.weight.shape[1] * np.prod(module.weight.shape[2:])
        total[0] += 2.0 * kernel * output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    with torch.inference_mode(), torch.device("meta"):
        model.to("meta")(torch.empty(1, 1, *input_shape, device="meta"))
    for hook in hooks:
        hook.remove()
    return total[0]


def conv3d_peak_gflops(threads: int) -> float:
    """Best GFLOP/s of a large 3×3×3 conv (64→64 channels, 64³) on the CPU, fp32."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv3d(64, 64, 3).eval().to(memory_format=torch.channels_last_3d)
    x = torch.rand(1, 64, 66, 66, 66).contiguous(memory_format=torch.channels_last_3d)
    flops = 2.0 * 64 * 27 * 64 * 64**3
    best = float("inf")
    with torch.inference_mode():
        conv(x)
        for _ in range(3):
            start = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def run_predict(container: Path, checkpoint: Path, roi: int, block: int, precision: str) -> dict[str, float]:
    """Run one prediction in a fresh process; return wall time and peak RSS."""
    code = (
        "import resource, sys, time; from incasem.cli import main; t = time.perf_counter(); "
        f"rc = main(['predict', '{container}', '--model', '{checkpoint}', '--raw', 'volumes/raw_equalized_0.02', "
        f"'--roi-offset', '0,0,0', '--roi-shape', '{roi},{roi},{roi}', '--block-size', '{block}', "
        f"'--device', 'cpu', '--precision', '{precision}', '-q']); "
        "print('RESULT', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    _, seconds, rss_kb, rc = next(line for line in out.splitlines() if line.startswith("RESULT")).split()
    if rc != "0":
        raise RuntimeError(out)
    return {"seconds": float(seconds), "peak_gb": int(rss_kb) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", default="104,200", help="output block edges to compare (voxels)")
    parser.add_argument("--roi", type=int, default=200, help="edge of the cubic region to predict (voxels)")
    parser.add_argument("--grow", type=int, default=0, help="also run ROI 2× per axis (8× voxels) with this block edge")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    config = standard_config()
    peak = conv3d_peak_gflops(threads)
    print(f"machine: {threads} cores, torch {torch.__version__}, conv3d fp32 peak {peak:.1f} GFLOP/s")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        container = Path(tmp) / "bench.zarr"
        edge = max(args.roi, 2 * args.roi if args.grow else 0)
        raw = create_volume(container, "volumes/raw_equalized_0.02", (edge,) * 3, "uint8", (5, 5, 5), chunks=(64, 64, 64))
        raw.write(raw.roi, np.random.default_rng(0).integers(0, 256, (edge,) * 3, dtype=np.uint8))
        raw.mark_complete()
        checkpoint = save_checkpoint(
            Path(tmp) / "standard.pt", UNet(config),
            ModelCard(voxel_size_nm=(5, 5, 5), class_names=("background", "mito"), organelle="mito", source="benchmark"),
        )
        runs = [(args.roi, int(b)) for b in args.blocks.split(",")]
        if args.grow:
            runs.append((2 * args.roi, args.grow))
        for roi, block in runs:
            measured = run_predict(container, checkpoint, roi, block, args.precision)
            input_edge = config.input_shape_for_output((block,) * 3)[0]
            blocks = -(-roi // block) ** 3
            flops = conv_flops(config, (input_edge,) * 3) * blocks
            voxels_per_s = roi**3 / measured["seconds"]
            gflops = flops / measured["seconds"] / 1e9
            results[(roi, block)] = voxels_per_s
            print(
                f"ROI {roi}³, block {block}³ (input {input_edge}³, {blocks} blocks, {args.precision}): "
                f"{voxels_per_s / 1e3:.1f} kvox/s of the ROI, {gflops:.1f} GFLOP/s ({100 * gflops / peak:.0f}% of peak), "
                f"peak RSS {measured['peak_gb']:.2f} GB, {measured['seconds']:.0f} s"
            )
    base = results[runs[0]]
    for key, value in results.items():
        print(f"speed-up of block {key[1]}³ on ROI {key[0]}³ over block {runs[0][1]}³: {value / base:.2f}x")
    print(json.dumps({f"roi{k[0]}_block{k[1]}": v for k, v in results.items()}))


if __name__ == "__main__":
    main()
