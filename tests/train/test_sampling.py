"""Tests of the training block sampler on a zarr container made from real FIB-SEM (Lucchi++)."""

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from incasem.errors import ConfigError, InvalidValueError
from incasem.geometry import Roi
from incasem.io.data_config import load_data_config
from incasem.io.volume import create_volume
from incasem.train.sampling import Sample, TrainingSampler
from tests.helpers import LUCCHI, read_stack

#: World offset (voxels) of the datasets: not zero, so world and array coordinates differ.
ORIGIN = (10, 20, 0)
SOURCE = (16, 32, 32)
OUTPUT = (8, 16, 16)
NO_REJECTION = {"mask_reject_probability": 0.0, "foreground_reject_probability": 0.0}
LABELS = {"volumes/labels/mito": 1, "volumes/labels/shifted": 2}
#: Two ROIs of 32 000 and 64 000 voxels; roi_a touches the start of the data in z, y and x.
ROIS = {"roi_a": ((10, 20, 0), (20, 40, 40)), "roi_b": ((30, 60, 30), (20, 40, 80))}


#: A 40 × 96 × 112 crop of Lucchi++ where mitochondria fill some blocks and miss others
#: (Lucchi++ slices 60-99, rows 160-255, columns 224-335).
REGION = (slice(8, 48), slice(32, 128), slice(0, 112))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """The arrays written to the container ``cell.zarr`` (array coordinates) and its ``folder``."""
    raw, mito = read_stack(LUCCHI / "image", *REGION), read_stack(LUCCHI / "labels" / "mito", *REGION)
    mito = (mito != 0).astype(np.uint8)
    shifted = np.roll(mito, 3, axis=2)  # a second class that overlaps the first in places
    assert (mito & shifted).any() and (shifted & ~mito.astype(bool)).any()
    mask = np.ones_like(mito)
    mask[:, :, :12] = 0
    arrays = {
        "volumes/raw": raw,
        "volumes/labels/mito": mito,
        "volumes/labels/shifted": shifted,
        "volumes/labels/empty": np.zeros_like(mito),
        "volumes/mask": mask,
    }
    folder = tmp_path_factory.mktemp("sampling")
    offset_nm = tuple(5 * o for o in ORIGIN)
    for name, array in arrays.items():
        volume = create_volume(folder / "cell.zarr", name, array.shape, "uint8", (5, 5, 5), offset_nm, chunks=(20, 48, 56))
        volume.write(volume.roi, array)
        volume.mark_complete()
    arrays["folder"] = folder
    return arrays


def write_config(folder: Path, name: str, rois=ROIS, labels=LABELS, mask="volumes/mask") -> Path:
    entries = {
        roi: {
            "file": "cell.zarr",
            "offset": list(offset),
            "shape": list(shape),
            "voxel_size": [5, 5, 5],
            "raw": "volumes/raw",
            "labels": labels,
            "mask": mask,
            "metric_masks": [],
        }
        for roi, (offset, shape) in rois.items()
    }
    path = folder / name
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture(scope="module")
def config(data):
    return load_data_config(write_config(data["folder"], "train.json"))


