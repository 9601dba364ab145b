"""Put a training run's checkpoint into the package as a shipped model, with its held-out scores.

A recipe splits its data three ways: ``train.json`` (trained on), ``val.json`` (selected on:
the run's validation picks the checkpoint, and this script picks the thresholds there) and
``heldout.json`` (held out: the final score only, nothing is chosen on it). A recipe without
``heldout.json`` (the older two-way split) picks the thresholds on ``train.json`` and treats
``val.json`` as its held-out part.

Sets the model's decision threshold: the class-balanced loss (DESIGN §6) trains the network
to call foreground wherever it is moderately likely, so argmax over-predicts a rare
organelle. The foreground threshold of best F1 on the selection part is folded into the
final convolution's background bias (``UNet.set_foreground_threshold``), so that the shipped
model's argmax, and hence ``incasem predict``'s segmentation, is that threshold and its
probabilities are recalibrated to match. Then picks, on the same part, the seed threshold of
best F1 (hysteresis: ``incasem predict`` keeps only the objects that reach it somewhere; the
card's ``seed_threshold``; none if no seed threshold beats keeping all). Then scores the
calibrated model on each part (plain = every voxel, and inside the exclusion zone; the
held-out part also with test-time augmentation) and, for a model of its 5 nm voxels, on the
bundled example (``incasem demo``'s crop), writes them with the training summary into the
checkpoint's card and saves it (without optimizer state) as
``src/incasem/model/shipped/<name>.pt``. Prints the figures for README / BENCHMARKS.

Usage (from the repository root, after ``bash training/<recipe>/train.sh``)::

    python training/ship_model.py RUN_FOLDER_OR_CHECKPOINT NAME --recipe training/mito_fibsem_5nm \\
        --data-root DATA --data "..." --selected-on "..." --held-out "..." --hardware "..." [--iteration N] [--hours H]

A run folder gives its best checkpoint (or that of ``--iteration``), the iteration and
the training time (the steps' own seconds); a checkpoint file needs ``--hours``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from incasem.blockwise import RunOptions
from incasem.demo import EXAMPLE_VOXEL_SIZE_NM, run_demo
from incasem.evaluate.evaluate import EvaluationOptions, evaluate_entry
from incasem.io.data_config import load_data_config
from incasem.io.volume import open_volume
from incasem.model.checkpoint import load_checkpoint, save_checkpoint
from incasem.model.shipped import SHIPPED_FOLDER
from incasem.predict import PredictOptions, predict_config
from incasem.runs import open_run, read_metrics
from incasem.train.calibrate import SEED_CANDIDATES  # the seed thresholds tried (0.5: every object of the segmentation)

QUIET = RunOptions(progress=False)


def _scores(results: list) -> dict:
    """Counts and scores per region of the first organelle, pooled over ``results``."""
    regions = [{region: scores.counts for region, scores in result.classes[0].regions.items()} for result in results]
    return {region: sum((r[region] for r in regions[1:]), regions[0][region]).to_json() for region in regions[0]}


def _predict_and_evaluate(checkpoint: Path, config_json: Path, data_root: Path, predict: PredictOptions, evaluation: EvaluationOptions) -> list:
    """Predict every ROI of a data config with ``checkpoint`` (into the config's containers) and evaluate each."""
    config = load_data_config(config_json, data_root=data_root)
    results = predict_config(config_json, str(checkpoint), predict, data_root=data_root, run=QUIET)
    return [evaluate_entry(entry, result.output.group, evaluation, run=QUIET) for entry, result in zip(config.entries, results, strict=True)]


def part_scores(checkpoint: Path, config_json: Path, data_root: Path, tta: bool = False) -> dict:
    """Plain and exclusion-zone scores over the ROIs of one part of a recipe's data, pooled."""
    return _scores(_predict_and_evaluate(checkpoint, config_json, data_root, PredictOptions(tta=tta), EvaluationOptions()))


def best_threshold(checkpoint: Path, config_json: Path, data_root: Path) -> float:
    """The foreground threshold of best F1 over the ROIs of ``config_json`` (one sweep over all of them)."""
    results = _predict_and_evaluate(checkpoint, config_json, data_root, PredictOptions(), EvaluationOptions(sweep=True))
    histograms = [result.classes[0].regions["plain"].histogram for result in results]
    return sum(histograms[1:], histograms[0]).best_threshold()




def unseeded_predictions(checkpoint: Path, config_json: Path, data_root: Path) -> list[tuple[np.ndarray, ...]]:
    """Predict each ROI of a data config without a seed threshold; per ROI, in memory (the
    recipes' ROIs are small): the first organelle's probabilities (uint8, 255 = 1), its
    labels, the cell mask and the metric masks (AND-combined with the cell mask), as bool."""
    config = load_data_config(config_json, data_root=data_root)
    results = predict_config(config_json, str(checkpoint), PredictOptions(seed_threshold="none"), data_root=data_root, run=QUIET)
    parts = []
    for entry, result in zip(config.entries, results, strict=True):
        probability = open_volume(entry.container, result.output.probabilities[0]).read()
        label = entry.labels[0]
        truth = open_volume(entry.container, label.dataset).read(entry.roi) == label.class_id
        inside = np.ones_like(truth) if entry.mask is None else open_volume(entry.container, entry.mask).read(entry.roi) != 0
        scored = inside.copy()
        for metric_mask in entry.metric_masks:
            scored &= open_volume(entry.container, metric_mask).read(entry.roi) != 0
        parts.append((probability, truth, inside, scored))
    return parts


def seed_sweep(checkpoint: Path, config_json: Path, data_root: Path) -> dict:
    """Pooled F1 over a data config's ROIs for each of :data:`SEED_CANDIDATES`, and the plain
    segmentation's objects: how many, and how many hold no labelled voxel.

    The model's probabilities of each ROI (:func:`unseeded_predictions`) are thresholded with ``skimage.filters.apply_hysteresis_threshold``
    at 0.5 and each candidate, the rule ``incasem predict --seed-threshold`` applies blockwise.
    """
    counts, objects, false_objects = np.zeros((len(SEED_CANDIDATES), 3)), 0, 0
    for probability, truth, inside, _ in unseeded_predictions(checkpoint, config_json, data_root):
        for row, seed in enumerate(SEED_CANDIDATES):
            found = apply_hysteresis_threshold(probability, 127.5, seed * 255 - 1e-3) & inside
            counts[row] += [(found & truth).sum(), (found & ~truth & inside).sum(), (~found & truth & inside).sum()]
        plain, count = ndimage.label((probability >= 128) & inside)
        objects += count
        false_objects += int((np.bincount(plain[truth], minlength=count + 1)[1:] == 0).sum())
    f1 = 2 * counts[:, 0] / np.maximum(2 * counts[:, 0] + counts[:, 1] + counts[:, 2], 1)
    return {"f1": dict(zip(SEED_CANDIDATES, f1.tolist(), strict=True)), "objects": objects, "objects_without_label": false_objects}


def best_seed_threshold(checkpoint: Path, config_json: Path, data_root: Path) -> float | None:
    """The seed threshold of best pooled F1 over the ROIs of ``config_json``, ``None`` if keeping every object is best."""
    f1 = seed_sweep(checkpoint, config_json, data_root)["f1"]
    best = max(f1, key=f1.get)
    return None if best == SEED_CANDIDATES[0] else best


def training_seconds(metrics: list[dict], iteration: int) -> float:
    """Seconds of training steps up to ``iteration`` (each step once, as last logged: a resumed
    run repeats the steps after its last checkpoint; pauses between sessions do not count)."""
    steps = {row["iteration"]: row["seconds_per_iteration"] for row in metrics if row["split"] == "train" and row["iteration"] <= iteration}
    return sum(steps.values())


def demo_scores(checkpoint: Path) -> dict:
    """Scores on the bundled example, as ``incasem demo`` computes them."""
    with tempfile.TemporaryDirectory() as folder:
        return _scores([run_demo(Path(folder) / "demo", str(checkpoint), run=QUIET, say=lambda line: None).evaluation])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a run folder, or a checkpoint file")
    parser.add_argument("name")
    parser.add_argument(
        "--recipe", type=Path, required=True, help="recipe folder: train.json, val.json (selection) and heldout.json (held out; without it val.json is)"
    )
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--data", required=True, help="what it was trained on, in words")
    parser.add_argument("--selected-on", required=True, help="what chose the checkpoint and the thresholds, in words")
    parser.add_argument("--held-out", required=True, help="the held-out part, in words")
    parser.add_argument("--score-training", action="store_true", help="also score the training part (trained on)")
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--iteration", type=int, default=None, help="default: the run's best checkpoint")
    parser.add_argument("--hours", type=float, default=None, help="training time, for a checkpoint file")
    parser.add_argument("--base-hours", type=float, default=0.0, help="a fine-tuned run: training hours of the model it started from")
    parser.add_argument("--base-iterations", type=int, default=0, help="a fine-tuned run: iterations of the model it started from")
    parser.add_argument("--keep-threshold", action="store_true", help="the checkpoint is a shipped one: keep its foreground threshold")
    parser.add_argument("--no-tta", action="store_true", help="skip the held-out scores with --tta (16 passes)")
    parser.add_argument("--trained-by", default=None, help="how it was trained (default: the recipe's train.sh)")
    args = parser.parse_args()

    if args.source.is_dir():
        run = open_run(args.source.parent, args.source.name)
        record = run.record()
        chosen = record["best"] if args.iteration is None else next(c for c in record["checkpoints"] if c["iteration"] == args.iteration)
        checkpoint, iteration = run.path / chosen["file"], chosen["iteration"]
        hours = round(training_seconds(read_metrics(run), iteration) / 3600, 2)
    else:
        checkpoint, hours, iteration = args.source, args.hours, None
    model, card = load_checkpoint(checkpoint)
    iteration = iteration or card.iteration or (card.training or {}).get("iterations")
    three_way = (args.recipe / "heldout.json").is_file()
    selection = args.recipe / ("val.json" if three_way else "train.json")
    held_out = args.recipe / ("heldout.json" if three_way else "val.json")
    chosen_on = f"{'validation part' if three_way else 'training volumes'} ({selection.name}), best F1"
    if args.keep_threshold:
        threshold = card.training["decision_threshold"]["threshold"]
    else:
        threshold = best_threshold(checkpoint, selection, args.data_root)
        model.set_foreground_threshold(threshold)
    with tempfile.TemporaryDirectory() as folder:
        without_seed = save_checkpoint(Path(folder) / "without_seed" / f"{args.name}.pt", model, card)
        card = replace(card, seed_threshold=best_seed_threshold(without_seed, selection, args.data_root))
        calibrated = save_checkpoint(Path(folder) / f"{args.name}.pt", model, card)
        scores = {"held_out": part_scores(calibrated, held_out, args.data_root)}
        if three_way:
            scores["selected_on"] = part_scores(calibrated, selection, args.data_root)
        if args.score_training:
            scores["trained_on"] = part_scores(calibrated, args.recipe / "train.json", args.data_root)
        if tuple(card.voxel_size_nm) == EXAMPLE_VOXEL_SIZE_NM:  # the bundled example is FIB-SEM at 5 nm
            scores["bundled_example"] = demo_scores(calibrated)
        if not args.no_tta:
            scores["held_out_tta"] = part_scores(calibrated, held_out, args.data_root, tta=True)
    training = {
        **(card.training or {}),
        "data": args.data,
        "selected_on": args.selected_on,
        "held_out": args.held_out,
        "iterations": iteration + args.base_iterations,
        "hours": round(hours + args.base_hours, 2),
        "hardware": args.hardware,
        "decision_threshold": card.training["decision_threshold"] if args.keep_threshold else {"threshold": threshold, "chosen_on": chosen_on},
        "seed_threshold": {"threshold": card.seed_threshold, "chosen_on": chosen_on},
        "recipe": args.trained_by or f"bash {args.recipe.as_posix()}/train.sh",
    }
    shipped = replace(card, source=f"incasem-shipped:{args.name}", training=training, validation_scores=scores)
    SHIPPED_FOLDER.mkdir(exist_ok=True)
    path = save_checkpoint(SHIPPED_FOLDER / f"{args.name}.pt", model.to(torch.float32), shipped)
    print(json.dumps({"checkpoint": str(checkpoint), "shipped": str(path), "training": training, "scores": scores}, indent=2))


if __name__ == "__main__":
    main()
