"""``incasem instances`` and ``incasem threshold``: blockwise results equal the whole-volume scipy result."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.io.volume import open_volume
from incasem.postprocess import components, instances
from incasem.postprocess.foreground import foreground_of
from incasem.postprocess.instances import InstanceOptions, instances_in_memory, label_instances
from incasem.postprocess.threshold import threshold_probabilities
from tests.helpers import QUIET, Crash, error_line, fail_after, write_volume


@pytest.mark.parametrize("chunks", [(16, 40, 48), (48, 200, 224), (7, 33, 61)])  # the middle one: one block
@pytest.mark.parametrize("min_size", [0, 30])
def test_instances_equal_the_whole_volume_labelling(tmp_path, real_labels, chunks, min_size):
    container = tmp_path / "cell.zarr"
    write_volume(container, "volumes/labels/mito", real_labels, chunks)
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
    write_volume(container, "seg", data, chunks, (0, 0, 0))
    output = label_instances(foreground_of(container, "seg"), options=InstanceOptions(0, "uint64"), run=QUIET)
    np.testing.assert_array_equal(output.read(), instances_in_memory(data != 0))


def test_probabilities_class_and_mask(tmp_path, real_labels):
    container = tmp_path / "cell.zarr"
    probabilities = np.rint(ndimage.gaussian_filter(real_labels.astype(np.float32), 2) * 255).astype(np.uint8)
    write_volume(container, "volumes/predictions/m/0001/prob_maps/class_1", probabilities)
    segmentation = np.where(real_labels != 0, 2, 0).astype(np.uint8)
    segmentation[:, :50] = 1
    write_volume(container, "volumes/seg", segmentation)
    cell = np.zeros(real_labels.shape, np.uint8)
    cell[:, 30:170, 20:] = 255
    write_volume(container, "volumes/mask", cell)
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


@pytest.mark.parametrize(("module", "name"), [(components, "_fragment_block"), (instances, "_write_block")])
def test_interrupted_job_resumes_to_the_same_result(tmp_path, real_labels, monkeypatch, module, name):
    container = tmp_path / "cell.zarr"
    write_volume(container, "volumes/labels/mito", real_labels)
    fg = foreground_of(container, "volumes/labels/mito")
    with monkeypatch.context() as patch:
        fail_after(patch, module, name, 5)
        with pytest.raises(Crash):
            label_instances(fg, options=InstanceOptions(10), run=RunOptions(progress=False, workers=1))
    assert not open_volume(container, "volumes/labels/mito_instances", require_complete=False).complete
    output = label_instances(fg, options=InstanceOptions(10), mode="resume", run=QUIET)
    np.testing.assert_array_equal(output.read(), instances_in_memory(real_labels != 0, 10))


def test_cli_and_refusals(tmp_path, real_labels, capsys):
    container = tmp_path / "cell.zarr"
    write_volume(container, "volumes/labels/mito", real_labels)
    write_volume(container, "volumes/probabilities", np.full((4, 4, 4), 1.5, np.float32))
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
