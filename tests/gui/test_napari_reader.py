"""The napari plugin's reader, manifest and sample data, on napari's ViewerModel (no Qt)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from incasem.errors import NotAContainerError
from incasem.io.layout import decode_probability
from incasem.napari.layers import container_layers, source_of
from incasem.napari.reader import get_reader, read_container
from incasem.preprocess.pyramid import create_pyramid
from tests.helpers import QUIET, write_volume


def _viewer_with(container: Path):
    """A viewer model that opened ``container`` through napari's plugin discovery, as File > Open Folder does."""
    import npe2
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover()  # napari's application does this at start
    viewer = ViewerModel()
    viewer.open(str(container), plugin="incasem")
    return viewer


@pytest.fixture
def mixed_cell(tmp_path) -> Path:
    """Datasets of two voxel sizes and offsets, a pyramid, a prediction, an unfinished and a broken dataset."""
    container = tmp_path / "mixed.zarr"
    rng = np.random.default_rng(0)
    write_volume(container, "volumes/raw", rng.integers(0, 255, (16, 64, 64), dtype=np.uint8), (8, 32, 32), offset_nm=(40, 20, 10), voxel_size=(10, 5, 5))
    create_pyramid(container, "volumes/raw", levels=1, run=QUIET)
    write_volume(
        container, "volumes/labels/mito", (rng.random((8, 32, 32)) > 0.5).astype(np.uint8), (8, 32, 32), offset_nm=(40, 20, 10), voxel_size=(20, 10, 10)
    )
    probabilities = rng.integers(0, 256, (16, 64, 64), dtype=np.uint8)
    write_volume(container, "volumes/predictions/m/0001/prob_maps/class_1", probabilities, (8, 32, 32), offset_nm=(40, 20, 10), voxel_size=(10, 5, 5))
    unfinished = write_volume(container, "volumes/mask", np.ones((16, 64, 64), np.uint8), (8, 32, 32), offset_nm=(40, 20, 10), voxel_size=(10, 5, 5))
    unfinished.array.attrs["incasem_status"] = "incomplete"
    broken = write_volume(container, "volumes/labels/er", np.ones((4, 4, 4), np.uint8), (4, 4, 4), offset_nm=(0, 0, 0))
    (broken.container / broken.name / ".zarray").write_text("{not json")  # damaged metadata
    return container


def test_layers_are_placed_by_voxel_size_and_offset_lazily_with_pyramids_as_multiscale(mixed_cell):
    viewer = _viewer_with(mixed_cell)
    layers = {layer.name: layer for layer in viewer.layers}
    assert set(layers) == {"raw", "labels/mito", "predictions/m/0001/prob_maps/class_1", "mask (incomplete)"}
    raw, labels, probabilities = layers["raw"], layers["labels/mito"], layers["predictions/m/0001/prob_maps/class_1"]
    assert tuple(raw.scale) == (10, 5, 5) and tuple(raw.translate) == (40, 20, 10)
    assert tuple(labels.scale) == (20, 10, 10) and tuple(labels.translate) == (40, 20, 10)
    assert type(raw).__name__ == "Image" and type(labels).__name__ == "Labels" and type(probabilities).__name__ == "Image"
    assert raw.multiscale and [level.shape for level in raw.data] == [(16, 64, 64), (16, 32, 32)]
    assert not isinstance(raw.data[0], np.ndarray) and not isinstance(probabilities.data, np.ndarray)  # nothing read before it is drawn
    assert tuple(probabilities.contrast_limits) == (0.0, 1.0)
    stored = np.asarray(write_probe := probabilities.data[3, 10:12, 20:22])
    assert np.allclose(stored, decode_probability(_zarr(mixed_cell, "volumes/predictions/m/0001/prob_maps/class_1")[3, 10:12, 20:22])), write_probe
    assert not layers["mask (incomplete)"].visible  # a mask would cover the cell
    assert source_of(labels).dataset == "volumes/labels/mito" and source_of(labels).container == mixed_cell.absolute()