def expected_sample(data: dict, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw, labels and mask at the sample's location, recomputed from the arrays in memory."""
    region = sample.source_roi.relative_to(ORIGIN)
    pad = 16
    raw = np.pad(data["volumes/raw"], pad, mode="reflect")[region.shift((pad,) * 3).to_slices()]
    offset, shape = ROIS[sample.entry]
    in_roi = np.zeros(data["volumes/raw"].shape, dtype=bool)
    in_roi[Roi(offset, shape).relative_to(ORIGIN).to_slices()] = True
    first, second = data["volumes/labels/mito"] != 0, data["volumes/labels/shifted"] != 0
    labels = np.where(first & ~second, 1, 0) + np.where(second & ~first, 2, 0)
    labels = np.where(in_roi, labels, 0)
    mask = np.where(in_roi, data["volumes/mask"], 0)
    padded = [np.pad(a, pad, mode="constant")[region.shift((pad,) * 3).to_slices()] for a in (labels, mask)]
    return raw, padded[0], padded[1]


def test_samples_have_the_source_shape_and_the_data_at_their_location(data, config):
    sampler = TrainingSampler(config, SOURCE, OUTPUT)
    generator = np.random.default_rng(0)
    reflected = 0
    for _ in range(15):
        sample = sampler.sample(generator)
        assert (sample.raw.dtype, sample.labels.dtype, sample.mask.dtype) == (np.uint8, np.int64, np.uint8)
        assert sample.raw.shape == sample.labels.shape == sample.mask.shape == SOURCE
        assert sample.source_roi == sample.output_roi.grow([4, 8, 8])
        assert Roi(*ROIS[sample.entry]).contains(sample.output_roi)
        raw, labels, mask = expected_sample(data, sample)
        np.testing.assert_array_equal(sample.raw, raw)
        np.testing.assert_array_equal(sample.labels, labels)
        np.testing.assert_array_equal(sample.mask, mask)
        reflected += not Roi(ORIGIN, data["volumes/raw"].shape).contains(sample.source_roi)
    assert reflected > 0


def test_same_seed_same_samples_other_seed_other_samples(config):
    sampler = TrainingSampler(config, SOURCE, OUTPUT)

    def draw(seed):
        generator = np.random.default_rng(seed)
        return [sampler.sample(generator) for _ in range(4)]

    first, again, other = draw(7), draw(7), draw(8)
    assert [s.output_roi for s in first] == [s.output_roi for s in again]
    assert all(np.array_equal(a.raw, b.raw) and np.array_equal(a.labels, b.labels) for a, b in zip(first, again))
    assert [s.output_roi for s in first] != [s.output_roi for s in other]


def test_rois_are_chosen_in_proportion_to_their_volume(config):
    sampler = TrainingSampler(config, SOURCE, OUTPUT, **NO_REJECTION)
    generator = np.random.default_rng(1)
    draws = 200
    counts = Counter(sampler.sample(generator).entry for _ in range(draws))
    expected = {"roi_a": draws / 3, "roi_b": 2 * draws / 3}
    chi_square = sum((counts[name] - e) ** 2 / e for name, e in expected.items())
    assert chi_square < 10.83  # p = 0.001 for one degree of freedom


def output_shares(sample: Sample) -> tuple[float, float]:
    """Share of the output block inside the mask, and of foreground inside the mask."""
    window = sample.output_roi.relative_to(sample.source_roi.offset).to_slices()
    inside = sample.mask[window] != 0
    return inside.mean(), (inside & (sample.labels[window] != 0)).mean()


def test_rejection_raises_foreground_and_mask_shares(config):
    uniform = TrainingSampler(config, SOURCE, OUTPUT, **NO_REJECTION)
    rejecting = TrainingSampler(config, SOURCE, OUTPUT)
    draws = 100
    shares = {}
    for name, sampler in {"uniform": uniform, "rejecting": rejecting}.items():
        generator = np.random.default_rng(2)
        shares[name] = np.array([output_shares(sampler.sample(generator)) for _ in range(draws)])
    poor = {name: (s[:, 1] <= 0.05).mean() for name, s in shares.items()}
    assert poor["uniform"] > 0.5
    assert poor["rejecting"] < poor["uniform"] / 2
    assert shares["rejecting"][:, 1].mean() > 2 * shares["uniform"][:, 1].mean()
    assert (shares["rejecting"][:, 0] <= 0.75).mean() < (shares["uniform"][:, 0] <= 0.75).mean()


def test_roi_smaller_than_the_output_block_is_a_config_error(data):
    path = write_config(data["folder"], "small.json", rois={"tiny": ((20, 30, 20), (6, 40, 40))})
    with pytest.raises(ConfigError) as error:
        TrainingSampler(load_data_config(path), SOURCE, OUTPUT)
    message = str(error.value)
    assert "\n" not in message
    assert all(part in message for part in (str(path), "'tiny'", "[6, 40, 40]", "[8, 16, 16]"))


def test_labels_without_foreground_fail_at_once(data):
    path = write_config(data["folder"], "empty.json", labels={"volumes/labels/empty": 1})
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="no labels dataset has any labelled foreground") as error:
        TrainingSampler(load_data_config(path), SOURCE, OUTPUT)
    assert time.perf_counter() - start < 2
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_consecutive_rejections_are_bounded(config):
    impossible = TrainingSampler(config, SOURCE, OUTPUT, min_foreground=1.0, foreground_reject_probability=1.0, max_attempts=20)
    with pytest.raises(ConfigError, match="in 20 attempts") as error:
        impossible.sample(np.random.default_rng(0))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("shapes", "options", "match"),
    [
        (((16, 32, 31), OUTPUT), {}, "even number"),
        ((OUTPUT, SOURCE), {}, "even number"),
        ((SOURCE, OUTPUT), {"min_masked": 1.5}, "min_masked"),
        ((SOURCE, OUTPUT), {"max_attempts": 0}, "max_attempts"),
    ],
)
def test_invalid_settings_are_refused(config, shapes, options, match):
    with pytest.raises(InvalidValueError, match=match):
        TrainingSampler(config, *shapes, **options)


