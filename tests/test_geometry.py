"""Roi arithmetic that every blockwise job relies on."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from incasem.errors import RoiError
from incasem.geometry import Roi, as_triple

triples = st.tuples(*[st.integers(-50, 50)] * 3)
shapes = st.tuples(*[st.integers(0, 30)] * 3)
tile_shapes = st.tuples(*[st.integers(3, 17)] * 3)


def test_bounds_and_size():
    roi = Roi((1, 2, 3), (4, 5, 6))
    assert roi.end == (5, 7, 9)
    assert roi.size == 120
    assert Roi.from_bounds((1, 2, 3), (5, 7, 9)) == roi
    assert roi.to_slices((1, 0, 0)) == (slice(0, 4), slice(2, 7), slice(3, 9))


def test_invalid_values_are_refused():
    with pytest.raises(ValueError, match="shape"):
        Roi((0, 0, 0), (1, -1, 1))
    with pytest.raises(ValueError, match="3 entries"):
        as_triple((1, 2), "voxel_size")


def test_world_voxel_conversion_requires_grid():
    roi = Roi((10, 20, 30), (40, 50, 60))
    assert roi.to_voxels((5, 10, 10)) == Roi((2, 2, 3), (8, 5, 6))
    assert roi.to_voxels((5, 10, 10)).to_world((5, 10, 10)) == roi
    with pytest.raises(RoiError, match="multiple of the voxel size"):
        roi.to_voxels((7, 10, 10))


def test_grow_intersect_contains():
    roi = Roi((0, 0, 0), (10, 10, 10))
    grown = roi.grow(2)
    assert grown == Roi((-2, -2, -2), (14, 14, 14))
    assert grown.contains(roi) and not roi.contains(grown)
    assert roi.intersect(Roi((5, 5, 5), (10, 10, 10))) == Roi((5, 5, 5), (5, 5, 5))
    assert roi.intersect(Roi((20, 0, 0), (5, 5, 5))).empty


@settings(max_examples=150, deadline=None)
@given(offset=triples, shape=shapes, tile=tile_shapes, origin=triples)
def test_tiles_cover_roi_exactly_once(offset, shape, tile, origin):
    roi = Roi(offset, shape)
    tiles = list(roi.tiles(tile, origin))
    assert sum(t.size for t in tiles) == roi.size
    for t in tiles:
        assert roi.contains(t) and not t.empty
        # every tile lies inside one cell of the grid anchored at origin
        assert all((b - o) // s == (e - 1 - o) // s for b, e, o, s in zip(t.offset, t.end, origin, tile))
    covered = {(z, y, x) for t in tiles for z in range(t.offset[0], t.end[0]) for y in range(t.offset[1], t.end[1]) for x in range(t.offset[2], t.end[2])}
    assert len(covered) == roi.size, "tiles overlap"
