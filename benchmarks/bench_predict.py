"""`incasem predict` with its defaults against the original incasem's prediction scheme.

Side by side in one run, each in a fresh process on the same zarr container (real
Lucchi++ FIB-SEM, mirrored to fill the region), the same standard U-Net (random
weights: speed does not depend on them):

- **original scheme**: what the original incasem runs: fp32, NCDHW tensors, 204³
  input → 110³ output blocks, only the region's interior predicted (the region less
  the 47-voxel context on each side), each block read from zarr and its
  probabilities written back;
- **incasem predict (defaults)**: `incasem predict CELL.zarr --roi-offset … --roi-shape …`
  with nothing else: balanced auto blocks, bf16 autocast where native, channels-last,
  reading and writing overlapped with the network, the whole region predicted.

Throughput is voxels *of the region* per second (kvox/s), wall time of the process;
peak memory is the process's peak resident set. The region then grows 8× (edge ×2)
for incasem predict, to show that its memory stays flat.

    python benchmarks/bench_predict.py [--roi 256] [--grow] [--skip-original]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from incasem.io.volume import create_volume, open_volume
from incasem.model.card import ModelCard
from incasem.model.checkpoint import load_checkpoint, save_checkpoint
from incasem.model.unet import UNet, normalize_raw, standard_config

LUCCHI = Path(__file__).resolve().parents[2] / "shared" / "data" / "lucchi_pp_fibsem" / "image"
RAW = "volumes/raw_equalized_0.02"


def write_raw(container: Path, edge: int) -> None:
    """A cubic uint8 dataset of real EM: the Lucchi++ stack mirrored along every axis to ``edge``."""
    stack = np.stack([tifffile.imread(path) for path in sorted(LUCCHI.glob("*.tif"))])
    reps = [-(-edge // s) for s in stack.shape]
    tiled = np.pad(stack, [(0, (r - 1) * s) for r, s in zip(reps, stack.shape)], mode="symmetric")
    volume = create_volume(container, RAW, (edge,) * 3, "uint8", (5, 5, 5), chunks=(64, 64, 64))
    for z in range(0, edge, 64):
        volume.array[z : z + 64] = tiled[z : z + 64, :edge, :edge]
    volume.mark_complete()


def original_scheme(container: str, checkpoint: str, edge: int) -> None:
    """The original's prediction: fp32 NCDHW, 204³ → 110³ blocks over the region's interior."""
    model, _ = load_checkpoint(checkpoint)
    raw = open_volume(container, RAW)
    out = create_volume(container, "volumes/original_scheme", (edge,) * 3, "uint8", (5, 5, 5), chunks=(110, 110, 110))
    context, size_in, size_out = 47, 204, 110
    interior_end = edge - context
    starts = range(context, interior_end, size_out)
    with torch.inference_mode():
        for z in starts:
            for y in starts:
                for x in starts:
                    data = np.asarray(raw.array[z - context : z - context + size_in, y - context : y - context + size_in, x - context : x - context + size_in])
                    data = np.pad(data, [(0, size_in - s) for s in data.shape])  # the last block reads past the data
                    logits = model(normalize_raw(torch.from_numpy(data))[None, None])
                    probability = torch.softmax(logits, dim=1)[0, 1].numpy()
                    block = np.rint(probability * 255).astype(np.uint8)
                    stop = [min(s + size_out, interior_end) for s in (z, y, x)]
                    out.array[z : stop[0], y : stop[1], x : stop[2]] = block[: stop[0] - z, : stop[1] - y, : stop[2] - x]


#: Runs the Python code in argv[1] and prints the process's own peak RSS (kB) as its last line.
_WITH_PEAK = (
    "import resource, sys\n"
    "try:\n    exec(sys.argv.pop(1))\n"
    "finally:\n    print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def measure(code: str, argv: list[str] = ()) -> dict[str, float]:
    """Run Python ``code`` (with ``sys.argv[1:] = argv``) in a fresh process; its wall time and own peak RSS."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WITH_PEAK, code, *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_line = [line for line in done.stderr.splitlines() if line.startswith("PEAK_KB")]
    if done.returncode != 0 or not peak_line:
        raise RuntimeError(done.stderr[-2000:])
    return {"seconds": seconds, "peak_gb": int(peak_line[-1].split()[1]) / 1e6}


def incasem_predict(container: Path, checkpoint: Path, edge: int) -> list[str]:
    """The arguments of a default `incasem predict` of the cubic region of ``edge`` voxels."""
    return [
        "predict", str(container), "--model", str(checkpoint),
        "--roi-offset", "0,0,0", "--roi-shape", f"{edge},{edge},{edge}", "-q",
    ]  # fmt: skip


#: `incasem ARGS...` in the measured process (exit status 0 required).
_CLI = "from incasem.cli import main\nstatus = main(sys.argv[1:])\nassert status == 0, status"


def report(name: str, edge: int, measured: dict[str, float]) -> float:
    kvox = edge**3 / measured["seconds"] / 1e3
    print(f"{name:<34} region {edge}³: {kvox:8.1f} kvox/s of the region, {measured['seconds']:7.1f} s, peak RSS {measured['peak_gb']:.2f} GB")
    return kvox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roi", type=int, default=256, help="edge of the cubic region (voxels)")
    parser.add_argument("--grow", action="store_true", help="also predict the region with edge ×2 (8× the voxels)")
    parser.add_argument("--skip-original", action="store_true", help="leave out the original's scheme (slow)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        edges = [args.roi, 2 * args.roi] if args.grow else [args.roi]
        checkpoint = save_checkpoint(
            Path(tmp) / "standard.pt", UNet(standard_config()),
            ModelCard(voxel_size_nm=(5, 5, 5), class_names=("background", "mito"), organelle="mito", source="benchmark"),
        )  # fmt: skip
        for edge in edges:
            container = Path(tmp) / f"cell_{edge}.zarr"
            write_raw(container, edge)
            if edge == args.roi and not args.skip_original:
                code = f"sys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom bench_predict import original_scheme\noriginal_scheme(*sys.argv[1:3], int(sys.argv[3]))"
                measured = measure(code, [str(container), str(checkpoint), str(edge)])
                results["original"] = report("original scheme (fp32, 110³ blocks)", edge, measured)
            measured = measure(_CLI, incasem_predict(container, checkpoint, edge))
            results[f"incasem_{edge}"] = report("incasem predict (defaults)", edge, measured)
    if "original" in results:
        print(f"speed-up of incasem predict over the original scheme on {args.roi}³: {results[f'incasem_{args.roi}'] / results['original']:.1f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