# ---------------------------------------------------------------------- partial labels

#: Rows 160-255, columns 224-335 of the Lucchi++ crop's 64 sections, followed by its first 36 in reverse
#: order: 100 sections of real data, of which 2 (2 %) are labelled.
SPARSE_REGION = (slice(0, 64), slice(32, 128), slice(0, 112))
LABELLED_SECTIONS = (23, 71)


@pytest.fixture(scope="module")
def sparse(tmp_path_factory) -> dict:
    """``sparse.zarr``: real raw and mitochondria, labelled on 2 of 100 sections; labels elsewhere are 0,
    as ``incasem convert --sparse`` writes them."""
    raw, mito = (read_stack(LUCCHI / kind, *SPARSE_REGION) for kind in ("image", "labels/mito"))
    raw, mito = (np.concatenate([a, a[35::-1]]) for a in (raw, mito))
    labelled = np.zeros_like(mito, dtype=np.uint8)
    labelled[list(LABELLED_SECTIONS)] = 1
    mito = ((mito != 0) & (labelled != 0)).astype(np.uint8)
    folder = tmp_path_factory.mktemp("sparse")
    for name, array in {"volumes/raw": raw, "volumes/labels/mito": mito, "volumes/labelled/mito": labelled}.items():
        volume = create_volume(folder / "sparse.zarr", name, array.shape, "uint8", (5, 5, 5), (0, 0, 0), chunks=(20, 48, 56))
        volume.write(volume.roi, array)
        volume.mark_complete()
    entry = {"file": "sparse.zarr", "voxel_size": [5, 5, 5], "raw": "volumes/raw", "labels": {"volumes/labels/mito": 1}, "labelled": "volumes/labelled/mito"}
    (folder / "sparse.json").write_text(json.dumps({"sparse": entry}))
    return {"folder": folder, "labelled": labelled, "mito": mito}


def test_the_sampler_finds_the_labelled_sections_of_a_volume_labelled_on_2_percent(sparse):
    """With the default rejection settings every block holds labelled voxels, the loss mask is exactly them,
    and both labelled sections are trained on."""
    sampler = TrainingSampler(load_data_config(sparse["folder"] / "sparse.json"), SOURCE, OUTPUT, max_attempts=50)
    generator = np.random.default_rng(3)
    sections = Counter()
    for _ in range(40):
        sample = sampler.sample(generator)
        region = sample.source_roi.to_slices()
        inside = Roi((0, 0, 0), sparse["labelled"].shape).contains(sample.source_roi)
        window = sample.output_roi.relative_to(sample.source_roi.offset).to_slices()
        assert sample.mask[window].any()
        if inside:
            np.testing.assert_array_equal(sample.mask, sparse["labelled"][region])
            np.testing.assert_array_equal(sample.labels, sparse["mito"][region])
        sections.update(z for z in LABELLED_SECTIONS if sample.output_roi.offset[0] <= z < sample.output_roi.end[0])
    assert set(sections) == set(LABELLED_SECTIONS)


def test_rejection_statistics_count_labelled_voxels_only(sparse):
    """The foreground share that rejection raises is the share among labelled voxels: unlabelled voxels would
    put it below 0.05 for every block here (at most 1 of the 8 output sections is labelled)."""
    config = load_data_config(sparse["folder"] / "sparse.json")
    uniform = TrainingSampler(config, SOURCE, OUTPUT, **NO_REJECTION)
    rejecting = TrainingSampler(config, SOURCE, OUTPUT)
    shares = {}
    for name, sampler in {"uniform": uniform, "rejecting": rejecting}.items():
        generator = np.random.default_rng(4)
        blocks = [sampler.sample(generator) for _ in range(60)]
        shares[name] = np.array([output_shares(b)[1] / output_shares(b)[0] for b in blocks])
    assert (shares["rejecting"] <= 0.05).mean() < (shares["uniform"] <= 0.05).mean() / 2


def test_an_entry_without_labelled_voxels_is_refused_at_once(sparse):
    path = write_config(sparse["folder"], "unlabelled.json", rois={"gap": ((30, 0, 0), (30, 96, 112))})
    entries = json.loads(path.read_text())
    for entry in entries.values():
        entry.update(file="sparse.zarr", labels={"volumes/labels/mito": 1}, labelled="volumes/labelled/mito", mask=None)
        del entry["mask"]
    path.write_text(json.dumps(entries))
    with pytest.raises(ConfigError, match="marks no voxel of the ROI") as error:
        TrainingSampler(load_data_config(path), SOURCE, OUTPUT)
    assert "\n" not in str(error.value) and "'gap'" in str(error.value) and "'labelled'" in str(error.value)