def _zarr(container: Path, dataset: str) -> np.ndarray:
    import zarr

    return zarr.open_group(str(container), mode="r")[dataset][:]


def test_a_damaged_dataset_is_skipped_with_a_message_naming_it(mixed_cell):
    messages = []
    layers = container_layers(mixed_cell, warn=messages.append)
    assert len(layers) == 4 and len(messages) == 1
    assert "volumes/labels/er" in messages[0] and "\n" not in messages[0]


def test_a_folder_that_is_not_a_container_is_one_line_and_other_paths_are_not_ours(tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(NotAContainerError) as error:
        read_container(str(tmp_path / "empty.zarr"))
    assert "empty.zarr" in str(error.value) and "\n" not in str(error.value)
    (tmp_path / "stack").mkdir()
    assert get_reader(str(tmp_path / "stack")) is None and get_reader(str(tmp_path / "a.tif")) is None


def test_the_original_incasems_zarr_v2_container_opens(tmp_path):
    import zarr

    container = tmp_path / "cell.zarr"  # as the original wrote them: zarr v2, resolution / offset attributes
    group = zarr.open_group(str(container), mode="w", zarr_format=2)
    array = group.create_array("volumes/raw", shape=(8, 16, 16), dtype="uint8", chunks=(8, 16, 16))
    array[:] = 7
    array.attrs.update(resolution=[5, 5, 5], offset=[10, 0, 5])
    (layer,) = read_container(str(container))
    data, options, kind = layer
    assert kind == "image" and options["scale"] == (5, 5, 5) and options["translate"] == (10, 0, 5) and int(data[0, 0, 0]) == 7


def test_the_sample_data_is_the_bundled_crop_with_its_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from incasem.napari.sample import sample_layers

    names = [options["name"] for _data, options, _kind in sample_layers()]
    assert names == ["raw", "raw_equalized_0.02", "labels/mito", "metric_masks/mito"]
    assert not any(path.name.startswith(".") for path in (tmp_path / "incasem" / "sample").iterdir())  # no scratch left


def test_the_manifest_validates():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "incasem"], capture_output=True, text=True)
    assert result.returncode == 0 and "valid" in result.stdout, result.stdout + result.stderr


def test_incasem_imports_without_napari_or_qt():
    """The core package needs neither: every module but the plugin imports with napari, Qt and magicgui blocked."""
    code = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('napari', 'qtpy', 'PySide6', 'PyQt5', 'PyQt6', 'magicgui', 'superqt', 'vispy'):
            raise ImportError(f'blocked: {name}')
sys.meta_path.insert(0, Block())
import incasem
names = [m.name for m in pkgutil.walk_packages(incasem.__path__, 'incasem.') if not m.name.startswith('incasem.napari.')]
for name in names:
    importlib.import_module(name)
import incasem.napari
print(len(names))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 50


def test_a_billion_voxel_container_opens_without_reading_its_data(tmp_path, mixed_cell):
    """Three 1000³ datasets (10⁹ voxels each, no chunk written): their layers take a few MB, not GB."""
    import tracemalloc

    from napari.components import ViewerModel

    from incasem.io.volume import create_volume
    from incasem.napari.actions import add_layers

    big = tmp_path / "big.zarr"
    for name in ("volumes/raw", "volumes/labels/mito", "volumes/predictions/m/0001/prob_maps/class_1"):
        create_volume(big, name, (1000, 1000, 1000), "uint8", (5, 5, 5), (0, 0, 0), (64, 128, 128)).mark_complete()
    add_layers(ViewerModel(), container_layers(mixed_cell))  # napari's one-time set-up (imports, unit registry) first
    tracemalloc.start()
    try:
        viewer = ViewerModel()
        add_layers(viewer, container_layers(big))
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [layer.data.shape for layer in viewer.layers] == [(1000, 1000, 1000)] * 3
    assert peak_bytes < 100e6, peak_bytes  # one section of each (1 MB) is drawn; the volumes are 3 GB
