"""The in-memory prediction core: a U-Net over a uint8 array, tiled on the network's grid.

:func:`predict_array` is the one place where the network meets data. The zarr job
(:mod:`incasem.predict.job`) calls it once per block on the block's input (its write
region grown by the network's context), and training validation, evaluation and
previews call it on arrays they hold in memory. Tiles start on a grid of the
network's total downsampling factor anchored at the output region's corner, so the
stitched result equals one forward pass over the whole region (the U-Net is
translation-equivariant on that grid) up to float rounding.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from incasem.errors import InvalidValueError, option
from incasem.geometry import Roi, Triple, as_positive_triple, check_not_empty
from incasem.io.padding import PadMode, padded_crop
from incasem.model.checkpoint import load_checkpoint
from incasem.model.unet import UNet, UNetConfig, normalize_raw
from incasem.predict.device import Precision, choose_block_shape, select_device
from incasem.predict.resample import Resampling, resampling_for

#: ``auto`` picks bf16 autocast where the device runs it natively, fp32 elsewhere.
PrecisionChoice = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
PADDINGS: tuple[str, ...] = ("reflect", "symmetric", "edge", "constant")

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX; read from /proc/cpuinfo)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively: CUDA GPUs that support it, CPUs with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and _cpu_has_native_bf16()


def check_choice(option: str, value: object, allowed: tuple[str, ...]) -> None:
    """Refuse ``value`` for ``option`` unless it is one of ``allowed`` (one-line :class:`InvalidValueError`)."""
    if value not in allowed:
        raise InvalidValueError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")


def resolve_precision(precision: PrecisionChoice, device: torch.device) -> Precision:
    """The precision to run: ``auto`` becomes ``bf16`` where :func:`native_bf16`, else ``fp32``.

    Raises
    ------
    InvalidValueError
        For a value other than auto, fp32, bf16 or fp16.
    """
    check_choice(option("precision", "--precision"), precision, PRECISIONS)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def prepare_model(model: UNet, device: torch.device) -> UNet:
    """``model`` in eval mode on ``device``, channels-last on the CPU (faster 3D convolutions there)."""
    model = model.to(device).eval()
    # torch's stubs lack Module.to(memory_format=...), which nn.Module.to accepts
    return model.to(memory_format=torch.channels_last_3d) if device.type == "cpu" else model  # type: ignore[call-overload]


def _forward(model: UNet, raw: np.ndarray, device: torch.device, precision: Precision) -> np.ndarray:
    x = normalize_raw(torch.from_numpy(np.ascontiguousarray(raw)))[None, None].to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    dtype = _AUTOCAST_DTYPES.get(precision)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(x)
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


def _yx_symmetric(config: UNetConfig) -> bool:
    """Whether swapping y and x maps the network onto itself (same factors and kernels along y and x)."""
    kernels = [k for level in (*config.kernels_down, *config.kernels_up) for k in level]
    return all(t[1] == t[2] for t in (*config.downsample_factors, *kernels, config.final_kernel_size))


def augmentations(config: UNetConfig) -> list[tuple[tuple[int, ...], bool]]:
    """Test-time augmentations: every mirroring of z, y, x (8), each also with y and x swapped
    where the network is symmetric in y and x (16). Each is (flipped axes, swap y/x)."""
    flips = [tuple(axis for axis in range(3) if mask >> axis & 1) for mask in range(8)]
    swaps = (False, True) if _yx_symmetric(config) else (False,)
    return [(flip, swap) for swap in swaps for flip in flips]


def forward_probabilities(model: UNet, raw: np.ndarray, device: torch.device, precision: Precision, tta: bool = False) -> np.ndarray:
    """Class probabilities (classes, z, y, x; float32) of one forward pass of ``model`` on uint8 ``raw``.

    ``raw`` must be a valid input shape of the network; the output is smaller by
    twice the context. ``tta``: the mean over :func:`augmentations` of the input,
    each result mapped back (8 or 16 passes).
    """
    if not tta:
        return _forward(model, raw, device, precision)
    total = None
    for flip, swap in augmentations(model.config):
        data = np.flip(raw, flip) if flip else raw
        data = data.swapaxes(1, 2) if swap else data
        result = _forward(model, data, device, precision)
        result = result.swapaxes(2, 3) if swap else result
        result = np.flip(result, tuple(axis + 1 for axis in flip)) if flip else result
        total = result if total is None else total + result
    assert total is not None  # augmentations() has 8 or 16 passes
    return total / len(augmentations(model.config))


def _round_up(shape: Triple, step: Triple) -> Triple:
    z, y, x = (-(-s // g) * g for s, g in zip(shape, step))
    return (z, y, x)


def input_roi(config: UNetConfig, tile: Roi) -> Roi:
    """The network input that predicts output region ``tile``: the tile grown by the context,
    its shape rounded up to a valid input (so a short border tile stays on the grid)."""
    z, y, x = (o - c for o, c in zip(tile.offset, config.context))
    return Roi((z, y, x), config.input_shape_for_output(_round_up(tile.shape, config.total_downsample_factor)))


@dataclass(frozen=True)
class TileInput:
    """What the network reads for one output tile, and how its output becomes the tile's probabilities.

    Made by :func:`tile_input`. ``data`` is the network's input (uint8, on the model's grid);
    :meth:`finish` takes the network's probabilities for it to the tile's (on the data's grid).
    Preparing and finishing run outside the network, so a job overlaps them with other blocks.
    """

    data: np.ndarray
    tile: Roi
    resampling: Resampling | None = None

    def finish(self, probabilities: np.ndarray) -> np.ndarray:
        """The tile's probabilities (classes, *tile.shape) from the network's output for :attr:`data`."""
        if self.resampling is None:
            return probabilities[(slice(None), *Roi((0, 0, 0), self.tile.shape).to_slices())]
        return self.resampling.probabilities_to_data(probabilities, self.resampling.model_output_roi(self.tile), self.tile)


def tile_input(config: UNetConfig, raw: np.ndarray, tile: Roi, padding: PadMode, resampling: Resampling | None = None) -> TileInput:
    """The network input for output region ``tile`` (coordinates of ``raw``), read from ``raw``.

    The input is :func:`input_roi`; the part of it outside ``raw`` is filled by ``padding``.
    ``resampling`` (in the coordinates of ``raw``): ``raw`` and ``tile`` are on the data's
    grid, the network runs on the model's (:mod:`incasem.predict.resample`).
    """
    if resampling is None:
        return TileInput(padded_crop(raw, input_roi(config, tile), padding), tile)
    model_input = input_roi(config, resampling.model_output_roi(tile))
    read = resampling.data_read_roi(model_input)
    return TileInput(resampling.raw_to_model(padded_crop(raw, read, padding), read, model_input), tile, resampling)


def predict_tile(
    model: UNet,
    raw: np.ndarray,
    tile: Roi,
    device: torch.device,
    precision: Precision,
    padding: PadMode,
    tta: bool = False,
    resampling: Resampling | None = None,
) -> np.ndarray:
    """Probabilities of output region ``tile`` (coordinates of ``raw``), reading its input from ``raw``
    (:func:`tile_input`). ``tta``: test-time augmentation (see :func:`forward_probabilities`)."""
    prepared = tile_input(model.config, raw, tile, padding, resampling)
    return prepared.finish(forward_probabilities(model, prepared.data, device, precision, tta))


def predict_array(
    model: UNet | str | Path,
    raw: np.ndarray,
    output_roi: Roi | None = None,
    *,
    block_shape: Triple | None = None,
    padding: PadMode = "reflect",
    precision: PrecisionChoice = "auto",
    device: str | torch.device = "auto",
    tta: bool = False,
    voxel_size_nm: Sequence[float] | None = None,
    model_voxel_size_nm: Sequence[float] | None = None,
) -> np.ndarray:
    """Predict class probabilities for a region of a uint8 array held in memory.

    Parameters
    ----------
    model
        A :class:`~incasem.model.unet.UNet`, or the path of an incasem checkpoint.
    raw
        3D uint8 raw (z, y, x), CLAHE-equalised as the model was trained. It may hold
        the network's context around ``output_roi``; context that lies outside it is
        filled by ``padding``.
    output_roi
        Region to predict, in voxel coordinates of ``raw`` (default: all of ``raw``).
    block_shape
        Output tile in voxels, rounded down to multiples of the network's downsampling
        (at least one multiple; on another voxel size than the model's, used as given);
        default: the fewest balanced tiles that fit the device's free memory.
    padding
        ``reflect`` (mirror at the border), ``symmetric``, ``edge`` or ``constant`` (zeros).
    precision
        ``auto`` (bf16 autocast where the device runs it natively, else fp32), ``fp32``,
        ``bf16`` or ``fp16``.
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a :class:`torch.device`.
    tta
        Test-time augmentation: average over mirrorings (and y/x swaps), 8-16x the time.
    voxel_size_nm
        Voxel size of ``raw`` (z, y, x; nm). Where it differs from the model's, the raw
        is resampled onto the model's grid (anchored at ``output_roi``'s corner) and the
        probabilities back onto ``raw``'s (:mod:`incasem.predict.resample`); default: the
        model's.
    model_voxel_size_nm
        The model's voxel size; default: its card's (needed with ``voxel_size_nm`` when
        ``model`` is a :class:`~incasem.model.unet.UNet`, which has no card).

    Returns
    -------
    numpy.ndarray
        float32 probabilities, shape (classes, *output_roi.shape).

    Raises
    ------
    InvalidValueError
        For raw that is not 3D uint8, a region that does not overlap ``raw``, or a bad
        block shape, padding, precision or device.
    VoxelSizeError
        For voxel sizes more than 2× apart along some axis
        (:data:`~incasem.predict.resample.FACTOR_RANGE`).
    """
    if not isinstance(raw, np.ndarray) or raw.ndim != 3 or raw.dtype != np.uint8:
        described = f"{raw.dtype} array of shape {raw.shape}" if isinstance(raw, np.ndarray) else type(raw).__name__
        raise InvalidValueError(f"raw must be a 3D uint8 array (z, y, x), got a {described}: equalize or convert it")
    bounds = Roi((0, 0, 0), raw.shape)
    output_roi = bounds if output_roi is None else output_roi
    check_not_empty(output_roi, "output region", "give an output region of at least 1 voxel per axis")
    if output_roi.intersect(bounds).empty:
        raise InvalidValueError(f"output region {output_roi} does not overlap the raw array {bounds}")
    check_choice(option("padding", "--padding"), padding, PADDINGS)
    device = device if isinstance(device, torch.device) else select_device(device)
    run_precision = resolve_precision(precision, device)
    model_voxel_size = None
    if not isinstance(model, UNet):
        model, card = load_checkpoint(model)
        model_voxel_size = card.voxel_size_nm
    resampling = _in_memory_resampling(voxel_size_nm, model_voxel_size_nm or model_voxel_size, output_roi, model.config)
    model = prepare_model(model, device)
    requested = None if block_shape is None else as_positive_triple(block_shape, option("block_shape", "--block-size"))
    if resampling is None:
        block_shape = choose_block_shape(model.config, device, run_precision, output_roi.shape, requested)
    else:
        model_shape = resampling.model_output_roi(output_roi).shape
        block_shape = requested or resampling.data_block_shape(choose_block_shape(model.config, device, run_precision, model_shape, None))
    probabilities = np.empty((model.config.num_classes, *output_roi.shape), np.float32)
    for tile in output_roi.tiles(block_shape):
        local = tile.relative_to(output_roi.offset)
        probabilities[(slice(None), *local.to_slices())] = predict_tile(model, raw, tile, device, run_precision, padding, tta, resampling)
    return probabilities


def _in_memory_resampling(
    voxel_size_nm: Sequence[float] | None, model_voxel_size_nm: Sequence[float] | None, output_roi: Roi, config: UNetConfig
) -> Resampling | None:
    """:func:`predict_array`'s resampling: none unless both voxel sizes are known and differ."""
    if voxel_size_nm is None:
        return None
    if model_voxel_size_nm is None:
        raise InvalidValueError("voxel_size_nm needs the model's voxel size: pass model_voxel_size_nm with a UNet, or the checkpoint's path (its card has it)")
    return resampling_for(voxel_size_nm, model_voxel_size_nm, output_roi, config.total_downsample_factor, "raw", "pass its voxel size as voxel_size_nm")
