"""``incasem view`` reads pyramid levels when zoomed out, and only where they fit.

Each served chunk is checked against an expectation computed independently, voxel by
voxel on the world grid: a chunk voxel at downsampling ``D`` covers the dataset's world
voxels ``O + j*D ... O + min(S, (j+1)*D) - 1`` in-plane (``O`` the world offset, ``S``
the shape), i.e. the level's world voxels ``floor(. / F) ... ceil(. / F) - 1``, whose
mean (images, truncated as neuroglancer does) or first voxel (segmentations) it is;
along the plane normal, section ``k`` is level section ``(O + k) // F``. Requests no
level serves must give exactly what neuroglancer's own :class:`~neuroglancer.LocalVolume`
gives from full resolution.
"""

from __future__ import annotations

import io
import itertools
import zlib
from pathlib import Path

import neuroglancer
import numpy as np
import pytest
import zarr

from incasem.blockwise import RunOptions
from incasem.io.volume import Volume, create_volume, open_volume
from incasem.preprocess.pyramid import create_pyramid
from incasem.view.neuroglancer import (
    MAX_DOWNSAMPLING,
    MAX_READ_VOXELS,
    MAX_VOXELS_PER_CHUNK_LOG2,
    ServedVolume,
    coordinate_space,
    default_datasets,
    describe_view,
    pyramid_level_for,
    served_volume,
)

ONE_THREAD = RunOptions(workers=1, progress=False)

#: name: (dtype, voxel size nm, shape, world offset in voxels, chunks, with a pyramid)
DATASETS = {
    # 5 nm isotropic: levels F = 2, 4, 8 on every axis
    "volumes/raw": ("uint8", (5, 5, 5), (37, 75, 83), (8, 16, 24), (8, 16, 16), True),
    # 10 x 5 x 5 nm: levels F = (1, 2, 2), (2, 4, 4), (4, 8, 8)
    "volumes/labels/mito": ("uint8", (10, 5, 5), (20, 75, 83), (4, 16, 24), (8, 32, 32), True),
    # z finer than y, x: levels F = (2, 1, 1), (4, 2, 2), thicker along z than in-plane
    "volumes/raw_thin": ("uint8", (5, 10, 10), (24, 40, 44), (0, 0, 0), (16, 32, 32), True),
    # an offset off every level's grid: the levels are never used
    "volumes/raw_shifted": ("uint8", (5, 5, 5), (37, 75, 83), (3, 5, 1), (16, 32, 32), True),
    "volumes/raw_plain": ("uint8", (5, 5, 5), (37, 75, 83), (8, 16, 24), (16, 32, 32), False),
}


