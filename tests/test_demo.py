"""The README's main job: the bundled demo, end to end on real EM (convert → equalize →
metric mask → predict with the bundled model, scored against manual labels → export)."""

import re
import subprocess
from pathlib import Path

import numpy as np
import tifffile

from incasem.io.volume import open_volume

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_the_whole_workflow(tmp_path):
    result = subprocess.run(["bash", str(REPO / "examples" / "demo.sh"), str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    f1 = float(re.search(r"mito: F1 ([0-9.]+)", result.stdout).group(1))
    assert f1 > 0.45, f"the demo model (held-out F1 0.66 over all voxels) should find the mitochondria, got F1 {f1}"
    cell = tmp_path / "demo.zarr"
    raw = open_volume(cell, "volumes/raw")
    equalized = open_volume(cell, "volumes/raw_equalized_0.02")
    assert raw.shape == equalized.shape == (48, 192, 192) and raw.voxel_size == (5, 5, 5)
    assert equalized.read().std() > raw.read().std(), "CLAHE should spread the grey values"
    exported = sorted((tmp_path / "segmentation_tiff").glob("*.tif"))
    assert len(exported) == 48
    segmentation = np.stack([tifffile.imread(f) for f in exported])
    assert set(np.unique(segmentation)) <= {0, 255}
    labels = open_volume(cell, "volumes/labels/mito").read() != 0
    dice = 2 * (labels & (segmentation > 0)).sum() / (labels.sum() + (segmentation > 0).sum())
    assert dice > 0.55  # scored everywhere here, not only inside the metric mask
