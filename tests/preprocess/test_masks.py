"""Metric mask and cell mask: in-memory twins against scipy / scikit-image, blockwise == twin, CLI."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.morphology import ball, closing, opening

from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.errors import DatasetExistsError, DatasetMismatchError, IncasemError
from incasem.geometry import Roi
from incasem.io.metadata import INCOMPLETE, STATUS_KEY
from incasem.io.volume import create_volume, list_volumes, open_volume
from incasem.preprocess.masks import (
    MaskOptions,
    MetricMaskOptions,
    create_mask,
    create_metric_mask,
    exclusion_widths,
    metric_mask_array,
    threshold_mask_array,
)
from tests.helpers import CDEEP3M, DROSOPHILA, LUCCHI, QUIET, read_stack

CROSS = ndimage.generate_binary_structure(3, 1)


#: 40 x 200 x 200 of the Lucchi++ crop (slices 76-115, rows 152-351, columns 248-447 of Lucchi++).
LUCCHI_REGION = (slice(24, 64), slice(24, 224), slice(24, 224))


@pytest.fixture(scope="module")
def lucchi_labels():
    """Lucchi++ mitochondria (5 nm isotropic), uint8 0/1, 40 x 200 x 200, objects cut by every border."""
    labels = read_stack(LUCCHI / "labels" / "mito", *LUCCHI_REGION)
    assert all(np.take(labels, i, axis).any() for axis in range(3) for i in (0, -1)), "objects cut by every border"
    return labels


@pytest.fixture(scope="module")
def lucchi_raw():
    return read_stack(LUCCHI / "image", *LUCCHI_REGION)


@pytest.fixture(scope="module")
def drosophila_labels():
    """Drosophila VNC mitochondria (ssTEM, 50 x 4.6 x 4.6 nm), all 20 sections, 160 x 160 in-plane."""
    return read_stack(DROSOPHILA / "labels" / "mito", slice(0, 20), slice(0, 160), slice(0, 160))


@pytest.fixture(scope="module")
def cdeep3m_labels():
    """CDeep3M SBEM mitochondria (thick sections), all 20 sections of the crop, 128 x 128 in-plane."""
    return read_stack(CDEEP3M / "labels" / "mito")


def _put(container, name, data, voxel_size=(5, 5, 5), offset_nm=(0, 0, 0), chunks=(10, 24, 24)):
    volume = create_volume(container, name, data.shape, data.dtype, voxel_size, offset_nm, chunks)
    volume.write(volume.roi, data)
    volume.mark_complete()
    return volume


def _scipy_metric_mask(labels, inwards, outwards):
    """The original incasem's whole-volume computation, written out with scipy."""
    objects = labels != 0
    dilated = ndimage.binary_dilation(objects, structure=CROSS, iterations=outwards)
    eroded = ndimage.binary_erosion(objects, structure=CROSS, iterations=inwards)
    return np.logical_not(dilated.astype(np.uint8) - eroded.astype(np.uint8)).astype(np.uint8) * 255


# ---------------------------------------------------------------- in-memory twins


@pytest.mark.parametrize("inwards, outwards", [(4, 4), (2, 1), (1, 3)])
def test_metric_mask_array_equals_direct_scipy(lucchi_labels, inwards, outwards):
    mask = metric_mask_array(lucchi_labels, inwards, outwards)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, _scipy_metric_mask(lucchi_labels, inwards, outwards))
    assert 0.02 < (mask == 0).mean() < 0.5


@pytest.mark.parametrize("inwards, outwards", [(4, 4), (1, 2), (3, 0)])
@pytest.mark.parametrize("crop", ["lucchi_labels", "drosophila_labels", "cdeep3m_labels"])
def test_excluded_zone_is_the_boundary_band(crop, inwards, outwards, request):
    """Excluded = object voxels <= inwards 6-connected steps from background (outside the
    array is background), and background voxels <= outwards steps from an object."""
    labels = request.getfixturevalue(crop)
    objects = labels != 0
    to_background = ndimage.distance_transform_cdt(np.pad(objects, 1), metric="taxicab")[1:-1, 1:-1, 1:-1]
    to_object = ndimage.distance_transform_cdt(~objects, metric="taxicab")
    band = (objects & (to_background <= inwards)) | (~objects & (to_object <= outwards))
    np.testing.assert_array_equal(metric_mask_array(labels, inwards, outwards) == 0, band)


