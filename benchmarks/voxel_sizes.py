"""The shipped 5 nm FIB-SEM model on data of other voxel sizes (issue #22): accuracy and throughput.

The cell: ``heldout.zarr`` of ``training/mito_fibsem_5nm/prepare.sh`` — Lucchi++ columns 832-1023,
all 165 sections and 768 rows, which ``mito-fibsem-5nm`` never trained on and which chose none of
its thresholds. For each voxel size v (nm, isotropic) the cell is made as if imaged at v:

- raw: the cell's original raw (``volumes/raw``, before CLAHE) resampled to v with
  ``skimage.transform.resize`` (linear; Gaussian anti-aliasing when v > 5), rounded to uint8;
- labels: the mitochondria labels resampled the same way (linear, no smoothing), ≥ 0.5;

then processed as a user would: ``incasem equalize`` (default CLAHE), ``incasem metric-mask``
(exclusion zone of round(20 nm / v) voxels inwards and outwards, about the 4 voxels of 5 nm), and
``incasem predict CELL --model mito-fibsem-5nm`` under ``/usr/bin/time -v`` (wall time and peak
memory of the whole process: start-up, resampling, network, zarr in and out). Scores: foreground
F1 and IoU of mitochondria over all voxels and inside the exclusion zone, against the labels at v.
v = 5 runs the same pipeline without resampling: the native score.

``--equalized-source`` resamples the cell's CLAHE-equalised raw instead and skips ``incasem
equalize``: it separates what the resampled prediction costs from what CLAHE at another voxel
size (the same kernel in voxels covers another area) costs. ``--as-5nm`` stores the cells with
a voxel size of 5 nm whatever they were imaged at, so the model runs on them unresampled: what
a user of the original does to get past its voxel-size check (editing the dataset's metadata).

Usage (from the repository root)::

    bash training/mito_fibsem_5nm/prepare.sh ../shared/data/lucchi_pp_fibsem DATA
    python benchmarks/voxel_sizes.py --cell DATA/heldout.zarr --work WORK [--sizes 5,4,6,8,10]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from skimage.transform import resize

from incasem.blockwise import RunOptions
from incasem.evaluate.evaluate import evaluate
from incasem.io.data_config import LabelSource
from incasem.io.volume import create_volume, dataset_exists, open_volume

QUIET = RunOptions(progress=False)
RAW, EQUALIZED, LABELS, METRIC_MASK = "volumes/raw", "volumes/raw_equalized_0.02", "volumes/labels/mito", "volumes/metric_masks/mito"
SOURCE_NM = 5
EXCLUSION_NM = 20


def make_cell(source: Path, target: Path, voxel_nm: float, raw_dataset: str, stored_nm: float) -> tuple[int, int, int]:
    """``target``: raw (``raw_dataset`` of ``source``, stored under the same name) and labels of
    ``source`` as if imaged at ``voxel_nm`` (isotropic), stored with voxel size ``stored_nm``; returns its shape."""
    raw = open_volume(source, raw_dataset)
    shape = tuple(max(1, round(n * SOURCE_NM / voxel_nm)) for n in raw.shape)
    if target.exists() and dataset_exists(target, LABELS):
        return open_volume(target, LABELS).shape
    pixels = resize(raw.read().astype(np.float32), shape, order=1, anti_aliasing=voxel_nm > SOURCE_NM, preserve_range=True)
    labels = resize(open_volume(source, LABELS).read().astype(np.float32), shape, order=1, anti_aliasing=False, preserve_range=True) >= 0.5
    size = (stored_nm,) * 3
    for name, data in ((raw_dataset, np.clip(np.rint(pixels), 0, 255).astype(np.uint8)), (LABELS, labels.astype(np.uint8))):
        volume = create_volume(target, name, shape, "uint8", size, (0, 0, 0), (64, 128, 128))
        volume.write(volume.roi, data)
        volume.mark_complete()
    return shape


def incasem(*args: str) -> str:
    """Run ``incasem ARGS`` under ``/usr/bin/time -v``; its stderr."""
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "incasem", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"incasem {' '.join(args)} failed:\n{done.stderr}")
    return done.stderr


def _time_field(stderr: str, name: str) -> str:
    match = re.search(rf"{re.escape(name)}: (.+)", stderr)
    assert match, name
    return match.group(1).strip()


def wall_seconds(stderr: str) -> float:
    """Elapsed wall time reported by ``/usr/bin/time -v``."""
    parts = [float(p) for p in _time_field(stderr, "Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", type=Path, required=True, help="heldout.zarr of training/mito_fibsem_5nm/prepare.sh")
    parser.add_argument("--work", type=Path, required=True, help="folder for the cells at each voxel size")
    parser.add_argument("--model", default="mito-fibsem-5nm")
    parser.add_argument("--sizes", default="5,4,6,8,10", help="voxel sizes, nm")
    parser.add_argument("--out", type=Path, default=Path("voxel_sizes.jsonl"))
    parser.add_argument("--equalized-source", action="store_true", help="resample the CLAHE-equalised raw, no CLAHE at the new voxel size")
    parser.add_argument("--as-5nm", action="store_true", help="store every cell as 5 nm: the model runs on it unresampled")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{'nm':>4} {'shape':>16} {'Mvox':>6} {'predict s':>9} {'kvox/s':>7} {'peak GB':>7} {'F1':>6} {'IoU':>6} {'F1 excl':>8} {'IoU excl':>9}")
    for size in (float(s) for s in args.sizes.split(",")):
        cell = args.work / f"cell_{size:g}nm.zarr"
        shape = make_cell(args.cell, cell, size, EQUALIZED if args.equalized_source else RAW, SOURCE_NM if args.as_5nm else size)
        if not dataset_exists(cell, EQUALIZED):
            incasem("equalize", str(cell), "-q")
        width = str(max(1, round(EXCLUSION_NM / size)))
        if not dataset_exists(cell, METRIC_MASK):
            incasem("metric-mask", str(cell), "--labels", LABELS, "--exclude-inwards", width, "--exclude-outwards", width, "-q")
        timed = incasem("predict", str(cell), "--model", args.model, "-q")
        prediction = sorted((cell / "volumes/predictions" / args.model).iterdir())[-1].name
        group = f"volumes/predictions/{args.model}/{prediction}"
        result = evaluate(cell, group, [LabelSource(LABELS, 1)], metric_masks=[METRIC_MASK], labelled=(), run=QUIET)
        regions = result.classes[0].regions
        voxels = int(np.prod(shape))
        seconds = wall_seconds(timed)
        row = {
            "voxel_size_nm": size,
            "equalized_source": args.equalized_source,
            "stored_as_5nm": args.as_5nm,
            "shape": list(shape),
            "exclusion_voxels": int(width),
            "prediction": group,
            "predict_seconds": seconds,
            "kvox_per_s": voxels / seconds / 1e3,
            "peak_rss_gb": int(_time_field(timed, "Maximum resident set size (kbytes)")) / 1e6,
            **{f"{region}_{metric}": getattr(regions[region].counts, metric) for region in ("plain", "exclusion_zone") for metric in ("f1", "iou")},
        }
        with args.out.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(row) + "\n")
        print(
            f"{size:>4g} {'×'.join(map(str, shape)):>16} {voxels / 1e6:>6.1f} {seconds:>9.0f} {row['kvox_per_s']:>7.0f} {row['peak_rss_gb']:>7.2f} "
            f"{row['plain_f1']:>6.3f} {row['plain_iou']:>6.3f} {row['exclusion_zone_f1']:>8.3f} {row['exclusion_zone_iou']:>9.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
