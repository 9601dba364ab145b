"""Roi arithmetic that every blockwise job relies on."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from incasem.errors import InvalidValueError, VoxelSizeError
from incasem.geometry import Roi, as_nm_triple, as_triple, nm_to_voxels, voxels_to_nm

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
    assert nm_to_voxels((10, 20, 30), (5, 10, 10)) == (2, 2, 3)
    assert voxels_to_nm((2, 2, 3), (5, 10, 10)) == (10, 20, 30)
    with pytest.raises(VoxelSizeError, match="multiple of the voxel size"):
        nm_to_voxels((10, 20, 30), (7, 10, 10))


def test_non_whole_nanometre_voxel_sizes_are_exact():
    """Serial sections of 50 x 4.6 x 4.6 nm: 3 voxels are 13.8 nm, not 13.799999999999999."""
    voxel_size = as_nm_triple((50, 4.6, 4.6), "voxel size", positive=True)
    assert voxel_size == (50, 4.6, 4.6) and isinstance(voxel_size[0], int)
    assert voxels_to_nm((2, 3, 7), voxel_size) == (100, 13.8, 32.2)
    assert nm_to_voxels((100, 13.8, 32.2), voxel_size) == (2, 3, 7)
    with pytest.raises(VoxelSizeError):
        nm_to_voxels((0, 2.3, 0), voxel_size)


@pytest.mark.parametrize("bad", [(0, 5, 5), (-5, 5, 5), (float("nan"), 5, 5), (float("inf"), 5, 5), ("5", 5, 5), (5, 5), (True, 5, 5)])
def test_invalid_voxel_sizes_are_refused(bad):
    with pytest.raises(InvalidValueError, match="voxel size"):
        as_nm_triple(bad, "voxel size", positive=True)


@pytest.mark.parametrize("bad", [(1.5, 2, 3), (float("nan"), 1, 1), ("1", 2, 3), (1, 2), None])
def test_invalid_voxel_triples_are_refused(bad):
    with pytest.raises(InvalidValueError, match="block"):
        as_triple(bad, "block")


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
