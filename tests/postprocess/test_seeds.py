"""Seed thresholds (hysteresis): blockwise results equal skimage's whole-volume ``apply_hysteresis_threshold``."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.io.volume import open_volume
from incasem.postprocess import threshold as threshold_module
from incasem.postprocess.foreground import foreground_of
from incasem.postprocess.instances import SCRATCH_FOLDER, instances_in_memory, label_instances
from incasem.postprocess.threshold import threshold_probabilities
from tests.helpers import QUIET, Crash, error_line, fail_after, write_volume

PROBABILITIES = "volumes/predictions/m/0001/prob_maps/class_1"


def hysteresis(probabilities: np.ndarray, low: float, high: float) -> np.ndarray:
    """skimage's rule on uint8 probabilities (``> 255 t``; the thresholds here are never a whole uint8 value)."""
    return apply_hysteresis_threshold(probabilities, low * 255, high * 255)


@pytest.fixture
def probability_map(real_labels) -> np.ndarray:
    """Real mitochondria blurred into certain objects, plus blurred noise: uncertain objects that never reach 0.9."""
    certain = ndimage.gaussian_filter(real_labels.astype(np.float32), 2)
    noise = ndimage.gaussian_filter(np.random.default_rng(3).random(real_labels.shape, np.float32), 3)
    uncertain = np.clip((noise - noise.mean()) / noise.std() * 0.15 + 0.2, 0, 0.85)
    return np.rint(np.maximum(certain, uncertain) * 255).astype(np.uint8)


@pytest.mark.parametrize("chunks", [(16, 40, 48), (48, 200, 224), (7, 33, 61)])  # the middle one: one block
def test_seeded_threshold_equals_whole_volume_hysteresis(tmp_path, probability_map, chunks):
    container = tmp_path / "cell.zarr"
    write_volume(container, PROBABILITIES, probability_map, chunks)
    output = threshold_probabilities(foreground_of(container, PROBABILITIES, threshold=0.5, seed_threshold=0.9), run=QUIET)
    expected = hysteresis(probability_map, 0.5, 0.9)
    plain = probability_map >= 128
    assert expected.sum() < plain.sum() - 1000, "the noise must make objects that the seeds drop"
    assert ndimage.label(expected)[1] >= 3, "and the mitochondria must stay"
    np.testing.assert_array_equal(output.read(), expected.astype(np.uint8))
    assert output.name == "volumes/predictions/m/0001/threshold_0.5_seed_0.9/class_1"
    assert not (container / output.name / SCRATCH_FOLDER).exists(), "scratch files are removed"


def test_seeded_instances_with_mask(tmp_path, probability_map):
    container = tmp_path / "cell.zarr"
    write_volume(container, PROBABILITIES, probability_map)
    cell = np.zeros(probability_map.shape, np.uint8)
    cell[:, 30:170, 20:] = 1
    write_volume(container, "volumes/mask", cell)
    foreground = foreground_of(container, PROBABILITIES, threshold=0.61, mask="volumes/mask", seed_threshold=0.95)
    output = label_instances(foreground, "volumes/objects", run=QUIET)
    expected = hysteresis(np.where(cell != 0, probability_map, 0), 0.61, 0.95)
    np.testing.assert_array_equal(output.read(), instances_in_memory(expected))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 12), st.integers(1, 12)),
    chunks=st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
    seed=st.integers(0, 2**16),
)
def test_seeded_threshold_of_random_volumes_any_block_shape(tmp_path_factory, shape, chunks, seed):
    data = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
    container = tmp_path_factory.mktemp("random") / "cell.zarr"
    write_volume(container, "volumes/prob", data, chunks, (0, 0, 0))
    output = threshold_probabilities(foreground_of(container, "volumes/prob", threshold=0.41, seed_threshold=0.85), run=QUIET)
    np.testing.assert_array_equal(output.read(), hysteresis(data, 0.41, 0.85).astype(np.uint8))


def test_interrupted_seeded_threshold_resumes_to_the_same_result(tmp_path, probability_map, monkeypatch):
    container = tmp_path / "cell.zarr"
    write_volume(container, PROBABILITIES, probability_map)
    foreground = foreground_of(container, PROBABILITIES, seed_threshold=0.9)
    with monkeypatch.context() as patch:
        fail_after(patch, threshold_module, "_seeded_block", 5)
        with pytest.raises(Crash):
            threshold_probabilities(foreground, run=RunOptions(progress=False, workers=1))
    name = "volumes/predictions/m/0001/threshold_0.5_seed_0.9/class_1"
    assert not open_volume(container, name, require_complete=False).complete
    output = threshold_probabilities(foreground, mode="resume", run=QUIET)
    np.testing.assert_array_equal(output.read(), hysteresis(probability_map, 0.5, 0.9).astype(np.uint8))


def test_cli_seed_threshold_and_refusals(tmp_path: Path, probability_map, real_labels, capsys):
    container = tmp_path / "cell.zarr"
    write_volume(container, PROBABILITIES, probability_map)
    write_volume(container, "volumes/labels/mito", real_labels)
    assert main(["threshold", str(container), "-i", PROBABILITIES, "--seed-threshold", "0.9", "-q"]) == 0
    written = open_volume(container, "volumes/predictions/m/0001/threshold_0.5_seed_0.9/class_1").read()
    np.testing.assert_array_equal(written, hysteresis(probability_map, 0.5, 0.9))
    assert main(["instances", str(container), "-i", PROBABILITIES, "--seed-threshold", "0.9", "-q"]) == 0
    assert f"{ndimage.label(hysteresis(probability_map, 0.5, 0.9))[1]} objects" in capsys.readouterr().out
    cases = [
        (["threshold", str(container), "-i", PROBABILITIES, "-t", "0.6", "--seed-threshold", "0.55", "-q"], "--seed-threshold 0.55 is below"),
        (["threshold", str(container), "-i", PROBABILITIES, "--seed-threshold", "1.5", "-q"], "--seed-threshold must be a probability"),
        (["instances", str(container), "-i", "volumes/labels/mito", "--seed-threshold", "0.9", "-q"], "needs a probability map"),
    ]
    for args, message in cases:
        assert main(args) == 1, args
        assert message in error_line(capsys), args
