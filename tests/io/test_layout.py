"""The container's vocabulary: one classifier, one probability codec, one set of default choices."""

from __future__ import annotations

import numpy as np
import pytest

from incasem.errors import DatasetNotFoundError
from incasem.io.defaults import default_labels, default_metric_masks, default_raw, label_datasets
from incasem.io.layout import (
    RAW,
    RAW_EQUALIZED,
    dataset_kind,
    decode_probability,
    encode_probability,
    equalized_dataset,
    metric_mask_dataset,
    organelle_of,
    probability_map,
)
from incasem.io.volume import create_volume
from incasem.postprocess.foreground import foreground_of
from incasem.preprocess.pyramid import default_downsampling


@pytest.mark.parametrize(
    ("name", "dtype", "kind"),
    [
        ("volumes/raw", "uint8", "image"),
        ("volumes/raw_equalized_0.02", "uint8", "image"),
        ("volumes/raw_equalized_0.02_s1", "uint8", "image"),  # a pyramid level of the equalised raw
        ("volumes/raw", "uint16", "image"),
        ("volumes/raw", "float32", "image"),
        ("volumes/labels/mito", "uint8", "segmentation"),
        ("volumes/labels/er", "uint64", "segmentation"),
        ("volumes/labels/er", "int32", "segmentation"),
        ("volumes/labels/mito", "bool", "segmentation"),
        ("volumes/mask", "uint8", "segmentation"),
        ("volumes/metric_masks/mito", "uint8", "segmentation"),
        ("volumes/labels/mito_instances", "uint32", "segmentation"),
        ("volumes/predictions/1847/0001/segmentation", "uint8", "segmentation"),
        ("volumes/predictions/1847/0001/threshold_0.5/class_1", "uint8", "segmentation"),
        ("volumes/predictions/1847/0001/prob_maps/class_1", "uint8", "probabilities"),
        ("volumes/predictions/1847/0001/prob_maps/class_1_s2", "uint8", "probabilities"),
        ("volumes/predictions/1847/0001/probabilities", "float32", "probabilities"),
        ("//volumes/predictions/1847/0001/prob_maps/class_1/", "float32", "probabilities"),
        ("volumes/probabilities", "float32", "probabilities"),  # another tool's probability map
        ("volumes/other", "uint32", "segmentation"),  # ids wider than 16 bits
        ("volumes/other", "uint8", "image"),
    ],
)
def test_dataset_kind_follows_the_name_then_the_dtype(name, dtype, kind):
    assert dataset_kind(name, np.dtype(dtype)) == kind


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("volumes/raw", "uint8"),
        ("volumes/labels/mito", "uint8"),
        ("volumes/predictions/m/0001/prob_maps/class_1", "uint8"),
        ("volumes/mask", "uint8"),
        ("volumes/probabilities", "float32"),
        ("volumes/other", "uint32"),
    ],
)
def test_pyramid_and_thresholding_follow_the_one_classifier(tmp_path, name, dtype):
    """The pyramid averages what the viewer draws as grey or heat map and strides ids; threshold,
    instances and evaluate read probabilities where the viewer draws a heat map."""
    kind = dataset_kind(name, dtype)
    assert default_downsampling(name, np.dtype(dtype)) == ("stride" if kind == "segmentation" else "mean")
    container = tmp_path / "c.zarr"
    create_volume(container, name, (4, 4, 4), np.dtype(dtype), (5, 5, 5)).mark_complete()
    expected = "probabilities" if kind == "probabilities" else "segmentation"
    assert foreground_of(container, name).kind == expected


def test_probability_codec_rounds_half_up_and_round_trips_within_half_a_step():
    p = np.array([0.0, 0.5 / 255, 1.5 / 255, 0.5, 127.5 / 255, 1.0, -0.1, 1.2])
    assert encode_probability(p).tolist() == [0, 1, 2, 128, 128, 255, 0, 255]
    grid = np.linspace(0, 1, 10001)
    assert np.abs(decode_probability(encode_probability(grid)) - grid).max() <= 0.5 / 255 + 1e-7
    stored = np.arange(256, dtype=np.uint8)
    assert np.array_equal(encode_probability(decode_probability(stored)), stored)  # uint8 -> float -> uint8 is exact


def test_decoding_refuses_what_is_not_a_probability():
    with pytest.raises(ValueError, match="must lie in"):
        decode_probability(np.array([0.5, 1.5], dtype=np.float32))
    with pytest.raises(ValueError, match="got dtype int16"):
        decode_probability(np.zeros(3, dtype=np.int16))


def test_names_of_the_original_layout():
    assert RAW_EQUALIZED == equalized_dataset(0.02) == "volumes/raw_equalized_0.02"
    assert equalized_dataset(0.05) == "volumes/raw_equalized_0.05"
    assert organelle_of("volumes/labels/mito/") == organelle_of("volumes/labels/mito") == "mito"
    assert metric_mask_dataset("volumes/labels/er/") == "volumes/metric_masks/er"
    assert probability_map("volumes/predictions/m/0001", 2) == "volumes/predictions/m/0001/prob_maps/class_2"


def test_default_choices(tmp_path):
    container = tmp_path / "c.zarr"
    create_volume(container, RAW, (4, 4, 4), np.uint8, (5, 5, 5))
    assert default_raw(container) == RAW
    create_volume(container, RAW_EQUALIZED, (4, 4, 4), np.uint8, (5, 5, 5))
    assert default_raw(container) == RAW_EQUALIZED  # the viewer and the preview alike
    with pytest.raises(DatasetNotFoundError, match="has no volumes/labels/"):
        default_labels(container)
    for organelle in ("mito", "er"):
        create_volume(container, f"volumes/labels/{organelle}", (4, 4, 4), np.uint8, (5, 5, 5))
    create_volume(container, "volumes/metric_masks/mito", (4, 4, 4), np.uint8, (5, 5, 5))
    assert default_labels(container) == label_datasets(container) == ["volumes/labels/er", "volumes/labels/mito"]
    assert default_metric_masks(container, default_labels(container)) == ["volumes/metric_masks/mito"]
    empty = tmp_path / "empty.zarr"
    create_volume(empty, "volumes/other", (4, 4, 4), np.uint8, (5, 5, 5))
    with pytest.raises(DatasetNotFoundError, match=r"has no volumes/raw_equalized_0.02 or volumes/raw \(it has: volumes/other\)"):
        default_raw(empty)
