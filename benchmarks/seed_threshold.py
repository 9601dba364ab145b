"""What a seed threshold does to a model's F1: training volumes side by side with the held-out part.

For each seed threshold ``training/ship_model.py`` tries (0.5 = keep every object, then
0.80 … 0.995), prints the pooled foreground F1 (all voxels) on a recipe's training ROIs
(``train.json``: where the shipped seed threshold is chosen) and on its held-out ROIs
(``val.json``), and how many objects of the plain segmentation hold no labelled voxel —
the false detections a seed threshold can remove. Ends with the wall time and the
process's peak memory.

Usage (from the repository root, after the recipe's ``prepare.sh``)::

    python benchmarks/seed_threshold.py MODEL --recipe training/mito_fibsem_5nm --data-root DATA

MODEL: a checkpoint, shipped name or run (anything ``--model`` takes) — predicted here
without its own seed threshold.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from ship_model import seed_sweep  # noqa: E402

from incasem.model.zoo import resolve_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    checkpoint = resolve_model(args.model)
    train = seed_sweep(checkpoint, args.recipe / "train.json", args.data_root)
    held_out = seed_sweep(checkpoint, args.recipe / "val.json", args.data_root)
    print(f"model {args.model}, recipe {args.recipe}: F1, all voxels, pooled over the ROIs")
    print("seed threshold   training   held out")
    for seed, f1 in train["f1"].items():
        print(f"{'none' if seed == 0.5 else seed:>14}   {f1:8.3f}   {held_out['f1'][seed]:8.3f}")
    best = max(train["f1"], key=train["f1"].get)
    print(f"chosen on the training ROIs: {'none' if best == 0.5 else best} -> held out F1 {held_out['f1'][best]:.3f}")
    for name, sweep in (("training", train), ("held out", held_out)):
        print(f"{name}: {sweep['objects']} objects in the plain segmentation, {sweep['objects_without_label']} without a labelled voxel")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"wall {time.perf_counter() - start:.0f} s, peak memory {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
