"""Regions of interest on a 3D grid, axis order always (z, y, x), and nanometre triples.

A :class:`Roi` is an immutable box given by an ``offset`` (its first corner) and a
``shape``, in whole voxels. World positions and voxel sizes are nanometres and need
not be whole numbers (serial sections of 50 × 4.6 × 4.6 nm are common): they are
:data:`NmTriple` values made by :func:`as_nm_triple`, and :func:`voxels_to_nm` /
:func:`nm_to_voxels` convert between the two, the latter refusing positions that are
not on the voxel grid.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from incasem.errors import InvalidValueError, RoiError, VoxelSizeError, option

Triple = tuple[int, int, int]
#: Nanometres (z, y, x): whole numbers are ints, others floats rounded to :data:`NM_DECIMALS`.
NmTriple = tuple[float, float, float]

#: Decimals kept of nanometre values (1e-6 nm): enough for any voxel size, and it
#: makes ``3 * 4.6`` and ``13.8`` the same position.
NM_DECIMALS = 6


def _three(values: object, name: str) -> tuple[object, object, object]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidValueError(f"{name} must have 3 entries (z, y, x), got {values!r}")
    items = tuple(values)
    if len(items) != 3:
        raise InvalidValueError(f"{name} must have 3 entries (z, y, x), got {list(items)}")
    return items


def as_triple(values: Sequence[int] | int, name: str = "value") -> Triple:
    """Return ``values`` as a tuple of three Python ints (a scalar is repeated).

    Raises
    ------
    InvalidValueError
        If ``values`` does not have three whole-number entries; the message names ``name``.
    """
    if isinstance(values, numbers.Integral) and not isinstance(values, bool):
        return (int(values), int(values), int(values))
    items = _three(values, name)
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v == round(v) for v in items):
        raise InvalidValueError(f"{name} must be whole numbers (z, y, x), got {list(items)}")
    return (int(items[0]), int(items[1]), int(items[2]))  # type: ignore[call-overload]


def as_positive_triple(values: Sequence[int] | int, name: str = "value") -> Triple:
    """Like :func:`as_triple`, and every entry must be at least 1."""
    triple = as_triple(values, name)
    if min(triple) < 1:
        raise InvalidValueError(f"{name} must be positive (z, y, x), got {list(triple)}")
    return triple


def nm_value(value: float) -> float:
    """A nanometre value rounded to :data:`NM_DECIMALS`; an int when it is whole."""
    rounded = round(float(value), NM_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    return int(rounded) if rounded.is_integer() else rounded


def as_nm_triple(values: Sequence[float] | float, name: str = "value", positive: bool = False) -> NmTriple:
    """Return ``values`` (nm, z, y, x; a scalar is repeated) as finite numbers, see :func:`nm_value`.

    Raises
    ------
    InvalidValueError
        If there are not three finite real numbers, or ``positive`` and one is not above 0.
    """
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        items: tuple[object, object, object] = (values, values, values)
    else:
        items = _three(values, name)
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in items):
        raise InvalidValueError(f"{name} must be three finite numbers in nm (z, y, x), got {list(items)}")
    triple = tuple(nm_value(v) for v in items)  # type: ignore[arg-type]
    if positive and min(triple) <= 0:
        raise InvalidValueError(f"{name} must be positive (nm, z, y, x), got {list(items)}")
    return triple  # type: ignore[return-value]


def voxels_to_nm(voxels: Sequence[int], voxel_size: NmTriple) -> NmTriple:
    """World position (nm) of the voxel position ``voxels`` on a grid of ``voxel_size``."""
    return tuple(nm_value(i * v) for i, v in zip(voxels, voxel_size))  # type: ignore[return-value]


def nm_to_voxels(position_nm: Sequence[float], voxel_size: NmTriple, what: str = "position") -> Triple:
    """The voxel position of world position ``position_nm``, which must lie on the voxel grid.

    Raises
    ------
    VoxelSizeError
        If a coordinate is not a whole multiple of the voxel size (to 1e-6 voxels).
    """
    quotients = [p / v for p, v in zip(position_nm, voxel_size)]
    voxels = [round(q) for q in quotients]
    if any(abs(q - n) > 1e-6 for q, n in zip(quotients, voxels)):
        raise VoxelSizeError(f"{what} {list(position_nm)} nm is not a whole multiple of the voxel size {list(voxel_size)} nm")
    return (voxels[0], voxels[1], voxels[2])


@dataclass(frozen=True, slots=True)
class Roi:
    """An axis-aligned box: ``offset`` (first corner) and ``shape``, both (z, y, x)."""

    offset: Triple
    shape: Triple

    def __post_init__(self) -> None:
        object.__setattr__(self, "offset", as_triple(self.offset, "offset"))
        object.__setattr__(self, "shape", as_triple(self.shape, "shape"))
        if min(self.shape) < 0:
            raise RoiError(f"a region's shape must not be negative, got {list(self.shape)}")

    @classmethod
    def from_bounds(cls, begin: Sequence[int], end: Sequence[int]) -> Roi:
        """Box from its first corner ``begin`` (inclusive) to ``end`` (exclusive)."""
        b, e = as_triple(begin, "begin"), as_triple(end, "end")
        return cls(b, (e[0] - b[0], e[1] - b[1], e[2] - b[2]))

    @property
    def end(self) -> Triple:
        """The corner opposite ``offset`` (exclusive)."""
        o, s = self.offset, self.shape
        return (o[0] + s[0], o[1] + s[1], o[2] + s[2])

    @property
    def size(self) -> int:
        """Number of grid points inside the box."""
        return self.shape[0] * self.shape[1] * self.shape[2]

    @property
    def empty(self) -> bool:
        """Whether the box holds no grid point."""
        return self.size == 0

    def shift(self, by: Sequence[int]) -> Roi:
        """The same box moved by ``by``."""
        d = as_triple(by, "shift")
        return Roi((self.offset[0] + d[0], self.offset[1] + d[1], self.offset[2] + d[2]), self.shape)

    def grow(self, before: Sequence[int] | int, after: Sequence[int] | int | None = None) -> Roi:
        """The box enlarged by ``before`` at the start and ``after`` (default: the same) at the end."""
        b = as_triple(before, "grow")
        a = b if after is None else as_triple(after, "grow")
        return Roi.from_bounds(
            (self.offset[0] - b[0], self.offset[1] - b[1], self.offset[2] - b[2]),
            (self.end[0] + a[0], self.end[1] + a[1], self.end[2] + a[2]),
        )

    def intersect(self, other: Roi) -> Roi:
        """The common part of two boxes (empty shape where they do not overlap)."""
        begin = tuple(max(a, b) for a, b in zip(self.offset, other.offset))
        end = tuple(min(a, b) for a, b in zip(self.end, other.end))
        end = tuple(max(e, b) for e, b in zip(end, begin))
        return Roi.from_bounds(begin, end)

    def contains(self, other: Roi) -> bool:
        """Whether ``other`` lies entirely inside this box."""
        return all(so <= oo for so, oo in zip(self.offset, other.offset)) and all(oe <= se for se, oe in zip(self.end, other.end))

    def is_on_grid(self, spacing: Sequence[int]) -> bool:
        """Whether offset and shape are multiples of ``spacing``."""
        g = as_triple(spacing, "spacing")
        return all(o % s == 0 for o, s in zip(self.offset, g)) and all(n % s == 0 for n, s in zip(self.shape, g))

    def to_slices(self, origin: Sequence[int] = (0, 0, 0)) -> tuple[slice, slice, slice]:
        """Numpy slices selecting this box from an array whose first element sits at ``origin``."""
        o = as_triple(origin, "origin")
        return tuple(slice(b - oo, e - oo) for b, e, oo in zip(self.offset, self.end, o))  # type: ignore[return-value]

    def relative_to(self, origin: Sequence[int]) -> Roi:
        """The box in coordinates whose zero is ``origin``."""
        o = as_triple(origin, "origin")
        return self.shift((-o[0], -o[1], -o[2]))

    def tiles(self, tile_shape: Sequence[int], grid_origin: Sequence[int] | None = None) -> Iterator[Roi]:
        """Cut the box into tiles of ``tile_shape`` on a grid anchored at ``grid_origin``.

        The grid defaults to one anchored at ``offset``. Tiles at the borders are
        clipped to the box, so the tiles cover the box exactly once; with the grid
        of a dataset's chunks, no two tiles share a chunk.
        """
        t = as_triple(tile_shape, "tile_shape")
        if min(t) <= 0:
            raise InvalidValueError(f"tile_shape must be positive, got {list(t)}")
        g = self.offset if grid_origin is None else as_triple(grid_origin, "grid_origin")
        starts = [range(g[a] + ((self.offset[a] - g[a]) // t[a]) * t[a], self.end[a], t[a]) for a in range(3)]
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    tile = Roi((z, y, x), t).intersect(self)
                    if not tile.empty:
                        yield tile

    def __str__(self) -> str:
        return f"[{self.offset[0]}:{self.end[0]}, {self.offset[1]}:{self.end[1]}, {self.offset[2]}:{self.end[2]}]"


def check_not_empty(
    roi: Roi,
    what: str = "region",
    fix: str = f"give {option('roi', '--roi-shape')} of at least 1 voxel per axis, or leave "
    f"{option('roi', '--roi-offset/--roi-shape')} out for the whole dataset",
) -> Roi:
    """Return ``roi`` unless it holds no voxel; jobs call this before they look where it lies.

    Raises
    ------
    RoiError
        Saying that the region is empty, along which axes, and ``fix`` (what to give instead).
    """
    if roi.empty:
        axes = ", ".join(axis for axis, size in zip("zyx", roi.shape) if size == 0)
        raise RoiError(f"{what} {roi} (voxels) is empty: its shape {list(roi.shape)} has no voxel along {axes}: {fix}")
    return roi
