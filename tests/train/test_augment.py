"""Tests of the training augmentations on a crop of real FIB-SEM (Lucchi++) and its mito labels."""

import math

import numpy as np
import pytest
import torch

from incasem.errors import InvalidValueError
from incasem.train.augment import (
    AugmentConfig,
    _sampling_grid,
    augment,
    centre_crop,
    elastic,
    elastic_margin,
    intensity,
    mirror_transpose,
    source_shape,
)
from tests.helpers import LUCCHI, read_stack

#: Elastic settings that leave a sample unchanged.
STILL = AugmentConfig(jitter_sigma=(0, 0, 0), rotation_interval=(0, 0), prob_shift=0.0)
#: Strong elastic settings, so that small crops are visibly deformed.
STRONG = AugmentConfig(control_point_spacing=(8, 16, 16), jitter_sigma=(2, 3, 3), prob_slip=0.1)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def sample() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A 40 × 64 × 64 source crop: channel 0 real EM, channel 1 a function of the labels; a uint8 mask."""
    region = (slice(8, 48), slice(0, 64), slice(0, 64))  # Lucchi++ slices 60-99, rows 128-191, columns 224-287
    em = torch.from_numpy(read_stack(LUCCHI / "image", *region).astype(np.float32))
    labels = torch.from_numpy(read_stack(LUCCHI / "labels" / "mito", *region).astype(np.int64))
    assert 0.1 < labels.float().mean() < 0.9
    raw = torch.stack([em, labels * 200.0 + 20.0]) / 255 * 2 - 1
    mask = (em > 120).to(torch.uint8)
    return raw, labels, [mask]


def assert_labels_follow_raw(raw: torch.Tensor, labels: torch.Tensor) -> None:
    """Where the label-derived channel raw[1] is pure (not interpolated across an object edge), it says labels == 1."""
    pure_zero, pure_one = (torch.isclose(raw[1], torch.tensor(v / 255 * 2 - 1), atol=1e-4) for v in (20.0, 220.0))
    assert (pure_zero | pure_one).float().mean() > 0.8
    assert torch.equal(pure_one, (labels == 1) & (pure_zero | pure_one))


def test_mirror_transpose_is_a_flip_and_permutation_moving_labels_with_raw(sample):
    raw, labels, masks = sample
    seen = set()
    for seed in range(12):
        out_raw, out_labels, out_masks = mirror_transpose(raw, labels, masks, seeded(seed), transpose_axes=(1, 2))
        assert_labels_follow_raw(out_raw, out_labels)
        matches = [
            (flips, perm)
            for flips in np.ndindex(2, 2, 2)
            for perm in ((0, 1, 2), (0, 2, 1))
            if torch.equal(out_raw[0], raw[0].flip([a for a in range(3) if flips[a]]).permute(perm))
        ]
        assert len(matches) == 1
        flips, perm = matches[0]
        expected = masks[0].flip([a for a in range(3) if flips[a]]).permute(perm)
        assert torch.equal(out_masks[0], expected) and out_masks[0].dtype == torch.uint8
        seen.add(matches[0])
    assert len(seen) > 4


def test_mirror_transpose_refuses_unequal_axes_and_zero_strength_is_identity(sample):
    raw, labels, masks = sample
    with pytest.raises(InvalidValueError, match="transpose_axes"):
        mirror_transpose(raw, labels, masks, seeded(0), transpose_axes=(0, 1, 2))
    out_raw, out_labels, out_masks = mirror_transpose(raw, labels, masks, seeded(0), mirror_axes=(), transpose_axes=())
    assert torch.equal(out_raw, raw) and torch.equal(out_labels, labels) and torch.equal(out_masks[0], masks[0])


def test_elastic_moves_labels_with_raw_and_keeps_values(sample):
    raw, labels, masks = sample
    out_raw, out_labels, out_masks = elastic(raw, labels, masks, seeded(3), (24, 40, 40), STRONG)
    assert out_raw.shape == (2, 24, 40, 40) and out_labels.shape == (24, 40, 40)
    assert out_labels.dtype == labels.dtype and out_masks[0].dtype == torch.uint8
    assert set(out_labels.unique().tolist()) == {0, 1}
    assert set(out_masks[0].unique().tolist()) <= {0, 1}
    assert_labels_follow_raw(out_raw, out_labels)
    assert not torch.equal(out_labels, centre_crop(labels, (24, 40, 40)))


def test_elastic_zero_strength_is_the_centre_crop(sample):
    raw, labels, masks = sample
    out_raw, out_labels, out_masks = elastic(raw, labels, masks, seeded(5), (20, 48, 40), STILL)
    torch.testing.assert_close(out_raw, centre_crop(raw, (20, 48, 40)), atol=1e-5, rtol=0)
    assert torch.equal(out_labels, centre_crop(labels, (20, 48, 40)))
    assert torch.equal(out_masks[0], centre_crop(masks[0], (20, 48, 40)))


def test_elastic_is_deterministic_under_the_generator(sample):
    raw, labels, masks = sample
    first = elastic(raw, labels, masks, seeded(7), (24, 40, 40), STRONG)
    again = elastic(raw, labels, masks, seeded(7), (24, 40, 40), STRONG)
    other = elastic(raw, labels, masks, seeded(8), (24, 40, 40), STRONG)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_section_slip_moves_each_section_rigidly(sample):
    raw, labels, masks = sample
    config = AugmentConfig(jitter_sigma=(0, 0, 0), rotation_interval=(0, 0), prob_slip=1.0, prob_shift=0.0, max_misalign=2)
    assert elastic_margin((40, 60, 60), config) == (0, 2, 2)
    out_raw, out_labels, _ = elastic(raw, labels, masks, seeded(1), (40, 60, 60), config)
    shifts = []
    for z in range(40):
        found = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.allclose(out_raw[:, z], raw[:, z, 2 + dy : 62 + dy, 2 + dx : 62 + dx], atol=1e-5)
        ]
        assert len(found) == 1, z
        dy, dx = found[0]
        assert torch.equal(out_labels[z], labels[z, 2 + dy : 62 + dy, 2 + dx : 62 + dx])
        shifts.append(found[0])
    assert len(set(shifts)) > 5


def test_elastic_margin_keeps_every_sample_point_inside_the_source():
    config = AugmentConfig(prob_slip=0.05, prob_shift=0.0)
    output = (20, 36, 36)
    source = tuple(n + 2 * m for n, m in zip(output, elastic_margin(output, config)))
    for seed in range(10):
        grid = _sampling_grid(source, output, config, seeded(seed), torch.device("cpu"))
        assert grid.abs().max() <= 1 + 1e-6


def test_intensity_scales_about_the_mean_and_stays_in_range(sample):
    raw = sample[0][:1]
    for seed in range(5):
        out = intensity(raw, seeded(seed))
        assert out.min() >= -1 and out.max() <= 1
        inside = (out > -1) & (out < 1)
        a, b = raw[inside].double(), out[inside].double()
        s = ((b - b.mean()) * (a - a.mean())).sum() / ((a - a.mean()) ** 2).sum()
        t = (b.mean() - raw.double().mean() - s * (a.mean() - raw.double().mean())) / 2
        assert 0.85 - 1e-4 <= s <= 1.15 + 1e-4 and -0.15 - 1e-4 <= t <= 0.15 + 1e-4
        torch.testing.assert_close(b, raw.double().mean() + (a - raw.double().mean()) * s + 2 * t, atol=1e-5, rtol=0)
    saturated = intensity(raw * 0 + 0.99, seeded(0), scale=(1, 1), shift=(0.15, 0.15))
    assert torch.equal(saturated, torch.ones_like(raw))
    assert torch.equal(intensity(raw, seeded(0), scale=(1, 1), shift=(0, 0)), raw)


def test_augment_crops_shapes_and_keeps_labels_with_raw(sample):
    raw, labels, masks = sample
    config = AugmentConfig(transpose_only=(1, 2), scale_min=1.0, scale_max=1.0, shift_min=0.0, shift_max=0.0)
    source = source_shape((16, 32, 32), config)
    assert source == (28, 62, 62)
    crop = [centre_crop(t, source) for t in (raw, labels, masks[0])]
    for seed in range(3):
        out_raw, out_labels, out_masks = augment(crop[0], crop[1], [crop[2]], config, seeded(seed), (16, 32, 32), (8, 24, 24))
        assert out_raw.shape == (2, 16, 32, 32) and out_labels.shape == (8, 24, 24) and out_masks[0].shape == (8, 24, 24)
        assert set(out_labels.unique().tolist()) <= {0, 1} and set(out_masks[0].unique().tolist()) <= {0, 1}
        assert_labels_follow_raw(centre_crop(out_raw, (8, 24, 24)), out_labels)


def test_augment_is_deterministic_and_zero_strength_is_a_crop(sample):
    raw, labels, masks = sample
    config = AugmentConfig(transpose_only=(1, 2))
    args = (raw, labels, masks, config)
    first, again, other = (augment(*args, seeded(s), (16, 32, 32), (8, 24, 24)) for s in (11, 11, 12))
    assert all(torch.equal(a, b) for a, b in zip(first[:2], again[:2]))
    assert not torch.equal(first[0], other[0])
    still = AugmentConfig(
        mirror_only=(),
        transpose_only=(),
        jitter_sigma=(0, 0, 0),
        rotation_interval=(0, 0),
        prob_shift=0.0,
        scale_min=1.0,
        scale_max=1.0,
        shift_min=0.0,
        shift_max=0.0,
    )
    out_raw, out_labels, out_masks = augment(raw, labels, masks, still, seeded(0), (16, 32, 32), (8, 24, 24))
    torch.testing.assert_close(out_raw, centre_crop(raw, (16, 32, 32)), atol=1e-5, rtol=0)
    assert torch.equal(out_labels, centre_crop(labels, (8, 24, 24))) and torch.equal(out_masks[0], centre_crop(masks[0], (8, 24, 24)))


def test_defaults_are_those_of_the_design():
    config = AugmentConfig()
    assert config.control_point_spacing == (32, 32, 32) and config.jitter_sigma == (2, 2, 2)
    assert config.rotation_interval == (0, math.pi / 2) and (config.prob_slip, config.prob_shift, config.max_misalign) == (0, 0.05, 2)
    assert (config.scale_min, config.scale_max, config.shift_min, config.shift_max) == (0.85, 1.15, -0.15, 0.15)
    assert AugmentConfig(jitter_sigma=[1, 2, 3]).jitter_sigma == (1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mirror_only", (0, 3)),
        ("transpose_only", (1, 1)),
        ("control_point_spacing", (32, 0, 32)),
        ("control_point_spacing", (32.5, 32, 32)),
        ("jitter_sigma", (2, -1, 2)),
        ("jitter_sigma", "2"),
        ("rotation_interval", (1.0, 0.0)),
        ("rotation_interval", (0.0, float("nan"))),
        ("prob_slip", 1.5),
        ("prob_shift", -0.1),
        ("max_misalign", 1.5),
        ("scale_min", -0.5),
        ("shift_max", -0.5),
    ],
)
def test_bad_config_values_give_one_line_errors_naming_the_key(key, value):
    with pytest.raises(InvalidValueError) as caught:
        AugmentConfig(**{key: value})
    message = str(caught.value)
    assert key in message and "\n" not in message
