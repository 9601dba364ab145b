"""The in-memory prediction core: tiling on the network's grid, balanced blocks, bf16 by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from incasem.errors import IncasemError
from incasem.evaluate.metrics import confusion_counts
from incasem.geometry import Roi
from incasem.io.padding import padded_crop
from incasem.model.checkpoint import load_checkpoint
from incasem.model.shipped import SHIPPED_FOLDER
from incasem.model.unet import UNetConfig
from incasem.predict.core import forward_probabilities, native_bf16, predict_array, resolve_precision
from incasem.predict.device import balanced_block_shape, choose_block_shape
from incasem.preprocess.equalize import equalize_array
from tests.helpers import ANISOTROPIC, LUCCHI, LUCCHI_DEMO_REGION, SMALL, make_checkpoint, read_stack

DEMO_MODEL = SHIPPED_FOLDER / "mito-fibsem-5nm-small.pt"


def one_pass(model, raw: np.ndarray, roi: Roi) -> np.ndarray:
    """The reference: one forward pass over all of ``roi`` with its context read from ``raw`` (reflect)."""
    config = model.config
    step = config.total_downsample_factor
    rounded = tuple(-(-s // g) * g for s, g in zip(roi.shape, step))
    corner = tuple(o - c for o, c in zip(roi.offset, config.context))
    data = padded_crop(raw, Roi(corner, config.input_shape_for_output(rounded)), "reflect")
    probabilities = forward_probabilities(model.eval(), data, torch.device("cpu"), "fp32")
    return probabilities[(slice(None), *Roi((0, 0, 0), roi.shape).to_slices())]


@pytest.mark.parametrize(
    ("config", "roi", "block"),
    [
        (SMALL, Roi((0, 0, 0), (40, 96, 112)), (16, 40, 24)),  # whole array, odd block multiples
        (SMALL, Roi((5, 11, 3), (21, 37, 45)), (8, 16, 24)),  # inner region, not a multiple of the block
        (ANISOTROPIC, Roi((3, 7, 9), (9, 50, 30)), (3, 24, 16)),  # (1, 2, 2) pooling, 1x3x3 kernels
    ],
)
def test_tiles_stitch_to_one_pass(tmp_path, lucchi_crop, config, roi, block):
    raw, _ = lucchi_crop
    model, _ = load_checkpoint(make_checkpoint(tmp_path / "m.pt", config))
    tiled = predict_array(model, raw, roi, block_shape=block, precision="fp32", device="cpu")
    reference = one_pass(model, raw, roi)
    assert tiled.shape == reference.shape == (2, *roi.shape)
    np.testing.assert_allclose(tiled, reference, atol=2e-5)
    assert np.ptp(reference[1]) > 0.1, "the test network must not be trivially constant"


def _tiling_cost(config: UNetConfig, roi_shape, edges_per_axis) -> int:
    """Input voxels the network reads in all for a tiling given as the tile edges along each axis."""
    inputs = [[config.input_shape_for_output((e, e, e))[axis] for e in edges] for axis, edges in enumerate(edges_per_axis)]
    return int(np.prod([sum(axis) for axis in inputs]))


@pytest.mark.parametrize(("roi", "memory_gb"), [((200, 200, 200), 4), ((256, 256, 256), 24), ((165, 512, 640), 8), ((200, 200, 200), 24)])
def test_balanced_tiles_cost_no_more_than_an_ideal_cut(roi, memory_gb):
    """No "one big block plus thin slivers": the uniform tiling on the 8-voxel grid (which keeps output
    chunks aligned with blocks) reads at most 5 % more input than cutting each axis into the same
    number of parts as equal as the grid allows."""
    config = UNetConfig()  # the standard network: context 47, step 8
    block = balanced_block_shape(config, torch.device("cpu"), "bf16", roi, memory_bytes=memory_gb * 10**9)
    uniform, ideal = [], []
    for edge, size in zip(block, roi):
        parts = -(-size // edge)
        uniform.append([edge] * (parts - 1) + [size - edge * (parts - 1)])
        base = (size // parts) // 8 * 8
        extra = (size - base * parts + 7) // 8  # parts that take one more step of 8
        ideal.append([base + 8] * min(extra, parts) + [base] * (parts - min(extra, parts)))
    assert _tiling_cost(config, roi, uniform) <= 1.05 * _tiling_cost(config, roi, ideal), (block, uniform, ideal)
    fits = config.input_shape_for_output(block)
    assert np.prod(fits) * 300 <= memory_gb * 10**9 * 0.5


def test_balanced_tiles_use_one_block_where_it_fits():
    config = UNetConfig()
    assert balanced_block_shape(config, torch.device("cpu"), "bf16", (48, 192, 192), memory_bytes=24 * 10**9) == (48, 192, 192)


def test_requested_block_is_rounded_and_clipped_to_the_region():
    config = UNetConfig()
    assert choose_block_shape(config, torch.device("cpu"), "fp32", (20, 30, 40), (100000, 13, 1)) == (24, 8, 8)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"raw": np.zeros((4, 4), np.uint8)}, "3D uint8"),
        ({"raw": np.zeros((4, 4, 4), np.float32)}, "3D uint8"),
        ({"output_roi": Roi((10, 10, 10), (2, 2, 2))}, "does not overlap"),
        ({"padding": "wrap"}, "^padding must be one of"),
        ({"precision": "fp8"}, "^precision must be one of"),
        ({"block_shape": (0, 8, 8)}, r"^block_shape must be positive"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, arguments, message):
    model, _ = load_checkpoint(make_checkpoint(tmp_path / "m.pt"))
    call = {"raw": np.zeros((8, 8, 8), np.uint8), **arguments}
    with pytest.raises(IncasemError, match=message) as caught:
        predict_array(model, **call)
    assert "\n" not in str(caught.value)


def test_auto_precision_is_bf16_only_where_native():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"


@pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="the shipped demo model is missing")
def test_bf16_agrees_with_fp32_on_real_data():
    """The trained demo model on held-out Lucchi++ (the bundled crop): bf16 autocast vs fp32."""
    raw = equalize_array(read_stack(LUCCHI / "image", *LUCCHI_DEMO_REGION))
    labels = read_stack(LUCCHI / "labels" / "mito", *LUCCHI_DEMO_REGION)
    model, _ = load_checkpoint(DEMO_MODEL)
    segmentations = {precision: np.argmax(predict_array(model, raw, precision=precision, device="cpu"), axis=0) for precision in ("fp32", "bf16")}
    agreement = np.mean(segmentations["fp32"] == segmentations["bf16"])
    f1 = {p: confusion_counts(s == 1, labels != 0).f1 for p, s in segmentations.items()}
    assert agreement >= 0.999, agreement
    assert abs(f1["fp32"] - f1["bf16"]) < 0.002, f1
    assert f1["fp32"] > 0.5, "the demo model must segment the held-out crop"


@pytest.mark.parametrize(
    ("config", "passes"),
    [
        # 16 whole-volume passes take minutes on 2 CPU cores; the 8-pass case keeps --tta in the default run
        pytest.param(SMALL, 16, marks=pytest.mark.slow),
        pytest.param(ANISOTROPIC, 16, marks=pytest.mark.slow),
        (UNetConfig(num_fmaps=4, downsample_factors=((1, 2, 1),)), 8),
    ],
)
def test_test_time_augmentation_averages_mirrored_and_swapped_predictions(tmp_path, lucchi_crop, config, passes):
    """--tta: the mean over every mirroring (and y/x swap where the network is symmetric in y and x),
    each prediction mapped back onto the original voxels."""
    from incasem.predict.core import augmentations

    raw, _ = lucchi_crop
    model, _ = load_checkpoint(make_checkpoint(tmp_path / "m.pt", config))
    assert len(augmentations(model.config)) == passes
    valid = [s for s in range(8, 65) if all(n == s for n in np.subtract(model.config.input_shape_for_output((s, s, s)), 2 * np.array(model.config.context)))]
    z, yx = max(s for s in valid if s <= raw.shape[0]), valid[-1]
    data = raw[:z, :yx, :yx]  # exact output sizes (no rounding up), y = x (swappable)
    roi = Roi((0, 0, 0), data.shape)
    tta = predict_array(model, data, roi, block_shape=data.shape, precision="fp32", device="cpu", tta=True)
    expected = []
    for flip, swap in augmentations(model.config):
        view = np.flip(data, flip) if flip else data
        view = np.ascontiguousarray(view.swapaxes(1, 2) if swap else view)
        predicted = predict_array(model, view, Roi((0, 0, 0), view.shape), block_shape=view.shape, precision="fp32", device="cpu")
        predicted = predicted.swapaxes(2, 3) if swap else predicted
        expected.append(np.flip(predicted, tuple(a + 1 for a in flip)) if flip else predicted)
    np.testing.assert_allclose(tta, np.mean(expected, axis=0), atol=2e-5)
    plain = predict_array(model, data, roi, block_shape=data.shape, precision="fp32", device="cpu")
    assert np.abs(tta - plain).max() > 1e-3, "augmentation changes the result"
