"""The data config: the original's files load unchanged; every mistake is one clear line."""

import json
from pathlib import Path

import pytest

from incasem.errors import (
    ConfigError,
    DatasetMismatchError,
    DatasetNotFoundError,
    InputFileError,
    NotAContainerError,
    RoiError,
    VoxelSizeError,
)
from incasem.geometry import Roi
from incasem.io.data_config import LabelSource, load_data_config
from incasem.io.volume import create_volume

# Verbatim copies of data configs of the original incasem (github.com/kirchhausenlab/incasem,
# scripts/02_train/data_configs/ and scripts/03_predict/data_configs/), whitespace included.
ORIGINAL_TRAIN_ER = """{
    "cell_1_er" : {
        "file": "cell_1/cell_1.zarr",
        "offset": [150, 120, 1295],
        "shape": [600, 590, 1350],
        "voxel_size": [5, 5, 5],
        "raw": "volumes/raw_equalized_0.02",
        "metric_masks": [
            "volumes/metric_masks/er"
        ],
        "labels" : {
            "volumes/labels/er": 1
        }
    },
    "cell_2_er": {
        "file": "cell_2/cell_2.zarr",
        "offset": [100, 275, 700],
        "shape": [500, 395, 600],
        "voxel_size": [5, 5, 5],
        "raw": "volumes/raw_equalized_0.02",
        "metric_masks": [
        \t"volumes/metric_masks/er"
        ],
        "labels": {
            "volumes/labels/er": 1
        }
    }
}
"""
ORIGINAL_PREDICT_CELL6 = """{
    "Cell_6_example_roi_nickname" : {
        "file": "cell_6/cell_6.zarr",
        "offset": [400, 926, 2512],
        "shape": [241, 476, 528],
        "voxel_size": [5, 5, 5],
        "raw": "volumes/raw_equalized_0.02"
    }
}

"""
ORIGINAL_MITO_HELA = """{
    "mito_113": {
        "file": "janelia/jrc_hela-2/jrc_hela-2.zarr",
        "labels": {
            "volumes/labels/mito/113": 1
        },
        "mask": "volumes/mask",
        "metric_masks": [
            "volumes/metric_masks/mito/113"
        ],
        "offset": [
            2975,
            1075,
            3125
        ],
        "raw": "volumes/raw_equalized_0.02",
        "shape": [
            250,
            500,
            500
        ],
        "voxel_size": [
            4,
            4,
            4
        ]
    }
}
"""
ORIGINAL_SVGA_WITH_NAME = """{
  "svga1_roi1": {
    "name": "svga1_roi1",
    "file": "SVGA1/SVGA1.zarr",
    "offset": [600, 1551, 2109],
    "shape": [200, 110, 120],
    "voxel_size": [5, 5, 5],
    "raw": "volumes/raw_equalized_0.02",
    "metric_masks": ["volumes/metric_masks/vesc"],
    "labels": {
      "volumes/predictions/train_2632/predict_4341/segmentation": 1
    }
  }
}
"""


def _dataset(container: Path, name: str, shape, voxel_size=(5, 5, 5), offset_nm=(0, 0, 0), complete=True):
    """A dataset with geometry only: zarr writes no chunks for an unwritten array, so big shapes are free."""
    volume = create_volume(container, name, shape, "uint8", voxel_size, offset_nm, chunks=(64, 64, 64))
    if complete:
        volume.mark_complete()


def _write(path: Path, config) -> Path:
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return path


@pytest.fixture
def cell(tmp_path):
    """data/cell_1/cell_1.zarr: raw 5 nm starting at world voxel (10, 20, 0); labels, masks on a sub-region."""
    container = tmp_path / "data" / "cell_1" / "cell_1.zarr"
    _dataset(container, "volumes/raw_equalized_0.02", (40, 50, 60), offset_nm=(50, 100, 0))
    for name in ("volumes/labels/er", "volumes/labels/mito", "volumes/mask", "volumes/metric_masks/er"):
        _dataset(container, name, (20, 30, 40), offset_nm=(100, 150, 50))  # voxels (20, 30, 10) .. (40, 60, 50)
    return container


def _entry(**changes):
    entry = {
        "file": "cell_1/cell_1.zarr",
        "offset": [22, 32, 12],
        "shape": [10, 20, 30],
        "voxel_size": [5, 5, 5],
        "raw": "volumes/raw_equalized_0.02",
        "labels": {"volumes/labels/er": 1, "volumes/labels/mito": 2},
        "mask": "volumes/mask",
        "metric_masks": ["volumes/metric_masks/er"],
    }
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


