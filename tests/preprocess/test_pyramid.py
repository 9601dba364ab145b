"""Multiscale pyramids on real EM: every level equals a whole-volume numpy reference.

The reference is written independently of the implementation: the previous level is
put on the level's grid with NaN where there is no data, and each 2 × 2 × 2 (or
1 × 2 × 2) block is reduced with ``numpy.nanmean`` (rounded half up for integers),
or sampled at its first voxel inside the data. Shapes are deliberately not
multiples of 2 and offsets deliberately off the coarser grids.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

import incasem.preprocess.pyramid as pyramid_module
from incasem.blockwise import RunOptions
from incasem.cli import main
from incasem.errors import DatasetExistsError, DatasetMismatchError, DatasetNotFoundError, InvalidValueError
from incasem.io.ngff import ngff_entries, ngff_geometry
from incasem.io.volume import create_volume, open_volume
from incasem.preprocess.pyramid import (
    create_pyramid,
    default_downsampling,
    downsample_array,
    level_factor,
    plan_pyramid,
    pyramid_levels,
)
from tests.helpers import DROSOPHILA, LUCCHI, QUIET, read_stack

ome_reader = pytest.importorskip("ome_zarr.reader", reason="ome-zarr (the `test` extra) is not installed")
ome_io = pytest.importorskip("ome_zarr.io")
ome_format = pytest.importorskip("ome_zarr.format")

ONE_THREAD = RunOptions(workers=1, progress=False)


# ---------------------------------------------------------------------- the reference


def reference_level(data: np.ndarray, start: tuple[int, ...], factor: tuple[int, ...], method: str) -> np.ndarray:
    """One pyramid step of ``data`` whose first voxel has grid index ``start``, with plain numpy."""
    if method == "stride":  # the first voxel of each block that lies inside the data
        first = [s // f * f for s, f in zip(start, factor)]
        stops = [s + n for s, n in zip(start, data.shape)]
        index = [np.maximum(np.arange(b, e, f), s) - s for b, e, f, s in zip(first, stops, factor, start)]
        return data[np.ix_(*index)]
    before = [s % f for s, f in zip(start, factor)]
    after = [-(b + n) % f for b, n, f in zip(before, data.shape, factor)]
    padded = np.pad(data.astype(np.float64), list(zip(before, after)), constant_values=np.nan)
    shape = [n // f for n, f in zip(padded.shape, factor)]
    blocks = padded.reshape(shape[0], factor[0], shape[1], factor[1], shape[2], factor[2])
    means = np.nanmean(blocks, axis=(1, 3, 5))
    return means.astype(data.dtype) if np.issubdtype(data.dtype, np.floating) else np.floor(means + 0.5).astype(data.dtype)


def reference_pyramid(data, offset_voxels, voxel_size, method, count):
    """``count`` levels: (data, offset in voxels, voxel size) each, from the previous one."""
    levels, start, size = [], tuple(offset_voxels), tuple(voxel_size)
    for _ in range(count):
        factor = tuple(1 if v >= 2 * min(size) else 2 for v in size)
        data = reference_level(data, start, factor, method)
        start = tuple(s // f for s, f in zip(start, factor))
        size = tuple(round(v * f, 6) for v, f in zip(size, factor))
        levels.append((data, start, size))
    return levels


def assert_level_matches(level, expected, voxel_size, base_offset_nm) -> None:
    data, start, size = expected
    assert level.complete and level.dtype == data.dtype and level.shape == data.shape
    assert level.voxel_size == pytest.approx(size) and level.voxel_size == voxel_size
    assert level.offset_nm == pytest.approx(tuple(s * v for s, v in zip(start, size)))
    if np.issubdtype(data.dtype, np.floating):
        np.testing.assert_allclose(level.read(), data, rtol=1e-6)
    else:
        np.testing.assert_array_equal(level.read(), data)
    # the level overlays the data: it starts at or less than one of its voxels before the dataset
    for begin, base_begin, size in zip(level.offset_nm, base_offset_nm, level.voxel_size):
        assert begin <= base_begin + 1e-6 < begin + size


def put(container: Path, name: str, data: np.ndarray, voxel_size, offset_voxels, chunks) -> None:
    offset_nm = tuple(round(o * v, 6) for o, v in zip(offset_voxels, voxel_size))
    volume = create_volume(container, name, data.shape, data.dtype, voxel_size, offset_nm, chunks)
    volume.write(volume.roi, data)
    volume.mark_complete()


# ---------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def lucchi() -> dict[str, np.ndarray]:
    """A Lucchi++ crop (5 nm isotropic), 37 x 101 x 141: raw, mito labels, mito instances, a float map."""
    region = (slice(8, 45), slice(72, 173), slice(76, 217))  # Lucchi++ slices 60-96, rows 200-300, columns 300-440
    raw = read_stack(LUCCHI / "image", *region)
    mito = read_stack(LUCCHI / "labels" / "mito", *region)
    instances = ndimage.label(mito)[0].astype(np.uint16)
    probabilities = ndimage.gaussian_filter(raw.astype(np.float32) / 255, 1.5).astype(np.float32)
    return {
        "volumes/raw": raw,
        "volumes/labels/mito": mito,
        "volumes/labels/mito_instances": instances,
        "volumes/predictions/demo/0001/probabilities": probabilities,
    }


LUCCHI_OFFSET = (3, 5, 0)  # voxels: z and y off the grid of every coarser level
LUCCHI_CHUNKS = (16, 32, 32)


@pytest.fixture(params=[2, 3], ids=["zarr-v2", "zarr-v3"])
def lucchi_cell(request, tmp_path, lucchi) -> Path:
    path = tmp_path / "cell.zarr"
    zarr.open_group(str(path), mode="w", zarr_format=request.param)
    for name, data in lucchi.items():
        put(path, name, data, (5, 5, 5), LUCCHI_OFFSET, LUCCHI_CHUNKS)
    return path


@pytest.fixture(scope="module")
def drosophila_raw() -> np.ndarray:
    """ssTEM of Drosophila VNC, 50 x 4.6 x 4.6 nm: all 20 sections, 221 x 317 in-plane (no power of 2 divides them)."""
    return read_stack(DROSOPHILA / "image", slice(0, 20), slice(0, 221), slice(0, 317))


# ---------------------------------------------------------------------- levels equal the reference


@pytest.mark.parametrize(
    ("dataset", "method"),
    [
        ("volumes/raw", "mean"),
        ("volumes/labels/mito", "stride"),
        ("volumes/labels/mito_instances", "stride"),
        ("volumes/predictions/demo/0001/probabilities", "mean"),
    ],
)
def test_isotropic_levels_equal_the_numpy_reference(lucchi_cell, lucchi, dataset, method) -> None:
    volumes = create_pyramid(lucchi_cell, dataset, run=QUIET)
    assert [v.name for v in volumes] == [dataset] + [f"{dataset}_s{k}" for k in (1, 2, 3)]
    expected = reference_pyramid(lucchi[dataset], LUCCHI_OFFSET, (5, 5, 5), method, 3)
    sizes = [(10, 10, 10), (20, 20, 20), (40, 40, 40)]
    for level, reference, size in zip(volumes[1:], expected, sizes):
        assert_level_matches(level, reference, size, volumes[0].offset_nm)
    assert [v.shape for v in volumes[1:]] == [(19, 51, 71), (10, 26, 36), (5, 14, 18)]  # the last one fits a chunk
    assert [v.offset_nm for v in volumes[1:]] == [(10, 20, 0), (0, 20, 0), (0, 0, 0)]
    if method == "stride":  # label ids are kept, none invented
        assert set(np.unique(volumes[-1].read())) <= set(np.unique(lucchi[dataset]))
    assert open_volume(lucchi_cell, dataset).read().tobytes() == lucchi[dataset].tobytes()  # the original is untouched


def test_anisotropic_serial_sections_keep_z_until_it_is_not_coarser(tmp_path, drosophila_raw) -> None:
    path, offset = tmp_path / "vnc.zarr", (0, 7, 3)  # 32.2 and 13.8 nm: off the coarser grids
    put(path, "volumes/raw", drosophila_raw, (50, 4.6, 4.6), offset, (8, 64, 64))
    volumes = create_pyramid(path, "volumes/raw", run=QUIET)

    sizes = [(50, 9.2, 9.2), (50, 18.4, 18.4), (50, 36.8, 36.8), (100, 73.6, 73.6), (200, 147.2, 147.2)]
    assert [v.voxel_size for v in volumes[1:]] == sizes
    expected = reference_pyramid(drosophila_raw, offset, (50, 4.6, 4.6), "mean", len(sizes))
    for level, reference, size in zip(volumes[1:], expected, sizes):
        assert_level_matches(level, reference, size, volumes[0].offset_nm)
    factors = [(1, 2, 2), (1, 4, 4), (1, 8, 8), (2, 16, 16), (4, 32, 32)]  # of each level's voxels, from the sizes
    # each level covers the coarse voxels that the data touches: from floor(offset / f) to ceil((offset + n) / f)
    touched = [tuple(-(-(o + n) // f) - o // f for o, n, f in zip(offset, drosophila_raw.shape, factor)) for factor in factors]
    assert [v.shape for v in volumes[1:]] == touched
    assert volumes[1].offset_nm == (0, 27.6, 9.2)  # voxels (0, 3, 1) of 9.2 nm: the corner of the first block
    assert volumes[-1].chunks == volumes[-1].shape  # the last level fits one chunk


def test_level_rule_for_50_5_5_nm_and_the_levels_option(tmp_path) -> None:
    assert level_factor((50, 5, 5)) == (1, 2, 2) and level_factor((50, 40, 40)) == (2, 2, 2)
    assert level_factor((5, 5, 5)) == (2, 2, 2) and level_factor((10, 5, 5)) == (1, 2, 2)
    big = create_volume(tmp_path / "big.zarr", "volumes/raw", (1000, 8192, 8192), "uint8", (50, 5, 5), chunks=(64, 128, 128))
    big.mark_complete()
    plan = plan_pyramid(tmp_path / "big.zarr", "volumes/raw")  # plans only: the empty dataset is never read
    assert [lvl.voxel_size for lvl in plan.levels] == [
        (50, 10, 10),
        (50, 20, 20),
        (50, 40, 40),
        (100, 80, 80),
        (200, 160, 160),
        (400, 320, 320),
        (800, 640, 640),
    ]
    assert plan.levels[-1].roi.shape == (63, 64, 64) and plan.levels[-2].roi.shape == (125, 128, 128)  # fits a chunk: the last
    assert len(plan_pyramid(tmp_path / "big.zarr", "volumes/raw", 3).levels) == 3


def test_blocks_are_level_chunks_reading_at_most_two_chunks_per_axis(tmp_path) -> None:
    create_volume(tmp_path / "c.zarr", "volumes/raw", (99, 301, 257), "uint8", (5, 5, 5), (5, 10, 15), (16, 32, 32)).mark_complete()
    for level in plan_pyramid(tmp_path / "c.zarr", "volumes/raw").levels:
        blocks = pyramid_module._blocks(level)
        assert sum(b.write_roi.size for b in blocks) == level.roi.size  # the level exactly once
        assert all(b.write_roi.shape <= level.chunks for b in blocks)
        assert all(tuple(r) == tuple(2 * s for s in b.write_roi.shape) for b in blocks for r in [b.read_roi.shape])


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "bool"])
def test_in_memory_step_on_odd_shapes(dtype) -> None:
    rng = np.random.default_rng(7)
    data = (rng.integers(-300, 300, (5, 7, 9)) if dtype == "int16" else rng.integers(0, 1000, (5, 7, 9))).astype(dtype)
    for method in ("mean", "stride"):
        expected = reference_level(data, (0, 0, 0), (2, 2, 2), method)
        result = downsample_array(data, (2, 2, 2), method)
        assert result.dtype == data.dtype and result.shape == (3, 4, 5)
        np.testing.assert_allclose(result.astype(np.float64), expected.astype(np.float64), rtol=1e-6)


def test_downsampling_is_chosen_by_name_and_type() -> None:
    u8, f32 = np.dtype("uint8"), np.dtype("float32")
    assert default_downsampling("volumes/raw", u8) == "mean"
    assert default_downsampling("volumes/raw_equalized_0.02", u8) == "mean"
    assert default_downsampling("volumes/predictions/m/0001/prob_maps/class_1", u8) == "mean"
    assert default_downsampling("volumes/labels/mito", f32) == "mean"
    for name in ("volumes/labels/mito", "volumes/mask", "volumes/metric_masks/er", "volumes/predictions/m/0001/segmentation"):
        assert default_downsampling(name, u8) == "stride"


# ---------------------------------------------------------------------- OME-NGFF


def test_ngff_lists_the_levels_and_ome_zarr_reads_them(lucchi_cell) -> None:
    raw = create_pyramid(lucchi_cell, "volumes/raw", run=QUIET)
    labels = create_pyramid(lucchi_cell, "volumes/labels/mito", 2, run=QUIET)
    v3 = (lucchi_cell / "zarr.json").exists()
    attrs_file = "zarr.json" if v3 else ".zattrs"

    def group_attrs(group: str) -> dict:
        stored = json.loads((lucchi_cell / group / attrs_file).read_text())
        return stored["attributes"] if v3 else stored

    volumes_attrs = group_attrs("volumes")
    (entry,) = ngff_entries(volumes_attrs)
    assert entry["name"] == "volumes/raw" and [d["path"] for d in entry["datasets"]] == ["raw", "raw_s1", "raw_s2", "raw_s3"]
    for volume in raw:
        assert ngff_geometry(volumes_attrs, volume.name.rsplit("/", 1)[1]) == (volume.voxel_size, volume.offset_nm)
    label_entries = ngff_entries(group_attrs("volumes/labels"))
    assert [e["name"] for e in label_entries] == ["volumes/labels/mito", "volumes/labels/mito_instances"]
    assert [d["path"] for d in label_entries[0]["datasets"]] == ["mito", "mito_s1", "mito_s2"]

    location = ome_io.parse_url(str(lucchi_cell / "volumes"))
    node = next(iter(ome_reader.Reader(location)()))
    assert node.metadata["name"] == "volumes/raw"
    assert [tuple(level.shape) for level in node.data] == [v.shape for v in raw]
    transforms = node.metadata["coordinateTransformations"]
    ome_format.FormatV04().validate_coordinate_transformations(3, len(raw), transforms)
    assert transforms == [[{"type": "scale", "scale": list(v.voxel_size)}, {"type": "translation", "translation": list(v.offset_nm)}] for v in raw]
    np.testing.assert_array_equal(np.asarray(node.data[2]), raw[2].read())
    assert [v.name for v in pyramid_levels(lucchi_cell, "volumes/labels/mito")] == [v.name for v in labels]


# ---------------------------------------------------------------------- resume, overwrite, refusals


class Killed(Exception):
    pass


def test_interrupted_pyramid_resumes_to_the_same_bytes(tmp_path, drosophila_raw, monkeypatch) -> None:
    path = tmp_path / "vnc.zarr"
    put(path, "volumes/raw", drosophila_raw, (50, 4.6, 4.6), (0, 0, 0), (8, 32, 32))
    reference = [v.read() for v in create_pyramid(path, "volumes/raw", run=QUIET)[1:]]
    blocks = [len(pyramid_module._blocks(level)) for level in plan_pyramid(path, "volumes/raw", mode="overwrite").levels]
    fresh = tmp_path / "fresh.zarr"
    put(fresh, "volumes/raw", drosophila_raw, (50, 4.6, 4.6), (0, 0, 0), (8, 32, 32))

    calls, dying, real = [], [True], pyramid_module._downsample_block

    def dies_in_level_2(factor, method, block, state):
        calls.append(state[1].name)
        if dying[0] and calls.count("volumes/raw_s2") > 5:
            raise Killed
        return real(factor, method, block, state)

    monkeypatch.setattr(pyramid_module, "_downsample_block", dies_in_level_2)
    with pytest.raises(Killed):
        create_pyramid(fresh, "volumes/raw", run=ONE_THREAD)
    assert [v.name for v in pyramid_levels(fresh, "volumes/raw")] == ["volumes/raw", "volumes/raw_s1"]
    (entry,) = ngff_entries(json.loads((fresh / "volumes" / ".zattrs").read_text()))
    assert [d["path"] for d in entry["datasets"]] == ["raw", "raw_s1"]  # the unfinished level is not shown
    with pytest.raises(DatasetMismatchError, match="unfinished"):
        open_volume(fresh, "volumes/raw_s2")
    with pytest.raises(DatasetExistsError, match="pass --resume"):
        create_pyramid(fresh, "volumes/raw", run=QUIET)

    calls.clear()
    dying[0] = False
    volumes = create_pyramid(fresh, "volumes/raw", mode="resume", run=ONE_THREAD)
    assert calls.count("volumes/raw_s1") == 0 and calls.count("volumes/raw_s2") == blocks[1] - 5
    assert len(calls) == blocks[1] - 5 + sum(blocks[2:])
    assert [v.read().tobytes() for v in volumes[1:]] == [r.tobytes() for r in reference]


def test_overwrite_replaces_own_levels_and_drops_deeper_ones(lucchi_cell) -> None:
    create_pyramid(lucchi_cell, "volumes/raw", run=QUIET)
    volumes = create_pyramid(lucchi_cell, "volumes/raw", 1, mode="overwrite", run=QUIET)
    assert [v.name for v in volumes] == ["volumes/raw", "volumes/raw_s1"]
    assert not any((lucchi_cell / "volumes" / f"raw_s{k}").exists() for k in (2, 3))
    assert [v.name for v in pyramid_levels(lucchi_cell, "volumes/raw")] == ["volumes/raw", "volumes/raw_s1"]


@pytest.mark.parametrize("mode", ["create", "overwrite", "resume"])
def test_a_users_array_named_like_a_level_is_never_replaced(lucchi_cell, mode) -> None:
    users = create_volume(lucchi_cell, "volumes/raw_s2", (3, 3, 3), "uint8", (20, 20, 20))
    users.write(users.roi, np.full((3, 3, 3), 7, np.uint8))
    users.mark_complete()
    refusal = "raw_s2 exists and was written by something other than incasem pyramid"
    with pytest.raises(DatasetExistsError, match=refusal) as info:
        create_pyramid(lucchi_cell, "volumes/raw", mode=mode, run=QUIET)
    assert "\n" not in str(info.value)
    assert (open_volume(lucchi_cell, "volumes/raw_s2").read() == 7).all()
    assert not (lucchi_cell / "volumes" / "raw_s1").exists()  # refused before anything was written


def test_bad_input_is_refused_before_writing(lucchi_cell) -> None:
    with pytest.raises(DatasetNotFoundError, match="no dataset 'volumes/nope' \\(it has: volumes/labels/mito, "):
        create_pyramid(lucchi_cell, "volumes/nope", run=QUIET)
    with pytest.raises(InvalidValueError, match=r"^levels must be a whole number of at least 1"):
        create_pyramid(lucchi_cell, "volumes/raw", 0, run=QUIET)
    with pytest.raises(InvalidValueError, match=r"^downsampling must be 'mean' or 'stride'"):
        create_pyramid(lucchi_cell, "volumes/raw", downsampling="max", run=QUIET)
    create_pyramid(lucchi_cell, "volumes/raw", 1, run=QUIET)
    with pytest.raises(InvalidValueError, match="raw_s1 is a pyramid level of volumes/raw"):
        create_pyramid(lucchi_cell, "volumes/raw_s1", run=QUIET)


# ---------------------------------------------------------------------- CLI


def test_cli_writes_several_pyramids_and_checks_all_datasets_first(lucchi_cell, capsys) -> None:
    args = ["pyramid", str(lucchi_cell), "-d", "volumes/raw", "-d", "volumes/nope", "-q"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no dataset 'volumes/nope'" in err
    assert not (lucchi_cell / "volumes" / "raw_s1").exists()

    assert main(["pyramid", str(lucchi_cell), "-d", "volumes/raw", "-d", "volumes/labels/mito", "--levels", "2", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "volumes/raw",
        "volumes/raw_s1",
        "volumes/raw_s2",
        "volumes/labels/mito",
        "volumes/labels/mito_s1",
        "volumes/labels/mito_s2",
    ]
    assert "voxel_size=[10, 10, 10]nm" in lines[1] and "offset=[10, 20, 0]nm" in lines[1]
    assert main(["pyramid", str(lucchi_cell), "--levels", "2", "--resume", "-q"]) == 0  # -d defaults to volumes/raw


def test_console_script_writes_a_pyramid(tmp_path, drosophila_raw) -> None:
    script = Path(sys.executable).parent / "incasem"
    if not script.exists():
        pytest.skip(f"console script {script} is not installed (pip install -e .)")
    path = tmp_path / "vnc.zarr"
    put(path, "volumes/raw", drosophila_raw[:, :64, :64], (50, 4.6, 4.6), (0, 0, 0), (20, 32, 32))
    result = subprocess.run([str(script), "pyramid", str(path), "-q"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["volumes/raw", "volumes/raw_s1"]
    assert "voxel_size=[50, 9.2, 9.2]nm" in result.stdout
