"""What fine-tuning on a few labelled sections buys on a cell the model never saw (issue #21).

The pair: the shipped ``mito-fibsem-5nm`` (trained on Lucchi++ sections 0-51 and 116-164 of rows
0-511, columns 0-639) and the cell ``val.zarr`` of ``training/mito_fibsem_5nm/prepare.sh``:
Lucchi++ columns 640-831, all 768 rows and 165 sections, which the model never trained on. The
cell is split in z:

- **labelling part**, sections 0-99: the user labels k sections spread through it
  (k = 1, 2, 4, 8, 16; a labelled mask ``volumes/labelled/bench_sparse_<k>`` marks them), or,
  at equal labelling effort, one dense block of as many voxels (``bench_dense_<k>``);
- **scored part**, sections 110-164 (55 sections, 8.1 Mvoxels, all rows and columns): 10
  sections (50 nm) away from every labelled voxel; it chose nothing.

Each point runs ``incasem.train.finetune.fine_tune`` with its defaults except the
iterations (``--iterations``) and a fixed seed: the labelled region's far quarter of labelled
mitochondria (along y) validates and chooses the checkpoint and the thresholds. Then the run's
model predicts the scored part, which is scored against the real labels: foreground F1 and IoU
over all voxels and inside the exclusion zone (metric mask, 4/4 voxels). k = 0 is the base model.
Prints a table with the minutes of each fine-tune (training, validation and the decisions) and the
process's peak memory, and appends one JSON line per point to ``--out``.

Usage (from the repository root)::

    bash training/mito_fibsem_5nm/prepare.sh ../shared/data/lucchi_pp_fibsem DATA
    python benchmarks/fine_tune_curve.py --cell DATA/val.zarr --runs-dir RUNS [--sparse 1,2,4,8,16] [--dense 4,16] [--iterations 200]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

from incasem.blockwise import RunOptions
from incasem.evaluate.evaluate import evaluate
from incasem.geometry import Roi
from incasem.io.data_config import LabelSource
from incasem.io.layout import RAW_EQUALIZED
from incasem.io.volume import create_volume, dataset_exists, open_volume
from incasem.predict import PredictOptions, predict_container
from incasem.train.finetune import fine_tune
from incasem.train.trainer import TrainOptions

QUIET = RunOptions(progress=False)
LABELS = "volumes/labels/mito"
METRIC_MASK = "volumes/metric_masks/mito"
LABELLING_SECTIONS = (0, 100)
SCORED_SECTIONS = (110, 165)


def sparse_mask(shape: tuple[int, int, int], k: int) -> np.ndarray:
    """k sections spread evenly through the labelling part (the middle of k equal slabs)."""
    mask = np.zeros(shape, np.uint8)
    start, stop = LABELLING_SECTIONS
    sections = [start + int((i + 0.5) * (stop - start) / k) for i in range(k)]
    mask[sections] = 1
    return mask


def dense_mask(shape: tuple[int, int, int], k: int) -> np.ndarray:
    """One block of k sections' voxels (all columns), as deep as it is high, centred in the labelling part."""
    mask = np.zeros(shape, np.uint8)
    area = k * shape[1]  # rows x sections of the block, all columns
    depth = min(int(np.sqrt(area) + 0.5), LABELLING_SECTIONS[1] - LABELLING_SECTIONS[0])
    rows = int(area / depth + 0.5)
    z0 = (LABELLING_SECTIONS[0] + LABELLING_SECTIONS[1] - depth) // 2
    y0 = (shape[1] - rows) // 2
    mask[z0 : z0 + depth, y0 : y0 + rows] = 1
    return mask


def write_mask(cell: Path, name: str, mask: np.ndarray) -> str:
    dataset = f"volumes/labelled/{name}"
    if not dataset_exists(cell, dataset):
        raw = open_volume(cell, RAW_EQUALIZED)
        volume = create_volume(cell, dataset, mask.shape, "uint8", raw.voxel_size, tuple(o * v for o, v in zip(raw.roi.offset, raw.voxel_size)), (33, 128, 192))
        volume.write(volume.roi, mask)
        volume.mark_complete()
    return dataset


