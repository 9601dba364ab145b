"""``incasem predict`` with a seed threshold: the segmentation keeps only objects that reach it (hysteresis)."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.errors import InvalidValueError
from incasem.geometry import Roi
from incasem.io.volume import open_volume
from incasem.model.card import ModelCard
from incasem.model.checkpoint import load_checkpoint, read_card, save_checkpoint
from incasem.model.unet import UNet, UNetConfig
from incasem.postprocess import threshold as threshold_module
from incasem.postprocess.instances import SCRATCH_FOLDER
from incasem.predict import PredictOptions, predict_roi
from tests.helpers import QUIET, Crash, error_line, fail_after

RAW = "volumes/raw_equalized_0.02"
ROI = Roi((10, 20, 0), (40, 96, 112))
BLOCKS = PredictOptions((16, 32, 40), "cpu", "fp32")


def with_seed(checkpoint, seed_threshold, name):
    """The same model with ``seed_threshold`` on its card."""
    model, card = load_checkpoint(checkpoint)
    return save_checkpoint(checkpoint.with_name(name), model, replace(card, seed_threshold=seed_threshold))


def middle_seed(probabilities: np.ndarray) -> float:
    """A seed threshold between the peak probabilities of the objects (never a whole uint8 value)."""
    objects, count = ndimage.label(probabilities >= 128)
    peaks = ndimage.maximum(probabilities, objects, np.arange(1, count + 1))
    assert len(np.unique(peaks)) >= 2, "the test network must make objects of different certainty"
    return (float(np.median(peaks)) - 0.5) / 255


def test_model_seed_threshold_keeps_only_seeded_objects(setup):
    container, checkpoint = setup
    plain = predict_roi(checkpoint, container, RAW, ROI, BLOCKS, run=QUIET)
    probabilities = open_volume(container, plain.probabilities[0]).read()
    seed = middle_seed(probabilities)
    seeded_checkpoint = with_seed(checkpoint, seed, "seeded.pt")
    seeded = predict_roi(seeded_checkpoint, container, RAW, ROI, BLOCKS, run=QUIET)
    segmentation = open_volume(container, seeded.segmentation)
    expected = apply_hysteresis_threshold(probabilities, 127.5, seed * 255)
    assert 0 < expected.sum() < (probabilities >= 128).sum()
    np.testing.assert_array_equal(segmentation.read(), expected.astype(np.uint8))
    assert segmentation.complete and segmentation.array.attrs["incasem_provenance"]["seed_threshold"] == seed
    assert not (container / seeded.segmentation / SCRATCH_FOLDER).exists()
    np.testing.assert_array_equal(open_volume(container, seeded.probabilities[0]).read(), probabilities)

    unseeded = predict_roi(seeded_checkpoint, container, RAW, ROI, replace(BLOCKS, seed_threshold="none"), run=QUIET)
    np.testing.assert_array_equal(open_volume(container, unseeded.segmentation).read(), open_volume(container, plain.segmentation).read())


def test_interrupted_seeding_resumes_to_the_same_segmentation(setup, monkeypatch):
    container, checkpoint = setup
    plain = predict_roi(checkpoint, container, RAW, ROI, BLOCKS, run=QUIET)
    probabilities = open_volume(container, plain.probabilities[0]).read()
    options = replace(BLOCKS, seed_threshold=middle_seed(probabilities))
    with monkeypatch.context() as patch:
        fail_after(patch, threshold_module, "_seeded_block", 3)
        with pytest.raises(Crash):
            predict_roi(checkpoint, container, RAW, ROI, options, run=RunOptions(progress=False, workers=1))
    interrupted = "volumes/predictions/tiny/0002/segmentation"
    assert not open_volume(container, interrupted, require_complete=False).complete
    resumed = predict_roi(checkpoint, container, RAW, ROI, options, mode="resume", run=QUIET)
    assert resumed.prediction_id == "0002"
    expected = apply_hysteresis_threshold(probabilities, 127.5, options.seed_threshold * 255)
    np.testing.assert_array_equal(open_volume(container, resumed.segmentation).read(), expected.astype(np.uint8))


def test_seed_threshold_refusals(setup, tmp_path, capsys):
    container, checkpoint = setup
    for value in ("0.3", "high", "1.5"):
        assert main(["predict", str(container), "--model", str(checkpoint), "--seed-threshold", value, "-q"]) == 1
        assert "--seed-threshold must be model, none or a probability in [0.5, 1]" in error_line(capsys)
    config = UNetConfig(num_fmaps=4, downsample_factors=((2, 2, 2), (2, 2, 2)), num_classes=3)
    card = ModelCard(voxel_size_nm=(5, 5, 5), class_names=("background", "mito", "er"), organelle="mito,er", source="test", architecture=config)
    three_classes = save_checkpoint(tmp_path / "three.pt", UNet(config), card)
    with pytest.raises(InvalidValueError, match="needs a two-class model"):
        predict_roi(three_classes, container, RAW, ROI, replace(BLOCKS, seed_threshold=0.9), run=QUIET)
    with pytest.raises(ValueError, match="seed_threshold must be a probability in"):
        with_seed(checkpoint, 0.2, "low.pt")
    assert read_card(with_seed(checkpoint, 0.97, "kept.pt")).seed_threshold == 0.97