def test_zero_widths_exclude_nothing():
    labels = np.zeros((5, 6, 7), np.uint16)
    labels[1:4, 2:5, 2:6] = 3
    assert (metric_mask_array(labels, 0, 0) == 255).all()
    outside_band = ndimage.binary_dilation(labels > 0) & (labels == 0)
    np.testing.assert_array_equal(metric_mask_array(labels, 0, 1) == 0, outside_band)


def test_bad_widths_and_ranges_are_refused_in_memory():
    with pytest.raises(ValueError, match="exclude_inwards_voxels"):
        metric_mask_array(np.zeros((2, 2, 2), np.uint8), -1, 2)
    with pytest.raises(ValueError, match="closing_voxels"):
        threshold_mask_array(np.zeros((2, 2, 2), np.uint8), 0, 1, closing_voxels=-1)
    with pytest.raises(ValueError, match=r"opening_voxels .* 64"):  # ball(10**4) alone would need 8e12 voxels
        threshold_mask_array(np.zeros((2, 2, 2), np.uint8), 0, 1, opening_voxels=10**4)
    with pytest.raises(ValueError, match="min_grey must be a finite"):  # NaN compares false: an all-zero mask
        threshold_mask_array(np.zeros((2, 2, 2), np.uint8), float("nan"), 1)


def test_object_cut_by_the_border_is_eroded_from_it():
    """Like the original (scipy border_value=0): beyond the data is background."""
    labels = np.ones((6, 6, 6), np.uint8)
    mask = metric_mask_array(labels, 2, 2)
    assert (mask[2:4, 2:4, 2:4] == 255).all() and (mask[:2] == 0).all() and (mask[:, :, -2:] == 0).all()


def test_threshold_mask_array_range_is_inclusive(lucchi_raw):
    mask = threshold_mask_array(lucchi_raw, 100, 150)
    inside = (lucchi_raw >= 100) & (lucchi_raw <= 150)
    np.testing.assert_array_equal(mask, np.where(inside, 255, 0))
    assert (mask[lucchi_raw == 100] == 255).all() and (mask[lucchi_raw == 150] == 255).all()
    assert (mask[lucchi_raw == 151] == 0).all()


def test_threshold_mask_array_equals_scikit_image(lucchi_raw):
    raw = lucchi_raw[:, :100, :100]
    reference = closing(opening((raw >= 90) & (raw <= 160), ball(2), mode="ignore"), ball(1), mode="ignore")
    mask = threshold_mask_array(raw, 90, 160, opening_voxels=2, closing_voxels=1)
    np.testing.assert_array_equal(mask, np.where(reference, 255, 0))
    assert 0.1 < (mask == 255).mean() < 0.9


def test_closing_does_not_eat_into_a_cell_cut_by_the_border():
    raw = np.full((8, 9, 10), 120, np.uint8)
    raw[4, 4, 4] = 0  # a speck of resin inside the cell: closed
    assert (threshold_mask_array(raw, 100, 150, opening_voxels=2, closing_voxels=2) == 255).all()


# ---------------------------------------------------------------- widths


@pytest.mark.parametrize(
    "labels, organelle, inwards, outwards, expected",
    [
        ("volumes/labels/mito", None, None, None, (4, 4)),
        ("volumes/labels/ER", None, None, None, (2, 2)),
        ("volumes/labels/golgi/", None, None, None, (2, 2)),
        ("volumes/labels/x", "nuclear_pores", None, None, (1, 1)),
        ("volumes/labels/x", "ccp", None, 5, (2, 5)),
        ("volumes/labels/x", None, 3, 0, (3, 0)),
        ("volumes/labels/mito", "np", 0, None, (0, 1)),
    ],
)
def test_exclusion_widths(labels, organelle, inwards, outwards, expected):
    assert exclusion_widths(labels, organelle, inwards, outwards) == expected


