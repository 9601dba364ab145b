"""``incasem instances`` and ``incasem threshold``: blockwise results equal the whole-volume scipy result."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.io.volume import create_volume, open_volume
from incasem.postprocess import components, instances
from incasem.postprocess.foreground import foreground_of
from incasem.postprocess.instances import InstanceOptions, instances_in_memory, label_instances
from incasem.postprocess.threshold import threshold_probabilities
from tests.conftest import LUCCHI, QUIET, error_line, read_stack


def write(container: Path, name: str, data: np.ndarray, chunks=(16, 40, 48), offset_nm=(15, 10, 5)) -> None:
    volume = create_volume(container, name, data.shape, data.dtype, (5, 5, 5), offset_nm, chunks)
    volume.write(volume.roi, data)
    volume.mark_complete()


@pytest.fixture(scope="module")
def real_labels():
    """Real mito labels (Lucchi++ sections 40-87) with 2000 single-voxel and small specks added."""
    if not LUCCHI.is_dir():
        pytest.skip(f"real data not found at {LUCCHI}")
    labels = read_stack(LUCCHI / "labels" / "mito", slice(40, 88), slice(100, 300), slice(150, 390))
    rng = np.random.default_rng(7)
    specks = np.zeros(labels.shape, bool)
    specks[tuple(rng.integers(0, s, 2000) for s in labels.shape)] = True
    specks = ndimage.binary_dilation(specks, iterations=int(rng.integers(0, 2)))
    return np.where(specks, 1, labels).astype(np.uint8)


@pytest.mark.parametrize("chunks", [(16, 40, 48), (48, 200, 240), (7, 33, 61)])
@pytest.mark.parametrize("min_size", [0, 30])
def test_instances_equal_the_whole_volume_labelling(tmp_path, real_labels, chunks, min_size):
    container = tmp_path / "cell.zarr"
    write(container, "volumes/labels/mito", real_labels, chunks)
    output = label_instances(foreground_of(container, "volumes/labels/mito"), options=InstanceOptions(min_size), run=QUIET)
    expected = instances_in_memory(real_labels != 0, min_size)
    np.testing.assert_array_equal(output.read(), expected)
    assert output.name == "volumes/labels/mito_instances" and output.dtype == np.uint32
    assert output.array.attrs["instances"] == expected.max() > 3
    assert output.roi == open_volume(container, "volumes/labels/mito").roi, "same geometry as the input"
    assert not (container / output.name / instances.SCRATCH_FOLDER).exists(), "scratch files are removed"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 12), st.integers(1, 12)),
    chunks=st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
    density=st.floats(0.2, 0.7),
    seed=st.integers(0, 2**16),
)
def test_instances_of_random_volumes_any_block_shape(tmp_path_factory, shape, chunks, density, seed):
    data = (np.random.default_rng(seed).random(shape) < density).astype(np.uint8)
    container = tmp_path_factory.mktemp("random") / "cell.zarr"
    write(container, "seg", data, chunks, (0, 0, 0))
    output = label_instances(foreground_of(container, "seg"), options=InstanceOptions(0, "uint64"), run=QUIET)
    np.testing.assert_array_equal(output.read(), instances_in_memory(data != 0))


def test_probabilities_class_and_mask(tmp_path, real_labels):
    container = tmp_path / "cell.zarr"
    probabilities = np.rint(ndimage.gaussian_filter(real_labels.astype(np.float32), 2) * 255).astype(np.uint8)
    write(container, "volumes/predictions/m/0001/prob_maps/class_1", probabilities)
    segmentation = np.where(real_labels != 0, 2, 0).astype(np.uint8)
    segmentation[:, :50] = 1
    write(container, "volumes/seg", segmentation)
    cell = np.zeros(real_labels.shape, np.uint8)
    cell[:, 30:170, 20:] = 255
    write(container, "volumes/mask", cell)
    fg = foreground_of(container, "volumes/predictions/m/0001/prob_maps/class_1", threshold=0.6, mask="volumes/mask")
    assert fg.kind == "probabilities"
    output = label_instances(fg, "volumes/objects", run=QUIET)
    expected_mask = (probabilities.astype(np.float32) / 255 >= 0.6) & (cell != 0)
    np.testing.assert_array_equal(output.read(), instances_in_memory(expected_mask))
    by_class = label_instances(foreground_of(container, "volumes/seg", class_id=2), run=QUIET)
    np.testing.assert_array_equal(by_class.read(), instances_in_memory(segmentation == 2))
    thresholded = threshold_probabilities(fg, run=QUIET)
    assert thresholded.name == "volumes/predictions/m/0001/threshold_0.6/class_1"
    np.testing.assert_array_equal(thresholded.read(), expected_mask.astype(np.uint8))


class Crash(Exception):
    """A job killed in the middle."""


def _fail_after(monkeypatch, module, name: str, calls: int) -> None:
    original, count = getattr(module, name), [0]

    def failing(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise Crash
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


@pytest.mark.parametrize(("module", "name"), [(components, "_fragment_block"), (instances, "_write_block")])
def test_interrupted_job_resumes_to_the_same_result(tmp_path, real_labels, monkeypatch, module, name):
    container = tmp_path / "cell.zarr"
    write(container, "volumes/labels/mito", real_labels)
    fg = foreground_of(container, "volumes/labels/mito")
    with monkeypatch.context() as patch:
        _fail_after(patch, module, name, 5)
        with pytest.raises(Crash):
            label_instances(fg, options=InstanceOptions(10), run=RunOptions(progress=False, workers=1))
    assert not open_volume(container, "volumes/labels/mito_instances", require_complete=False).complete
    output = label_instances(fg, options=InstanceOptions(10), mode="resume", run=QUIET)
    np.testing.assert_array_equal(output.read(), instances_in_memory(real_labels != 0, 10))


def test_cli_and_refusals(tmp_path, real_labels, capsys):
    container = tmp_path / "cell.zarr"
    write(container, "volumes/labels/mito", real_labels)
    write(container, "volumes/probabilities", np.full((4, 4, 4), 1.5, np.float32))
    assert main(["instances", str(container), "-i", "volumes/labels/mito", "--min-size", "30", "-q"]) == 0
    assert f"{instances_in_memory(real_labels != 0, 30).max()} objects" in capsys.readouterr().out
    before = open_volume(container, "volumes/labels/mito_instances").read()
    cases = [
        (["instances", str(container), "-i", "volumes/labels/mito", "-q"], "exists"),
        (["instances", str(container), "-i", "volumes/labels/er", "-q"], "volumes/labels/mito"),
        (["instances", str(container), "-i", "volumes/labels/mito", "--min-size", "-1", "-q"], "--min-size"),
        (["instances", str(container), "-i", "volumes/labels/mito", "--dtype", "int8", "-q"], "--dtype"),
        (["instances", str(container), "-i", "volumes/labels/mito", "-o", "volumes/labels/mito", "--overwrite", "-q"], "volumes/labels/mito"),
        (["threshold", str(container), "-i", "volumes/probabilities", "-q"], "probabilities must lie in [0, 1]"),
        (["threshold", str(container), "-i", "volumes/labels/mito", "-t", "2", "-q"], "--threshold"),
        (["threshold", str(container), "-i", "volumes/labels/mito", "--mask", "volumes/probabilities", "-q"], "volumes/probabilities"),
    ]
    for args, message in cases:
        assert main(args) == 1, args
        assert message in error_line(capsys), args
    np.testing.assert_array_equal(open_volume(container, "volumes/labels/mito_instances").read(), before)
    np.testing.assert_array_equal(open_volume(container, "volumes/labels/mito").read(), real_labels)
    assert not (container / "volumes" / "probabilities_threshold_0.5").exists(), "refused before writing"
