"""Benchmark evaluation and instance labelling: blockwise vs the whole volume in memory.

Builds, in a temporary folder, volumes of real Lucchi++ mitochondria labels
(../shared/data/lucchi_pp_fibsem, mirrored to fill larger volumes) with a
prediction-like probability map (the labels smoothed, with noise and specks), a
segmentation (probability ≥ 0.5) and a metric mask (4/4 voxels), at a base size and
8 times larger (2× per axis). For each size it runs, each in a fresh subprocess:

- ``evaluate``: :func:`incasem.evaluate.evaluate.evaluate` with a threshold sweep
  (1000 thresholds, AP) and instance matching at IoU 0.5 / 0.75, blockwise
  (128³ blocks, all cores);
- ``evaluate, in memory``: the same numbers computed on whole arrays with
  :mod:`incasem.evaluate.metrics` (what a script that loads the volume does);
- ``instances``: :func:`incasem.postprocess.instances.label_instances`, blockwise,
  written to zarr;
- ``instances, in memory``: ``scipy.ndimage.label`` + small-object removal +
  ``relabel_sequential`` of the whole volume (read from zarr).

It prints voxels/s and the process's peak resident memory (``VmHWM``) of each,
and checks that both ways give the same numbers.

Usage::

    python benchmarks/bench_evaluate.py [--base 64,256,320] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

LUCCHI = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi_pp_fibsem" / "labels" / "mito"

_CHILD = """
import json, re, sys, time
from pathlib import Path
import numpy as np
from incasem.blockwise import RunOptions
from incasem.io.data_config import LabelSource
from incasem.io.volume import open_volume
container, what = Path(sys.argv[1]), sys.argv[2]
quiet = RunOptions(progress=False)
start = time.perf_counter()
if what == "evaluate":
    from incasem.evaluate.evaluate import EvaluationOptions, evaluate
    result = evaluate(container, "volumes/predictions/bench/0001", [LabelSource("volumes/labels/mito", 1)],
                      metric_masks=["volumes/metric_masks/mito"], options=EvaluationOptions(sweep=True, instances=True),
                      run=quiet).classes[0]
    numbers = [result.regions["exclusion_zone"].counts.f1, result.regions["plain"].histogram.average_precision(),
               *[s.counts.f1 for s in result.instances]]
elif what == "evaluate-memory":
    from incasem.evaluate import metrics
    read = lambda name: open_volume(container, name).read()
    seg, labels = read("volumes/predictions/bench/0001/segmentation"), read("volumes/labels/mito")
    probabilities, zone = read("volumes/predictions/bench/0001/prob_maps/class_1"), read("volumes/metric_masks/mito")
    numbers = [metrics.confusion_counts(seg, labels, zone).f1, metrics.average_precision(probabilities, labels),
               *[metrics.matched_instance_f1(seg != 0, labels != 0, t) for t in (0.5, 0.75)]]
elif what == "instances":
    from incasem.postprocess.foreground import foreground_of
    from incasem.postprocess.instances import label_instances
    out = label_instances(foreground_of(container, "volumes/predictions/bench/0001/segmentation"), "bench_instances",
                          mode="overwrite", run=quiet)
    numbers = [int(out.array.attrs["instances"])]
else:
    from incasem.postprocess.instances import instances_in_memory
    seg = open_volume(container, "volumes/predictions/bench/0001/segmentation").read()
    numbers = [int(instances_in_memory(seg != 0).max())]
seconds = time.perf_counter() - start
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
print(json.dumps({"seconds": seconds, "peak_bytes": peak, "numbers": numbers}))
"""


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Real labels mirrored to ``shape``."""
    files = sorted(LUCCHI.glob("*.tif"))
    stack = np.stack([tifffile.imread(f) for f in files]) != 0
    reps = [-(-s // t) for s, t in zip(shape, stack.shape)]
    tiles = stack
    for axis, count in enumerate(reps):
        tiles = np.concatenate([np.flip(tiles, axis) if i % 2 else tiles for i in range(count)], axis=axis)
    return tiles[: shape[0], : shape[1], : shape[2]].astype(np.uint8)


def _build(folder: Path, shape: tuple[int, int, int]) -> Path:
    """A container with labels, metric mask, probabilities and segmentation of ``shape``."""
    from incasem.blockwise import RunOptions
    from incasem.io.volume import create_volume
    from incasem.preprocess.masks import create_metric_mask

    labels = _labels(shape)
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(labels.astype(np.float32), 2) + rng.normal(0, 0.12, shape).astype(np.float32)
    specks = ndimage.binary_dilation(rng.random(shape) < 2e-5, iterations=2)
    probabilities = np.rint(np.clip(np.maximum(smooth, specks), 0, 1) * 255).astype(np.uint8)
    container = folder / f"cell_{'x'.join(map(str, shape))}.zarr"
    for name, data in (
        ("volumes/labels/mito", labels),
        ("volumes/predictions/bench/0001/prob_maps/class_1", probabilities),
        ("volumes/predictions/bench/0001/segmentation", (probabilities >= 128).astype(np.uint8)),
    ):
        volume = create_volume(container, name, shape, np.uint8, (5, 5, 5), chunks=(128, 128, 128))
        volume.write(volume.roi, data)
        volume.mark_complete()
    create_metric_mask(container, "volumes/labels/mito", run=RunOptions(progress=False))
    return container


def _run(container: Path, what: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(container), what], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="64,256,320", help="base shape Z,Y,X; the second size is 2x per axis")
    parser.add_argument("--tmp", type=Path, default=None)
    args = parser.parse_args()
    base = tuple(int(v) for v in args.base.split(","))
    print(f"{'volume':>16} {'what':<22} {'Mvox/s':>8} {'peak GB':>8}  numbers")
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        for factor in (1, 2):
            shape = tuple(s * factor for s in base)
            container = _build(Path(folder), shape)
            voxels = int(np.prod(shape))
            results = {}
            for what in ("evaluate", "evaluate-memory", "instances", "instances-memory"):
                results[what] = result = _run(container, what)
                print(f"{'x'.join(map(str, shape)):>16} {what.replace('-memory', ', in memory'):<22} "
                      f"{voxels / result['seconds'] / 1e6:8.2f} {result['peak_bytes'] / 1e9:8.2f}  "
                      f"{[round(n, 6) for n in result['numbers']]}")
            for pair in (("evaluate", "evaluate-memory"), ("instances", "instances-memory")):
                assert np.allclose(results[pair[0]]["numbers"], results[pair[1]]["numbers"], equal_nan=True), pair


if __name__ == "__main__":
    main()