@pytest.mark.parametrize(
    "labels, organelle, inwards, outwards, message",
    [
        ("volumes/labels/x", None, None, 2, "no default exclusion widths"),
        ("volumes/labels/mito", "mitochondria", 1, 1, "unknown organelle 'mitochondria'"),
        ("volumes/labels/mito", None, -1, None, "exclude_inwards_voxels must be a whole number of voxels from 0"),
    ],
)
def test_exclusion_widths_refused(labels, organelle, inwards, outwards, message):
    with pytest.raises(IncasemError, match=message):
        exclusion_widths(labels, organelle, inwards, outwards)


# ---------------------------------------------------------------- blockwise == in memory


def test_blockwise_metric_mask_equals_in_memory_isotropic(tmp_path, lucchi_labels):
    """Instance ids (uint64), world offset, 16^3 output chunks, widths larger than half a chunk."""
    labels = ndimage.label(lucchi_labels[:, :96, -96:])[0].astype(np.uint64)  # objects thicker than 20 voxels
    source = _put(tmp_path / "c.zarr", "volumes/labels/mito", labels, offset_nm=(50, 100, 150))
    out = create_metric_mask(
        tmp_path / "c.zarr",
        "volumes/labels/mito",
        chunks=(16, 16, 16),
        options=MetricMaskOptions(exclude_inwards_voxels=10, exclude_outwards_voxels=9),
        run=RunOptions(workers=2, progress=False),
    )
    assert out.name == "volumes/metric_masks/mito" and out.chunks == (16, 16, 16) and out.complete
    assert (out.voxel_size, out.offset_nm, out.dtype) == (source.voxel_size, source.offset_nm, np.uint8)
    np.testing.assert_array_equal(out.read(), metric_mask_array(labels, 10, 9))


def test_blockwise_metric_mask_equals_in_memory_anisotropic(tmp_path, drosophila_labels):
    """ssTEM sections of 50 nm; default mito widths 4/4 with 4-section chunks."""
    labels = drosophila_labels[:, :64, :64]
    _put(tmp_path / "c.zarr", "volumes/labels/mito", labels, voxel_size=(50, 5, 5), chunks=(20, 64, 64))
    out = create_metric_mask(tmp_path / "c.zarr", "volumes/labels/mito", chunks=(4, 16, 16), run=QUIET)
    assert out.voxel_size == (50, 5, 5)
    np.testing.assert_array_equal(out.read(), metric_mask_array(labels, 4, 4))


def test_blockwise_cell_mask_equals_in_memory(tmp_path, lucchi_raw):
    raw = lucchi_raw[:, :96, :96]
    _put(tmp_path / "c.zarr", "volumes/raw", raw, offset_nm=(0, 25, 0))
    out = create_mask(tmp_path / "c.zarr", "volumes/raw", chunks=(16, 16, 16), options=MaskOptions(90, 160, opening_voxels=3, closing_voxels=2), run=QUIET)
    assert out.name == "volumes/mask" and out.offset_nm == (0, 25, 0) and out.complete
    expected = threshold_mask_array(raw, 90, 160, opening_voxels=3, closing_voxels=2)
    assert 0.1 < (expected == 255).mean() < 0.9
    np.testing.assert_array_equal(out.read(), expected)