@pytest.fixture
def config_path(tmp_path, cell):
    return _write(tmp_path / "data" / "train.json", {"roi_a": _entry()})


def test_full_entry_resolves_paths_roi_and_datasets(config_path, cell):
    config = load_data_config(config_path)
    (entry,) = config.entries
    assert entry.name == "roi_a" and entry.file == "cell_1/cell_1.zarr"
    assert entry.container == cell and entry.container.is_absolute()
    assert entry.roi == Roi((22, 32, 12), (10, 20, 30))
    assert entry.voxel_size == config.voxel_size == (5, 5, 5)
    assert entry.labels == (LabelSource("volumes/labels/er", 1), LabelSource("volumes/labels/mito", 2))
    assert entry.mask == "volumes/mask" and entry.metric_masks == ("volumes/metric_masks/er",)
    assert config.classes == {1: ("volumes/labels/er",), 2: ("volumes/labels/mito",)}


@pytest.mark.parametrize(
    "text",
    [ORIGINAL_TRAIN_ER, ORIGINAL_PREDICT_CELL6, ORIGINAL_MITO_HELA, ORIGINAL_SVGA_WITH_NAME],
    ids=["train_er", "predict_cell6", "mito_hela_4nm", "svga_with_name"],
)
def test_original_configs_are_accepted_unchanged(tmp_path, text):
    path = _write(tmp_path / "original.json", text)
    config = load_data_config(path, check_datasets=False)
    raw = json.loads(text)
    assert [entry.name for entry in config] == list(raw)
    for entry, spec in zip(config, raw.values()):
        assert entry.roi == Roi(spec["offset"], spec["shape"])
        assert entry.container == tmp_path / spec["file"]
        assert {label.dataset: label.class_id for label in entry.labels} == spec.get("labels", {})


def test_original_train_config_checks_against_matching_containers(tmp_path):
    """The original's ER training config against containers laid out like its cells, offsets in voxels x 5 nm."""
    for cell_name, end in (("cell_1", (750, 710, 2645)), ("cell_2", (600, 670, 1300))):
        container = tmp_path / cell_name / f"{cell_name}.zarr"
        _dataset(container, "volumes/raw_equalized_0.02", end)
        _dataset(container, "volumes/labels/er", end)
        _dataset(container, "volumes/metric_masks/er", end)
    config = load_data_config(_write(tmp_path / "example_train_er.json", ORIGINAL_TRAIN_ER), model_voxel_size=(5, 5, 5))
    assert [entry.roi for entry in config] == [Roi((150, 120, 1295), (600, 590, 1350)), Roi((100, 275, 700), (500, 395, 600))]
    assert config.summary()["total_voxels"] == 600 * 590 * 1350 + 500 * 395 * 600


def test_data_root_overrides_the_config_folder(tmp_path, cell):
    path = _write(tmp_path / "elsewhere.json", {"roi_a": _entry()})
    with pytest.raises(InputFileError, match="data root"):
        load_data_config(path)
    assert load_data_config(path, data_root=tmp_path / "data").entries[0].container == cell


def test_missing_offset_and_shape_take_the_region_all_datasets_cover(tmp_path, cell):
    path = _write(tmp_path / "data" / "c.json", {"whole": _entry(offset=None, shape=None)})
    assert load_data_config(path).entries[0].roi == Roi((20, 30, 10), (20, 30, 40))
    raw_only = _write(tmp_path / "data" / "raw.json", {"whole": _entry(offset=None, shape=None, labels={}, mask=None, metric_masks=[])})
    assert load_data_config(raw_only).entries[0].roi == Roi((10, 20, 0), (40, 50, 60))
    assert load_data_config(raw_only, check_datasets=False).entries[0].roi is None


def test_roi_may_touch_the_border_of_raw_without_context(tmp_path, cell):
    """Context for the network is the reader's business (padding); only the ROI must be inside."""
    path = _write(tmp_path / "data" / "c.json", {"edge": _entry(offset=[20, 30, 10], shape=[20, 30, 40])})
    assert load_data_config(path).entries[0].roi == Roi((20, 30, 10), (20, 30, 40))