def score(cell: Path, model: str, runs_dir: Path) -> dict:
    roi = open_volume(cell, RAW_EQUALIZED).roi
    scored = Roi((roi.offset[0] + SCORED_SECTIONS[0], roi.offset[1], roi.offset[2]), (SCORED_SECTIONS[1] - SCORED_SECTIONS[0], roi.shape[1], roi.shape[2]))
    started = time.perf_counter()
    output = predict_container(cell, model, RAW_EQUALIZED, roi=scored, options=PredictOptions(), runs_dir=runs_dir, run=QUIET)
    seconds = time.perf_counter() - started
    result = evaluate(cell, output.group, [LabelSource(LABELS, 1)], metric_masks=[METRIC_MASK], labelled=(), roi=scored, run=QUIET)
    regions = result.classes[0].regions
    return {
        "prediction": output.group,
        "predict_mvox_per_s": scored.size / seconds / 1e6,
        **{f"{region}_{metric}": getattr(regions[region].counts, metric) for region in ("plain", "exclusion_zone") for metric in ("f1", "iou")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", type=Path, required=True, help="val.zarr of training/mito_fibsem_5nm/prepare.sh")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--model", default="mito-fibsem-5nm")
    parser.add_argument("--sparse", default="1,2,4,8,16")
    parser.add_argument("--dense", default="4,16")
    parser.add_argument("--order", default="0,s4,d4,s16,d16,s1,s2,s8", help="points in the order to run (0 = the base model)")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("fine_tune_curve.jsonl"))
    args = parser.parse_args()
    shape = open_volume(args.cell, RAW_EQUALIZED).shape
    wanted = {f"s{k}" for k in args.sparse.split(",") if k} | {f"d{k}" for k in args.dense.split(",") if k} | {"0"}
    print(f"{'point':<10} {'labelled voxels':>15} {'minutes':>8} {'it/s':>6} {'val F1':>7} {'F1':>6} {'IoU':>6} {'F1 excl':>8} {'IoU excl':>9}")
    for point in [p for p in args.order.split(",") if p in wanted]:
        row: dict = {"point": point, "iterations": 0, "minutes": 0.0, "labelled_voxels": 0, "val_f1": None}
        model = args.model
        if point != "0":
            k = int(point[1:])
            mask = sparse_mask(shape, k) if point[0] == "s" else dense_mask(shape, k)
            labelled = write_mask(args.cell, f"bench_{'sparse' if point[0] == 's' else 'dense'}_{k}", mask)
            started = time.perf_counter()
            run = fine_tune(
                args.cell,
                args.model,
                [f"training.iterations={args.iterations}", "training.seed=1"],
                labels=LABELS,
                labelled=labelled,
                options=TrainOptions(runs_dir=args.runs_dir, mlflow=False),
            )
            assert run is not None
            row.update(
                run=run.id,
                iterations=args.iterations,
                minutes=(time.perf_counter() - started) / 60,
                labelled_voxels=int(mask.sum()),
                val_f1=(run.record().get("model") or {}).get("f1", {}).get("seeded"),
                decisions={key: run.record()["model"].get(key) for key in ("threshold", "seed_threshold")} if run.record().get("model") else None,
            )
            model = f"run:{run.id}"
        row.update(score(args.cell, model, args.runs_dir))
        row["peak_rss_gb"] = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1e6
        with args.out.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(row) + "\n")
        val = "-" if row["val_f1"] is None else f"{row['val_f1']:.3f}"
        speed = row["iterations"] / (row["minutes"] * 60) if row["minutes"] else 0.0
        print(
            f"{point:<10} {row['labelled_voxels']:>15,} {row['minutes']:>8.1f} {speed:>6.2f} {val:>7} {row['plain_f1']:>6.3f} {row['plain_iou']:>6.3f} "
            f"{row['exclusion_zone_f1']:>8.3f} {row['exclusion_zone_iou']:>9.3f}",
            flush=True,
        )
    print(f"peak memory {max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1e6:.1f} GB")


if __name__ == "__main__":
    main()
