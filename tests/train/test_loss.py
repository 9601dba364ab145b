"""Tests of the masked, class-balanced cross entropy against an independent per-voxel computation."""

import math

import numpy as np
import pytest
import torch

from incasem.errors import InvalidValueError
from incasem.train.loss import balanced_masked_cross_entropy


def reference_loss(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
    """The loss voxel by voxel, with explicit loops (float64)."""
    n_samples, n_classes = logits.shape[:2]
    numerator = denominator = 0.0
    for n in range(n_samples):
        inside = int(mask[n].sum())
        weights = []
        for k in range(n_classes):
            fraction = float(((targets[n] == k) & (mask[n] != 0)).sum()) / inside if inside else 0.0
            weights.append(1.0 / (n_classes * min(max(fraction, 0.01), 0.99)))
        for index in np.ndindex(*targets.shape[1:]):
            if not mask[n][index]:
                continue
            scores = [float(logits[(n, k, *index)]) for k in range(n_classes)]
            top = max(scores)
            log_sum = top + math.log(sum(math.exp(s - top) for s in scores))
            target = int(targets[n][index])
            numerator += weights[target] * (log_sum - scores[target])
            denominator += weights[target]
    return numerator / denominator


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_voxel_reference(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, 3, 3, 4, 5)) * 2
    targets = rng.choice(3, size=(2, 3, 4, 5), p=[0.7, 0.25, 0.05])
    mask = rng.random((2, 3, 4, 5)) < 0.8
    loss = balanced_masked_cross_entropy(torch.tensor(logits), torch.tensor(targets), torch.tensor(mask))
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(reference_loss(logits, targets, mask), rel=1e-10)


def test_no_mask_means_everywhere_and_mask_dtypes_agree():
    rng = np.random.default_rng(3)
    logits = torch.tensor(rng.normal(size=(1, 2, 4, 4, 4)), dtype=torch.float32)
    targets = torch.tensor(rng.integers(0, 2, size=(1, 4, 4, 4)))
    ones = np.ones((1, 4, 4, 4), dtype=bool)
    expected = reference_loss(logits.double().numpy(), targets.numpy(), ones)
    assert balanced_masked_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-5)
    mask = torch.tensor(rng.random((1, 4, 4, 4)) < 0.5)
    as_bool = balanced_masked_cross_entropy(logits, targets, mask)
    assert balanced_masked_cross_entropy(logits, targets, mask.to(torch.uint8)).item() == pytest.approx(as_bool.item())
    assert balanced_masked_cross_entropy(logits, targets, mask.float()).item() == pytest.approx(as_bool.item())


def test_fully_masked_out_block_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(1, 2, 3, 3, 3, requires_grad=True)
    targets = torch.randint(0, 2, (1, 3, 3, 3))
    loss = balanced_masked_cross_entropy(logits, targets, torch.zeros(1, 3, 3, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_empty_sample_in_a_batch_does_not_count():
    rng = np.random.default_rng(4)
    logits = torch.tensor(rng.normal(size=(2, 2, 3, 3, 3)))
    targets = torch.tensor(rng.integers(0, 2, size=(2, 3, 3, 3)))
    mask = torch.ones(2, 3, 3, 3, dtype=torch.bool)
    mask[1] = False
    alone = balanced_masked_cross_entropy(logits[:1], targets[:1], mask[:1])
    assert balanced_masked_cross_entropy(logits, targets, mask).item() == pytest.approx(alone.item())


def uniform_per_class_block(background: int, foreground: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, 2, 1, 1, n) block whose prediction depends only on the target class."""
    targets = torch.tensor([0] * background + [1] * foreground).view(1, 1, 1, -1)
    per_class = torch.tensor([[2.0, -1.0], [0.5, 0.3]])  # logits for a background / a foreground voxel
    logits = per_class[targets].permute(0, 4, 1, 2, 3).contiguous()
    return logits, targets


def test_balancing_makes_a_rare_class_count_as_much_as_a_common_one():
    common = balanced_masked_cross_entropy(*uniform_per_class_block(background=20, foreground=5))
    more_background = balanced_masked_cross_entropy(*uniform_per_class_block(background=40, foreground=5))
    assert more_background.item() == pytest.approx(common.item(), rel=1e-6)
    logits, targets = uniform_per_class_block(background=40, foreground=5)
    per_voxel = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    background_ce, foreground_ce = per_voxel[targets == 0][0], per_voxel[targets == 1][0]
    assert more_background.item() == pytest.approx(((background_ce + foreground_ce) / 2).item(), rel=1e-6)
    assert per_voxel.mean().item() != pytest.approx(more_background.item(), rel=1e-3)


def test_gradients_flow_to_every_voxel_inside_the_mask():
    logits = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    targets = torch.randint(0, 3, (1, 4, 4, 4))
    mask = torch.rand(1, 4, 4, 4) < 0.5
    balanced_masked_cross_entropy(logits, targets, mask).backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad.abs().sum(dim=1) > 0).eq(mask).all()


def test_bad_shapes_are_refused():
    with pytest.raises(InvalidValueError, match="targets must be integer"):
        balanced_masked_cross_entropy(torch.zeros(1, 2, 3, 3, 3), torch.zeros(1, 3, 3, 4, dtype=torch.long))
    with pytest.raises(InvalidValueError, match="mask must have"):
        balanced_masked_cross_entropy(torch.zeros(1, 2, 3, 3, 3), torch.zeros(1, 3, 3, 3, dtype=torch.long), torch.ones(1, 3, 3))
