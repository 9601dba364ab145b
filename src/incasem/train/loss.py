"""The training loss: masked, class-balanced cross entropy (DESIGN §6, the original's loss).

Each voxel's cross entropy is weighted by the cell mask and by a class-balancing weight
(gunpowder ``BalanceLabels``): per sample, the fraction of each class among the voxels
inside the mask is clipped to [0.01, 0.99] and the class weight is ``1 / (K * fraction)``.
The loss is the weighted sum divided by the sum of the weights, so a rare class counts as
much as a common one. Written with torch operations only: it runs on any device and is
differentiable with respect to the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from incasem.errors import InvalidValueError

#: Class fractions are clipped to this range before weighting (the original's values).
FRACTION_CLIP = (0.01, 0.99)


def class_weights(targets: torch.Tensor, mask: torch.Tensor, num_classes: int, clip: tuple[float, float] = FRACTION_CLIP) -> torch.Tensor:
    """Per-sample class-balancing weights ``1 / (K * fraction)``.

    Parameters
    ----------
    targets : torch.Tensor
        Class ids (N, z, y, x), integer, in ``0 .. num_classes - 1``.
    mask : torch.Tensor
        Float weights (N, z, y, x), 1 inside the cell mask and 0 outside.
    num_classes : int
        K, the number of classes (background included).
    clip : (float, float)
        Range the class fractions are clipped to (config keys ``loss.clip_min/clip_max``).

    Returns
    -------
    torch.Tensor
        Weights (N, K): class fractions counted inside the mask of each sample, clipped to
        [0.01, 0.99]. A sample without any voxel inside the mask gets ``1 / (0.01 K)`` for
        every class (its voxels have mask 0 and do not count).
    """
    flat_targets = targets.reshape(targets.shape[0], -1)
    flat_mask = mask.reshape(mask.shape[0], -1)
    counts = torch.zeros(targets.shape[0], num_classes, dtype=mask.dtype, device=mask.device)
    counts.scatter_add_(1, flat_targets, flat_mask)
    totals = flat_mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    fractions = (counts / totals).clamp(*clip)
    return 1.0 / (num_classes * fractions)


def balanced_masked_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    clip: tuple[float, float] = FRACTION_CLIP,
) -> torch.Tensor:
    """Cross entropy per voxel × mask × class-balancing weight, normalised by the weights.

    Parameters
    ----------
    logits : torch.Tensor
        Unnormalised class scores (N, K, z, y, x), floating point.
    targets : torch.Tensor
        Class ids (N, z, y, x), integer (``torch.long``), in ``0 .. K - 1``.
    mask : torch.Tensor or None
        Cell mask (N, z, y, x), bool, integer or float (non-zero = inside); ``None``
        means everywhere inside.
    clip : (float, float)
        Class-fraction clip of :func:`class_weights`.

    Returns
    -------
    torch.Tensor
        The scalar ``sum(ce * w * m) / sum(w * m)`` over all voxels of the batch, where
        ``w`` is the class weight of the voxel's target class in its sample
        (:func:`class_weights`). When no voxel is inside the mask the loss is exactly 0,
        still attached to ``logits``, with a zero gradient (no NaN).

    Raises
    ------
    InvalidValueError
        If the shapes do not fit (N, K, z, y, x) / (N, z, y, x) or ``targets`` is not
        integer.
    """
    _check_shapes(logits, targets, mask)
    targets = targets.long()
    weight = torch.ones_like(targets, dtype=logits.dtype) if mask is None else (mask != 0).to(logits.dtype)
    per_class = class_weights(targets, weight, logits.shape[1], clip)
    voxel_weights = per_class.gather(1, targets.reshape(targets.shape[0], -1)).reshape(targets.shape) * weight
    cross_entropy = F.cross_entropy(logits, targets, reduction="none")
    total = voxel_weights.sum()
    return (cross_entropy * voxel_weights).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def _check_shapes(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> None:
    if logits.ndim != 5 or not logits.is_floating_point():
        raise InvalidValueError(f"logits must be a float tensor (N, K, z, y, x), got {logits.dtype} of shape {tuple(logits.shape)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(targets.shape) != expected or targets.is_floating_point() or targets.dtype == torch.bool:
        raise InvalidValueError(f"targets must be integer class ids of shape {expected}, got {targets.dtype} of shape {tuple(targets.shape)}")
    if mask is not None and tuple(mask.shape) != expected:
        raise InvalidValueError(f"mask must have the shape of targets {expected}, got {tuple(mask.shape)}")