def test_summary_is_json_ready(config_path):
    summary = load_data_config(config_path).summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["voxel_size"] == [5, 5, 5]
    assert summary["classes"] == {"1": ["volumes/labels/er"], "2": ["volumes/labels/mito"]}
    assert summary["total_voxels"] == 10 * 20 * 30
    (entry,) = summary["entries"]
    assert entry["offset"] == [22, 32, 12] and entry["voxels"] == 6000
    assert entry["labels"] == {"volumes/labels/er": 1, "volumes/labels/mito": 2}


def test_classes_are_numbered_over_the_whole_config(tmp_path, cell):
    config = {"a": _entry(labels={"volumes/labels/er": 1}), "b": _entry(labels={"volumes/labels/mito": 2})}
    assert sorted(load_data_config(_write(tmp_path / "data" / "c.json", config)).classes) == [1, 2]


# Each case: config (or text), error type, words the one-line message must contain.
BAD_FILES = {
    "json_syntax": ('{"a": {"file": "x",\n  "raw" "r"}}', ConfigError, ["line 2, column 9"]),
    "duplicate_entry": ('{"a": {}, "a": {}}', ConfigError, ["'a' appears twice"]),
    "top_level_list": ([_entry()], ConfigError, ["top level must be an object"]),
    "empty": ({}, ConfigError, ["no entries"]),
    "entry_not_object": ({"a": 3}, ConfigError, ["entry 'a'", "must be an object"]),
    "unknown_key": ({"a": _entry(lables={"x": 1})}, ConfigError, ["entry 'a'", "key 'lables'", "unknown key", "allowed keys are file, raw"]),
    "missing_raw": ({"a": _entry(raw=None)}, ConfigError, ["entry 'a'", "key 'raw'", "required key is missing"]),
    "two_numbers": ({"a": _entry(voxel_size=[5, 5])}, ConfigError, ["key 'voxel_size'", "3 positive numbers", "[5, 5]"]),
    "string_number": ({"a": _entry(offset=[1, "2", 3])}, ConfigError, ["key 'offset'", "3 integers", '[1, "2", 3]']),
    "float_number": ({"a": _entry(shape=[10, 20.5, 30])}, ConfigError, ["key 'shape'", "[10, 20.5, 30]"]),
    "zero_voxel": ({"a": _entry(voxel_size=[5, 0, 5])}, ConfigError, ["key 'voxel_size'", "positive"]),
    "labels_list": ({"a": _entry(labels=["volumes/labels/er"])}, ConfigError, ["key 'labels'", "an object"]),
    "metric_masks_str": ({"a": _entry(metric_masks="volumes/metric_masks/er")}, ConfigError, ["key 'metric_masks'", "list of dataset names"]),
    "offset_without_shape": ({"a": _entry(shape=None)}, ConfigError, ["key 'shape'", "give both"]),
    "class_gap": ({"a": _entry(labels={"volumes/labels/er": 1, "volumes/labels/mito": 3})}, ConfigError, ["key 'labels'", "class id 3", "1..2"]),
    "class_zero": ({"a": _entry(labels={"volumes/labels/er": 0})}, ConfigError, ["class id 0", "1..1"]),
    "class_twice": ({"a": _entry(labels={"volumes/labels/er": 1, "volumes/labels/mito": 1})}, ConfigError, ["class id 1 is given to both"]),
    "mixed_voxel_sizes": ({"a": _entry(), "b": _entry(voxel_size=[4, 4, 4])}, VoxelSizeError, ["entry 'b'", "[4, 4, 4]", "entry 'a'"]),
    "labelled_without_labels": ({"a": _entry(labels={}, labelled="volumes/labelled/er")}, ConfigError, ["key 'labelled'", "add 'labels'"]),
    "labelled_list": ({"a": _entry(labelled=["volumes/labelled/er"])}, ConfigError, ["key 'labelled'", "a dataset name"]),
}

