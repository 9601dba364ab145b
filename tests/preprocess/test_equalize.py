"""3D CLAHE: the in-memory twin against scikit-image, blockwise == twin, resume, CLI."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.exposure import equalize_adapthist
from skimage.util import img_as_ubyte

import incasem.preprocess.equalize as equalize_module
from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.errors import DatasetExistsError, DatasetMismatchError, InvalidValueError
from incasem.geometry import Roi
from incasem.io.volume import create_volume, open_volume
from incasem.preprocess.clahe import ClaheGrid, interpolate, level_range
from incasem.preprocess.equalize import (
    SCRATCH_FOLDER,
    ClaheOptions,
    equalize_array,
    equalize_volume,
)
from tests.helpers import LUCCHI, QUIET, SHARED_DATA, read_stack


def _lucchi(zs: slice, ys: slice, xs: slice) -> np.ndarray:
    return read_stack(LUCCHI / "image", zs, ys, xs)


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    """Lucchi++ FIB-SEM (5 nm isotropic), uint8, 63 x 150 x 170: no axis a multiple of the kernels used
    (Lucchi++ slices 53-115, rows 168-317, columns 264-433)."""
    return _lucchi(slice(1, 64), slice(40, 190), slice(40, 210))


def _reference(image: np.ndarray, kernel_size, clip_limit: float = 0.02, nbins: int = 256) -> np.ndarray:
    return img_as_ubyte(equalize_adapthist(image, kernel_size=kernel_size, clip_limit=clip_limit, nbins=nbins))


def _assert_matches_skimage(ours: np.ndarray, reference: np.ndarray) -> None:
    """The contract: within one grey level of skimage on at least 99.9 % of the voxels."""
    assert ours.dtype == np.uint8 and ours.shape == reference.shape
    difference = np.abs(ours.astype(np.int16) - reference)
    assert (difference <= 1).mean() >= 0.999, f"max difference {difference.max()}"
    assert (difference == 0).mean() >= 0.999


def _container(path: Path, data: np.ndarray, chunks, voxel_size=(5, 5, 5), offset_nm=(0, 0, 0)) -> Path:
    volume = create_volume(path, "volumes/raw", data.shape, data.dtype, voxel_size, offset_nm, chunks=chunks)
    volume.write(volume.roi, data)
    volume.mark_complete()
    return path


# ------------------------------------------------------------------ the twin vs scikit-image


def test_twin_matches_skimage_on_real_data_with_the_standard_kernel():
    image = _lucchi(slice(0, 61), slice(0, 170), slice(0, 223))
    _assert_matches_skimage(equalize_array(image), _reference(image, 128))


def test_twin_matches_skimage_with_anisotropic_kernel(raw):
    _assert_matches_skimage(equalize_array(raw, (40, 50, 30), 0.05, 200), _reference(raw, (40, 50, 30), 0.05, 200))


def test_twin_matches_skimage_on_uint16(raw):
    image = raw.astype(np.uint16) * 180 + np.arange(raw.shape[2], dtype=np.uint16)  # a 16-bit range, not 8-bit
    _assert_matches_skimage(equalize_array(image, 32, 0.02, 512), _reference(image, 32, 0.02, 512))


@pytest.mark.parametrize(
    ("shape", "kernel_size", "clip_limit", "nbins"),
    [
        ((17, 19, 23), 40, 1.0, 256),  # smaller than one region: mirrored several times
        ((9, 10, 11), 2, 0.02, 256),  # the smallest kernel
        ((5, 40, 37), (7, 16, 9), 0.5, 100),
        ((1, 30, 30), 4, 0.01, 16),  # a single section
    ],
)
def test_twin_matches_skimage_on_edge_cases(raw, shape, kernel_size, clip_limit, nbins):
    image = np.ascontiguousarray(raw[: shape[0], : shape[1], : shape[2]])
    _assert_matches_skimage(equalize_array(image, kernel_size, clip_limit, nbins), _reference(image, kernel_size, clip_limit, nbins))


def test_constant_volume_matches_skimage():
    image = np.full((12, 20, 22), 77, dtype=np.uint8)
    _assert_matches_skimage(equalize_array(image, 8), _reference(image, 8))


def test_level_range_equals_min_max_of_levels(raw):
    """The shortcut of the range pass: bounds pick the candidates, the result must be exact."""
    grid = ClaheGrid(raw.shape, (40, 50, 30))
    rng = np.random.default_rng(0)
    mappings = np.sort(rng.integers(0, 2**14, (*grid.tiles, 256)), axis=-1).astype(np.uint16)
    for begin, end in [((0, 0, 0), raw.shape), ((3, 17, 5), (41, 90, 77)), (tuple(n - 10 for n in raw.shape), raw.shape)]:
        box = Roi.from_bounds(begin, end)
        bins = raw[box.to_slices()]
        levels = interpolate(bins, box.offset, grid, mappings)
        assert level_range(bins, box.offset, grid, mappings) == (levels.min(), levels.max())


def test_twin_rejects_bad_parameters(raw):
    with pytest.raises(InvalidValueError, match="clip_limit"):
        equalize_array(raw, clip_limit=0)
    with pytest.raises(InvalidValueError, match="clip_limit"):
        equalize_array(raw, clip_limit=float("nan"))
    with pytest.raises(InvalidValueError, match="kernel_size"):
        equalize_array(raw, kernel_size=(1, 8, 8))
    with pytest.raises(DatasetMismatchError, match="uint8 and uint16"):
        equalize_array(raw.astype(np.float32))


# ------------------------------------------------------------------ blockwise == twin


@pytest.mark.parametrize(("shape", "chunks"), [((63, 150, 170), (16, 32, 24)), ((40, 60, 70), (7, 9, 11)), ((63, 150, 170), (63, 150, 170))])
def test_blockwise_equals_twin_for_any_chunks(tmp_path, raw, shape, chunks):
    """Blocks smaller than, unaligned with and as large as the regions: no seams, same bytes."""
    image = np.ascontiguousarray(raw[: shape[0], : shape[1], : shape[2]])
    container = _container(tmp_path / "c.zarr", image, chunks, voxel_size=(10, 5, 5), offset_nm=(100, 25, 0))
    output = equalize_volume(container, options=ClaheOptions(kernel_size=(16, 20, 24)), run=RunOptions(workers=2, progress=False))
    assert output.name == "volumes/raw_equalized_0.02" and output.complete
    assert output.chunks == chunks and output.dtype == np.uint8
    assert output.voxel_size == (10, 5, 5) and output.offset_nm == (100, 25, 0)
    np.testing.assert_array_equal(output.read(), equalize_array(image, (16, 20, 24)))
    assert not (container / output.name / SCRATCH_FOLDER).exists(), "partial results are removed at the end"


def test_blockwise_output_chunks_differ_from_input(tmp_path, raw):
    container = _container(tmp_path / "c.zarr", raw, (32, 32, 32))
    output = equalize_volume(container, output_dataset="eq", chunks=(20, 64, 48), options=ClaheOptions(kernel_size=(40, 50, 30)), run=QUIET)
    assert output.chunks == (20, 64, 48)
    np.testing.assert_array_equal(output.read(), equalize_array(raw, (40, 50, 30)))


@pytest.mark.slow
def test_blockwise_matches_skimage_on_the_whole_lucchi_stack(tmp_path):
    image = read_stack(SHARED_DATA / "lucchi_pp_fibsem" / "image")  # the whole training volume
    container = _container(tmp_path / "c.zarr", image, (64, 128, 96))
    output = equalize_volume(container, run=QUIET)
    _assert_matches_skimage(output.read(), _reference(image, 128))


def test_runs_on_a_dask_cluster(tmp_path, raw):
    """Worker processes: every block function and its state must pickle."""
    from distributed import LocalCluster

    container = _container(tmp_path / "c.zarr", raw[:40, :100, :120], (16, 32, 32))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        output = equalize_volume(container, options=ClaheOptions(kernel_size=(16, 32, 40)), run=RunOptions(scheduler=address, progress=False))
    np.testing.assert_array_equal(output.read(), equalize_array(raw[:40, :100, :120], (16, 32, 40)))


def test_resume_finishes_only_the_missing_blocks(tmp_path, raw, monkeypatch):
    container = _container(tmp_path / "c.zarr", raw, (32, 75, 85))  # 8 blocks
    calls: dict[str, list[str]] = {"histograms": [], "write": []}
    histogram_block, equalize_block = equalize_module._histogram_block, equalize_module._equalize_block

    def count_histograms(grid, folder, block, state):
        calls["histograms"].append(block.block_id)
        histogram_block(grid, folder, block, state)

    def killed_after_five(to_uint8, block, state):
        if len(calls["write"]) == 5 and "killed" not in calls["write"]:
            calls["write"].append("killed")
            raise RuntimeError("killed")
        calls["write"].append(block.block_id)
        equalize_block(to_uint8, block, state)

    monkeypatch.setattr(equalize_module, "_histogram_block", count_histograms)
    monkeypatch.setattr(equalize_module, "_equalize_block", killed_after_five)
    with pytest.raises(RuntimeError, match="killed"):
        equalize_volume(container, options=ClaheOptions(kernel_size=32), run=RunOptions(workers=1, progress=False))
    assert not open_volume(container, "volumes/raw_equalized_0.02", require_complete=False).complete
    with pytest.raises(DatasetExistsError):
        equalize_volume(container, options=ClaheOptions(kernel_size=32), run=QUIET)
    with pytest.raises(DatasetMismatchError, match="cannot resume"):
        equalize_volume(container, options=ClaheOptions(kernel_size=16), mode="resume", run=QUIET)
    tiles = len(calls["histograms"])

    output = equalize_volume(container, options=ClaheOptions(kernel_size=32), mode="resume", run=QUIET)
    assert len(calls["histograms"]) == tiles, "the tile histograms of the first run are reused"
    assert len(calls["write"]) == 9, "the resumed run writes only the 3 blocks the first run did not finish"
    assert output.complete
    np.testing.assert_array_equal(output.read(), equalize_array(raw, 32))
    assert equalize_volume(container, options=ClaheOptions(kernel_size=32), mode="resume", run=QUIET).complete  # nothing left to do


@pytest.mark.parametrize("output", ["volumes", "volumes/raw", "volumes//raw", "./volumes/raw/", "/volumes/raw"])
def test_refuses_to_overwrite_its_input(tmp_path, raw, output):
    """Every spelling zarr resolves to the input (or a group holding it) is refused before anything is deleted."""
    container = _container(tmp_path / "c.zarr", raw, (64, 64, 64))
    with pytest.raises(DatasetExistsError, match="input"):
        equalize_volume(container, output_dataset=output, mode="overwrite", run=QUIET)
    np.testing.assert_array_equal(open_volume(container, "volumes/raw").read(), raw)


def test_kernel_far_larger_than_the_data_is_refused_before_allocating(tmp_path, raw):
    container = _container(tmp_path / "c.zarr", raw, (64, 64, 64))
    with pytest.raises(InvalidValueError, match="kernel_size 100000 along z"):
        equalize_volume(container, options=ClaheOptions(kernel_size=(100000, 64, 64)), run=QUIET)


# ------------------------------------------------------------------ command line


@pytest.fixture
def small(tmp_path, raw) -> Path:
    return _container(tmp_path / "cell.zarr", raw[:30, :60, :80], (16, 32, 32))


def test_cli_writes_the_equalised_dataset(small, capsys):
    assert main(["equalize", str(small), "--kernel-size", "16,32,40", "--clip-limit", "0.03", "--workers", "2"]) == 0
    assert "volumes/raw_equalized_0.03" in capsys.readouterr().out
    output = open_volume(small, "volumes/raw_equalized_0.03")
    raw = open_volume(small, "volumes/raw").read()
    np.testing.assert_array_equal(output.read(), equalize_array(raw, (16, 32, 40), 0.03))


def test_cli_refuses_an_existing_output_unless_overwrite(small, capsys):
    assert main(["equalize", str(small), "--kernel-size", "16", "--output", "eq"]) == 0
    before = open_volume(small, "eq").read()
    capsys.readouterr()
    assert main(["equalize", str(small), "--kernel-size", "8", "--output", "eq"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("incasem: error:") and "--overwrite" in error and error.count("\n") == 1
    np.testing.assert_array_equal(open_volume(small, "eq").read(), before)
    assert main(["equalize", str(small), "--kernel-size", "8", "--output", "eq", "--overwrite"]) == 0
    assert not np.array_equal(open_volume(small, "eq").read(), before)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "volumes/nope"], "no dataset 'volumes/nope'"),
        (["--clip-limit", "0"], "--clip-limit must be in (0, 1]"),
        (["--clip-limit", "1.5"], "--clip-limit must be in (0, 1]"),
        (["--kernel-size", "1"], "--kernel-size must be at least 2"),
        (["--nbins", "1"], "--nbins must be a whole number from 2 to 16384"),
        (["--input", "volumes/float"], "uint8 and uint16"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(small, capsys, arguments, message):
    floats = create_volume(small, "volumes/float", (4, 4, 4), np.float32, (5, 5, 5))
    floats.mark_complete()
    assert main(["equalize", str(small), *arguments]) == 1
    error = capsys.readouterr().err
    assert error.startswith("incasem: error:") and message in error and error.count("\n") == 1
    assert sorted(p.name for p in (small / "volumes").iterdir() if not p.name.startswith(".")) == ["float", "raw"]


def test_console_script(small):
    result = subprocess.run(
        [Path(sys.executable).parent / "incasem", "equalize", str(small), "--kernel-size", "16"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert open_volume(small, "volumes/raw_equalized_0.02").complete
