"""Learning curves on the real data of ../shared/data: validation F1 vs iteration, held-out ROIs.

Two presets, each trained with ``incasem.train.trainer.train`` from scratch:

* ``isotropic``: Lucchi++ FIB-SEM (5 nm): trains on sections 0-109, validates on
  sections 120-164 (rows 128-383, columns 160-479), which no training label touches.
* ``anisotropic``: Drosophila VNC ssTEM (50 × 4.6 × 4.6 nm) with the shipped
  ``anisotropic`` config: trains on columns 0-639 of all 20 sections, validates on
  columns 704-1023.

Validation runs inside the metric mask (exclusion zone of 4 voxels in / out around the
labels, 2 in-plane for the ssTEM); at the end the best checkpoint is scored on the
validation ROI both plain (every voxel) and with the exclusion zone. Prints the curve
(iteration, F1, IoU, loss) and the final scores; the run folder keeps everything
(``tensorboard --logdir``).

Usage::

    python benchmarks/learning_curve.py isotropic [--iterations 1500] [key=value ...]
    python benchmarks/learning_curve.py anisotropic [--iterations 1500] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"

PRESETS = {
    "isotropic": {
        "data": DATA / "lucchi_pp_fibsem", "voxel_size": "5,5,5", "config": None, "width": 4,
        "train": ((0, 0, 0), (110, 512, 640)), "val": ((120, 128, 160), (45, 256, 320)),
    },
    "anisotropic": {
        "data": DATA / "drosophila_vnc_sstem", "voxel_size": "50,4.6,4.6", "config": "anisotropic", "width": 2,
        "train": ((0, 0, 0), (20, 640, 640)), "val": ((0, 0, 704), (20, 640, 320)),
    },
}


def prepare(preset: dict, folder: Path) -> tuple[Path, Path, Path]:
    """Convert raw and labels to zarr, make the metric mask; write train, val and plain-val configs."""
    from incasem.cli import main

    cell = folder / "cell.zarr"
    if not (cell / "volumes" / "metric_masks").exists():
        quiet = ["-q"]
        assert main(["convert", str(preset["data"] / "image"), str(cell), "--voxel-size", preset["voxel_size"], *quiet]) == 0
        assert main(["convert", str(preset["data"] / "labels" / "mito"), str(cell), "-d", "volumes/labels/mito", "--like", f"{cell}:volumes/raw", *quiet]) == 0
        width = str(preset["width"])
        assert main(["metric-mask", str(cell), "--labels", "volumes/labels/mito", "--exclude-inwards", width, "--exclude-outwards", width, *quiet]) == 0
    voxel_size = [float(v) for v in preset["voxel_size"].split(",")]
    paths = []
    for name, (offset, shape), masks in (
        ("train", preset["train"], []),
        ("val", preset["val"], ["volumes/metric_masks/mito"]),
        ("val_plain", preset["val"], []),
    ):
        entry = {"file": "cell.zarr", "offset": list(offset), "shape": list(shape), "voxel_size": voxel_size,
                 "raw": "volumes/raw", "labels": {"volumes/labels/mito": 1}, "metric_masks": masks}
        path = folder / f"{name}.json"
        path.write_text(json.dumps({name: entry}))
        paths.append(path)
    return paths[0], paths[1], paths[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--every", type=int, default=100, help="validate every N iterations")
    parser.add_argument("--folder", type=Path, default=Path("learning_curves"))
    parser.add_argument("overrides", nargs="*", help="training config overrides key=value")
    args = parser.parse_intermixed_args()

    from incasem.io.data_config import load_data_config
    from incasem.model.checkpoint import load_checkpoint
    from incasem.train.config import load_training_config
    from incasem.train.trainer import TrainOptions, train
    from incasem.train.validate import validate

    preset = PRESETS[args.preset]
    folder = args.folder / args.preset
    folder.mkdir(parents=True, exist_ok=True)
    train_json, val_json, plain_json = prepare(preset, folder)
    config = load_training_config(preset["config"], [
        f"training.iterations={args.iterations}", f"intervals.validate_every={args.every}",
        f"intervals.save_every={args.every}", f"intervals.snapshot_every={args.every}", "training.seed=1", *args.overrides,
    ])
    began = time.perf_counter()
    run = train(train_json, val_json, config, options=TrainOptions(device="auto", runs_dir=folder / "runs", mlflow=False, log=print))
    hours = (time.perf_counter() - began) / 3600
    print(f"\n{args.preset}: run {run.path}, {args.iterations} iterations in {hours:.2f} h; overrides: {' '.join(args.overrides) or 'none'}")
    print("iteration  F1 (exclusion zone)  IoU     loss")
    for line in run.metrics_path.read_text().splitlines():
        entry = json.loads(line)
        if entry["split"] == "validation" and entry["roi"] is None:
            f1, iou = entry.get("f1"), entry.get("iou")
            print(f"{entry['iteration']:9d}  {f1 if f1 is not None else float('nan'):19.4f}  {iou if iou is not None else float('nan'):.4f}  {entry['loss']:.4f}")
    best = run.record()["best"]
    model, card = load_checkpoint(run.path / best["file"])
    for label, path in (("plain", plain_json), ("exclusion zone", val_json)):
        scores = validate(model, load_data_config(path), card.class_names, device=torch.device("cpu"), precision="fp32").summary
        print(f"best checkpoint (iteration {best['iteration']}), held-out ROI, {label}: "
              f"F1 {scores['f1']:.4f}  IoU {scores['iou']:.4f}  precision {scores['precision']:.4f}  recall {scores['recall']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
