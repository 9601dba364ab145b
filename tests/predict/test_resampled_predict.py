"""Prediction on data of another voxel size than the model's: resampled blockwise, back on the data's grid."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.transform import resize

from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.errors import VoxelSizeError
from incasem.evaluate.metrics import confusion_counts
from incasem.geometry import Roi
from incasem.io.layout import encode_probability
from incasem.io.provenance import PROVENANCE_KEY
from incasem.io.volume import open_volume
from incasem.model.checkpoint import load_checkpoint
from incasem.model.shipped import SHIPPED_FOLDER
from incasem.predict import PredictOptions, predict_roi
from incasem.predict import job as job_module
from incasem.predict.core import input_roi, predict_array
from incasem.predict.resample import Resampling
from incasem.preprocess.equalize import equalize_array
from tests.helpers import (
    ANISOTROPIC,
    LUCCHI,
    QUIET,
    SMALL,
    Crash,
    error_line,
    fail_after,
    make_checkpoint,
    read_stack,
    write_mito_config,
    write_raw,
    write_volume,
)

RAW = "volumes/raw_equalized_0.02"


def resampled_reference(checkpoint, raw: np.ndarray, region: Roi, voxel_size) -> np.ndarray:
    """The whole-volume resampled prediction, written out here: the raw (mirrored at its borders,
    smoothed against aliasing where the model's grid is coarser) interpolated by a cubic spline at the
    centre of every model voxel, the network over the whole model grid in one pass, its probabilities
    interpolated linearly at the centre of every data voxel. Model voxel 0 starts at the region's corner."""
    model, card = load_checkpoint(checkpoint)
    config = card.architecture
    factors = [d / m for d, m in zip(voxel_size, card.voxel_size_nm)]
    step = config.total_downsample_factor
    begin = [-g for g in step]  # one downsampling step before the corner: below the first data voxel's centre
    end = [math.ceil((n * f + 2) / g) * g for n, f, g in zip(region.shape, factors, step)]
    output = Roi(begin, [e - b for b, e in zip(begin, end)])
    network_input = input_roi(config, output)
    pad = 48
    padded = np.pad(raw.astype(np.float32), pad, mode="reflect")
    sigma = [max(0.0, (1 / f - 1) / 2) for f in factors]
    if any(sigma):
        padded = ndimage.gaussian_filter(padded, sigma, mode="nearest")
    centres = [(np.arange(o, e) + 0.5) / f - 0.5 + r + pad for o, e, f, r in zip(network_input.offset, network_input.end, factors, region.offset)]
    model_raw = np.clip(np.rint(ndimage.map_coordinates(padded, np.meshgrid(*centres, indexing="ij"), order=3)), 0, 255).astype(np.uint8)
    probabilities = predict_array(model, model_raw, Roi(config.context, output.shape), block_shape=output.shape, precision="fp32", device="cpu")
    back = [(np.arange(n) + 0.5) * f - 0.5 - b for n, f, b in zip(region.shape, factors, begin)]
    grid = np.meshgrid(*back, indexing="ij")
    return np.stack([ndimage.map_coordinates(p, grid, order=1) for p in probabilities])


@pytest.mark.parametrize(
    ("config", "model_nm", "data_nm", "region", "block", "in_memory"),
    [
        (SMALL, (5, 5, 5), (8, 8, 8), Roi((0, 0, 0), (40, 96, 112)), (16, 48, 56), True),  # coarser data: the model's grid is finer
        (SMALL, (5, 5, 5), (4, 4, 4), Roi((0, 0, 0), (40, 96, 112)), (16, 40, 40), True),  # finer data: smoothed, then onto a coarser grid
        (SMALL, (5, 5, 5), (8, 4, 6), Roi((7, 13, 21), (25, 61, 47)), (9, 20, 17), False),  # each axis its own factor, an inner region
        (ANISOTROPIC, (50, 5, 5), (40, 6, 6), Roi((0, 0, 0), (24, 64, 72)), (5, 32, 32), False),  # serial sections: z 0.8, y and x 1.2
    ],
)
def test_blockwise_resampled_prediction_equals_the_whole_volume_resampled(tmp_path, lucchi_crop, config, model_nm, data_nm, region, block, in_memory):
    raw = lucchi_crop[0]
    offset_voxels = (3, 5, 7)
    container = tmp_path / "cell.zarr"
    write_raw(container, raw, voxel_size=data_nm, offset_nm=[o * v for o, v in zip(offset_voxels, data_nm)])
    checkpoint = make_checkpoint(tmp_path / "model.pt", config, voxel_size=model_nm)
    world = region.shift(offset_voxels)
    output = predict_roi(checkpoint, container, RAW, world, PredictOptions(block, "cpu", "fp32"), run=QUIET)
    reference = resampled_reference(checkpoint, raw, region, data_nm)
    probabilities = open_volume(container, output.probabilities[0])
    assert probabilities.voxel_size == data_nm and probabilities.roi == world  # on the data's own grid
    stored = probabilities.read()
    assert np.abs(stored.astype(int) - encode_probability(reference[1]).astype(int)).max() <= 1
    assert np.ptp(stored) > 20 and stored.std() > 1, "the test network must not be trivially constant"
    segmentation = open_volume(container, output.segmentation).read()
    decided = np.abs(reference[1] - 0.5) > 5e-3
    np.testing.assert_array_equal(segmentation[decided], np.argmax(reference, axis=0)[decided])
    record = probabilities.array.attrs[PROVENANCE_KEY]
    assert record["resampling"]["factors"] == pytest.approx([d / m for d, m in zip(data_nm, model_nm)])
    if in_memory:  # the in-memory core tiles the same way
        tiled = predict_array(checkpoint, raw, region, block_shape=block, precision="fp32", device="cpu", voxel_size_nm=data_nm)
        np.testing.assert_allclose(tiled, reference, atol=5e-3)


@pytest.mark.parametrize("data_nm", [(8, 8, 8), (4, 4, 4), (8, 4, 6)])
def test_resampling_follows_scipy_zoom_grid_convention(data_nm):
    """Raw onto the model's grid and probabilities back equal ``scipy.ndimage.zoom(..., grid_mode=True)``:
    voxel corners of the region line up, the raw's centres are interpolated by a cubic spline, the
    probabilities' linearly."""
    rng = np.random.default_rng(1)
    data = ndimage.gaussian_filter(rng.random((30, 40, 50), np.float32) * 255, 2)
    resampling = Resampling(data_nm, (5, 5, 5), (0, 0, 0), (4, 4, 4))
    factors = resampling.factors
    model_shape = tuple(round(n * f) for n, f in zip(data.shape, factors))
    model_region = Roi((0, 0, 0), model_shape)
    read = resampling.data_read_roi(model_region)
    source = np.pad(data, [(-r, e - n) for r, e, n in zip(read.offset, read.end, data.shape)], mode="reflect")
    on_model_grid = resampling.raw_to_model(source, read, model_region)
    pad = 20  # whole model voxels at every factor used here, and far enough for the spline's prefilter
    smoothed = np.pad(data, pad, mode="reflect")
    if any(resampling.antialias_sigma_voxels):
        smoothed = ndimage.gaussian_filter(smoothed, resampling.antialias_sigma_voxels, mode="nearest")
    zoomed = ndimage.zoom(smoothed, factors, order=3, grid_mode=True, mode="grid-mirror")
    inner = tuple(slice(round(pad * f), round(pad * f) + n) for f, n in zip(factors, model_shape))
    np.testing.assert_allclose(on_model_grid, np.clip(zoomed[inner], 0, 255), atol=0.5 + 1e-3)
    back = resampling.probabilities_to_data(zoomed[inner][None], model_region, Roi((0, 0, 0), data.shape))[0]
    expected = ndimage.zoom(zoomed[inner], [1 / f for f in factors], order=1, grid_mode=True, mode="nearest")
    assert back.shape == data.shape
    np.testing.assert_allclose(back[1:-1, 1:-1, 1:-1], expected[1:-1, 1:-1, 1:-1], atol=1e-3)


@pytest.fixture
def cell_8nm(tmp_path, lucchi_crop):
    """``cell8.zarr``: the real crop recorded at 8 nm, and a small random 5 nm model."""
    container = tmp_path / "cell8.zarr"
    write_raw(container, lucchi_crop[0], voxel_size=(8, 8, 8), offset_nm=(80, 160, 0))
    return container, make_checkpoint(tmp_path / "tiny.pt")


def test_cli_says_what_it_resampled_and_resumes_to_identical_bytes(cell_8nm, monkeypatch, capsys):
    container, checkpoint = cell_8nm
    region = ["--roi-offset", "10,20,0", "--roi-shape", "16,48,56"]
    args = ["predict", str(container), "--model", str(checkpoint), *region, "--block-size", "8,24,28", "--device", "cpu", "-q"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{container}/volumes/predictions/tiny/0001")
    assert err.strip() == (
        "note: resampled: data at 8×8×8 nm onto the model's 5×5×5 nm grid (model voxels per data voxel: z 1.6, y 1.6, x 1.6), "
        "probabilities back onto the data's grid"
    )
    first = open_volume(container, "volumes/predictions/tiny/0001/prob_maps/class_1")
    assert first.shape == (16, 48, 56) and first.voxel_size == (8, 8, 8) and first.offset_nm == (80, 160, 0)
    fail_after(monkeypatch, job_module, "forward_probabilities", 3)
    with pytest.raises(Crash):
        predict_roi(checkpoint, container, RAW, Roi((10, 20, 0), (16, 48, 56)), PredictOptions((8, 24, 28), "cpu"), run=RunOptions(workers=1, progress=False))
    monkeypatch.undo()
    assert not open_volume(container, "volumes/predictions/tiny/0002/segmentation", require_complete=False).complete
    assert main([*args, "--resume"]) == 0
    for name in ("segmentation", "prob_maps/class_1"):
        before = open_volume(container, f"volumes/predictions/tiny/0001/{name}").read()
        assert before.tobytes() == open_volume(container, f"volumes/predictions/tiny/0002/{name}").read().tobytes()


def test_dask_cluster_gives_the_same_resampled_output(cell_8nm, dask_cluster):
    container, checkpoint = cell_8nm
    options, roi = PredictOptions((8, 24, 28), "cpu"), Roi((10, 20, 0), (16, 48, 56))
    local = predict_roi(checkpoint, container, RAW, roi, options, run=QUIET)
    remote = predict_roi(checkpoint, container, RAW, roi, options, run=RunOptions(scheduler=dask_cluster, progress=False))
    for a, b in ((local.segmentation, remote.segmentation), (local.probabilities[0], remote.probabilities[0])):
        np.testing.assert_array_equal(open_volume(container, a).read(), open_volume(container, b).read())


@pytest.mark.parametrize(
    ("model_nm", "data_nm", "message"),
    [
        ((5, 5, 5), (12, 12, 12), "12×12×12 nm and the model 5×5×5 nm: along z that is 2.4 model voxels per data voxel, outside 0.5–2"),
        ((5, 5, 5), (5, 2, 2), "along y that is 0.4 model voxels per data voxel"),
        ((50, 5, 5), (5, 5, 5), "along z that is 0.1 model voxels"),
        ((5, 5, 5), (1, 1, 1), "has voxel size 1×1×1 nm, what incasem records when none is known: set it with `incasem info"),
    ],
)
def test_voxel_sizes_too_far_apart_are_refused_before_anything_is_written(tmp_path, lucchi_crop, capsys, model_nm, data_nm, message):
    container = tmp_path / "cell.zarr"
    write_raw(container, lucchi_crop[0][:8, :32, :32], voxel_size=data_nm)
    checkpoint = make_checkpoint(tmp_path / "model.pt", voxel_size=model_nm)
    assert main(["predict", str(container), "--model", str(checkpoint), "--device", "cpu", "-q"]) == 1
    line = error_line(capsys)
    assert message in line and line.startswith("incasem: error: ")
    assert not (container / "volumes" / "predictions").exists()
    with pytest.raises(VoxelSizeError, match="voxel size"):
        predict_array(checkpoint, lucchi_crop[0][:8, :32, :32], voxel_size_nm=data_nm)


def test_in_memory_prediction_of_a_unet_needs_the_models_voxel_size(tmp_path, lucchi_crop):
    model, _card = load_checkpoint(make_checkpoint(tmp_path / "model.pt"))
    raw = lucchi_crop[0][:8, :32, :32]
    with pytest.raises(Exception, match="model_voxel_size_nm"):
        predict_array(model, raw, voxel_size_nm=(8, 8, 8), device="cpu")
    with_size = predict_array(model, raw, voxel_size_nm=(8, 8, 8), model_voxel_size_nm=(5, 5, 5), device="cpu", precision="fp32")
    native = predict_array(model, raw, device="cpu", precision="fp32")
    assert with_size.shape == native.shape and not np.allclose(with_size, native, atol=1e-3)


def test_the_shipped_model_on_real_em_imaged_at_8nm_scores_as_at_5nm():
    """Real Lucchi++ FIB-SEM (CLAHE at 5 nm) and its labels, resampled as if imaged at 8 nm: the 5 nm
    model predicts it on its own grid about as well as the 5 nm original, and far better than
    when the 8 nm voxels are fed to it as if they were 5 nm."""
    raw, labels = equalize_array(read_stack(LUCCHI / "image")), read_stack(LUCCHI / "labels" / "mito") != 0
    coarse_shape = tuple(round(n * 5 / 8) for n in raw.shape)
    raw_8nm = np.rint(resize(raw.astype(np.float32), coarse_shape, order=1, anti_aliasing=True, preserve_range=True)).astype(np.uint8)
    labels_8nm = resize(labels.astype(np.float32), coarse_shape, order=1, anti_aliasing=False) >= 0.5
    model = SHIPPED_FOLDER / "mito-fibsem-5nm.pt"
    native = confusion_counts(predict_array(model, raw, device="cpu")[1] >= 0.5, labels)
    resampled = confusion_counts(predict_array(model, raw_8nm, device="cpu", voxel_size_nm=(8, 8, 8))[1] >= 0.5, labels_8nm)
    as_if_5nm = confusion_counts(predict_array(model, raw_8nm, device="cpu")[1] >= 0.5, labels_8nm)
    print(f"IoU: 5 nm {native.iou:.3f}, 8 nm resampled {resampled.iou:.3f}, 8 nm as if 5 nm {as_if_5nm.iou:.3f}")
    assert resampled.iou >= native.iou - 0.03
    assert resampled.iou >= as_if_5nm.iou + 0.05


def test_a_data_config_at_8nm_is_predicted_and_scored_against_its_own_labels(tmp_path, lucchi_crop, capsys):
    raw, labels = lucchi_crop
    container = tmp_path / "cell8.zarr"
    write_raw(container, raw, voxel_size=(8, 8, 8), name="volumes/raw")
    write_volume(container, "volumes/labels/mito", (labels != 0).astype(np.uint8), (16, 32, 32), (0, 0, 0), (8, 8, 8))
    config = write_mito_config(tmp_path, "cell8", str(container), ((0, 0, 0), (40, 96, 112)), (8, 8, 8))
    checkpoint = make_checkpoint(tmp_path / "tiny.pt")
    assert main(["predict", str(config), "--model", str(checkpoint), "--device", "cpu", "-q"]) == 0
    out, err = capsys.readouterr()
    assert "note: resampled: data at 8×8×8 nm" in err and "cell8: " in out and "  mito: F1 " in out
    segmentation = open_volume(container, "volumes/predictions/tiny/0001/segmentation")
    assert segmentation.voxel_size == (8, 8, 8) and segmentation.roi == Roi((0, 0, 0), (40, 96, 112))
    expected = confusion_counts(segmentation.read() == 1, labels != 0)
    stored = segmentation.array.attrs["scores"]["mito"]
    assert (stored["tp"], stored["fp"], stored["fn"]) == (expected.tp, expected.fp, expected.fn) and expected.fn > 0


def test_a_model_without_a_voxel_size_is_refused_with_what_to_give(tmp_path, lucchi_crop, capsys):
    container = tmp_path / "cell8.zarr"
    write_raw(container, lucchi_crop[0][:8, :32, :32], voxel_size=(8, 8, 8))
    payload = torch.load(make_checkpoint(tmp_path / "tiny.pt"), weights_only=True)
    torch.save({"model_state_dict": payload["model_state_dict"]}, tmp_path / "bare.pt")  # the weights alone, as published
    del payload["metadata"]["voxel_size_nm"]
    torch.save(payload, tmp_path / "no_voxel_size.pt")
    for name, message in (("bare.pt", "import it first with `incasem models import"), ("no_voxel_size.pt", "voxel_size_nm")):
        assert main(["predict", str(container), "--model", str(tmp_path / name), "--device", "cpu", "-q"]) == 1
        assert message in error_line(capsys)
    assert not (container / "volumes" / "predictions").exists()


def test_blocks_of_finer_data_stay_near_the_networks_block_in_voxels():
    block = (128, 256, 256)
    coarser = Resampling((8, 8, 8), (5, 5, 5), (0, 0, 0), (8, 8, 8)).data_block_shape(block)
    assert coarser == (80, 160, 160)  # the network's output block on the data's grid
    assert Resampling((4, 4, 4), (5, 5, 5), (0, 0, 0), (8, 8, 8)).data_block_shape(block) == (160, 320, 320)  # 1.95x: kept
    finer = Resampling((2.5, 2.5, 2.5), (5, 5, 5), (0, 0, 0), (8, 8, 8)).data_block_shape(block)  # 8x: shrunk evenly
    assert finer == (161, 322, 322) and 1.9 * np.prod(block) < np.prod(finer) <= 2 * np.prod(block)
    in_plane = Resampling((5, 2.5, 2.5), (5, 5, 5), (0, 0, 0), (8, 8, 8)).data_block_shape(block)  # only y and x are finer
    assert in_plane[0] == 128 and in_plane[1] == in_plane[2] and np.prod(in_plane) <= 2 * np.prod(block)
