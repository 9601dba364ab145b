"""Prediction on data of another voxel size than the model's: the network runs on its own grid.

A model sees the voxel size it was trained at. For data at voxel size ``v_data`` and a
model at ``v_model`` the factor per axis is ``s = v_data / v_model`` (model voxels per
data voxel: 1.6 for 8 nm data and a 5 nm model). The raw is resampled onto the model's
grid, the network runs there, and its probabilities are resampled back onto the data's
grid, so outputs line up voxel for voxel with the raw and the labels.

The model's grid is anchored at the corner of the region being predicted: model voxel 0
starts where the region's first data voxel starts, so a data voxel ``i`` has its centre
at model coordinate ``(i - origin + 0.5) * s - 0.5`` (the corner-aligned convention of
``scipy.ndimage.zoom(..., grid_mode=True)``). Every resampled value depends only on its
position, never on the block it is computed in, and the network's tiles start on its
downsampling grid anchored there too: so blockwise prediction equals one pass over the
whole region (up to float rounding), as on the native grid.

The raw is interpolated with a cubic spline, the probabilities linearly (they stay in
[0, 1] and sum to 1), both by :func:`scipy.ndimage.affine_transform`; where the model's
grid is coarser (``s < 1``) the raw is first smoothed with a Gaussian of σ = (1/s − 1)/2
data voxels against aliasing, as :func:`skimage.transform.rescale` does. On real FIB-SEM
resampled to 8 nm the cubic spline gives the 5 nm model +0.008 IoU over linear.
Factors outside :data:`FACTOR_RANGE` are refused: beyond 2× the network sees structures
at a scale it never learnt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from incasem.errors import VoxelSizeError
from incasem.geometry import NmTriple, Roi, Triple, as_nm_triple

#: Smallest and largest factor (data voxel size / model voxel size) accepted per axis.
FACTOR_RANGE: tuple[float, float] = (0.5, 2.0)

#: The anti-aliasing Gaussian reaches this many σ (scipy's default truncation).
_TRUNCATE = 4.0

#: Spline order of the raw's interpolation (cubic) and of the probabilities' (linear: they stay in [0, 1]).
RAW_ORDER, PROBABILITY_ORDER = 3, 1

#: A block of data finer than the model's grid holds at most this many data voxels per voxel of the
#: network's output block (at s = 0.8 a block holds 1.95×; at s = 0.5 it would hold 8×).
MAX_DATA_VOXELS_PER_MODEL_VOXEL = 2

#: Data voxels read beyond what the cubic spline touches: its prefilter runs over the whole read
#: region, and the influence of the region's edge decays as 0.268^distance (1e-7 after 12 voxels),
#: so every block interpolates the same values as one pass over the whole region would.
_SPLINE_MARGIN_VOXELS = 12


@dataclass(frozen=True)
class Resampling:
    """Where the model's grid lies on the data's grid, and the resampling between them.

    Attributes
    ----------
    data_voxel_size_nm, model_voxel_size_nm
        Voxel sizes (z, y, x) of the data and of the model.
    origin
        The data voxel (coordinates of the data) at whose corner model voxel 0 starts:
        the corner of the region being predicted.
    step
        The network's total downsampling factor: model tiles start at its multiples.
    """

    data_voxel_size_nm: NmTriple
    model_voxel_size_nm: NmTriple
    origin: Triple
    step: Triple

    @property
    def factors(self) -> tuple[float, float, float]:
        """Model voxels per data voxel along z, y, x: data voxel size / model voxel size."""
        z, y, x = (d / m for d, m in zip(self.data_voxel_size_nm, self.model_voxel_size_nm))
        return (z, y, x)

    @property
    def antialias_sigma_voxels(self) -> tuple[float, float, float]:
        """σ (data voxels) of the Gaussian applied before the raw goes onto a coarser model grid; 0 elsewhere."""
        z, y, x = (max(0.0, (1 / s - 1) / 2) for s in self.factors)
        return (z, y, x)

    def describe(self) -> str:
        """One line: what is resampled, with the factor per axis."""
        factors = ", ".join(f"{axis} {s:.3g}" for axis, s in zip("zyx", self.factors))
        return (
            f"resampled: data at {format_voxel_size(self.data_voxel_size_nm)} nm onto the model's {format_voxel_size(self.model_voxel_size_nm)} nm grid "
            f"(model voxels per data voxel: {factors}), probabilities back onto the data's grid"
        )

    def to_json(self) -> dict[str, object]:
        """The provenance record of the resampling."""
        return {
            "data_voxel_size_nm": list(self.data_voxel_size_nm),
            "model_voxel_size_nm": list(self.model_voxel_size_nm),
            "factors": [round(s, 6) for s in self.factors],
            "interpolation": {"raw": "cubic spline", "probabilities": "linear"},
            "antialias_sigma_voxels": [round(s, 6) for s in self.antialias_sigma_voxels],
        }

    def relative_to(self, offset: Sequence[int]) -> Resampling:
        """The same grids in coordinates that start at data voxel ``offset`` (for a block read from there)."""
        z, y, x = (o - d for o, d in zip(self.origin, offset))
        return replace(self, origin=(z, y, x))

    def _model_coordinate(self, data_voxel: Sequence[int] | np.ndarray) -> np.ndarray:
        """Model-grid coordinate of the centre of data voxel ``data_voxel``."""
        return (np.asarray(data_voxel, float) - self.origin + 0.5) * self.factors - 0.5

    def _data_coordinate(self, model_voxel: Sequence[int] | np.ndarray) -> np.ndarray:
        """Data coordinate of the centre of model voxel ``model_voxel``."""
        return (np.asarray(model_voxel, float) + 0.5) / self.factors - 0.5 + self.origin

    def model_output_roi(self, tile: Roi) -> Roi:
        """The network output (model voxels) whose linear interpolation gives every data voxel of ``tile``:
        from the model voxel below the first centre to the one above the last, widened to the
        network's downsampling grid."""
        first = np.floor(self._model_coordinate(tile.offset)).astype(int)
        last = np.floor(self._model_coordinate(np.subtract(tile.end, 1))).astype(int) + 1
        begin = [(f // g) * g for f, g in zip(first, self.step)]
        end = [-(-(e + 1) // g) * g for e, g in zip(last, self.step)]
        return Roi.from_bounds(begin, end)

    def _margin_voxels(self) -> np.ndarray:
        return np.array([int(_TRUNCATE * sigma + 0.5) + _SPLINE_MARGIN_VOXELS + 1 for sigma in self.antialias_sigma_voxels])

    def data_read_roi(self, model_input: Roi) -> Roi:
        """The data (voxels) that :meth:`raw_to_model` needs for the network input ``model_input``."""
        margin = self._margin_voxels()
        first = np.floor(self._data_coordinate(model_input.offset)).astype(int) - margin
        last = np.floor(self._data_coordinate(np.subtract(model_input.end, 1))).astype(int) + 1 + margin
        return Roi.from_bounds(first.tolist(), (last + 1).tolist())

    def raw_to_model(self, data: np.ndarray, data_roi: Roi, model_roi: Roi) -> np.ndarray:
        """Raw ``data`` (covering ``data_roi``, as :meth:`data_read_roi` gives) on the model's grid over ``model_roi``: uint8."""
        values = data.astype(np.float32)
        sigma = self.antialias_sigma_voxels
        if any(sigma):
            values = ndimage.gaussian_filter(values, sigma, output=np.float32, truncate=_TRUNCATE, mode="nearest")
        coefficients = ndimage.spline_filter(values, RAW_ORDER, output=np.float32, mode="mirror")  # float32: half of scipy's own float64 copy
        del values
        offset = self._data_coordinate(model_roi.offset) - data_roi.offset
        resampled = _interpolate(coefficients, 1 / np.asarray(self.factors), offset, model_roi.shape, RAW_ORDER, prefiltered=True)
        return np.clip(np.rint(resampled), 0, 255).astype(np.uint8)

    def probabilities_to_data(self, probabilities: np.ndarray, model_roi: Roi, tile: Roi) -> np.ndarray:
        """Class probabilities (classes, *model_roi.shape) on the model's grid, back on the data's grid over ``tile``."""
        offset = self._model_coordinate(tile.offset) - model_roi.offset
        scale = np.asarray(self.factors)
        return np.stack([_interpolate(p, scale, offset, tile.shape, PROBABILITY_ORDER) for p in probabilities])

    def data_block_shape(self, model_block: Triple) -> Triple:
        """A data-grid block whose network output is about ``model_block`` (at least 1 voxel per axis).

        Where the data are finer than the model's grid, the block holds at most
        :data:`MAX_DATA_VOXELS_PER_MODEL_VOXEL` × the voxels of ``model_block`` (the axes with
        finer data shrink evenly), so the block's float copies stay near the native block's.
        """
        shape = [max(1, math.floor(b / s)) for b, s in zip(model_block, self.factors)]
        finer = [axis for axis, s in enumerate(self.factors) if s < 1]
        excess = math.prod(shape) / (MAX_DATA_VOXELS_PER_MODEL_VOXEL * math.prod(model_block))
        if excess > 1 and finer:
            for axis in finer:
                shape[axis] = max(1, math.floor(shape[axis] / excess ** (1 / len(finer))))
        return (shape[0], shape[1], shape[2])


def _interpolate(values: np.ndarray, scale: np.ndarray, offset: np.ndarray, shape: Triple, order: int, prefiltered: bool = False) -> np.ndarray:
    """``values`` (spline coefficients where ``prefiltered``) at the points ``scale * o + offset`` for every
    voxel ``o`` of ``shape``: a spline of ``order``, float32."""
    return ndimage.affine_transform(
        values, scale, offset=offset, output_shape=shape, output=np.float32, order=order, mode="mirror", prefilter=order > 1 and not prefiltered
    )


def format_voxel_size(voxel_size: Sequence[float]) -> str:
    """A voxel size as ``8×8×8`` (nm), for messages."""
    return "×".join(f"{v:g}" for v in voxel_size)


def set_voxel_size_hint(container: object, dataset: str) -> str:
    """How to correct the voxel size of ``container``'s ``dataset``, for the messages of :func:`check_voxel_sizes`."""
    return f"set it with `incasem info {container} --dataset {dataset} --voxel-size Z,Y,X`"


def check_voxel_sizes(data_voxel_size_nm: Sequence[float], model_voxel_size_nm: Sequence[float], what: str, set_voxel_size: str) -> tuple[NmTriple, NmTriple]:
    """Refuse a model of ``model_voxel_size_nm`` on data ``what`` of ``data_voxel_size_nm`` when they
    are more than :data:`FACTOR_RANGE` apart along some axis. ``set_voxel_size`` says how to
    correct the data's voxel size, for the messages. Returns both voxel sizes as triples.

    Raises
    ------
    VoxelSizeError
        Naming the axis, its factor and what to do; for data at 1 × 1 × 1 nm (what convert
        records when no voxel size is given), asking for its voxel size.
    """
    data = as_nm_triple(data_voxel_size_nm, "voxel size", positive=True)
    model = as_nm_triple(model_voxel_size_nm, "model voxel size", positive=True)
    low, high = FACTOR_RANGE
    shown_data, shown_model = format_voxel_size(data), format_voxel_size(model)
    for axis, d, m in zip("zyx", data, model):
        if low <= d / m <= high:
            continue
        if data == (1, 1, 1):
            raise VoxelSizeError(f"{what} has voxel size 1×1×1 nm, what incasem records when none is known: {set_voxel_size}")
        raise VoxelSizeError(
            f"{what} has voxel size {shown_data} nm and the model {shown_model} nm: along {axis} that is {d / m:.3g} model voxels per "
            f"data voxel, outside {low:g}–{high:g} (the network would see structures at a scale it never learnt): use a model "
            f"made for a voxel size within 2× of the data's (`incasem models list`), or if the data's voxel size is wrong, {set_voxel_size}"
        )
    return data, model


def resampling_for(
    data_voxel_size_nm: Sequence[float], model_voxel_size_nm: Sequence[float], region: Roi, step: Triple, what: str, set_voxel_size: str
) -> Resampling | None:
    """The resampling that runs a model of ``model_voxel_size_nm`` on data ``what`` of
    ``data_voxel_size_nm`` over ``region`` (data voxels); ``None`` when the voxel sizes are equal.

    Raises
    ------
    VoxelSizeError
        As :func:`check_voxel_sizes`.
    """
    data, model = check_voxel_sizes(data_voxel_size_nm, model_voxel_size_nm, what, set_voxel_size)
    return None if data == model else Resampling(data, model, region.offset, step)
