"""Training augmentations as tensor operations on the training device (DESIGN §6).

A training sample is a *source crop* read around a random location: ``raw`` of shape
``(C, z, y, x)`` (float, normalised with ``x/255*2-1`` to [-1, 1]), ``labels`` of shape
``(z, y, x)`` (integer) and optional ``masks`` (``(z, y, x)``, bool or uint8) that move with
the labels. All three share the same spatial shape and voxel grid. :func:`augment` turns
them, in the order of the original incasem (gunpowder ``SimpleAugment``,
``ElasticAugment``, ``SimpleAugment``, ``IntensityAugment``), into

* ``raw`` cropped to the network's ``input_shape`` and
* ``labels`` and ``masks`` cropped to the smaller ``output_shape`` (``input_shape`` minus the
  context on both sides, centred).

Every step is written with torch operations only, so the crops stay on whatever device
they are on (a GPU feeds itself). Randomness comes only from the ``torch.Generator``
passed in; its few random numbers (flips, angles, control-point offsets) are drawn on the
generator's device and moved to the data, so a CPU generator with a fixed seed gives the
same augmentation on the CPU and on a GPU.

Margin
------
The elastic transform is defined on the *output* crop and samples the source crop;
:func:`elastic_margin` gives how many voxels the source needs on each side so that every
sample point lies inside real data, and :func:`source_shape` the source crop shape for an
input shape. Control-point offsets are clipped to 3 sigma, so the margin is a strict bound
except for cumulative section shifts (``prob_shift``), which can add up beyond
``max_misalign``; such points, like any point of a source crop given without margin, take
the value of the nearest border voxel (``padding_mode="border"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from incasem.errors import InvalidValueError
from incasem.train.config import AugmentConfig

Shape3 = tuple[int, int, int]

_CLIP_SIGMAS = 3.0
"""Control-point offsets are clipped to this many standard deviations (a strict margin)."""


def _axes(value: Sequence[int], name: str) -> tuple[int, ...]:
    """Distinct spatial axes among 0 (z), 1 (y), 2 (x), as :class:`AugmentConfig` holds them."""
    axes = tuple(value)
    if any(isinstance(a, bool) or a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
        raise InvalidValueError(f"{name} must be distinct spatial axes among 0 (z), 1 (y), 2 (x), got {value!r}")
    return tuple(int(a) for a in axes)


# ---------------------------------------------------------------------------------------
# geometry


def elastic_margin(output_shape: Sequence[int], config: AugmentConfig) -> Shape3:
    """Voxels the source crop needs on each side of an elastically transformed crop.

    Parameters
    ----------
    output_shape : sequence of int
        Spatial shape (z, y, x) of the transformed crop, voxels.
    config : AugmentConfig
        The elastic settings used.

    Returns
    -------
    tuple of int
        Margin per axis (z, y, x) in voxels: the rotation's reach (the half-diagonal of
        the y-x plane when the angle varies), 3 ``jitter_sigma`` and ``max_misalign``
        when sections may shift.
    """
    half_y, half_x = (output_shape[1] - 1) / 2, (output_shape[2] - 1) / 2
    low, high = config.rotation_interval
    if low == high:
        reach_y = half_y * abs(math.cos(low)) + half_x * abs(math.sin(low))
        reach_x = half_y * abs(math.sin(low)) + half_x * abs(math.cos(low))
    else:
        reach_y = reach_x = math.hypot(half_y, half_x)
    shift = config.max_misalign if config.prob_slip + config.prob_shift > 0 else 0
    extra = (0.0, reach_y - half_y + shift, reach_x - half_x + shift)
    z, y, x = (max(0, math.ceil(e + _CLIP_SIGMAS * s - 1e-9)) for e, s in zip(extra, config.jitter_sigma))
    return (z, y, x)


def source_shape(input_shape: Sequence[int], config: AugmentConfig) -> Shape3:
    """Spatial shape of the source crop that :func:`augment` needs for an input crop.

    The input crop plus :func:`elastic_margin` on both sides, made equal along the axes in
    ``config.transpose_only`` (the larger size) so that the source can be transposed.

    Parameters
    ----------
    input_shape : sequence of int
        Spatial shape (z, y, x) of the network input, voxels.
    config : AugmentConfig
        The augmentation settings.

    Returns
    -------
    tuple of int
        Source crop shape (z, y, x), voxels, centred on the input crop.
    """
    margin = elastic_margin(input_shape, config)
    shape = [n + 2 * m for n, m in zip(input_shape, margin)]
    if len(config.transpose_only) > 1:
        largest = max(shape[a] for a in config.transpose_only)
        for a in config.transpose_only:
            shape[a] = largest
    z, y, x = shape
    return (z, y, x)


def centre_crop(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop the last three axes of ``tensor`` to ``shape``, centred (an odd excess puts the extra voxel last)."""
    spatial = tensor.shape[-3:]
    if any(s < n or (s - n) % 2 for s, n in zip(spatial, shape)):
        raise InvalidValueError(f"cannot centre-crop spatial shape {tuple(spatial)} to {tuple(shape)}: each size must shrink by an even number of voxels")
    starts = [(s - n) // 2 for s, n in zip(spatial, shape)]
    return tensor[..., starts[0] : starts[0] + shape[0], starts[1] : starts[1] + shape[1], starts[2] : starts[2] + shape[2]]


def _check_sample(raw: torch.Tensor, labels: torch.Tensor, masks: Sequence[torch.Tensor]) -> None:
    if raw.ndim != 4 or not raw.is_floating_point():
        raise InvalidValueError(f"raw must be a float tensor (C, z, y, x), got {raw.dtype} of shape {tuple(raw.shape)}")
    for name, tensor in [("labels", labels)] + [(f"masks[{i}]", m) for i, m in enumerate(masks)]:
        if tensor.shape != raw.shape[1:]:
            raise InvalidValueError(f"{name} must have raw's spatial shape {tuple(raw.shape[1:])}, got {tuple(tensor.shape)}")


# ---------------------------------------------------------------------------------------
# mirror and transpose


def mirror_transpose(
    raw: torch.Tensor,
    labels: torch.Tensor,
    masks: Sequence[torch.Tensor] | None,
    generator: torch.Generator,
    mirror_axes: Sequence[int] = (0, 1, 2),
    transpose_axes: Sequence[int] = (0, 1, 2),
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Randomly flip axes and permute interchangeable axes of a sample (gunpowder ``SimpleAugment``).

    Parameters
    ----------
    raw : torch.Tensor
        Float tensor (C, z, y, x).
    labels : torch.Tensor
        Integer tensor (z, y, x), same spatial shape as ``raw``.
    masks : sequence of torch.Tensor or None
        Tensors (z, y, x) that move with the labels.
    generator : torch.Generator
        Source of all randomness.
    mirror_axes : sequence of int
        Spatial axes (0 = z, 1 = y, 2 = x) each flipped with probability 0.5.
    transpose_axes : sequence of int
        Spatial axes permuted uniformly at random among each other (``(1, 2)`` for
        anisotropic data). The tensors must have the same size along them.

    Returns
    -------
    raw, labels, masks
        The transformed tensors; labels and masks move exactly with raw.
    """
    masks = list(masks or [])
    _check_sample(raw, labels, masks)
    mirror_axes, transpose_axes = _axes(mirror_axes, "mirror_axes"), _axes(transpose_axes, "transpose_axes")
    sizes = {labels.shape[a] for a in transpose_axes}
    if len(sizes) > 1:
        raise InvalidValueError(f"transpose_axes {tuple(transpose_axes)} need equal sizes, got spatial shape {tuple(labels.shape)}")
    flips = (torch.rand(3, generator=generator, device=generator.device) < 0.5).tolist()
    order = torch.randperm(len(transpose_axes), generator=generator, device=generator.device).tolist()
    permutation = [0, 1, 2]
    for axis, source in zip(transpose_axes, order):
        permutation[axis] = transpose_axes[source]
    flipped = [a for a in mirror_axes if flips[a]]

    def move(tensor: torch.Tensor) -> torch.Tensor:
        lead = tensor.ndim - 3
        if flipped:
            tensor = tensor.flip([lead + a for a in flipped])
        return tensor.permute(*range(lead), *(lead + p for p in permutation))

    return move(raw), move(labels), [move(m) for m in masks]


# ---------------------------------------------------------------------------------------
# intensity


def intensity(
    raw: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.85, 1.15),
    shift: tuple[float, float] = (-0.15, 0.15),
) -> torch.Tensor:
    """Randomly scale the contrast about the mean and shift the brightness, clipped to [-1, 1].

    ``a' = mean + (a - mean) * s + 2 t`` with ``s`` and ``t`` uniform in ``scale`` and
    ``shift``. ``t`` is in units of the full intensity range [0, 1], as in the original
    (gunpowder ``IntensityAugment`` on [0, 1] before the scaling to [-1, 1]); on the
    model's [-1, 1] input it moves values by ``2 t``.

    Parameters
    ----------
    raw : torch.Tensor
        Float tensor normalised to [-1, 1] (``x/255*2-1``), any shape.
    generator : torch.Generator
        Source of the random ``s`` and ``t``.
    scale, shift : tuple of float
        Ranges ``(min, max)``; ``(1, 1)`` and ``(0, 0)`` give the identity (up to clipping).

    Returns
    -------
    torch.Tensor
        Augmented raw, same shape and dtype, values in [-1, 1].
    """
    u = torch.rand(2, generator=generator, device=generator.device, dtype=torch.float64).tolist()
    s = scale[0] + (scale[1] - scale[0]) * u[0]
    t = shift[0] + (shift[1] - shift[0]) * u[1]
    if s == 1 and t == 0:
        return raw.clamp(-1.0, 1.0)
    mean = raw.mean()
    return (mean + (raw - mean) * s + 2 * t).clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------
# elastic


def _jitter(
    output_shape: Shape3,
    spacing: Shape3,
    sigma: tuple[float, float, float],
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """A smooth displacement field (3, z, y, x) in voxels from clipped normal control-point offsets."""
    grid = [math.ceil(n / s) + 1 for n, s in zip(output_shape, spacing)]
    offsets = torch.randn((3, *grid), generator=generator, device=generator.device).to(device)
    sigmas = torch.tensor(sigma, device=device, dtype=offsets.dtype).view(3, 1, 1, 1)
    offsets = (offsets.clamp(-_CLIP_SIGMAS, _CLIP_SIGMAS) * sigmas)[None]
    return F.interpolate(offsets, size=output_shape, mode="trilinear", align_corners=True)[0]


def _section_offsets(
    num_sections: int,
    prob_slip: float,
    prob_shift: float,
    max_misalign: int,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """Per-section (y, x) shifts (num_sections, 2) in voxels: slips move one section, shifts all following."""
    r = torch.rand(num_sections, generator=generator, device=generator.device)
    steps = torch.randint(-max_misalign, max_misalign + 1, (num_sections, 2), generator=generator, device=generator.device)
    slip = (r < prob_slip)[:, None]
    shift = ((r >= prob_slip) & (r < prob_slip + prob_shift))[:, None]
    return (steps * slip + torch.cumsum(steps * shift, dim=0)).to(device=device, dtype=torch.float32)


def _sampling_grid(
    source: Sequence[int],
    output_shape: Shape3,
    config: AugmentConfig,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """The ``grid_sample`` grid (1, z, y, x, 3) mapping output voxels to source positions."""
    axes = [torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2 for n in output_shape]
    z, y, x = torch.meshgrid(*axes, indexing="ij")
    low, high = config.rotation_interval
    angle = low + (high - low) * torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).item()
    cos, sin = math.cos(angle), math.sin(angle)
    y, x = cos * y - sin * x, sin * y + cos * x
    if any(config.jitter_sigma):
        jitter = _jitter(output_shape, config.control_point_spacing, config.jitter_sigma, generator, device)
        z, y, x = z + jitter[0], y + jitter[1], x + jitter[2]
    if config.prob_slip + config.prob_shift > 0:
        offsets = _section_offsets(output_shape[0], config.prob_slip, config.prob_shift, config.max_misalign, generator, device)
        y, x = y + offsets[:, 0, None, None], x + offsets[:, 1, None, None]
    half = [max(n - 1, 1) / 2 for n in source]
    return torch.stack([x / half[2], y / half[1], z / half[0]], dim=-1)[None]


def elastic(
    raw: torch.Tensor,
    labels: torch.Tensor,
    masks: Sequence[torch.Tensor] | None,
    generator: torch.Generator,
    output_shape: Sequence[int],
    config: AugmentConfig = AugmentConfig(),
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Deform, rotate and misalign a sample smoothly at random (gunpowder ``ElasticAugment``).

    The transform maps each voxel of the centred output crop to a position in the source:
    rotation by an angle uniform in ``config.rotation_interval`` about the z axis, plus a
    displacement trilinearly interpolated from control points every
    ``control_point_spacing`` voxels with normal offsets (``jitter_sigma`` voxels, clipped
    to 3 sigma), plus integer section shifts in y and x (``prob_slip``, ``prob_shift``,
    ``max_misalign``). Raw is sampled with linear interpolation, labels and masks with
    nearest neighbour, so labels keep their values and masks stay binary. Positions
    outside the source take the nearest border value; :func:`elastic_margin` gives the
    margin that keeps them inside.

    Parameters
    ----------
    raw : torch.Tensor
        Float tensor (C, z, y, x), the source crop.
    labels : torch.Tensor
        Integer tensor (z, y, x), same spatial shape as ``raw``.
    masks : sequence of torch.Tensor or None
        Bool or integer tensors (z, y, x) that move with the labels.
    generator : torch.Generator
        Source of all randomness.
    output_shape : sequence of int
        Spatial shape (z, y, x) of the result, voxels; centred in the source.
    config : AugmentConfig
        The elastic settings (the other keys are not used here).

    Returns
    -------
    raw, labels, masks
        Transformed tensors of spatial shape ``output_shape`` with the input dtypes.
    """
    masks = list(masks or [])
    _check_sample(raw, labels, masks)
    z, y, x = (int(n) for n in output_shape)
    grid = _sampling_grid(raw.shape[1:], (z, y, x), config, generator, raw.device)
    out_raw = F.grid_sample(raw[None], grid.to(raw.dtype), mode="bilinear", padding_mode="border", align_corners=True)[0]
    discrete = torch.stack([labels.float()] + [m.float() for m in masks])[None]
    out = F.grid_sample(discrete, grid, mode="nearest", padding_mode="border", align_corners=True)[0]
    out_labels = out[0].to(labels.dtype)
    return out_raw, out_labels, [o.to(m.dtype) for o, m in zip(out[1:], masks)]


# ---------------------------------------------------------------------------------------
# the whole chain


def augment(
    raw: torch.Tensor,
    labels: torch.Tensor,
    masks: Sequence[torch.Tensor] | None,
    config: AugmentConfig,
    generator: torch.Generator,
    input_shape: Sequence[int],
    output_shape: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Augment a training sample: mirror/transpose, elastic, mirror/transpose, intensity.

    Parameters
    ----------
    raw : torch.Tensor
        Float source crop (C, z, y, x) in [-1, 1], at least ``input_shape`` (best
        :func:`source_shape` of it), equal in size along ``config.transpose_only``.
    labels : torch.Tensor
        Integer tensor (z, y, x), same spatial shape and grid as ``raw``.
    masks : sequence of torch.Tensor or None
        Bool or integer tensors (z, y, x) that move with the labels.
    config : AugmentConfig
        The augmentation settings.
    generator : torch.Generator
        Source of all randomness; the same seed gives the same sample.
    input_shape : sequence of int
        Spatial shape (z, y, x) of the network input, voxels; equal in size along
        ``config.transpose_only``.
    output_shape : sequence of int
        Spatial shape of the network output, voxels: ``input_shape`` minus twice the
        context, centred in it.

    Returns
    -------
    raw, labels, masks
        ``raw`` of spatial shape ``input_shape``; ``labels`` and ``masks`` of
        ``output_shape``.
    """
    if any(n < o or (n - o) % 2 for n, o in zip(input_shape, output_shape)):
        raise InvalidValueError(f"output_shape {tuple(output_shape)} must be input_shape {tuple(input_shape)} minus an even number of voxels per axis")
    if any(s < n for s, n in zip(raw.shape[1:], input_shape)):
        raise InvalidValueError(f"source crop {tuple(raw.shape[1:])} is smaller than input_shape {tuple(input_shape)}; read source_shape(input_shape, config)")
    simple = {"mirror_axes": config.mirror_only, "transpose_axes": config.transpose_only}
    raw, labels, masks = mirror_transpose(raw, labels, masks, generator, **simple)
    raw, labels, masks = elastic(raw, labels, masks, generator, input_shape, config)
    raw, labels, masks = mirror_transpose(raw, labels, masks, generator, **simple)
    raw = intensity(raw, generator, (config.scale_min, config.scale_max), (config.shift_min, config.shift_max))
    return raw, centre_crop(labels, output_shape), [centre_crop(m, output_shape) for m in masks]