@pytest.fixture(scope="module")
def container(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pyramid_view") / "cell.zarr"
    zarr.open_group(str(path), mode="w", zarr_format=3)
    rng = np.random.default_rng(11)
    for name, (dtype, voxel_size, shape, offset, chunks, pyramid) in DATASETS.items():
        data = rng.integers(0, 5, shape) if "labels" in name else rng.integers(0, 256, shape)
        offset_nm = tuple(o * v for o, v in zip(offset, voxel_size))
        volume = create_volume(path, name, shape, dtype, voxel_size, offset_nm, chunks)
        volume.write(volume.roi, data.astype(dtype))
        volume.mark_complete()
        if pyramid:
            create_pyramid(path, name, run=ONE_THREAD)
    return path


def _served(container: Path, dataset: str) -> ServedVolume:
    return served_volume(describe_view(container, [dataset]).layers[0])


def _chunk(volume: neuroglancer.LocalVolume, factor, start, end) -> np.ndarray:
    key = ",".join(map(str, factor))
    data, _ = volume.get_encoded_subvolume("npz", np.array(start), np.array(end), key)
    return np.load(io.BytesIO(zlib.decompress(data)))


def _old_volume(container: Path, dataset: str) -> neuroglancer.LocalVolume:
    """What ``incasem view`` served before levels: neuroglancer's own LocalVolume over the full resolution."""
    volume = open_volume(container, dataset)
    kind = describe_view(container, [dataset]).layers[0].kind
    return neuroglancer.LocalVolume(
        volume.read(),
        dimensions=coordinate_space(volume.voxel_size),
        voxel_offset=list(volume.roi.offset),
        volume_type="segmentation" if kind == "segmentation" else "image",
        max_voxels_per_chunk_log2=MAX_VOXELS_PER_CHUNK_LOG2,
        max_downsampling=MAX_DOWNSAMPLING,
        downsampling="2d",
    )


def _expected_from_level(dataset: Volume, level: Volume, factor, start, end, method: str) -> np.ndarray:
    """The chunk ``start:end`` at ``factor`` from ``level``, voxel by voxel on the world grid (see the module doc)."""
    whole = level.read()
    level_factor = [round(lv / dv) for lv, dv in zip(level.voxel_size, dataset.voxel_size)]
    normal = list(factor).index(1)
    indices = []  # per axis, per chunk voxel: the level's local indices it covers
    for axis, (d, f, o, lo, s) in enumerate(zip(factor, level_factor, dataset.roi.offset, level.roi.offset, dataset.shape)):
        if axis == normal:
            indices.append([[(o + k) // f - lo] for k in range(start[axis], end[axis])])
        else:
            blocks = [(o + j * d, o + min(s, (j + 1) * d)) for j in range(start[axis], end[axis])]
            indices.append([list(range(b // f - lo, -(-e // f) - lo)) for b, e in blocks])
    out = np.zeros([len(i) for i in indices], whole.dtype)
    for position in itertools.product(*(range(n) for n in out.shape)):
        block = whole[np.ix_(*(indices[axis][p] for axis, p in enumerate(position)))]
        out[position] = block.flat[0] if method == "stride" else np.trunc(block.astype(np.float64).mean())
    return out


# dataset, factor D (z, y, x), request start, end (voxels at D), the level that must serve it
LEVEL_CASES = [
    ("volumes/raw", (1, 4, 4), (5, 0, 0), (6, 19, 21), 2),  # xy plane, whole section, edges on y and x
    ("volumes/raw", (4, 1, 4), (0, 30, 0), (10, 31, 21), 2),  # xz plane
    ("volumes/raw", (2, 2, 1), (3, 10, 40), (19, 38, 41), 1),  # yz plane, at the z and y edges
    ("volumes/raw", (1, 32, 32), (36, 0, 0), (37, 3, 3), 3),  # 4 x 4 more on the fly, last section, edges
    ("volumes/raw", (1, 16, 8), (17, 1, 2), (20, 5, 11), 3),  # 2 x 1 more; 3 sections in one level section
    ("volumes/raw", (8, 1, 64), (0, 74, 0), (5, 75, 2), 3),  # xz, 8 more along x, the last y section
    ("volumes/labels/mito", (1, 2, 2), (19, 30, 30), (20, 38, 42), 1),  # the corner chunk
    ("volumes/labels/mito", (1, 8, 8), (0, 0, 0), (9, 10, 11), 3),  # sections 4 to a level section
    ("volumes/labels/mito", (1, 64, 64), (3, 0, 0), (20, 2, 2), 3),  # 8 x 8 more (beyond the old limit of 64)
    ("volumes/labels/mito", (2, 1, 4), (0, 40, 0), (10, 41, 21), 1),  # xz: s2 is thicker (4) than a pixel (2)
    ("volumes/labels/mito", (4, 16, 1), (0, 0, 80), (5, 5, 83), 2),  # yz: s3 too thick, s2 and 2 x 4 more
    ("volumes/raw_thin", (1, 2, 2), (10, 0, 0), (11, 20, 22), 1),  # s2 is 4 sections thick: s1, 2 x 2 more
]


@pytest.mark.parametrize(("dataset", "factor", "start", "end", "number"), LEVEL_CASES)
def test_zoomed_out_chunks_come_from_the_level(container, dataset, factor, start, end, number) -> None:
    served = _served(container, dataset)
    level_name = f"{dataset}_s{number}"
    assert pyramid_level_for(factor, served.levels).name == level_name
    chunk = _chunk(served, factor, start, end)

    method = "stride" if "labels" in dataset else "mean"
    expected = _expected_from_level(open_volume(container, dataset), open_volume(container, level_name), factor, start, end, method)
    assert chunk.shape == tuple(e - s for s, e in zip(start, end))  # what neuroglancer expects
    assert chunk.dtype == expected.dtype
    np.testing.assert_array_equal(chunk, expected)

    assert served.data.voxels_read == 0  # the full resolution is not read at all
    reads = {level.name: level.data for level in served.levels}
    assert 0 < reads[level_name].largest_read <= MAX_READ_VOXELS
    assert all(data.voxels_read == 0 for name, data in reads.items() if name != level_name)


def test_labels_from_a_level_equal_the_full_resolution_stride(container) -> None:
    """Stride sampling twice is stride sampling: in-plane, a label level gives neuroglancer's old ids exactly."""
    factor, start, end = (1, 8, 8), (6, 0, 0), (7, 10, 11)
    served = _served(container, "volumes/labels/mito")
    assert pyramid_level_for(factor, served.levels).factor == (4, 8, 8)
    # section 6 is world section 10, in level section 10 // 4 = 2 (world sections 8 to 11): full-res section 4
    at_level_section = _chunk(_old_volume(container, "volumes/labels/mito"), factor, (4, 0, 0), (5, 10, 11))
    np.testing.assert_array_equal(_chunk(served, factor, start, end), at_level_section)


# dataset, factor, start, end: requests that full resolution answers
FULL_RESOLUTION_CASES = [
    ("volumes/raw", (1, 1, 1), (3, 10, 20), (4, 75, 83)),  # full resolution
    ("volumes/raw", (2, 2, 2), (0, 0, 0), (4, 5, 6)),  # 3D factor: no plane
    ("volumes/labels/mito", (1, 1, 2), (2, 0, 0), (3, 75, 42)),  # 2 does not divide 1 on y
    ("volumes/raw_thin", (1, 1, 2), (5, 0, 0), (6, 40, 22)),  # s1 is 2 sections thick, a pixel 1
    ("volumes/raw_shifted", (1, 4, 4), (5, 0, 0), (6, 19, 21)),  # levels off the dataset's grid
    ("volumes/raw_shifted", (2, 2, 1), (0, 0, 82), (19, 38, 83)),
    ("volumes/raw_plain", (1, 4, 4), (36, 0, 0), (37, 19, 21)),  # no levels
    ("volumes/raw_plain", (1, 8, 8), (0, 0, 0), (1, 10, 11)),
]


@pytest.mark.parametrize(("dataset", "factor", "start", "end"), FULL_RESOLUTION_CASES)
def test_requests_no_level_serves_read_full_resolution_as_before(container, dataset, factor, start, end) -> None:
    served = _served(container, dataset)
    assert pyramid_level_for(factor, served.levels) is None
    chunk = _chunk(served, factor, start, end)
    old = _chunk(_old_volume(container, dataset), factor, start, end)
    assert chunk.dtype == old.dtype and chunk.shape == old.shape == tuple(e - s for s, e in zip(start, end))
    np.testing.assert_array_equal(chunk, old)
    assert 0 < served.data.largest_read <= MAX_READ_VOXELS
    assert all(level.data.voxels_read == 0 for level in served.levels)


def test_which_levels_are_used_and_how_far_the_client_may_zoom_out(container) -> None:
    factors = {name: [level.factor for level in _served(container, name).levels] for name in DATASETS}
    assert factors == {
        "volumes/raw": [(2, 2, 2), (4, 4, 4), (8, 8, 8)],
        "volumes/labels/mito": [(1, 2, 2), (2, 4, 4), (4, 8, 8)],
        "volumes/raw_thin": [(2, 1, 1), (4, 2, 2)],
        "volumes/raw_shifted": [],  # its levels exist but lie off its grid
        "volumes/raw_plain": [],
    }
    max_downsampling = {name: _served(container, name).info()["maxDownsampling"] for name in DATASETS}
    assert max_downsampling == {
        "volumes/raw": 64 * 64,
        "volumes/labels/mito": 64 * 64,
        "volumes/raw_thin": 64 * 8,
        "volumes/raw_shifted": MAX_DOWNSAMPLING,
        "volumes/raw_plain": MAX_DOWNSAMPLING,
    }
    assert default_datasets(container) == ["volumes/raw", "volumes/labels/mito"]  # no level is a layer of its own


def test_reads_stay_bounded_with_levels(container) -> None:
    served = _served(container, "volumes/raw")
    with pytest.raises(ValueError, match=f"more than {MAX_DOWNSAMPLING}.*at most {MAX_READ_VOXELS} voxels"):
        served.get_encoded_subvolume("npz", np.array([0, 0, 0]), np.array([1, 75, 1]), "1,1,256")  # no level fits
    assert served.data.voxels_read == 0
    with pytest.raises(ValueError, match="Invalid downsampling factor"):
        served.get_encoded_subvolume("npz", np.array([0, 0, 0]), np.array([1, 1, 1]), "1,128,64")  # beyond 64 * 64
    with pytest.raises(ValueError, match="Out of bounds data request"):
        served.get_encoded_subvolume("npz", np.array([0, 0, 0]), np.array([1, 20, 21]), "1,4,4")
    with pytest.raises(ValueError, match="at most 262144 served"):
        served.get_encoded_subvolume("npz", np.array([0, 0, 0]), np.array([65, 64, 64]), "1,1,1")
    assert all(level.data.voxels_read == 0 for level in served.levels)
