"""What each decision after the network does, on the validation part and on the held-out part.

For each model and a three-way recipe (``val.json`` selects, ``heldout.json`` is only
scored; ``training/mito_fibsem_5nm``), predicts both parts without a seed threshold and
scores the first organelle — foreground F1 and IoU pooled over each part's ROIs, all
voxels (inside the cell mask) and inside the exclusion zone (the metric masks) — after
each decision in turn, every one chosen on the validation part only:

1. ``argmax``: the model as it is (probability ≥ 0.5);
2. ``+ threshold``: the foreground threshold of best all-voxel F1 on the validation part;
3. ``+ seeds``: then the seed threshold of best all-voxel F1 there (``incasem predict
   --seed-threshold``: only objects that reach it somewhere are kept);
4. ``+ median N³``: a median filter of the probabilities before 2 and 3, each size
   re-choosing both thresholds (``--median``; measured to decide whether one is worth
   shipping).

The held-out rows apply the validation part's choices unchanged. Ends with the wall
time and the process's peak memory.

Usage (from the repository root, after the recipe's ``prepare.sh``)::

    python benchmarks/decisions.py MODEL [MODEL ...] --recipe training/mito_fibsem_5nm --data-root DATA [--runs-dir RUNS] [--median 3,5]

MODEL: a checkpoint, shipped name or run (``run:1@500``; anything ``--model`` takes).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from ship_model import SEED_CANDIDATES, unseeded_predictions  # noqa: E402

from incasem.model.zoo import resolve_model  # noqa: E402

#: Foreground thresholds tried on the validation part.
THRESHOLD_CANDIDATES = tuple(round(0.2 + 0.05 * k, 2) for k in range(14))

Part = list[tuple[np.ndarray, ...]]


def _counts(part: Part, threshold: float, seed: float | None) -> np.ndarray:
    """True positives, false positives and false negatives, all voxels and exclusion zone: shape (2, 3)."""
    counts = np.zeros((2, 3))
    for probability, truth, inside, scored in part:
        low = threshold * 255 - 0.5
        found = probability > low if seed is None else apply_hysteresis_threshold(probability, low, max(low, seed * 255 - 1e-3))
        for row, region in enumerate((inside, scored)):
            counts[row] += [(found & truth & region).sum(), (found & ~truth & region).sum(), (~found & truth & region).sum()]
    return counts


def _scores(counts: np.ndarray) -> list[float]:
    """F1 and IoU from counts (2, 3): [F1 all, IoU all, F1 exclusion zone, IoU exclusion zone]."""
    scores = []
    for tp, fp, fn in counts:
        scores += [2 * tp / max(2 * tp + fp + fn, 1), tp / max(tp + fp + fn, 1)]
    return scores


def _best(part: Part, candidates: list[tuple[float, float | None]]) -> tuple[float, float | None]:
    """The (threshold, seed) of best all-voxel F1 on ``part``."""
    return max(candidates, key=lambda choice: _scores(_counts(part, *choice))[0])


def _median(part: Part, size: int) -> Part:
    return [(ndimage.median_filter(probability, size=size), *rest) for probability, *rest in part]


def decisions(val: Part, held_out: Part, medians: list[int]) -> list[tuple[str, float, float | None, list[float], list[float]]]:
    """Rows (decision, threshold, seed, validation scores, held-out scores)."""
    rows = []

    def add(name: str, val_part: Part, held_part: Part, threshold: float, seed: float | None) -> None:
        rows.append((name, threshold, seed, _scores(_counts(val_part, threshold, seed)), _scores(_counts(held_part, threshold, seed))))

    for size in [1, *medians]:
        val_part, held_part = (val, held_out) if size == 1 else (_median(val, size), _median(held_out, size))
        prefix = "" if size == 1 else f"median {size}³ "
        if size == 1:
            add("argmax", val_part, held_part, 0.5, None)
        threshold, _ = _best(val_part, [(t, None) for t in THRESHOLD_CANDIDATES])
        add(prefix + "+ threshold", val_part, held_part, threshold, None)
        seeds = [(threshold, s if s > 0.5 else None) for s in SEED_CANDIDATES]
        add(prefix + "+ seeds", val_part, held_part, *_best(val_part, seeds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--runs-dir", type=Path, default=None, help="where run:ID models are")
    parser.add_argument("--median", default="3,5", help="median filter sizes to try (comma-separated; '' for none)")
    args = parser.parse_args()
    medians = [int(size) for size in args.median.split(",") if size]
    start = time.perf_counter()
    columns = [f"{part} {score} {region}" for part in ("val", "held-out") for region in ("all", "excl") for score in ("F1", "IoU")]
    print(" | ".join(["model", "decision", "threshold", "seed", *columns]))
    for model in args.models:
        checkpoint = resolve_model(model, runs_folder=args.runs_dir)
        val = unseeded_predictions(checkpoint, args.recipe / "val.json", args.data_root)
        held_out = unseeded_predictions(checkpoint, args.recipe / "heldout.json", args.data_root)
        for name, threshold, seed, val_scores, held_scores in decisions(val, held_out, medians):
            figures = " | ".join(f"{value:.3f}" for value in (*val_scores, *held_scores))
            print(f"{model} | {name} | {threshold:.2f} | {'none' if seed is None else seed} | {figures}", flush=True)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"wall {time.perf_counter() - start:.0f} s, peak memory {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