BAD_DATA = {
    "missing_container": (_entry(file="cell_9/cell_9.zarr"), InputFileError, ["key 'file'", "cell_9.zarr does not exist"]),
    "not_a_container": (_entry(file="notes.txt"), NotAContainerError, ["key 'file'", "not a zarr container"]),
    "missing_raw": (_entry(raw="volumes/raw"), DatasetNotFoundError, ["key 'raw'", "no dataset 'volumes/raw'"]),
    "missing_labels": (_entry(labels={"volumes/labels/golgi": 1}), DatasetNotFoundError, ["key 'labels[volumes/labels/golgi]'"]),
    "missing_mask": (_entry(mask="volumes/cell_mask"), DatasetNotFoundError, ["key 'mask'"]),
    "missing_metric_mask": (_entry(metric_masks=["volumes/metric_masks/er", "volumes/metric_masks/x"]), DatasetNotFoundError, ["key 'metric_masks[1]'"]),
    "roi_outside_raw": (
        _entry(labels={}, mask=None, metric_masks=[], offset=[5, 20, 0], shape=[10, 10, 10]),
        RoiError,
        ["key 'raw'", "reaches outside", "[5:15, 20:30, 0:10]"],
    ),
    "roi_outside_labels": (_entry(offset=[15, 32, 12]), RoiError, ["key 'labels[volumes/labels/er]'", "reaches outside"]),
    "roi_outside_mask": (_entry(labels={}, metric_masks=[], offset=[12, 22, 2]), RoiError, ["key 'mask'"]),
    "voxel_size_vs_datasets": (_entry(voxel_size=[4, 4, 4]), VoxelSizeError, ["key 'raw'", "[5, 5, 5] nm", "[4, 4, 4] nm"]),
    "incomplete_dataset": (_entry(mask="volumes/unfinished"), DatasetMismatchError, ["key 'mask'", "unfinished"]),
    "labelled_off_the_labels_grid": (
        _entry(labelled="volumes/labelled/shifted"),
        ConfigError,
        ["key 'labelled'", "grid of its labels", "[21:41, 30:60, 10:50]"],
    ),
    "labelled_float": (_entry(labelled="volumes/labelled/float"), ConfigError, ["key 'labelled'", "float32", "uint8 mask"]),
}


def _assert_one_line(error: Exception, path: Path, words: list[str]) -> None:
    message = str(error)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_files_fail_with_one_line_naming_file_entry_and_key(tmp_path, case):
    config, error_type, words = BAD_FILES[case]
    path = _write(tmp_path / "bad.json", config)
    with pytest.raises(error_type) as caught:
        load_data_config(path, check_datasets=False)
    _assert_one_line(caught.value, path, words)


@pytest.mark.parametrize("case", BAD_DATA, ids=list(BAD_DATA))
def test_bad_data_fails_with_one_line_naming_file_entry_and_key(tmp_path, cell, case):
    (tmp_path / "data" / "notes.txt").write_text("not zarr")
    _dataset(cell, "volumes/unfinished", (20, 30, 40), offset_nm=(100, 150, 50), complete=False)
    _dataset(cell, "volumes/labelled/shifted", (20, 30, 40), offset_nm=(105, 150, 50))
    create_volume(cell, "volumes/labelled/float", (20, 30, 40), "float32", (5, 5, 5), (100, 150, 50)).mark_complete()
    entry, error_type, words = BAD_DATA[case]
    path = _write(tmp_path / "data" / "bad.json", {"roi_b": entry})
    with pytest.raises(error_type) as caught:
        load_data_config(path)
    _assert_one_line(caught.value, path, ["entry 'roi_b'", *words])
    load_data_config(path, check_datasets=False)  # the file itself is fine


def test_partial_labels_name_their_labelled_mask(tmp_path, cell):
    _dataset(cell, "volumes/labelled/er", (20, 30, 40), offset_nm=(100, 150, 50))
    path = _write(tmp_path / "data" / "sparse.json", {"roi_a": _entry(labelled="volumes/labelled/er")})
    config = load_data_config(path)
    assert config.entries[0].labelled == "volumes/labelled/er"
    assert config.entries[0].datasets["labelled"] == "volumes/labelled/er"
    assert config.summary()["entries"][0]["labelled"] == "volumes/labelled/er"
    assert load_data_config(_write(tmp_path / "data" / "dense.json", {"roi_a": _entry()})).entries[0].labelled is None


def test_model_voxel_size_must_match(config_path):
    with pytest.raises(VoxelSizeError, match=r"model's voxel size \[4, 4, 4\] nm"):
        load_data_config(config_path, model_voxel_size=(4, 4, 4))


def test_missing_config_file(tmp_path):
    with pytest.raises(InputFileError, match="does not exist"):
        load_data_config(tmp_path / "nope.json")


def test_datasets_that_do_not_overlap(tmp_path, cell):
    _dataset(cell, "volumes/far_mask", (5, 5, 5), offset_nm=(5000, 5000, 5000))
    path = _write(tmp_path / "data" / "c.json", {"w": _entry(offset=None, shape=None, mask="volumes/far_mask")})
    with pytest.raises(RoiError, match="do not overlap"):
        load_data_config(path)
