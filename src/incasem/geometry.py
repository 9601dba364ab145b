"""Regions of interest on a 3D grid, axis order always (z, y, x).

A :class:`Roi` is an immutable box given by an ``offset`` (its first corner) and a
``shape``. It carries no unit: the same type serves for voxel and for world (nm)
coordinates, and every function that takes one says which it expects. Conversion
between the two goes through a voxel size with :meth:`Roi.to_voxels` and
:meth:`Roi.to_world`, which refuse boxes that are not on the voxel grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterator, Sequence

from incasem.errors import RoiError

Triple = tuple[int, int, int]


def as_triple(values: Sequence[int] | int, name: str = "value") -> Triple:
    """Return ``values`` as a tuple of three Python ints (a scalar is repeated).

    Raises
    ------
    ValueError
        If ``values`` does not have three integral entries; the message names ``name``.
    """
    if isinstance(values, int):
        return (values, values, values)
    items = tuple(values)
    if len(items) != 3:
        raise ValueError(f"{name} must have 3 entries (z, y, x), got {list(items)}")
    result = []
    for item in items:
        if int(item) != item:
            raise ValueError(f"{name} must be integers (z, y, x), got {list(items)}")
        result.append(int(item))
    return (result[0], result[1], result[2])


def _mul(a: Triple, b: Triple) -> Triple:
    return (a[0] * b[0], a[1] * b[1], a[2] * b[2])


@dataclass(frozen=True, slots=True)
class Roi:
    """An axis-aligned box: ``offset`` (first corner) and ``shape``, both (z, y, x)."""

    offset: Triple
    shape: Triple

    def __post_init__(self) -> None:
        object.__setattr__(self, "offset", as_triple(self.offset, "offset"))
        object.__setattr__(self, "shape", as_triple(self.shape, "shape"))
        if min(self.shape) < 0:
            raise ValueError(f"shape must not be negative, got {list(self.shape)}")

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
        return all(so <= oo for so, oo in zip(self.offset, other.offset)) and all(
            oe <= se for se, oe in zip(self.end, other.end)
        )

    def is_on_grid(self, spacing: Sequence[int]) -> bool:
        """Whether offset and shape are multiples of ``spacing``."""
        g = as_triple(spacing, "spacing")
        return all(o % s == 0 for o, s in zip(self.offset, g)) and all(
            n % s == 0 for n, s in zip(self.shape, g)
        )

    def to_voxels(self, voxel_size: Sequence[int]) -> Roi:
        """Convert a world box (nm) into voxel units; it must lie on the voxel grid."""
        vs = as_triple(voxel_size, "voxel_size")
        if not self.is_on_grid(vs):
            raise RoiError(
                f"region offset {list(self.offset)} shape {list(self.shape)} nm is not a "
                f"multiple of the voxel size {list(vs)} nm: give it in whole voxels"
            )
        return Roi(
            tuple(o // s for o, s in zip(self.offset, vs)),
            tuple(n // s for n, s in zip(self.shape, vs)),
        )

    def to_world(self, voxel_size: Sequence[int]) -> Roi:
        """Convert a voxel box into world units (nm)."""
        vs = as_triple(voxel_size, "voxel_size")
        return Roi(_mul(self.offset, vs), _mul(self.shape, vs))

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
            raise ValueError(f"tile_shape must be positive, got {list(t)}")
        g = self.offset if grid_origin is None else as_triple(grid_origin, "grid_origin")
        starts = [
            range(g[a] + ((self.offset[a] - g[a]) // t[a]) * t[a], self.end[a], t[a]) for a in range(3)
        ]
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    tile = Roi((z, y, x), t).intersect(self)
                    if not tile.empty:
                        yield tile

    def __str__(self) -> str:
        return f"[{self.offset[0]}:{self.end[0]}, {self.offset[1]}:{self.end[1]}, {self.offset[2]}:{self.end[2]}]"