@settings(max_examples=15, deadline=None, database=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 12), st.integers(1, 12)),
    chunks=st.tuples(st.integers(1, 5), st.integers(2, 6), st.integers(2, 6)),
    widths=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    radii=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    seed=st.integers(0, 2**16),
)
def test_blockwise_equals_in_memory_property(shape, chunks, widths, radii, seed):
    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.random(shape), 1.0) > 0.5
    labels = blobs * rng.integers(1, 9, shape, np.uint8)
    raw = rng.integers(0, 256, shape, np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        container = Path(folder) / "c.zarr"
        _put(container, "volumes/labels/x", labels, offset_nm=(5, 10, 15), chunks=(3, 4, 5))
        _put(container, "volumes/raw", raw, offset_nm=(5, 10, 15), chunks=(3, 4, 5))
        inwards, outwards = widths
        metric = create_metric_mask(
            container,
            "volumes/labels/x",
            chunks=chunks,
            options=MetricMaskOptions(exclude_inwards_voxels=inwards, exclude_outwards_voxels=outwards),
            run=QUIET,
        )
        cell = create_mask(container, "volumes/raw", chunks=chunks, options=MaskOptions(60, 200, opening_voxels=radii[0], closing_voxels=radii[1]), run=QUIET)
        np.testing.assert_array_equal(metric.read(), metric_mask_array(labels, *widths))
        np.testing.assert_array_equal(cell.read(), threshold_mask_array(raw, 60, 200, *radii))


# ---------------------------------------------------------------- resume / overwrite


def test_resume_finishes_an_interrupted_run(tmp_path, lucchi_labels):
    labels = lucchi_labels[:16, :48, :48]
    container = tmp_path / "c.zarr"
    _put(container, "volumes/labels/mito", labels)
    out = create_metric_mask(container, "volumes/labels/mito", chunks=(16, 16, 16), run=QUIET)
    # pretend the run was killed before block (0, 16, 16) finished
    out.array.attrs[STATUS_KEY] = INCOMPLETE
    out.write(Roi((0, 16, 16), (16, 16, 16)), np.zeros((16, 16, 16), np.uint8))
    (container / "volumes/metric_masks/mito/.incasem_done/0_16_16").unlink()
    with pytest.raises(DatasetMismatchError, match="unfinished"):
        open_volume(container, "volumes/metric_masks/mito")
    with pytest.raises(DatasetMismatchError, match="cannot resume"):
        create_metric_mask(container, "volumes/labels/mito", options=MetricMaskOptions(exclude_inwards_voxels=1), mode="resume", run=QUIET)
    out = create_metric_mask(container, "volumes/labels/mito", chunks=(16, 16, 16), mode="resume", run=QUIET)
    assert out.complete
    np.testing.assert_array_equal(out.read(), metric_mask_array(labels, 4, 4))


def test_overwrite_replaces_the_output(tmp_path, lucchi_labels):
    labels = lucchi_labels[:16, :32, :32]
    container = tmp_path / "c.zarr"
    _put(container, "volumes/labels/mito", labels)
    create_metric_mask(container, "volumes/labels/mito", chunks=(16, 16, 16), run=QUIET)
    with pytest.raises(DatasetExistsError):
        create_metric_mask(container, "volumes/labels/mito", options=MetricMaskOptions(exclude_inwards_voxels=1, exclude_outwards_voxels=2), run=QUIET)
    out = create_metric_mask(
        container,
        "volumes/labels/mito",
        chunks=(16, 16, 16),
        options=MetricMaskOptions(exclude_inwards_voxels=1, exclude_outwards_voxels=2),
        mode="overwrite",
        run=QUIET,
    )
    np.testing.assert_array_equal(out.read(), metric_mask_array(labels, 1, 2))


# ---------------------------------------------------------------- command line


@pytest.fixture
def cell(tmp_path, lucchi_labels, lucchi_raw):
    container = tmp_path / "cell.zarr"
    _put(container, "volumes/raw", lucchi_raw[:16, :40, :40])
    _put(container, "volumes/labels/mito", lucchi_labels[:16, :40, :40])
    _put(container, "volumes/labels/thing", lucchi_labels[:16, :40, :40])
    _put(container, "volumes/labels/float", lucchi_labels[:16, :40, :40].astype(np.float32))
    return container


def test_cli_metric_mask(cell, capsys):
    assert main(["metric-mask", str(cell), "--labels", "volumes/labels/mito", "--chunks", "16", "-n", "2"]) == 0
    assert "volumes/metric_masks/mito" in capsys.readouterr().out
    written = open_volume(cell, "volumes/metric_masks/mito")
    assert written.chunks == (16, 16, 16)
    labels = open_volume(cell, "volumes/labels/mito").read()
    np.testing.assert_array_equal(written.read(), metric_mask_array(labels, 4, 4))


def test_cli_metric_mask_organelle_and_explicit_width(cell):
    args = ["metric-mask", str(cell), "-l", "volumes/labels/thing", "-o", "volumes/metric_masks/er"]
    assert main([*args, "--organelle", "er", "--exclude-outwards", "3"]) == 0
    labels = open_volume(cell, "volumes/labels/thing").read()
    np.testing.assert_array_equal(open_volume(cell, "volumes/metric_masks/er").read(), metric_mask_array(labels, 2, 3))


def test_cli_mask(cell, capsys):
    args = ["mask", str(cell), "--min", "90", "--max", "160", "--opening", "1", "--closing", "2", "--chunks", "8,16,16"]
    assert main(args) == 0
    assert "volumes/mask" in capsys.readouterr().out
    raw = open_volume(cell, "volumes/raw").read()
    np.testing.assert_array_equal(open_volume(cell, "volumes/mask").read(), threshold_mask_array(raw, 90, 160, 1, 2))


@pytest.mark.parametrize(
    "args, message",
    [
        (["metric-mask", "--labels", "volumes/labels/missing"], "has no dataset 'volumes/labels/missing'"),
        (["metric-mask", "-l", "volumes/labels/float", "--organelle", "mito"], "are float32, not integers"),
        (["metric-mask", "-l", "volumes/labels/mito", "--exclude-inwards", "-1"], "--exclude-inwards must be a whole number"),
        (["metric-mask", "-l", "volumes/labels/thing"], "no default exclusion widths for labels 'volumes/labels/thing"),
        (["metric-mask", "-l", "volumes/labels/mito", "--organelle", "mitos"], "unknown organelle 'mitos'"),
        (["metric-mask", "-l", "volumes/labels/mito", "-o", "volumes/labels/mito", "--overwrite"], "is, holds or lies in the input"),
        (["metric-mask", "-l", "volumes/labels/mito", "-o", "volumes/labels", "--overwrite"], "is, holds or lies in the input"),
        (["mask", "--min", "200", "--max", "100"], "--min 200.0 is above --max 100.0"),
        (["mask", "--min", "0", "--max", "100", "--closing", "-2"], "--closing must be a whole number of voxels from 0"),
        (["mask", "-i", "volumes/labels/missing", "--min", "0", "--max", "1"], "has no dataset"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(cell, capsys, args, message):
    before = {v.name: v.read() for v in list_volumes(cell)}
    assert main([args[0], str(cell), *args[1:]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("incasem: error: ") and message in err and err.count("\n") == 1
    after = {v.name: v.read() for v in list_volumes(cell)}
    assert after.keys() == before.keys() and all((after[k] == before[k]).all() for k in before)


def test_cli_existing_output_is_kept(cell, capsys):
    args = ["metric-mask", str(cell), "-l", "volumes/labels/mito", "--chunks", "16"]
    assert main(args) == 0
    first = open_volume(cell, "volumes/metric_masks/mito").read()
    capsys.readouterr()
    assert main([*args, "--exclude-inwards", "1"]) == 1
    err = capsys.readouterr().err
    assert "exists already: pass --overwrite" in err and err.count("\n") == 1
    np.testing.assert_array_equal(open_volume(cell, "volumes/metric_masks/mito").read(), first)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MaskOptions(float("nan"), 1), "min_grey must be a finite"),
        (lambda: MaskOptions(5, 1), "min_grey 5 is above max_grey 1"),
        (lambda: MaskOptions(0, 1, opening_voxels=-1), "opening_voxels"),
        (lambda: MaskOptions(0, 1, closing_voxels=1.5), "closing_voxels"),
        (lambda: MetricMaskOptions(exclude_inwards_voxels=65), "exclude_inwards_voxels"),
        (lambda: MetricMaskOptions(exclude_outwards_voxels=-1), "exclude_outwards_voxels"),
        (lambda: MetricMaskOptions(organelle="mitos"), "unknown organelle 'mitos'"),
    ],
)
def test_mask_options_refuse_bad_values_in_one_line(make, message):
    from incasem.errors import InvalidValueError

    with pytest.raises(InvalidValueError) as error:
        make()
    assert message in str(error.value) and "\n" not in str(error.value)
