"""Decisions chosen on validation data (foreground and seed threshold), on real FIB-SEM with the bundled demo model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from incasem.evaluate.metrics import confusion_counts
from incasem.geometry import Roi
from incasem.io.data_config import load_data_config
from incasem.io.volume import create_volume
from incasem.model.checkpoint import load_checkpoint
from incasem.model.shipped import SHIPPED_FOLDER
from incasem.predict.core import predict_array
from incasem.train.calibrate import MIN_SEED_GAIN_F1, calibrated, choose_decisions
from tests.helpers import LUCCHI, read_stack

DEMO_MODEL = SHIPPED_FOLDER / "mito-fibsem-5nm-small.pt"
#: Lucchi++ sections 60-91 of the repository's crop (held out from the demo model's training).
REGION = (slice(8, 40), slice(0, 192), slice(0, 192))
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def validation(tmp_path_factory) -> Path:
    """A validation config over real raw and labels; the labels of every fourth section only are labelled."""
    folder = tmp_path_factory.mktemp("calibrate")
    raw, mito = read_stack(LUCCHI / "image", *REGION), (read_stack(LUCCHI / "labels" / "mito", *REGION) != 0).astype(np.uint8)
    labelled = np.zeros_like(mito)
    labelled[::4] = 1
    for name, array in {"volumes/raw": raw, "volumes/labels/mito": mito, "volumes/labelled/mito": labelled}.items():
        volume = create_volume(folder / "cell.zarr", name, array.shape, "uint8", (5, 5, 5), (0, 0, 0), chunks=(32, 96, 96))
        volume.write(volume.roi, array)
        volume.mark_complete()
    entry = {"file": "cell.zarr", "voxel_size": [5, 5, 5], "raw": "volumes/raw", "labels": {"volumes/labels/mito": 1}}
    (folder / "dense.json").write_text(json.dumps({"val": entry}))
    (folder / "sparse.json").write_text(json.dumps({"val": {**entry, "labelled": "volumes/labelled/mito"}}))
    return folder


def _probability(model, raw: np.ndarray) -> np.ndarray:
    context = model.config.context
    padded = np.pad(raw, [(c, c) for c in context], mode="reflect")
    return predict_array(model, padded, Roi(context, raw.shape), block_shape=None, padding="reflect", precision="fp32", device=CPU)[1]


def test_the_chosen_threshold_is_folded_into_the_models_argmax(validation):
    model, _card = load_checkpoint(DEMO_MODEL)
    config = load_data_config(validation / "dense.json")
    decisions = choose_decisions(model, config, device=CPU, precision="fp32")
    assert 0.01 <= decisions.threshold <= 0.99
    assert decisions.f1["threshold"] >= decisions.f1["argmax"]
    assert decisions.voxels == 32 * 192 * 192
    raw = read_stack(LUCCHI / "image", *REGION)
    before, after = _probability(model, raw), _probability(calibrated(model, decisions.threshold), raw)
    near = np.abs(before - decisions.threshold) < 1e-4  # float rounding at the threshold itself
    np.testing.assert_array_equal((after >= 0.5)[~near], (before >= decisions.threshold)[~near])
    truth = read_stack(LUCCHI / "labels" / "mito", *REGION) != 0
    assert confusion_counts(after >= 0.5, truth).f1 == pytest.approx(decisions.f1["threshold"], abs=2e-3)
    if decisions.seed_threshold is not None:
        assert decisions.f1["seeded"] >= decisions.f1["threshold"] + MIN_SEED_GAIN_F1


def test_partial_labels_choose_on_labelled_sections_only(validation):
    model, _card = load_checkpoint(DEMO_MODEL)
    sparse = choose_decisions(model, load_data_config(validation / "sparse.json"), device=CPU, precision="fp32")
    assert sparse.voxels == 8 * 192 * 192
    raw, truth = read_stack(LUCCHI / "image", *REGION), read_stack(LUCCHI / "labels" / "mito", *REGION) != 0
    probability = _probability(model, raw)
    labelled = np.zeros_like(truth)
    labelled[::4] = True
    thresholds = np.arange(0.0, 1.0, 0.001)
    f1 = [confusion_counts(probability >= t, truth, labelled).f1 for t in thresholds]
    assert sparse.f1["threshold"] == pytest.approx(np.nanmax(f1), abs=2e-3)
