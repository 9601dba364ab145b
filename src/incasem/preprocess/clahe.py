"""The arithmetic of scikit-image's 3D CLAHE, cut into pieces that run block by block.

:func:`skimage.exposure.equalize_adapthist` works on a whole array in memory. Its
result depends on the array in three global ways, and on nothing else:

1. the input's minimum and maximum (it rescales the values to 14 bits first);
2. one clipped-histogram mapping ("LUT", ``nbins`` values) per contextual region
   (tile) of ``kernel_size`` voxels, on a grid anchored at the array's first voxel;
   tiles that reach past the end see the array mirrored (``numpy.pad`` "reflect");
3. the minimum and maximum of the interpolated 14-bit result (it rescales to [0, 1]).

Everything else is per voxel: a voxel's histogram bin, and the trilinear blend of
the mappings of the 2 x 2 x 2 tiles around it. This module holds those pieces as
small numpy functions so that a job can compute (1)-(3) as reductions over blocks
and then map each output block independently. They reproduce skimage's value
handling step by step (same integer rounding, float64 products summed in float32,
truncation to integers), so the blockwise result equals skimage's output
converted with :func:`skimage.util.img_as_ubyte`. Arrays are indexed (z, y, x).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# scikit-image's own helpers for the per-tile step, so that the tile mappings follow
# it exactly; the test suite checks the whole result against equalize_adapthist.
from skimage.exposure import rescale_intensity
from skimage.exposure._adapthist import NR_OF_GRAY, clip_histogram, map_histogram
from skimage.util import img_as_ubyte, img_as_uint

from incasem.geometry import Triple

#: Input element types CLAHE accepts.
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


@dataclass(frozen=True)
class ClaheGrid:
    """The tiles (contextual regions) skimage lays over an array.

    Attributes
    ----------
    shape
        Array shape, voxels (z, y, x).
    kernel_size
        Tile shape, voxels (z, y, x).
    """

    shape: Triple
    kernel_size: Triple

    @property
    def tiles(self) -> Triple:
        """Number of tiles per axis: ``ceil(shape / kernel_size)``."""
        s, k = self.shape, self.kernel_size
        return (-(-s[0] // k[0]), -(-s[1] // k[1]), -(-s[2] // k[2]))

    @property
    def extent(self) -> Triple:
        """Shape covered by the tiles, voxels: ``tiles * kernel_size`` (reaches past ``shape``)."""
        t, k = self.tiles, self.kernel_size
        return (t[0] * k[0], t[1] * k[1], t[2] * k[2])

    @property
    def kernel_voxels(self) -> int:
        """Voxels per tile."""
        return self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]

    def all_tiles(self) -> Iterator[Triple]:
        """Every tile index, in C order."""
        for tile in np.ndindex(*self.tiles):
            yield (int(tile[0]), int(tile[1]), int(tile[2]))

    def tile_sources(self, tile: Triple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Array indices, per axis, of the voxels that tile ``tile`` (tile indices) histograms.

        Tile ``t`` covers array coordinates ``[t * k, (t + 1) * k)``; coordinates past
        the end are mirrored exactly as skimage pads (``numpy.pad`` mode "reflect" by
        ``k // 2`` before and up to a whole tile plus ``ceil(k / 2)`` after).
        """
        indices = []
        for t, s, k, n in zip(tile, self.shape, self.kernel_size, self.tiles):
            padded = np.pad(np.arange(s), (k // 2, n * k - s + (k + 1) // 2), mode="reflect")
            indices.append(padded[k // 2 + t * k : k // 2 + (t + 1) * k])
        return (indices[0], indices[1], indices[2])


def value_histogram(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an unsigned integer array and how often each occurs.

    Returns
    -------
    values, counts
        Sorted distinct values (the input's dtype) and their counts (int64).
    """
    counts = np.bincount(values.ravel())
    present = np.flatnonzero(counts)
    return present.astype(values.dtype), counts[present]


def bin_lookup(dtype: np.dtype, value_range: tuple[int, int], nbins: int) -> np.ndarray:
    """The histogram bin of every possible input value, as skimage bins it.

    skimage converts to 16 bits (:func:`~skimage.util.img_as_uint`), stretches the
    input's ``value_range`` (min, max; in input units) to ``[0, 2**14 - 1]``,
    rounds, and bins in steps of ``1 + 2**14 // nbins``.

    Returns
    -------
    numpy.ndarray
        ``bin_of_value``: the bin, indexed by the value (length ``2**bits`` of ``dtype``).
    """
    dtype = np.dtype(dtype)
    every_value = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
    low, high = img_as_uint(np.array(value_range, dtype=dtype))
    in_range = (float(low), float(high))
    levels = np.round(rescale_intensity(img_as_uint(every_value), in_range, out_range=(0, NR_OF_GRAY - 1)))
    bins = levels.astype(np.uint16) // (1 + NR_OF_GRAY // nbins)
    return bins.astype(np.uint8 if nbins <= 256 else np.uint16)


def tile_mapping(values: np.ndarray, counts: np.ndarray, bin_of_value: np.ndarray, nbins: int, grid: ClaheGrid, clip_limit: float) -> np.ndarray:
    """The clipped-histogram mapping of one tile, from its value histogram.

    Parameters
    ----------
    values, counts
        The tile's :func:`value_histogram`.
    bin_of_value
        The bin of every input value (:func:`bin_lookup`).
    nbins
        Number of bins.
    grid
        The tile grid (for the voxels per tile).
    clip_limit
        Clipping limit, a fraction of the voxels per tile (skimage's rule:
        at least one count).

    Returns
    -------
    numpy.ndarray
        uint16 mapping from bin to 14-bit level (length ``nbins``).
    """
    hist = np.zeros(nbins, dtype=np.int64)
    np.add.at(hist, bin_of_value[values], counts)
    hist = clip_histogram(hist, max(int(clip_limit * grid.kernel_voxels), 1))
    return map_histogram(hist, 0, NR_OF_GRAY - 1, grid.kernel_voxels).astype(np.uint16)


def _axis_cells(start: int, size: int, kernel: int, tiles: int) -> list[tuple[slice, tuple[int, int], np.ndarray]]:
    """Split array coordinates ``[start, start + size)`` of one axis into interpolation cells.

    Cell ``j`` blends tiles ``j - 1`` and ``j`` (clamped to the grid) and covers the
    coordinates ``x`` with ``(x + kernel // 2) // kernel == j``. Returns, per cell met:
    the slice of the range it covers, its two tiles, and the weight of the second,
    ``c = ((x + kernel // 2) % kernel) / kernel`` (float64, as skimage; the first
    weighs ``1 - c``).
    """
    shifted = np.arange(start, start + size) + kernel // 2
    cells = shifted // kernel
    result = []
    for cell in np.unique(cells):
        where = np.flatnonzero(cells == cell)
        part = slice(int(where[0]), int(where[-1]) + 1)
        lower, upper = min(max(int(cell) - 1, 0), tiles - 1), min(int(cell), tiles - 1)
        result.append((part, (lower, upper), (shifted[part] % kernel) / kernel))
    return result


#: The 8 corners (z, y, x) of an interpolation cell, in skimage's order of summation.
_CORNERS: tuple[Triple, ...] = tuple(itertools.product((0, 1), (0, 1), (0, 1)))

_Cell = tuple[tuple[slice, slice, slice], np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _cells(offset: Triple, shape: Triple, grid: ClaheGrid, mappings: np.ndarray) -> Iterator[_Cell]:
    """The interpolation cells a box (array coordinates ``offset``, ``shape``) meets.

    Yields the part of the box in the cell, the mappings of the cell's 8 corner tiles
    (float64, shape (8, nbins)) and the per-axis weights ``c`` of the upper tiles (z, y, x).
    """
    per_axis = [_axis_cells(offset[a], shape[a], grid.kernel_size[a], grid.tiles[a]) for a in range(3)]
    for (sz, tz, cz), (sy, ty, cy), (sx, tx, cx) in itertools.product(*per_axis):
        tables = np.stack([mappings[tz[ez], ty[ey], tx[ex]] for ez, ey, ex in _CORNERS]).astype(np.float64)
        yield (sz, sy, sx), tables, (cz, cy, cx)


def _blend(bins: np.ndarray, tables: np.ndarray, weights: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """skimage's blend of the 8 corner mappings, for voxels of one cell.

    ``weights`` are the upper tiles' per-axis weights ``c``, broadcastable against
    ``bins``. Each voxel gets the sum over the corners of ``mapping[bin] * w`` with
    ``w = (w_x * w_y) * w_z`` and ``w = 1 - c`` or ``c`` per axis; each product is taken
    in float64, rounded to float32 and added in float32 in skimage's corner order,
    and the sum is truncated to an integer. Returns uint16 levels, shape of ``bins``.
    """
    index = bins.astype(np.intp)
    wz, wy, wx = ((1 - c, c) for c in weights)
    total = np.zeros(index.shape, dtype=np.float32)
    product = np.empty(index.shape, dtype=np.float64)
    for (ez, ey, ex), table in zip(_CORNERS, tables):
        np.take(table, index, out=product)
        product *= (wx[ex] * wy[ey]) * wz[ez]
        total += product.astype(np.float32)
    return total.astype(np.uint16)


def interpolate(bins: np.ndarray, offset: Triple, grid: ClaheGrid, mappings: np.ndarray) -> np.ndarray:
    """The 14-bit CLAHE levels of a box of the array, from its bins and the tile mappings.

    Every voxel is blended from the mappings of the 8 tiles around it with skimage's
    arithmetic (see :func:`_blend`), so any split of the array into boxes gives the
    same values as the whole array.

    Parameters
    ----------
    bins
        Histogram bins of the box's voxels (see :func:`bin_lookup`).
    offset
        Array coordinates (voxels) of the box's first voxel.
    grid
        The tile grid of the whole array.
    mappings
        Tile mappings, shape ``grid.tiles + (nbins,)`` (may be memory-mapped; only
        the tiles around the box are read).

    Returns
    -------
    numpy.ndarray
        uint16 levels in ``[0, 2**14)``, shape of ``bins``.
    """
    out = np.empty(bins.shape, dtype=np.uint16)
    for part, tables, (cz, cy, cx) in _cells(offset, bins.shape, grid, mappings):
        out[part] = _blend(bins[part], tables, (cz[:, None, None], cy[None, :, None], cx[None, None, :]))
    return out


def level_range(bins: np.ndarray, offset: Triple, grid: ClaheGrid, mappings: np.ndarray) -> tuple[int, int]:
    """(min, max) of :func:`interpolate` of a box, blending only the voxels that can reach them.

    A voxel's level lies between ``min(mappings[bin]) - 1`` and ``max(mappings[bin])``
    over its 8 corner tiles (a convex blend, truncated). So only voxels of a bin whose
    upper bound exceeds the lower bound of the cell's highest bin can hold the cell's
    maximum, and likewise for the minimum. Mappings are cumulative sums, so these
    bins are the few at both ends of the range: typically a thousandth of the voxels
    is blended. The result equals ``(levels.min(), levels.max())`` exactly.
    """
    low, high = NR_OF_GRAY, -1
    for part, tables, coeffs in _cells(offset, bins.shape, grid, mappings):
        cell = bins[part]
        upper, lower = tables.max(axis=0), tables.min(axis=0) - 1
        top, bottom = int(cell.max()), int(cell.min())
        first_high = int(np.flatnonzero(upper > lower[top])[0])
        last_low = int(np.flatnonzero(lower < upper[bottom])[-1])
        points = np.nonzero((cell >= first_high) | (cell <= last_low))
        weights = (coeffs[0][points[0]], coeffs[1][points[1]], coeffs[2][points[2]])
        levels = _blend(cell[points], tables, weights)
        low, high = min(low, int(levels.min())), max(high, int(levels.max()))
    return low, high


def output_lookup(low: int, high: int) -> np.ndarray:
    """uint8 output of every 14-bit level, given the (min, max) of the levels of the whole array.

    skimage stretches its result's range to [0, 1] (float64); incasem stores that
    as :func:`~skimage.util.img_as_ubyte` does (``rint(255 * value)``).

    Returns
    -------
    numpy.ndarray
        uint8, indexed by the 14-bit grey level (length ``2**14``).
    """
    levels = np.arange(NR_OF_GRAY, dtype=np.float64)
    return img_as_ubyte(rescale_intensity(levels, in_range=(float(low), float(high))))
